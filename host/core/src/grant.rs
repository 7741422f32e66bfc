//! Grants: which upstream origin an instance may call, with which methods and
//! paths, and how the credential is attached.
//!
//! The runtime uses [`select_grant`] to route a guest request to exactly one
//! grant by origin; the backend re-checks the origin and applies
//! [`GrantRules::check`] and [`inject_credential`]. Both sides call the same
//! functions, so embedded and split mode decide alike.

use crate::problem::Refusal;
use crate::secret::Secret;
use http::{HeaderName, HeaderValue, Method};
use std::fmt;

/// Why a grant-related value from the config was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// A name is empty, too long, or uses characters outside `[a-z0-9_-]`.
    #[error(
        "{what} names must be 1 to 64 characters of a-z, 0-9, '-' or '_' and start with a letter or digit"
    )]
    BadName {
        /// Which kind of name.
        what: &'static str,
    },
    /// An origin is not `scheme://host[:port]`.
    #[error(
        "an origin must look like https://host or https://host:port (no path, query or user info): {reason}"
    )]
    BadOrigin {
        /// What exactly is wrong.
        reason: &'static str,
    },
    /// A plain-http origin that is not on loopback.
    #[error(
        "plain http would send the credential in clear text; use https (http is only accepted for loopback hosts)"
    )]
    PlaintextOrigin,
}

/// A validated grant name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantName(String);

impl GrantName {
    /// Validate a grant name.
    pub fn new(name: &str) -> Result<GrantName, GrantError> {
        validate_name(name, "grant").map(|()| GrantName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GrantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An HTTP method name as edgeward's caveats and policies write it:
/// 1 to 16 upper-case ASCII letters (`GET`, `PATCH`).
pub fn is_method_name(m: &str) -> bool {
    !m.is_empty() && m.len() <= 16 && m.bytes().all(|b| b.is_ascii_uppercase())
}

/// Shared name rule for grants and agents: short, lower-case, URL- and
/// log-safe, so names can be put in SPIFFE ids, paths and log lines unescaped.
pub fn validate_name(name: &str, what: &'static str) -> Result<(), GrantError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(GrantError::BadName { what })
    }
}

/// URL scheme of an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `http`: loopback only.
    Http,
    /// `https`.
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// An origin: scheme, lower-case host and explicit port (RFC 6454).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: Scheme,
    host: String,
    port: u16,
}

impl Origin {
    /// Parse `scheme://host[:port]` (a trailing `/` is tolerated).
    pub fn parse(s: &str) -> Result<Origin, GrantError> {
        let s = s.strip_suffix('/').unwrap_or(s);
        let uri: http::Uri = s.parse().map_err(|_| GrantError::BadOrigin {
            reason: "not a URL",
        })?;
        if uri
            .path_and_query()
            .is_some_and(|pq| pq.as_str() != "/" && !pq.as_str().is_empty())
        {
            return Err(GrantError::BadOrigin {
                reason: "it has a path or query",
            });
        }
        let origin = Origin::of_uri(&uri).ok_or(GrantError::BadOrigin {
            reason: "scheme must be http or https, with a host",
        })?;
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(GrantError::BadOrigin {
                reason: "it has user info",
            });
        }
        if origin.scheme == Scheme::Http && !origin.is_loopback() {
            return Err(GrantError::PlaintextOrigin);
        }
        Ok(origin)
    }

    /// The origin a request URI is addressed to, if it has one edgeward can
    /// serve (http or https, with a host, no user info).
    pub fn of_uri(uri: &http::Uri) -> Option<Origin> {
        let scheme = match uri.scheme_str()? {
            s if s.eq_ignore_ascii_case("https") => Scheme::Https,
            s if s.eq_ignore_ascii_case("http") => Scheme::Http,
            _ => return None,
        };
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let host = authority.host().to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        let port = authority.port_u16().unwrap_or(scheme.default_port());
        Some(Origin { scheme, host, port })
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The lower-case host (IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (explicit or the scheme's default).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the host is a loopback name or address.
    pub fn is_loopback(&self) -> bool {
        let h = self.host.trim_start_matches('[').trim_end_matches(']');
        h == "localhost"
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }
}

/// How the backend attaches a grant's credential to a request.
#[derive(Clone, PartialEq, Eq)]
pub enum CredentialKind {
    /// A header, value = `prefix` + secret (e.g. `authorization: Bearer …`).
    Header {
        /// Header name.
        name: HeaderName,
        /// Text before the secret, often empty or `Bearer `.
        prefix: String,
    },
    /// A query parameter, value = the secret (percent-encoded).
    Query {
        /// Parameter name.
        param: String,
    },
    /// HTTP basic auth: the secret is the password.
    Basic {
        /// User name (not secret).
        username: String,
    },
}

impl fmt::Debug for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialKind::Header { name, .. } => write!(f, "header {name}"),
            CredentialKind::Query { param } => write!(f, "query parameter {param}"),
            CredentialKind::Basic { .. } => f.write_str("basic auth"),
        }
    }
}

