//! Durable state in Spin's SQLite database (`default`): the registry
//! (agents' generations and tombstones, imported configs), used nonces and
//! proofs, revocations, issued tokens, and the hash-chained audit log.
//!
//! Spin's key-value store has no compare-and-swap, so single use is a
//! unique key in SQLite: an insert that does nothing on conflict, and a
//! returned row means this request was first, atomically, whichever
//! instance serves it.

use edgeward_core::revocation::{RevocationKind, RevocationSet};
use sha2::{Digest as _, Sha256};
use spin_sdk::sqlite3::{Connection, QueryResult, Value};

/// Bumped with every schema change (SQLite's `user_version`).
const SCHEMA_VERSION: i64 = 1;

/// Single-use marks are swept this long after they expired by the clock of
/// the instance sweeping: instances on other hosts may run behind (the
/// largest clock tolerance edgeward allows anywhere).
const SWEEP_MARGIN: u64 = edgeward_core::token::MAX_TOLERANCE_SECS;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS used_nonces (nonce TEXT PRIMARY KEY, expires_at INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS used_nonces_expiry ON used_nonces (expires_at)",
    "CREATE TABLE IF NOT EXISTS used_proofs (key TEXT PRIMARY KEY, expires_at INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS used_proofs_expiry ON used_proofs (expires_at)",
    // The registry's durable side: each agent's generation and what it was
    // at (digests, devices, grants), and tombstones of removed agents.
    "CREATE TABLE IF NOT EXISTS registry_agents (name TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, generation INTEGER NOT NULL, removed_at INTEGER)",
    // Every config text imported, once each.
    "CREATE TABLE IF NOT EXISTS registry_imports (config_sha256 TEXT PRIMARY KEY, imported_at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS revocations (kind TEXT NOT NULL, target TEXT NOT NULL, before_generation INTEGER, at INTEGER NOT NULL, by TEXT NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (kind, target))",
    "CREATE TABLE IF NOT EXISTS tokens (jti TEXT PRIMARY KEY, instance_id TEXT NOT NULL, agent TEXT NOT NULL, device TEXT NOT NULL, issued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS tokens_live ON tokens (agent, device, expires_at)",
    "CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, record TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL)",
];

/// The database failed. Internal: the caller answers with a generic error
/// and never shows this text to a guest.
#[derive(Debug, thiserror::Error)]
#[error("database: {0}")]
pub struct StoreError(String);

impl StoreError {
    /// An error described in words.
    pub fn from_text(text: &str) -> StoreError {
        StoreError(text.to_owned())
    }
}

impl From<spin_sdk::sqlite3::Error> for StoreError {
    fn from(e: spin_sdk::sqlite3::Error) -> Self {
        StoreError(format!("{e:?}"))
    }
}

/// An open database.
pub struct Store {
    conn: Connection,
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// SQLite integers are signed; times and generations fit easily.
fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn first_int(q: &QueryResult) -> Option<i64> {
    q.rows.first().and_then(|r| r.get::<i64>(0))
}

/// One audit record, as written (JSON, hashed into the chain).
#[derive(Debug)]
pub struct AuditEntry {
    /// exchange, egress, revoke, stop, admin.
    pub kind: &'static str,
    /// allow, deny, stop.
    pub decision: &'static str,
    /// Text fields by name (agent, instance, device, jti, user, grant,
    /// method, origin, path, reason, admin).
    pub fields: Vec<(&'static str, String)>,
}

impl AuditEntry {
    /// A record of `kind` with `decision`.
    pub fn new(kind: &'static str, decision: &'static str) -> AuditEntry {
        AuditEntry {
            kind,
            decision,
            fields: Vec::new(),
        }
    }

    /// Set a field (skipped when `None`).
    pub fn with(mut self, name: &'static str, value: Option<impl Into<String>>) -> AuditEntry {
        self.set(name, value);
        self
    }

