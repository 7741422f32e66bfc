//! The admin routes: revoke and re-issue, behind one credential (its
//! SHA-256 is the `admin_token_sha256` variable). Every attempt is audited,
//! and a refused request changes nothing.

use crate::revoke::bearer;
use crate::service::{Service, now};
use crate::store::AuditEntry;
use crate::wire;
use crate::{MAX_FORM_BYTES, json, oauth_error};
use bytes::Bytes;
use edgeward_core::revocation::RevocationKind;
use http::StatusCode;
use sha2::{Digest as _, Sha256};
use spin_sdk::http::IncomingRequest;

/// Token and instance ids, as the native admin API accepts them.
fn check_id(value: &str, field: &'static str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field} must be 1 to 128 characters of a-z, A-Z, 0-9, '-' or '_'"
        ))
    }
}

/// `POST /v1/admin/revoke`: body: exactly one of `token` (a jti),
/// `instance`, `agent`, `device` or `all: true`, and an optional `reason`.
/// Every attempt is audited.
pub fn revoke(
    service: &Service,
    parts: &http::request::Parts,
    req: IncomingRequest,
) -> http::Response<Bytes> {
    if let Err(refused) = admin_auth(service, parts, "revoke") {
        return refused;
    }
    let refuse = |why: &str| {
        let _ = service.audit(
            AuditEntry::new("admin", "deny").with("reason", Some(format!("revoke refused: {why}"))),
        );
        oauth_error(StatusCode::BAD_REQUEST, "invalid_request", why)
    };
    let Ok(body) = wire::read_body(req, MAX_FORM_BYTES) else {
        return refuse("the body is too large");
    };
    let (kind, reason) = match parse_revoke(&body, &service.settings.config) {
        Ok(k) => k,
        Err(why) => return refuse(&why),
    };
    let at = now();
    let kind = match kind {
        RevocationKind::All { .. } => RevocationKind::All { at },
        other => other,
    };
    let (kind_name, target) = match &kind {
        RevocationKind::Token { jti } => ("token", Some(jti.as_str())),
        RevocationKind::Instance { id } => ("instance", Some(id.as_str())),
        RevocationKind::Agent { name, .. } => ("agent", Some(name.as_str())),
        RevocationKind::Device { id } => ("device", Some(id.as_str())),
        RevocationKind::All { .. } => ("all", None),
    };
    if service
        .store
        .add_revocation(&kind, at, "admin", &reason)
        .is_err()
    {
        return oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the revocation could not be stored",
        );
    }
    let entry = AuditEntry::new("admin", "allow").with(
        "reason",
        Some(format!(
            "revoked {kind_name}{}: {reason}",
            target.map(|t| format!(" {t}")).unwrap_or_default()
        )),
    );
    if service.audit(entry).is_err() {
        return oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the audit log is unavailable (the revocation is stored)",
        );
    }
    json(
        StatusCode::OK,
        &serde_json::json!({
            "revoked": { "kind": kind_name, "target": target },
            "at": at,
            "reason": reason,
        }),
    )
}

/// The admin routes' authentication: `authorization: Bearer <credential>`
/// whose SHA-256 is the `admin_token_sha256` variable (compared as hashes:
/// equal length, constant time). A refusal is audited (what was tried).
fn admin_auth(
    service: &Service,
    parts: &http::request::Parts,
    what: &str,
) -> Result<(), http::Response<Bytes>> {
    let Some(expected) = service.settings.admin_hash else {
        return Err(oauth_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the admin routes are off (no admin_token_sha256 variable)",
        ));
    };
    let presented: [u8; 32] = Sha256::digest(bearer(parts).unwrap_or("").as_bytes()).into();
    let differs = presented
        .iter()
        .zip(expected.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if differs != 0 {
        let _ = service.audit(AuditEntry::new("admin", "deny").with(
            "reason",
            Some(format!("{what} refused: the admin credential is not valid")),
        ));
        return Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the admin credential is not valid",
        ));
    }
    Ok(())
}

