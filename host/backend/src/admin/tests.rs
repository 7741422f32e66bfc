//! The admin API's handler on an in-memory store, without the socket (the
//! binary's tests drive the real socket).

use super::*;
use crate::exchange::ServiceKeys;
use crate::store::{AdminRecord, SqliteStore, Store};
use edgeward_core::clock::FixedClock;
use edgeward_core::config::BackendSettings;
use edgeward_core::entropy::SeededEntropy;
use serde_json::{Value, json};
use std::sync::Mutex;

const T0: u64 = 1_700_000_000;
const ADMIN: &str = "admin-credential-0001";
const AUDITOR: &str = "auditor-credential-0002";
const APPROVER: &str = "approver-credential-0003";
const DIGEST_A: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
const DIGEST_B: &str = "sha256:cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed";
const ED_KEY: &str = "ed25519:11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

const CONFIG: &str = r#"
[[grant]]
name = "weather"
origin = "https://api.weather.example"
methods = ["GET"]
path_prefixes = ["/v1/"]
credential = { kind = "header", name = "x-api-key" }
secret = { env = "WEATHER_KEY" }
"#;

fn context() -> AdminContext {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().expect("store"));
    for (name, credential, role) in [
        ("alice", ADMIN, Role::Admin),
        ("eve", AUDITOR, Role::Auditor),
        (
            "paul",
            APPROVER,
            Role::Approver {
                agents: vec!["bot".into()],
            },
        ),
    ] {
        store
            .add_admin(&AdminRecord {
                name: name.into(),
                roles: vec![role],
                credential_hash: Sha256::digest(credential.as_bytes()).into(),
                created_at: T0,
            })
            .expect("admin");
    }
    let config = edgeward_core::config::Config::parse(CONFIG).expect("config");
    crate::import::import(store.as_ref(), &config, T0, || unreachable!()).expect("import");
    let entropy: SharedEntropy = Arc::new(Mutex::new(Box::new(SeededEntropy::new(7))));
    let tokens = TokenService::new(
        store,
        BackendSettings::default(),
        ServiceKeys {
            signing_seed: &[1; 32],
            nonce_key: &[2; 32],
            boot_epoch: 3,
        },
        None,
        Arc::new(FixedClock(T0)),
        Arc::clone(&entropy),
    )
    .expect("token service");
    AdminContext::new(Arc::new(tokens), entropy)
}

fn call(
    ctx: &AdminContext,
    credential: Option<&str>,
    method: &str,
    path_and_query: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (path_and_query, None),
    };
    let req = Incoming {
        method: Method::from_bytes(method.as_bytes()).expect("method"),
        path: path.to_owned(),
        query,
        authorization: credential.map(|c| format!("Bearer {c}")),
        json_body: body.is_some(),
        body: Ok(body
            .map(|b| Bytes::from(serde_json::to_vec(&b).expect("json")))
            .unwrap_or_default()),
    };
    let (status, value) = ctx.handle(req);
    (status.as_u16(), value)
}

fn admin(ctx: &AdminContext, path: &str, body: Value) -> (u16, Value) {
    call(ctx, Some(ADMIN), "POST", path, Some(body))
}

fn last_audit(ctx: &AdminContext) -> crate::store::AuditRecord {
    let (seq, _) = ctx.tokens.store().audit_head().unwrap().expect("a record");
    ctx.tokens.store().audit_range(seq, 1).unwrap().remove(0)
}

fn register(ctx: &AdminContext, name: &str) -> Value {
    let (status, v) = admin(
        ctx,
        "/v1/agents/register",
        json!({"name": name, "owner": "alice", "digests": [DIGEST_A], "grants": ["weather"]}),
    );
    assert_eq!(status, 200, "{v}");
    v
}

