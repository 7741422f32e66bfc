//! The durable store: registry, revocation state and audit log.
//!
//! Callers use the narrow [`Store`] trait; [`SqliteStore`] (embedded SQLite,
//! WAL, a write durable before it returns, with group commit) is the one
//! engine today. Another engine
//! implements the same trait without touching callers.
//!
//! 1. Devices, one-time enrolment codes, grants and agents: the registry.
//!    An agent has an immutable random id, a unique name and a generation
//!    that only grows: changing its grants, digests or devices bumps it, and
//!    deprovisioning leaves a [`Tombstone`] so a re-registered name starts
//!    above every generation the name had.
//! 2. Instances and the tokens issued to them, for limits and inventory.
//! 3. Revocations, which survive restarts: the token service loads them all
//!    at start and checks every call against them in memory.
//! 4. Admin principals (people, each with a hashed credential and roles) and
//!    token signing keys.
//! 5. The hash-chained audit log and its signed checkpoints ([`audit`]).
//!
//! Time is always passed in (unix seconds) and randomness (agent ids,
//! credentials, seeds) is made by the caller: the store reads neither a clock
//! nor a random source, so its behaviour is reproducible in tests.
//!
//! Every operation is synchronous and may wait on disk (a commit waits for
//! an `fsync`, shared with the commits queued beside it): async callers run
//! writes on a blocking thread when [`Store::writes_wait_for_disk`] and
//! others are in flight.
//!
//! Non-goals: HTTP, the CLI, policy decisions (what a revocation refuses is
//! the token service's rule; the store only keeps it).
//!
//! ```no_run
//! use edgeward_backend::store::{AuditEntry, SqliteStore, Store};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::open(std::path::Path::new("/var/lib/edgeward/edgeward.db"))?;
//! let record = store.append_audit(&AuditEntry {
//!     at: 1_700_000_000,
//!     kind: "admin".into(),
//!     decision: "allow".into(),
//!     admin: Some("alice@example.com".into()),
//!     reason: Some("device enroll dev-1".into()),
//!     ..AuditEntry::default()
//! })?;
//! assert_eq!(store.audit_head()?, Some((record.seq, record.hash)));
//! # Ok(())
//! # }
//! ```

pub mod audit;
mod durable;
mod sqlite;
#[cfg(test)]
mod tests;

pub use audit::{
    AuditEntry, AuditError, AuditRecord, ChainVerifier, Checkpoint, PolicyEvent, VerifiedHead,
    verify_chain,
};
pub use sqlite::{SCHEMA_VERSION, SqliteStore};

use edgeward_core::config::{AgentConfig, DeviceConfig, GrantConfig, Limits};
use edgeward_core::digest::ComponentDigest;
use edgeward_core::grant::GrantName;
use edgeward_core::keys::PublicKey;
use std::fmt;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A record with this key exists already.
    #[error("{what} {key} already exists")]
    AlreadyExists {
        /// What kind of record.
        what: &'static str,
        /// Its key (a name or id; never a secret or a hash).
        key: String,
    },
    /// No such record.
    #[error("no {what} {key}")]
    NotFound {
        /// What kind of record.
        what: &'static str,
        /// The key looked for.
        key: String,
    },
    /// A value given by the caller is not acceptable; nothing was changed.
    #[error("{field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A token was minted for a generation the agent no longer has (it was
    /// updated or re-registered meanwhile): it must not be handed out.
    #[error("agent {agent} is at generation {current}, not {token}")]
    StaleGeneration {
        /// Agent name.
        agent: String,
        /// The token's generation.
        token: u64,
        /// The agent's.
        current: u64,
    },
    /// The database file (or its journal) can be read or written by users
    /// other than its owner. It may hold signing keys.
    #[error(
        "{} has mode {mode:o}: it may hold signing keys, so only its owner may read it (chmod 600)",
        path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The database was written by a newer edgeward.
    #[error(
        "the database has schema version {found}, newer than the {known} this edgeward knows: upgrade edgeward, do not open it with this one"
    )]
    SchemaTooNew {
        /// Its version.
        found: i64,
        /// The newest this code knows.
        known: i64,
    },
    /// Something read back from the database does not parse: the file was
    /// changed behind the store's back.
    #[error("stored {what} is corrupt: {reason}")]
    Corrupt {
        /// Which kind of record.
        what: &'static str,
        /// What does not parse.
        reason: String,
    },
    /// Another process holds the database lock for longer than the busy
    /// timeout.
    #[error("the database is busy (locked by another process)")]
    Busy,
    /// Creating or inspecting the database file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Any other failure of the storage engine.
    #[error("storage engine: {0}")]
    Engine(Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    fn invalid(field: &'static str, reason: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    fn corrupt(what: &'static str, reason: impl fmt::Display) -> StoreError {
        StoreError::Corrupt {
            what,
            reason: reason.to_string(),
        }
    }
}

