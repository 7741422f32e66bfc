//! The seam between the edge runtime and the backend.
//!
//! The runtime never depends on the backend crate: it calls an [`Egress`]
//! trait object. In embedded mode the backend implements it directly (the hop
//! is a function call); in split mode a client implements it over TLS. Either
//! way the runtime hands over a request addressed to a grant and gets back
//! either the redacted upstream response or a [`Refusal`].

use crate::grant::GrantName;
use crate::problem::Refusal;
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;

/// Who is calling: public identifiers only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Registered agent name.
    pub agent: String,
    /// Instance id.
    pub instance: String,
    /// The user the instance acts for, if any.
    pub user: Option<String>,
}

/// One guest request, routed to a grant by the runtime. The body is fully
/// buffered (and already size-capped by the runtime): it must be scanned as a
/// whole anyway.
#[derive(Debug)]
pub struct EgressCall {
    /// Who is calling.
    pub caller: Caller,
    /// The grant the runtime selected by origin (and `edgeward-grant`).
    pub grant: GrantName,
    /// The request, without the `edgeward-grant` header.
    pub request: http::Request<Bytes>,
}

/// The future an [`Egress`] returns. It is `'static`: wasmtime-wasi-http runs
/// it detached from the guest's `Store`, so it must own everything it uses.
pub type EgressFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Bytes>, Refusal>> + Send + 'static>>;

/// Something that can carry a guest request to its upstream: the backend, in
/// process or across the network.
pub trait Egress: Send + Sync + 'static {
    /// Check, inject the credential, forward, redact, and return the response
    /// the guest may see — or refuse.
    fn forward(&self, call: EgressCall) -> EgressFuture;
}
