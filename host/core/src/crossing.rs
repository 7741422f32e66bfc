//! The pure steps of a call crossing the backend, shared by every backend
//! (the native one and the Spin component): scanning what a guest sends,
//! cleaning what an upstream answers, and naming an instance.
//!
//! Nothing here logs: each function returns what it found (rule names,
//! never matched bytes) and the caller decides how to log it.

use crate::config::OutboundSecrets;
use crate::problem::Refusal;
use crate::redact::Redactor;
use crate::scan::{Action, Finding, Scanner};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest as _, Sha256};

/// What scanning a guest's outbound request found, for the caller's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundScan {
    /// Nothing secret-like, or only audit-only findings.
    Clean {
        /// Rule names of audit-only findings (empty when none).
        audit_only: String,
    },
    /// Secret-like data is forwarded as is (the grant says audit).
    Audited {
        /// Rule names.
        rules: String,
    },
    /// Secret-like data was replaced by markers.
    Redacted {
        /// Rule names.
        rules: String,
    },
}

/// Scan what a guest sends (body, query, header values) for secrets in
/// known formats. Per grant, a finding blocks the request (default), is
/// redacted, or is only audited. A block is a refusal that does not say
/// which rule matched; the rules are in the error's second member for the
/// caller's log.
pub fn scan_outbound(
    scanner: &Scanner,
    policy: OutboundSecrets,
    parts: &mut http::request::Parts,
    body: Bytes,
) -> Result<(Bytes, OutboundScan), (Refusal, String)> {
    let query = parts.uri.query().unwrap_or("").as_bytes().to_vec();
    let mut findings = scanner.scan(&body);
    findings.extend(scanner.scan(&query));
    for (_, v) in parts.headers.iter() {
        findings.extend(scanner.scan(v.as_bytes()));
    }
    if findings.iter().all(|f| f.action == Action::AuditOnly) {
        return Ok((
            body,
            OutboundScan::Clean {
                audit_only: rules_of(&findings),
            },
        ));
    }
    let rules = rules_of(&findings);
    match policy {
        OutboundSecrets::Audit => Ok((body, OutboundScan::Audited { rules })),
        OutboundSecrets::Block => Err((
            // The guest learns that, not which rule.
            Refusal::denied(
                "the request carries data that looks like a secret; secret scanning blocked it",
            ),
            rules,
        )),
        OutboundSecrets::Redact => {
            if !query.is_empty() {
                let q = String::from_utf8_lossy(&scanner.apply(&query).bytes).into_owned();
                // The marker is not valid in a query; a plain word is.
                let q = q.replace(crate::redact::REDACTION_MARKER, "REDACTED");
                let mut uri = parts.uri.clone().into_parts();
                uri.path_and_query = format!("{}?{q}", parts.uri.path()).parse().ok();
                if let Ok(u) = http::Uri::from_parts(uri) {
                    parts.uri = u;
                }
            }
            let values: Vec<(HeaderName, HeaderValue)> = parts
                .headers
                .iter()
                .filter_map(|(k, v)| {
                    let s = scanner.apply(v.as_bytes());
                    (!s.findings.is_empty())
                        .then(|| {
                            HeaderValue::from_bytes(&s.bytes)
                                .ok()
                                .map(|v| (k.clone(), v))
                        })
                        .flatten()
                })
                .collect();
            for (k, v) in values {
                parts.headers.insert(k, v);
            }
            Ok((
                Bytes::from(scanner.apply(&body).bytes.into_owned()),
                OutboundScan::Redacted { rules },
            ))
        }
    }
}

/// Redact credentials from an upstream response's headers. A header *named*
/// after a credential cannot be redacted in place: it is dropped.
/// `name_redactor` holds the credentials lower-cased (HTTP lower-cases
/// header names).
pub fn redact_response_headers(
    scanner: &Scanner,
    redactor: &Redactor,
    name_redactor: &Redactor,
    headers: &mut HeaderMap,
) {
    let named: Vec<HeaderName> = headers
        .keys()
        .filter(|k| name_redactor.contains_secret(k.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in named {
        headers.remove(&name);
    }
    let tainted: Vec<HeaderName> = headers
        .iter()
        .filter(|(_, v)| {
            scanner
                .scan(v.as_bytes())
                .iter()
                .any(|f| f.action != Action::AuditOnly)
        })
        .map(|(k, _)| k.clone())
        .collect();
    for name in tainted {
        // Rebuild every value of the header; the marker is valid header
        // text, so a redacted value is always a valid value.
        let values: Vec<HeaderValue> = headers
            .get_all(&name)
            .iter()
            .filter_map(|v| HeaderValue::from_bytes(&redactor.redact(v.as_bytes()).bytes).ok())
            .collect();
        headers.remove(&name);
        for v in values {
            headers.append(name.clone(), v);
        }
    }
}

/// Rule names of findings, for logs and the audit log (never the bytes).
pub fn rules_of(findings: &[Finding]) -> String {
    let mut names: Vec<&str> = findings.iter().map(|f| f.rule.name()).collect();
    names.dedup();
    names.join(",")
}

/// The refusal for an upstream answer over the agent's response limit.
pub fn response_too_large(limit: usize) -> Refusal {
    Refusal::limit(format!(
        "the upstream response is over this agent's limit of {limit} bytes"
    ))
    .with_status(http::StatusCode::BAD_GATEWAY)
}

/// Instance ids are derived, not stored: the same device, agent and instance
/// key always give the same id, so renewal keeps the identity.
pub fn instance_id(device: &str, agent: &str, jkt: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"edgeward-instance-v1\0");
    h.update(device.as_bytes());
    h.update([0]);
    h.update(agent.as_bytes());
    h.update([0]);
    h.update(jkt.as_bytes());
    // Not the user: an instance is its key. The runtime makes one instance
    // (one key) per user; a key reused for two users stays one instance,
    // so revoking it stops the key whoever it acts for.
    hex::encode(&h.finalize()[..10])
}

/// The last path segment after `marker` in a SPIFFE id (`/instance/`,
/// `/device/`).
pub fn spiffe_segment<'a>(id: &'a str, marker: &str) -> Option<&'a str> {
    id.rsplit_once(marker)
        .map(|(_, rest)| rest)
        .filter(|s| !s.contains('/'))
}
