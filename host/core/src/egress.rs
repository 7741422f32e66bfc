//! The seam between the edge runtime and the backend.
//!
//! The runtime never depends on the backend crate: it calls the [`Egress`]
//! and [`TokenExchange`] traits. In embedded mode the backend implements them
//! directly (the hop is a function call); in split mode a TLS client does.
//! Either way the runtime attests, gets a token, and hands over each request
//! with that token; it gets back either the redacted upstream response or a
//! [`Refusal`].

use crate::config::Limits;
use crate::grant::{GrantName, GrantRules, Origin};
use crate::problem::Refusal;
use bytes::Bytes;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use zeroize::Zeroizing;

/// An access token in transit. Wiped on drop; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(Zeroizing<String>);

impl BearerToken {
    /// Wrap a token string.
    pub fn new(token: String) -> BearerToken {
        BearerToken(Zeroizing::new(token))
    }

    /// The token text, to put on the wire or verify.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// One guest request, routed to a grant by the runtime. The body is fully
/// buffered (and already size-capped by the runtime): it must be scanned as a
/// whole anyway.
#[derive(Debug)]
pub struct EgressCall {
    /// The instance's current access token: the backend takes the caller's
    /// identity and scope from it, never from the runtime's say-so.
    pub token: BearerToken,
    /// The DPoP proof (RFC 9449) for this request, signed by the instance
    /// key the token is bound to.
    pub proof: String,
    /// The grant the runtime selected by origin (and `edgeward-grant`).
    pub grant: GrantName,
    /// The request, without the `edgeward-grant` header.
    pub request: http::Request<Bytes>,
}

/// A boxed, `'static` future: wasmtime-wasi-http runs egress detached from
/// the guest's `Store`, so it must own everything it uses.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The future an [`Egress`] returns.
pub type EgressFuture = BoxFuture<Result<http::Response<Bytes>, Refusal>>;

/// Something that can carry a guest request to its upstream: the backend, in
/// process or across the network.
pub trait Egress: Send + Sync + 'static {
    /// Verify the token, check, inject the credential, forward, redact, and
    /// return the response the guest may see — or refuse.
    fn forward(&self, call: EgressCall) -> EgressFuture;
}

/// RFC 8693 grant type of the token exchange.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Token type URI of a device-signed attestation.
pub const ATTESTATION_TOKEN_TYPE: &str = "urn:edgeward:params:oauth:token-type:attestation";
/// Token type URI of the access tokens edgeward issues.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Token type URI of a user's assertion (RFC 8693: a JWT).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// An RFC 8693 token exchange request, as the runtime sends it.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The device-signed attestation.
    pub actor_token: BearerToken,
    /// Whom the token is for.
    pub subject: Subject,
}

/// Where an approval ticket stands, as a waiting guest sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TicketState {
    /// Not decided yet.
    Pending,
    /// Approved and not used yet.
    Approved,
    /// Denied.
    Denied,
    /// Expired, or its approval was used.
    Expired,
    /// Not a ticket of the caller's agent and user.
    Unknown,
}

impl TicketState {
    /// Its wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TicketState::Pending => "pending",
            TicketState::Approved => "approved",
            TicketState::Denied => "denied",
            TicketState::Expired => "expired",
            TicketState::Unknown => "unknown",
        }
    }

    /// From its wire name.
    pub fn from_name(name: &str) -> Option<TicketState> {
        Some(match name {
            "pending" => TicketState::Pending,
            "approved" => TicketState::Approved,
            "denied" => TicketState::Denied,
            "expired" => TicketState::Expired,
            "unknown" => TicketState::Unknown,
            _ => return None,
        })
    }
}

/// Whether `id` has the shape of an approval ticket id (32 hex digits):
/// anything else is refused before it reaches a store.
pub fn is_ticket_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Longest a guest may wait for a decision in one call.
pub const MAX_TICKET_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Waiting for approvals: the backend in process, or over TLS.
pub trait ApprovalChannel: Send + Sync + 'static {
    /// Wait up to `timeout` (capped at [`MAX_TICKET_WAIT`]) for a decision
    /// on `ticket`, as the holder of `token`: only tickets of the token's
    /// agent and user are visible.
    fn wait_ticket(
        &self,
        token: BearerToken,
        ticket: String,
        timeout: std::time::Duration,
    ) -> BoxFuture<Result<TicketState, ExchangeFailure>>;
}

/// The RFC 8693 subject of an exchange.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Subject {
    /// The attested instance itself (the attestation is the subject too).
    Instance,
    /// A user, by their assertion (a JWT from a trusted issuer): the
    /// instance acts for them.
    User(BearerToken),
    /// A parent's token narrowed for this instance (a caveat chain whose
    /// last holder is the attested instance key): the instance becomes a
    /// delegated child with a standalone token.
    Delegation(BearerToken),
}

impl TokenRequest {
    /// The RFC 8693 `subject_token` and its `subject_token_type`.
    pub fn subject(&self) -> (&str, &'static str) {
        match &self.subject {
            Subject::User(a) => (a.expose(), JWT_TOKEN_TYPE),
            Subject::Delegation(chain) => (chain.expose(), ACCESS_TOKEN_TYPE),
            Subject::Instance => (self.actor_token.expose(), ATTESTATION_TOKEN_TYPE),
        }
    }
}

