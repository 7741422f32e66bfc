//! Start a sub-agent with a task and narrower rights
//! (`edgeward:agent/delegation@0.2.0`).
//!
//! The child runs in a sandbox and instance of its own. Its rights are the
//! caller's, narrowed by [`Rights`]: the runtime appends caveats to the
//! caller's token outside the sandbox, so neither agent ever holds a token,
//! and no child can hold more than its parent. Revoking the parent stops
//! every child on its next call.
//!
//! ```no_run
//! use edgeward_sdk::delegation::{self, Rights};
//!
//! let rights = Rights::default()
//!     .grants(["weather"])
//!     .methods(["GET"])
//!     .path_prefixes(["/v1/forecast"])
//!     .lifetime_seconds(60);
//! match delegation::run_child("summarizer", "Oslo", &rights) {
//!     Ok(Ok(summary)) => edgeward_sdk::log::info(&summary),
//!     Ok(Err(failure)) => edgeward_sdk::log::warn(&failure),
//!     Err(refused) => edgeward_sdk::log::error(&refused.to_string()),
//! }
//! ```
//!
//! Using this module makes the component an `edgeward:agent@0.2.0` agent:
//! it needs a runtime that links 0.2.0 (every edgeward runtime since the
//! interface was added).

use crate::bindings::v0_2::edgeward::agent0_2_0::delegation as wit;

/// What a child may do; every field narrows the caller's own rights and
/// `None` (the default) keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rights {
    /// Only these of the caller's grants.
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

impl Rights {
    /// Only these grants.
    pub fn grants<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.grants = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Only these methods.
    pub fn methods<S: Into<String>>(mut self, methods: impl IntoIterator<Item = S>) -> Self {
        self.methods = Some(methods.into_iter().map(Into::into).collect());
        self
    }

    /// Only paths under these prefixes.
    pub fn path_prefixes<S: Into<String>>(mut self, prefixes: impl IntoIterator<Item = S>) -> Self {
        self.path_prefixes = Some(prefixes.into_iter().map(Into::into).collect());
        self
    }

    /// At most this long.
    pub fn lifetime_seconds(mut self, secs: u64) -> Self {
        self.lifetime_seconds = Some(secs);
        self
    }

    /// At most this many further delegations.
    pub fn max_depth(mut self, depth: u32) -> Self {
        self.max_depth = Some(depth);
        self
    }
}

/// Why a child was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No sub-agent of this name is registered with this instance.
    #[error("no sub-agent {0:?} is registered with this instance")]
    UnknownAgent(String),
    /// The rights ask for more than the caller holds.
    #[error("the child would get more than its parent holds: {0}")]
    NotNarrower(String),
    /// The caller may not delegate any further.
    #[error("the delegation depth is exhausted")]
    DepthExhausted,
    /// The rights are malformed.
    #[error("invalid rights: {0}")]
    Invalid(String),
    /// The caller holds no token it could narrow.
    #[error("delegation unavailable: {0}")]
    Unavailable(String),
}

/// Names of the sub-agents this instance may start.
pub fn sub_agents() -> Vec<String> {
    wit::sub_agents()
}

/// Run `task` in a fresh instance of sub-agent `agent` with `rights`, and
/// wait for it. `Ok` holds the child's own outcome: its result, or its
/// failure (including the sandbox stopping it).
pub fn run_child(
    agent: &str,
    task: &str,
    rights: &Rights,
) -> Result<Result<String, String>, Error> {
    let rights = wit::Rights {
        grants: rights.grants.clone(),
        methods: rights.methods.clone(),
        path_prefixes: rights.path_prefixes.clone(),
        lifetime_seconds: rights.lifetime_seconds,
        max_depth: rights.max_depth,
    };
    wit::run_child(agent, task, &rights).map_err(|e| match e {
        wit::Error::UnknownAgent(a) => Error::UnknownAgent(a),
        wit::Error::NotNarrower(w) => Error::NotNarrower(w),
        wit::Error::DepthExhausted => Error::DepthExhausted,
        wit::Error::Invalid(w) => Error::Invalid(w),
        wit::Error::Unavailable(w) => Error::Unavailable(w),
    })
}
