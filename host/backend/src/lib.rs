//! edgeward-backend: the trusted side of edgeward.
//!
//! It is the only place that holds upstream credentials. For every guest
//! request routed to it (by the embedded runtime through the
//! [`Egress`](edgeward_core::egress::Egress) trait, or — with later work —
//! over the network), it:
//!
//! 1. checks that the calling agent holds the grant, and the request's
//!    origin, method and path against the grant;
//! 2. refuses guest-set credential headers and strips hop-by-hop ones;
//! 3. decides under the agent's policy (allow, approve, deny, sequences,
//!    limits) and keeps approval tickets bound to the exact call, then
//!    injects the real credential (header, query parameter or basic auth);
//! 4. forwards over a pooled keep-alive connection with connect and total
//!    timeouts and a response size cap, never following redirects;
//! 5. decodes the response body (gzip, deflate; anything else is refused),
//!    drops `Set-Cookie` and edgeward's own refusal marker, and redacts every
//!    credential it holds from headers and body in their common encodings;
//! 6. returns the response with `Content-Length` matching the new body.
//!
//! Non-goals here: attestation, tokens, the registry and the audit log (later
//! work builds them on the same path).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
pub mod embedded;
pub mod exchange;
mod forward;
pub mod import;
mod policy;
pub mod resolve;
pub mod revocation;
mod secrets;
pub mod service;
pub mod store;
pub mod tls;
mod verified;

pub use exchange::{ServiceKeys, TokenService};
pub use forward::{Backend, BackendError};
pub use secrets::{SecretError, resolve_secret};
