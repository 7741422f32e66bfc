//! The SQLite engine: one file in the data directory, or memory.
//!
//! 1. The file is created with mode 0600 and an existing one readable or
//!    writable by anyone but its owner is refused: it holds token signing
//!    seeds and the registry. (SQLite gives its `-wal` and `-shm` files the
//!    database file's mode.)
//! 2. WAL journal, and a commit is on disk before the call returns, so a
//!    revocation that was acknowledged survives `kill -9` and power loss:
//!    `synchronous = NORMAL` plus group commit ([`super::durable`]), which
//!    gives `FULL`'s guarantee with one fsync for all the commits that queue
//!    during the previous one. `foreign_keys = ON` makes deletes cascade (an agent
//!    takes its instances and tokens with it); `secure_delete = ON`
//!    overwrites deleted rows (tokens, retired seeds) instead of leaving
//!    them in free pages.
//! 3. The schema is versioned with `PRAGMA user_version`: [`MIGRATIONS`] are
//!    applied in order, each in its own transaction, and a database written
//!    by a newer edgeward is refused rather than misread.
//! 4. One connection behind a `Mutex`: the store's operations are short, and
//!    a single writer is what SQLite allows anyway. Every operation runs in
//!    one transaction; writes take the write lock up front (`IMMEDIATE`) so
//!    two processes cannot deadlock upgrading a read lock.

use super::audit::{MAX_FIELD_BYTES, ZERO_HASH, record_hash};
use super::durable::Durability;
use super::*;
use edgeward_core::config::EMBEDDED_DEVICE;
use edgeward_core::config::OutboundSecrets;
use edgeward_core::grant::{CredentialKind, GrantRules, Origin, validate_name};
use edgeward_core::policy::Policy;
use edgeward_core::secret::SecretSource;
use rusqlite::{
    Connection, OpenFlags, OptionalExtension as _, Row, Transaction, TransactionBehavior, params,
};
use std::collections::HashSet;
use std::hash::Hash;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The schema scripts, in order: script `i` takes the database from version
/// `i` to `i + 1`. A released script is never edited; changes are new ones.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_outbound_secrets.sql"),
    include_str!("migrations/0003_live_instances_by_device.sql"),
    include_str!("migrations/0004_user_secrets.sql"),
    include_str!("migrations/0005_policy_approvals.sql"),
];

/// The schema version this code writes.
// MIGRATIONS is a short constant list: its length fits in an i64.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long to wait for another process's lock before giving up with
/// [`StoreError::Busy`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest free-text field a caller may store (owners, descriptions,
/// reasons), bytes.
const MAX_TEXT: usize = 4096;

/// Most agent records kept in memory (misses are names that do not exist,
/// cached too, so junk names cannot grow it past this).
const MAX_CACHED_AGENTS: usize = 4096;

#[derive(Default)]
struct AgentCache {
    /// `PRAGMA data_version` when the records were read.
    version: Option<i64>,
    records: std::collections::HashMap<String, Option<AgentRecord>>,
    /// Policies by agent (`*`: the global defaults), parsed once.
    policies: std::collections::HashMap<String, Option<std::sync::Arc<Policy>>>,
}

impl AgentCache {
    fn clear(&mut self) {
        self.version = None;
        self.records.clear();
        self.policies.clear();
    }

    /// Start over if another connection committed since the cache was
    /// filled.
    fn check_version(&mut self, version: i64) {
        if self.version != Some(version) {
            self.clear();
            self.version = Some(version);
        }
    }
}

/// The SQLite store. See the module docs.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Agent records by name, read on every proxied call and exchange.
    /// Valid while nothing was committed: emptied by every write of this
    /// store, and by `PRAGMA data_version` moving (another connection, for
    /// example another process on the same file, committed).
    agents: Mutex<AgentCache>,
    /// On disk: a write returns once its commit is fsynced. In memory: none.
    durability: Option<Durability>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Busy
            }
            _ => StoreError::Engine(Box::new(e)),
        }
    }
}

impl SqliteStore {
    /// Open the database file at `path`, creating it (mode 0600) if it does
    /// not exist, and bring its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        prepare_file(path)?;
        // No CREATE flag: the file exists now, with the mode we checked.
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // SQLite follows symlinks and keeps its WAL beside the real file:
        // fsync that one, not a name beside the link.
        let real = std::fs::canonicalize(path).map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })?;
        SqliteStore::setup(conn, Some(Durability::new(with_suffix(&real, "-wal"))))
    }

    /// A store in memory, gone when dropped: for embedded mode and tests.
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        SqliteStore::setup(Connection::open_in_memory()?, None)
    }

    fn setup(
        mut conn: Connection,
        durability: Option<Durability>,
    ) -> Result<SqliteStore, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        if durability.is_some() {
            let mode: String =
                conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Engine(
                    format!("the database refused WAL mode (it is in {mode} mode)").into(),
                ));
            }
        }
        // These are no-ops inside a transaction, so they are set here, once,
        // and read back: a silently ignored setting would lose durability.
        // NORMAL on disk: the group commit fsyncs the WAL itself (see
        // `durable`); FULL in memory, where it means nothing.
        let (level, expected) = if durability.is_some() {
            ("NORMAL", 1)
        } else {
            ("FULL", 2)
        };
        conn.pragma_update(None, "synchronous", level)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "secure_delete", true)?;
        let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
        let foreign_keys: i64 = conn.pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
        if synchronous != expected || foreign_keys != 1 {
            return Err(StoreError::Engine(
                format!("the database refused synchronous = {level} or foreign_keys = ON").into(),
            ));
        }
        migrate(&mut conn)?;
        // The migrations committed under NORMAL: on disk before anything else.
        if let Some(d) = &durability {
            d.wait(d.committed())?;
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            agents: Mutex::new(AgentCache::default()),
            durability,
        })
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Policies by agent, from the cache when nothing was committed since
    /// it was filled: one read transaction for all of them.
    fn cached_policies(
        &self,
        agents: &[&str],
    ) -> Result<Vec<Option<std::sync::Arc<Policy>>>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let version: i64 = tx
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        let mut cache = self.agent_cache();
        cache.check_version(version);
        let mut out = Vec::with_capacity(agents.len());
        for agent in agents {
            if let Some(hit) = cache.policies.get(*agent) {
                out.push(hit.clone());
                continue;
            }
            let doc: Option<String> = query_opt(
                &tx,
                "SELECT document FROM policies WHERE agent = ?1",
                [agent],
                |r| Ok(r.get(0)?),
            )?;
            let policy = doc
                .map(|d| Policy::from_json(&d).map_err(|e| StoreError::corrupt("policy", e)))
                .transpose()?
                .map(std::sync::Arc::new);
            if cache.policies.len() >= MAX_CACHED_AGENTS {
                cache.policies.clear();
            }
            cache.policies.insert((*agent).to_owned(), policy.clone());
            out.push(policy);
        }
        tx.commit()?;
        Ok(out)
    }

    fn agent_cache(&self) -> MutexGuard<'_, AgentCache> {
        // A few cached rows: a poisoned lock holds nothing half-written
        // that matters, and the next write empties it anyway.
        self.agents.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held unwound through an open transaction,
        // which rolled back as it was dropped: the connection is consistent,
        // so a poisoned lock is safe to take over.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `f` in a write transaction: all of it commits, or none of it;
    /// on disk, this returns once the commit is durable.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.write_inner(true, f)
    }

    /// [`Self::write`] for writes that only add rows no cached read depends
    /// on (audit records, checkpoints, issued tokens): the agent cache
    /// stays, so the hot path's own audit record does not empty it.
    fn append<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.write_inner(false, f)
    }

    fn write_inner<T>(
        &self,
        registry: bool,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (out, seq) = {
            let mut conn = self.lock();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Emptied before the commit, with the connection held: no reader
            // can fill it from the old state after the new one is visible.
            if registry {
                self.agent_cache().clear();
            }
            let out = f(&tx)?;
            tx.commit()?;
            (out, self.durability.as_ref().map(Durability::committed))
        };
        // The connection is free for the next writer while the disk works.
        if let (Some(d), Some(seq)) = (&self.durability, seq) {
            d.wait(seq)?;
        }
        Ok(out)
    }

    /// Run `f` in a read transaction, so reads spanning several tables see
    /// one state.
    fn read<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

/// `path` with `suffix` appended to its file name (`x.db` → `x.db-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(unix)]
fn prepare_file(path: &Path) -> Result<(), StoreError> {
    use std::io::ErrorKind;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let io = |path: &Path, source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        // An empty file is an empty SQLite database.
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(path, e)),
    }
    // The journals hold recent rows too.
    for suffix in ["", "-wal", "-journal"] {
        let file = with_suffix(path, suffix);
        let meta = match std::fs::metadata(&file) {
            Ok(meta) => meta,
            Err(e) if e.kind() == ErrorKind::NotFound && !suffix.is_empty() => continue,
            Err(e) => return Err(io(&file, e)),
        };
        if !meta.is_file() {
            return Err(io(&file, std::io::Error::other("not a regular file")));
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(StoreError::Permissions { path: file, mode });
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn prepare_file(_path: &Path) -> Result<(), StoreError> {
    // Outside Unix there are no mode bits to check: the data directory's
    // access control list is the operator's job.
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    loop {
        // The version is read inside the write transaction, so two
        // processes opening a fresh file at once do not both apply a script.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                known: SCHEMA_VERSION,
            });
        }
        let Some(script) = usize::try_from(found)
            .map_err(|_| StoreError::corrupt("schema version", "it is negative"))
            .map(|i| MIGRATIONS.get(i))?
        else {
            return Ok(());
        };
        tx.execute_batch(script)?;
        tx.pragma_update(None, "user_version", found + 1)?;
        tx.commit()?;
    }
}

