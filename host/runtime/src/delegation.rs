//! Delegation to sub-agents: the host side of `edgeward:agent/delegation`.
//!
//! A parent's task asks for a child with narrower rights. The runtime
//! narrows the parent's own token offline — no round trip — by appending
//! caveats to its HMAC chain (see `edgeward_core::caveat`):
//!
//! ```text
//! agent:<sub-agent>  [grants:…] [methods:…] [paths:…] [exp:…]  holder:<child key>  [depth:…]
//! ```
//!
//! Each caveat is first checked with `Rights::narrows` against what the
//! chain holds so far, so a child asking for more is refused here with the
//! reason, before anything runs (the backend intersects anyway). The child
//! gets a fresh key, its own instance and store, and presents the chain
//! with proofs from its key; the backend verifies the chain, narrows to the
//! sub-agent's registered grants and checks every ancestor's revocation on
//! each call. The chain never enters any sandbox.

use crate::agent::LoadedAgent;
use crate::bindings::delegation;
use crate::credentials::InstanceToken;
use crate::egress_hook::InstanceEgress;
use crate::stop::StopSignal;
use crate::task::{InstanceIdentity, LogRecord, TaskState};
use edgeward_core::caveat::{Caveat, CaveatError, Chain, Rights};
use edgeward_core::config::Limits;
use edgeward_core::egress::{AgentProfile, ExchangeFailure};
use edgeward_core::entropy::Entropy;
use edgeward_core::grant::GrantName;
use edgeward_core::keys::Ed25519Signer;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// The sub-agents an instance (and its children) may start.
pub(crate) struct Delegator {
    sub_agents: BTreeMap<String, Arc<LoadedAgent>>,
    /// For child keys and DPoP `jti` prefixes.
    entropy: Mutex<Box<dyn Entropy + Send>>,
}

impl Delegator {
    pub(crate) fn new(agents: Vec<Arc<LoadedAgent>>, entropy: Box<dyn Entropy + Send>) -> Self {
        Delegator {
            sub_agents: agents
                .into_iter()
                .map(|a| (a.spec().name.clone(), a))
                .collect(),
            entropy: Mutex::new(entropy),
        }
    }
}

/// What one task needs to start children: the sub-agents and its own
/// instance's egress path (token, grants, backend).
#[derive(Clone)]
pub(crate) struct TaskDelegation {
    pub(crate) delegator: Arc<Delegator>,
    pub(crate) parent: Arc<InstanceEgress>,
    pub(crate) limits: Limits,
    pub(crate) identity: Arc<InstanceIdentity>,
    /// When the parent's task times out: a child gets what is left.
    pub(crate) deadline: std::time::Instant,
    /// The parent's approval channel, handed to the child.
    pub(crate) approvals: Option<Arc<dyn edgeward_core::egress::ApprovalChannel>>,
}

/// What a child may do: every field narrows its parent's own rights, and
/// `None` keeps them (the Rust face of the WIT `delegation.rights`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChildRights {
    /// Only these of the parent's grants.
    pub grants: Option<Vec<String>>,
    /// Only these HTTP methods (upper case).
    pub methods: Option<Vec<String>>,
    /// Only paths under one of these prefixes.
    pub path_prefixes: Option<Vec<String>>,
    /// At most this many seconds from now.
    pub lifetime_seconds: Option<u64>,
    /// At most this many further delegations below the child.
    pub max_depth: Option<u32>,
}

/// Why a child was not started or its chain not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DelegationError {
    /// No sub-agent of this name is registered with the instance.
    #[error("no sub-agent {0:?} is registered with this instance")]
    UnknownAgent(String),
    /// The rights ask for more than the parent holds.
    #[error("the child would get more than its parent holds: {0}")]
    NotNarrower(String),
    /// The parent may not delegate any further.
    #[error("the delegation depth is exhausted")]
    DepthExhausted,
    /// The rights are malformed.
    #[error("invalid rights: {0}")]
    Invalid(String),
    /// The parent holds no token it could narrow.
    #[error("delegation unavailable: {0}")]
    Unavailable(String),
}

type Error = DelegationError;

impl From<delegation::Rights> for ChildRights {
    fn from(r: delegation::Rights) -> ChildRights {
        ChildRights {
            grants: r.grants,
            methods: r.methods,
            path_prefixes: r.path_prefixes,
            lifetime_seconds: r.lifetime_seconds,
            max_depth: r.max_depth,
        }
    }
}

