//! Store tests on real SQLite files in a temporary directory, with fixed
//! times.

use super::*;
use edgeward_core::config::Config;
use edgeward_core::grant::CredentialKind;
use edgeward_core::keys::{Ed25519Signer, SigAlg, Signer as _};
use edgeward_core::secret::SecretSource;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

const T0: u64 = 1_700_000_000;
const DIGEST_A: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
const ED_KEY: &str = "ed25519:11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const ID_1: &str = "00112233445566778899aabbccddeeff";
const ID_2: &str = "ffeeddccbbaa99887766554433221100";
const ID_3: &str = "0123456789abcdef0123456789abcdef";

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "edgeward-store-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("edgeward.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Raw access for tampering, as an attacker with the file would have.
fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

const CONFIG: &str = r#"
[[grant]]
name = "weather"
origin = "https://api.weather.example"
methods = ["GET", "POST"]
path_prefixes = ["/v1/", "/v2/forecast"]
credential = { kind = "header", name = "x-api-key", prefix = "Key " }
secret = { env = "WEATHER_KEY" }
connect_timeout_ms = 1500

[[grant]]
name = "maps"
origin = "http://127.0.0.1:8080"
methods = ["GET"]
path_prefixes = ["/"]
credential = { kind = "query", param = "key" }
secret = { file = "/run/secrets/maps" }

[[grant]]
name = "billing"
origin = "https://billing.example:8443"
methods = ["GET"]
path_prefixes = ["/"]
credential = { kind = "basic", username = "svc" }
secret = { env = "BILLING_PASSWORD" }

[[device]]
id = "dev-1"
owner = "ops"
public_key = "ed25519:11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"

[[agent]]
name = "weather-bot"
owner = "alice@example.com"
digests = ["sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"]
grants = ["weather"]
devices = ["dev-1"]
limits = { memory_mib = 32, task_timeout_ms = 5000, max_log_records = 10 }
max_token_lifetime_s = 120
max_instances_per_device = 2
"#;

fn config() -> Config {
    Config::parse(CONFIG).unwrap()
}

fn device(id: &str) -> DeviceRecord {
    DeviceRecord {
        id: id.into(),
        owner: "ops".into(),
        public_key: ED_KEY.parse().unwrap(),
        enrolled_at: T0,
        revoked_at: None,
    }
}

/// A store with the sample config's grants, devices (dev-1, dev-2) and no
/// agents.
fn seeded(store: &dyn Store) {
    let c = config();
    for g in &c.grants {
        store.put_grant(g, T0).unwrap();
    }
    store.enroll_device(&device("dev-1")).unwrap();
    store.enroll_device(&device("dev-2")).unwrap();
}

fn new_agent(id: &str) -> NewAgent {
    NewAgent::from_config(&config().agents[0], id.into(), "reports the weather".into())
}

fn token(jti: &str, instance: &str, generation: u64, issued_at: u64) -> IssuedToken {
    IssuedToken {
        jti: jti.into(),
        instance_id: instance.into(),
        agent: "weather-bot".into(),
        device: "dev-1".into(),
        generation,
        issued_at,
        expires_at: issued_at + 300,
    }
}

fn audit(at: u64, decision: &str) -> AuditEntry {
    AuditEntry {
        at,
        kind: "egress".into(),
        decision: decision.into(),
        agent: Some("weather-bot".into()),
        instance: Some("inst-1".into()),
        device: Some("dev-1".into()),
        grant: Some("weather".into()),
        method: Some("GET".into()),
        origin: Some("https://api.weather.example:443".into()),
        path: Some("/v1/today".into()),
        jti: Some("jti-1".into()),
        ..AuditEntry::default()
    }
}

// --- opening and migrations ---

#[test]
fn a_fresh_file_is_created_0600_in_wal_mode_and_migrated() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.db()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let mode = std::fs::metadata(dir.db()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    store.enroll_device(&device("dev-1")).unwrap();
    // WAL: the commit went to the -wal file, which has the database's mode.
    let wal = std::fs::metadata(with_suffix(&dir.db(), "-wal")).unwrap();
    assert_eq!(wal.permissions().mode() & 0o077, 0);
    let conn = raw(&dir.db());
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[test]
fn reopening_keeps_data_and_does_not_migrate_again() {
    let dir = TempDir::new();
    {
        let store = SqliteStore::open(&dir.db()).unwrap();
        store.enroll_device(&device("dev-1")).unwrap();
    }
    let store = SqliteStore::open(&dir.db()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.device("dev-1").unwrap(), Some(device("dev-1")));
}

#[test]
fn a_database_from_a_newer_edgeward_is_refused() {
    let dir = TempDir::new();
    drop(SqliteStore::open(&dir.db()).unwrap());
    raw(&dir.db())
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let err = SqliteStore::open(&dir.db()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, known } if found == SCHEMA_VERSION + 1 && known == SCHEMA_VERSION),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade edgeward"), "{err}");
}