/// An enrolled device. Revoking it keeps the record, with `revoked_at` set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Device id (a name: `[a-z0-9_-]`).
    pub id: String,
    /// The human or team that answers for it.
    pub owner: String,
    /// Its public key.
    pub public_key: PublicKey,
    /// When it was enrolled.
    pub enrolled_at: u64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<u64>,
}

impl DeviceRecord {
    /// As the token service's device entry.
    pub fn to_device_config(&self) -> DeviceConfig {
        DeviceConfig {
            id: self.id.clone(),
            owner: self.owner.clone(),
            public_key: self.public_key,
        }
    }
}

/// A one-time enrolment code, known to the store only by its SHA-256 (codes
/// are random and high-entropy, so a plain hash is enough).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteRecord {
    /// SHA-256 of the code.
    pub code_hash: [u8; 32],
    /// Owner of the device it will enrol.
    pub owner: String,
    /// The admin who made it.
    pub created_by: String,
    /// When it was made.
    pub created_at: u64,
    /// It cannot be redeemed at or after this time.
    pub expires_at: u64,
}

/// The result of redeeming an enrolment code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redeemed {
    /// The code, now used up.
    pub invite: InviteRecord,
    /// The device it enrolled.
    pub device: DeviceRecord,
}

/// A new agent, as the caller registers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAgent {
    /// Immutable id, made by the caller from a random source (e.g. 16 random
    /// bytes in lower-case hex): 16 to 64 characters of `[0-9a-f]`.
    pub id: String,
    /// Unique name among live agents.
    pub name: String,
    /// The human who answers for it.
    pub owner: String,
    /// What it is for.
    pub description: String,
    /// Component digests allowed to run as it (at least one).
    pub digests: Vec<ComponentDigest>,
    /// Enrolled devices allowed to run it.
    pub devices: Vec<String>,
    /// Grants it may use (each must exist).
    pub grants: Vec<GrantName>,
    /// Sandbox and egress limits.
    pub limits: Limits,
    /// Longest token lifetime, seconds.
    pub max_token_lifetime: u64,
    /// Most live instances per device.
    pub max_instances_per_device: u32,
}

impl NewAgent {
    /// From a config file's agent entry (for `edgeward import`).
    pub fn from_config(config: &AgentConfig, id: String, description: String) -> NewAgent {
        NewAgent {
            id,
            name: config.name.clone(),
            owner: config.owner.clone(),
            description,
            digests: config.digests.clone(),
            devices: config.devices.clone(),
            grants: config.grants.clone(),
            limits: config.limits,
            max_token_lifetime: config.max_token_lifetime,
            max_instances_per_device: config.max_instances_per_device,
        }
    }
}

