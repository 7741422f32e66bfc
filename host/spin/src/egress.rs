//! `POST /v1/egress`: a guest request in the native envelope (the runtime's
//! split mode sends exactly this), checked, given its credential, forwarded,
//! cleaned and audited. The steps and refusals are the native backend's
//! (`edgeward_backend::forward`); the pure ones are `edgeward-core`'s.

use crate::service::{Service, token_refusal};
use crate::store::AuditEntry;
use crate::wire::{self, BodyError, UpstreamError};
use bytes::Bytes;
use edgeward_core::caveat::Outside;
use edgeward_core::codec::{self, DecodeError};
use edgeward_core::crossing::{self, OutboundScan};
use edgeward_core::grant::{CredentialKind, GrantName, inject_credential};
use edgeward_core::headers::{sanitize_request, sanitize_response};
use edgeward_core::problem::{GRANT_HEADER, Refusal};
use http::{HeaderValue, Method, StatusCode};
use spin_sdk::http::IncomingRequest;

/// Header carrying the guest request's absolute URL.
pub const TARGET_HEADER: &str = "edgeward-target";
/// Header carrying the guest request's method.
pub const METHOD_HEADER: &str = "edgeward-method";

/// The envelope, as the route received it.
struct Envelope {
    token: String,
    proof: String,
    grant: GrantName,
    method: Method,
    target: http::Uri,
    headers: http::HeaderMap,
}

fn envelope(mut parts: http::request::Parts) -> Result<Envelope, Refusal> {
    let h = &mut parts.headers;
    let token = h
        .remove(http::header::AUTHORIZATION)
        .and_then(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.strip_prefix("DPoP ").map(str::to_owned))
        })
        .ok_or_else(|| {
            Refusal::denied("the egress route needs a DPoP-bound access token")
                .with_status(StatusCode::UNAUTHORIZED)
        })?;
    let proof = h
        .remove("dpop")
        .and_then(|v| v.to_str().ok().map(str::to_owned))
        .ok_or_else(|| {
            Refusal::denied("the egress route needs a DPoP proof")
                .with_status(StatusCode::UNAUTHORIZED)
        })?;
    let target: http::Uri = h
        .remove(TARGET_HEADER)
        .and_then(|v| v.to_str().ok().and_then(|s| s.parse().ok()))
        .ok_or_else(|| {
            Refusal::invalid("the egress route needs an absolute edgeward-target URL")
        })?;
    let grant = h
        .remove(GRANT_HEADER)
        .and_then(|v| v.to_str().ok().and_then(|s| GrantName::new(s).ok()))
        .ok_or_else(|| Refusal::invalid("the egress route needs an edgeward-grant header"))?;
    let method = h
        .remove(METHOD_HEADER)
        .and_then(|v| Method::from_bytes(v.as_bytes()).ok())
        .ok_or_else(|| Refusal::invalid("the egress route needs a valid edgeward-method header"))?;
    Ok(Envelope {
        token,
        proof,
        grant,
        method,
        target,
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
        Ok(env) => {
            entry = entry
                .with("grant", Some(env.grant.as_str()))
                .with("method", Some(env.method.as_str()))
                .with(
                    "origin",
                    edgeward_core::grant::Origin::of_uri(&env.target).map(|o| o.to_string()),
                )
                .with("path", Some(env.target.path()));
            forward(service, env, req, &mut entry)
        }
        Err(r) => Err(r),
    };
    // Defence in depth: a refusal's detail leaves without any credential.
    let result = result.map_err(|mut r| {
        r.detail = service.settings.redactor.redact_str(&r.detail).0;
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
    env: Envelope,
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
    let taken = std::mem::take(entry);
    *entry = taken
        .with("agent", Some(token.agent()))
        .with("instance", segment(token.instance(), "/instance/"))
        .with("device", segment(token.device(), "/device/"))
        .with("jti", Some(token.jti()))
        .with("user", token.on_behalf_of());
    let limit = agent.limits.max_request_bytes;
    let body = wire::read_body(req, limit).map_err(|e| match e {
        BodyError::TooLarge => Refusal::limit(format!(
            "the request body is over this agent's limit of {limit} bytes"
        ))
        .with_status(StatusCode::PAYLOAD_TOO_LARGE),
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
    if let Err(outside) = access.rights.allows(
        &env.grant,
        env.method.as_str(),
        env.target.path(),
        crate::service::now(),
    ) {
        return Err(match outside {
            Outside::Grant(_) => Refusal::denied(format!(
                "the access token does not cover grant {}",
                env.grant
            )),
            other => Refusal::denied(format!("outside the delegated rights: {other}")),
        });
    }
    if !agent.grants.contains(&env.grant) {
        return Err(Refusal::denied(format!(
            "agent {} does not hold grant {}",
            agent.name, env.grant
        )));
    }
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
    *request.headers_mut() = env.headers;
    let (mut parts, ()) = request.into_parts();
    grant.rules.check(&parts.uri, &parts.method)?;
    let own_header = match &grant.credential {
        CredentialKind::Header { name, .. } => Some(name),
        _ => None,
    };
    sanitize_request(&mut parts.headers, own_header)?;
    let body = match crossing::scan_outbound(
        &service.settings.scanner,
        grant.outbound_secrets,
        &mut parts,
        body,
    ) {
        Ok((body, OutboundScan::Clean { .. })) => body,
        Ok((body, OutboundScan::Audited { rules } | OutboundScan::Redacted { rules })) => {
            let taken = std::mem::take(entry);
            *entry = taken.with("outbound_findings", Some(rules));
            body
        }
        Err((refusal, rules)) => {
            let taken = std::mem::take(entry);
            *entry = taken.with("outbound_findings", Some(rules));
            return Err(refusal);
        }
    };
    let secret = match (user, secrets.user_secrets.is_empty()) {
        (_, true) => &secrets.secret,
        (None, false) => {
            return Err(Refusal::denied(format!(
                "grant {} is per-user: calls must be made on a user's behalf",
                grant.rules.name
            )));
        }
        (Some(u), false) => secrets.user_secrets.get(u).ok_or_else(|| {
            Refusal::denied(format!(
                "grant {} holds no credential for {u}",
                grant.rules.name
            ))
        })?,
    };
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
    let (mut parts, raw) = upstream.into_parts();
    let decoded = codec::decode_body(
        parts.headers.get_all(http::header::CONTENT_ENCODING).iter(),
        &raw,
        max_response,
    )
    .map_err(|e| match e {
        DecodeError::TooLarge { .. } => crossing::response_too_large(max_response),
        _ => Refusal::upstream(
            "the upstream answered in a content coding edgeward cannot decode and scan",
        ),
    })?;
    sanitize_response(&mut parts.headers);
    crossing::redact_response_headers(
        &service.settings.scanner,
        &service.settings.redactor,
        &service.settings.name_redactor,
        &mut parts.headers,
    );
    let scanned = service.settings.scanner.apply(&decoded);
    if !scanned.findings.is_empty() {
        let taken = std::mem::take(entry);
        *entry = taken.with(
            "response_findings",
            Some(crossing::rules_of(&scanned.findings)),
        );
    }
    let body = Bytes::from(scanned.bytes.into_owned());
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut response = http::Response::new(body);
    *response.status_mut() = parts.status;
    *response.headers_mut() = parts.headers;
    Ok(response)
}
