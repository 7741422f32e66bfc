//! `POST /v1/egress`: a guest request in the native envelope (the runtime's
//! split mode sends exactly this), checked, given its credential, forwarded,
//! cleaned and audited. The steps and refusals are the native backend's
//! (`edgeward_backend::forward`); the pure ones are `edgeward-core`'s.

use crate::service::{Service, token_refusal};
use crate::store::AuditEntry;
use crate::wire::{self, BodyError, UpstreamError};
use bytes::Bytes;
use edgeward_core::codec;
use edgeward_core::crossing::{self, OutboundScan};
use edgeward_core::grant::{CredentialKind, inject_credential};
use edgeward_core::headers::sanitize_request;
use edgeward_core::problem::Refusal;
use http::{HeaderValue, StatusCode};
use spin_sdk::http::IncomingRequest;

/// The envelope, and the guest's own headers.
struct Envelope {
    env: crossing::Envelope,
    headers: http::HeaderMap,
}

/// Spin adds `spin-*` headers to every request it routes to a component
/// (`spin-full-url`, `spin-client-addr`, ...): they are the platform's, not
/// the guest's, and must not reach an upstream (they name the device's
/// address and the backend's URL). A guest's own `spin-*` header is
/// dropped with them (natively it is forwarded).
fn is_platform_header(name: &http::HeaderName) -> bool {
    name.as_str().starts_with("spin-")
}

fn envelope(mut parts: http::request::Parts) -> Result<Envelope, Refusal> {
    let platform: Vec<http::HeaderName> = parts
        .headers
        .keys()
        .filter(|k| is_platform_header(k))
        .cloned()
        .collect();
    for name in platform {
        parts.headers.remove(name);
    }
    let env = crossing::Envelope::take(&mut parts.headers)?;
    Ok(Envelope {
        env,
        headers: parts.headers,
    })
}

/// Handle the route; every outcome is audited, and without its record the
/// guest gets no upstream bytes.
pub fn handle(
    service: &Service,
    parts: http::request::Parts,
    req: IncomingRequest,
) -> http::Response<Bytes> {
    let mut entry = AuditEntry::new("egress", "deny");
    let result = match envelope(parts) {
        Ok(e) => {
            let env = &e.env;
            entry = entry
                .with("grant", Some(env.grant.as_str()))
                .with("method", Some(env.method.as_str()))
                .with(
                    "origin",
                    edgeward_core::grant::Origin::of_uri(&env.target).map(|o| o.to_string()),
                )
                .with("path", Some(env.target.path()));
            forward(service, e, req, &mut entry)
        }
        Err(r) => Err(r),
    };
    // Defence in depth: a refusal's detail leaves without any credential.
    let result = result.map_err(|mut r| {
        r.detail = match service.settings.guards() {
            Ok(g) => g.redactor.redact_str(&r.detail).0,
            Err(_) => "the call was refused".into(),
        };
        r
    });
    match &result {
        Ok(resp) => {
            entry.decision = "allow";
            entry = entry.with(
                "reason",
                Some(format!("upstream answered {}", resp.status().as_u16())),
            );
        }
        Err(r) => {
            entry = entry.with("reason", Some(format!("{}: {}", r.class, r.detail)));
        }
    }
    if service.audit(entry).is_err() {
        return Refusal::upstream("the audit log is unavailable")
            .with_status(StatusCode::SERVICE_UNAVAILABLE)
            .to_response();
    }
    result.unwrap_or_else(|r| r.to_response())
}

