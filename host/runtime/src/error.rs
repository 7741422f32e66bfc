//! Runtime errors: loading a component, and how a task ended badly.

use crate::limits::LimitExceeded;
use edgeward_core::digest::ComponentDigest;
use std::time::Duration;

/// Setting up the engine or loading a component failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The engine could not be configured.
    #[error("cannot configure the wasm engine: {0}")]
    Engine(String),
    /// The bytes are not a valid component (or compilation failed).
    #[error("not a valid WebAssembly component: {0}")]
    InvalidComponent(String),
    /// The component's digest is not on the agent's allow-list.
    #[error("component {digest} is not allowed to run as agent {agent}")]
    DigestNotAllowed {
        /// The digest that was measured.
        digest: ComponentDigest,
        /// The agent it claimed to be.
        agent: String,
    },
    /// The component imports something edgeward does not provide.
    #[error("the component cannot be linked: {0}")]
    Link(String),
}

/// Why a task did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task ran longer than its time limit.
    #[error("task time limit of {} ms exceeded", limit.as_millis())]
    Timeout {
        /// The bound.
        limit: Duration,
    },
    /// Memory or table growth beyond the bound.
    #[error("{0}")]
    Limit(LimitExceeded),
    /// stdout or stderr filled up.
    #[error("{stream} limit of {limit} bytes exceeded")]
    Output {
        /// `stdout` or `stderr`.
        stream: &'static str,
        /// The bound.
        limit: usize,
    },
    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access...).
    #[error("the agent trapped: {reason}")]
    Trap {
        /// The trap and where it happened.
        reason: String,
    },
    /// The instance was stopped: revoked, killed, or cut off from the
    /// backend for longer than its lease.
    #[error("the instance was stopped: {reason}")]
    Stopped {
        /// Why.
        reason: String,
    },
    /// Every instance slot is busy.
    #[error("too many tasks running at once (limit {limit}); try again later")]
    Busy {
        /// The bound.
        limit: u32,
    },
    /// Instantiation failed for another reason.
    #[error("the agent could not be started: {reason}")]
    Instantiate {
        /// Why.
        reason: String,
    },
}