/// The non-secret part of a grant: what the guest may call with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRules {
    /// The grant's name.
    pub name: GrantName,
    /// The one origin it covers.
    pub origin: Origin,
    /// Allowed methods.
    pub methods: Vec<Method>,
    /// Allowed path prefixes (segment-aware, see [`path_matches_prefix`]).
    pub path_prefixes: Vec<String>,
}

impl GrantRules {
    /// Check a request's origin, method and path against this grant.
    pub fn check(&self, uri: &http::Uri, method: &Method) -> Result<(), Refusal> {
        let origin = Origin::of_uri(uri)
            .ok_or_else(|| Refusal::invalid("the request URL has no http(s) origin"))?;
        if origin != self.origin {
            return Err(Refusal::denied(format!(
                "grant {} does not cover origin {origin}",
                self.name
            )));
        }
        if !self.methods.contains(method) {
            return Err(Refusal::denied(format!(
                "grant {} does not allow method {method}",
                self.name
            )));
        }
        let path = uri.path();
        check_path_is_canonical(path)?;
        if !self
            .path_prefixes
            .iter()
            .any(|p| path_matches_prefix(path, p))
        {
            return Err(Refusal::denied(format!(
                "grant {} does not allow path {path}",
                self.name
            )));
        }
        Ok(())
    }
}

/// Refuse paths whose meaning could differ between edgeward's prefix check and
/// the upstream's router: dot segments (raw, percent-encoded, or with
/// `;params` as Tomcat and Spring read `..;`), encoded slashes and
/// backslashes, backslashes, double encoding (`%25`), encoded NUL and
/// control bytes, non-ASCII escapes (overlong UTF-8 such as `%c0%ae`), and
/// percent-encoded unreserved characters (which have one canonical,
/// unencoded spelling).
pub fn check_path_is_canonical(path: &str) -> Result<(), Refusal> {
    let refuse = |why: &str| Err(Refusal::invalid(format!("the request path {why}")));
    if path.contains('\\') {
        return refuse("contains a backslash");
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let Some(value) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                return refuse("has a malformed percent escape");
            };
            match value {
                b'/' | b'\\' => return refuse("contains an encoded slash"),
                b'%' => return refuse("is percent-encoded twice"),
                0x00..=0x1f | 0x7f => return refuse("contains an encoded control byte"),
                0x80..=0xff => return refuse("contains a non-ASCII escape"),
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    return refuse("percent-encodes a character that needs no encoding");
                }
                _ => {}
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    for segment in path.split('/') {
        // `..;x` is `..` to Tomcat, Jetty and Spring.
        let name = segment.split(';').next().unwrap_or(segment);
        if name == "." || name == ".." {
            return refuse("contains a dot segment");
        }
    }
    Ok(())
}

