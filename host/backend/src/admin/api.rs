//! What the admin API answers, as JSON. The CLI parses the same types, so a
//! field renamed here is renamed for both. Clients must ignore fields they do
//! not know: answers may grow.

use crate::store::{
    AdminRecord, AgentRecord, AuditRecord, DeviceRecord, Revocation, RevocationKind, Role,
};
use serde::{Deserialize, Serialize};

/// An error answer. `field` names the request field at fault, when one is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A class: `unauthorized`, `forbidden`, `invalid_request`, `not_found`,
    /// `conflict`, `server_error`.
    pub error: String,
    /// What was wrong, for a person.
    pub message: String,
    /// The request field at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An admin principal, without its credential hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalView {
    /// The person.
    pub name: String,
    /// What they may do.
    pub roles: Vec<Role>,
    /// When the principal was added (absent for `whoami`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
}

impl PrincipalView {
    pub(crate) fn of(a: &AdminRecord) -> PrincipalView {
        PrincipalView {
            name: a.name.clone(),
            roles: a.roles.clone(),
            created_at: Some(a.created_at),
        }
    }
}

/// A new principal and its credential, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewPrincipal {
    /// The principal.
    pub principal: PrincipalView,
    /// The credential: give it to the person; only its hash is kept.
    pub credential: String,
}

/// An enrolled device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceView {
    /// Device id.
    pub id: String,
    /// Who answers for it.
    pub owner: String,
    /// Its public key, text form.
    pub public_key: String,
    /// When it was enrolled.
    pub enrolled_at: u64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<u64>,
}

impl DeviceView {
    pub(crate) fn of(d: &DeviceRecord) -> DeviceView {
        DeviceView {
            id: d.id.clone(),
            owner: d.owner.clone(),
            public_key: d.public_key.to_string(),
            enrolled_at: d.enrolled_at,
            revoked_at: d.revoked_at,
        }
    }
}

/// A one-time enrolment code, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InviteView {
    /// The code: only its SHA-256 is kept.
    pub code: String,
    /// Owner of the device it will enrol.
    pub owner: String,
    /// It cannot be redeemed at or after this time.
    pub expires_at: u64,
    /// How it is redeemed.
    pub note: String,
}

/// Sandbox limits of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsView {
    /// Linear memory per task, bytes.
    pub memory_bytes: u64,
    /// Wall-clock time per task, milliseconds.
    pub task_timeout_ms: u64,
    /// Largest request body.
    pub max_request_bytes: u64,
    /// Largest response body.
    pub max_response_bytes: u64,
    /// Largest stdout or stderr.
    pub max_output_bytes: u64,
    /// Most log records per task.
    pub max_log_records: u64,
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentView {
    /// Immutable random id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Who answers for it.
    pub owner: String,
    /// What it is for.
    pub description: String,
    /// Allowed component digests.
    pub digests: Vec<String>,
    /// Allowed devices.
    pub devices: Vec<String>,
    /// Grants.
    pub grants: Vec<String>,
    /// Longest token lifetime, seconds.
    pub max_token_lifetime_s: u64,
    /// Most live instances per device.
    pub max_instances_per_device: u32,
    /// Sandbox limits.
    pub limits: LimitsView,
    /// When it was registered.
    pub created_at: u64,
    /// When it was last changed.
    pub updated_at: u64,
    /// When its privileges were last reviewed.
    pub last_reviewed_at: Option<u64>,
    /// Who reviewed them.
    pub last_reviewed_by: Option<String>,
    /// Generation: grows when grants, digests or devices change.
    pub generation: u64,
}

