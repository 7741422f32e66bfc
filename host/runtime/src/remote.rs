//! Split mode: the backend across the network, over TLS pinned to the
//! backend's own CA.
//!
//! [`RemoteBackend`] implements the same [`TokenExchange`] and [`Egress`]
//! traits the in-process backend implements, so the runtime runs the same
//! code in both modes.

use bytes::Bytes;
use edgeward_core::egress::{
    ATTESTATION_TOKEN_TYPE, BearerToken, BoxFuture, Egress, EgressCall, EgressFuture,
    ExchangeFailure, StopChannel, StopPoll, TOKEN_EXCHANGE_GRANT, TokenExchange, TokenGrant,
    TokenRequest,
};
use edgeward_core::problem::{GRANT_HEADER, Refusal};
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;

/// Largest backend answer read (the backend applies the agent's own limit).
const MAX_RESPONSE_BYTES: usize = 64 << 20;
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The backend could not be set up as a remote.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The URL is not `https://host[:port]`.
    #[error("the backend URL must be https://host[:port] ({0})")]
    BadUrl(&'static str),
    /// TLS could not be configured.
    #[error("cannot configure TLS: {0}")]
    Tls(String),
    /// The pinned CA file could not be read.
    #[error("cannot read the backend's CA certificate {path}: {reason}")]
    Ca {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Read the backend CA certificate(s) a device pins (PEM).
pub fn load_ca(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, RemoteError> {
    use rustls::pki_types::pem::PemObject as _;
    let bad = |reason| RemoteError::Ca {
        path: path.to_owned(),
        reason,
    };
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|_| bad("cannot open it"))?
        .collect::<Result<_, _>>()
        .map_err(|_| bad("not a PEM certificate file"))?;
    if certs.is_empty() {
        return Err(bad("it holds no certificate"));
    }
    Ok(certs)
}

/// The backend, reached over HTTPS.
#[derive(Clone)]
pub struct RemoteBackend {
    client: HttpsClient,
    base: Arc<str>,
}

impl RemoteBackend {
    /// A backend at `base_url` (`https://…`) whose certificate must chain to
    /// one of `ca` — and to nothing else: the web PKI is not trusted here.
    pub fn new(
        base_url: &str,
        ca: Vec<rustls::pki_types::CertificateDer<'static>>,
    ) -> Result<RemoteBackend, RemoteError> {
        let base = base_url.trim_end_matches('/');
        if !base.starts_with("https://") {
            return Err(RemoteError::BadUrl("it must start with https://"));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in ca {
            roots
                .add(cert)
                .map_err(|e| RemoteError::Tls(format!("bad CA certificate: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| RemoteError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(connector());
        Ok(RemoteBackend::with_connector(base, https))
    }

    fn with_connector(
        base: &str,
        https: hyper_rustls::HttpsConnector<HttpConnector>,
    ) -> RemoteBackend {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        RemoteBackend {
            client,
            base: Arc::from(base.trim_end_matches('/')),
        }
    }

    async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
        limit: usize,
    ) -> Result<http::Response<Bytes>, String> {
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    "cannot connect to the backend"
                } else {
                    "the connection to the backend failed"
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|_| "the backend's answer could not be read")?
                .to_bytes();
            Ok::<_, &str>(http::Response::from_parts(parts, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| "the backend did not answer in time".to_owned())?
            .map_err(str::to_owned)
    }
}

impl RemoteBackend {
    /// A GET of the instance's own state (`/v1/stop`, approval waits) with
    /// its token as a bearer: the status and the JSON answer.
    async fn get_with_token(
        &self,
        path_and_query: &str,
        token: &BearerToken,
    ) -> Result<(StatusCode, serde_json::Value), ExchangeFailure> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| ExchangeFailure::Local("the access token is not a header value".into()))?;
        auth.set_sensitive(true);
        let request = http::Request::get(format!("{}{path_and_query}", self.base))
            .header(http::header::AUTHORIZATION, auth)
            .body(Full::new(Bytes::new()))
            .map_err(|_| ExchangeFailure::Local("bad backend URL".into()))?;
        let response = self
            .send(request, MAX_TOKEN_RESPONSE_BYTES)
            .await
            .map_err(ExchangeFailure::Unreachable)?;
        let doc = serde_json::from_slice(response.body())
            .map_err(|_| ExchangeFailure::Unreachable("the backend's answer is not JSON".into()))?;
        Ok((response.status(), doc))
    }
}

fn connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    http
}

/// Development shortcuts that weaken the transport. Each is an explicit call
/// with `danger` in its path, so none can be turned on by accident.
pub mod danger {
    use super::*;

    /// A backend over plain HTTP: tokens and guest requests travel in clear
    /// text. Only for a backend started with its own danger flag, on a
    /// network you control.
    pub fn plaintext_backend(base_url: &str) -> Result<RemoteBackend, RemoteError> {
        if !base_url.starts_with("http://") {
            return Err(RemoteError::BadUrl(
                "a plaintext backend URL starts with http://",
            ));
        }
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| RemoteError::Tls(e.to_string()))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            )
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector());
        Ok(RemoteBackend::with_connector(base_url, https))
    }
}

