//! Refusals, and how they look to a guest: RFC 9457 problem documents.
//!
//! Every reason edgeward refuses a guest request maps to exactly one
//! [`ProblemClass`]. The guest sees the class (as a `type` URN), an HTTP status
//! and a short detail written by edgeward itself — never upstream bytes and
//! never secret material. The full internal reason goes to the host log (and
//! the audit log, once it exists).

use std::fmt;

/// Response header that marks a response as edgeward's own refusal. Its value
/// is the problem class. The backend strips it from every upstream response, so
/// an upstream cannot forge a refusal.
pub const REFUSAL_HEADER: &str = "edgeward-refusal";

/// Request header a guest may set to choose between several grants on one
/// origin. Always stripped before the request leaves the runtime.
pub const GRANT_HEADER: &str = "edgeward-grant";

/// Content type of a problem document (RFC 9457).
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Prefix of every problem `type` URN.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:edgeward:problem:";

/// The classes of refusal a guest can observe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemClass {
    /// No grant, or the grant does not allow this method or path, or policy says no.
    Denied,
    /// The token, instance, agent or device was revoked.
    Revoked,
    /// The token expired.
    Expired,
    /// A person must approve this exact action first.
    NeedsApproval,
    /// A size, rate or budget limit was hit.
    LimitExceeded,
    /// The request itself is malformed or tries something never allowed
    /// (e.g. setting its own credential headers).
    InvalidRequest,
    /// The upstream could not be reached, timed out, or answered with
    /// something edgeward refuses to pass on unscanned.
    UpstreamFailed,
}

impl ProblemClass {
    /// Every class, in documentation order.
    pub const ALL: [ProblemClass; 7] = [
        ProblemClass::Denied,
        ProblemClass::Revoked,
        ProblemClass::Expired,
        ProblemClass::NeedsApproval,
        ProblemClass::LimitExceeded,
        ProblemClass::InvalidRequest,
        ProblemClass::UpstreamFailed,
    ];

    /// The short name used in the `type` URN and the refusal header.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemClass::Denied => "denied",
            ProblemClass::Revoked => "revoked",
            ProblemClass::Expired => "expired",
            ProblemClass::NeedsApproval => "needs-approval",
            ProblemClass::LimitExceeded => "limit-exceeded",
            ProblemClass::InvalidRequest => "invalid-request",
            ProblemClass::UpstreamFailed => "upstream-failed",
        }
    }

    /// Parse a short name back into a class.
    pub fn from_name(name: &str) -> Option<ProblemClass> {
        ProblemClass::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// A human title for the problem document.
    pub fn title(self) -> &'static str {
        match self {
            ProblemClass::Denied => "Request denied",
            ProblemClass::Revoked => "Credential revoked",
            ProblemClass::Expired => "Token expired",
            ProblemClass::NeedsApproval => "Approval required",
            ProblemClass::LimitExceeded => "Limit exceeded",
            ProblemClass::InvalidRequest => "Invalid request",
            ProblemClass::UpstreamFailed => "Upstream failed",
        }
    }

    /// The default HTTP status for the class.
    pub fn default_status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            ProblemClass::Denied => S::FORBIDDEN,
            ProblemClass::Revoked | ProblemClass::Expired => S::UNAUTHORIZED,
            ProblemClass::NeedsApproval => S::FORBIDDEN,
            ProblemClass::LimitExceeded => S::TOO_MANY_REQUESTS,
            ProblemClass::InvalidRequest => S::BAD_REQUEST,
            ProblemClass::UpstreamFailed => S::BAD_GATEWAY,
        }
    }

    /// The full `type` URN.
    pub fn type_urn(self) -> String {
        format!("{PROBLEM_TYPE_PREFIX}{}", self.as_str())
    }
}

