//! Which headers a guest may send and which upstream headers reach the guest.
//!
//! Decision (documented in the README): headers that carry credentials
//! (`Authorization`, `Proxy-*`, `Cookie`, and the grant's own credential
//! header) are **refused**, not silently stripped: a guest that tries to set
//! one is either buggy or hostile, and a silent strip would hide that. The
//! runtime already makes them forbidden at the `wasi:http` fields level (see
//! [`is_forbidden_guest_header`]), so a guest gets `header-error.forbidden`
//! when it tries; the egress check refuses them again (defence in depth).
//! Transport-level (hop-by-hop) headers are **stripped**: they describe one
//! connection, and the backend manages its own connections.

use crate::problem::{GRANT_HEADER, REFUSAL_HEADER, Refusal};
use http::{HeaderMap, HeaderName, header};

/// Hop-by-hop headers (RFC 9110 §7.6.1) and their common non-standard kin.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Headers that make some upstreams act on another method, path or host
/// than the one edgeward checked (method overrides, URL rewrites, forwarding
/// headers read by reverse proxies). A request carrying one is refused.
const OVERRIDE_HEADERS: [&str; 15] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-path",
    "x-host",
];

/// Whether a header could redirect what the upstream does past edgeward's
/// method and path checks.
pub fn is_override_header(name: &HeaderName) -> bool {
    OVERRIDE_HEADERS.contains(&name.as_str())
}

/// Whether a header carries credentials that only edgeward may attach.
pub fn is_credential_header(name: &HeaderName) -> bool {
    *name == header::AUTHORIZATION || *name == header::COOKIE || name.as_str().starts_with("proxy-")
}

/// Whether a header is hop-by-hop.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// Headers a guest may not even put into a `wasi:http` fields resource: the
/// credential headers, `Host` (the authority comes from the URL), and the
/// hop-by-hop headers.
pub fn is_forbidden_guest_header(name: &HeaderName) -> bool {
    is_credential_header(name) || *name == header::HOST || is_hop_by_hop(name)
}

/// Sanitise a guest request's headers before the credential is injected.
///
/// Refuses credential headers (including `credential_header`, the grant's own
/// header such as `x-api-key`) and method/URL override and forwarding
/// headers; strips `Range` and `If-Range`, hop-by-hop headers, headers named by
/// `Connection`, `Host`, `Content-Length` (recomputed by the sender),
/// `Accept-Encoding` (edgeward asks only for codings it can decode and scan)
/// and the `edgeward-grant` routing header.
pub fn sanitize_request(
    headers: &mut HeaderMap,
    credential_header: Option<&HeaderName>,
) -> Result<(), Refusal> {
    for name in headers.keys() {
        if is_credential_header(name) || Some(name) == credential_header {
            return Err(Refusal::invalid(format!(
                "the guest may not set the {name} header: credentials are attached by edgeward"
            )));
        }
        if is_override_header(name) {
            return Err(Refusal::invalid(format!(
                "the guest may not set the {name} header: it could change the method, path or host the upstream acts on"
            )));
        }
    }
    strip_connection_headers(headers);
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_ENCODING);
    headers.remove(GRANT_HEADER);
    // A ranged response could carry an echoed credential in pieces that no
    // redaction pattern matches whole.
    headers.remove(header::RANGE);
    headers.remove(header::IF_RANGE);
    Ok(())
}

/// Sanitise an upstream response's headers before they reach the guest.
///
/// Removes the refusal marker (an upstream cannot forge edgeward's refusals),
/// cookies (`Set-Cookie`: a session the guest could replay without edgeward),
/// hop-by-hop headers, and the framing headers `Content-Length` and
/// `Content-Encoding`, which the caller sets again to describe the decoded,
/// redacted body the guest actually gets.
pub fn sanitize_response(headers: &mut HeaderMap) {
    strip_connection_headers(headers);
    headers.remove(REFUSAL_HEADER);
    headers.remove(header::SET_COOKIE);
    headers.remove("set-cookie2");
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::CONTENT_ENCODING);
}

fn strip_connection_headers(headers: &mut HeaderMap) {
    // Headers listed in `Connection` are hop-by-hop for this message too.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::ProblemClass;
    use http::HeaderValue;

    #[test]
    fn credential_headers_are_refused_by_name() {
        for name in [
            "authorization",
            "cookie",
            "proxy-authorization",
            "proxy-foo",
        ] {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            let err = sanitize_request(&mut h, None).unwrap_err();
            assert_eq!(err.class, ProblemClass::InvalidRequest);
            assert!(err.detail.contains(name));
        }
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("guess"));
        let own = HeaderName::from_static("x-api-key");
        assert!(sanitize_request(&mut h, Some(&own)).is_err());
    }

    #[test]
    fn override_headers_are_refused() {
        for name in [
            "x-http-method-override",
            "x-original-url",
            "forwarded",
            "x-forwarded-host",
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static("DELETE"),
            );
            let err = sanitize_request(&mut h, None).unwrap_err();
            assert_eq!(err.class, ProblemClass::InvalidRequest, "{name}");
        }
        let mut h = HeaderMap::new();
        h.insert("range", HeaderValue::from_static("bytes=0-3"));
        sanitize_request(&mut h, None).unwrap();
        assert!(h.is_empty());
    }

    #[test]
    fn hop_by_hop_and_routing_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("edgeward-grant", HeaderValue::from_static("a"));
        h.insert("accept-encoding", HeaderValue::from_static("br"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        sanitize_request(&mut h, None).unwrap();
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn upstream_cannot_forge_refusals_or_set_cookies() {
        let mut h = HeaderMap::new();
        h.insert(REFUSAL_HEADER, HeaderValue::from_static("denied"));
        h.insert("set-cookie", HeaderValue::from_static("sid=1"));
        h.insert("content-encoding", HeaderValue::from_static("gzip"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        sanitize_response(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn forbidden_at_fields_level() {
        for n in [
            "authorization",
            "cookie",
            "host",
            "connection",
            "proxy-authorization",
        ] {
            assert!(
                is_forbidden_guest_header(&HeaderName::from_static(n)),
                "{n}"
            );
        }
        assert!(!is_forbidden_guest_header(&HeaderName::from_static(
            "edgeward-grant"
        )));
        assert!(!is_forbidden_guest_header(&HeaderName::from_static(
            "x-api-key"
        )));
    }
}