    /// [`AuditEntry::with`] on a borrowed record.
    pub fn set(&mut self, name: &'static str, value: Option<impl Into<String>>) {
        if let Some(v) = value {
            self.fields.push((name, v.into()));
        }
    }
}

impl Store {
    /// Open the default database and bring its schema up to date.
    pub fn open() -> Result<Store, StoreError> {
        let conn = Connection::open_default()?;
        let store = Store { conn };
        let version = first_int(&store.conn.execute("PRAGMA user_version", &[])?).unwrap_or(0);
        if version < SCHEMA_VERSION {
            for statement in SCHEMA {
                store.conn.execute(statement, &[])?;
            }
            store
                .conn
                .execute(&format!("PRAGMA user_version = {SCHEMA_VERSION}"), &[])?;
        }
        Ok(store)
    }

    /// Mark a nonce used; false if it was used before. Expired marks are
    /// swept first (a nonce is refused once expired anyway).
    pub fn use_nonce(&self, nonce: &str, expires_at: u64, now: u64) -> Result<bool, StoreError> {
        self.use_once("used_nonces", "nonce", nonce, expires_at, now)
    }

    /// Mark a DPoP proof (`jkt.jti`) used; false if it was used before.
    pub fn use_proof(&self, key: &str, expires_at: u64, now: u64) -> Result<bool, StoreError> {
        self.use_once("used_proofs", "key", key, expires_at, now)
    }

    fn use_once(
        &self,
        table: &str,
        column: &str,
        key: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        self.conn.execute(
            &format!("DELETE FROM {table} WHERE expires_at < ?"),
            &[int(now.saturating_sub(SWEEP_MARGIN))],
        )?;
        // RETURNING says whether this statement inserted the row: no
        // reliance on per-connection state such as `changes()`.
        let inserted = self.conn.execute(
            &format!(
                "INSERT INTO {table} ({column}, expires_at) VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING 1"
            ),
            &[text(key), int(expires_at)],
        )?;
        Ok(!inserted.rows.is_empty())
    }

    /// The revocations that could concern these names (all kill switches
    /// included), as a set to ask.
    pub fn revocations_for(
        &self,
        jtis: &[&str],
        instances: &[&str],
        agents: &[&str],
        devices: &[&str],
    ) -> Result<RevocationSet, StoreError> {
        // One statement for every name the check needs (a call's hot
        // path): each kind's targets as a parameter list, and any kill
        // switch.
        let mut sql = String::from(
            "SELECT kind, target, before_generation, at FROM revocations WHERE kind = 'all'",
        );
        let mut params = Vec::new();
        for (kind, targets) in [
            ("token", jtis),
            ("instance", instances),
            ("agent", agents),
            ("device", devices),
        ] {
            if targets.is_empty() {
                continue;
            }
            let marks = vec!["?"; targets.len()].join(", ");
            sql.push_str(&format!(" OR (kind = '{kind}' AND target IN ({marks}))"));
            params.extend(targets.iter().map(|t| text(t)));
        }
        let q = self.conn.execute(&sql, &params)?;
        let mut set = RevocationSet::default();
        for row in &q.rows {
            let (Some(kind), Some(target)) = (row.get::<&str>(0), row.get::<&str>(1)) else {
                continue;
            };
            let target = target.to_owned();
            let number = |i| row.get::<i64>(i).map(|n| u64::try_from(n).unwrap_or(0));
            set.add(&match kind {
                "token" => RevocationKind::Token { jti: target },
                "instance" => RevocationKind::Instance { id: target },
                "agent" => RevocationKind::Agent {
                    name: target,
                    before_generation: number(2),
                },
                "device" => RevocationKind::Device { id: target },
                _ => RevocationKind::All {
                    at: number(3).unwrap_or(0),
                },
            });
        }
        Ok(set)
    }

