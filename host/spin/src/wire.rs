//! wasi:http 0.2 plumbing, blocking: read an incoming request into an
//! `http::Request` within a byte limit, write an `http::Response` out, and
//! send one upstream request with timeouts and a response size cap.
//!
//! spin-sdk's buffered `Request` reads a whole body before the handler
//! runs; the egress route must check the token first and read at most the
//! agent's limit, so bodies are read here, from the stream.

use bytes::Bytes;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types as wasi_http;
use wasi::io::streams::StreamError;

/// Largest chunk moved per stream call.
const CHUNK: u64 = 64 * 1024;

/// wasi:http fields from an `http` header map. A name wasi:http forbids
/// (hop-by-hop ones the host sets itself, such as `proxy-authenticate`) is
/// dropped rather than failing the whole message.
fn fields(headers: &http::HeaderMap) -> wasi_http::Fields {
    let out = wasi_http::Fields::new();
    for (k, v) in headers {
        let _ = out.append(k.as_str(), v.as_bytes());
    }
    out
}

/// The request line and headers of an incoming request (its body is read
/// separately, with [`read_body`]). Header values that are not valid
/// `http` values are refused, not dropped.
pub fn request_head(req: &IncomingRequest) -> Result<http::request::Parts, &'static str> {
    let method = match req.method() {
        wasi_http::Method::Get => http::Method::GET,
        wasi_http::Method::Head => http::Method::HEAD,
        wasi_http::Method::Post => http::Method::POST,
        wasi_http::Method::Put => http::Method::PUT,
        wasi_http::Method::Delete => http::Method::DELETE,
        wasi_http::Method::Connect => http::Method::CONNECT,
        wasi_http::Method::Options => http::Method::OPTIONS,
        wasi_http::Method::Trace => http::Method::TRACE,
        wasi_http::Method::Patch => http::Method::PATCH,
        wasi_http::Method::Other(m) => {
            http::Method::from_bytes(m.as_bytes()).map_err(|_| "the method is not valid")?
        }
    };
    let path = req.path_with_query().unwrap_or_else(|| "/".into());
    let mut builder = http::Request::builder().method(method).uri(path);
    for (name, value) in req.headers().entries() {
        builder = builder.header(name, value);
    }
    builder
        .body(())
        .map(|r| r.into_parts().0)
        .map_err(|_| "the request line or a header is not valid")
}

/// Time allowed to receive a request body (as natively).
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Read the request body, refusing it as soon as it is over `limit` or
/// has not arrived within [`BODY_READ_TIMEOUT`].
pub fn read_body(req: IncomingRequest, limit: usize) -> Result<Bytes, BodyError> {
    let body = req.consume().map_err(|()| BodyError::Unreadable)?;
    let stream = body.stream().map_err(|()| BodyError::Unreadable)?;
    let out = read_stream(&stream, limit, &Deadline::after(BODY_READ_TIMEOUT))?;
    drop(stream);
    drop(body);
    Ok(out)
}

/// Why a body was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Over the limit.
    TooLarge,
    /// Not complete by the deadline.
    TooSlow,
    /// The stream failed.
    Unreadable,
}

/// Send a response. A failure past this point has nowhere to go: the
/// client sees a truncated response.
pub fn respond(out: ResponseOutparam, response: http::Response<Bytes>) {
    let (parts, body) = response.into_parts();
    let resp = wasi_http::OutgoingResponse::new(fields(&parts.headers));
    let _ = resp.set_status_code(parts.status.as_u16());
    let Ok(outgoing) = resp.body() else {
        out.set(resp);
        return;
    };
    out.set(resp);
    if let Ok(stream) = outgoing.write() {
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
        drop(stream);
    }
    let _ = wasi_http::OutgoingBody::finish(outgoing, None);
}

/// Why an upstream request failed; the text is ours, never the upstream's
/// or the host's (those may quote the URL, which may carry a credential).
#[derive(Debug, PartialEq, Eq)]
pub enum UpstreamError {
    /// Refused or failed before an answer (connect, DNS, TLS, denied host).
    Connect,
    /// The answer did not come in time.
    Timeout,
    /// The answer's body was over the limit.
    TooLarge,
    /// Anything else about the exchange.
    Failed,
}