#[test]
fn a_database_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new();
    drop(SqliteStore::open(&dir.db()).unwrap());
    std::fs::set_permissions(dir.db(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = SqliteStore::open(&dir.db()).unwrap_err();
    assert!(
        matches!(err, StoreError::Permissions { mode: 0o644, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[test]
fn a_file_that_is_not_a_database_is_refused() {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = TempDir::new();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.db())
        .unwrap();
    f.write_all(&[0x5a; 4096]).unwrap();
    drop(f);
    assert!(matches!(
        SqliteStore::open(&dir.db()),
        Err(StoreError::Engine(_))
    ));
}

// --- devices and enrolment codes ---

#[test]
fn devices() {
    let store = SqliteStore::in_memory().unwrap();
    store.enroll_device(&device("dev-2")).unwrap();
    store.enroll_device(&device("dev-1")).unwrap();
    assert!(matches!(
        store.enroll_device(&device("dev-1")),
        Err(StoreError::AlreadyExists { what: "device", .. })
    ));
    assert!(matches!(
        store.enroll_device(&device("embedded")),
        Err(StoreError::Invalid {
            field: "device id",
            ..
        })
    ));
    assert!(matches!(
        store.enroll_device(&device("Bad Id")),
        Err(StoreError::Invalid { .. })
    ));
    let ids: Vec<_> = store.devices().unwrap().into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["dev-1", "dev-2"]);
    assert_eq!(store.device("nope").unwrap(), None);

    assert!(store.revoke_device("dev-1", T0 + 5).unwrap());
    // The first revocation time is kept.
    assert!(!store.revoke_device("dev-1", T0 + 9).unwrap());
    let d = store.device("dev-1").unwrap().unwrap();
    assert_eq!(d.revoked_at, Some(T0 + 5));
    assert_eq!(d.to_device_config().id, "dev-1");
    assert!(matches!(
        store.revoke_device("nope", T0),
        Err(StoreError::NotFound { what: "device", .. })
    ));
    // A revoked id stays taken.
    assert!(matches!(
        store.enroll_device(&device("dev-1")),
        Err(StoreError::AlreadyExists { .. })
    ));
}

#[test]
fn an_enrolment_code_is_single_use() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.db()).unwrap();
    let code_hash: [u8; 32] = Sha256::digest(b"random-enrolment-code").into();
    let invite = InviteRecord {
        code_hash,
        owner: "fleet-team".into(),
        created_by: "alice@example.com".into(),
        created_at: T0,
        expires_at: T0 + 3600,
    };
    store.create_invite(&invite).unwrap();
    assert!(matches!(
        store.create_invite(&invite),
        Err(StoreError::AlreadyExists { .. })
    ));
    let key: PublicKey = ED_KEY.parse().unwrap();

    // A device id that is taken: nothing changes, the code stays usable.
    store.enroll_device(&device("taken")).unwrap();
    assert!(matches!(
        store.redeem_invite(&code_hash, "taken", key, T0 + 1),
        Err(StoreError::AlreadyExists { .. })
    ));

    let redeemed = store
        .redeem_invite(&code_hash, "edge-7", key, T0 + 10)
        .unwrap()
        .unwrap();
    assert_eq!(redeemed.invite, invite);
    assert_eq!(redeemed.device.owner, "fleet-team");
    assert_eq!(redeemed.device.enrolled_at, T0 + 10);
    assert_eq!(store.device("edge-7").unwrap(), Some(redeemed.device));
    // Second use, even after a restart: nothing.
    assert_eq!(
        store
            .redeem_invite(&code_hash, "edge-8", key, T0 + 11)
            .unwrap(),
        None
    );
    drop(store);
    let store = SqliteStore::open(&dir.db()).unwrap();
    assert_eq!(
        store
            .redeem_invite(&code_hash, "edge-8", key, T0 + 12)
            .unwrap(),
        None
    );
    assert_eq!(store.device("edge-8").unwrap(), None);

    // Unknown and expired codes.
    let other: [u8; 32] = Sha256::digest(b"other").into();
    assert_eq!(store.redeem_invite(&other, "e9", key, T0).unwrap(), None);
    store
        .create_invite(&InviteRecord {
            code_hash: other,
            expires_at: T0 + 60,
            ..invite.clone()
        })
        .unwrap();
    assert_eq!(
        store.redeem_invite(&other, "e9", key, T0 + 60).unwrap(),
        None
    );
    assert_eq!(store.prune_expired(T0 + 60).unwrap().invites, 1);
    assert!(matches!(
        store.create_invite(&InviteRecord {
            expires_at: T0,
            ..invite
        }),
        Err(StoreError::Invalid {
            field: "expires_at",
            ..
        })
    ));
}

// --- grants ---

#[test]
fn grants_round_trip_and_keep_only_the_secret_source() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.db()).unwrap();
    let c = config();
    for g in &c.grants {
        store.put_grant(g, T0).unwrap();
    }
    let stored = store.grants().unwrap();
    let names: Vec<_> = stored.iter().map(|g| g.rules.name.to_string()).collect();
    assert_eq!(names, ["billing", "maps", "weather"]);
    for original in &c.grants {
        let back = store.grant(&original.rules.name).unwrap().unwrap();
        assert_eq!(back.rules, original.rules);
        assert_eq!(back.credential, original.credential);
        assert_eq!(back.secret, original.secret);
        assert_eq!(back.connect_timeout, original.connect_timeout);
        assert_eq!(back.timeout, original.timeout);
    }
    assert!(
        store
            .grant(&GrantName::new("nope").unwrap())
            .unwrap()
            .is_none()
    );

    // Upsert.
    let mut changed = c.grants[0].clone();
    changed.rules.methods = vec![http::Method::GET];
    changed.secret = SecretSource::File("/run/secrets/weather".into());
    changed.credential = CredentialKind::Header {
        name: http::header::AUTHORIZATION,
        prefix: "Bearer ".into(),
    };
    store.put_grant(&changed, T0 + 1).unwrap();
    let back = store.grant(&changed.rules.name).unwrap().unwrap();
    assert_eq!(back.rules.methods, vec![http::Method::GET]);
    assert_eq!(back.secret, changed.secret);
    assert_eq!(store.grants().unwrap().len(), 3);

    // The column holds the source's name, nothing else.
    let secret: String = raw(&dir.db())
        .query_row(
            "SELECT secret_source FROM grants WHERE name = 'billing'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(secret, r#"{"env":"BILLING_PASSWORD"}"#);
}

