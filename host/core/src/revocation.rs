//! Revocation decisions, pure: which revocations refuse a token, an
//! exchange or a delegation ancestor, and why. The native backend keeps one
//! [`RevocationSet`] in memory (loaded from its store, behind a lock that
//! wakes the stop channel); the Spin component builds one per request from
//! the rows its database holds for that request. Both say the same thing.

use crate::crossing::spiffe_segment;
use crate::token::{Ancestor, VerifiedToken};
use std::collections::{HashMap, HashSet};

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

/// A set of revocations.
#[derive(Debug, Default, Clone)]
pub struct RevocationSet {
    tokens: HashSet<String>,
    instances: HashSet<String>,
    agents_all: HashSet<String>,
    agents_before: HashMap<String, u64>,
    devices: HashSet<String>,
    all_before: Option<u64>,
}

impl RevocationSet {
    /// Add one revocation.
    pub fn add(&mut self, kind: &RevocationKind) {
        let s = self;
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

    /// Why this token is revoked, if it is.
    pub fn check(&self, t: &VerifiedToken) -> Option<String> {
        let s = self;
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
    pub fn check_ancestor(&self, a: &Ancestor) -> Option<String> {
        let instance = spiffe_segment(&a.instance_spiffe, "/instance/").unwrap_or("");
        let device = spiffe_segment(&a.device_spiffe, "/device/").unwrap_or("");
        if self.tokens.contains(&a.jti) {
            return Some(format!("token {} was revoked", a.jti));
        }
        self.refuses_exchange(device, &a.agent, instance)
            .or_else(|| self.refuses_generation(&a.agent, a.generation))
    }

    /// Whether new exchanges for this device, agent or instance are refused.
    pub fn refuses_exchange(&self, device: &str, agent: &str, instance: &str) -> Option<String> {
        let s = self;
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
        match self.agents_before.get(agent) {
            Some(g) if generation < *g => Some(format!(
                "agent {agent} was revoked at generation {generation}; re-issue it to use it again"
            )),
            _ => None,
        }
    }

    /// Whether an agent (at this generation) is revoked: as a sub-agent
    /// named in a delegation chain, it may hold nothing.
    pub fn refuses_agent(&self, agent: &str, generation: u64) -> Option<String> {
        if self.agents_all.contains(agent) {
            return Some(format!("agent {agent} was revoked"));
        }
        self.refuses_generation(agent, generation)
    }
}