// --- conversions between caller values and SQLite values ---

/// SQLite integers are signed: times and counts above `i64::MAX` are refused.
fn int(v: u64, field: &'static str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::invalid(field, "too large (at most 2^63 - 1)"))
}

fn opt_int(v: Option<u64>, field: &'static str) -> Result<Option<i64>, StoreError> {
    v.map(|v| int(v, field)).transpose()
}

fn uint(v: i64, what: &'static str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::corrupt(what, "a negative number"))
}

fn opt_uint(v: Option<i64>, what: &'static str) -> Result<Option<u64>, StoreError> {
    v.map(|v| uint(v, what)).transpose()
}

fn hash32(v: &[u8], what: &'static str) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(v).map_err(|_| StoreError::corrupt(what, "a hash is not 32 bytes"))
}

/// A BLOB column, borrowed from SQLite's buffer.
fn blob<'r>(row: &'r Row<'_>, i: usize) -> Result<&'r [u8], StoreError> {
    row.get_ref(i)?
        .as_blob()
        .map_err(|e| StoreError::corrupt("blob column", e))
}

fn json<T: serde::Serialize + ?Sized>(v: &T, field: &'static str) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::invalid(field, e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str, what: &'static str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::corrupt(what, e))
}

fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(f(row)?);
    }
    Ok(out)
}

fn query_opt<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    rows.next()?.map(f).transpose()
}

fn exists(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(sql)?
        .query_row(params, |_| Ok(()))
        .optional()?
        .is_some())
}

// --- checks on caller input (nothing is written when one fails) ---

fn check_name(name: &str, field: &'static str, what: &'static str) -> Result<(), StoreError> {
    validate_name(name, what).map_err(|e| StoreError::invalid(field, e.to_string()))
}

fn check_device_id(id: &str) -> Result<(), StoreError> {
    check_name(id, "device id", "device")?;
    if id == EMBEDDED_DEVICE {
        return Err(StoreError::invalid(
            "device id",
            "\"embedded\" is reserved for the in-process device of embedded mode",
        ));
    }
    Ok(())
}

/// A line of text: not blank, at most `max` bytes, no control characters.
fn check_line(value: &str, field: &'static str, max: usize) -> Result<(), StoreError> {
    if value.trim().is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            field,
            format!("1 to {max} bytes of text without control characters"),
        ));
    }
    Ok(())
}

/// Free text: may be empty or span lines, no other control characters.
fn check_text(value: &str, field: &'static str) -> Result<(), StoreError> {
    if value.len() > MAX_TEXT
        || value
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(StoreError::invalid(
            field,
            format!("at most {MAX_TEXT} bytes, without control characters"),
        ));
    }
    Ok(())
}

/// Token and instance ids: printable ASCII, no spaces.
fn check_token_id(value: &str, field: &'static str) -> Result<(), StoreError> {
    if value.is_empty() || value.len() > 256 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(StoreError::invalid(
            field,
            "1 to 256 printable ASCII characters",
        ));
    }
    Ok(())
}

fn check_agent_id(id: &str) -> Result<(), StoreError> {
    if !(16..=64).contains(&id.len()) || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(StoreError::invalid(
            "agent id",
            "16 to 64 lower-case hex digits, made from a random source",
        ));
    }
    Ok(())
}

fn check_unique<T: Eq + Hash>(items: &[T], field: &'static str) -> Result<(), StoreError> {
    let mut seen = HashSet::new();
    if items.iter().all(|i| seen.insert(i)) {
        Ok(())
    } else {
        Err(StoreError::invalid(field, "an entry is listed twice"))
    }
}

fn same_set<T: Eq + Hash>(a: &[T], b: &[T]) -> bool {
    a.iter().collect::<HashSet<_>>() == b.iter().collect::<HashSet<_>>()
}

fn check_agent_lists(
    digests: Option<&[ComponentDigest]>,
    devices: Option<&[String]>,
    grants: Option<&[GrantName]>,
) -> Result<(), StoreError> {
    if let Some(digests) = digests {
        if digests.is_empty() {
            return Err(StoreError::invalid(
                "digests",
                "list at least one component digest",
            ));
        }
        check_unique(digests, "digests")?;
    }
    if let Some(devices) = devices {
        for d in devices {
            check_name(d, "devices", "device")?;
        }
        check_unique(devices, "devices")?;
    }
    if let Some(grants) = grants {
        check_unique(grants, "grants")?;
    }
    Ok(())
}

fn check_agent_numbers(
    max_token_lifetime: Option<u64>,
    max_instances_per_device: Option<u32>,
) -> Result<(), StoreError> {
    if max_token_lifetime == Some(0) {
        return Err(StoreError::invalid(
            "max_token_lifetime",
            "must be at least 1 second",
        ));
    }
    if max_instances_per_device == Some(0) {
        return Err(StoreError::invalid(
            "max_instances_per_device",
            "must be at least 1",
        ));
    }
    Ok(())
}

/// The devices and grants an agent names must exist: checked here for a
/// clear error; the foreign keys are the backstop.
fn check_refs(
    tx: &Transaction<'_>,
    devices: Option<&[String]>,
    grants: Option<&[GrantName]>,
) -> Result<(), StoreError> {
    for d in devices.unwrap_or_default() {
        if !exists(tx, "SELECT 1 FROM devices WHERE id = ?1", [d])? {
            return Err(StoreError::NotFound {
                what: "device",
                key: d.clone(),
            });
        }
    }
    for g in grants.unwrap_or_default() {
        if !exists(tx, "SELECT 1 FROM grants WHERE name = ?1", [g.as_str()])? {
            return Err(StoreError::NotFound {
                what: "grant",
                key: g.to_string(),
            });
        }
    }
    Ok(())
}

// --- rows ---

const DEVICE_COLS: &str = "id, owner, public_key, enrolled_at, revoked_at";

fn device_from_row(row: &Row<'_>) -> Result<DeviceRecord, StoreError> {
    let key: String = row.get(2)?;
    Ok(DeviceRecord {
        id: row.get(0)?,
        owner: row.get(1)?,
        public_key: key.parse().map_err(|e| StoreError::corrupt("device", e))?,
        enrolled_at: uint(row.get(3)?, "device")?,
        revoked_at: opt_uint(row.get(4)?, "device")?,
    })
}

fn insert_device(tx: &Transaction<'_>, d: &DeviceRecord) -> Result<(), StoreError> {
    if exists(tx, "SELECT 1 FROM devices WHERE id = ?1", [&d.id])? {
        return Err(StoreError::AlreadyExists {
            what: "device",
            key: d.id.clone(),
        });
    }
    tx.execute(
        "INSERT INTO devices (id, owner, public_key, enrolled_at, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            d.id,
            d.owner,
            d.public_key.to_string(),
            int(d.enrolled_at, "enrolled_at")?,
            opt_int(d.revoked_at, "revoked_at")?,
        ],
    )?;
    Ok(())
}

/// How a grant's credential is attached, as stored.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum StoredCredential {
    Header { name: String, prefix: String },
    Query { param: String },
    Basic { username: String },
}

const GRANT_COLS: &str = "name, origin, methods, path_prefixes, credential, secret_source, connect_timeout_ms, timeout_ms, outbound_secrets, user_secrets";