// --- agents ---

#[test]
fn register_update_review_and_list_agents() {
    let store = SqliteStore::in_memory().unwrap();
    seeded(&store);
    let a = store.register_agent(&new_agent(ID_1), T0).unwrap();
    assert_eq!(a.generation, 1);
    assert_eq!(a.created_at, T0);
    assert_eq!(a.last_reviewed_at, None);
    assert_eq!(store.agent("weather-bot").unwrap(), Some(a.clone()));
    let cfg = a.to_agent_config();
    let original = &config().agents[0];
    assert_eq!(cfg.digests, original.digests);
    assert_eq!(cfg.limits, original.limits);
    assert_eq!(cfg.max_token_lifetime, 120);
    assert_eq!(cfg.max_instances_per_device, 2);
    assert_eq!(cfg.devices, ["dev-1"]);

    // Name and id are unique.
    assert!(matches!(
        store.register_agent(&new_agent(ID_2), T0),
        Err(StoreError::AlreadyExists { what: "agent", .. })
    ));
    let mut other = new_agent(ID_1);
    other.name = "other".into();
    assert!(matches!(
        store.register_agent(&other, T0),
        Err(StoreError::AlreadyExists {
            what: "agent id",
            ..
        })
    ));
    // Unknown references and bad input change nothing.
    let mut bad = new_agent(ID_2);
    bad.name = "bad".into();
    bad.grants = vec![GrantName::new("nope").unwrap()];
    assert!(matches!(
        store.register_agent(&bad, T0),
        Err(StoreError::NotFound { what: "grant", .. })
    ));
    bad.grants = vec![];
    bad.devices = vec!["dev-9".into()];
    assert!(matches!(
        store.register_agent(&bad, T0),
        Err(StoreError::NotFound { what: "device", .. })
    ));
    bad.devices = vec![];
    bad.id = "not-hex".into();
    assert!(matches!(
        store.register_agent(&bad, T0),
        Err(StoreError::Invalid {
            field: "agent id",
            ..
        })
    ));
    bad.id = ID_2.into();
    bad.digests = vec![];
    assert!(matches!(
        store.register_agent(&bad, T0),
        Err(StoreError::Invalid {
            field: "digests",
            ..
        })
    ));
    assert_eq!(store.agents().unwrap().len(), 1);

    // Owner, description, limits: same generation.
    let u = store
        .update_agent(
            "weather-bot",
            &AgentUpdate {
                owner: Some("bob@example.com".into()),
                description: Some("now with rain".into()),
                max_token_lifetime: Some(60),
                ..AgentUpdate::default()
            },
            T0 + 10,
        )
        .unwrap();
    assert_eq!(u.generation, 1);
    assert_eq!(u.owner, "bob@example.com");
    assert_eq!(u.updated_at, T0 + 10);
    assert_eq!(u.created_at, T0);
    // The same grants, listed again: same generation.
    let u = store
        .update_agent(
            "weather-bot",
            &AgentUpdate {
                grants: Some(vec![GrantName::new("weather").unwrap()]),
                ..AgentUpdate::default()
            },
            T0 + 11,
        )
        .unwrap();
    assert_eq!(u.generation, 1);
    // New grants, new devices: each bumps.
    let u = store
        .update_agent(
            "weather-bot",
            &AgentUpdate {
                grants: Some(vec![
                    GrantName::new("weather").unwrap(),
                    GrantName::new("maps").unwrap(),
                ]),
                ..AgentUpdate::default()
            },
            T0 + 12,
        )
        .unwrap();
    assert_eq!(u.generation, 2);
    let u = store
        .update_agent(
            "weather-bot",
            &AgentUpdate {
                devices: Some(vec!["dev-1".into(), "dev-2".into()]),
                ..AgentUpdate::default()
            },
            T0 + 13,
        )
        .unwrap();
    assert_eq!(u.generation, 3);
    assert_eq!(store.agent("weather-bot").unwrap(), Some(u.clone()));
    // A failed update changes nothing.
    assert!(matches!(
        store.update_agent(
            "weather-bot",
            &AgentUpdate {
                owner: Some("mallory".into()),
                grants: Some(vec![GrantName::new("nope").unwrap()]),
                ..AgentUpdate::default()
            },
            T0 + 14,
        ),
        Err(StoreError::NotFound { what: "grant", .. })
    ));
    assert_eq!(store.agent("weather-bot").unwrap(), Some(u.clone()));
    assert!(matches!(
        store.update_agent("nope", &AgentUpdate::default(), T0),
        Err(StoreError::NotFound { what: "agent", .. })
    ));

    let r = store
        .review_agent("weather-bot", T0 + 20, "carol@example.com")
        .unwrap();
    assert_eq!(r.last_reviewed_at, Some(T0 + 20));
    assert_eq!(r.last_reviewed_by.as_deref(), Some("carol@example.com"));
    assert_eq!(r.updated_at, u.updated_at);
    assert_eq!(r.generation, u.generation);
    assert!(matches!(
        store.review_agent("nope", T0, "carol"),
        Err(StoreError::NotFound { .. })
    ));

    let mut second = new_agent(ID_2);
    second.name = "another".into();
    store.register_agent(&second, T0).unwrap();
    let names: Vec<_> = store
        .agents()
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["another", "weather-bot"]);
}