#[test]
fn credentials_are_required_and_access_tokens_refused() {
    let ctx = context();
    let (status, v) = call(&ctx, None, "GET", "/v1/devices", None);
    assert_eq!(status, 401);
    assert_eq!(v["error"], "unauthorized");
    let (status, _) = call(&ctx, Some("not-a-credential"), "GET", "/v1/devices", None);
    assert_eq!(status, 401);
    let jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
    let (status, v) = call(&ctx, Some(jwt), "GET", "/v1/devices", None);
    assert_eq!(status, 401);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("access tokens never authorize admin calls"),
        "{v}"
    );
    let record = last_audit(&ctx);
    assert_eq!(record.entry.decision, "deny");
    assert_eq!(record.entry.admin, None);
    // The presented token is not copied into the log.
    assert!(!record.entry.reason.unwrap().contains("eyJ"));
}

#[test]
fn roles_decide() {
    let ctx = context();
    assert_eq!(call(&ctx, Some(AUDITOR), "GET", "/v1/devices", None).0, 200);
    assert_eq!(
        call(&ctx, Some(AUDITOR), "GET", "/v1/inventory", None).0,
        200
    );
    let (status, v) = call(
        &ctx,
        Some(AUDITOR),
        "POST",
        "/v1/devices/enroll",
        Some(json!({"id": "dev-1", "owner": "ops", "public_key": ED_KEY})),
    );
    assert_eq!(status, 403, "{v}");
    assert!(v["message"].as_str().unwrap().contains("the admin role"));
    assert!(ctx.tokens.store().devices().unwrap().is_empty());
    let record = last_audit(&ctx);
    assert_eq!(
        (
            record.entry.decision.as_str(),
            record.entry.admin.as_deref()
        ),
        ("deny", Some("eve"))
    );
    let (status, v) = call(&ctx, Some(APPROVER), "GET", "/v1/devices", None);
    assert_eq!(status, 403, "{v}");
    assert!(v["message"].as_str().unwrap().contains("approver"), "{v}");
    assert_eq!(call(&ctx, Some(APPROVER), "GET", "/v1/whoami", None).0, 200);
}