fn grant_from_row(row: &Row<'_>) -> Result<GrantConfig, StoreError> {
    const WHAT: &str = "grant";
    let name: String = row.get(0)?;
    let origin: String = row.get(1)?;
    let methods: Vec<String> = from_json(&row.get::<_, String>(2)?, WHAT)?;
    let methods = methods
        .iter()
        .map(|m| http::Method::from_bytes(m.as_bytes()).map_err(|e| StoreError::corrupt(WHAT, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let credential = match from_json(&row.get::<_, String>(4)?, WHAT)? {
        StoredCredential::Header { name, prefix } => CredentialKind::Header {
            name: http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| StoreError::corrupt(WHAT, e))?,
            prefix,
        },
        StoredCredential::Query { param } => CredentialKind::Query { param },
        StoredCredential::Basic { username } => CredentialKind::Basic { username },
    };
    Ok(GrantConfig {
        rules: GrantRules {
            name: GrantName::new(&name).map_err(|e| StoreError::corrupt(WHAT, e))?,
            origin: Origin::parse(&origin).map_err(|e| StoreError::corrupt(WHAT, e))?,
            methods,
            path_prefixes: from_json(&row.get::<_, String>(3)?, WHAT)?,
        },
        credential,
        secret: from_json::<SecretSource>(&row.get::<_, String>(5)?, WHAT)?,
        user_secrets: from_json(&row.get::<_, String>(9)?, WHAT)?,
        connect_timeout: Duration::from_millis(uint(row.get(6)?, WHAT)?),
        timeout: Duration::from_millis(uint(row.get(7)?, WHAT)?),
        outbound_secrets: match row.get::<_, String>(8)?.as_str() {
            "block" => OutboundSecrets::Block,
            "redact" => OutboundSecrets::Redact,
            "audit" => OutboundSecrets::Audit,
            other => {
                return Err(StoreError::corrupt(
                    WHAT,
                    format!("outbound_secrets {other:?}"),
                ));
            }
        },
    })
}

/// A timestamp column that is set once and never moved (a device's
/// revocation, a signing key's retirement).
struct SetOnce {
    what: &'static str,
    select: &'static str,
    update: &'static str,
}

impl SetOnce {
    const DEVICE_REVOKED: SetOnce = SetOnce {
        what: "device",
        select: "SELECT revoked_at FROM devices WHERE id = ?1",
        update: "UPDATE devices SET revoked_at = ?2 WHERE id = ?1",
    };
    const KEY_RETIRED: SetOnce = SetOnce {
        what: "signing key",
        select: "SELECT retired_at FROM signing_keys WHERE kid = ?1",
        update: "UPDATE signing_keys SET retired_at = ?2 WHERE kid = ?1",
    };
}

/// Set the timestamp if it is not set: `Ok(true)` if it was set now,
/// `Ok(false)` if it already was, `NotFound` if there is no such row.
fn set_once(
    tx: &rusqlite::Transaction<'_>,
    column: SetOnce,
    key: &str,
    at: i64,
) -> Result<bool, StoreError> {
    let current: Option<Option<i64>> = tx
        .query_row(column.select, [key], |r| r.get(0))
        .optional()?;
    match current {
        None => Err(StoreError::NotFound {
            what: column.what,
            key: key.to_owned(),
        }),
        Some(Some(_)) => Ok(false),
        Some(None) => {
            tx.execute(column.update, params![key, at])?;
            Ok(true)
        }
    }
}

fn millis(d: Duration, field: &'static str) -> Result<i64, StoreError> {
    let ms = u64::try_from(d.as_millis()).map_err(|_| StoreError::invalid(field, "too long"))?;
    int(ms, field)
}

/// Limits, as stored (JSON, so a new limit is a field, not a migration).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredLimits {
    memory_bytes: u64,
    task_timeout_ms: u64,
    max_request_bytes: u64,
    max_response_bytes: u64,
    max_output_bytes: u64,
    max_log_records: u64,
}

fn limits_json(l: &Limits) -> Result<String, StoreError> {
    let task_timeout_ms = u64::try_from(l.task_timeout.as_millis())
        .map_err(|_| StoreError::invalid("limits.task_timeout", "too long"))?;
    // usize is at most 64 bits on every target Rust supports: lossless.
    json(
        &StoredLimits {
            memory_bytes: l.memory_bytes,
            task_timeout_ms,
            max_request_bytes: l.max_request_bytes as u64,
            max_response_bytes: l.max_response_bytes as u64,
            max_output_bytes: l.max_output_bytes as u64,
            max_log_records: l.max_log_records as u64,
        },
        "limits",
    )
}

fn limits_from_json(s: &str) -> Result<Limits, StoreError> {
    const WHAT: &str = "agent limits";
    let l: StoredLimits = from_json(s, WHAT)?;
    let size = |v: u64| usize::try_from(v).map_err(|e| StoreError::corrupt(WHAT, e));
    Ok(Limits {
        memory_bytes: l.memory_bytes,
        task_timeout: Duration::from_millis(l.task_timeout_ms),
        max_request_bytes: size(l.max_request_bytes)?,
        max_response_bytes: size(l.max_response_bytes)?,
        max_output_bytes: size(l.max_output_bytes)?,
        max_log_records: size(l.max_log_records)?,
    })
}

const AGENT_COLS: &str = "id, name, owner, description, limits, max_token_lifetime, \
     max_instances_per_device, created_at, updated_at, last_reviewed_at, last_reviewed_by, \
     generation";

/// The agent row; the lists are filled by [`load_lists`].
fn agent_from_row(row: &Row<'_>) -> Result<AgentRecord, StoreError> {
    const WHAT: &str = "agent";
    Ok(AgentRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        owner: row.get(2)?,
        description: row.get(3)?,
        digests: Vec::new(),
        devices: Vec::new(),
        grants: Vec::new(),
        limits: limits_from_json(&row.get::<_, String>(4)?)?,
        max_token_lifetime: uint(row.get(5)?, WHAT)?,
        max_instances_per_device: u32::try_from(row.get::<_, i64>(6)?)
            .map_err(|e| StoreError::corrupt(WHAT, e))?,
        created_at: uint(row.get(7)?, WHAT)?,
        updated_at: uint(row.get(8)?, WHAT)?,
        last_reviewed_at: opt_uint(row.get(9)?, WHAT)?,
        last_reviewed_by: row.get(10)?,
        generation: uint(row.get(11)?, WHAT)?,
    })
}

fn load_lists(conn: &Connection, agent: &mut AgentRecord) -> Result<(), StoreError> {
    agent.digests = query_all(
        conn,
        "SELECT digest FROM agent_digests WHERE agent_id = ?1 ORDER BY position",
        [&agent.id],
        |r| {
            r.get::<_, String>(0)?
                .parse()
                .map_err(|e| StoreError::corrupt("agent digest", e))
        },
    )?;
    agent.devices = query_all(
        conn,
        "SELECT device_id FROM agent_devices WHERE agent_id = ?1 ORDER BY position",
        [&agent.id],
        |r| Ok(r.get(0)?),
    )?;
    agent.grants = query_all(
        conn,
        "SELECT grant_name FROM agent_grants WHERE agent_id = ?1 ORDER BY position",
        [&agent.id],
        |r| GrantName::new(&r.get::<_, String>(0)?).map_err(|e| StoreError::corrupt("agent", e)),
    )?;
    Ok(())
}

fn load_agent(conn: &Connection, name: &str) -> Result<Option<AgentRecord>, StoreError> {
    let sql = format!("SELECT {AGENT_COLS} FROM agents WHERE name = ?1");
    let Some(mut agent) = query_opt(conn, &sql, [name], agent_from_row)? else {
        return Ok(None);
    };
    load_lists(conn, &mut agent)?;
    Ok(Some(agent))
}

fn write_digests(tx: &Transaction<'_>, id: &str, v: &[ComponentDigest]) -> Result<(), StoreError> {
    tx.execute("DELETE FROM agent_digests WHERE agent_id = ?1", [id])?;
    for (i, d) in (0i64..).zip(v) {
        tx.execute(
            "INSERT INTO agent_digests (agent_id, position, digest) VALUES (?1, ?2, ?3)",
            params![id, i, d.to_string()],
        )?;
    }
    Ok(())
}

fn write_devices(tx: &Transaction<'_>, id: &str, v: &[String]) -> Result<(), StoreError> {
    tx.execute("DELETE FROM agent_devices WHERE agent_id = ?1", [id])?;
    for (i, d) in (0i64..).zip(v) {
        tx.execute(
            "INSERT INTO agent_devices (agent_id, position, device_id) VALUES (?1, ?2, ?3)",
            params![id, i, d],
        )?;
    }
    Ok(())
}

fn write_grants(tx: &Transaction<'_>, id: &str, v: &[GrantName]) -> Result<(), StoreError> {
    tx.execute("DELETE FROM agent_grants WHERE agent_id = ?1", [id])?;
    for (i, g) in (0i64..).zip(v) {
        tx.execute(
            "INSERT INTO agent_grants (agent_id, position, grant_name) VALUES (?1, ?2, ?3)",
            params![id, i, g.as_str()],
        )?;
    }
    Ok(())
}

fn tombstone_from_row(row: &Row<'_>) -> Result<Tombstone, StoreError> {
    Ok(Tombstone {
        name: row.get(0)?,
        agent_id: row.get(1)?,
        last_generation: uint(row.get(2)?, "tombstone")?,
        deprovisioned_at: uint(row.get(3)?, "tombstone")?,
    })
}

fn revocation_from_row(row: &Row<'_>) -> Result<Revocation, StoreError> {
    const WHAT: &str = "revocation";
    let kind: String = row.get(1)?;
    let target: Option<String> = row.get(2)?;
    let before_generation = opt_uint(row.get(3)?, WHAT)?;
    let kind = match (kind.as_str(), target) {
        ("token", Some(jti)) => RevocationKind::Token { jti },
        ("instance", Some(id)) => RevocationKind::Instance { id },
        ("agent", Some(name)) => RevocationKind::Agent {
            name,
            before_generation,
        },
        ("device", Some(id)) => RevocationKind::Device { id },
        ("all", None) => RevocationKind::All,
        _ => return Err(StoreError::corrupt(WHAT, "unknown kind or missing target")),
    };
    Ok(Revocation {
        seq: uint(row.get(0)?, WHAT)?,
        kind,
        at: uint(row.get(4)?, WHAT)?,
        by: row.get(5)?,
        reason: row.get(6)?,
    })
}

