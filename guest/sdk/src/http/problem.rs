//! edgeward's refusals: RFC 9457 problem documents, typed.

use std::fmt;

/// Response header that marks a response as edgeward's own refusal; its value
/// is the [`ProblemClass`]. edgeward strips it from every upstream response,
/// so an upstream cannot forge a refusal.
pub const REFUSAL_HEADER: &str = "edgeward-refusal";

/// Prefix of the `type` URN of every edgeward problem document.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:edgeward:problem:";

/// Why edgeward refused a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemClass {
    /// No grant matches, the grant does not allow this method or path, or
    /// policy says no. Retrying will not help.
    Denied,
    /// The token, instance, agent or device was revoked.
    Revoked,
    /// The token expired.
    Expired,
    /// A person must approve this exact request first; see
    /// [`Problem::ticket`].
    NeedsApproval,
    /// A size, rate or budget limit was hit.
    LimitExceeded,
    /// The request is malformed or tries something never allowed (such as
    /// setting its own credential headers).
    InvalidRequest,
    /// The upstream could not be reached, timed out, or answered with
    /// something edgeward would not pass on.
    UpstreamFailed,
    /// A class this version of the SDK does not know yet (the host is newer).
    Unknown(String),
}

impl ProblemClass {
    /// The short name used in the `type` URN and the [`REFUSAL_HEADER`], e.g.
    /// `needs-approval`.
    pub fn as_str(&self) -> &str {
        match self {
            ProblemClass::Denied => "denied",
            ProblemClass::Revoked => "revoked",
            ProblemClass::Expired => "expired",
            ProblemClass::NeedsApproval => "needs-approval",
            ProblemClass::LimitExceeded => "limit-exceeded",
            ProblemClass::InvalidRequest => "invalid-request",
            ProblemClass::UpstreamFailed => "upstream-failed",
            ProblemClass::Unknown(name) => name,
        }
    }

    /// The class for a short name; names this SDK does not know become
    /// [`ProblemClass::Unknown`].
    pub fn from_name(name: &str) -> ProblemClass {
        match name {
            "denied" => ProblemClass::Denied,
            "revoked" => ProblemClass::Revoked,
            "expired" => ProblemClass::Expired,
            "needs-approval" => ProblemClass::NeedsApproval,
            "limit-exceeded" => ProblemClass::LimitExceeded,
            "invalid-request" => ProblemClass::InvalidRequest,
            "upstream-failed" => ProblemClass::UpstreamFailed,
            other => ProblemClass::Unknown(other.to_owned()),
        }
    }

    /// A human title, used when a problem document has none.
    fn default_title(&self) -> &'static str {
        match self {
            ProblemClass::Denied => "Request denied",
            ProblemClass::Revoked => "Credential revoked",
            ProblemClass::Expired => "Token expired",
            ProblemClass::NeedsApproval => "Approval required",
            ProblemClass::LimitExceeded => "Limit exceeded",
            ProblemClass::InvalidRequest => "Invalid request",
            ProblemClass::UpstreamFailed => "Upstream failed",
            ProblemClass::Unknown(_) => "Request refused",
        }
    }
}

impl fmt::Display for ProblemClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal by edgeward, parsed from its problem response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// Why the request was refused; branch on this.
    pub class: ProblemClass,
    /// The HTTP status of the refusal (e.g. 403, 401, 429).
    pub status: u16,
    /// A short human summary of the class.
    pub title: String,
    /// A specific explanation written by edgeward, if it gave one.
    pub detail: Option<String>,
    /// For [`ProblemClass::NeedsApproval`]: the approval ticket to show the
    /// person who must approve the request (and to wait for with
    /// `edgeward_sdk::approval`).
    pub ticket: Option<String>,
    /// The policy rule that decided, when policy refused the request.
    pub rule: Option<String>,
}