/// Changes to an agent; `None` leaves a field as it is. Changing the
/// digests, devices or grants (as sets: order does not count) bumps the
/// generation, so every older token is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentUpdate {
    /// New owner.
    pub owner: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New allowed digests.
    pub digests: Option<Vec<ComponentDigest>>,
    /// New allowed devices.
    pub devices: Option<Vec<String>>,
    /// New grants.
    pub grants: Option<Vec<GrantName>>,
    /// New limits.
    pub limits: Option<Limits>,
    /// New maximum token lifetime.
    pub max_token_lifetime: Option<u64>,
    /// New maximum of live instances per device.
    pub max_instances_per_device: Option<u32>,
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// Immutable random id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The human who answers for it.
    pub owner: String,
    /// What it is for.
    pub description: String,
    /// Allowed component digests.
    pub digests: Vec<ComponentDigest>,
    /// Allowed devices.
    pub devices: Vec<String>,
    /// Grants.
    pub grants: Vec<GrantName>,
    /// Sandbox and egress limits.
    pub limits: Limits,
    /// Longest token lifetime, seconds.
    pub max_token_lifetime: u64,
    /// Most live instances per device.
    pub max_instances_per_device: u32,
    /// When it was registered.
    pub created_at: u64,
    /// When it was last changed.
    pub updated_at: u64,
    /// When its privileges were last reviewed.
    pub last_reviewed_at: Option<u64>,
    /// Who reviewed them.
    pub last_reviewed_by: Option<String>,
    /// Only grows; never reused for this name.
    pub generation: u64,
}

impl AgentRecord {
    /// As the token service's agent entry.
    pub fn to_agent_config(&self) -> AgentConfig {
        AgentConfig {
            name: self.name.clone(),
            owner: self.owner.clone(),
            digests: self.digests.clone(),
            grants: self.grants.clone(),
            limits: self.limits,
            devices: self.devices.clone(),
            max_instances_per_device: self.max_instances_per_device,
            max_token_lifetime: self.max_token_lifetime,
            generation: self.generation,
        }
    }
}

/// What is left of a deprovisioned agent name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// The name.
    pub name: String,
    /// The id of the agent last deprovisioned under it.
    pub agent_id: String,
    /// The highest generation the name has had: a re-registration starts
    /// above it.
    pub last_generation: u64,
    /// When.
    pub deprovisioned_at: u64,
}

/// A token as minted, recorded for limits and inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// Token id.
    pub jti: String,
    /// The instance it was issued to.
    pub instance_id: String,
    /// Agent name.
    pub agent: String,
    /// Device id.
    pub device: String,
    /// The agent generation in the token.
    pub generation: u64,
    /// `iat`.
    pub issued_at: u64,
    /// `exp`.
    pub expires_at: u64,
}

/// An instance with at least one unexpired token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    /// Instance id.
    pub instance_id: String,
    /// Agent name.
    pub agent: String,
    /// Device id.
    pub device: String,
    /// When its first token was recorded.
    pub first_seen: u64,
    /// When its last token was recorded.
    pub last_seen: u64,
    /// When its last token expires.
    pub expires_at: u64,
}

/// What [`Store::prune_expired`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Expired token records.
    pub tokens: u64,
    /// Instances left without tokens.
    pub instances: u64,
    /// Enrolment codes that expired unused.
    pub invites: u64,
}

/// What a revocation covers. What exactly it refuses is the token service's
/// rule; the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationKind {
    /// One token.
    Token {
        /// Its `jti`.
        jti: String,
    },
    /// One instance.
    Instance {
        /// Instance id.
        id: String,
    },
    /// An agent; with `before_generation`, only its older generations.
    Agent {
        /// Agent name.
        name: String,
        /// Refuse generations below this; `None`: all.
        before_generation: Option<u64>,
    },
    /// A device.
    Device {
        /// Device id.
        id: String,
    },
    /// Everything (the kill switch).
    All,
}