fn admin_from_row(row: &Row<'_>) -> Result<AdminRecord, StoreError> {
    const WHAT: &str = "admin";
    Ok(AdminRecord {
        name: row.get(0)?,
        roles: from_json(&row.get::<_, String>(1)?, WHAT)?,
        credential_hash: hash32(blob(row, 2)?, WHAT)?,
        created_at: uint(row.get(3)?, WHAT)?,
    })
}

const AUDIT_COLS: &str = "seq, at, kind, decision, agent, instance, device, user_name, \
     grant_name, method, origin, path, reason, jti, admin, prev_hash, hash";

fn audit_from_row(row: &Row<'_>) -> Result<AuditRecord, StoreError> {
    const WHAT: &str = "audit record";
    Ok(AuditRecord {
        seq: uint(row.get(0)?, WHAT)?,
        entry: AuditEntry {
            at: uint(row.get(1)?, WHAT)?,
            kind: row.get(2)?,
            decision: row.get(3)?,
            agent: row.get(4)?,
            instance: row.get(5)?,
            device: row.get(6)?,
            user: row.get(7)?,
            grant: row.get(8)?,
            method: row.get(9)?,
            origin: row.get(10)?,
            path: row.get(11)?,
            reason: row.get(12)?,
            jti: row.get(13)?,
            admin: row.get(14)?,
            policy_event: None,
        },
        prev_hash: hash32(blob(row, 15)?, WHAT)?,
        hash: hash32(blob(row, 16)?, WHAT)?,
    })
}

fn checkpoint_from_row(row: &Row<'_>) -> Result<Checkpoint, StoreError> {
    const WHAT: &str = "audit checkpoint";
    Ok(Checkpoint {
        seq: uint(row.get(0)?, WHAT)?,
        hash: hash32(blob(row, 1)?, WHAT)?,
        at: uint(row.get(2)?, WHAT)?,
        kid: row.get(3)?,
        signature: row.get(4)?,
    })
}

impl Store for SqliteStore {
    fn writes_wait_for_disk(&self) -> bool {
        self.durability.is_some()
    }

    fn enroll_device(&self, device: &DeviceRecord) -> Result<(), StoreError> {
        check_device_id(&device.id)?;
        check_line(&device.owner, "owner", 200)?;
        self.write(|tx| insert_device(tx, device))
    }

    fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let sql = format!("SELECT {DEVICE_COLS} FROM devices WHERE id = ?1");
        self.read(|tx| query_opt(tx, &sql, [id], device_from_row))
    }

    fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let sql = format!("SELECT {DEVICE_COLS} FROM devices ORDER BY id");
        self.read(|tx| query_all(tx, &sql, [], device_from_row))
    }

    fn revoke_device(&self, id: &str, at: u64) -> Result<bool, StoreError> {
        let at = int(at, "at")?;
        self.write(|tx| set_once(tx, SetOnce::DEVICE_REVOKED, id, at))
    }

    fn create_invite(&self, invite: &InviteRecord) -> Result<(), StoreError> {
        check_line(&invite.owner, "owner", 200)?;
        check_line(&invite.created_by, "created_by", 200)?;
        if invite.expires_at <= invite.created_at {
            return Err(StoreError::invalid(
                "expires_at",
                "must be after created_at",
            ));
        }
        self.write(|tx| {
            if exists(
                tx,
                "SELECT 1 FROM invites WHERE code_hash = ?1",
                [&invite.code_hash[..]],
            )? {
                return Err(StoreError::AlreadyExists {
                    what: "enrolment code",
                    key: "(same code)".into(),
                });
            }
            tx.execute(
                "INSERT INTO invites (code_hash, owner, created_by, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    &invite.code_hash[..],
                    invite.owner,
                    invite.created_by,
                    int(invite.created_at, "created_at")?,
                    int(invite.expires_at, "expires_at")?,
                ],
            )?;
            Ok(())
        })
    }

    fn redeem_invite(
        &self,
        code_hash: &[u8; 32],
        device_id: &str,
        public_key: PublicKey,
        at: u64,
    ) -> Result<Option<Redeemed>, StoreError> {
        check_device_id(device_id)?;
        let at_sql = int(at, "at")?;
        self.write(|tx| {
            // Looked up by SQL equality, not in constant time: the code is
            // random and high-entropy, so timing reveals at most a prefix of
            // its hash, which does not help find a code.
            let invite = query_opt(
                tx,
                "SELECT owner, created_by, created_at, expires_at FROM invites
                 WHERE code_hash = ?1 AND redeemed_at IS NULL AND expires_at > ?2",
                params![&code_hash[..], at_sql],
                |r| {
                    Ok(InviteRecord {
                        code_hash: *code_hash,
                        owner: r.get(0)?,
                        created_by: r.get(1)?,
                        created_at: uint(r.get(2)?, "enrolment code")?,
                        expires_at: uint(r.get(3)?, "enrolment code")?,
                    })
                },
            )?;
            let Some(invite) = invite else {
                return Ok(None);
            };
            let device = DeviceRecord {
                id: device_id.to_owned(),
                owner: invite.owner.clone(),
                public_key,
                enrolled_at: at,
                revoked_at: None,
            };
            // Fails (and rolls the whole transaction back, leaving the code
            // usable) if the id is taken.
            insert_device(tx, &device)?;
            tx.execute(
                "UPDATE invites SET redeemed_at = ?2, device_id = ?3 WHERE code_hash = ?1",
                params![&code_hash[..], at_sql, device_id],
            )?;
            Ok(Some(Redeemed { invite, device }))
        })
    }

    fn put_grant(&self, grant: &GrantConfig, at: u64) -> Result<(), StoreError> {
        let methods: Vec<&str> = grant.rules.methods.iter().map(|m| m.as_str()).collect();
        let credential = match &grant.credential {
            CredentialKind::Header { name, prefix } => StoredCredential::Header {
                name: name.as_str().to_owned(),
                prefix: prefix.clone(),
            },
            CredentialKind::Query { param } => StoredCredential::Query {
                param: param.clone(),
            },
            CredentialKind::Basic { username } => StoredCredential::Basic {
                username: username.clone(),
            },
        };
        // Only where the secret lives: SecretSource has no variant that holds
        // a secret.
        let secret = json(&grant.secret, "secret")?;
        let user_secrets = json(&grant.user_secrets, "user_secrets")?;
        let row = (
            grant.rules.name.as_str(),
            grant.rules.origin.to_string(),
            json(&methods, "methods")?,
            json(&grant.rules.path_prefixes, "path_prefixes")?,
            json(&credential, "credential")?,
            secret,
            millis(grant.connect_timeout, "connect_timeout")?,
            millis(grant.timeout, "timeout")?,
            int(at, "at")?,
            match grant.outbound_secrets {
                OutboundSecrets::Block => "block",
                OutboundSecrets::Redact => "redact",
                OutboundSecrets::Audit => "audit",
            },
            user_secrets,
        );
        self.write(|tx| {
            // An upsert that updates in place: REPLACE would delete the row
            // and trip the foreign keys of the agents that hold the grant.
            tx.execute(
                "INSERT INTO grants (name, origin, methods, path_prefixes, credential,
                     secret_source, connect_timeout_ms, timeout_ms, updated_at, outbound_secrets,
                     user_secrets)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (name) DO UPDATE SET
                     origin = excluded.origin, methods = excluded.methods,
                     path_prefixes = excluded.path_prefixes, credential = excluded.credential,
                     secret_source = excluded.secret_source,
                     connect_timeout_ms = excluded.connect_timeout_ms,
                     timeout_ms = excluded.timeout_ms, updated_at = excluded.updated_at,
                     outbound_secrets = excluded.outbound_secrets,
                     user_secrets = excluded.user_secrets",
                row,
            )?;
            Ok(())
        })
    }

    fn grant(&self, name: &GrantName) -> Result<Option<GrantConfig>, StoreError> {
        let sql = format!("SELECT {GRANT_COLS} FROM grants WHERE name = ?1");
        self.read(|tx| query_opt(tx, &sql, [name.as_str()], grant_from_row))
    }

    fn grants(&self) -> Result<Vec<GrantConfig>, StoreError> {
        let sql = format!("SELECT {GRANT_COLS} FROM grants ORDER BY name");
        self.read(|tx| query_all(tx, &sql, [], grant_from_row))
    }

    fn register_agent(&self, agent: &NewAgent, at: u64) -> Result<AgentRecord, StoreError> {
        check_agent_id(&agent.id)?;
        check_name(&agent.name, "name", "agent")?;
        check_line(&agent.owner, "owner", 200)?;
        check_text(&agent.description, "description")?;
        check_agent_lists(
            Some(&agent.digests),
            Some(&agent.devices),
            Some(&agent.grants),
        )?;
        check_agent_numbers(
            Some(agent.max_token_lifetime),
            Some(agent.max_instances_per_device),
        )?;
        let limits = limits_json(&agent.limits)?;
        let at_sql = int(at, "at")?;
        let lifetime = int(agent.max_token_lifetime, "max_token_lifetime")?;
        self.write(|tx| {
            if exists(tx, "SELECT 1 FROM agents WHERE name = ?1", [&agent.name])? {
                return Err(StoreError::AlreadyExists {
                    what: "agent",
                    key: agent.name.clone(),
                });
            }
            if exists(
                tx,
                "SELECT 1 FROM agents WHERE id = ?1
                 UNION ALL SELECT 1 FROM tombstones WHERE agent_id = ?1",
                [&agent.id],
            )? {
                return Err(StoreError::AlreadyExists {
                    what: "agent id",
                    key: agent.id.clone(),
                });
            }
            check_refs(tx, Some(&agent.devices), Some(&agent.grants))?;
            let last: Option<i64> = tx
                .query_row(
                    "SELECT last_generation FROM tombstones WHERE name = ?1",
                    [&agent.name],
                    |r| r.get(0),
                )
                .optional()?;
            let generation = match last {
                None => 1,
                Some(g) => uint(g, "tombstone")?
                    .checked_add(1)
                    .ok_or_else(|| StoreError::corrupt("tombstone", "generation at its limit"))?,
            };
            tx.execute(
                "INSERT INTO agents (id, name, owner, description, limits, max_token_lifetime,
                     max_instances_per_device, created_at, updated_at, generation)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)",
                params![
                    agent.id,
                    agent.name,
                    agent.owner,
                    agent.description,
                    limits,
                    lifetime,
                    agent.max_instances_per_device,
                    at_sql,
                    int(generation, "generation")?,
                ],
            )?;
            write_digests(tx, &agent.id, &agent.digests)?;
            write_devices(tx, &agent.id, &agent.devices)?;
            write_grants(tx, &agent.id, &agent.grants)?;
            Ok(AgentRecord {
                id: agent.id.clone(),
                name: agent.name.clone(),
                owner: agent.owner.clone(),
                description: agent.description.clone(),
                digests: agent.digests.clone(),
                devices: agent.devices.clone(),
                grants: agent.grants.clone(),
                limits: agent.limits,
                max_token_lifetime: agent.max_token_lifetime,
                max_instances_per_device: agent.max_instances_per_device,
                created_at: at,
                updated_at: at,
                last_reviewed_at: None,
                last_reviewed_by: None,
                generation,
            })
        })
    }

    fn agent(&self, name: &str) -> Result<Option<AgentRecord>, StoreError> {
        let mut conn = self.lock();
        // One read transaction for the version and the record's tables. A
        // commit by another connection in between only makes the tag older
        // than the record, which costs one extra read later, never a stale
        // answer.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let version: i64 = tx
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        let mut cache = self.agent_cache();
        cache.check_version(version);
        if let Some(hit) = cache.records.get(name) {
            return Ok(hit.clone());
        }
        let record = load_agent(&tx, name)?;
        tx.commit()?;
        if cache.records.len() >= MAX_CACHED_AGENTS {
            cache.records.clear();
        }
        cache.records.insert(name.to_owned(), record.clone());
        Ok(record)
    }

    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let sql = format!("SELECT {AGENT_COLS} FROM agents ORDER BY name");
        self.read(|tx| {
            let mut agents = query_all(tx, &sql, [], agent_from_row)?;
            // One query per list per agent: agents number in the tens or
            // hundreds, and this keeps one row shape for one agent and all.
            for agent in &mut agents {
                load_lists(tx, agent)?;
            }
            Ok(agents)
        })
    }

    fn update_agent(
        &self,
        name: &str,
        update: &AgentUpdate,
        at: u64,
    ) -> Result<AgentRecord, StoreError> {
        if let Some(owner) = &update.owner {
            check_line(owner, "owner", 200)?;
        }
        if let Some(description) = &update.description {
            check_text(description, "description")?;
        }
        check_agent_lists(
            update.digests.as_deref(),
            update.devices.as_deref(),
            update.grants.as_deref(),
        )?;
        check_agent_numbers(update.max_token_lifetime, update.max_instances_per_device)?;
        self.write(|tx| {
            let mut agent = load_agent(tx, name)?.ok_or_else(|| StoreError::NotFound {
                what: "agent",
                key: name.to_owned(),
            })?;
            check_refs(tx, update.devices.as_deref(), update.grants.as_deref())?;
            // Rights changed: every token of the older generation is refused.
            let mut bump = false;
            if let Some(digests) = &update.digests {
                bump |= !same_set(&agent.digests, digests);
                agent.digests = digests.clone();
                write_digests(tx, &agent.id, digests)?;
            }
            if let Some(devices) = &update.devices {
                bump |= !same_set(&agent.devices, devices);
                agent.devices = devices.clone();
                write_devices(tx, &agent.id, devices)?;
            }
            if let Some(grants) = &update.grants {
                bump |= !same_set(&agent.grants, grants);
                agent.grants = grants.clone();
                write_grants(tx, &agent.id, grants)?;
            }
            if bump {
                agent.generation = agent
                    .generation
                    .checked_add(1)
                    .ok_or_else(|| StoreError::corrupt("agent", "generation at its limit"))?;
            }
            if let Some(owner) = &update.owner {
                agent.owner = owner.clone();
            }
            if let Some(description) = &update.description {
                agent.description = description.clone();
            }
            if let Some(limits) = update.limits {
                agent.limits = limits;
            }
            if let Some(lifetime) = update.max_token_lifetime {
                agent.max_token_lifetime = lifetime;
            }
            if let Some(instances) = update.max_instances_per_device {
                agent.max_instances_per_device = instances;
            }
            agent.updated_at = at;
            tx.execute(
                "UPDATE agents SET owner = ?2, description = ?3, limits = ?4,
                     max_token_lifetime = ?5, max_instances_per_device = ?6, updated_at = ?7,
                     generation = ?8
                 WHERE id = ?1",
                params![
                    agent.id,
                    agent.owner,
                    agent.description,
                    limits_json(&agent.limits)?,
                    int(agent.max_token_lifetime, "max_token_lifetime")?,
                    agent.max_instances_per_device,
                    int(at, "at")?,
                    int(agent.generation, "generation")?,
                ],
            )?;
            Ok(agent)
        })
    }

    fn review_agent(&self, name: &str, at: u64, reviewer: &str) -> Result<AgentRecord, StoreError> {
        check_line(reviewer, "reviewer", 200)?;
        let at = int(at, "at")?;
        self.write(|tx| {
            // A review records a look at the rights, not a change to them:
            // updated_at and the generation stay.
            let changed = tx.execute(
                "UPDATE agents SET last_reviewed_at = ?2, last_reviewed_by = ?3 WHERE name = ?1",
                params![name, at, reviewer],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound {
                    what: "agent",
                    key: name.to_owned(),
                });
            }
            load_agent(tx, name)?.ok_or_else(|| StoreError::NotFound {
                what: "agent",
                key: name.to_owned(),
            })
        })
    }

    fn deprovision_agent(&self, name: &str, at: u64) -> Result<Tombstone, StoreError> {
        let at = int(at, "at")?;
        self.write(|tx| {
            let (id, generation): (String, i64) = tx
                .query_row(
                    "SELECT id, generation FROM agents WHERE name = ?1",
                    [name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound {
                    what: "agent",
                    key: name.to_owned(),
                })?;
            // The foreign keys cascade: lists, instances and tokens go with
            // the row (and so will pending items, in tables added later with
            // ON DELETE CASCADE). The audit log has no foreign key: it stays.
            tx.execute("DELETE FROM agents WHERE id = ?1", [&id])?;
            // Its policy and its open approvals go too: a name registered
            // again starts from no policy and no approval. (Tickets stay for
            // the record, expired.)
            tx.execute("DELETE FROM policies WHERE agent = ?1", [name])?;
            tx.execute(
                "UPDATE approvals SET status = 'expired'
                 WHERE agent = ?1 AND status IN ('pending', 'approved')",
                [name],
            )?;
            // max(): a generation is never lowered, even by a stale row.
            tx.execute(
                "INSERT INTO tombstones (name, agent_id, last_generation, deprovisioned_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET agent_id = excluded.agent_id,
                     last_generation = max(last_generation, excluded.last_generation),
                     deprovisioned_at = excluded.deprovisioned_at",
                params![name, id, generation, at],
            )?;
            query_opt(
                tx,
                "SELECT name, agent_id, last_generation, deprovisioned_at FROM tombstones
                 WHERE name = ?1",
                [name],
                tombstone_from_row,
            )?
            .ok_or_else(|| StoreError::corrupt("tombstone", "not found after writing it"))
        })
    }

    fn tombstone(&self, name: &str) -> Result<Option<Tombstone>, StoreError> {
        self.read(|tx| {
            query_opt(
                tx,
                "SELECT name, agent_id, last_generation, deprovisioned_at FROM tombstones
                 WHERE name = ?1",
                [name],
                tombstone_from_row,
            )
        })
    }

    fn record_token(&self, token: &IssuedToken) -> Result<(), StoreError> {
        check_token_id(&token.jti, "jti")?;
        check_token_id(&token.instance_id, "instance_id")?;
        check_name(&token.device, "device", "device")?;
        if token.expires_at <= token.issued_at {
            return Err(StoreError::invalid("expires_at", "must be after issued_at"));
        }
        let issued_at = int(token.issued_at, "issued_at")?;
        let expires_at = int(token.expires_at, "expires_at")?;
        self.append(|tx| {
            let (agent_id, current): (String, i64) = tx
                .query_row(
                    "SELECT id, generation FROM agents WHERE name = ?1",
                    [&token.agent],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound {
                    what: "agent",
                    key: token.agent.clone(),
                })?;
            let current = uint(current, "agent")?;
            if current != token.generation {
                return Err(StoreError::StaleGeneration {
                    agent: token.agent.clone(),
                    token: token.generation,
                    current,
                });
            }
            if exists(tx, "SELECT 1 FROM tokens WHERE jti = ?1", [&token.jti])? {
                return Err(StoreError::AlreadyExists {
                    what: "token",
                    key: token.jti.clone(),
                });
            }
            // An instance id belongs to one agent on one device: the upsert
            // only touches a row that agrees, and reports 0 rows otherwise.
            let noted = tx.execute(
                "INSERT INTO instances (instance_id, agent_id, device_id, first_seen, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT (instance_id) DO UPDATE SET
                     last_seen = max(last_seen, excluded.last_seen)
                 WHERE agent_id = excluded.agent_id AND device_id = excluded.device_id",
                params![token.instance_id, agent_id, token.device, issued_at],
            )?;
            if noted == 0 {
                return Err(StoreError::invalid(
                    "instance_id",
                    "this instance belongs to another agent or device",
                ));
            }
            tx.execute(
                "INSERT INTO tokens (jti, instance_id, agent_id, device_id, generation,
                     issued_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    token.jti,
                    token.instance_id,
                    agent_id,
                    token.device,
                    int(token.generation, "generation")?,
                    issued_at,
                    expires_at,
                ],
            )?;
            Ok(())
        })
    }

    fn live_instance_ids(
        &self,
        agent: &str,
        device: &str,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        let now = int(now, "now")?;
        self.read(|tx| {
            query_all(
                tx,
                "SELECT DISTINCT t.instance_id
                 FROM tokens t
                 JOIN agents a ON a.id = t.agent_id
                 WHERE a.name = ?1 AND t.device_id = ?2 AND t.expires_at > ?3
                 ORDER BY t.instance_id",
                params![agent, device, now],
                |r| Ok(r.get(0)?),
            )
        })
    }

    fn live_instances(
        &self,
        agent: Option<&str>,
        now: u64,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let now = int(now, "now")?;
        self.read(|tx| {
            query_all(
                tx,
                "SELECT i.instance_id, a.name, i.device_id, i.first_seen, i.last_seen,
                        max(t.expires_at)
                 FROM instances i
                 JOIN agents a ON a.id = i.agent_id
                 JOIN tokens t ON t.instance_id = i.instance_id
                 WHERE t.expires_at > ?2 AND (?1 IS NULL OR a.name = ?1)
                 GROUP BY i.instance_id
                 ORDER BY a.name, i.device_id, i.instance_id",
                params![agent, now],
                |r| {
                    Ok(InstanceRecord {
                        instance_id: r.get(0)?,
                        agent: r.get(1)?,
                        device: r.get(2)?,
                        first_seen: uint(r.get(3)?, "instance")?,
                        last_seen: uint(r.get(4)?, "instance")?,
                        expires_at: uint(r.get(5)?, "token")?,
                    })
                },
            )
        })
    }

    fn outstanding_tokens(&self, agent: Option<&str>, now: u64) -> Result<u64, StoreError> {
        let now = int(now, "now")?;
        self.read(|tx| {
            let n: i64 = tx
                .prepare_cached(
                    "SELECT count(*) FROM tokens t JOIN agents a ON a.id = t.agent_id
                     WHERE t.expires_at > ?2 AND (?1 IS NULL OR a.name = ?1)",
                )?
                .query_row(params![agent, now], |r| r.get(0))?;
            uint(n, "token count")
        })
    }

    fn prune_expired(&self, now: u64) -> Result<Pruned, StoreError> {
        let now = int(now, "now")?;
        self.write(|tx| {
            // usize → u64 is lossless on every target Rust supports.
            let tokens = tx.execute("DELETE FROM tokens WHERE expires_at <= ?1", [now])? as u64;
            let instances = tx.execute(
                "DELETE FROM instances WHERE NOT EXISTS
                     (SELECT 1 FROM tokens t WHERE t.instance_id = instances.instance_id)",
                [],
            )? as u64;
            let invites = tx.execute(
                "DELETE FROM invites WHERE redeemed_at IS NULL AND expires_at <= ?1",
                [now],
            )? as u64;
            Ok(Pruned {
                tokens,
                instances,
                invites,
            })
        })
    }

    fn add_revocation(
        &self,
        kind: &RevocationKind,
        at: u64,
        by: &str,
        reason: &str,
    ) -> Result<Revocation, StoreError> {
        check_line(by, "by", 200)?;
        check_text(reason, "reason")?;
        let (kind_name, target, before) = match kind {
            RevocationKind::Token { jti } => {
                check_token_id(jti, "jti")?;
                ("token", Some(jti.as_str()), None)
            }
            RevocationKind::Instance { id } => {
                check_token_id(id, "instance id")?;
                ("instance", Some(id.as_str()), None)
            }
            RevocationKind::Agent {
                name,
                before_generation,
            } => {
                check_name(name, "agent", "agent")?;
                (
                    "agent",
                    Some(name.as_str()),
                    opt_int(*before_generation, "before_generation")?,
                )
            }
            RevocationKind::Device { id } => {
                // The in-process device of embedded mode may be revoked too.
                check_name(id, "device id", "device")?;
                ("device", Some(id.as_str()), None)
            }
            RevocationKind::All => ("all", None, None),
        };
        let at_sql = int(at, "at")?;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO revocations (kind, target, before_generation, at, revoked_by, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![kind_name, target, before, at_sql, by, reason],
            )?;
            let seq = uint(tx.last_insert_rowid(), "revocation")?;
            // Covered tokens are no longer outstanding: the inventory counts
            // what could still be used.
            match kind {
                RevocationKind::Token { jti } => {
                    tx.execute("DELETE FROM tokens WHERE jti = ?1", [jti])?;
                }
                RevocationKind::Instance { id } => {
                    tx.execute("DELETE FROM tokens WHERE instance_id = ?1", [id])?;
                }
                RevocationKind::Agent { name, .. } => {
                    tx.execute(
                        "DELETE FROM tokens
                         WHERE agent_id IN (SELECT id FROM agents WHERE name = ?1)
                           AND (?2 IS NULL OR generation < ?2)",
                        params![name, before],
                    )?;
                }
                RevocationKind::Device { id } => {
                    tx.execute("DELETE FROM tokens WHERE device_id = ?1", [id])?;
                    tx.execute(
                        "UPDATE devices SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                        params![id, at_sql],
                    )?;
                }
                RevocationKind::All => {
                    tx.execute("DELETE FROM tokens", [])?;
                }
            }
            Ok(Revocation {
                seq,
                kind: kind.clone(),
                at,
                by: by.to_owned(),
                reason: reason.to_owned(),
            })
        })
    }

    fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        self.read(|tx| {
            query_all(
                tx,
                "SELECT seq, kind, target, before_generation, at, revoked_by, reason
                 FROM revocations ORDER BY seq",
                [],
                revocation_from_row,
            )
        })
    }

    fn add_admin(&self, admin: &AdminRecord) -> Result<(), StoreError> {
        check_line(&admin.name, "name", 200)?;
        for role in &admin.roles {
            if let Role::Approver { agents } = role {
                for a in agents {
                    check_name(a, "roles", "agent")?;
                }
            }
        }
        let roles = json(&admin.roles, "roles")?;
        let created_at = int(admin.created_at, "created_at")?;
        self.write(|tx| {
            if exists(tx, "SELECT 1 FROM admins WHERE name = ?1", [&admin.name])? {
                return Err(StoreError::AlreadyExists {
                    what: "admin",
                    key: admin.name.clone(),
                });
            }
            if exists(
                tx,
                "SELECT 1 FROM admins WHERE credential_hash = ?1",
                [&admin.credential_hash[..]],
            )? {
                return Err(StoreError::AlreadyExists {
                    what: "admin credential",
                    key: "(held by another principal)".into(),
                });
            }
            tx.execute(
                "INSERT INTO admins (name, roles, credential_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![admin.name, roles, &admin.credential_hash[..], created_at],
            )?;
            Ok(())
        })
    }

    fn admin_by_credential_hash(&self, hash: &[u8; 32]) -> Result<Option<AdminRecord>, StoreError> {
        // Every principal is compared, in constant time, with no early exit:
        // there are few of them, and this way the time taken says nothing
        // about which stored hash came close.
        let admins = self.admins()?;
        let mut found = None;
        for admin in admins {
            if ct_eq(&admin.credential_hash, hash) {
                found = Some(admin);
            }
        }
        Ok(found)
    }

    fn admins(&self) -> Result<Vec<AdminRecord>, StoreError> {
        self.read(|tx| {
            query_all(
                tx,
                "SELECT name, roles, credential_hash, created_at FROM admins ORDER BY name",
                [],
                admin_from_row,
            )
        })
    }

    fn add_signing_key(&self, kid: &str, seed: &[u8], created_at: u64) -> Result<(), StoreError> {
        check_line(kid, "kid", 200)?;
        if seed.is_empty() || seed.len() > 1024 {
            return Err(StoreError::invalid("seed", "1 to 1024 bytes"));
        }
        let created_at = int(created_at, "created_at")?;
        self.write(|tx| {
            if exists(tx, "SELECT 1 FROM signing_keys WHERE kid = ?1", [kid])? {
                return Err(StoreError::AlreadyExists {
                    what: "signing key",
                    key: kid.to_owned(),
                });
            }
            tx.execute(
                "INSERT INTO signing_keys (kid, seed, created_at) VALUES (?1, ?2, ?3)",
                params![kid, seed, created_at],
            )?;
            Ok(())
        })
    }

    fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        self.read(|tx| {
            query_all(
                tx,
                "SELECT kid, seed, created_at, retired_at FROM signing_keys
                 ORDER BY created_at, kid",
                [],
                |r| {
                    Ok(SigningKeyRecord {
                        kid: r.get(0)?,
                        // Copied straight from SQLite's buffer into wiped
                        // memory, with no plain Vec in between.
                        seed: Zeroizing::new(blob(r, 1)?.to_vec()),
                        created_at: uint(r.get(2)?, "signing key")?,
                        retired_at: opt_uint(r.get(3)?, "signing key")?,
                    })
                },
            )
        })
    }

    fn retire_signing_key(&self, kid: &str, at: u64) -> Result<bool, StoreError> {
        let at = int(at, "at")?;
        self.write(|tx| set_once(tx, SetOnce::KEY_RETIRED, kid, at))
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError> {
        if let Some(field) = entry.oversized_field() {
            return Err(StoreError::Invalid {
                field: "audit entry",
                reason: format!("{field} is longer than {MAX_FIELD_BYTES} bytes"),
            });
        }
        let at = int(entry.at, "at")?;
        self.append(|tx| {
            // Head, hash and insert in one write transaction: no other
            // append can slip in between and fork the chain.
            let head = query_opt(
                tx,
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| {
                    Ok((
                        uint(r.get(0)?, "audit record")?,
                        hash32(blob(r, 1)?, "audit record")?,
                    ))
                },
            )?;
            let (seq, prev_hash) = match head {
                None => (1, ZERO_HASH),
                Some((seq, hash)) => (
                    seq.checked_add(1)
                        .ok_or_else(|| StoreError::corrupt("audit record", "seq at its limit"))?,
                    hash,
                ),
            };
            let hash = record_hash(seq, &prev_hash, entry);
            let e = entry;
            tx.execute(
                "INSERT INTO audit (seq, at, kind, decision, agent, instance, device, user_name,
                     grant_name, method, origin, path, reason, jti, admin, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                     ?17)",
                params![
                    int(seq, "seq")?,
                    at,
                    e.kind,
                    e.decision,
                    e.agent,
                    e.instance,
                    e.device,
                    e.user,
                    e.grant,
                    e.method,
                    e.origin,
                    e.path,
                    e.reason,
                    e.jti,
                    e.admin,
                    &prev_hash[..],
                    &hash[..],
                ],
            )?;
            // Policy state remembers the call in the same transaction.
            if let Some(ev) = &e.policy_event {
                tx.execute(
                    "INSERT INTO policy_events (at, user, root, agent, grant_name, method, path, bytes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        at,
                        ev.user,
                        ev.root,
                        ev.agent,
                        ev.grant,
                        ev.method,
                        ev.path,
                        int(ev.bytes, "bytes")?
                    ],
                )?;
            }
            Ok(AuditRecord {
                seq,
                prev_hash,
                hash,
                entry: entry.clone(),
            })
        })
    }

    fn audit_range(&self, from_seq: u64, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        // No stored seq is above i64::MAX, so a larger start finds nothing.
        let Ok(from) = i64::try_from(from_seq) else {
            return Ok(Vec::new());
        };
        let sql = format!("SELECT {AUDIT_COLS} FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT ?2");
        self.read(|tx| query_all(tx, &sql, params![from, limit], audit_from_row))
    }

    fn audit_head(&self) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        self.read(|tx| {
            query_opt(
                tx,
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| {
                    Ok((
                        uint(r.get(0)?, "audit record")?,
                        hash32(blob(r, 1)?, "audit record")?,
                    ))
                },
            )
        })
    }

    fn add_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        check_line(&checkpoint.kid, "kid", 200)?;
        if checkpoint.signature.is_empty() || checkpoint.signature.len() > 1024 {
            return Err(StoreError::invalid("signature", "1 to 1024 bytes"));
        }
        let seq = int(checkpoint.seq, "seq")?;
        let at = int(checkpoint.at, "at")?;
        self.append(|tx| {
            let hash = query_opt(tx, "SELECT hash FROM audit WHERE seq = ?1", [seq], |r| {
                hash32(blob(r, 0)?, "audit record")
            })?
            .ok_or_else(|| StoreError::NotFound {
                what: "audit record",
                key: checkpoint.seq.to_string(),
            })?;
            if hash != checkpoint.hash {
                return Err(StoreError::invalid(
                    "hash",
                    "the checkpoint's hash is not that record's",
                ));
            }
            if exists(tx, "SELECT 1 FROM audit_checkpoints WHERE seq = ?1", [seq])? {
                return Err(StoreError::AlreadyExists {
                    what: "audit checkpoint at record",
                    key: checkpoint.seq.to_string(),
                });
            }
            tx.execute(
                "INSERT INTO audit_checkpoints (seq, hash, at, kid, signature)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    seq,
                    &checkpoint.hash[..],
                    at,
                    checkpoint.kid,
                    checkpoint.signature
                ],
            )?;
            Ok(())
        })
    }

    fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.read(|tx| {
            query_all(
                tx,
                "SELECT seq, hash, at, kid, signature FROM audit_checkpoints ORDER BY seq",
                [],
                checkpoint_from_row,
            )
        })
    }
    fn put_policy(&self, policy: &Policy, at: u64, by: &str) -> Result<(), StoreError> {
        check_line(by, "updated_by", 200)?;
        let at = int(at, "updated_at")?;
        let doc = policy.to_json();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO policies (agent, document, updated_at, updated_by)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (agent) DO UPDATE SET document = ?2, updated_at = ?3, updated_by = ?4",
                params![policy.agent(), doc, at, by],
            )?;
            Ok(())
        })
    }

    fn remove_policy(&self, agent: &str) -> Result<bool, StoreError> {
        self.write(|tx| Ok(tx.execute("DELETE FROM policies WHERE agent = ?1", [agent])? > 0))
    }

    fn policy(&self, agent: &str) -> Result<Option<std::sync::Arc<Policy>>, StoreError> {
        Ok(self.cached_policies(&[agent])?.pop().flatten())
    }

    fn policies_for(&self, agent: &str) -> Result<Vec<std::sync::Arc<Policy>>, StoreError> {
        Ok(self
            .cached_policies(&[agent, edgeward_core::policy::GLOBAL])?
            .into_iter()
            .flatten()
            .collect())
    }

    fn policies(&self) -> Result<Vec<Policy>, StoreError> {
        self.read(|tx| {
            query_all(
                tx,
                "SELECT document FROM policies ORDER BY agent",
                [],
                |r| {
                    let doc: String = r.get(0)?;
                    Policy::from_json(&doc).map_err(|e| StoreError::corrupt("policy", e))
                },
            )
        })
    }

    fn open_approval(
        &self,
        t: &ApprovalRecord,
        now: u64,
    ) -> Result<(ApprovalRecord, bool), StoreError> {
        let headers = json(&t.headers, "headers")?;
        let (created, expires) = (
            int(t.created_at, "created_at")?,
            int(t.expires_at, "expires_at")?,
        );
        let now_i = int(now, "now")?;
        let sql = format!(
            "SELECT {APPROVAL_COLS} FROM approvals WHERE fingerprint = ?1 AND status = 'pending'"
        );
        self.append(|tx| {
            // A pending ticket past its time no longer holds the slot.
                        tx.execute(
                "UPDATE approvals SET status = 'expired'
                 WHERE fingerprint = ?1 AND status = 'pending' AND expires_at <= ?2",
                params![t.fingerprint, now_i],
            )?;
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO approvals (id, agent, instance, user, root, grant_name, method, url,
                     headers, body_sha256, body_preview, rule, fingerprint, status, created_at,
                     expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 'pending', ?14, ?15)",
                params![
                    t.id, t.agent, t.instance, t.user, t.root, t.grant, t.method, t.url, headers,
                                        t.body_sha256, t.body_preview, t.rule, t.fingerprint, created, expires
                ],
            )? == 1;
            let stored = query_opt(tx, &sql, [&t.fingerprint], |r| approval_from_row(r, now))?
                .ok_or_else(|| StoreError::corrupt("approval", "the pending ticket vanished"))?;
            Ok((stored, inserted))
        })
    }

    fn approval(&self, id: &str, now: u64) -> Result<Option<ApprovalRecord>, StoreError> {
        let sql = format!("SELECT {APPROVAL_COLS} FROM approvals WHERE id = ?1");
        self.read(|tx| query_opt(tx, &sql, [id], |r| approval_from_row(r, now)))
    }

    fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        agents: Option<&[String]>,
        limit: u32,
        now: u64,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        // Filtered and limited in SQL: the table keeps every ticket.
        let status_sql = match status {
            None => "1",
            Some(ApprovalStatus::Pending) => "status = 'pending' AND expires_at > ?1",
            Some(ApprovalStatus::Approved) => "status = 'approved' AND expires_at > ?1",
            Some(ApprovalStatus::Denied) => "status = 'denied'",
            Some(ApprovalStatus::Used) => "status = 'used'",
            Some(ApprovalStatus::Expired) => {
                "status = 'expired' OR (status IN ('pending', 'approved') AND expires_at <= ?1)"
            }
        };
        let agents_json = json(&agents.unwrap_or(&[]), "agents")?;
        let agents_sql = if agents.is_some() {
            "agent IN (SELECT value FROM json_each(?2))"
        } else {
            "?2 IS NOT NULL"
        };
        let sql = format!(
            "SELECT {APPROVAL_COLS} FROM approvals WHERE ({status_sql}) AND ({agents_sql})
             ORDER BY created_at DESC, id LIMIT ?3"
        );
        let now_i = int(now, "now")?;
        self.read(|tx| {
            query_all(tx, &sql, params![now_i, agents_json, limit], |r| {
                approval_from_row(r, now)
            })
        })
    }

    fn live_approval(
        &self,
        fingerprint: &str,
        now: u64,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let sql = format!(
            "SELECT {APPROVAL_COLS} FROM approvals WHERE fingerprint = ?1
                          AND status IN ('pending', 'approved', 'denied') AND expires_at > ?2
             ORDER BY CASE status WHEN 'approved' THEN 0 WHEN 'denied' THEN 1 ELSE 2 END,
                 created_at DESC
             LIMIT 1"
        );
        let now_i = int(now, "now")?;
        self.read(|tx| {
            query_opt(tx, &sql, params![fingerprint, now_i], |r| {
                approval_from_row(r, now)
            })
        })
    }

    fn decide_approval(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        at: u64,
        use_until: u64,
    ) -> Result<ApprovalRecord, StoreError> {
        check_line(by, "decided_by", 200)?;
        let (at_i, until) = (int(at, "decided_at")?, int(use_until, "expires_at")?);
        let sql = format!("SELECT {APPROVAL_COLS} FROM approvals WHERE id = ?1");
        self.append(|tx| {
            let mut ticket =
                query_opt(tx, &sql, [id], |r| approval_from_row(r, at))?.ok_or_else(|| {
                    StoreError::NotFound {
                        what: "approval",
                        key: id.to_owned(),
                    }
                })?;
            if ticket.status != ApprovalStatus::Pending {
                return Err(StoreError::invalid(
                    "status",
                    format!("the ticket is {}, not pending", ticket.status.as_str()),
                ));
            }
            // Approved: usable until `use_until`. Denied: the denial stands
            // that long, so the same call is refused without asking again.
            ticket.status = if approve {
                ApprovalStatus::Approved
            } else {
                ApprovalStatus::Denied
            };
            tx.execute(
                "UPDATE approvals SET status = ?2, decided_by = ?3, decided_at = ?4, expires_at = ?5
                 WHERE id = ?1 AND status = 'pending'",
                params![id, ticket.status.as_str(), by, at_i, until],
            )?;
            ticket.decided_by = Some(by.to_owned());
            ticket.decided_at = Some(at);
            ticket.expires_at = use_until;
            Ok(ticket)
        })
    }

    fn use_approval(&self, id: &str, at: u64) -> Result<bool, StoreError> {
        let at = int(at, "used_at")?;
        self.append(|tx| {
            Ok(tx.execute(
                "UPDATE approvals SET status = 'used', used_at = ?2
                 WHERE id = ?1 AND status = 'approved' AND expires_at > ?2",
                params![id, at],
            )? == 1)
        })
    }

    fn approvals_opened_since(&self, agent: &str, since: u64) -> Result<u64, StoreError> {
        let since = int(since, "since")?;
        self.read(|tx| {
            let n: i64 = tx
                .prepare_cached(
                    "SELECT COUNT(*) FROM approvals WHERE agent = ?1 AND created_at >= ?2",
                )?
                .query_row(params![agent, since], |r| r.get(0))?;
            uint(n, "approval count")
        })
    }

    fn policy_events_since(&self, since: u64) -> Result<Vec<(u64, PolicyEvent)>, StoreError> {
        let since = int(since, "since")?;
        self.read(|tx| {
            query_all(
                tx,
                "SELECT at, user, root, agent, grant_name, method, path, bytes
                 FROM policy_events WHERE at >= ?1 ORDER BY seq",
                [since],
                |r| {
                    Ok((
                        uint(r.get(0)?, "policy event")?,
                        PolicyEvent {
                            user: r.get(1)?,
                            root: r.get(2)?,
                            agent: r.get(3)?,
                            grant: r.get(4)?,
                            method: r.get(5)?,
                            path: r.get(6)?,
                            bytes: uint(r.get(7)?, "policy event")?,
                        },
                    ))
                },
            )
        })
    }
    fn prune_policy_events(&self, before: u64) -> Result<u64, StoreError> {
        let before = int(before, "before")?;
        self.append(|tx| {
            let n = tx.execute("DELETE FROM policy_events WHERE at < ?1", [before])?;
            Ok(n as u64)
        })
    }

    fn approval_stats(&self, now: u64) -> Result<Vec<ApprovalStats>, StoreError> {
        let now_i = int(now, "now")?;
        self.read(|tx| {
            let mut by_agent: std::collections::BTreeMap<String, ApprovalStats> =
                Default::default();
            let allowed = query_all(
                tx,
                "SELECT agent, COUNT(*) FROM audit WHERE kind = 'egress' AND decision = 'allow'
                 AND agent IS NOT NULL GROUP BY agent",
                [],
                |r| Ok((r.get::<_, String>(0)?, uint(r.get(1)?, "count")?)),
            )?;
            for (agent, n) in allowed {
                by_agent.entry(agent.clone()).or_default().allowed = n;
            }
            let tickets = query_all(
                tx,
                "SELECT agent, status, expires_at, created_at, decided_at FROM approvals",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                    ))
                },
            )?;
            let mut latencies: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
            let mut used: std::collections::BTreeMap<String, u64> = Default::default();
            for (agent, status, expires, created, decided) in tickets {
                if status == "used" {
                    *used.entry(agent.clone()).or_default() += 1;
                }
                let e = by_agent.entry(agent.clone()).or_default();
                e.sent_for_approval += 1;
                match status.as_str() {
                    "approved" | "used" => e.approved += 1,
                    "denied" => e.denied += 1,
                    "expired" => e.expired += 1,
                    _ if expires <= now_i => e.expired += 1,
                    _ => {}
                }
                if let Some(d) = decided {
                    latencies
                        .entry(agent)
                        .or_default()
                        .push(u64::try_from(d.saturating_sub(created)).unwrap_or(0));
                }
            }
            for (agent, e) in by_agent.iter_mut() {
                e.agent = agent.clone();
                // Calls forwarded on an approval are not "allowed by policy".
                e.allowed = e
                    .allowed
                    .saturating_sub(used.get(agent).copied().unwrap_or(0));
                if let Some(l) = latencies.get(agent).filter(|l| !l.is_empty()) {
                    e.mean_latency_s = Some(l.iter().sum::<u64>() / l.len() as u64);
                    e.max_latency_s = l.iter().max().copied();
                }
            }
            Ok(by_agent.into_values().collect())
        })
    }
}