fn forward(
    service: &Service,
    Envelope { env, headers }: Envelope,
    req: IncomingRequest,
    entry: &mut AuditEntry,
) -> Result<http::Response<Bytes>, Refusal> {
    // The token before the body: an unauthenticated caller cannot make the
    // backend buffer anything, an authenticated one only its agent's limit.
    let access = service
        .check_access(&env.token)
        .map_err(|e| token_refusal(&e))?;
    let token = &access.token;
    let agent = access.agent;
    let segment = crossing::spiffe_segment;
    entry.set("agent", Some(token.agent()));
    entry.set("instance", segment(token.instance(), "/instance/"));
    entry.set("device", segment(token.device(), "/device/"));
    entry.set("jti", Some(token.jti()));
    entry.set("user", token.on_behalf_of());
    let limit = agent.limits.max_request_bytes;
    let body = wire::read_body(req, limit).map_err(|e| match e {
        BodyError::TooLarge => crossing::request_too_large(limit),
        BodyError::TooSlow => Refusal::invalid("the request body did not arrive in time"),
        BodyError::Unreadable => Refusal::invalid("the request body could not be read"),
    })?;
    service
        .check_proof(
            &env.proof,
            &env.method,
            &env.target,
            &env.token,
            &access.rights.holder,
        )
        .map_err(|e| {
            Refusal::denied(format!("proof of possession refused: {e}"))
                .with_status(StatusCode::UNAUTHORIZED)
        })?;
    let user = token.on_behalf_of();
    crossing::check_rights(
        &access.rights,
        &agent.name,
        &agent.grants,
        &env.grant,
        &env.method,
        env.target.path(),
        crate::service::now(),
    )?;
    let guards = service.settings.guards().map_err(|_| {
        Refusal::upstream("the backend's secret scanner is unavailable")
            .with_status(StatusCode::SERVICE_UNAVAILABLE)
    })?;
    let config = &service.settings.config;
    let (grant, secrets) = match (
        config.grant(&env.grant),
        service.settings.secrets.get(&env.grant),
    ) {
        (Some(g), Some(s)) => (g, s),
        _ => {
            return Err(Refusal::denied(format!(
                "grant {} does not exist",
                env.grant
            )));
        }
    };
    let max_response = agent.limits.max_response_bytes;
    let mut request = http::Request::new(());
    *request.method_mut() = env.method;
    *request.uri_mut() = env.target;
    *request.headers_mut() = headers;
    let (mut parts, ()) = request.into_parts();
    grant.rules.check(&parts.uri, &parts.method)?;
    let own_header = match &grant.credential {
        CredentialKind::Header { name, .. } => Some(name),
        _ => None,
    };
    sanitize_request(&mut parts.headers, own_header)?;
    let body =
        match crossing::scan_outbound(&guards.scanner, grant.outbound_secrets, &mut parts, body) {
            Ok((body, OutboundScan::Clean { .. })) => body,
            Ok((body, OutboundScan::Audited { rules } | OutboundScan::Redacted { rules })) => {
                entry.set("outbound_findings", Some(rules));
                body
            }
            Err((refusal, rules)) => {
                entry.set("outbound_findings", Some(rules));
                return Err(refusal);
            }
        };
    let secret = crossing::select_secret(
        &grant.rules.name,
        &secrets.secret,
        &secrets.user_secrets,
        user,
    )?;
    inject_credential(&mut parts, &grant.credential, secret)?;
    parts.headers.insert(
        http::header::ACCEPT_ENCODING,
        HeaderValue::from_static(codec::SUPPORTED_CODINGS),
    );
    let request = http::Request::from_parts(parts, body);
    let upstream = wire::send(request, grant.connect_timeout, grant.timeout, max_response)
        .map_err(|e| match e {
            UpstreamError::Connect => Refusal::upstream("could not connect to the upstream"),
            UpstreamError::Timeout => Refusal::upstream(format!(
                "the upstream did not answer within {} ms",
                grant.timeout.as_millis()
            ))
            .with_status(StatusCode::GATEWAY_TIMEOUT),
            UpstreamError::TooLarge => crossing::response_too_large(max_response),
            UpstreamError::Failed => Refusal::upstream("the upstream connection failed"),
        })?;
    let (parts, raw) = upstream.into_parts();
    let (response, findings) = crossing::finish_response(
        parts,
        &raw,
        max_response,
        &guards.scanner,
        &guards.redactor,
        &guards.name_redactor,
    )
    .map_err(|u| {
        // What the upstream sent (a coding name) is for the audit record,
        // scrubbed there; the guest gets the refusal only.
        if let Some(log) = u.log {
            entry.set("upstream", Some(log));
        }
        u.refusal
    })?;
    if !findings.is_empty() {
        entry.set("response_findings", Some(findings));
    }
    Ok(response)
}
