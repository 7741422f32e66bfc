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

/// Header carrying the guest request's absolute URL on the egress route.
pub const TARGET_HEADER: &str = "edgeward-target";
/// Header carrying the guest request's method on the egress route.
pub const METHOD_HEADER: &str = "edgeward-method";

/// The egress route's envelope (split mode): the token and its proof, the
/// grant, and the guest request's method and URL, taken out of the route's
/// headers (what is left are the guest's own headers). Its `Debug` never
/// shows the token or the proof.
pub struct Envelope {
    /// The presented token (`authorization: DPoP <token>`).
    pub token: String,
    /// The DPoP proof.
    pub proof: String,
    /// The grant the guest chose.
    pub grant: crate::grant::GrantName,
    /// The guest request's method.
    pub method: http::Method,
    /// The guest request's absolute URL.
    pub target: http::Uri,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("token", &"[REDACTED]")
            .field("grant", &self.grant)
            .field("method", &self.method)
            .field("target", &"[URL]")
            .finish_non_exhaustive()
    }
}

impl Envelope {
    /// Take the envelope out of `headers`. DPoP-bound tokens are presented
    /// as `DPoP <token>` with a `DPoP` proof header (RFC 9449 §7); a
    /// bearer presentation is refused.
    pub fn take(headers: &mut HeaderMap) -> Result<Envelope, Refusal> {
        let unauthorized =
            |why: &str| Refusal::denied(why.to_owned()).with_status(http::StatusCode::UNAUTHORIZED);
        let token = headers
            .remove(http::header::AUTHORIZATION)
            .and_then(|v| {
                v.to_str()
                    .ok()
                    .and_then(|s| s.strip_prefix("DPoP ").map(str::to_owned))
            })
            .ok_or_else(|| unauthorized("the egress route needs a DPoP-bound access token"))?;
        let proof = headers
            .remove("dpop")
            .and_then(|v| v.to_str().ok().map(str::to_owned))
            .ok_or_else(|| unauthorized("the egress route needs a DPoP proof"))?;
        let target: http::Uri = headers
            .remove(TARGET_HEADER)
            .and_then(|v| v.to_str().ok().and_then(|s| s.parse().ok()))
            .ok_or_else(|| {
                Refusal::invalid("the egress route needs an absolute edgeward-target URL")
            })?;
        let grant = headers
            .remove(crate::problem::GRANT_HEADER)
            .and_then(|v| {
                v.to_str()
                    .ok()
                    .and_then(|s| crate::grant::GrantName::new(s).ok())
            })
            .ok_or_else(|| Refusal::invalid("the egress route needs an edgeward-grant header"))?;
        let method = headers
            .remove(METHOD_HEADER)
            .and_then(|v| http::Method::from_bytes(v.as_bytes()).ok())
            .ok_or_else(|| {
                Refusal::invalid("the egress route needs a valid edgeward-method header")
            })?;
        Ok(Envelope {
            token,
            proof,
            grant,
            method,
            target,
        })
    }
}

/// The refusal for a request body over the agent's limit.
pub fn request_too_large(limit: usize) -> Refusal {
    Refusal::limit(format!(
        "the request body is over this agent's limit of {limit} bytes"
    ))
    .with_status(http::StatusCode::PAYLOAD_TOO_LARGE)
}

/// A call's checks before its grant's rules: the presented token's rights
/// (narrowed by its caveats if it was delegated) cover the grant, method
/// and path, and the registry says the agent still holds the grant.
pub fn check_rights(
    rights: &crate::caveat::Rights,
    agent: &str,
    agent_grants: &[crate::grant::GrantName],
    grant: &crate::grant::GrantName,
    method: &http::Method,
    path: &str,
    now: u64,
) -> Result<(), Refusal> {
    if let Err(outside) = rights.allows(grant, method.as_str(), path, now) {
        return Err(match outside {
            crate::caveat::Outside::Grant(_) => {
                Refusal::denied(format!("the access token does not cover grant {grant}"))
            }
            other => Refusal::denied(format!("outside the delegated rights: {other}")),
        });
    }
    if !agent_grants.contains(grant) {
        return Err(Refusal::denied(format!(
            "agent {agent} does not hold grant {grant}"
        )));
    }
    Ok(())
}