/// A stored revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Assigned by the store, increasing, never reused.
    pub seq: u64,
    /// What it covers.
    pub kind: RevocationKind,
    /// When, unix seconds.
    pub at: u64,
    /// Who: an admin principal, or `rfc7009` for a token holder's own
    /// revocation.
    pub by: String,
    /// Why, in the revoker's words.
    pub reason: String,
}

/// What an admin principal may do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "role", rename_all = "snake_case", deny_unknown_fields)]
pub enum Role {
    /// Everything.
    Admin,
    /// Decide approvals for these agents.
    Approver {
        /// Agent names.
        agents: Vec<String>,
    },
    /// Read only.
    Auditor,
}

/// Where an approval ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalStatus {
    /// Waiting for a person.
    Pending,
    /// Approved: the same call goes through once, until it expires.
    Approved,
    /// Denied.
    Denied,
    /// Approved and used by its one call.
    Used,
    /// Pending or approved past its expiry (derived, never stored).
    Expired,
}

impl ApprovalStatus {
    /// The stored / shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Used => "used",
            ApprovalStatus::Expired => "expired",
        }
    }

    /// From its name (as stored, and as the admin API takes it).
    pub fn from_name(name: &str) -> Option<ApprovalStatus> {
        Some(match name {
            "pending" => ApprovalStatus::Pending,
            "approved" => ApprovalStatus::Approved,
            "denied" => ApprovalStatus::Denied,
            "used" => ApprovalStatus::Used,
            "expired" => ApprovalStatus::Expired,
            _ => return None,
        })
    }
}

/// One approval ticket, as the backend rendered it. Everything here is
/// safe to show an approver: URL, headers and body preview were redacted
/// before they were stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRecord {
    /// Random id, given to the guest and the approver.
    pub id: String,
    /// The agent whose call it is (the acting sub-agent for a delegated
    /// call).
    pub agent: String,
    /// The instance that made the call.
    pub instance: String,
    /// The user it was made for, if any.
    pub user: Option<String>,
    /// The delegation root (the agent at the top of the chain).
    pub root: String,
    /// The grant.
    pub grant: String,
    /// The method.
    pub method: String,
    /// The URL as forwarded (before any credential was attached).
    pub url: String,
    /// The headers that would be forwarded, `(name, value)`.
    pub headers: Vec<(String, String)>,
    /// sha256 of the body, hex.
    pub body_sha256: String,
    /// The start of the body, redacted.
    pub body_preview: String,
    /// The rule that asked for approval.
    pub rule: String,
    /// sha256 over the exact action, hex: what an approval is bound to.
    pub fingerprint: String,
    /// Where it stands (expiry applied at read time).
    pub status: ApprovalStatus,
    /// When it was opened.
    pub created_at: u64,
    /// Pending: until when it may be decided; approved: until when it may be
    /// used.
    pub expires_at: u64,
    /// Who decided.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<u64>,
    /// When its call used it.
    pub used_at: Option<u64>,
}

/// Per agent, how policy and approvals went (for `approvals stats`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApprovalStats {
    /// The agent.
    pub agent: String,
    /// Egress calls forwarded without a ticket.
    pub allowed: u64,
    /// Tickets opened (calls sent for approval).
    pub sent_for_approval: u64,
    /// Tickets approved (used or not).
    pub approved: u64,
    /// Tickets denied.
    pub denied: u64,
    /// Tickets that expired undecided.
    pub expired: u64,
    /// Mean seconds from opening to decision, over decided tickets.
    pub mean_latency_s: Option<u64>,
    /// Longest such time.
    pub max_latency_s: Option<u64>,
}

/// An admin principal: a person with their own credential.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminRecord {
    /// The person (e.g. an e-mail address).
    pub name: String,
    /// What they may do.
    pub roles: Vec<Role>,
    /// SHA-256 of their credential, a random high-entropy token.
    pub credential_hash: [u8; 32],
    /// When the principal was added.
    pub created_at: u64,
}