impl RemoteBackend {
    /// Enrol this device with a one-time code from the backend's admin
    /// (`edgeward device invite`). Only the public key is sent.
    pub async fn enroll(
        &self,
        code: &str,
        device_id: &str,
        public_key: &edgeward_core::keys::PublicKey,
    ) -> Result<(), ExchangeFailure> {
        let body = serde_json::json!({
            "code": code,
            "id": device_id,
            "public_key": public_key.to_string(),
        });
        let request = http::Request::post(format!("{}/v1/enroll", self.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| ExchangeFailure::Local("bad backend URL".into()))?;
        let response = self
            .send(request, MAX_TOKEN_RESPONSE_BYTES)
            .await
            .map_err(ExchangeFailure::Unreachable)?;
        if response.status() == StatusCode::OK {
            return Ok(());
        }
        let doc: serde_json::Value = serde_json::from_slice(response.body()).unwrap_or_default();
        Err(refused(&doc))
    }
}

/// The backend's OAuth-style refusal (`{"error", "error_description"}`),
/// its description cut to a length a log line can carry.
fn refused(doc: &serde_json::Value) -> ExchangeFailure {
    ExchangeFailure::Refused {
        error: doc["error"].as_str().unwrap_or("unknown_error").to_owned(),
        description: doc["error_description"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect(),
    }
}

impl TokenExchange for RemoteBackend {
    fn challenge(&self) -> BoxFuture<Result<String, ExchangeFailure>> {
        let this = self.clone();
        Box::pin(async move {
            let request = http::Request::get(format!("{}/v1/challenge", this.base))
                .body(Full::new(Bytes::new()))
                .map_err(|_| ExchangeFailure::Local("bad backend URL".into()))?;
            let response = this
                .send(request, MAX_TOKEN_RESPONSE_BYTES)
                .await
                .map_err(ExchangeFailure::Unreachable)?;
            let doc: serde_json::Value = serde_json::from_slice(response.body())
                .map_err(|_| ExchangeFailure::Unreachable("the challenge is not JSON".into()))?;
            doc["nonce"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| ExchangeFailure::Unreachable("the challenge has no nonce".into()))
        })
    }

    fn exchange(&self, request: TokenRequest) -> BoxFuture<Result<TokenGrant, ExchangeFailure>> {
        let this = self.clone();
        Box::pin(async move {
            let form = form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", TOKEN_EXCHANGE_GRANT)
                .append_pair("actor_token", request.actor_token.expose())
                .append_pair("actor_token_type", ATTESTATION_TOKEN_TYPE)
                .append_pair("subject_token", request.subject().0)
                .append_pair("subject_token_type", request.subject().1)
                .finish();
            let http_request = http::Request::post(format!("{}/v1/token", this.base))
                .header(
                    http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(Full::new(Bytes::from(form)))
                .map_err(|_| ExchangeFailure::Local("bad backend URL".into()))?;
            let response = this
                .send(http_request, MAX_TOKEN_RESPONSE_BYTES)
                .await
                .map_err(ExchangeFailure::Unreachable)?;
            let doc: serde_json::Value = serde_json::from_slice(response.body()).map_err(|_| {
                ExchangeFailure::Unreachable("the token response is not JSON".into())
            })?;
            if response.status() != StatusCode::OK {
                return Err(refused(&doc));
            }
            let text = |k: &str| doc[k].as_str().map(str::to_owned);
            let bad = |what: &str| {
                ExchangeFailure::Unreachable(format!("the token response has no {what}"))
            };
            Ok(TokenGrant {
                access_token: BearerToken::new(
                    text("access_token").ok_or_else(|| bad("access_token"))?,
                ),
                expires_in: doc["expires_in"]
                    .as_u64()
                    .ok_or_else(|| bad("expires_in"))?,
                instance_id: text("edgeward_instance_id").ok_or_else(|| bad("instance id"))?,
                scope: text("scope")
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
                profile: edgeward_core::egress::AgentProfile::from_json(&doc["edgeward_profile"])
                    .map_err(ExchangeFailure::Unreachable)?,
                on_behalf_of: match doc.get("edgeward_on_behalf_of") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(v) => Some(v.as_str().ok_or_else(|| bad("valid user"))?.to_owned()),
                },
                chain_key: match doc.get("edgeward_chain_key") {
                    None => None,
                    Some(v) => Some(
                        v.as_str()
                            .and_then(edgeward_core::caveat::ChainKey::from_b64)
                            .ok_or_else(|| bad("valid chain key"))?,
                    ),
                },
            })
        })
    }
}

impl StopChannel for RemoteBackend {
    fn poll_stop(&self, token: BearerToken) -> BoxFuture<Result<StopPoll, ExchangeFailure>> {
        let this = self.clone();
        Box::pin(async move {
            let (status, doc) = this.get_with_token("/v1/stop", &token).await?;
            if status != StatusCode::OK {
                return Err(ExchangeFailure::Unreachable(format!(
                    "the stop channel answered {}",
                    status.as_u16()
                )));
            }
            match doc["stop"].as_bool() {
                Some(true) => Ok(StopPoll::Stop {
                    reason: doc["reason"]
                        .as_str()
                        .unwrap_or("revoked")
                        .chars()
                        .take(200)
                        .collect(),
                }),
                Some(false) => Ok(StopPoll::Continue {
                    lease_secs: doc["lease"].as_u64().unwrap_or(30),
                }),
                None => Err(ExchangeFailure::Unreachable(
                    "the stop answer has no verdict".into(),
                )),
            }
        })
    }
}

impl edgeward_core::egress::ApprovalChannel for RemoteBackend {
    fn wait_ticket(
        &self,
        token: BearerToken,
        ticket: String,
        timeout: Duration,
    ) -> BoxFuture<Result<edgeward_core::egress::TicketState, ExchangeFailure>> {
        let this = self.clone();
        Box::pin(async move {
            let timeout = timeout.min(edgeward_core::egress::MAX_TICKET_WAIT);
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("ticket", &ticket)
                .append_pair("timeout_ms", &timeout.as_millis().to_string())
                .finish();
            let (status, doc) = this
                .get_with_token(&format!("/v1/approvals/wait?{query}"), &token)
                .await?;
            if status != StatusCode::OK {
                return Err(refused(&doc));
            }
            doc["state"]
                .as_str()
                .and_then(edgeward_core::egress::TicketState::from_name)
                .ok_or_else(|| ExchangeFailure::Unreachable("the answer has no state".into()))
        })
    }
}

impl Egress for RemoteBackend {
    fn forward(&self, call: EgressCall) -> EgressFuture {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = call.request.into_parts();
            // The envelope is always a POST: the guest's method travels in a
            // header, so CONNECT, HEAD and friends cannot change how the
            // envelope itself is framed or routed.
            let mut request = http::Request::new(Full::new(body));
            *request.method_mut() = http::Method::POST;
            *request.uri_mut() = format!("{}/v1/egress", this.base)
                .parse()
                .map_err(|_| Refusal::upstream("bad backend URL"))?;
            let headers = request.headers_mut();
            *headers = parts.headers;
            headers.remove(http::header::HOST);
            let target = HeaderValue::from_str(&parts.uri.to_string())
                .map_err(|_| Refusal::invalid("the request URL cannot be forwarded"))?;
            headers.insert(edgeward_core::crossing::TARGET_HEADER, target);
            headers.insert(
                edgeward_core::crossing::METHOD_HEADER,
                HeaderValue::from_str(parts.method.as_str())
                    .map_err(|_| Refusal::invalid("the request method cannot be forwarded"))?,
            );
            headers.insert(
                GRANT_HEADER,
                HeaderValue::from_str(call.grant.as_str())
                    .map_err(|_| Refusal::invalid("bad grant name"))?,
            );
            let mut auth = HeaderValue::from_str(&format!("DPoP {}", call.token.expose()))
                .map_err(|_| Refusal::upstream("the access token is not a header value"))?;
            auth.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, auth);
            headers.insert(
                "dpop",
                HeaderValue::from_str(&call.proof)
                    .map_err(|_| Refusal::upstream("the DPoP proof is not a header value"))?,
            );
            // The backend's answer — an upstream response it already cleaned,
            // or its own refusal — goes to the guest as it is.
            this.send(request, MAX_RESPONSE_BYTES)
                .await
                .map_err(|e| Refusal::upstream(e).with_status(StatusCode::BAD_GATEWAY))
        })
    }
}
