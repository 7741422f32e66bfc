//! Revocation state, checked on every proxied call and every exchange.
//!
//! The backend sits on every call, so a revocation takes effect on the very
//! next call, not at token expiry. The set lives in memory for that check
//! (a handful of hash lookups; the decisions are
//! [`edgeward_core::revocation::RevocationSet`]'s) and is written to the
//! store before a revoke returns, so it survives restarts; it is loaded back
//! at start. Every change wakes the stop channel's long polls.

pub use edgeward_core::crossing::spiffe_segment;
pub use edgeward_core::revocation::RevocationKind;
use edgeward_core::revocation::RevocationSet;
use std::sync::RwLock;

/// The in-memory revocation set, with a change counter for long polls.
pub struct Revocations {
    set: RwLock<RevocationSet>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations {
            set: RwLock::new(RevocationSet::default()),
            changed: tokio::sync::watch::channel(0).0,
        }
    }
}

/// A poisoned lock fails closed.
const UNAVAILABLE: &str = "revocation state unavailable";

impl Revocations {
    /// Add one revocation (memory only: the caller persists it first).
    pub fn add(&self, kind: &RevocationKind) {
        if let Ok(mut s) = self.set.write() {
            s.add(kind);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    fn read<T>(&self, f: impl FnOnce(&RevocationSet) -> Option<T>) -> Option<T>
    where
        T: From<&'static str>,
    {
        match self.set.read() {
            Ok(s) => f(&s),
            Err(_) => Some(T::from(UNAVAILABLE)),
        }
    }

    /// Run `f` on the set under the read lock; a poisoned lock fails
    /// closed with the reason.
    pub fn with<T>(&self, f: impl FnOnce(&RevocationSet) -> T) -> Result<T, &'static str> {
        self.set.read().map(|s| f(&s)).map_err(|_| UNAVAILABLE)
    }

    /// Whether new exchanges for this device, agent or instance are refused.
    pub fn refuses_exchange(&self, device: &str, agent: &str, instance: &str) -> Option<String> {
        self.read(|s| s.refuses_exchange(device, agent, instance))
    }

    /// Whether an agent's current generation is revoked.
    pub fn refuses_generation(&self, agent: &str, generation: u64) -> Option<String> {
        self.read(|s| s.refuses_generation(agent, generation))
    }

    /// A receiver that sees every change (for long polls).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
