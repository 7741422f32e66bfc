//! The one way out of the sandbox: edgeward's `wasi:http` send hook.
//!
//! wasmtime-wasi-http is built without `default-send-request`, so it has no
//! socket code of its own: every `outgoing-handler.handle` call of the guest
//! ends in [`EgressHooks::send_request`]. The hook routes the request to
//! exactly one grant by origin, buffers the body under a size cap, and hands
//! it to the [`Egress`] (the backend, in process or remote). Whatever comes
//! back — a redacted upstream response or a refusal rendered as an RFC 9457
//! problem — is an ordinary HTTP response to the guest.
//!
//! The future returned to wasmtime runs detached from the `Store`, so it owns
//! its state through an `Arc` shared by all tasks of the instance.

use crate::credentials::InstanceToken;
use bytes::Bytes;
use edgeward_core::egress::{Egress, EgressCall, ExchangeFailure};
use edgeward_core::grant::{GrantRules, Origin, select_grant};
use edgeward_core::headers::is_forbidden_guest_header;
use edgeward_core::problem::{GRANT_HEADER, Refusal};
use http_body_util::{BodyExt, Full, Limited};
use std::future::Future;
use std::sync::Arc;
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, ForbiddenHeaderFilter, RequestOptions, WasiBody, WasiHttpHooks,
};

/// Everything the egress path of one instance needs, shared by its tasks.
pub(crate) struct InstanceEgress {
    /// Known secret formats: guest text is scanned before it reaches a log.
    pub(crate) scanner: edgeward_core::scan::Scanner,
    pub(crate) agent: String,
    pub(crate) instance: String,
    pub(crate) token: Arc<InstanceToken>,
    pub(crate) grants: Vec<GrantRules>,
    pub(crate) egress: Arc<dyn Egress>,
    pub(crate) max_request_bytes: usize,
}

/// The hooks object stored in each task's `Store`.
pub(crate) struct EgressHooks {
    pub(crate) shared: Arc<InstanceEgress>,
}

type IoFuture = Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;

impl WasiHttpHooks for EgressHooks {
    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        // Credential, Host and hop-by-hop headers cannot even be put into a
        // fields resource: the guest gets `header-error.forbidden` at once.
        Arc::new(|name| DEFAULT_FORBIDDEN_HEADERS.contains(name) || is_forbidden_guest_header(name))
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        // Guest-chosen timeouts are ignored: the backend applies the grant's
        // own, and a guest must not be able to lengthen them.
        _options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<
        dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), wasmtime_wasi_http::Error>>
            + Send,
    > {
        let shared = Arc::clone(&self.shared);
        Box::new(async move {
            let response = shared.handle(request).await;
            let response = response.map(|bytes| {
                Full::new(bytes)
                    .map_err(|never| match never {})
                    .boxed_unsync()
            });
            let io: IoFuture = Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}

impl InstanceEgress {
    /// Route, buffer and forward one request. Never fails: a refusal becomes
    /// a problem response, which ordinary HTTP clients handle.
    async fn handle(&self, request: http::Request<WasiBody>) -> http::Response<Bytes> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        match self.route_and_forward(request).await {
            Ok(response) => response,
            // The backend logs its own refusals; log only the runtime's.
            Err((grant, refusal, from_backend)) => {
                if !from_backend {
                    let path = self.scrub(&path);
                    let detail = self.scrub(&refusal.detail);
                    tracing::warn!(
                    agent = %self.agent,
                    instance = %self.instance,
                    grant = grant.as_deref().unwrap_or("-"),
                    %method,
                    %path,
                    class = %refusal.class,
                    detail = %detail,
                    "egress refused"
                    );
                }
                refusal.to_response()
            }
        }
    }

    async fn route_and_forward(
        &self,
        request: http::Request<WasiBody>,
    ) -> Result<http::Response<Bytes>, (Option<String>, Refusal, bool)> {
        // Stage spans (target `edgeward::stage`) time the hot path for the
        // benchmarks; disabled, each costs one relaxed load.
        let intercept = tracing::trace_span!(target: "edgeward::stage", "intercept");
        let (mut parts, body) = request.into_parts();
        let origin = Origin::of_uri(&parts.uri).ok_or_else(|| {
            (
                None,
                Refusal::invalid("the request URL needs an http or https origin"),
                false,
            )
        })?;
        let requested = match parts.headers.remove(GRANT_HEADER) {
            Some(v) => Some(v.to_str().map(str::to_owned).map_err(|_| {
                (
                    None,
                    Refusal::invalid("the edgeward-grant header is not text"),
                    false,
                )
            })?),
            None => None,
        };
        let grant = select_grant(&self.grants, &origin, requested.as_deref())
            .map_err(|r| (None, r, false))?
            .name
            .clone();
        let named = |r: Refusal| (Some(grant.to_string()), r, false);

        // Refuse an announced oversize body before reading any of it.
        let announced = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > self.max_request_bytes as u64) {
            return Err(named(self.too_large()));
        }
        let body = Limited::new(body, self.max_request_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    named(self.too_large())
                } else {
                    named(Refusal::invalid("the request body could not be read"))
                }
            })?
            .to_bytes();

        drop(intercept);
        let token = self
            .token
            .token()
            .await
            .map_err(|e| named(renewal_refusal(&e)))?;
        let sign = tracing::trace_span!(target: "edgeward::stage", "proof.sign");
        let proof = self
            .token
            .proof(&parts.method, &parts.uri, &token)
            .map_err(|e| named(renewal_refusal(&e)))?;
        drop(sign);
        let call = EgressCall {
            token,
            proof,
            grant: grant.clone(),
            request: http::Request::from_parts(parts, body),
        };
        self.egress
            .forward(call)
            .await
            .map_err(|r| (Some(grant.to_string()), r, true))
    }

    /// Guest-controlled text as it may appear in a log line.
    pub(crate) fn scrub(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.scanner.apply(text.as_bytes()).bytes).into_owned()
    }

    fn too_large(&self) -> Refusal {
        Refusal::limit(format!(
            "the request body is over this agent's limit of {} bytes",
            self.max_request_bytes
        ))
        .with_status(http::StatusCode::PAYLOAD_TOO_LARGE)
    }
}

/// The instance could not get a fresh token: the guest sees why, coarsely.
fn renewal_refusal(e: &ExchangeFailure) -> Refusal {
    match e {
        ExchangeFailure::Refused { error, description } => Refusal::denied(format!(
            "the backend refused to renew this instance's token ({error}: {description})"
        )),
        ExchangeFailure::Unreachable(_) | ExchangeFailure::Local(_) => {
            Refusal::upstream("the backend cannot be reached to renew this instance's token")
                .with_status(http::StatusCode::SERVICE_UNAVAILABLE)
        }
        // A future variant: refuse rather than call out without a token.
        #[allow(unreachable_patterns)]
        _ => Refusal::upstream("this instance has no valid token"),
    }
}