#[test]
fn a_generation_is_never_reused_across_deprovision_and_re_registration() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.db()).unwrap();
    seeded(&store);
    assert_eq!(
        store
            .register_agent(&new_agent(ID_1), T0)
            .unwrap()
            .generation,
        1
    );
    let digest_b = ComponentDigest::of(b"version 2");
    let updated = store
        .update_agent(
            "weather-bot",
            &AgentUpdate {
                digests: Some(vec![DIGEST_A.parse().unwrap(), digest_b]),
                ..AgentUpdate::default()
            },
            T0 + 1,
        )
        .unwrap();
    assert_eq!(updated.generation, 2);
    let tomb = store.deprovision_agent("weather-bot", T0 + 2).unwrap();
    assert_eq!(
        tomb,
        Tombstone {
            name: "weather-bot".into(),
            agent_id: ID_1.into(),
            last_generation: 2,
            deprovisioned_at: T0 + 2,
        }
    );
    assert_eq!(store.agent("weather-bot").unwrap(), None);
    // The old id cannot come back either.
    assert!(matches!(
        store.register_agent(&new_agent(ID_1), T0 + 3),
        Err(StoreError::AlreadyExists {
            what: "agent id",
            ..
        })
    ));
    drop(store);
    let store = SqliteStore::open(&dir.db()).unwrap();
    let again = store.register_agent(&new_agent(ID_2), T0 + 3).unwrap();
    assert_eq!(again.generation, 3);
    assert_eq!(again.id, ID_2);
    // The tombstone stays while the name lives again.
    assert_eq!(store.tombstone("weather-bot").unwrap(), Some(tomb));
    // A second deprovision moves the tombstone up.
    store.deprovision_agent("weather-bot", T0 + 4).unwrap();
    let again = store.register_agent(&new_agent(ID_3), T0 + 5).unwrap();
    assert_eq!(again.generation, 4);
    assert!(matches!(
        store.deprovision_agent("nope", T0),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.tombstone("nope").unwrap(), None);
}

#[test]
fn deprovision_removes_instances_and_tokens_and_keeps_tombstone_and_audit() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.db()).unwrap();
    seeded(&store);
    store.register_agent(&new_agent(ID_1), T0).unwrap();
    store.record_token(&token("j1", "inst-1", 1, T0)).unwrap();
    store.record_token(&token("j2", "inst-2", 1, T0)).unwrap();
    store.append_audit(&audit(T0, "allow")).unwrap();
    assert_eq!(store.live_instances(None, T0 + 1).unwrap().len(), 2);

    store.deprovision_agent("weather-bot", T0 + 5).unwrap();
    drop(store);
    let conn = raw(&dir.db());
    let count = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    for table in [
        "agents",
        "agent_digests",
        "agent_devices",
        "agent_grants",
        "instances",
        "tokens",
    ] {
        assert_eq!(count(table), 0, "{table}");
    }
    assert_eq!(count("tombstones"), 1);
    assert_eq!(count("audit"), 1);
    // Devices and grants are not the agent's: they stay.
    assert_eq!(count("devices"), 2);
    assert_eq!(count("grants"), 3);
    drop(conn);

    let store = SqliteStore::open(&dir.db()).unwrap();
    // A token for the gone agent cannot be recorded; nor a revived one after
    // re-registration (its generation is the old one).
    assert!(matches!(
        store.record_token(&token("j3", "inst-3", 1, T0 + 6)),
        Err(StoreError::NotFound { what: "agent", .. })
    ));
    store.register_agent(&new_agent(ID_2), T0 + 7).unwrap();
    assert!(matches!(
        store.record_token(&token("j4", "inst-4", 1, T0 + 8)),
        Err(StoreError::StaleGeneration {
            token: 1,
            current: 2,
            ..
        })
    ));
    assert!(verify_store(&store, |_| true, None).is_ok());
}

// --- instances and tokens ---