    /// Store a revocation; it applies from the next request on.
    pub fn add_revocation(
        &self,
        kind: &RevocationKind,
        at: u64,
        by: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let (name, target, before) = match kind {
            RevocationKind::Token { jti } => ("token", jti.as_str(), None),
            RevocationKind::Instance { id } => ("instance", id.as_str(), None),
            RevocationKind::Agent {
                name,
                before_generation,
            } => ("agent", name.as_str(), *before_generation),
            RevocationKind::Device { id } => ("device", id.as_str(), None),
            RevocationKind::All { .. } => ("all", "", None),
        };
        let at = match kind {
            RevocationKind::All { at } => *at,
            _ => at,
        };
        // A second revocation of the same target only widens it: the
        // larger generation bound and kill-switch time win, and "every
        // generation" (NULL) beats any bound. Covered tokens no longer
        // count as live instances (as natively): revoking frees the slots.
        self.transaction(|s| {
        s.conn.execute(
            "INSERT INTO revocations (kind, target, before_generation, at, by, reason) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (kind, target) DO UPDATE SET \
               before_generation = CASE WHEN revocations.before_generation IS NULL OR excluded.before_generation IS NULL THEN NULL \
                                        ELSE max(revocations.before_generation, excluded.before_generation) END, \
               at = max(revocations.at, excluded.at), by = excluded.by, reason = excluded.reason",
            &[
                text(name),
                text(target),
                before.map_or(Value::Null, int),
                int(at),
                text(by),
                text(reason),
            ],
        )?;
        let (sql, param) = match kind {
            RevocationKind::Token { jti } => ("DELETE FROM tokens WHERE jti = ?", Some(jti)),
            RevocationKind::Instance { id } => {
                ("DELETE FROM tokens WHERE instance_id = ?", Some(id))
            }
            RevocationKind::Agent { name, .. } => ("DELETE FROM tokens WHERE agent = ?", Some(name)),
            RevocationKind::Device { id } => ("DELETE FROM tokens WHERE device = ?", Some(id)),
            RevocationKind::All { .. } => ("DELETE FROM tokens", None),
        };
        let params: Vec<Value> = param.into_iter().map(|p| text(p)).collect();
        s.conn.execute(sql, &params)?;
        Ok(())
        })
    }

    /// The registry as the database has it: live agents' generations.
    pub fn generations(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let q = self.conn.execute(
            "SELECT name, generation FROM registry_agents WHERE removed_at IS NULL",
            &[],
        )?;
        Ok(q.rows
            .iter()
            .filter_map(|r| {
                let agent = r.get::<&str>(0)?.to_owned();
                let generation = u64::try_from(r.get::<i64>(1)?).ok()?;
                Some((agent, generation))
            })
            .collect())
    }

    /// Import a config into the registry, once per config text (a stale
    /// instance still serving an older text during a deploy changes
    /// nothing). As natively: a new agent starts at generation 1, or above
    /// its tombstone; a changed digest, device or grant list moves it to
    /// the next generation (its tokens die); an agent no longer in the
    /// config is tombstoned (its tokens die). Covered tokens stop counting
    /// as live instances.
    pub fn import(
        &self,
        config_sha256: &str,
        agents: &[(&str, String)],
        now: u64,
    ) -> Result<(), StoreError> {
        let seen = self.conn.execute(
            "SELECT 1 FROM registry_imports WHERE config_sha256 = ?",
            &[text(config_sha256)],
        )?;
        if !seen.rows.is_empty() {
            return Ok(());
        }
        self.transaction(|s| {
            // Another instance may have imported it meanwhile.
            let inserted = s.conn.execute(
                "INSERT INTO registry_imports (config_sha256, imported_at) VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING 1",
                &[text(config_sha256), int(now)],
            )?;
            if inserted.rows.is_empty() {
                return Ok(());
            }
            let stored = s.conn.execute(
                "SELECT name, fingerprint, removed_at IS NOT NULL FROM registry_agents",
                &[],
            )?;
            let mut known = std::collections::HashMap::new();
            for r in &stored.rows {
                if let (Some(name), Some(fp), Some(removed)) =
                    (r.get::<&str>(0), r.get::<&str>(1), r.get::<bool>(2))
                {
                    known.insert(name.to_owned(), (fp.to_owned(), removed));
                }
            }
            for (name, fingerprint) in agents {
                let bump = match known.remove(*name) {
                    None => {
                        s.conn.execute(
                            "INSERT INTO registry_agents (name, fingerprint, generation, removed_at) VALUES (?, ?, 1, NULL)",
                            &[text(name), text(fingerprint)],
                        )?;
                        false
                    }
                    Some((fp, removed)) => removed || &fp != fingerprint,
                };
                if bump {
                    s.conn.execute(
                        "UPDATE registry_agents SET fingerprint = ?, generation = generation + 1, removed_at = NULL WHERE name = ?",
                        &[text(fingerprint), text(name)],
                    )?;
                    s.conn
                        .execute("DELETE FROM tokens WHERE agent = ?", &[text(name)])?;
                }
            }
            for (name, (_, removed)) in known {
                if !removed {
                    s.conn.execute(
                        "UPDATE registry_agents SET removed_at = ? WHERE name = ?",
                        &[int(now), text(&name)],
                    )?;
                    s.conn
                        .execute("DELETE FROM tokens WHERE agent = ?", &[text(&name)])?;
                }
            }
            Ok(())
        })
    }