#[test]
fn bad_input_names_the_field_and_changes_nothing() {
    let ctx = context();
    let cases = [
        (
            "/v1/devices/enroll",
            json!({"id": "Dev 1", "owner": "ops", "public_key": ED_KEY}),
            "id",
        ),
        (
            "/v1/devices/enroll",
            json!({"id": "dev-1", "owner": "ops", "public_key": "nope"}),
            "public_key",
        ),
        (
            "/v1/devices/enroll",
            json!({"id": "dev-1", "owner": "ops", "public_key": ED_KEY, "colour": 1}),
            "colour",
        ),
        (
            "/v1/devices/invite",
            json!({"owner": "ops", "ttl_s": 1}),
            "ttl_s",
        ),
        (
            "/v1/agents/register",
            json!({"name": "Bot!", "owner": "a", "digests": [DIGEST_A]}),
            "name",
        ),
        (
            "/v1/agents/register",
            json!({"name": "bot", "owner": "a", "digests": ["sha1:x"]}),
            "digests",
        ),
        (
            "/v1/agents/register",
            json!({"name": "bot", "owner": "a", "digests": [DIGEST_A], "grants": ["nope"]}),
            "grants",
        ),
        (
            "/v1/agents/register",
            json!({"name": "bot", "owner": "a", "digests": [DIGEST_A], "devices": ["dev-9"]}),
            "devices",
        ),
        (
            "/v1/agents/register",
            json!({"name": "bot", "owner": "a", "digests": [DIGEST_A], "max_token_lifetime_s": "x"}),
            "max_token_lifetime_s",
        ),
        ("/v1/agents/update", json!({"name": "bot"}), "body"),
        ("/v1/agents/review", json!({"name": "../etc"}), "name"),
        (
            "/v1/revoke",
            json!({"agent": "bot", "device": "dev-1"}),
            "body",
        ),
        ("/v1/revoke", json!({"all": false}), "all"),
        ("/v1/revoke", json!({"token": "a b"}), "token"),
        ("/v1/import", json!({"toml": "[[grant]]\nname = 1"}), "toml"),
        // A policy for a misspelt agent would leave the real one unbound.
        (
            "/v1/import",
            json!({"toml": "[[policy]]\nagent = \"bott\"\n[[policy.rule]]\nname = \"all\"\neffect = \"allow\"\n"}),
            "toml",
        ),
        (
            "/v1/admins/add",
            json!({"name": "bob", "role": "root"}),
            "role",
        ),
    ];
    for (path, body, field) in cases {
        let before = ctx.tokens.store().audit_head().unwrap().map_or(0, |h| h.0);
        let (status, v) = admin(&ctx, path, body.clone());
        assert_eq!(status, 400, "{path} {body}: {v}");
        assert_eq!(v["field"], field, "{path} {body}: {v}");
        let record = last_audit(&ctx);
        assert_eq!(record.seq, before + 1);
        assert_eq!(record.entry.decision, "deny");
        assert!(record.entry.reason.unwrap().contains(field), "{path}");
    }
    let store = ctx.tokens.store();
    assert!(store.devices().unwrap().is_empty());
    assert!(store.agents().unwrap().is_empty());
    assert!(store.revocations().unwrap().is_empty());
    assert!(store.policies().unwrap().is_empty());
    assert_eq!(store.admins().unwrap().len(), 3);
    // Not-found targets change nothing either.
    let (status, _) = admin(&ctx, "/v1/revoke", json!({"agent": "ghost"}));
    assert_eq!(status, 404);
    let (status, _) = admin(&ctx, "/v1/devices/revoke", json!({"id": "ghost"}));
    assert_eq!(status, 404);
    assert!(store.revocations().unwrap().is_empty());
    // GET routes refuse unknown query parameters; POST routes want JSON.
    let (status, v) = call(
        &ctx,
        Some(ADMIN),
        "GET",
        "/v1/agents/show?name=bot&x=1",
        None,
    );
    assert_eq!((status, v["field"].as_str()), (400, Some("x")), "{v}");
    let (status, _) = call(&ctx, Some(ADMIN), "POST", "/v1/agents/review", None);
    assert_eq!(status, 415);
    let (status, _) = call(&ctx, Some(ADMIN), "GET", "/v1/agents/review", None);
    assert_eq!(status, 405);
}

