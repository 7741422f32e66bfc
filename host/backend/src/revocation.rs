//! Revocation state, checked on every proxied call and every exchange.
//!
//! The backend sits on every call, so a revocation takes effect on the very
//! next call, not at token expiry. The set lives in memory for that check
//! (a handful of hash lookups) and is written to the store before a revoke
//! returns, so it survives restarts; it is loaded back at start.
//! Every change wakes the stop channel's long polls.

use edgeward_core::token::VerifiedToken;
use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

/// What a revocation covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationKind {
    /// One token.
    Token {
        /// Its `jti`.
        jti: String,
    },
    /// One instance, every token it has or will get.
    Instance {
        /// Instance id.
        id: String,
    },
    /// An agent: every token, every instance, and new exchanges. With
    /// `before_generation`, only tokens of older generations (a lifecycle
    /// rotation) are refused.
    Agent {
        /// Agent name.
        name: String,
        /// Refuse generations below this; `None` refuses all.
        before_generation: Option<u64>,
    },
    /// A device: every token of every instance on it, and new exchanges.
    Device {
        /// Device id.
        id: String,
    },
    /// The kill switch: every token issued at or before `at` is refused and
    /// every running instance is stopped.
    All {
        /// When it was thrown.
        at: u64,
    },
}

#[derive(Default)]
struct Set {
    tokens: HashSet<String>,
    instances: HashSet<String>,
    agents_all: HashSet<String>,
    agents_before: HashMap<String, u64>,
    devices: HashSet<String>,
    all_before: Option<u64>,
}

/// The in-memory revocation set, with a change counter for long polls.
pub struct Revocations {
    set: RwLock<Set>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations {
            set: RwLock::new(Set::default()),
            changed: tokio::sync::watch::channel(0).0,
        }
    }
}

pub use edgeward_core::crossing::spiffe_segment;

impl Revocations {
    /// Add one revocation (memory only: the caller persists it first).
    pub fn add(&self, kind: &RevocationKind) {
        if let Ok(mut s) = self.set.write() {
            match kind {
                RevocationKind::Token { jti } => {
                    s.tokens.insert(jti.clone());
                }
                RevocationKind::Instance { id } => {
                    s.instances.insert(id.clone());
                }
                RevocationKind::Agent {
                    name,
                    before_generation: None,
                } => {
                    s.agents_all.insert(name.clone());
                }
                RevocationKind::Agent {
                    name,
                    before_generation: Some(g),
                } => {
                    let e = s.agents_before.entry(name.clone()).or_insert(*g);
                    *e = (*e).max(*g);
                }
                RevocationKind::Device { id } => {
                    s.devices.insert(id.clone());
                }
                RevocationKind::All { at } => {
                    s.all_before = Some(s.all_before.map_or(*at, |b| b.max(*at)));
                }
            }
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Forget revocations of an agent name (re-registration after a
    /// deprovision: the new agent's generations start above the old ones,
    /// so old tokens stay refused by generation).
    pub fn clear_agent(&self, name: &str) {
        if let Ok(mut s) = self.set.write() {
            s.agents_all.remove(name);
        }
    }

    /// Why this token is revoked, if it is. A poisoned lock fails closed.
    pub fn check(&self, t: &VerifiedToken) -> Option<String> {
        let Ok(s) = self.set.read() else {
            return Some("revocation state unavailable".into());
        };
        let instance = spiffe_segment(t.instance(), "/instance/").unwrap_or("");
        let device = spiffe_segment(t.device(), "/device/").unwrap_or("");
        if s.tokens.contains(t.jti()) {
            return Some(format!("token {} was revoked", t.jti()));
        }
        if s.instances.contains(instance) {
            return Some(format!("instance {instance} was revoked"));
        }
        if s.agents_all.contains(t.agent()) {
            return Some(format!("agent {} was revoked", t.agent()));
        }
        if let Some(g) = s.agents_before.get(t.agent())
            && t.generation() < *g
        {
            return Some(format!(
                "agent {} moved to generation {g}; this token is of generation {}",
                t.agent(),
                t.generation()
            ));
        }
        if s.devices.contains(device) {
            return Some(format!("device {device} was revoked"));
        }
        if s.all_before.is_some_and(|at| t.iat() <= at) {
            return Some("every token was revoked (kill switch)".into());
        }
        None
    }

    /// Why an ancestor of a delegated child's token is revoked, if it is:
    /// its token, instance, device or agent (generation).
    pub fn check_ancestor(&self, a: &edgeward_core::token::Ancestor) -> Option<String> {
        let instance = spiffe_segment(&a.instance_spiffe, "/instance/").unwrap_or("");
        let device = spiffe_segment(&a.device_spiffe, "/device/").unwrap_or("");
        let token_revoked = match self.set.read() {
            Ok(s) => s.tokens.contains(&a.jti),
            Err(_) => return Some("revocation state unavailable".into()),
        };
        if token_revoked {
            return Some(format!("token {} was revoked", a.jti));
        }
        self.refuses_exchange(device, &a.agent, instance)
            .or_else(|| self.refuses_generation(&a.agent, a.generation))
    }

    /// Whether new exchanges for this device, agent or instance are refused.
    pub fn refuses_exchange(&self, device: &str, agent: &str, instance: &str) -> Option<String> {
        let Ok(s) = self.set.read() else {
            return Some("revocation state unavailable".into());
        };
        if s.devices.contains(device) {
            return Some(format!("device {device} was revoked"));
        }
        if s.agents_all.contains(agent) {
            return Some(format!("agent {agent} was revoked"));
        }
        if s.instances.contains(instance) {
            return Some(format!("instance {instance} was revoked"));
        }
        None
    }

    /// Whether an agent's current generation is revoked (new exchanges
    /// refused until the agent is re-issued at a higher generation).
    pub fn refuses_generation(&self, agent: &str, generation: u64) -> Option<String> {
        let Ok(s) = self.set.read() else {
            return Some("revocation state unavailable".into());
        };
        match s.agents_before.get(agent) {
            Some(g) if generation < *g => Some(format!(
                "agent {agent} was revoked at generation {generation}; re-issue it to use it again"
            )),
            _ => None,
        }
    }

    /// Whether an agent (at this generation) is revoked: as a sub-agent
    /// named in a delegation chain, it may hold nothing.
    pub fn refuses_agent(&self, agent: &str, generation: u64) -> Option<String> {
        let revoked = match self.set.read() {
            Ok(s) => s.agents_all.contains(agent),
            Err(_) => return Some("revocation state unavailable".into()),
        };
        if revoked {
            return Some(format!("agent {agent} was revoked"));
        }
        self.refuses_generation(agent, generation)
    }

    /// A receiver that sees every change (for long polls).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