impl Problem {
    /// Interpret a refusal response.
    ///
    /// `refusal` is the value of the [`REFUSAL_HEADER`] response header; only
    /// call this when that header is present (without it the response is the
    /// upstream's own). The header decides the class; the JSON body, when it
    /// parses, supplies title, status, detail and ticket. A body that is not
    /// a problem document still yields a usable `Problem`.
    ///
    /// This is public for agents that use another `wasi:http` client than
    /// [`crate::http::Request`].
    pub fn parse(refusal: &str, status: u16, body: &[u8]) -> Problem {
        let doc = serde_json::from_slice::<serde_json::Value>(body).ok();
        let field = |name: &str| -> Option<String> {
            match doc.as_ref()?.get(name)? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let refusal = refusal.trim();
        let class = if refusal.is_empty() {
            field("type")
                .and_then(|t| t.strip_prefix(PROBLEM_TYPE_PREFIX).map(str::to_owned))
                .map(|name| ProblemClass::from_name(&name))
                .unwrap_or_else(|| ProblemClass::Unknown(String::new()))
        } else {
            ProblemClass::from_name(refusal)
        };
        let status = doc
            .as_ref()
            .and_then(|d| d.get("status"))
            .and_then(serde_json::Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(status);
        Problem {
            title: field("title").unwrap_or_else(|| class.default_title().to_owned()),
            detail: field("detail"),
            ticket: field("ticket"),
            rule: field("rule"),
            class,
            status,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): ", self.class, self.status)?;
        match &self.detail {
            Some(detail) => f.write_str(detail)?,
            None => f.write_str(&self.title)?,
        }
        if let Some(ticket) = &self.ticket {
            write!(f, " [ticket {ticket}]")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_edgeward_problem_document() {
        let body = br#"{"type":"urn:edgeward:problem:limit-exceeded","title":"Limit exceeded",
            "status":413,"detail":"request body over 10 bytes"}"#;
        let p = Problem::parse("limit-exceeded", 413, body);
        assert_eq!(p.class, ProblemClass::LimitExceeded);
        assert_eq!(p.status, 413);
        assert_eq!(p.title, "Limit exceeded");
        assert_eq!(p.detail.as_deref(), Some("request body over 10 bytes"));
        assert_eq!(p.ticket, None);
        assert_eq!(
            p.to_string(),
            "limit-exceeded (413): request body over 10 bytes"
        );
    }

    #[test]
    fn keeps_the_ticket_and_ignores_unknown_fields() {
        let body = br#"{"type":"urn:edgeward:problem:needs-approval","title":"Approval required",
            "status":403,"detail":"a person must approve this","ticket":"t-42","extra":[1,2]}"#;
        let p = Problem::parse("needs-approval", 403, body);
        assert_eq!(p.class, ProblemClass::NeedsApproval);
        assert_eq!(p.ticket.as_deref(), Some("t-42"));
        assert!(p.to_string().ends_with("[ticket t-42]"));
        let numeric = Problem::parse("needs-approval", 403, br#"{"ticket":7}"#);
        assert_eq!(numeric.ticket.as_deref(), Some("7"));
    }

    #[test]
    fn every_known_class_round_trips_and_unknown_ones_survive() {
        for name in [
            "denied",
            "revoked",
            "expired",
            "needs-approval",
            "limit-exceeded",
            "invalid-request",
            "upstream-failed",
        ] {
            let class = ProblemClass::from_name(name);
            assert!(!matches!(class, ProblemClass::Unknown(_)), "{name}");
            assert_eq!(class.as_str(), name);
            assert_eq!(class.to_string(), name);
        }
        let future = ProblemClass::from_name("quota-frozen");
        assert_eq!(future, ProblemClass::Unknown("quota-frozen".into()));
        assert_eq!(future.as_str(), "quota-frozen");
    }

    #[test]
    fn the_header_decides_the_class() {
        let body = br#"{"type":"urn:edgeward:problem:denied","status":403}"#;
        let p = Problem::parse("revoked", 401, body);
        assert_eq!(p.class, ProblemClass::Revoked);
        // An empty header value falls back to the `type` URN.
        assert_eq!(Problem::parse("", 403, body).class, ProblemClass::Denied);
    }

    #[test]
    fn a_body_that_is_not_a_problem_document_still_gives_a_problem() {
        let p = Problem::parse("expired", 401, b"<html>nope</html>");
        assert_eq!(p.class, ProblemClass::Expired);
        assert_eq!(p.status, 401);
        assert_eq!(p.title, "Token expired");
        assert_eq!(p.detail, None);
        assert_eq!(p.to_string(), "expired (401): Token expired");
        // A status outside u16 in the body is ignored.
        let p = Problem::parse("denied", 403, br#"{"status":70000}"#);
        assert_eq!(p.status, 403);
    }
}
