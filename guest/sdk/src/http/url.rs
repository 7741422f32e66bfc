//! A deliberately small URL parser: just enough to split an absolute
//! `http`/`https` URL into the parts `wasi:http` wants, and to refuse anything
//! ambiguous instead of guessing.

/// The scheme of a parsed URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

/// An absolute URL split the way `wasi:http/types.outgoing-request` wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedUrl {
    pub(crate) scheme: Scheme,
    /// `host` or `host:port`; IPv6 literals keep their brackets.
    pub(crate) authority: String,
    /// Always starts with `/`; the fragment is removed (it is never sent).
    pub(crate) path_with_query: String,
}

/// Parse an absolute `http://` or `https://` URL.
///
/// The error is a short reason that does not repeat the URL, since a URL may
/// carry data the agent would rather not see echoed into logs.
pub(crate) fn parse(url: &str) -> Result<ParsedUrl, String> {
    if let Some(c) = url.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(if c.is_ascii() {
            "contains whitespace or a control character".to_owned()
        } else {
            "contains a non-ASCII character (percent-encode it, or use punycode for hosts)"
                .to_owned()
        });
    }
    let not_absolute = || "not an absolute URL (expected http:// or https://)".to_owned();
    let (scheme, rest) = url.split_once("://").ok_or_else(not_absolute)?;
    let is_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !is_scheme {
        return Err(not_absolute());
    }
    let scheme = if scheme.eq_ignore_ascii_case("https") {
        Scheme::Https
    } else if scheme.eq_ignore_ascii_case("http") {
        Scheme::Http
    } else {
        return Err(format!(
            "unsupported scheme {scheme:?} (expected http or https)"
        ));
    };

    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(authority_end);
    let path_with_query = match rest.split_once('#') {
        Some((before_fragment, _fragment)) => before_fragment,
        None => rest,
    };
    let path_with_query = if path_with_query.starts_with('/') {
        path_with_query.to_owned()
    } else {
        // Empty, or a query without a path: `http://host?x=1` means `/?x=1`.
        format!("/{path_with_query}")
    };

    Ok(ParsedUrl {
        scheme,
        authority: parse_authority(authority)?,
        path_with_query,
    })
}

/// Check `host[:port]` and return it normalised (an empty port is dropped).
fn parse_authority(authority: &str) -> Result<String, String> {
    if authority.is_empty() {
        return Err("missing host".to_owned());
    }
    if authority.contains('@') {
        // Credentials never travel in the URL: edgeward attaches them.
        return Err("user info (user:password@) is not allowed in a URL".to_owned());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (literal, after) = v6
            .split_once(']')
            .ok_or_else(|| "unterminated IPv6 literal in host".to_owned())?;
        if literal.is_empty()
            || !literal
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
            || !literal.contains(':')
        {
            return Err("malformed IPv6 literal in host".to_owned());
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| "unexpected characters after IPv6 literal".to_owned())?,
            ),
        };
        (&authority[..literal.len() + 2], port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err("missing host".to_owned());
        }
        if let Some(c) = host
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))
        {
            return Err(format!("invalid character {c:?} in host"));
        }
        (host, port)
    };
    match port {
        None | Some("") => Ok(host.to_owned()),
        Some(port) => {
            let valid = port.len() <= 5
                && port.chars().all(|c| c.is_ascii_digit())
                && matches!(port.parse::<u32>(), Ok(1..=65535));
            if valid {
                Ok(format!("{host}:{port}"))
            } else {
                Err(format!("invalid port {port:?}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> (Scheme, String, String) {
        let p = parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        (p.scheme, p.authority, p.path_with_query)
    }

    fn err(url: &str) -> String {
        match parse(url) {
            Ok(p) => panic!("{url} parsed as {p:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn splits_the_parts_wasi_http_wants() {
        assert_eq!(
            ok("https://api.example.com/v1/items?x=1&y=2"),
            (
                Scheme::Https,
                "api.example.com".into(),
                "/v1/items?x=1&y=2".into()
            )
        );
        assert_eq!(
            ok("http://127.0.0.1:8080/a/b"),
            (Scheme::Http, "127.0.0.1:8080".into(), "/a/b".into())
        );
        assert_eq!(
            ok("HTTPS://Example.com"),
            (Scheme::Https, "Example.com".into(), "/".into())
        );
    }

    #[test]
    fn fills_in_a_missing_path_and_drops_the_fragment() {
        assert_eq!(ok("http://h").2, "/");
        assert_eq!(ok("http://h?q=1").2, "/?q=1");
        assert_eq!(ok("http://h/p?q=1#frag").2, "/p?q=1");
        assert_eq!(ok("http://h#frag").2, "/");
    }

    #[test]
    fn understands_ports_and_ipv6_literals() {
        assert_eq!(ok("http://[::1]:3000/x").1, "[::1]:3000");
        assert_eq!(ok("http://[2001:db8::1]/").1, "[2001:db8::1]");
        assert_eq!(ok("http://h:/x").1, "h");
        assert_eq!(ok("http://h:65535/").1, "h:65535");
    }

    #[test]
    fn refuses_what_it_cannot_parse_unambiguously() {
        assert!(err("example.com/path").contains("absolute"));
        assert!(err("ftp://example.com/").contains("unsupported scheme"));
        assert!(err("http:///path").contains("missing host"));
        assert!(err("http://:80/").contains("missing host"));
        assert!(err("http://user:pw@example.com/").contains("user info"));
        assert!(err("http://h:0/").contains("invalid port"));
        assert!(err("http://h:65536/").contains("invalid port"));
        assert!(err("http://h:80x/").contains("invalid port"));
        assert!(err("http://h:1:2/").contains("invalid port"));
        assert!(err("http://[::1/").contains("unterminated"));
        assert!(err("http://[zz]/").contains("malformed IPv6"));
        assert!(err("http://[::1]x/").contains("after IPv6"));
        assert!(err("http://ex ample.com/").contains("whitespace"));
        assert!(err("http://example.com/\n").contains("control"));
        assert!(err("http://bücher.example/").contains("non-ASCII"));
        assert!(err("http://exa%mple.com/").contains("invalid character"));
        assert!(err("").contains("absolute"));
        assert!(err("://h/").contains("absolute"));
        assert!(err("h/?next=http://x/").contains("absolute"));
    }

    #[test]
    fn errors_do_not_echo_the_url() {
        let e = err("gopher://secret-host.example/?token=abc");
        assert!(!e.contains("secret-host"), "{e}");
        assert!(!e.contains("abc"), "{e}");
    }
}