#[test]
fn tokens_instances_and_pruning() {
    let store = SqliteStore::in_memory().unwrap();
    seeded(&store);
    store.register_agent(&new_agent(ID_1), T0).unwrap();
    let mut other = new_agent(ID_2);
    other.name = "other".into();
    store.register_agent(&other, T0).unwrap();

    store.record_token(&token("j1", "inst-1", 1, T0)).unwrap();
    // Renewal: same instance, later token.
    store
        .record_token(&token("j2", "inst-1", 1, T0 + 200))
        .unwrap();
    store
        .record_token(&token("j3", "inst-2", 1, T0 + 10))
        .unwrap();
    let mut o = token("j4", "inst-3", 1, T0);
    o.agent = "other".into();
    o.device = "dev-2".into();
    store.record_token(&o).unwrap();

    assert!(matches!(
        store.record_token(&token("j1", "inst-1", 1, T0)),
        Err(StoreError::AlreadyExists { what: "token", .. })
    ));
    // An instance id belongs to one agent and device.
    let mut moved = token("j5", "inst-1", 1, T0);
    moved.device = "dev-2".into();
    assert!(matches!(
        store.record_token(&moved),
        Err(StoreError::Invalid {
            field: "instance_id",
            ..
        })
    ));
    let mut backwards = token("j6", "inst-9", 1, T0);
    backwards.expires_at = T0;
    assert!(matches!(
        store.record_token(&backwards),
        Err(StoreError::Invalid {
            field: "expires_at",
            ..
        })
    ));

    let live = store.live_instances(Some("weather-bot"), T0 + 250).unwrap();
    assert_eq!(live.len(), 2);
    assert_eq!(
        live[0],
        InstanceRecord {
            instance_id: "inst-1".into(),
            agent: "weather-bot".into(),
            device: "dev-1".into(),
            first_seen: T0,
            last_seen: T0 + 200,
            expires_at: T0 + 500,
        }
    );
    assert_eq!(store.live_instances(None, T0 + 250).unwrap().len(), 3);
    // Per agent and device, as the exchange's limit counts them.
    assert_eq!(
        store
            .live_instance_ids("weather-bot", "dev-1", T0 + 250)
            .unwrap(),
        ["inst-1", "inst-2"]
    );
    assert!(
        store
            .live_instance_ids("weather-bot", "dev-2", T0 + 250)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.live_instance_ids("other", "dev-2", T0 + 250).unwrap(),
        ["inst-3"]
    );
    assert_eq!(
        store
            .live_instance_ids("weather-bot", "dev-1", T0 + 400)
            .unwrap(),
        ["inst-1"]
    );
    assert_eq!(
        store
            .outstanding_tokens(Some("weather-bot"), T0 + 250)
            .unwrap(),
        3
    );
    assert_eq!(store.outstanding_tokens(None, T0 + 250).unwrap(), 4);
    // At T0+305, j1 (exp T0+300) and j4 (T0+300) are expired.
    assert_eq!(store.outstanding_tokens(None, T0 + 305).unwrap(), 2);
    let live = store.live_instances(None, T0 + 400).unwrap();
    let ids: Vec<_> = live.iter().map(|i| i.instance_id.as_str()).collect();
    assert_eq!(ids, ["inst-1"]);

    let pruned = store.prune_expired(T0 + 400).unwrap();
    assert_eq!(
        pruned,
        Pruned {
            tokens: 3,
            instances: 2,
            invites: 0
        }
    );
    assert_eq!(store.outstanding_tokens(None, T0 + 400).unwrap(), 1);
    assert_eq!(store.prune_expired(T0 + 400).unwrap(), Pruned::default());
}

// --- revocations ---

#[test]
fn revocations_survive_a_restart_and_retire_covered_tokens() {
    let dir = TempDir::new();
    let kinds = [
        RevocationKind::Token { jti: "j1".into() },
        RevocationKind::Instance {
            id: "inst-2".into(),
        },
        RevocationKind::Agent {
            name: "weather-bot".into(),
            before_generation: Some(2),
        },
        RevocationKind::Agent {
            name: "weather-bot".into(),
            before_generation: None,
        },
        RevocationKind::Device { id: "dev-2".into() },
        RevocationKind::All,
    ];
    {
        let store = SqliteStore::open(&dir.db()).unwrap();
        seeded(&store);
        store.register_agent(&new_agent(ID_1), T0).unwrap();
        store.record_token(&token("j1", "inst-1", 1, T0)).unwrap();
        store.record_token(&token("j2", "inst-2", 1, T0)).unwrap();
        store.record_token(&token("j3", "inst-3", 1, T0)).unwrap();
        let r = store
            .add_revocation(&kinds[0], T0 + 1, "alice@example.com", "leaked in a log")
            .unwrap();
        assert_eq!(r.seq, 1);
        assert_eq!(store.outstanding_tokens(None, T0 + 2).unwrap(), 2);
        store
            .add_revocation(&kinds[1], T0 + 2, "rfc7009", "")
            .unwrap();
        assert_eq!(store.outstanding_tokens(None, T0 + 2).unwrap(), 1);
        // Rotation: generation 1 is below 2.
        store
            .add_revocation(&kinds[2], T0 + 3, "alice@example.com", "rotated")
            .unwrap();
        assert_eq!(store.outstanding_tokens(None, T0 + 3).unwrap(), 0);
        store
            .add_revocation(&kinds[3], T0 + 4, "alice@example.com", "")
            .unwrap();
        store
            .add_revocation(&kinds[4], T0 + 5, "alice@example.com", "stolen")
            .unwrap();
        let r = store
            .add_revocation(&kinds[5], T0 + 6, "alice@example.com", "incident 42")
            .unwrap();
        assert_eq!(r.seq, 6);
        // Revoking a device marks it too.
        assert_eq!(
            store.device("dev-2").unwrap().unwrap().revoked_at,
            Some(T0 + 5)
        );
        // Bad input is refused before anything is written.
        assert!(matches!(
            store.add_revocation(
                &RevocationKind::Agent {
                    name: "Not A Name".into(),
                    before_generation: None
                },
                T0,
                "alice",
                ""
            ),
            Err(StoreError::Invalid { .. })
        ));
        assert!(matches!(
            store.add_revocation(&RevocationKind::All, T0, "", ""),
            Err(StoreError::Invalid { field: "by", .. })
        ));
    }
    let store = SqliteStore::open(&dir.db()).unwrap();
    let all = store.revocations().unwrap();
    let got: Vec<_> = all.iter().map(|r| r.kind.clone()).collect();
    assert_eq!(got, kinds);
    let seqs: Vec<_> = all.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert_eq!(all[0].by, "alice@example.com");
    assert_eq!(all[0].reason, "leaked in a log");
    assert_eq!(all[1].by, "rfc7009");
    assert_eq!(all[5].at, T0 + 6);
}

// --- admins and signing keys ---