/// Send `request` upstream, waiting at most `timeout` for the first byte
/// and between bytes, and reading at most `max_response` bytes of body.
/// Redirects are never followed (wasi:http does not).
pub fn send(
    request: http::Request<Bytes>,
    connect_timeout: std::time::Duration,
    timeout: std::time::Duration,
    max_response: usize,
) -> Result<http::Response<Bytes>, UpstreamError> {
    let (mut parts, body) = request.into_parts();
    // The length goes with the body, as natively: some APIs refuse a
    // chunked body (411) or any body on a chunked GET.
    if !body.is_empty() || matches!(parts.method.as_str(), "POST" | "PUT" | "PATCH") {
        parts.headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(body.len()),
        );
    }
    let req = wasi_http::OutgoingRequest::new(fields(&parts.headers));
    let method = match parts.method.as_str() {
        "GET" => wasi_http::Method::Get,
        "HEAD" => wasi_http::Method::Head,
        "POST" => wasi_http::Method::Post,
        "PUT" => wasi_http::Method::Put,
        "DELETE" => wasi_http::Method::Delete,
        "OPTIONS" => wasi_http::Method::Options,
        "PATCH" => wasi_http::Method::Patch,
        other => wasi_http::Method::Other(other.to_owned()),
    };
    let scheme = match parts.uri.scheme_str() {
        Some("https") => wasi_http::Scheme::Https,
        _ => wasi_http::Scheme::Http,
    };
    let set = |r: Result<(), ()>| r.map_err(|()| UpstreamError::Failed);
    set(req.set_method(&method))?;
    set(req.set_scheme(Some(&scheme)))?;
    set(req.set_authority(parts.uri.authority().map(|a| a.as_str())))?;
    set(req.set_path_with_query(parts.uri.path_and_query().map(|p| p.as_str())))?;
    let options = wasi_http::RequestOptions::new();
    let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    // A host may not support a timeout; then its own defaults apply.
    let _ = options.set_connect_timeout(Some(nanos(connect_timeout)));
    let _ = options.set_first_byte_timeout(Some(nanos(timeout)));
    let _ = options.set_between_bytes_timeout(Some(nanos(timeout)));
    let outgoing = req.body().map_err(|()| UpstreamError::Failed)?;
    let pending = outgoing_handler::handle(req, Some(options)).map_err(map_code)?;
    {
        let stream = outgoing.write().map_err(|()| UpstreamError::Failed)?;
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|_| UpstreamError::Failed)?;
        }
    }
    wasi_http::OutgoingBody::finish(outgoing, None).map_err(map_code)?;
    // One deadline over the answer and its whole body, as natively: the
    // first-byte and between-bytes timeouts alone let a slow drip run on.
    let deadline = Deadline::after(timeout);
    if !deadline.wait(&pending.subscribe()) {
        return Err(UpstreamError::Timeout);
    }
    let response = match pending.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(code))) => return Err(map_code(code)),
        _ => return Err(UpstreamError::Failed),
    };
    let status =
        http::StatusCode::from_u16(response.status()).map_err(|_| UpstreamError::Failed)?;
    let mut builder = http::Response::builder().status(status);
    for (name, value) in response.headers().entries() {
        builder = builder.header(name, value);
    }
    let incoming = response.consume().map_err(|()| UpstreamError::Failed)?;
    let stream = incoming.stream().map_err(|()| UpstreamError::Failed)?;
    let body = read_stream(&stream, max_response, &deadline).map_err(|e| match e {
        BodyError::TooLarge => UpstreamError::TooLarge,
        BodyError::TooSlow => UpstreamError::Timeout,
        BodyError::Unreadable => UpstreamError::Failed,
    })?;
    drop(stream);
    drop(incoming);
    drop(response);
    builder.body(body).map_err(|_| UpstreamError::Failed)
}

/// A point in time on the monotonic clock.
struct Deadline(u64);

impl Deadline {
    fn after(d: std::time::Duration) -> Deadline {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Deadline(wasi::clocks::monotonic_clock::now().saturating_add(nanos))
    }

    /// Block until `ready` is; false if the deadline passed first.
    fn wait(&self, ready: &wasi::io::poll::Pollable) -> bool {
        let timer = wasi::clocks::monotonic_clock::subscribe_instant(self.0);
        wasi::io::poll::poll(&[ready, &timer]).contains(&0)
    }
}

/// Read a body (a request's or an upstream answer's) to its end within
/// `limit` bytes and by `deadline`.
fn read_stream(
    stream: &wasi::io::streams::InputStream,
    limit: usize,
    deadline: &Deadline,
) -> Result<Bytes, BodyError> {
    let mut out = Vec::new();
    loop {
        match stream.read(CHUNK) {
            Ok(chunk) if chunk.is_empty() => {
                if !deadline.wait(&stream.subscribe()) {
                    return Err(BodyError::TooSlow);
                }
            }
            Ok(chunk) => {
                if out.len() + chunk.len() > limit {
                    return Err(BodyError::TooLarge);
                }
                out.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => return Ok(Bytes::from(out)),
            Err(StreamError::LastOperationFailed(_)) => return Err(BodyError::Unreadable),
        }
    }
}

fn map_code(code: wasi_http::ErrorCode) -> UpstreamError {
    use wasi_http::ErrorCode as E;
    match code {
        E::ConnectionTimeout
        | E::ConnectionReadTimeout
        | E::ConnectionWriteTimeout
        | E::HttpResponseTimeout => UpstreamError::Timeout,
        E::DnsTimeout
        | E::DnsError(_)
        | E::DestinationNotFound
        | E::DestinationUnavailable
        | E::DestinationIpProhibited
        | E::DestinationIpUnroutable
        | E::ConnectionRefused
        | E::ConnectionTerminated
        | E::ConnectionLimitReached
        | E::TlsProtocolError
        | E::TlsCertificateError
        | E::TlsAlertReceived(_)
        | E::HttpRequestDenied => UpstreamError::Connect,
        _ => UpstreamError::Failed,
    }
}