impl fmt::Debug for AdminRecord {
    // The hash is not the credential, but it is the lookup key: keep it out
    // of logs all the same.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminRecord")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A token signing key. The seed is wiped on drop and never printed.
#[derive(Clone)]
pub struct SigningKeyRecord {
    /// Key id, as in the JWKS.
    pub kid: String,
    /// The private seed, as the caller stored it.
    pub seed: Zeroizing<Vec<u8>>,
    /// When it was made.
    pub created_at: u64,
    /// When it stopped signing (it stays in the JWKS until its tokens
    /// expire).
    pub retired_at: Option<u64>,
}

impl fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field(
                "seed",
                &format_args!("<{} bytes redacted>", self.seed.len()),
            )
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish()
    }
}

/// The store's operations. Each one is atomic: it happens completely or not
/// at all, and once it returns `Ok` it survives a crash.
pub trait Store: Send + Sync {
    /// Whether a write waits for the disk (an fsync). Async callers then run
    /// writes on a blocking thread, so a worker is not held for the fsync
    /// and concurrent writes can share one (group commit).
    fn writes_wait_for_disk(&self) -> bool {
        false
    }

    // --- devices ---

    /// Enrol a device. `AlreadyExists` if the id is taken (revoked devices
    /// keep their id).
    fn enroll_device(&self, device: &DeviceRecord) -> Result<(), StoreError>;
    /// One device, revoked or not.
    fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError>;
    /// Every device, by id.
    fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError>;
    /// Mark a device revoked. `Ok(false)`: it was already (the first time
    /// is kept). `NotFound` if there is no such device.
    fn revoke_device(&self, id: &str, at: u64) -> Result<bool, StoreError>;

    // --- enrolment codes ---

    /// Store a new enrolment code (by hash).
    fn create_invite(&self, invite: &InviteRecord) -> Result<(), StoreError>;
    /// Use up an enrolment code and enrol the device it admits, with the
    /// code's owner, in one transaction. `Ok(None)`: no such code, used
    /// already, or expired. If the device cannot be enrolled (its id is
    /// taken), nothing changes and the code stays usable.
    fn redeem_invite(
        &self,
        code_hash: &[u8; 32],
        device_id: &str,
        public_key: PublicKey,
        at: u64,
    ) -> Result<Option<Redeemed>, StoreError>;

    // --- grants ---

    /// Add or replace a grant. Only its secret's source is stored.
    fn put_grant(&self, grant: &GrantConfig, at: u64) -> Result<(), StoreError>;
    /// One grant.
    fn grant(&self, name: &GrantName) -> Result<Option<GrantConfig>, StoreError>;
    /// Every grant, by name.
    fn grants(&self) -> Result<Vec<GrantConfig>, StoreError>;

    // --- agents ---

    /// Register an agent at generation 1, or one above the name's
    /// tombstone. `AlreadyExists` if a live agent has the name or the id.
    fn register_agent(&self, agent: &NewAgent, at: u64) -> Result<AgentRecord, StoreError>;
    /// One live agent.
    fn agent(&self, name: &str) -> Result<Option<AgentRecord>, StoreError>;
    /// Every live agent, by name.
    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError>;
    /// Change an agent (see [`AgentUpdate`] for when the generation grows).
    fn update_agent(
        &self,
        name: &str,
        update: &AgentUpdate,
        at: u64,
    ) -> Result<AgentRecord, StoreError>;
    /// Record a privilege review.
    fn review_agent(&self, name: &str, at: u64, reviewer: &str) -> Result<AgentRecord, StoreError>;
    /// Remove an agent and everything tied to it (instances, tokens, and
    /// later pending items) and leave a tombstone. Audit records stay.
    fn deprovision_agent(&self, name: &str, at: u64) -> Result<Tombstone, StoreError>;
    /// The tombstone of a name, if it was ever deprovisioned (a live agent
    /// may have the name again).
    fn tombstone(&self, name: &str) -> Result<Option<Tombstone>, StoreError>;