#[test]
fn admins_are_found_by_credential_hash() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.db()).unwrap();
    let hash = |s: &str| -> [u8; 32] { Sha256::digest(s.as_bytes()).into() };
    let alice = AdminRecord {
        name: "alice@example.com".into(),
        roles: vec![Role::Admin],
        credential_hash: hash("alice-credential"),
        created_at: T0,
    };
    let bob = AdminRecord {
        name: "bob@example.com".into(),
        roles: vec![
            Role::Approver {
                agents: vec!["weather-bot".into()],
            },
            Role::Auditor,
        ],
        credential_hash: hash("bob-credential"),
        created_at: T0 + 1,
    };
    store.add_admin(&alice).unwrap();
    store.add_admin(&bob).unwrap();
    assert!(matches!(
        store.add_admin(&alice),
        Err(StoreError::AlreadyExists { what: "admin", .. })
    ));
    let same_credential = AdminRecord {
        name: "carol".into(),
        ..alice.clone()
    };
    assert!(matches!(
        store.add_admin(&same_credential),
        Err(StoreError::AlreadyExists {
            what: "admin credential",
            ..
        })
    ));
    let bad_role = AdminRecord {
        name: "dave".into(),
        roles: vec![Role::Approver {
            agents: vec!["Bad Name".into()],
        }],
        credential_hash: hash("dave"),
        created_at: T0,
    };
    assert!(matches!(
        store.add_admin(&bad_role),
        Err(StoreError::Invalid { field: "roles", .. })
    ));
    drop(store);
    let store = SqliteStore::open(&dir.db()).unwrap();
    assert_eq!(
        store
            .admin_by_credential_hash(&hash("bob-credential"))
            .unwrap(),
        Some(bob.clone())
    );
    assert_eq!(
        store
            .admin_by_credential_hash(&hash("alice-credential"))
            .unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.admin_by_credential_hash(&hash("wrong")).unwrap(),
        None
    );
    assert_eq!(store.admins().unwrap(), vec![alice.clone(), bob]);
    // The hash stays out of Debug output.
    assert!(!format!("{alice:?}").contains("credential_hash"));
    // Roles are stored as tagged JSON.
    let roles: String = raw(&dir.db())
        .query_row(
            "SELECT roles FROM admins WHERE name = 'bob@example.com'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        roles,
        r#"[{"role":"approver","agents":["weather-bot"]},{"role":"auditor"}]"#
    );
}

#[test]
fn signing_keys_are_kept_and_retired() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.db()).unwrap();
    store.add_signing_key("k1", &[1; 32], T0).unwrap();
    store.add_signing_key("k2", &[2; 32], T0 + 100).unwrap();
    assert!(matches!(
        store.add_signing_key("k1", &[3; 32], T0),
        Err(StoreError::AlreadyExists { .. })
    ));
    assert!(matches!(
        store.add_signing_key("k3", &[], T0),
        Err(StoreError::Invalid { field: "seed", .. })
    ));
    assert!(store.retire_signing_key("k1", T0 + 100).unwrap());
    assert!(!store.retire_signing_key("k1", T0 + 200).unwrap());
    assert!(matches!(
        store.retire_signing_key("nope", T0),
        Err(StoreError::NotFound { .. })
    ));
    drop(store);
    let store = SqliteStore::open(&dir.db()).unwrap();
    let keys = store.signing_keys().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].kid, "k1");
    assert_eq!(&keys[0].seed[..], &[1; 32]);
    assert_eq!(keys[0].retired_at, Some(T0 + 100));
    assert_eq!(keys[1].kid, "k2");
    assert_eq!(keys[1].retired_at, None);
    let shown = format!("{:?}", keys[0]);
    assert!(shown.contains("32 bytes redacted"), "{shown}");
    assert!(!shown.contains("[1, 1"), "{shown}");
}

// --- audit ---

/// A file with five audit records and a signed checkpoint at record 2.
fn audit_fixture(dir: &TempDir) -> (Ed25519Signer, (u64, [u8; 32])) {
    let signer = Ed25519Signer::from_seed(&[7; 32]).unwrap();
    let store = SqliteStore::open(&dir.db()).unwrap();
    for i in 0..5 {
        let decision = if i % 2 == 0 { "allow" } else { "deny" };
        store.append_audit(&audit(T0 + i, decision)).unwrap();
    }
    let second = store.audit_range(2, 1).unwrap().remove(0);
    let mut cp = Checkpoint {
        seq: second.seq,
        hash: second.hash,
        at: T0 + 10,
        kid: "k1".into(),
        signature: Vec::new(),
    };
    cp.signature = signer.sign(&cp.signing_input()).unwrap();
    store.add_checkpoint(&cp).unwrap();
    let head = store.audit_head().unwrap().unwrap();
    (signer, head)
}

fn verify_file(
    path: &Path,
    signer: &Ed25519Signer,
    head: Option<(u64, [u8; 32])>,
) -> Result<VerifiedHead, VerifyError> {
    let store = SqliteStore::open(path).unwrap();
    let key = signer.public_key();
    verify_store(
        &store,
        |cp| {
            key.verify(SigAlg::EdDSA, &cp.signing_input(), &cp.signature)
                .is_ok()
        },
        head,
    )
}

fn chain_error(r: Result<VerifiedHead, VerifyError>) -> AuditError {
    match r {
        Err(VerifyError::Chain(e)) => e,
        other => panic!("expected a chain error, got {other:?}"),
    }
}