impl AgentView {
    pub(crate) fn of(a: &AgentRecord) -> AgentView {
        // usize is at most 64 bits on every target Rust supports: lossless.
        let l = &a.limits;
        AgentView {
            id: a.id.clone(),
            name: a.name.clone(),
            owner: a.owner.clone(),
            description: a.description.clone(),
            digests: a.digests.iter().map(ToString::to_string).collect(),
            devices: a.devices.clone(),
            grants: a.grants.iter().map(ToString::to_string).collect(),
            max_token_lifetime_s: a.max_token_lifetime,
            max_instances_per_device: a.max_instances_per_device,
            limits: LimitsView {
                memory_bytes: l.memory_bytes,
                task_timeout_ms: u64::try_from(l.task_timeout.as_millis()).unwrap_or(u64::MAX),
                max_request_bytes: l.max_request_bytes as u64,
                max_response_bytes: l.max_response_bytes as u64,
                max_output_bytes: l.max_output_bytes as u64,
                max_log_records: l.max_log_records as u64,
            },
            created_at: a.created_at,
            updated_at: a.updated_at,
            last_reviewed_at: a.last_reviewed_at,
            last_reviewed_by: a.last_reviewed_by.clone(),
            generation: a.generation,
        }
    }
}

/// The answer to a register or update.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentChange {
    /// The agent as it is now.
    pub agent: AgentView,
    /// The generation before (absent for a registration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_generation: Option<u64>,
    /// Things the admin should know (e.g. a revocation that still covers
    /// the name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// What is left of a deprovisioned agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TombstoneView {
    /// The name.
    pub name: String,
    /// The id of the agent deprovisioned under it.
    pub agent_id: String,
    /// The highest generation the name has had.
    pub last_generation: u64,
    /// When.
    pub deprovisioned_at: u64,
}

/// A stored revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationView {
    /// Sequence number.
    pub seq: u64,
    /// `token`, `instance`, `agent`, `device` or `all`.
    pub kind: String,
    /// What it covers (absent for `all`).
    pub target: Option<String>,
    /// For an agent: only generations below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_generation: Option<u64>,
    /// When.
    pub at: u64,
    /// Who.
    pub by: String,
    /// Why.
    pub reason: String,
}

impl RevocationView {
    pub(crate) fn of(r: &Revocation) -> RevocationView {
        let (kind, target, before_generation) = match &r.kind {
            RevocationKind::Token { jti } => ("token", Some(jti.clone()), None),
            RevocationKind::Instance { id } => ("instance", Some(id.clone()), None),
            RevocationKind::Agent {
                name,
                before_generation,
            } => ("agent", Some(name.clone()), *before_generation),
            RevocationKind::Device { id } => ("device", Some(id.clone()), None),
            RevocationKind::All => ("all", None, None),
        };
        RevocationView {
            seq: r.seq,
            kind: kind.to_owned(),
            target,
            before_generation,
            at: r.at,
            by: r.by.clone(),
            reason: r.reason.clone(),
        }
    }
}

/// One agent's line of the inventory: the four questions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InventoryAgent {
    /// Agent name.
    pub name: String,
    /// Agent id.
    pub id: String,
    /// Who answers for it.
    pub owner: String,
    /// Current generation.
    pub generation: u64,
    /// 1. Which credentials it uses.
    pub credentials: Vec<CredentialView>,
    /// 2. Which systems it can reach.
    pub systems: Vec<SystemView>,
    /// 3. When its privileges were last reviewed.
    pub review: ReviewView,
    /// 4. How its access is revoked.
    pub revocation: RevocabilityView,
}

/// A grant an agent holds, and where its secret lives (never the secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialView {
    /// Grant name.
    pub grant: String,
    /// How it is attached: `header <name>`, `query <param>`, `basic`.
    pub attached_as: Option<String>,
    /// Where the backend reads the secret.
    pub secret_source: Option<String>,
    /// False if the agent names a grant the registry no longer has.
    pub defined: bool,
}

/// An upstream an agent can reach, through which grant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SystemView {
    /// `scheme://host:port`.
    pub origin: String,
    /// Through this grant.
    pub grant: String,
    /// With these methods.
    pub methods: Vec<String>,
    /// Under these path prefixes.
    pub path_prefixes: Vec<String>,
}

