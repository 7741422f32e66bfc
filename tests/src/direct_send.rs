//! One plain-HTTP request the way wasmtime-wasi-http's default sender
//! sends it (a new TCP connection and HTTP/1 handshake per request, origin
//! form on the wire), for the test hosts that must implement
//! `WasiHttpHooks::send_request` themselves (`default-send-request` stays
//! off): the Spin test host and the benchmarks' status-quo baseline.

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::time::Duration;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};

/// One request on a new connection; the connection lives as long as the
/// response body is read.
pub async fn send(
    mut request: http::Request<WasiBody>,
    options: RequestOptions,
    connect_timeout: Duration,
    first_byte_timeout: Duration,
) -> Result<
    (
        http::Response<WasiBody>,
        impl Future<Output = Result<(), hyper::Error>> + Send,
    ),
    HttpError,
> {
    let authority = request
        .uri()
        .authority()
        .ok_or(HttpError::HttpRequestUriInvalid)?;
    let authority = match authority.port_u16() {
        Some(_) => authority.to_string(),
        None => format!("{}:80", authority.host()),
    };
    let stream = tokio::time::timeout(
        options.connect_timeout.unwrap_or(connect_timeout),
        tokio::net::TcpStream::connect(&authority),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)?
    .map_err(HttpError::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await?;
    // Origin form on the wire, as wasmtime's own sender does.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = path.parse().map_err(|_| HttpError::HttpRequestUriInvalid)?;
    let mut conn = Some(Box::pin(conn));
    let send = tokio::time::timeout(
        options.first_byte_timeout.unwrap_or(first_byte_timeout),
        sender.send_request(request),
    );
    tokio::pin!(send);
    // Drive the connection while waiting for the head.
    let response = loop {
        match conn.as_mut() {
            Some(c) => tokio::select! {
                r = &mut send => break r,
                done = c => {
                    done?;
                    conn = None;
                }
            },
            None => break (&mut send).await,
        }
    };
    let response = response.map_err(|_| HttpError::ConnectionReadTimeout)??;
    let rest = async move {
        match conn {
            Some(c) => c.await,
            None => Ok(()),
        }
    };
    Ok((
        response.map(|b| b.map_err(HttpError::from).boxed_unsync()),
        rest,
    ))
}