    // --- instances and tokens ---

    /// Record a minted token and note its instance. `NotFound` if the agent
    /// is gone, `StaleGeneration` if it changed since the token was made:
    /// either way the token must not be handed out.
    fn record_token(&self, token: &IssuedToken) -> Result<(), StoreError>;
    /// Ids of one agent's instances on one device with an unexpired token
    /// at `now` (the exchange's per-device limit; indexed, so its cost does
    /// not grow with the fleet).
    fn live_instance_ids(
        &self,
        agent: &str,
        device: &str,
        now: u64,
    ) -> Result<Vec<String>, StoreError>;
    /// Instances with an unexpired token at `now`, of one agent or all.
    fn live_instances(
        &self,
        agent: Option<&str>,
        now: u64,
    ) -> Result<Vec<InstanceRecord>, StoreError>;
    /// Tokens unexpired at `now` and not revoked, of one agent or all.
    fn outstanding_tokens(&self, agent: Option<&str>, now: u64) -> Result<u64, StoreError>;
    /// Forget expired tokens, instances left without tokens and enrolment
    /// codes that expired unused.
    fn prune_expired(&self, now: u64) -> Result<Pruned, StoreError>;

    // --- revocations ---

    /// Record a revocation. In the same transaction, the token records it
    /// covers are removed (they are no longer outstanding) and a revoked
    /// device is marked revoked.
    fn add_revocation(
        &self,
        kind: &RevocationKind,
        at: u64,
        by: &str,
        reason: &str,
    ) -> Result<Revocation, StoreError>;
    /// Every revocation, oldest first.
    fn revocations(&self) -> Result<Vec<Revocation>, StoreError>;

    // --- admin principals ---

    /// Add a principal. `AlreadyExists` if the name or credential is taken.
    fn add_admin(&self, admin: &AdminRecord) -> Result<(), StoreError>;
    /// The principal whose credential hashes to this (compared in constant
    /// time).
    fn admin_by_credential_hash(&self, hash: &[u8; 32]) -> Result<Option<AdminRecord>, StoreError>;
    /// Every principal, by name.
    fn admins(&self) -> Result<Vec<AdminRecord>, StoreError>;

    // --- signing keys ---

    /// Store a new signing key's seed.
    fn add_signing_key(&self, kid: &str, seed: &[u8], created_at: u64) -> Result<(), StoreError>;
    /// Every signing key, oldest first.
    fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError>;
    /// Stop signing with a key. `Ok(false)`: it was retired already.
    fn retire_signing_key(&self, kid: &str, at: u64) -> Result<bool, StoreError>;

    // --- policy ---

    /// Store (replace) the policy of an agent, or the global defaults
    /// (`agent` = `*`). Takes effect on the next call.
    fn put_policy(
        &self,
        policy: &edgeward_core::policy::Policy,
        at: u64,
        by: &str,
    ) -> Result<(), StoreError>;
    /// Remove a policy. `Ok(false)`: there was none.
    fn remove_policy(&self, agent: &str) -> Result<bool, StoreError>;
    /// The policy of an agent (or `*`), cached until the next write.
    fn policy(
        &self,
        agent: &str,
    ) -> Result<Option<std::sync::Arc<edgeward_core::policy::Policy>>, StoreError>;
    /// Every policy, by agent.
    fn policies(&self) -> Result<Vec<edgeward_core::policy::Policy>, StoreError>;
    /// What decides an agent's calls: its own policy, then the global one
    /// (either may be missing). One read on the hot path.
    fn policies_for(
        &self,
        agent: &str,
    ) -> Result<Vec<std::sync::Arc<edgeward_core::policy::Policy>>, StoreError>;

    // --- approvals ---