impl fmt::Display for ProblemClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal of one guest request: the class, the status, and a detail that is
/// safe to show the guest.
///
/// `detail` must only ever be built from edgeward's own words and from values
/// the guest itself sent (a method, a header name, a path): never from
/// upstream bytes, configuration secrets, or error messages of libraries that
/// might embed a URL with a credential in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The class the guest can branch on.
    pub class: ProblemClass,
    /// HTTP status of the problem response.
    pub status: http::StatusCode,
    /// Safe, specific explanation.
    pub detail: String,
    /// The policy rule that decided, when policy refused (an RFC 9457
    /// extension member `rule`).
    pub rule: Option<String>,
    /// For [`ProblemClass::NeedsApproval`]: the approval ticket (extension
    /// member `ticket`).
    pub ticket: Option<String>,
}

impl Refusal {
    /// A refusal with the class's default status.
    pub fn new(class: ProblemClass, detail: impl Into<String>) -> Refusal {
        Refusal {
            class,
            status: class.default_status(),
            detail: detail.into(),
            rule: None,
            ticket: None,
        }
    }

    /// The same refusal, naming the policy rule that decided.
    pub fn with_rule(mut self, rule: impl Into<String>) -> Refusal {
        self.rule = Some(rule.into());
        self
    }

    /// The same refusal, naming the approval ticket to wait for.
    pub fn with_ticket(mut self, ticket: impl Into<String>) -> Refusal {
        self.ticket = Some(ticket.into());
        self
    }

    /// The same refusal with another status (e.g. 413 or 504).
    pub fn with_status(mut self, status: http::StatusCode) -> Refusal {
        self.status = status;
        self
    }

    /// Shorthand for [`ProblemClass::Denied`].
    pub fn denied(detail: impl Into<String>) -> Refusal {
        Refusal::new(ProblemClass::Denied, detail)
    }

    /// Shorthand for [`ProblemClass::InvalidRequest`].
    pub fn invalid(detail: impl Into<String>) -> Refusal {
        Refusal::new(ProblemClass::InvalidRequest, detail)
    }

    /// Shorthand for [`ProblemClass::LimitExceeded`].
    pub fn limit(detail: impl Into<String>) -> Refusal {
        Refusal::new(ProblemClass::LimitExceeded, detail)
    }

    /// Shorthand for [`ProblemClass::UpstreamFailed`].
    pub fn upstream(detail: impl Into<String>) -> Refusal {
        Refusal::new(ProblemClass::UpstreamFailed, detail)
    }

    /// The RFC 9457 JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        let mut doc = serde_json::json!({
            "type": self.class.type_urn(),
            "title": self.class.title(),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(rule) = &self.rule {
            doc["rule"] = serde_json::json!(rule);
        }
        if let Some(ticket) = &self.ticket {
            doc["ticket"] = serde_json::json!(ticket);
        }
        // Serialising a `Value` built from strings and numbers cannot fail.
        serde_json::to_vec(&doc).unwrap_or_default()
    }

    /// The complete HTTP response a guest receives for this refusal.
    pub fn to_response(&self) -> http::Response<bytes::Bytes> {
        let body = bytes::Bytes::from(self.to_json());
        let mut response = http::Response::new(body.clone());
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        headers.insert(
            REFUSAL_HEADER,
            http::HeaderValue::from_static(self.class.as_str()),
        );
        headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(body.len()),
        );
        response
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.class,
            self.status.as_u16(),
            self.detail
        )
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_round_trips_by_name() {
        for class in ProblemClass::ALL {
            assert_eq!(ProblemClass::from_name(class.as_str()), Some(class));
        }
        assert_eq!(ProblemClass::from_name("nope"), None);
    }

    #[test]
    fn problem_response_is_rfc9457_and_marked() {
        let r = Refusal::limit("request body over 10 bytes")
            .with_status(http::StatusCode::PAYLOAD_TOO_LARGE);
        let resp = r.to_response();
        assert_eq!(resp.status(), 413);
        assert_eq!(resp.headers()[REFUSAL_HEADER], "limit-exceeded");
        assert_eq!(resp.headers()["content-type"], PROBLEM_CONTENT_TYPE);
        let doc: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(doc["type"], "urn:edgeward:problem:limit-exceeded");
        assert_eq!(doc["status"], 413);
        assert_eq!(doc["detail"], "request body over 10 bytes");
        assert_eq!(
            resp.headers()["content-length"],
            resp.body().len().to_string().as_str()
        );
    }
}