/// When an agent's privileges were last reviewed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReviewView {
    /// When.
    pub last_reviewed_at: Option<u64>,
    /// By whom.
    pub last_reviewed_by: Option<String>,
    /// Whole days since (absent if never).
    pub age_days: Option<u64>,
    /// Never reviewed, or longer ago than the inventory's maximum age.
    pub overdue: bool,
}

/// How an agent's access is revoked, and what revoking it would stop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevocabilityView {
    /// Instances with an unexpired token.
    pub live_instances: Vec<InstanceView>,
    /// Unexpired, unrevoked tokens.
    pub outstanding_tokens: u64,
    /// The last revocation that covered it (of the agent, one of its
    /// devices, or everything).
    pub last_revocation: Option<RevocationView>,
    /// Seconds from the last revocation to the stop order leaving the
    /// backend for one of its instances, as measured since this backend
    /// started (`null` when no stop order was sent since).
    pub last_stop_seconds: Option<f64>,
    /// The command that revokes it.
    pub revoke_with: String,
}

/// A live instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    /// Instance id.
    pub instance_id: String,
    /// Device id.
    pub device: String,
    /// When its first token was recorded.
    pub first_seen: u64,
    /// When its last token expires.
    pub expires_at: u64,
}

/// The inventory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inventory {
    /// When it was made.
    pub generated_at: u64,
    /// Reviews older than this many days are overdue.
    pub review_max_age_days: u64,
    /// Every live agent, by name.
    pub agents: Vec<InventoryAgent>,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditView {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When.
    pub at: u64,
    /// What happened.
    pub kind: String,
    /// Outcome.
    pub decision: String,
    /// Agent.
    pub agent: Option<String>,
    /// Instance.
    pub instance: Option<String>,
    /// Device.
    pub device: Option<String>,
    /// User the agent acted for.
    pub user: Option<String>,
    /// Grant.
    pub grant: Option<String>,
    /// HTTP method.
    pub method: Option<String>,
    /// Upstream origin.
    pub origin: Option<String>,
    /// Path, without query.
    pub path: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Token id.
    pub jti: Option<String>,
    /// Admin principal.
    pub admin: Option<String>,
    /// Hash of the record before, hex.
    pub prev_hash: String,
    /// This record's hash, hex.
    pub hash: String,
}

impl AuditView {
    pub(crate) fn of(r: &AuditRecord) -> AuditView {
        let e = &r.entry;
        AuditView {
            seq: r.seq,
            at: e.at,
            kind: e.kind.clone(),
            decision: e.decision.clone(),
            agent: e.agent.clone(),
            instance: e.instance.clone(),
            device: e.device.clone(),
            user: e.user.clone(),
            grant: e.grant.clone(),
            method: e.method.clone(),
            origin: e.origin.clone(),
            path: e.path.clone(),
            reason: e.reason.clone(),
            jti: e.jti.clone(),
            admin: e.admin.clone(),
            prev_hash: hex::encode(r.prev_hash),
            hash: hex::encode(r.hash),
        }
    }
}

/// The log's last record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadView {
    /// Its sequence number.
    pub seq: u64,
    /// Its hash, hex: export it off the machine to detect truncation and
    /// rewrites later (`audit verify --expected-head SEQ:HASH`).
    pub hash: String,
}

/// A page of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditPage {
    /// The records, in order.
    pub records: Vec<AuditView>,
    /// The log's head when the page was read.
    pub head: Option<HeadView>,
}

/// The outcome of `audit verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyView {
    /// Whether the log is intact.
    pub ok: bool,
    /// The first fault, naming the record (when not intact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Records checked.
    pub records: u64,
    /// Signed checkpoints checked.
    pub checkpoints: usize,
    /// The verified head.
    pub head: Option<HeadView>,
}