    /// Open a ticket (status pending), unless one is already pending for
    /// the same action (unexpired at `now`): the stored ticket, and whether
    /// it is the new one.
    fn open_approval(
        &self,
        ticket: &ApprovalRecord,
        now: u64,
    ) -> Result<(ApprovalRecord, bool), StoreError>;
    /// A ticket by id.
    fn approval(&self, id: &str, now: u64) -> Result<Option<ApprovalRecord>, StoreError>;
    /// Tickets, newest first, optionally of one status and of some agents
    /// only.
    fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        agents: Option<&[String]>,
        limit: u32,
        now: u64,
    ) -> Result<Vec<ApprovalRecord>, StoreError>;
    /// The newest ticket for this exact action that still stands at `now`:
    /// pending, approved and unused, or denied (a denial stands as long as
    /// an approval would).
    fn live_approval(
        &self,
        fingerprint: &str,
        now: u64,
    ) -> Result<Option<ApprovalRecord>, StoreError>;
    /// Decide a pending, unexpired ticket. An approval is usable (a denial
    /// stands) until `use_until`. `NotFound` if there is no such ticket; `Invalid` if it
    /// is not pending any more.
    fn decide_approval(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        at: u64,
        use_until: u64,
    ) -> Result<ApprovalRecord, StoreError>;
    /// Mark an approved ticket used, atomically: `Ok(true)` for exactly one
    /// caller, and only while it is approved, unused and unexpired.
    fn use_approval(&self, id: &str, at: u64) -> Result<bool, StoreError>;
    /// Tickets opened for an agent at or after `since`.
    fn approvals_opened_since(&self, agent: &str, since: u64) -> Result<u64, StoreError>;
    /// Per agent: calls allowed, tickets and their outcomes.
    fn approval_stats(&self, now: u64) -> Result<Vec<ApprovalStats>, StoreError>;
    /// Policy events (with their times) at or after `since`, oldest first.
    fn policy_events_since(&self, since: u64) -> Result<Vec<(u64, PolicyEvent)>, StoreError>;
    /// Forget policy events before `before`; how many went.
    fn prune_policy_events(&self, before: u64) -> Result<u64, StoreError>;

    // --- audit ---

    /// Append a record, chained to the one before.
    fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError>;
    /// Up to `limit` records from `from_seq` on, in order.
    fn audit_range(&self, from_seq: u64, limit: u32) -> Result<Vec<AuditRecord>, StoreError>;
    /// The last record's seq and hash (`None`: empty log).
    fn audit_head(&self) -> Result<Option<(u64, [u8; 32])>, StoreError>;
    /// Store a signed checkpoint. `Invalid` if it does not match the log.
    fn add_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError>;
    /// Every checkpoint, by seq.
    fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError>;
}

/// Why [`verify_store`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The log could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The log is not intact.
    #[error(transparent)]
    Chain(#[from] AuditError),
}

/// Records read per page by [`verify_store`].
const VERIFY_PAGE: u32 = 1000;

/// Verify a store's whole audit log against its checkpoints and, if given,
/// a head exported earlier, a page at a time.
pub fn verify_store(
    store: &dyn Store,
    verify_sig: impl Fn(&Checkpoint) -> bool,
    expected_head: Option<(u64, [u8; 32])>,
) -> Result<VerifiedHead, VerifyError> {
    let checkpoints = store.checkpoints()?;
    let mut verifier = ChainVerifier::new(&checkpoints, verify_sig, expected_head);
    let mut from = 1;
    loop {
        let page = store.audit_range(from, VERIFY_PAGE)?;
        let Some(last) = page.last() else { break };
        // Records come in seq order, each at or after `from`, so `from`
        // strictly grows and the loop ends.
        from = last.seq.saturating_add(1);
        for record in &page {
            verifier.push(record)?;
        }
        if last.seq == u64::MAX {
            break;
        }
    }
    Ok(verifier.finish()?)
}

/// Whether two 32-byte hashes are equal, in time independent of where they
/// differ.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}
