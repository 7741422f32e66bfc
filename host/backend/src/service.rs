//! The backend as a network service (`edgeward serve`): the token service's
//! routes and the egress proxy route the runtime uses in split mode.
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/challenge` | a fresh stateless nonce |
//! | `POST /v1/token` | RFC 8693 exchange of a device attestation |
//! | `GET /.well-known/jwks.json` | token signing keys |
//! | `GET /.well-known/oauth-authorization-server` | RFC 8414 metadata |
//! | `GET /v1/stop` | the stop channel: a long poll with the instance's token; answers `{"stop": true, "reason"}` when it is revoked, else `{"stop": false, "lease"}` after the poll time |
//! | `GET /v1/approvals/wait?ticket=&timeout_ms=` | a guest waits for a decision on its approval ticket (long poll, at most 60 s) with the instance's token: `{"state": "pending" \| "approved" \| "denied" \| "expired" \| "unknown"}` |
//! | `POST /v1/revoke` | RFC 7009: a token holder revokes its own token (DPoP proof from its key) |
//! | `POST /v1/enroll` | a device enrols itself with a one-time code from `edgeward device invite`: `{"code", "id", "public_key"}` |
//! | `POST /v1/egress` | a guest request: `authorization: Bearer <token>`, `edgeward-method: <method>`, `edgeward-target: <absolute URL>`, `edgeward-grant: <grant>`, the guest's headers and body |
//!
//! The egress route runs exactly the code embedded mode calls
//! ([`Backend`]'s [`Egress`] implementation).

use crate::forward::Backend;
use bytes::Bytes;
use edgeward_core::egress::{
    ATTESTATION_TOKEN_TYPE, BearerToken, EgressCall, TOKEN_EXCHANGE_GRANT, TokenRequest,
};
use edgeward_core::problem::Refusal;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Largest token request body.
const MAX_FORM_BYTES: usize = 16 * 1024;
/// Time allowed to receive an egress request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The RFC 8693 form for an exchange request (shared with embedded mode).
pub fn exchange_form(request: &TokenRequest) -> HashMap<String, String> {
    HashMap::from([
        ("grant_type".to_owned(), TOKEN_EXCHANGE_GRANT.to_owned()),
        (
            "actor_token".to_owned(),
            request.actor_token.expose().to_owned(),
        ),
        (
            "actor_token_type".to_owned(),
            ATTESTATION_TOKEN_TYPE.to_owned(),
        ),
        ("subject_token".to_owned(), request.subject().0.to_owned()),
        (
            "subject_token_type".to_owned(),
            request.subject().1.to_owned(),
        ),
    ])
}

/// Serve until the listener fails. `tls` is `None` only when the operator
/// passed the explicit danger flag for plain HTTP.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    backend: Backend,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, peer) = listener.accept().await?;
        let backend = backend.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_connection(TokioIo::new(tls), backend, "https").await,
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => serve_connection(TokioIo::new(stream), backend, "http").await,
            }
        });
    }
}

/// `scheme` is how clients reach this connection: DPoP proofs name it.
async fn serve_connection<I>(io: I, backend: Backend, scheme: &'static str)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let backend = backend.clone();
        async move { Ok::<_, std::convert::Infallible>(route(&backend, req, scheme).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(io, service)
        .await;
}

type Response = http::Response<Full<Bytes>>;

async fn route(
    backend: &Backend,
    req: hyper::Request<hyper::body::Incoming>,
    scheme: &'static str,
) -> Response {
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/v1/challenge") => json(
            StatusCode::OK,
            &serde_json::json!({ "nonce": backend.tokens().challenge() }),
        ),
        (Method::POST, "/v1/token") => token(backend, req).await,
        (Method::GET, "/.well-known/jwks.json") => json(StatusCode::OK, &backend.tokens().jwks()),
        // From configuration, never from the request's Host header: the
        // metadata must name the same endpoints whoever asks (RFC 8414 §3.3).
        (Method::GET, "/.well-known/oauth-authorization-server") => json(
            StatusCode::OK,
            &backend
                .tokens()
                .metadata(&backend.tokens().settings().public_url),
        ),
        (Method::POST, "/v1/egress") => egress(backend, req).await,
        (Method::GET, "/v1/stop") => stop(backend, req).await,
        (Method::GET, "/v1/approvals/wait") => wait_ticket(backend, req).await,
        (Method::POST, "/v1/revoke") => revoke(backend, req, scheme).await,
        (Method::POST, "/v1/enroll") => enroll(backend, req).await,
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({ "error": "not_found", "error_description": "no such route" }),
        ),
    }
}

async fn token(backend: &Backend, req: hyper::Request<hyper::body::Incoming>) -> Response {
    let form_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body = Limited::new(req.into_body(), MAX_FORM_BYTES)
        .collect()
        .await;
    // Malformed requests get the same answer as a bad attestation: the caller
    // is not authenticated yet.
    let refused = || oauth_error("invalid_grant", "the attestation was not accepted");
    let Ok(body) = body else { return refused() };
    if !form_type {
        tracing::warn!(
            authenticated = false,
            reason = "not a form body",
            "token exchange refused"
        );
        return refused();
    }
    let body = body.to_bytes();
    let mut form = HashMap::new();
    for (k, v) in form_urlencoded::parse(&body) {
        // A repeated parameter is ambiguous (RFC 6749 §3.2): refuse it.
        if form.insert(k.into_owned(), v.into_owned()).is_some() {
            tracing::warn!(
                authenticated = false,
                reason = "repeated parameter",
                "token exchange refused"
            );
            return refused();
        }
    }
    match backend.tokens().exchange_async(form).await {
        Ok(minted) => json(
            StatusCode::OK,
            &edgeward_core::exchange::TokenResponse {
                token: &minted.token,
                expires_in: minted.expires_in,
                scope: &minted.scope,
                instance_id: &minted.instance_id,
                profile: &minted.profile,
                chain_key: &minted.chain_key,
                on_behalf_of: minted.on_behalf_of.as_deref(),
            }
            .to_json(),
        ),
        Err(e) => oauth_error(e.error, e.public_description()),
    }
}

fn bearer(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.strip_prefix("Bearer "))
        .map(str::to_owned)
}

async fn stop(backend: &Backend, req: hyper::Request<hyper::body::Incoming>) -> Response {
    let Some(token) = bearer(req.headers()) else {
        return json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({ "error": "invalid_token", "error_description": "no access token" }),
        );
    };
    match backend.tokens().poll_stop(&token).await {
        Ok(edgeward_core::egress::StopPoll::Stop { reason }) => json(
            StatusCode::OK,
            &serde_json::json!({ "stop": true, "reason": reason }),
        ),
        Ok(edgeward_core::egress::StopPoll::Continue { lease_secs }) => json(
            StatusCode::OK,
            &serde_json::json!({ "stop": false, "lease": lease_secs }),
        ),
        Err(e) => access_refused(&e),
    }
}

/// A long poll's refusal: an unusable token is the caller's (401), an
/// unavailable backend is not (503, no stop order; the runtime keeps its
/// lease and asks again).
fn access_refused(e: &crate::exchange::AccessError) -> Response {
    match e {
        crate::exchange::AccessError::Unavailable(_) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "error": "temporarily_unavailable", "error_description": "the backend cannot check the token now" }),
        ),
        e => json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({ "error": "invalid_token", "error_description": e.to_string() }),
        ),
    }
}

/// A guest waits for its approval ticket. Read-only: the answer is the
/// state of one ticket of the token's own agent and user.
async fn wait_ticket(backend: &Backend, req: hyper::Request<hyper::body::Incoming>) -> Response {
    let Some(token) = bearer(req.headers()) else {
        return json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({ "error": "invalid_token", "error_description": "no access token" }),
        );
    };
    let mut ticket = String::new();
    let mut timeout_ms = 0u64;
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "ticket" => ticket = v.chars().take(64).collect(),
            "timeout_ms" => timeout_ms = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    match backend
        .tokens()
        .wait_ticket(&token, &ticket, Duration::from_millis(timeout_ms))
        .await
    {
        Ok(state) => json(
            StatusCode::OK,
            &serde_json::json!({ "state": state.as_str() }),
        ),
        Err(e) => access_refused(&e),
    }
}

/// Enrolment with a one-time code. Every failure of the code (unknown,
/// used, expired) looks the same; the code is the only authentication here.
async fn enroll(backend: &Backend, req: hyper::Request<hyper::body::Incoming>) -> Response {
    let refused = |why: &str| {
        json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({ "error": "invalid_grant", "error_description": why }),
        )
    };
    let Ok(body) = Limited::new(req.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
    else {
        return refused("the request body is too large");
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body.to_bytes()) else {
        return refused("the body is not JSON");
    };
    let (Some(code), Some(id), Some(key)) = (
        v["code"].as_str(),
        v["id"].as_str(),
        v["public_key"].as_str(),
    ) else {
        return refused("code, id and public_key are required");
    };
    if edgeward_core::grant::validate_name(id, "device").is_err() {
        return refused("the device id must be 1 to 64 characters of a-z, 0-9, '-' or '_'");
    }
    let Ok(public_key) = key.parse::<edgeward_core::keys::PublicKey>() else {
        return refused("the public key is not in the ed25519:… or p256:… form");
    };
    use sha2::Digest as _;
    let hash: [u8; 32] = sha2::Sha256::digest(code.as_bytes()).into();
    let tokens = backend.tokens();
    let outcome = tokens
        .store()
        .redeem_invite(&hash, id, public_key, tokens.clock().now());
    let (status, body, decision, reason) = match outcome {
        Ok(Some(r)) => (
            StatusCode::OK,
            serde_json::json!({ "device": r.device.id, "owner": r.device.owner }),
            "allow",
            format!(
                "device {id} enrolled with a code from {}",
                r.invite.created_by
            ),
        ),
        Ok(None) => (
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": "invalid_grant", "error_description": "the enrolment code is not valid" }),
            "deny",
            "unknown, used or expired enrolment code".to_owned(),
        ),
        Err(e) => (
            StatusCode::CONFLICT,
            serde_json::json!({ "error": "invalid_request", "error_description": format!("cannot enrol device {id}: {e}") }),
            "deny",
            format!("enrolment of {id} failed: {e}"),
        ),
    };
    let entry = crate::store::AuditEntry {
        kind: "enroll".into(),
        decision: decision.into(),
        device: Some(id.to_owned()),
        reason: Some(reason),
        ..Default::default()
    };
    if let Err(e) = tokens.audit(entry) {
        tracing::error!("cannot write the audit log: {e}");
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "error": "temporarily_unavailable", "error_description": "the audit log is unavailable" }),
        );
    }
    json(status, &body)
}

/// RFC 7009: whoever holds a token *and its key* may revoke it. A DPoP
/// proof (RFC 9449) from the token's key is required, so a delegated child,
/// whose chain carries the parent's token but not the parent's key, cannot
/// revoke its parent. The answer is 200 whether or not the token was one of
/// ours (§2.2); a bad proof for one of ours is `invalid_dpop_proof`.
async fn revoke(
    backend: &Backend,
    req: hyper::Request<hyper::body::Incoming>,
    scheme: &'static str,
) -> Response {
    // The URL the client called, as the proof's `htu` must name it.
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let target: Option<http::Uri> = format!("{scheme}://{host}/v1/revoke").parse().ok();
    let proof = req
        .headers()
        .get("dpop")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(req.into_body(), MAX_FORM_BYTES)
        .collect()
        .await;
    if let Ok(body) = body {
        let body = body.to_bytes();
        if let Some((_, token)) = form_urlencoded::parse(&body).find(|(k, _)| k == "token") {
            let revoked = match &target {
                Some(uri) => backend
                    .tokens()
                    .revoke_presented(&token, proof.as_deref(), uri),
                None => Err(edgeward_core::dpop::DpopError::Malformed(
                    "no usable Host header",
                )),
            };
            if let Err(e) = revoked {
                tracing::warn!("token revocation refused: {e}");
                return json(
                    StatusCode::UNAUTHORIZED,
                    &serde_json::json!({
                        "error": "invalid_dpop_proof",
                        "error_description": "revoking a token needs a DPoP proof from its key",
                    }),
                );
            }
        }
    }
    json(StatusCode::OK, &serde_json::json!({}))
}

async fn egress(backend: &Backend, req: hyper::Request<hyper::body::Incoming>) -> Response {
    match egress_call(backend, req).await {
        Ok((access, call)) => match backend.forward_checked(access, call).await {
            Ok(resp) => resp.map(Full::new),
            Err(refusal) => refusal.to_response().map(Full::new),
        },
        Err(refusal) => refusal.to_response().map(Full::new),
    }
}

/// Rebuild the guest request from the egress route's envelope, with its
/// token checked (once: the call goes on with this check).
async fn egress_call(
    backend: &Backend,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<(crate::exchange::Access, EgressCall), Refusal> {
    let (mut parts, body) = req.into_parts();
    let edgeward_core::crossing::Envelope {
        token,
        proof,
        grant,
        method,
        target,
    } = edgeward_core::crossing::Envelope::take(&mut parts.headers)?;
    // The token is checked before the body is read: an unauthenticated
    // caller cannot make the backend buffer anything, and an authenticated
    // one only up to its agent's own limit, within a deadline.
    let verify = tracing::trace_span!(target: "edgeward::stage", "token.verify");
    let access = backend.tokens().check_access(&token);
    drop(verify);
    let access = access.map_err(|e| e.refusal())?;
    let limit = access.agent.limits.max_request_bytes;
    let body = tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect())
        .await
        .map_err(|_| Refusal::invalid("the request body did not arrive in time"))?
        .map_err(|_| edgeward_core::crossing::request_too_large(limit))?
        .to_bytes();
    let mut request = http::Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = target;
    *request.headers_mut() = parts.headers;
    Ok((
        access,
        EgressCall {
            token: BearerToken::new(token),
            proof,
            grant,
            request,
        },
    ))
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut resp = http::Response::new(Full::new(Bytes::from(value.to_string())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Tokens and nonces must never be cached (RFC 6749 §5.1).
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    resp
}

fn oauth_error(error: &str, description: &str) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({ "error": error, "error_description": description }),
    )
}