/// `POST /v1/admin/reissue` `{agent}`: the agent moves to its next
/// generation. Every token of earlier generations is refused from the next
/// call on, and an agent revoked through `/v1/admin/revoke` may exchange
/// again (natively: an update that bumps the generation).
pub fn reissue(
    service: &Service,
    parts: &http::request::Parts,
    req: IncomingRequest,
) -> http::Response<Bytes> {
    if let Err(refused) = admin_auth(service, parts, "reissue") {
        return refused;
    }
    let refuse = |why: String| {
        let _ = service.audit(
            AuditEntry::new("admin", "deny")
                .with("reason", Some(format!("reissue refused: {why}"))),
        );
        oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &why)
    };
    let Ok(body) = wire::read_body(req, MAX_FORM_BYTES) else {
        return refuse("the body is too large".into());
    };
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return refuse("the body is not JSON".into()),
    };
    let Some(obj) = value.as_object() else {
        return refuse("the body is not a JSON object".into());
    };
    if let Some(k) = obj.keys().find(|k| k.as_str() != "agent") {
        return refuse(format!(
            "unknown field {:?}",
            k.chars().take(64).collect::<String>()
        ));
    }
    let Some(name) = obj.get("agent").and_then(|v| v.as_str()) else {
        return refuse("agent is required, a string".into());
    };
    let Some(agent) = service.settings.config.agent(name) else {
        return refuse(format!("agent {name} does not exist"));
    };
    let Ok(generation) = service.store.reissue(&agent.name) else {
        return oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the new generation could not be stored",
        );
    };
    let entry = AuditEntry::new("admin", "allow")
        .with("agent", Some(agent.name.as_str()))
        .with(
            "reason",
            Some(format!(
                "re-issued agent {} at generation {generation}",
                agent.name
            )),
        );
    if service.audit(entry).is_err() {
        return oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the audit log is unavailable (the new generation is stored)",
        );
    }
    json(
        StatusCode::OK,
        &serde_json::json!({ "agent": agent.name, "generation": generation }),
    )
}

/// The admin revoke body, as the native admin API reads it: an object,
/// known fields only, exactly one target.
fn parse_revoke(
    body: &[u8],
    config: &edgeward_core::config::Config,
) -> Result<(RevocationKind, String), String> {
    let (agents, devices) = (&config.agents, &config.devices);
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "the body is not JSON".to_owned())?;
    let obj = value
        .as_object()
        .ok_or_else(|| "the body is not a JSON object".to_owned())?;
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "token" | "instance" | "agent" | "device" | "all" | "reason"
        ) {
            return Err(format!(
                "unknown field {:?}",
                key.chars().take(64).collect::<String>()
            ));
        }
    }
    let text = |name: &'static str| -> Result<Option<String>, String> {
        match obj.get(name) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{name} must be a string")),
        }
    };
    let reason = text("reason")?.unwrap_or_else(|| "no reason given".into());
    if reason.len() > 1024 || reason.chars().any(char::is_control) {
        return Err("reason must be at most 1024 characters, with no control characters".into());
    }
    let all = match obj.get("all") {
        None => false,
        Some(serde_json::Value::Bool(true)) => true,
        Some(_) => return Err("all must be true (revoke everything) or left out".into()),
    };
    let given: Vec<&str> = ["token", "instance", "agent", "device"]
        .into_iter()
        .filter(|k| obj.contains_key(*k))
        .chain(all.then_some("all"))
        .collect();
    if given.len() != 1 {
        let got = if given.is_empty() {
            "none was".to_owned()
        } else {
            format!("{} were", given.join(" and "))
        };
        return Err(format!(
            "give exactly one of token, instance, agent, device or all; {got} given"
        ));
    }
    let kind = if let Some(jti) = text("token")? {
        check_id(&jti, "token")?;
        RevocationKind::Token { jti }
    } else if let Some(id) = text("instance")? {
        check_id(&id, "instance")?;
        RevocationKind::Instance { id }
    } else if let Some(name) = text("agent")? {
        // Every generation up to the current one: the agent stays revoked
        // until `POST /v1/admin/reissue` moves it to a higher generation.
        let current = agents
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| format!("agent {name} does not exist"))?;
        RevocationKind::Agent {
            name,
            before_generation: Some(current.generation.saturating_add(1)),
        }
    } else if let Some(id) = text("device")? {
        if !devices.iter().any(|d| d.id == id) {
            return Err(format!("device {id} does not exist"));
        }
        RevocationKind::Device { id }
    } else {
        RevocationKind::All { at: 0 }
    };
    Ok((kind, reason))
}
