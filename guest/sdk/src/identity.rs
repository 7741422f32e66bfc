//! Who this agent instance is.
//!
//! Every value here is public information established by the runtime and the
//! backend: names, ids and an expiry time. No token, key or credential is
//! reachable from the sandbox.
//!
//! ```no_run
//! use edgeward_sdk::identity;
//!
//! let me = identity::agent_name();
//! let grants = identity::grants().join(", ");
//! edgeward_sdk::log::info(&format!("{me} may use: {grants}"));
//! ```

use crate::bindings::edgeward::agent::identity as wit;

/// The registered agent name (unique per backend), e.g. `weather-bot`.
pub fn agent_name() -> String {
    wit::agent_name()
}

/// This instance's id. One agent may have many instances (one per device and
/// user context); tasks run by the same instance share the id.
pub fn instance_id() -> String {
    wit::instance_id()
}

/// The user this instance acts for, or `None` when the agent acts for itself.
pub fn on_behalf_of() -> Option<String> {
    wit::on_behalf_of()
}

/// Names of the grants this instance may use.
///
/// A grant is an upstream origin with an allow-list of methods and paths; the
/// credential behind it stays outside the sandbox. When several grants share
/// one origin, choose one per request with [`crate::http::Request::grant`].
pub fn grants() -> Vec<String> {
    wit::grants()
}

/// When the instance's current token expires, in seconds since the Unix
/// epoch, or `None` when the instance runs without a token.
///
/// Renewal is the runtime's job; this is informational (e.g. to decide
/// whether a long job should be split into several tasks).
pub fn token_expires_at() -> Option<u64> {
    wit::token_expires_at()
}