/// Segment-aware prefix match: `/v1` matches `/v1` and `/v1/x` but not `/v10`;
/// a prefix ending in `/` matches anything below it.
pub fn path_matches_prefix(path: &str, prefix: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix) || path == prefix.trim_end_matches('/');
    }
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Pick the one grant a guest request uses: by origin, with the
/// `edgeward-grant` header (`requested`) choosing between several grants on
/// the same origin.
pub fn select_grant<'a>(
    grants: &'a [GrantRules],
    origin: &Origin,
    requested: Option<&str>,
) -> Result<&'a GrantRules, Refusal> {
    let mut on_origin = grants.iter().filter(|g| &g.origin == origin);
    match requested {
        Some(name) => {
            if let Some(g) = grants.iter().find(|g| g.name.as_str() == name) {
                if &g.origin == origin {
                    return Ok(g);
                }
                return Err(Refusal::denied(format!(
                    "grant {} does not cover origin {origin}",
                    g.name
                )));
            }
            Err(Refusal::denied(format!(
                "this instance holds no grant named {:?}",
                truncate(name, 64)
            )))
        }
        None => {
            let first = on_origin
                .next()
                .ok_or_else(|| Refusal::denied(format!("no grant covers origin {origin}")))?;
            let rest: Vec<&GrantRules> = on_origin.collect();
            if rest.is_empty() {
                return Ok(first);
            }
            let names: Vec<&str> = std::iter::once(first)
                .chain(rest)
                .map(|g| g.name.as_str())
                .collect();
            Err(Refusal::invalid(format!(
                "several grants cover origin {origin} ({}); choose one with the edgeward-grant header",
                names.join(", ")
            )))
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Attach the credential to a request that already passed
/// [`GrantRules::check`] and header sanitising.
///
/// Refuses a request that already carries the credential's query parameter:
/// the guest must never be able to choose or shadow the credential.
pub fn inject_credential(
    parts: &mut http::request::Parts,
    kind: &CredentialKind,
    secret: &Secret,
) -> Result<(), Refusal> {
    match kind {
        CredentialKind::Header { name, prefix } => {
            let mut value = Vec::with_capacity(prefix.len() + secret.len());
            value.extend_from_slice(prefix.as_bytes());
            value.extend_from_slice(secret.expose());
            let mut value = HeaderValue::from_bytes(&value).map_err(|_| {
                Refusal::upstream("the grant's credential is not a valid header value")
            })?;
            value.set_sensitive(true);
            parts.headers.insert(name.clone(), value);
        }
        CredentialKind::Basic { username } => {
            use base64::Engine as _;
            let mut raw = Vec::with_capacity(username.len() + 1 + secret.len());
            raw.extend_from_slice(username.as_bytes());
            raw.push(b':');
            raw.extend_from_slice(secret.expose());
            let encoded = base64::engine::general_purpose::STANDARD.encode(&raw);
            zeroize::Zeroize::zeroize(&mut raw);
            let mut value = HeaderValue::try_from(format!("Basic {encoded}")).map_err(|_| {
                Refusal::upstream("the grant's credential is not a valid header value")
            })?;
            value.set_sensitive(true);
            parts.headers.insert(http::header::AUTHORIZATION, value);
        }
        CredentialKind::Query { param } => {
            let path = parts.uri.path();
            let query = parts.uri.query();
            if let Some(q) = query {
                // `;` separates parameters for some servers, and some match
                // names case-insensitively: refuse every spelling.
                let shadowed = q.split(['&', ';']).any(|pair| {
                    let key = pair.split('=').next().unwrap_or("").replace('+', " ");
                    percent_encoding::percent_decode_str(&key)
                        .decode_utf8_lossy()
                        .eq_ignore_ascii_case(param)
                });
                if shadowed {
                    return Err(Refusal::invalid(format!(
                        "the guest may not set the query parameter {param}: credentials are attached by edgeward"
                    )));
                }
            }
            const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
                .remove(b'-')
                .remove(b'.')
                .remove(b'_')
                .remove(b'~');
            let encoded_key = percent_encoding::utf8_percent_encode(param, QUERY_VALUE);
            let encoded_value = percent_encoding::percent_encode(secret.expose(), QUERY_VALUE);
            let path_and_query = match query {
                Some(q) if !q.is_empty() => format!("{path}?{q}&{encoded_key}={encoded_value}"),
                _ => format!("{path}?{encoded_key}={encoded_value}"),
            };
            let mut uri_parts = parts.uri.clone().into_parts();
            uri_parts.path_and_query = Some(path_and_query.parse().map_err(|_| {
                Refusal::invalid("the request URL cannot carry a query credential")
            })?);
            parts.uri = http::Uri::from_parts(uri_parts)
                .map_err(|_| Refusal::invalid("the request URL cannot carry a query credential"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(name: &str, origin: &str) -> GrantRules {
        GrantRules {
            name: GrantName::new(name).unwrap(),
            origin: Origin::parse(origin).unwrap(),
            methods: vec![Method::GET],
            path_prefixes: vec!["/v1".into()],
        }
    }

    #[test]
    fn origins_normalise_and_refuse_plaintext_off_loopback() {
        let o = Origin::parse("https://API.example.com").unwrap();
        assert_eq!(o.to_string(), "https://api.example.com:443");
        assert_eq!(o, Origin::parse("https://api.example.com:443/").unwrap());
        assert_eq!(
            Origin::parse("http://api.example.com"),
            Err(GrantError::PlaintextOrigin)
        );
        assert!(Origin::parse("http://127.0.0.1:8080").is_ok());
        assert!(Origin::parse("http://[::1]:8080").is_ok());
        assert!(Origin::parse("https://a.example/x").is_err());
        assert!(Origin::parse("https://user@a.example").is_err());
        assert!(Origin::parse("ftp://a.example").is_err());
    }

    #[test]
    fn prefix_match_is_segment_aware() {
        assert!(path_matches_prefix("/v1", "/v1"));
        assert!(path_matches_prefix("/v1/x", "/v1"));
        assert!(!path_matches_prefix("/v10", "/v1"));
        assert!(path_matches_prefix("/v1/x", "/v1/"));
        assert!(path_matches_prefix("/anything", "/"));
    }

    #[test]
    fn dot_segments_and_encoded_slashes_are_refused() {
        for p in [
            "/v1/../admin",
            "/v1/%2e%2e/admin",
            "/v1/%2E/x",
            "/v1%2fadmin",
            "/v1\\x",
        ] {
            let err = check_path_is_canonical(p).unwrap_err();
            assert_eq!(
                err.class,
                crate::problem::ProblemClass::InvalidRequest,
                "{p}"
            );
        }
        assert!(check_path_is_canonical("/v1/a.b/..c").is_ok());
        assert!(check_path_is_canonical("/v1/a%20b;v=1/%3F").is_ok());
    }

    #[test]
    fn selection_by_origin_and_header() {
        let a = rules("a", "https://one.example");
        let b = rules("b", "https://one.example");
        let c = rules("c", "https://two.example");
        let all = [a.clone(), b.clone(), c.clone()];
        let one = Origin::parse("https://one.example").unwrap();
        let two = Origin::parse("https://two.example").unwrap();
        let three = Origin::parse("https://three.example").unwrap();
        assert_eq!(select_grant(&all, &two, None).unwrap().name.as_str(), "c");
        let ambiguous = select_grant(&all, &one, None).unwrap_err();
        assert!(ambiguous.detail.contains("a, b"), "{ambiguous}");
        assert_eq!(
            select_grant(&all, &one, Some("b")).unwrap().name.as_str(),
            "b"
        );
        assert_eq!(
            select_grant(&all, &one, Some("c")).unwrap_err().class,
            crate::problem::ProblemClass::Denied
        );
        assert!(select_grant(&all, &three, None).is_err());
        assert!(select_grant(&all, &one, Some("zzz")).is_err());
    }

    #[test]
    fn check_method_and_path() {
        let g = rules("a", "https://one.example");
        let ok: http::Uri = "https://one.example/v1/x?q=1".parse().unwrap();
        assert!(g.check(&ok, &Method::GET).is_ok());
        assert!(g.check(&ok, &Method::POST).is_err());
        let bad: http::Uri = "https://one.example/admin".parse().unwrap();
        assert!(
            g.check(&bad, &Method::GET)
                .unwrap_err()
                .detail
                .contains("/admin")
        );
        let other: http::Uri = "https://two.example/v1".parse().unwrap();
        assert!(g.check(&other, &Method::GET).is_err());
    }

    #[test]
    fn credential_injection_each_kind() {
        let secret = Secret::new(b"s3cr3t/value+1".to_vec());
        let (mut parts, ()) = http::Request::get("https://one.example/v1?a=1")
            .body(())
            .unwrap()
            .into_parts();
        let kind = CredentialKind::Query {
            param: "key".into(),
        };
        inject_credential(&mut parts, &kind, &secret).unwrap();
        assert_eq!(parts.uri.query(), Some("a=1&key=s3cr3t%2Fvalue%2B1"));

        for q in ["key=mine", "a=1;key=mine", "KEY=mine", "%6Bey=mine"] {
            let (mut parts, ()) = http::Request::get(format!("https://one.example/v1?{q}"))
                .body(())
                .unwrap()
                .into_parts();
            assert!(
                inject_credential(&mut parts, &kind, &secret).is_err(),
                "{q}"
            );
        }

        let (mut parts, ()) = http::Request::get("https://one.example/v1")
            .body(())
            .unwrap()
            .into_parts();
        let kind = CredentialKind::Header {
            name: HeaderName::from_static("x-api-key"),
            prefix: String::new(),
        };
        inject_credential(&mut parts, &kind, &secret).unwrap();
        assert_eq!(parts.headers["x-api-key"], "s3cr3t/value+1");
        assert!(parts.headers["x-api-key"].is_sensitive());

        let kind = CredentialKind::Basic {
            username: "svc".into(),
        };
        inject_credential(&mut parts, &kind, &secret).unwrap();
        assert_eq!(
            parts.headers["authorization"],
            "Basic c3ZjOnMzY3IzdC92YWx1ZSsx"
        );
        assert!(!format!("{kind:?}").contains("svc"));
    }
}
