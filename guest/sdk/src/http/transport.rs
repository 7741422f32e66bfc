//! The `wasi:http` half of [`Request::send`](super::Request::send): turn a
//! checked request into `wasi:http` resources, send it, and read the response.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    self as wasi, ErrorCode, FutureIncomingResponse, HeaderError, IncomingBody, IncomingResponse,
    OutgoingBody, OutgoingRequest,
};
use wasip2::io::streams::StreamError;

use super::url::{ParsedUrl, Scheme};
use super::{Error, Response};

/// `blocking-write-and-flush` accepts at most 4096 bytes per call.
const WRITE_CHUNK: usize = 4096;

/// How much to ask for per read of the response body.
const READ_CHUNK: u64 = 64 * 1024;

pub(super) fn send(
    method: &str,
    url: &ParsedUrl,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
) -> Result<Response, Error> {
    let fields = wasi::Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value)
            .map_err(|e| header_error(name, &e))?;
    }
    let has_length = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-length"));
    if !body.is_empty() && !has_length {
        // A declared length lets edgeward refuse an oversized body before any
        // of it is written. A host that will not take the header gets the
        // body without it, which is just as valid.
        let _ = fields.append("content-length", body.len().to_string().as_bytes());
    }

    let request = OutgoingRequest::new(fields);
    request
        .set_method(&wasi_method(method))
        .map_err(|()| Error::InvalidMethod(method.to_owned()))?;
    let scheme = match url.scheme {
        Scheme::Http => wasi::Scheme::Http,
        Scheme::Https => wasi::Scheme::Https,
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| Error::InvalidUrl("the host refused the scheme".to_owned()))?;
    request
        .set_authority(Some(&url.authority))
        .map_err(|()| Error::InvalidUrl("the host refused the host or port".to_owned()))?;
    request
        .set_path_with_query(Some(&url.path_with_query))
        .map_err(|()| Error::InvalidUrl("the host refused the path or query".to_owned()))?;

    // The body handle must be taken before `handle` consumes the request, but
    // written only after it: until then nothing reads the other end.
    let outgoing_body = if body.is_empty() {
        None
    } else {
        Some(
            request
                .body()
                .map_err(|()| Error::Body("request body already taken".to_owned()))?,
        )
    };
    let future = outgoing_handler::handle(request, None).map_err(transport_error)?;

    let written = match outgoing_body {
        None => Ok(()),
        Some(outgoing_body) => match write_body(&outgoing_body, body) {
            Ok(()) => OutgoingBody::finish(outgoing_body, None).map_err(|code| format!("{code:?}")),
            // Dropping the body unfinished tells the host the body is
            // incomplete, so it does not forward a truncated request.
            Err(e) => Err(e),
        },
    };

    // Whatever happened to the body, a response decides: edgeward (or the
    // upstream) may have answered early and stopped reading the body, e.g.
    // with a refusal the agent needs to see. Only without a response is a
    // failed body write the story worth telling.
    match (wait_for(&future), written) {
        (Ok(response), _) => read_response(response),
        (Err(code), Ok(())) => Err(transport_error(code)),
        (Err(code), Err(body_error)) => Err(Error::Body(format!(
            "writing the request body failed: {body_error} (request ended with {code:?})"
        ))),
    }
}

fn wasi_method(method: &str) -> wasi::Method {
    match method {
        "GET" => wasi::Method::Get,
        "HEAD" => wasi::Method::Head,
        "POST" => wasi::Method::Post,
        "PUT" => wasi::Method::Put,
        "DELETE" => wasi::Method::Delete,
        "CONNECT" => wasi::Method::Connect,
        "OPTIONS" => wasi::Method::Options,
        "TRACE" => wasi::Method::Trace,
        "PATCH" => wasi::Method::Patch,
        other => wasi::Method::Other(other.to_owned()),
    }
}

fn header_error(name: &str, error: &HeaderError) -> Error {
    let reason = match error {
        HeaderError::InvalidSyntax => "invalid name or value",
        HeaderError::Forbidden => "forbidden by the host",
        HeaderError::Immutable => "headers are immutable",
    };
    Error::Header {
        name: name.to_owned(),
        reason: reason.to_owned(),
    }
}

fn transport_error(code: ErrorCode) -> Error {
    Error::Transport(format!("{code:?}"))
}

fn stream_error(error: StreamError) -> String {
    match error {
        StreamError::Closed => "stream closed".to_owned(),
        StreamError::LastOperationFailed(e) => match wasi::http_error_code(&e) {
            Some(code) => format!("{code:?}"),
            None => e.to_debug_string(),
        },
    }
}

fn write_body(body: &OutgoingBody, bytes: &[u8]) -> Result<(), String> {
    // The stream is a child of the body: it must be dropped (at the end of
    // this function) before the body is finished.
    let stream = body
        .write()
        .map_err(|()| "request body stream already taken".to_owned())?;
    for chunk in bytes.chunks(WRITE_CHUNK) {
        stream
            .blocking_write_and_flush(chunk)
            .map_err(stream_error)?;
    }
    Ok(())
}

fn wait_for(future: &FutureIncomingResponse) -> Result<IncomingResponse, ErrorCode> {
    loop {
        match future.get() {
            None => future.subscribe().block(),
            Some(Ok(result)) => return result,
            // `get` only fails when the response was already taken, and it is
            // taken exactly once, here.
            Some(Err(())) => {
                return Err(ErrorCode::InternalError(Some(
                    "response already taken".to_owned(),
                )));
            }
        }
    }
}

fn read_response(response: IncomingResponse) -> Result<Response, Error> {
    let status = response.status();
    let headers = response.headers().entries();
    let incoming_body = response
        .consume()
        .map_err(|()| Error::Body("response body already consumed".to_owned()))?;
    let body = read_body(&incoming_body).map_err(Error::Body)?;
    // Trailers are not part of the SDK's response; finishing just releases
    // the body.
    drop(IncomingBody::finish(incoming_body));
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn read_body(incoming_body: &IncomingBody) -> Result<Vec<u8>, String> {
    let stream = incoming_body
        .stream()
        .map_err(|()| "response body stream already taken".to_owned())?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(body),
            Err(e) => return Err(stream_error(e)),
        }
    }
}
