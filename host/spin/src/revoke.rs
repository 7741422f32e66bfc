//! Device-facing revocation routes: the stop channel's long poll and RFC
//! 7009 for a token's holder. A revocation is a row in the database; the
//! next request on any instance reads it, so it works on the next call.

use crate::service::{AccessError, Service, now};
use crate::store::AuditEntry;
use crate::wire;
use crate::{MAX_FORM_BYTES, json, oauth_error};
use bytes::Bytes;
use edgeward_core::revocation::RevocationKind;
use http::StatusCode;
use spin_sdk::http::IncomingRequest;

pub(crate) fn bearer(parts: &http::request::Parts) -> Option<&str> {
    parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.strip_prefix("Bearer "))
}

/// `GET /v1/stop`: answers at once if the token is revoked, else checks
/// once a second until the configured poll time, then answers with the
/// lease. (No process outlives a request on Spin, so nothing can wake the
/// poll: a stop arrives within a second of the revocation.)
pub fn stop(service: &Service, parts: &http::request::Parts) -> http::Response<Bytes> {
    let unauthorized = |why: &str| {
        json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({ "error": "invalid_token", "error_description": why }),
        )
    };
    let Some(token) = bearer(parts) else {
        return unauthorized("no access token");
    };
    let backend = &service.settings.config.backend;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(backend.stop_poll_secs);
    loop {
        match service.check_access(token) {
            Ok(_) => {}
            // Not a stop order: the runtime keeps its lease and asks again.
            Err(AccessError::Unavailable(_)) => {
                return oauth_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the revocation state is unavailable",
                );
            }
            Err(AccessError::Revoked(reason)) => {
                note_stop(service, token, &reason);
                return json(
                    StatusCode::OK,
                    &serde_json::json!({ "stop": true, "reason": reason }),
                );
            }
            Err(e) => return unauthorized(&e.to_string()),
        }
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return json(
                StatusCode::OK,
                &serde_json::json!({ "stop": false, "lease": backend.stop_lease_secs }),
            );
        }
        std::thread::sleep(left.min(std::time::Duration::from_secs(1)));
    }
}

fn note_stop(service: &Service, token: &str, reason: &str) {
    let Ok(t) = service.verify_signed(token.split('~').next().unwrap_or(token), now()) else {
        return;
    };
    let entry = AuditEntry::new("stop", "stop")
        .with("agent", Some(t.agent()))
        .with(
            "instance",
            edgeward_core::crossing::spiffe_segment(t.instance(), "/instance/"),
        )
        .with("jti", Some(t.jti()))
        .with("reason", Some(format!("stop order sent: {reason}")));
    // A lost stop record does not hold back the stop itself.
    let _ = service.audit(entry);
}

/// `POST /v1/revoke` (RFC 7009): whoever holds a token *and its key* may
/// revoke it. 200 whether or not the token was ours (§2.2); a bad proof
/// for one of ours is `invalid_dpop_proof`.
pub fn rfc7009(
    service: &Service,
    parts: &http::request::Parts,
    req: IncomingRequest,
) -> http::Response<Bytes> {
    // The URL the client called, as the proof's `htu` names it: the
    // configured public URL (what a client behind a TLS-terminating proxy
    // calls), else the URL this request came to (as natively).
    let public = format!(
        "{}/v1/revoke",
        service
            .settings
            .config
            .backend
            .public_url
            .trim_end_matches('/')
    )
    .parse::<http::Uri>()
    .ok();
    let scheme = match req.scheme() {
        Some(spin_sdk::http::Scheme::Https) => "https",
        _ => "http",
    };
    let host = req
        .authority()
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let target: Option<http::Uri> = format!("{scheme}://{host}/v1/revoke").parse().ok();
    let proof = parts
        .headers
        .get("dpop")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Ok(body) = wire::read_body(req, MAX_FORM_BYTES) else {
        return json(StatusCode::OK, &serde_json::json!({}));
    };
    let Some((_, token)) = form_urlencoded::parse(&body).find(|(k, _)| k == "token") else {
        return json(StatusCode::OK, &serde_json::json!({}));
    };
    // Verified at its own issue time: an expired token of ours may still be
    // revoked, a forged one is ignored.
    let Some(iat) = edgeward_core::token::unverified_iat(&token) else {
        return json(StatusCode::OK, &serde_json::json!({}));
    };
    let Ok(verified) = service.verify_signed(&token, iat) else {
        return json(StatusCode::OK, &serde_json::json!({}));
    };
    let proved = proof.as_deref().is_some_and(|proof| {
        [public, target].iter().flatten().any(|uri| {
            service
                .check_proof(proof, &http::Method::POST, uri, &token, verified.jkt())
                .is_ok()
        })
    });
    if !proved {
        return json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({
                "error": "invalid_dpop_proof",
                "error_description": "revoking a token needs a DPoP proof from its key",
            }),
        );
    }
    let kind = RevocationKind::Token {
        jti: verified.jti().to_owned(),
    };
    let stored = service
        .store
        .add_revocation(&kind, now(), "rfc7009", "revoked by its holder");
    let entry = AuditEntry::new("revoke", if stored.is_ok() { "allow" } else { "deny" })
        .with("agent", Some(verified.agent()))
        .with("jti", Some(verified.jti()))
        .with("reason", Some("token revoked by its holder (RFC 7009)"));
    let audited = service.audit(entry);
    if stored.is_err() || audited.is_err() {
        return oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the revocation could not be stored",
        );
    }
    json(StatusCode::OK, &serde_json::json!({}))
}