#[test]
fn lifecycle_and_generations() {
    let ctx = context();
    let v = register(&ctx, "bot");
    assert_eq!(v["agent"]["generation"], 1);
    assert_eq!(v["agent"]["id"].as_str().unwrap().len(), 32);
    // Owner only: same generation. Digests: the next one.
    let (_, v) = admin(
        &ctx,
        "/v1/agents/update",
        json!({"name": "bot", "owner": "bob"}),
    );
    assert_eq!(v["agent"]["generation"], 1, "{v}");
    let (_, v) = admin(
        &ctx,
        "/v1/agents/update",
        json!({"name": "bot", "digests": [DIGEST_A, DIGEST_B]}),
    );
    assert_eq!(
        (&v["agent"]["generation"], &v["previous_generation"]),
        (&json!(2), &json!(1)),
        "{v}"
    );
    let (status, v) = admin(&ctx, "/v1/agents/review", json!({"name": "bot"}));
    assert_eq!(status, 200);
    assert_eq!(v["last_reviewed_by"], "alice");
    let (status, v) = admin(&ctx, "/v1/agents/deprovision", json!({"name": "bot"}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["last_generation"], 2);
    let (status, v) = call(&ctx, Some(AUDITOR), "GET", "/v1/agents/show?name=bot", None);
    assert_eq!(status, 404);
    assert!(
        v["message"].as_str().unwrap().contains("deprovisioned"),
        "{v}"
    );
    let v = register(&ctx, "bot");
    assert_eq!(v["agent"]["generation"], 3);
    let (status, v) = call(&ctx, Some(AUDITOR), "GET", "/v1/audit/verify", None);
    assert_eq!(status, 200);
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn inventory_answers_the_four_questions() {
    let ctx = context();
    register(&ctx, "bot");
    let (status, v) = call(
        &ctx,
        Some(AUDITOR),
        "GET",
        "/v1/inventory?review_max_age_days=30",
        None,
    );
    assert_eq!(status, 200, "{v}");
    let a = &v["agents"][0];
    assert_eq!(a["credentials"][0]["grant"], "weather");
    assert_eq!(
        a["credentials"][0]["secret_source"],
        "environment variable WEATHER_KEY"
    );
    assert_eq!(a["systems"][0]["origin"], "https://api.weather.example:443");
    assert_eq!(a["review"]["overdue"], true);
    assert_eq!(a["revocation"]["outstanding_tokens"], 0);
    assert_eq!(a["revocation"]["last_revocation"], Value::Null);
    admin(&ctx, "/v1/agents/review", json!({"name": "bot"}));
    admin(
        &ctx,
        "/v1/revoke",
        json!({"agent": "bot", "reason": "test"}),
    );
    let (_, v) = call(&ctx, Some(ADMIN), "GET", "/v1/inventory", None);
    let a = &v["agents"][0];
    assert_eq!(a["review"]["overdue"], false);
    assert_eq!(a["review"]["age_days"], 0);
    assert_eq!(a["revocation"]["last_revocation"]["kind"], "agent");
    assert_eq!(a["revocation"]["last_revocation"]["by"], "alice");
}

#[test]
fn revoke_takes_exactly_one_target() {
    let ctx = context();
    register(&ctx, "bot");
    let (status, v) = admin(&ctx, "/v1/revoke", json!({"reason": "why"}));
    assert_eq!(status, 400);
    assert!(
        v["message"].as_str().unwrap().contains("none was given"),
        "{v}"
    );
    let (status, v) = admin(
        &ctx,
        "/v1/revoke",
        json!({"all": true, "reason": "incident 7"}),
    );
    assert_eq!(status, 200, "{v}");
    let revs = ctx.tokens.store().revocations().unwrap();
    assert_eq!(revs.len(), 1);
    assert_eq!(revs[0].by, "alice");
    assert_eq!(revs[0].reason, "incident 7");
    let record = last_audit(&ctx);
    assert_eq!(record.entry.admin.as_deref(), Some("alice"));
    assert!(record.entry.reason.unwrap().contains("incident 7"));
}

#[test]
fn admin_add_shows_the_credential_once_and_it_works() {
    let ctx = context();
    let (status, v) = admin(
        &ctx,
        "/v1/admins/add",
        json!({"name": "bob", "role": "auditor"}),
    );
    assert_eq!(status, 200, "{v}");
    let credential = v["credential"].as_str().unwrap().to_owned();
    assert_eq!(credential.len(), 64);
    let (status, v) = call(&ctx, Some(&credential), "GET", "/v1/whoami", None);
    assert_eq!(status, 200);
    assert_eq!(v["name"], "bob");
    // The credential is not in the audit log.
    let page = ctx.tokens.store().audit_range(1, 1000).unwrap();
    assert!(
        page.iter()
            .all(|r| !format!("{:?}", r.entry).contains(&credential))
    );
    let (status, _) = admin(
        &ctx,
        "/v1/admins/add",
        json!({"name": "bob", "role": "admin"}),
    );
    assert_eq!(status, 409);
}

#[test]
fn jwt_shapes() {
    assert!(looks_like_jwt("a.b.c"));
    assert!(looks_like_jwt("eyJ.eyJ."));
    assert!(!looks_like_jwt("0123abcd"));
    assert!(!looks_like_jwt("a.b"));
    assert!(!looks_like_jwt("a b.c.d"));
}