/// A successful exchange.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    /// The access token.
    pub access_token: BearerToken,
    /// Seconds until it expires (capped to the agent's maximum).
    pub expires_in: u64,
    /// The instance id the backend assigned.
    pub instance_id: String,
    /// Granted scope (grant names).
    pub scope: Vec<String>,
    /// What the instance may do, as the backend (the source of truth) says.
    pub profile: AgentProfile,
    /// The key that lets the instance attenuate its token offline (append
    /// caveats for a sub-agent); `None` from a backend without delegation.
    pub chain_key: Option<crate::caveat::ChainKey>,
    /// The user the instance acts for, as the backend names it.
    pub on_behalf_of: Option<String>,
}

/// The public part of an agent's definition that the runtime needs: the
/// rules of its granted grants (to route requests by origin) and its sandbox
/// limits. Sent with every token, so split-mode devices need no copy of the
/// backend's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentProfile {
    /// Rules of the granted grants.
    pub grants: Vec<GrantRules>,
    /// Sandbox and egress limits.
    pub limits: Limits,
}

impl AgentProfile {
    /// JSON form (the `edgeward_profile` member of a token response).
    pub fn to_json(&self) -> serde_json::Value {
        let grants: Vec<serde_json::Value> = self
            .grants
            .iter()
            .map(|g| {
                serde_json::json!({
                    "name": g.name.as_str(),
                    "origin": g.origin.to_string(),
                    "methods": g.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                    "path_prefixes": g.path_prefixes,
                })
            })
            .collect();
        let l = &self.limits;
        serde_json::json!({
            "grants": grants,
            "limits": {
                "memory_bytes": l.memory_bytes,
                "task_timeout_ms": u64::try_from(l.task_timeout.as_millis()).unwrap_or(u64::MAX),
                "max_request_bytes": l.max_request_bytes,
                "max_response_bytes": l.max_response_bytes,
                "max_output_bytes": l.max_output_bytes,
                "max_log_records": l.max_log_records,
            }
        })
    }

    /// Parse the JSON form; every field is checked as the config checks it.
    pub fn from_json(v: &serde_json::Value) -> Result<AgentProfile, String> {
        let grants = v["grants"].as_array().ok_or("profile: no grants list")?;
        let mut rules = Vec::with_capacity(grants.len());
        for g in grants {
            let text = |k: &str| g[k].as_str().ok_or(format!("profile grant: no {k}"));
            let name = GrantName::new(text("name")?).map_err(|e| e.to_string())?;
            let origin = Origin::parse(text("origin")?).map_err(|e| e.to_string())?;
            let methods = g["methods"]
                .as_array()
                .ok_or("profile grant: no methods")?
                .iter()
                .map(|m| {
                    m.as_str()
                        .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok())
                        .ok_or("profile grant: bad method")
                })
                .collect::<Result<Vec<_>, _>>()?;
            let path_prefixes = g["path_prefixes"]
                .as_array()
                .ok_or("profile grant: no path_prefixes")?
                .iter()
                .map(|p| {
                    p.as_str()
                        .filter(|p| p.starts_with('/'))
                        .map(str::to_owned)
                        .ok_or("profile grant: bad path prefix")
                })
                .collect::<Result<Vec<_>, _>>()?;
            rules.push(GrantRules {
                name,
                origin,
                methods,
                path_prefixes,
            });
        }
        let l = &v["limits"];
        let num = |k: &str| l[k].as_u64().ok_or(format!("profile limits: no {k}"));
        let size = |k: &str| -> Result<usize, String> {
            usize::try_from(num(k)?).map_err(|_| format!("profile limits: {k} too large"))
        };
        Ok(AgentProfile {
            grants: rules,
            limits: Limits {
                memory_bytes: num("memory_bytes")?,
                task_timeout: std::time::Duration::from_millis(num("task_timeout_ms")?),
                max_request_bytes: size("max_request_bytes")?,
                max_response_bytes: size("max_response_bytes")?,
                max_output_bytes: size("max_output_bytes")?,
                max_log_records: size("max_log_records")?,
            },
        })
    }
}

/// Why an exchange failed, as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeFailure {
    /// The backend refused (OAuth `error` code and description).
    #[error("the backend refused the token exchange: {error}: {description}")]
    Refused {
        /// OAuth error code, e.g. `invalid_grant`.
        error: String,
        /// What the backend said.
        description: String,
    },
    /// The backend could not be reached or answered nonsense.
    #[error("cannot reach the backend: {0}")]
    Unreachable(String),
    /// The runtime could not build its attestation.
    #[error("cannot build the attestation: {0}")]
    Local(String),
}

/// The token service as the runtime sees it.
pub trait TokenExchange: Send + Sync + 'static {
    /// A fresh nonce (`GET /v1/challenge`).
    fn challenge(&self) -> BoxFuture<Result<String, ExchangeFailure>>;
    /// Exchange an attestation for an access token (`POST /v1/token`).
    fn exchange(&self, request: TokenRequest) -> BoxFuture<Result<TokenGrant, ExchangeFailure>>;
}

/// The answer to one long poll of the stop channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopPoll {
    /// Stop the instance now: its token, instance, agent or device was
    /// revoked.
    Stop {
        /// Why, for the log.
        reason: String,
    },
    /// Nothing happened; keep running. If the next poll cannot reach the
    /// backend within `lease_secs`, stop anyway (fail closed).
    Continue {
        /// The lease, seconds.
        lease_secs: u64,
    },
}

/// The live channel from the backend to running instances: a long poll, so
/// it also works where the backend is a serverless function.
pub trait StopChannel: Send + Sync + 'static {
    /// Wait (up to the backend's poll timeout) for a stop order concerning
    /// the instance holding `token`.
    fn poll_stop(&self, token: BearerToken) -> BoxFuture<Result<StopPoll, ExchangeFailure>>;
}