impl From<DelegationError> for delegation::Error {
    fn from(e: DelegationError) -> delegation::Error {
        match e {
            DelegationError::UnknownAgent(a) => delegation::Error::UnknownAgent(a),
            DelegationError::NotNarrower(w) => delegation::Error::NotNarrower(w),
            DelegationError::DepthExhausted => delegation::Error::DepthExhausted,
            DelegationError::Invalid(w) => delegation::Error::Invalid(w),
            DelegationError::Unavailable(w) => delegation::Error::Unavailable(w),
        }
    }
}

/// `token`'s chain narrowed for a child of sub-agent `agent` holding the
/// key `child_jkt`, with the rights it leaves.
pub(crate) async fn narrowed_chain(
    token: &InstanceToken,
    agent: &str,
    asked: &ChildRights,
    child_jkt: &str,
    min_left: u64,
) -> Result<(Chain, Rights), Error> {
    let (chain, rights) = token.delegation_base(min_left).await.map_err(unavailable)?;
    let caveats = caveats_for(agent, asked, token.now(), child_jkt)?;
    narrow(chain, rights, caveats)
}

/// A child's outcome and the records it logged.
struct ChildRun {
    outcome: Result<String, String>,
    logs: Vec<LogRecord>,
    logs_dropped: usize,
}

impl TaskDelegation {
    /// Narrow, start, run and wait for one child.
    fn run_child(
        self,
        agent: String,
        task: String,
        asked: ChildRights,
    ) -> Pin<Box<dyn Future<Output = Result<ChildRun, Error>> + Send>> {
        // Boxed: a child's task may itself start a child, so the future is
        // recursive.
        Box::pin(async move {
            let loaded = self
                .delegator
                .sub_agents
                .get(&agent)
                .cloned()
                .ok_or_else(|| Error::UnknownAgent(agent.clone()))?;
            let token = &self.parent.token;
            let (jti_prefix, key) = {
                let mut entropy = self
                    .delegator
                    .entropy
                    .lock()
                    .map_err(|_| Error::Unavailable("the entropy source failed".into()))?;
                let mut prefix = [0u8; 8];
                entropy.fill(&mut prefix);
                let key = Ed25519Signer::generate(&mut **entropy)
                    .map_err(|e| Error::Unavailable(format!("cannot make the child key: {e}")))?;
                (prefix, key)
            };
            let jkt = edgeward_core::keys::Signer::public_key(&key).jwk_thumbprint();
            // The child's time comes out of its parent's.
            let left = self
                .deadline
                .saturating_duration_since(std::time::Instant::now())
                .min(self.limits.task_timeout);
            if left.is_zero() {
                return Err(Error::Unavailable(
                    "the parent's task has no time left".into(),
                ));
            }
            let mut limits = self.limits;
            limits.task_timeout = left;
            // The chain must outlive the child's task.
            let (chain, rights) = narrowed_chain(
                token,
                &agent,
                &asked,
                &jkt,
                left.as_secs().saturating_add(1),
            )
            .await?;
            // Only the parent's grants the child keeps; it runs inside its
            // parent's limits (its own registered grants apply at the
            // backend).
            let parent_profile = token
                .profile()
                .ok_or_else(|| Error::Unavailable("the parent has no profile yet".into()))?;
            let profile = AgentProfile {
                grants: parent_profile
                    .grants
                    .iter()
                    .filter(|g| rights.grants.contains(&g.name))
                    .cloned()
                    .collect(),
                limits,
            };
            let instance_id = format!("{}.{}", self.identity.instance_id, &jkt[..16]);
            let identity = InstanceIdentity {
                agent: agent.clone(),
                instance_id: instance_id.clone(),
                user: self.identity.user.clone(),
                grants: profile.grants.iter().map(|g| g.name.to_string()).collect(),
            };
            tracing::info!(
                parent = %self.identity.instance_id,
                child = %instance_id,
                sub_agent = %agent,
                caveats = chain.caveats().len(),
                "starting a delegated child"
            );
            let child_token = Arc::new(InstanceToken::delegated(
                token,
                Box::new(key),
                agent.clone(),
                loaded.digest(),
                instance_id,
                profile.clone(),
                chain,
                rights,
                jti_prefix,
            ));
            let child = loaded
                .instance(
                    child_token,
                    profile,
                    identity,
                    Arc::clone(&self.parent.egress),
                    Arc::new(StopSignal::default()),
                )
                .map_err(unavailable)?
                .with_delegator(Arc::clone(&self.delegator));
            let child = match self.approvals.clone() {
                Some(channel) => child.with_approvals(channel),
                None => child,
            };
            let report = child.run(&task).await;
            let outcome = match report.outcome {
                Ok(result) => result,
                Err(e) => Err(format!("the sandbox stopped the child: {e}")),
            };
            Ok(ChildRun {
                outcome,
                logs: report.logs,
                logs_dropped: report.logs_dropped,
            })
        })
    }
}