#[test]
fn audit_records_chain_and_verify() {
    let dir = TempDir::new();
    let (signer, head) = audit_fixture(&dir);
    let store = SqliteStore::open(&dir.db()).unwrap();
    let records = store.audit_range(1, 100).unwrap();
    assert_eq!(records.len(), 5);
    assert_eq!(records[0].seq, 1);
    assert_eq!(records[0].prev_hash, [0; 32]);
    for pair in records.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert_eq!(pair[1].seq, pair[0].seq + 1);
    }
    assert_eq!(records[1].entry, audit(T0 + 1, "deny"));
    assert_eq!(head, (5, records[4].hash));
    assert_eq!(store.audit_range(4, 10).unwrap().len(), 2);
    assert_eq!(store.audit_range(6, 10).unwrap().len(), 0);
    assert_eq!(store.audit_range(u64::MAX, 10).unwrap().len(), 0);

    let cps = store.checkpoints().unwrap();
    assert_eq!(cps.len(), 1);
    assert_eq!(cps[0].seq, 2);
    // A checkpoint must match the log.
    let mut wrong = cps[0].clone();
    wrong.seq = 3;
    assert!(matches!(
        store.add_checkpoint(&wrong),
        Err(StoreError::Invalid { field: "hash", .. })
    ));
    wrong.seq = 99;
    assert!(matches!(
        store.add_checkpoint(&wrong),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.add_checkpoint(&cps[0]),
        Err(StoreError::AlreadyExists { .. })
    ));
    drop(store);

    let v = verify_file(&dir.db(), &signer, Some(head)).unwrap();
    assert_eq!(v.head, Some(head));
    assert_eq!(v.records, 5);
    assert_eq!(v.checkpoints, 1);

    // Oversized fields are refused, not truncated.
    let store = SqliteStore::open(&dir.db()).unwrap();
    let mut big = audit(T0, "allow");
    big.reason = Some("x".repeat(audit::MAX_FIELD_BYTES + 1));
    assert!(matches!(
        store.append_audit(&big),
        Err(StoreError::Invalid { .. })
    ));
    assert_eq!(store.audit_head().unwrap(), Some(head));
}

#[test]
fn the_audit_table_refuses_updates_and_deletes() {
    let dir = TempDir::new();
    audit_fixture(&dir);
    let conn = raw(&dir.db());
    let err = conn
        .execute("UPDATE audit SET decision = 'allow' WHERE seq = 2", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = conn
        .execute("DELETE FROM audit WHERE seq = 2", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
}

/// Tamper as someone with the file would: drop the triggers, then change
/// rows with raw SQL.
fn tamper(path: &Path, sql: &str) {
    let conn = raw(path);
    conn.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
        .unwrap();
    conn.execute_batch(sql).unwrap();
}

#[test]
fn verify_catches_an_edited_record() {
    let dir = TempDir::new();
    let (signer, head) = audit_fixture(&dir);
    tamper(
        &dir.db(),
        "UPDATE audit SET decision = 'allow' WHERE seq = 4",
    );
    assert_eq!(
        chain_error(verify_file(&dir.db(), &signer, Some(head))),
        AuditError::Edited { seq: 4 }
    );
}

#[test]
fn verify_catches_a_deleted_record() {
    let dir = TempDir::new();
    let (signer, head) = audit_fixture(&dir);
    tamper(&dir.db(), "DELETE FROM audit WHERE seq = 3");
    assert_eq!(
        chain_error(verify_file(&dir.db(), &signer, Some(head))),
        AuditError::Deleted {
            after_seq: 2,
            next_seq: 4
        }
    );
}

#[test]
fn verify_catches_reordered_records() {
    let dir = TempDir::new();
    let (signer, head) = audit_fixture(&dir);
    tamper(
        &dir.db(),
        "UPDATE audit SET seq = 1000 WHERE seq = 3;
         UPDATE audit SET seq = 3 WHERE seq = 4;
         UPDATE audit SET seq = 4 WHERE seq = 1000;",
    );
    assert_eq!(
        chain_error(verify_file(&dir.db(), &signer, Some(head))),
        AuditError::Reordered { seq: 3 }
    );
}

#[test]
fn verify_catches_a_truncated_tail() {
    let dir = TempDir::new();
    let (signer, head) = audit_fixture(&dir);
    // Cut back to before the signed checkpoint at record 2.
    tamper(&dir.db(), "DELETE FROM audit WHERE seq >= 2");
    assert_eq!(
        chain_error(verify_file(&dir.db(), &signer, None)),
        AuditError::Truncated {
            have_head: 1,
            checkpoint_seq: 2
        }
    );

    // Cut after the checkpoint: the exported head is what catches it.
    let dir = TempDir::new();
    let (signer, head2) = audit_fixture(&dir);
    assert_eq!(head, head2, "the fixture is deterministic");
    tamper(&dir.db(), "DELETE FROM audit WHERE seq >= 4");
    assert!(verify_file(&dir.db(), &signer, None).is_ok());
    assert_eq!(
        chain_error(verify_file(&dir.db(), &signer, Some(head))),
        AuditError::Truncated {
            have_head: 3,
            checkpoint_seq: 5
        }
    );
}

#[test]
fn verify_catches_a_rewritten_log_and_a_forged_checkpoint() {
    let dir = TempDir::new();
    let (signer, head) = audit_fixture(&dir);
    // Rewrite the log from scratch with one changed record, hashes and all.
    let store = SqliteStore::open(&dir.db()).unwrap();
    let mut records = store.audit_range(1, 100).unwrap();
    drop(store);
    records[0].entry.decision = "deny".into();
    let mut prev = [0; 32];
    let conn = raw(&dir.db());
    conn.execute_batch("DROP TRIGGER audit_no_update;").unwrap();
    for r in &mut records {
        r.prev_hash = prev;
        r.hash = audit::record_hash(r.seq, &prev, &r.entry);
        prev = r.hash;
        conn.execute(
            "UPDATE audit SET decision = ?2, prev_hash = ?3, hash = ?4 WHERE seq = ?1",
            rusqlite::params![
                r.seq as i64,
                r.entry.decision,
                &r.prev_hash[..],
                &r.hash[..]
            ],
        )
        .unwrap();
    }
    drop(conn);
    assert!(matches!(
        chain_error(verify_file(&dir.db(), &signer, None)),
        AuditError::BadCheckpoint { seq: 2, .. }
    ));
    // With the checkpoint removed as well, the exported head still catches it.
    raw(&dir.db())
        .execute("DELETE FROM audit_checkpoints", [])
        .unwrap();
    assert_eq!(
        chain_error(verify_file(&dir.db(), &signer, Some(head))),
        AuditError::HeadMismatch { seq: 5 }
    );

    // A checkpoint signed by another key.
    let dir = TempDir::new();
    let (_, head) = audit_fixture(&dir);
    let other = Ed25519Signer::from_seed(&[8; 32]).unwrap();
    assert!(matches!(
        chain_error(verify_file(&dir.db(), &other, Some(head))),
        AuditError::BadCheckpoint { seq: 2, .. }
    ));
}

#[test]
fn verify_store_pages_through_a_long_log() {
    let store = SqliteStore::in_memory().unwrap();
    for i in 0..2500 {
        store.append_audit(&audit(T0 + i, "allow")).unwrap();
    }
    let head = store.audit_head().unwrap();
    let v = verify_store(&store, |_| true, head).unwrap();
    assert_eq!(v.records, 2500);
    assert_eq!(v.head, head);
}

#[test]
fn the_store_is_usable_as_a_shared_trait_object() {
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(SqliteStore::in_memory().unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    store
                        .append_audit(&audit(T0 + t * 100 + i, "allow"))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let v = verify_store(store.as_ref(), |_| true, None).unwrap();
    assert_eq!(v.records, 100);
}

/// Set only in the child process of [`a_revocation_survives_kill_9`].
const CRASH_CHILD_DB: &str = "EDGEWARD_STORE_TEST_CRASH_CHILD_DB";

const ACKNOWLEDGED: &str = "edgeward-store-test: revocation acknowledged";

/// The child of [`a_revocation_survives_kill_9`]; in a normal run it does
/// nothing.
#[test]
fn crash_child() {
    use std::io::Write as _;
    let Some(path) = std::env::var_os(CRASH_CHILD_DB) else {
        return;
    };
    let store = SqliteStore::open(Path::new(&path)).unwrap();
    store
        .add_revocation(&RevocationKind::All, T0, "alice@example.com", "kill switch")
        .unwrap();
    // libtest may print its own text on the same line first.
    println!("{ACKNOWLEDGED}");
    std::io::stdout().flush().unwrap();
    // Wait to be killed; bounded in case the parent is gone.
    std::thread::sleep(std::time::Duration::from_secs(30));
}

#[test]
fn a_revocation_survives_kill_9() {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};
    let dir = TempDir::new();
    drop(SqliteStore::open(&dir.db()).unwrap());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::tests::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_DB, dir.db())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let acknowledged = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains(ACKNOWLEDGED));
    // SIGKILL: no destructor runs, the connection is never closed.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(acknowledged, "the child never acknowledged the revocation");
    let store = SqliteStore::open(&dir.db()).unwrap();
    let revocations = store.revocations().unwrap();
    assert_eq!(revocations.len(), 1);
    assert_eq!(revocations[0].kind, RevocationKind::All);
    assert_eq!(revocations[0].reason, "kill switch");
}