/// The credential a call carries: the grant's own, or on a per-user grant
/// the credential of the user the call is made for, and a refusal if the
/// call is for nobody or for a user the grant holds none for (never the
/// grant's own credential, never another user's).
pub fn select_secret<'a>(
    grant: &crate::grant::GrantName,
    secret: &'a crate::secret::Secret,
    user_secrets: &'a std::collections::HashMap<String, crate::secret::Secret>,
    user: Option<&str>,
) -> Result<&'a crate::secret::Secret, Refusal> {
    match (user, user_secrets.is_empty()) {
        (_, true) => Ok(secret),
        (None, false) => Err(Refusal::denied(format!(
            "grant {grant} is per-user: calls must be made on a user's behalf"
        ))),
        (Some(u), false) => user_secrets
            .get(u)
            .ok_or_else(|| Refusal::denied(format!("grant {grant} holds no credential for {u}"))),
    }
}

/// An upstream answer that cannot go back to the guest: the refusal, and
/// for the caller's log only, what the upstream sent (a coding name).
#[derive(Debug)]
pub struct Unreturnable {
    /// What the guest gets.
    pub refusal: Refusal,
    /// For the log, never the guest.
    pub log: Option<String>,
}

/// Turn an upstream answer into what the guest may see: the body decoded
/// (gzip, deflate; anything else is refused) within `max_response`, framing,
/// cookie and refusal-marker headers dropped, credentials redacted from
/// headers and body in their common encodings, known secret formats
/// replaced, and `Content-Length` matching the new body. A fresh response:
/// only the status and the cleaned headers (no reason phrase, no
/// extensions). Also returns the rule names of what the body scan found.
pub fn finish_response(
    mut parts: http::response::Parts,
    raw: &[u8],
    max_response: usize,
    scanner: &Scanner,
    redactor: &Redactor,
    name_redactor: &Redactor,
) -> Result<(http::Response<Bytes>, String), Unreturnable> {
    let decoded = crate::codec::decode_body(
        parts.headers.get_all(http::header::CONTENT_ENCODING).iter(),
        raw,
        max_response,
    )
    .map_err(|e| match e {
        crate::codec::DecodeError::TooLarge { .. } => Unreturnable {
            refusal: response_too_large(max_response),
            log: None,
        },
        other => Unreturnable {
            refusal: Refusal::upstream(
                "the upstream answered in a content coding edgeward cannot decode and scan",
            ),
            log: Some(format!("undecodable upstream body: {other}")),
        },
    })?;
    crate::headers::sanitize_response(&mut parts.headers);
    redact_response_headers(scanner, redactor, name_redactor, &mut parts.headers);
    let scanned = scanner.apply(&decoded);
    let findings = rules_of(&scanned.findings);
    let body = Bytes::from(scanned.bytes.into_owned());
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut response = http::Response::new(body);
    *response.status_mut() = parts.status;
    *response.headers_mut() = parts.headers;
    Ok((response, findings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::GrantName;
    use crate::problem::ProblemClass;
    use crate::scan::ScannerConfig;
    use crate::secret::Secret;
    use std::collections::HashMap;

    const KEY: &str = "crossing-test-credential-0123456789";

    fn scanner() -> (Scanner, Redactor, Redactor) {
        let redactor = Redactor::new([KEY.as_bytes()]).expect("redactor");
        let lowered = Redactor::new([KEY.to_ascii_lowercase().as_bytes()]).expect("names");
        let scanner = Scanner::new(ScannerConfig::default(), redactor.clone()).expect("scanner");
        (scanner, redactor, lowered)
    }

    #[test]
    fn the_envelope_comes_out_of_the_headers_or_says_what_is_missing() {
        let full = || {
            let mut h = HeaderMap::new();
            h.insert("authorization", HeaderValue::from_static("DPoP tok"));
            h.insert("dpop", HeaderValue::from_static("proof"));
            h.insert(
                TARGET_HEADER,
                HeaderValue::from_static("https://api.test/v1/x"),
            );
            h.insert(
                crate::problem::GRANT_HEADER,
                HeaderValue::from_static("api"),
            );
            h.insert(METHOD_HEADER, HeaderValue::from_static("GET"));
            h.insert("accept", HeaderValue::from_static("text/plain"));
            h
        };
        let mut h = full();
        let e = Envelope::take(&mut h).expect("envelope");
        assert_eq!((e.token.as_str(), e.proof.as_str()), ("tok", "proof"));
        assert_eq!((e.grant.as_str(), e.method.as_str()), ("api", "GET"));
        assert_eq!(e.target.to_string(), "https://api.test/v1/x");
        assert_eq!(h.len(), 1, "only the guest's own header is left");
        let cases: [(&str, Option<&str>, u16, &str); 5] = [
            ("authorization", Some("Bearer tok"), 401, "DPoP-bound"),
            ("dpop", None, 401, "DPoP proof"),
            (TARGET_HEADER, Some("not a url"), 400, "edgeward-target"),
            (
                crate::problem::GRANT_HEADER,
                Some("Bad Grant"),
                400,
                "edgeward-grant",
            ),
            (METHOD_HEADER, None, 400, "edgeward-method"),
        ];
        for (name, value, status, says) in cases {
            let mut h = full();
            match value {
                Some(v) => {
                    h.insert(name, HeaderValue::from_str(v).expect("value"));
                }
                None => {
                    h.remove(name);
                }
            }
            let r = Envelope::take(&mut h).expect_err(name);
            assert_eq!(r.status.as_u16(), status, "{name}");
            assert!(r.detail.contains(says), "{name}: {}", r.detail);
        }
    }

    #[test]
    fn per_user_grants_carry_only_the_users_own_credential() {
        let grant = GrantName::new("api").expect("grant");
        let shared = Secret::new(b"shared-credential-0123456789".to_vec());
        let none = HashMap::new();
        assert!(select_secret(&grant, &shared, &none, None).is_ok());
        assert!(select_secret(&grant, &shared, &none, Some("user:corp/a")).is_ok());
        let users = HashMap::from([(
            "user:corp/a".to_owned(),
            Secret::new(b"alice-credential-0123456789".to_vec()),
        )]);
        let alice = select_secret(&grant, &shared, &users, Some("user:corp/a")).expect("alice");
        assert_eq!(alice.expose(), b"alice-credential-0123456789");
        let r = select_secret(&grant, &shared, &users, Some("user:corp/b")).expect_err("bob");
        assert_eq!(r.class, ProblemClass::Denied);
        let r = select_secret(&grant, &shared, &users, None).expect_err("nobody");
        assert!(r.detail.contains("per-user"));
    }

    #[test]
    fn responses_are_decoded_cleaned_and_redacted() {
        let (scanner, redactor, names) = scanner();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, format!("echo {KEY}").as_bytes()).expect("gzip");
        let raw = gz.finish().expect("gzip");
        let response = http::Response::builder()
            .status(201)
            .header("content-encoding", "gzip")
            .header("set-cookie", "s=1")
            .header("x-echo", KEY)
            .header(KEY.to_ascii_lowercase(), "named after it")
            .header(crate::problem::REFUSAL_HEADER, "denied")
            .body(())
            .expect("response");
        let (parts, ()) = response.into_parts();
        let (out, findings) =
            finish_response(parts, &raw, 1024, &scanner, &redactor, &names).expect("finished");
        assert_eq!(out.status().as_u16(), 201);
        let seen = format!("{:?} {:?}", out.headers(), out.body());
        assert!(
            !seen.contains(KEY)
                && !seen
                    .to_ascii_lowercase()
                    .contains(&KEY.to_ascii_lowercase())
        );
        for gone in [
            "set-cookie",
            "content-encoding",
            crate::problem::REFUSAL_HEADER,
        ] {
            assert!(!out.headers().contains_key(gone), "{gone}");
        }
        assert_eq!(
            out.headers()["content-length"],
            out.body().len().to_string().as_str()
        );
        assert_eq!(findings, "live-credential");
        let (parts, ()) = http::Response::builder()
            .header("content-encoding", "br")
            .body(())
            .expect("response")
            .into_parts();
        let u = finish_response(parts, b"x", 1024, &scanner, &redactor, &names).expect_err("br");
        assert_eq!(u.refusal.class, ProblemClass::UpstreamFailed);
        assert!(u.log.is_some_and(|l| l.contains("undecodable")));
        let (parts, ()) = http::Response::new(()).into_parts();
        let u = finish_response(parts, &[b'x'; 2048], 1024, &scanner, &redactor, &names)
            .expect_err("large");
        assert_eq!(u.refusal.class, ProblemClass::LimitExceeded);
    }

    #[test]
    fn instance_ids_are_derived_and_spiffe_segments_are_last() {
        let a = instance_id("dev", "bot", "jkt");
        assert_eq!(a.len(), 20);
        assert_eq!(a, instance_id("dev", "bot", "jkt"));
        assert_ne!(a, instance_id("dev", "bot", "jkt2"));
        assert_eq!(
            spiffe_segment("spiffe://td/agent/a/instance/i1", "/instance/"),
            Some("i1")
        );
        assert_eq!(spiffe_segment("spiffe://td/device/d/x", "/device/"), None);
    }
}
