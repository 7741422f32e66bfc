//! HTTP requests through edgeward.
//!
//! Every request leaves the sandbox through the standard
//! `wasi:http/outgoing-handler`. edgeward matches its origin to one of the
//! agent's grants, checks method, path and policy, attaches the real
//! credential outside the sandbox and forwards it. The agent never sets
//! credentials itself.
//!
//! 1. Build a [`Request`] with [`Request::get`], [`Request::post`] or
//!    [`Request::new`], then add headers, a body, and — only when several of
//!    the agent's grants share one origin — the [`grant`](Request::grant) to
//!    use.
//! 2. [`send`](Request::send) it. The whole response body is read into
//!    memory.
//! 3. Match on the result: `Ok(Response)` is whatever the upstream answered,
//!    including its own 4xx and 5xx statuses; `Err(Error::Refused(problem))`
//!    means edgeward itself refused the request, and [`Problem::class`] says
//!    why.
//!
//! ```no_run
//! use edgeward_sdk::http::{self, Error, ProblemClass};
//!
//! let result = http::Request::post("https://api.example.com/v1/notes", r#"{"text":"hi"}"#)
//!     .header("content-type", "application/json")
//!     .grant("notes-writer")
//!     .send();
//! match result {
//!     Ok(response) if (200..300).contains(&response.status) => {
//!         println!("created: {}", response.text());
//!     }
//!     Ok(response) => println!("upstream said {}", response.status),
//!     Err(Error::Refused(problem)) if problem.class == ProblemClass::NeedsApproval => {
//!         println!("waiting for approval, ticket {:?}", problem.ticket);
//!     }
//!     Err(e) => println!("failed: {e}"),
//! }
//! ```

mod problem;
mod transport;
mod url;

use std::borrow::Cow;

pub use problem::{PROBLEM_TYPE_PREFIX, Problem, ProblemClass, REFUSAL_HEADER};

/// Request header that chooses between several grants on one origin. edgeward
/// strips it before the request leaves the runtime.
pub const GRANT_HEADER: &str = "edgeward-grant";

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// edgeward refused the request; the problem says why.
    #[error("refused by edgeward: {0}")]
    Refused(Problem),
    /// The URL is not an absolute `http://` or `https://` URL this SDK can
    /// send. The message says what is wrong without repeating the URL.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The method is not a valid HTTP method token.
    #[error("invalid HTTP method {0:?}")]
    InvalidMethod(String),
    /// A request header was refused before sending: its name or value is
    /// malformed, or the host forbids guests to set it.
    #[error("header {name:?} refused: {reason}")]
    Header {
        /// The header name as given.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// The request could not be sent or no response arrived (a
    /// `wasi:http` error code, Debug-formatted).
    #[error("transport error: {0}")]
    Transport(String),
    /// Writing the request body or reading the response body failed.
    #[error("body error: {0}")]
    Body(String),
}

/// An HTTP request, built up and then [sent](Request::send).
#[derive(Debug, Clone)]
#[must_use = "a request does nothing until it is sent"]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Request {
    /// A request with any method, e.g. `"PUT"` or `"PATCH"`.
    ///
    /// Nothing is checked until [`send`](Request::send).
    pub fn new(method: &str, url: impl Into<String>) -> Request {
        Request {
            method: method.to_owned(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Request {
        Request::new("GET", url)
    }

    /// A `POST` request with a body.
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Request {
        Request::new("POST", url).body(body)
    }

    /// Add a header. Repeating a name adds another value.
    ///
    /// Do not set credentials (`authorization`, API-key headers): edgeward
    /// refuses or strips them and attaches the grant's own credential.
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Request {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// Choose which of the agent's grants to use, by name. Only needed when
    /// several grants share the request's origin; see
    /// [`identity::grants`](crate::identity::grants).
    pub fn grant(self, name: impl AsRef<str>) -> Request {
        self.header(GRANT_HEADER, name.as_ref())
    }

    /// Set the request body, replacing any earlier one.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Send the request and read the whole response.
    ///
    /// Returns `Ok` for every response the upstream gave, whatever its status,
    /// and [`Error::Refused`] only when edgeward itself refused the request
    /// (the response carries the [`REFUSAL_HEADER`]).
    pub fn send(self) -> Result<Response, Error> {
        if !is_token(&self.method) {
            return Err(Error::InvalidMethod(self.method));
        }
        let url = url::parse(&self.url).map_err(Error::InvalidUrl)?;
        let response = transport::send(&self.method, &url, &self.headers, &self.body)?;
        match response.header(REFUSAL_HEADER) {
            Some(refusal) => Err(Error::Refused(Problem::parse(
                &String::from_utf8_lossy(refusal),
                response.status,
                &response.body,
            ))),
            None => Ok(response),
        }
    }
}

/// `GET` a URL: shorthand for `Request::get(url).send()`.
pub fn get(url: impl Into<String>) -> Result<Response, Error> {
    Request::get(url).send()
}

/// An HTTP response from the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, e.g. 200 or 404.
    pub status: u16,
    /// The header fields in the order received; names are lowercase.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text; invalid UTF-8 becomes U+FFFD.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// Whether `s` is an HTTP token (RFC 9110 section 5.6.2), as a method must be.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_must_be_tokens() {
        assert!(is_token("GET"));
        assert!(is_token("PROPFIND"));
        assert!(!is_token(""));
        assert!(!is_token("GET /"));
        assert!(!is_token("GÉT"));
    }

    #[test]
    fn the_builder_collects_headers_grant_and_body() {
        let r = Request::post("http://h/", "abc")
            .header("x-a", "1")
            .header("x-a", b"2")
            .grant("notes");
        assert_eq!(r.method, "POST");
        assert_eq!(r.body, b"abc");
        assert_eq!(
            r.headers,
            vec![
                ("x-a".to_owned(), b"1".to_vec()),
                ("x-a".to_owned(), b"2".to_vec()),
                (GRANT_HEADER.to_owned(), b"notes".to_vec()),
            ]
        );
    }

    #[test]
    fn bad_method_and_url_fail_before_anything_is_sent() {
        assert!(matches!(
            Request::new("NOT VALID", "http://h/").send(),
            Err(Error::InvalidMethod(_))
        ));
        assert!(matches!(
            Request::get("nope").send(),
            Err(Error::InvalidUrl(_))
        ));
    }

    #[test]
    fn response_helpers() {
        let r = Response {
            status: 404,
            headers: vec![("content-type".into(), b"text/plain".to_vec())],
            body: b"missing \xff".to_vec(),
        };
        assert!(!r.is_success());
        assert_eq!(r.header("Content-Type"), Some(&b"text/plain"[..]));
        assert_eq!(r.header("x-none"), None);
        assert_eq!(r.text(), "missing \u{fffd}");
    }

    #[test]
    fn errors_display_their_cause() {
        let refused = Error::Refused(Problem::parse("denied", 403, br#"{"detail":"no grant"}"#));
        assert_eq!(
            refused.to_string(),
            "refused by edgeward: denied (403): no grant"
        );
        let header = Error::Header {
            name: "host".into(),
            reason: "forbidden by the host".into(),
        };
        assert_eq!(
            header.to_string(),
            "header \"host\" refused: forbidden by the host"
        );
    }
}