#[test]
fn cached_agent_records_follow_writes_here_and_in_other_connections() {
    let dir = TempDir::new();
    let a = SqliteStore::open(&dir.db()).unwrap();
    seeded(&a);
    a.register_agent(&new_agent(ID_1), T0).unwrap();
    let first = a.agent("weather-bot").unwrap().unwrap();
    assert_eq!(a.agent("weather-bot").unwrap().unwrap(), first);
    assert_eq!(a.agent("nobody").unwrap(), None);

    // A write through this store.
    let bumped = a
        .update_agent(
            "weather-bot",
            &AgentUpdate {
                owner: Some("carol@example.com".into()),
                ..AgentUpdate::default()
            },
            T0 + 1,
        )
        .unwrap();
    assert_eq!(a.agent("weather-bot").unwrap().unwrap(), bumped);

    // A write through another connection (another process, say).
    let b = SqliteStore::open(&dir.db()).unwrap();
    let other = b
        .update_agent(
            "weather-bot",
            &AgentUpdate {
                owner: Some("dave@example.com".into()),
                ..AgentUpdate::default()
            },
            T0 + 2,
        )
        .unwrap();
    assert_ne!(other, bumped);
    assert_eq!(a.agent("weather-bot").unwrap().unwrap(), other);
    // A name registered elsewhere is no longer a cached miss.
    let mut late = new_agent(ID_2);
    late.name = "late".into();
    b.register_agent(&late, T0 + 3).unwrap();
    assert!(a.agent("late").unwrap().is_some());
}

#[cfg(unix)]
#[test]
fn a_database_reached_through_a_symlink_syncs_the_real_wal() {
    let dir = TempDir::new();
    let real = dir.db();
    drop(SqliteStore::open(&real).unwrap());
    let link = real.with_file_name("link.db");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let store = SqliteStore::open(&link).unwrap();
    seeded(&store);
    store.register_agent(&new_agent(ID_1), T0).unwrap();
    // SQLite keeps the WAL beside the real file; that is the one synced.
    let mut wal = real.clone().into_os_string();
    wal.push("-wal");
    assert!(std::path::Path::new(&wal).exists());
    drop(store);
    let again = SqliteStore::open(&real).unwrap();
    assert!(again.agent("weather-bot").unwrap().is_some());
}
