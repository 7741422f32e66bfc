//! edgeward's backend as a Spin HTTP component (Spin 3, spin-sdk 5.2,
//! wasi:http 0.2): the device-facing routes of `edgeward serve`, so a
//! runtime in split mode works against it unchanged, plus an admin revoke
//! route.
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/challenge` | a fresh stateless nonce |
//! | `POST /v1/token` | RFC 8693 exchange of a device attestation |
//! | `GET /.well-known/jwks.json` | the token signing key |
//! | `GET /.well-known/oauth-authorization-server` | RFC 8414 metadata |
//! | `POST /v1/egress` | a guest request (the native envelope) |
//! | `GET /v1/stop` | the stop channel's long poll |
//! | `POST /v1/revoke` | RFC 7009, with a DPoP proof from the token's key |
//! | `POST /v1/admin/revoke` | `authorization: Bearer <admin credential>`, JSON `{token \| instance \| agent \| device \| all: true, reason?}` |
//! | `POST /v1/admin/reissue` | the same credential, JSON `{agent}`: the agent's next generation (older tokens refused, its revocation lifted) |
//!
//! Keys, credentials and the config come from Spin variables
//! ([`settings`]); nonces, proofs, revocations, issued tokens and the
//! audit log from Spin's SQLite database ([`store`]).
#![deny(unsafe_code)]

pub mod admin;
pub mod egress;
pub mod exchange;
pub mod revoke;
pub mod service;
pub mod settings;
pub mod store;
pub mod wire;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use service::Service;
use spin_sdk::http::IncomingRequest;

/// Largest token, revoke or admin request body.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// The component's export. Its only unsafe code is the ABI glue
/// `#[http_component]` generates; everything else denies `unsafe`.
#[allow(unsafe_code)]
mod entry {
    #[spin_sdk::http_component]
    async fn handle(req: spin_sdk::http::IncomingRequest, out: spin_sdk::http::ResponseOutparam) {
        let response = super::route(req);
        super::wire::respond(out, response);
    }
}

fn route(req: IncomingRequest) -> http::Response<Bytes> {
    let parts = match wire::request_head(&req) {
        Ok(p) => p,
        Err(why) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", why),
    };
    let settings = match settings::Settings::load(&|name| spin_sdk::variables::get(name).ok()) {
        Ok(s) => s,
        // The operator's mistake: named in the answer (never a value), so
        // `spin up` shows what to fix.
        Err(e) => {
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                &format!("the edgeward backend is misconfigured: {e}"),
            );
        }
    };
    let service = match store::Store::open()
        .map_err(|e| e.to_string())
        .and_then(|db| Service::new(settings, db).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(_) => {
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the backend's state is unavailable",
            );
        }
    };
    match (parts.method.clone(), parts.uri.path()) {
        (Method::GET, "/v1/challenge") => match exchange::challenge(&service) {
            Ok(nonce) => json(StatusCode::OK, &serde_json::json!({ "nonce": nonce })),
            Err(_) => oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the random source is unavailable",
            ),
        },
        (Method::POST, "/v1/token") => token(&service, &parts, req),
        (Method::GET, "/.well-known/jwks.json") => json(
            StatusCode::OK,
            &serde_json::json!({ "keys": [service.issuer.jwk()] }),
        ),
        (Method::GET, "/.well-known/oauth-authorization-server") => {
            json(StatusCode::OK, &metadata(&service))
        }
        (Method::POST, "/v1/egress") => egress::handle(&service, parts, req),
        (Method::GET, "/v1/stop") => revoke::stop(&service, &parts),
        (Method::POST, "/v1/revoke") => revoke::rfc7009(&service, &parts, req),
        (Method::POST, "/v1/admin/revoke") => admin::revoke(&service, &parts, req),
        (Method::POST, "/v1/admin/reissue") => admin::reissue(&service, &parts, req),
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({ "error": "not_found", "error_description": "no such route" }),
        ),
    }
}

/// RFC 8414 metadata, from configuration (never the Host header).
fn metadata(service: &Service) -> serde_json::Value {
    let b = &service.settings.config.backend;
    let base = b.public_url.trim_end_matches('/');
    serde_json::json!({
        "issuer": b.issuer,
        "token_endpoint": format!("{base}/v1/token"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "grant_types_supported": [edgeward_core::egress::TOKEN_EXCHANGE_GRANT],
        "token_endpoint_auth_methods_supported": ["none"],
        "response_types_supported": [],
        "edgeward_challenge_endpoint": format!("{base}/v1/challenge"),
        "edgeward_attestation_token_type": edgeward_core::egress::ATTESTATION_TOKEN_TYPE,
    })
}

/// The exchange route: a form body, each parameter once.
fn token(
    service: &Service,
    parts: &http::request::Parts,
    req: IncomingRequest,
) -> http::Response<Bytes> {
    // Malformed requests get the same answer as a bad attestation: the
    // caller is not authenticated yet.
    let refused = || {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the attestation was not accepted",
        )
    };
    let form_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let Ok(body) = wire::read_body(req, MAX_FORM_BYTES) else {
        return refused();
    };
    if !form_type {
        return refused();
    }
    let mut form = std::collections::HashMap::new();
    for (k, v) in form_urlencoded::parse(&body) {
        // A repeated parameter is ambiguous (RFC 6749 §3.2).
        if form.insert(k.into_owned(), v.into_owned()).is_some() {
            return refused();
        }
    }
    match exchange::exchange(service, &form) {
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
        // 400 for every refusal, as natively.
        Err(e) => oauth_error(StatusCode::BAD_REQUEST, e.error, e.public_description()),
    }
}

/// A JSON answer that is never cached (tokens and nonces, RFC 6749 §5.1).
pub fn json(status: StatusCode, value: &serde_json::Value) -> http::Response<Bytes> {
    let body = Bytes::from(value.to_string());
    let mut resp = http::Response::new(body.clone());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    resp
}

/// An OAuth-style error answer.
pub fn oauth_error(status: StatusCode, error: &str, description: &str) -> http::Response<Bytes> {
    json(
        status,
        &serde_json::json!({ "error": error, "error_description": description }),
    )
}