/// The caveats for a child, in the order the backend applies them: which
/// sub-agent, each narrowing the guest asked for, the child's key, and the
/// depth left below the child.
fn caveats_for(
    agent: &str,
    asked: &ChildRights,
    now: u64,
    jkt: &str,
) -> Result<Vec<Caveat>, Error> {
    let invalid = |e: CaveatError| Error::Invalid(e.to_string());
    edgeward_core::grant::validate_name(agent, "agent")
        .map_err(|_| Error::Invalid(format!("{agent:?} is not an agent name")))?;
    let mut caveats = vec![Caveat::Agent(agent.to_owned())];
    if let Some(grants) = &asked.grants {
        let names = grants
            .iter()
            .map(|g| {
                GrantName::new(g).map_err(|_| Error::Invalid(format!("{g:?} is not a grant name")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        caveats.push(Caveat::grants(names));
    }
    if let Some(methods) = &asked.methods {
        caveats.push(Caveat::methods(methods).map_err(invalid)?);
    }
    if let Some(prefixes) = &asked.path_prefixes {
        caveats.push(Caveat::path_prefixes(prefixes).map_err(invalid)?);
    }
    if let Some(secs) = asked.lifetime_seconds {
        caveats.push(Caveat::ExpiresAt(now.saturating_add(secs)));
    }
    // The holder uses up one level; `max-depth` then bounds what is left
    // below the child.
    caveats.push(Caveat::Holder(jkt.to_owned()));
    if let Some(depth) = asked.max_depth {
        caveats.push(Caveat::MaxDepth(depth));
    }
    Ok(caveats)
}

/// Append each caveat after checking it asks for no more than the chain
/// holds at that point.
fn narrow(
    mut chain: Chain,
    mut rights: Rights,
    caveats: Vec<Caveat>,
) -> Result<(Chain, Rights), Error> {
    for c in caveats {
        rights.narrows(&c).map_err(refusal)?;
        chain = chain.append(c.clone()).map_err(refusal)?;
        rights = rights
            .attenuate(std::slice::from_ref(&c))
            .map_err(refusal)?;
    }
    Ok((chain, rights))
}

fn refusal(e: CaveatError) -> Error {
    match e {
        CaveatError::DepthExhausted => Error::DepthExhausted,
        CaveatError::NotNarrower(what) => Error::NotNarrower(what),
        other => Error::Invalid(other.to_string()),
    }
}

fn unavailable(e: ExchangeFailure) -> Error {
    Error::Unavailable(match e {
        ExchangeFailure::Refused { description, .. } => {
            format!("the parent's token was refused: {description}")
        }
        ExchangeFailure::Unreachable(_) => "the backend cannot be reached".into(),
        ExchangeFailure::Local(reason) => reason,
        #[allow(unreachable_patterns)]
        _ => "the parent holds no usable token".into(),
    })
}

impl delegation::Host for TaskState {
    fn sub_agents(&mut self) -> Vec<String> {
        self.delegation
            .as_ref()
            .map(|d| d.delegator.sub_agents.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn run_child(
        &mut self,
        agent: String,
        task: String,
        rights: delegation::Rights,
    ) -> impl Future<Output = Result<Result<String, String>, delegation::Error>> + Send {
        let delegation = self.delegation.clone();
        async move {
            let Some(delegation) = delegation else {
                return Err(delegation::Error::UnknownAgent(agent));
            };
            let child_agent = agent.clone();
            let run = delegation
                .run_child(agent, task, rights.into())
                .await
                .map_err(delegation::Error::from)?;
            // The child's records join the parent's log, marked as the
            // child's, within the parent's record limit.
            self.logs_dropped += run.logs_dropped;
            for mut record in run.logs {
                if self.logs.len() >= self.max_log_records {
                    self.logs_dropped += 1;
                    continue;
                }
                record.message = format!("[{child_agent}] {}", record.message);
                crate::task::truncate_message(&mut record.message);
                self.logs.push(record);
            }
            Ok(run.outcome)
        }
    }
}