    /// Re-issue an agent: its generation goes up by one (every token of
    /// earlier generations is refused, and a revocation of them no longer
    /// applies to new exchanges). Returns the new one.
    pub fn reissue(&self, agent: &str) -> Result<u64, StoreError> {
        self.transaction(|s| {
            let q = s.conn.execute(
                "UPDATE registry_agents SET generation = generation + 1 WHERE name = ? AND removed_at IS NULL RETURNING generation",
                &[text(agent)],
            )?;
            s.conn.execute("DELETE FROM tokens WHERE agent = ?", &[text(agent)])?;
            first_int(&q)
                .and_then(|g| u64::try_from(g).ok())
                .ok_or_else(|| StoreError::from_text("no such agent in the registry"))
        })
    }

    /// Instance ids with a token still valid for this agent on this device.
    pub fn live_instance_ids(
        &self,
        agent: &str,
        device: &str,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        let q = self.conn.execute(
            "SELECT DISTINCT instance_id FROM tokens WHERE agent = ? AND device = ? AND expires_at > ?",
            &[text(agent), text(device), int(now)],
        )?;
        Ok(q.rows
            .iter()
            .filter_map(|r| r.get::<&str>(0).map(str::to_owned))
            .collect())
    }

    /// Record a minted token (for the live-instance cap).
    pub fn record_token(
        &self,
        jti: &str,
        instance_id: &str,
        agent: &str,
        device: &str,
        issued_at: u64,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM tokens WHERE expires_at <= ?",
            &[int(issued_at)],
        )?;
        self.conn.execute(
            "INSERT INTO tokens (jti, instance_id, agent, device, issued_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
            &[
                text(jti),
                text(instance_id),
                text(agent),
                text(device),
                int(issued_at),
                int(expires_at),
            ],
        )?;
        Ok(())
    }

    /// Run `f` inside an immediate transaction (other instances wait for
    /// the write lock), committing on success and rolling back otherwise.
    pub fn transaction<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.conn.execute("BEGIN IMMEDIATE", &[])?;
        // A failed body or a failed COMMIT (busy) rolls back: the
        // connection never stays inside a transaction holding the lock.
        let result = f(self).and_then(|v| {
            self.conn.execute("COMMIT", &[])?;
            Ok(v)
        });
        if result.is_err() {
            let _ = self.conn.execute("ROLLBACK", &[]);
        }
        result
    }

    /// Append one audit record, chained to the previous one by SHA-256.
    /// `at` is added here; every text field was scrubbed by the caller.
    pub fn audit(&self, entry: &AuditEntry, at: u64) -> Result<(), StoreError> {
        let mut record = serde_json::Map::new();
        record.insert("at".into(), at.into());
        record.insert("kind".into(), entry.kind.into());
        record.insert("decision".into(), entry.decision.into());
        for (name, value) in &entry.fields {
            record.insert((*name).into(), value.as_str().into());
        }
        let record = serde_json::Value::Object(record).to_string();
        self.transaction(|s| {
            let last = s
                .conn
                .execute("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1", &[])?;
            let prev = last
                .rows
                .first()
                .and_then(|r| r.get::<&str>(0))
                .unwrap_or("")
                .to_owned();
            let hash = chain_hash(&prev, &record);
            s.conn.execute(
                "INSERT INTO audit (record, prev, hash) VALUES (?, ?, ?)",
                &[text(&record), text(&prev), text(&hash)],
            )?;
            Ok(())
        })
    }
}

/// `hex(SHA-256("edgeward-spin-audit-v1\0" || prev || "\0" || record))`:
/// changing, dropping or reordering a record breaks every later hash.
pub fn chain_hash(prev: &str, record: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"edgeward-spin-audit-v1\0");
    h.update(prev.as_bytes());
    h.update([0]);
    h.update(record.as_bytes());
    hex::encode(h.finalize())
}