const APPROVAL_COLS: &str = "id, agent, instance, user, root, grant_name, method, url, headers, \
    body_sha256, body_preview, rule, fingerprint, status, created_at, expires_at, decided_by, \
    decided_at, used_at";

fn approval_from_row(r: &Row<'_>, now: u64) -> Result<ApprovalRecord, StoreError> {
    let stored: String = r.get(13)?;
    let expires_at = uint(r.get(15)?, "expires_at")?;
    // Pending or approved past its time reads as expired.
    let status = match ApprovalStatus::from_name(&stored) {
        Some(ApprovalStatus::Pending | ApprovalStatus::Approved) if expires_at <= now => {
            ApprovalStatus::Expired
        }
        Some(s) => s,
        None => return Err(StoreError::corrupt("approval status", "unknown status")),
    };
    let headers: String = r.get(8)?;
    Ok(ApprovalRecord {
        id: r.get(0)?,
        agent: r.get(1)?,
        instance: r.get(2)?,
        user: r.get(3)?,
        root: r.get(4)?,
        grant: r.get(5)?,
        method: r.get(6)?,
        url: r.get(7)?,
        headers: from_json(&headers, "approval headers")?,
        body_sha256: r.get(9)?,
        body_preview: r.get(10)?,
        rule: r.get(11)?,
        fingerprint: r.get(12)?,
        status,
        created_at: uint(r.get(14)?, "created_at")?,
        expires_at,
        decided_by: r.get(16)?,
        decided_at: opt_uint(r.get(17)?, "decided_at")?,
        used_at: opt_uint(r.get(18)?, "used_at")?,
    })
}
