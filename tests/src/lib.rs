//! Shared parts of the end-to-end tests: the guest components built from
//! source by `build.rs`, a real upstream on loopback, and a harness that joins
//! the runtime and the backend in embedded mode.

pub mod direct_send;
pub mod spin_host;

use anyhow::Context as _;
use bytes::Bytes;
use edgeward_backend::exchange::SharedEntropy;
use edgeward_backend::{Backend, SecretError};
use edgeward_core::clock::{Clock, SystemClock};
use edgeward_core::config::{Config, EMBEDDED_DEVICE};
use edgeward_core::digest::ComponentDigest;
use edgeward_core::entropy::SeededEntropy;
use edgeward_core::secret::{Secret, SecretSource};
use edgeward_runtime::{
    AgentInstance, AgentSpec, AttestOptions, DeviceIdentity, Runtime, RuntimeConfig, TaskReport,
};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Path of the example agent built from `guest/hello`.
pub const HELLO_WASM: &str = env!("HELLO_WASM");
/// Path of the hostile test agent built from `guest/hostile`.
pub const HOSTILE_WASM: &str = env!("HOSTILE_WASM");
/// Path of the benchmark agent built from `guest/bench`.
pub const BENCH_WASM: &str = env!("BENCH_WASM");
/// Path of the delegating test agent built from `guest/courier`
/// (`edgeward:agent@0.2.0`).
pub const COURIER_WASM: &str = env!("COURIER_WASM");

/// The backend as a Spin component (`host/spin`), built by `build.rs` with
/// `spin.toml`'s build command.
pub const SPIN_WASM: &str = env!("SPIN_WASM");
/// That build command, for the test that compares it with `spin.toml`.
pub const SPIN_BUILD_COMMAND: &str = env!("SPIN_BUILD_COMMAND");

/// The bytes of a built component (read once).
pub fn component(path: &'static str) -> &'static [u8] {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, &'static [u8]>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().expect("component cache lock");
    cache.entry(path).or_insert_with(|| {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        Box::leak(bytes.into_boxed_slice())
    })
}

/// The sha256 of a built guest.
pub fn digest(path: &'static str) -> ComponentDigest {
    ComponentDigest::of(component(path))
}

/// One runtime for the whole test process: the engine and compiled
/// components are shared, as they would be on a device.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            pooling: true,
            max_concurrent_tasks: 32,
            max_memory_bytes: 64 << 20,
        })
        .expect("runtime")
    })
}

/// A request the upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Method.
    pub method: http::Method,
    /// Path and query.
    pub uri: String,
    /// Headers as sent on the wire.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
}

type Handler = dyn Fn(&Received) -> http::Response<Bytes> + Send + Sync;

/// A real HTTP/1.1 server on 127.0.0.1 with a programmable answer.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<AtomicUsize>,
}

impl Upstream {
    /// Start serving `handler` on a fresh loopback port.
    pub async fn start(
        handler: impl Fn(&Received) -> http::Response<Bytes> + Send + Sync + 'static,
    ) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (rec, conns) = (Arc::clone(&received), Arc::clone(&connections));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                conns.fetch_add(1, Ordering::SeqCst);
                let handler = Arc::clone(&handler);
                let rec = Arc::clone(&rec);
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let handler = Arc::clone(&handler);
                        let rec = Arc::clone(&rec);
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let r = Received {
                                method: parts.method,
                                uri: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                            };
                            let response = handler(&r);
                            rec.lock().expect("lock").push(r);
                            Ok::<_, std::convert::Infallible>(response.map(Full::new))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            received,
            connections,
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A plain response.
pub fn respond(
    status: u16,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> http::Response<Bytes> {
    let mut r = http::Response::new(body.into());
    *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
    for (k, v) in headers {
        r.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            http::HeaderValue::from_str(v).expect("header value"),
        );
    }
    r
}

/// Everything the host logged (every level, every crate) since the test
/// process started: captured so tests can prove no credential reaches a log.
pub fn host_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().expect("log lock")).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buffer);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_ansi(false)
            .with_writer(move || LogSink(Arc::clone(&sink)))
            .finish();
        // Another test may have installed one first; then this binary's logs
        // go there, and `host_logs` only sees what reached this sink.
        let _ = tracing::subscriber::set_global_default(subscriber);
        buffer
    })
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A secret reader over a fixed map (env-var name -> value), for tests.
pub fn secrets_from(
    secrets: &[(&str, &str)],
) -> impl FnMut(&SecretSource) -> Result<Secret, SecretError> + use<> {
    let secrets: HashMap<String, String> = secrets
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |source| match source {
        SecretSource::Env(var) => secrets
            .get(var)
            .map(|v| Secret::new(v.as_bytes().to_vec()))
            .ok_or_else(|| SecretError::Missing {
                source_name: source.to_string(),
            }),
        SecretSource::File(_) => Err(SecretError::Missing {
            source_name: source.to_string(),
        }),
    }
}

/// A user assertion (a compact EdDSA JWT, `kid` `idp-1`) signed by
/// `signer` over `claims`: what a test identity provider issues, or a
/// forgery when `signer` is not the provider's key.
pub fn user_assertion(
    signer: &dyn edgeward_core::keys::Signer,
    claims: serde_json::Value,
) -> String {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = serde_json::json!({"alg": "EdDSA", "kid": "idp-1", "typ": "JWT"});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = signer.sign(input.as_bytes()).expect("sign");
    format!("{input}.{}", b64(&sig))
}

/// The JWKS of a test identity provider whose key is `signer`'s (`kid`
/// `idp-1`), as a `[[user_issuer]]` takes it inline.
pub fn idp_jwks(signer: &dyn edgeward_core::keys::Signer) -> String {
    let mut jwk = signer.public_key().to_jwk();
    jwk["kid"] = serde_json::json!("idp-1");
    serde_json::json!({ "keys": [jwk] }).to_string()
}

/// Entropy for tests: seeded, so runs are repeatable, and shared.
pub fn seeded(seed: u64) -> SharedEntropy {
    Arc::new(Mutex::new(Box::new(SeededEntropy::new(seed))))
}

/// Embedded mode for one agent: an in-process backend with test secrets,
/// and an attested instance.
pub struct Harness {
    /// The running instance.
    pub instance: AgentInstance,
    /// The backend (for direct calls).
    pub backend: Backend,
}

impl Harness {
    /// Build from config text; `secrets` maps env-var names in the config to values.
    pub async fn new(
        config_text: &str,
        agent: &str,
        component_path: &'static str,
        secrets: &[(&str, &str)],
    ) -> anyhow::Result<Harness> {
        Harness::on(runtime(), config_text, agent, component_path, secrets).await
    }

    /// As [`Harness::new`], on a given runtime.
    pub async fn on(
        runtime: &Runtime,
        config_text: &str,
        agent: &str,
        component_path: &'static str,
        secrets: &[(&str, &str)],
    ) -> anyhow::Result<Harness> {
        log_buffer();
        let config = Config::parse(config_text).context("config")?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let embedded = edgeward_backend::embedded::embedded(
            &config,
            secrets_from(secrets),
            Arc::clone(&clock),
            seeded(7),
        )?;
        let a = config.agent(agent).context("agent in config")?;
        let spec = AgentSpec {
            name: a.name.clone(),
            allowed_digests: a.digests.clone(),
        };
        let loaded = runtime.load(component(component_path), spec)?;
        let backend = embedded.backend;
        let shared = Arc::new(backend.clone());
        let instance = loaded
            .attest(AttestOptions {
                device: DeviceIdentity {
                    id: EMBEDDED_DEVICE.to_owned(),
                    signer: embedded.device_key,
                },
                exchange: shared.clone(),
                egress: shared.clone(),
                stop_channel: Some(shared),
                clock,
                entropy: &mut SeededEntropy::new(11),
                grants: Vec::new(),
                lifetime: None,
                user_assertion: None,
            })
            .await?;
        Ok(Harness { instance, backend })
    }

    /// Run a task.
    pub async fn run(&self, task: &str) -> TaskReport {
        self.instance.run(task).await
    }

    /// Run a task that must return `Ok`, and parse its result as JSON.
    pub async fn run_json(&self, task: &str) -> serde_json::Value {
        let report = self.run(task).await;
        match report.outcome {
            Ok(Ok(text)) => serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("task {task:?} result is not JSON ({e}): {text}")),
            other => panic!(
                "task {task:?} did not succeed: {other:?}\nlogs: {:?}",
                report.logs
            ),
        }
    }
}

/// Every guest-visible byte of a report: result or error text, and logs.
pub fn guest_visible(report: &TaskReport) -> String {
    let mut out = String::new();
    match &report.outcome {
        Ok(Ok(s)) | Ok(Err(s)) => out.push_str(s),
        Err(e) => out.push_str(&e.to_string()),
    }
    for r in &report.logs {
        out.push('\n');
        out.push_str(&r.message);
    }
    out
}

/// The encodings of a secret that the tests look for, computed independently
/// of the core redactor.
pub fn encodings(secret: &str) -> Vec<(&'static str, String)> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let b = secret.as_bytes();
    let pct = percent_encoding::percent_encode(b, percent_encoding::NON_ALPHANUMERIC).to_string();
    let json = serde_json::to_string(secret).expect("json");
    vec![
        ("raw", secret.to_owned()),
        ("base64", STANDARD.encode(b)),
        ("base64-nopad", STANDARD_NO_PAD.encode(b)),
        ("base64url", URL_SAFE.encode(b)),
        ("base64url-nopad", URL_SAFE_NO_PAD.encode(b)),
        ("hex", hex_lower(b)),
        ("percent", pct.clone()),
        ("percent-lower", pct.to_lowercase()),
        ("json", json.trim_matches('"').to_owned()),
        ("json-slash", json.trim_matches('"').replace('/', "\\/")),
    ]
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Panic if any encoding of `secret` appears in `haystack`.
pub fn assert_no_secret(haystack: &str, secret: &str, context: &str) {
    for (name, enc) in encodings(secret) {
        assert!(
            !haystack.contains(&enc),
            "{context}: the credential appears {name}-encoded in guest-visible output"
        );
    }
}

/// A clock tests can move.
#[derive(Debug, Default)]
pub struct TestClock(std::sync::atomic::AtomicU64);

impl TestClock {
    /// A clock at `now`.
    pub fn at(now: u64) -> Arc<TestClock> {
        Arc::new(TestClock(AtomicU64::new(now)))
    }

    /// Move it.
    pub fn set(&self, now: u64) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

use std::sync::atomic::AtomicU64;

/// The backend as a real TLS service on 127.0.0.1, with key material made
/// by `tls::init` in a fresh directory.
pub struct Service {
    /// `https://127.0.0.1:port`.
    pub url: String,
    /// The data directory.
    pub dir: std::path::PathBuf,
    /// The token service behind it.
    pub tokens: Arc<edgeward_backend::TokenService>,
    /// A client that pins the service's CA.
    pub client: TlsClient,
}

impl Service {
    /// Start a service for `config_text` with the given clock.
    pub async fn start(
        config_text: &str,
        secrets: &[(&str, &str)],
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Service> {
        log_buffer();
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "edgeward-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut entropy = SeededEntropy::new(3);
        edgeward_backend::tls::init(&dir, &[], false, &mut |b: &mut [u8]| {
            edgeward_core::entropy::Entropy::fill(&mut entropy, b)
        })?;
        let keys = edgeward_backend::tls::load(&dir)?;
        let config = Config::parse(config_text)?;
        let store: Arc<dyn edgeward_backend::store::Store> = Arc::new(
            edgeward_backend::store::SqliteStore::open(&dir.join("edgeward.db"))?,
        );
        let mut ids = SeededEntropy::new(8);
        edgeward_backend::import::import(store.as_ref(), &config, clock.now(), || {
            let mut id = [0u8; 16];
            edgeward_core::entropy::Entropy::fill(&mut ids, &mut id);
            id.iter().map(|b| format!("{b:02x}")).collect()
        })?;
        let tokens = Arc::new(edgeward_backend::TokenService::new(
            store,
            config.backend.clone(),
            edgeward_backend::ServiceKeys {
                signing_seed: &keys.signing_seed,
                nonce_key: &keys.nonce_key,
                boot_epoch: 42,
            },
            None,
            clock,
            seeded(5),
        )?);
        let backend = Backend::with_secrets(Arc::clone(&tokens), secrets_from(secrets))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://{}", listener.local_addr()?);
        tokio::spawn(edgeward_backend::service::serve(
            listener,
            Some(keys.tls),
            backend,
        ));
        let ca = edgeward_runtime::remote::load_ca(&dir.join(edgeward_backend::tls::CA_CERT))?;
        Ok(Service {
            url,
            dir,
            tokens,
            client: TlsClient::new(ca)?,
        })
    }

    /// A split-mode runtime client for this service.
    pub fn remote(&self) -> edgeward_runtime::remote::RemoteBackend {
        let ca = edgeward_runtime::remote::load_ca(&self.dir.join(edgeward_backend::tls::CA_CERT))
            .expect("ca");
        edgeward_runtime::remote::RemoteBackend::new(&self.url, ca).expect("remote")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A raw HTTPS client pinned to one CA, for tests that look at the wire.
#[derive(Clone)]
pub struct TlsClient {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
}

impl TlsClient {
    /// Trust only `ca`.
    pub fn new(ca: Vec<rustls::pki_types::CertificateDer<'static>>) -> anyhow::Result<TlsClient> {
        let mut roots = rustls::RootCertStore::empty();
        for c in ca {
            roots.add(c)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(TlsClient {
            // No pooling: tests send deliberately broken requests, after
            // which the server closes the connection, and a pooled client
            // could race that close on its next request.
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .pool_max_idle_per_host(0)
            .build(https),
        })
    }

    /// Send and read the whole answer.
    pub async fn send(&self, req: http::Request<Bytes>) -> anyhow::Result<http::Response<Bytes>> {
        let resp = self.client.request(req.map(Full::new)).await?;
        let (parts, body) = resp.into_parts();
        Ok(http::Response::from_parts(
            parts,
            body.collect().await?.to_bytes(),
        ))
    }

    /// POST a form.
    pub async fn post_form(
        &self,
        url: &str,
        pairs: &[(&str, &str)],
    ) -> anyhow::Result<http::Response<Bytes>> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            form.append_pair(k, v);
        }
        let req = http::Request::post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Bytes::from(form.finish()))?;
        self.send(req).await
    }
}

/// Split mode in one call: load a built guest as `agent` and attest an
/// instance as `device` through a backend reached over TLS (`remote`), with
/// its stop channel.
pub async fn attest_split(
    component_path: &'static str,
    agent: &str,
    device: &str,
    signer: Arc<dyn edgeward_core::keys::Signer>,
    remote: Arc<edgeward_runtime::remote::RemoteBackend>,
    seed: u64,
    grants: Vec<edgeward_core::grant::GrantName>,
) -> Result<AgentInstance, edgeward_core::egress::ExchangeFailure> {
    let loaded = runtime()
        .load(
            component(component_path),
            AgentSpec {
                name: agent.to_owned(),
                allowed_digests: vec![digest(component_path)],
            },
        )
        .map_err(|e| edgeward_core::egress::ExchangeFailure::Local(e.to_string()))?;
    loaded
        .attest(AttestOptions {
            device: DeviceIdentity {
                id: device.to_owned(),
                signer,
            },
            exchange: remote.clone(),
            egress: remote.clone(),
            stop_channel: Some(remote),
            clock: Arc::new(SystemClock),
            entropy: &mut SeededEntropy::new(seed),
            grants,
            lifetime: None,
            user_assertion: None,
        })
        .await
}

/// An instance made by hand over the wire (no runtime): what a device
/// holds after a raw token exchange.
pub struct RawInstance {
    /// The access token.
    pub token: String,
    /// The backend-assigned instance id.
    pub instance_id: String,
    /// The instance key the token is bound to.
    pub key: edgeward_core::keys::Ed25519Signer,
    /// The key that lets this instance attenuate its token.
    pub chain_key: Option<edgeward_core::caveat::ChainKey>,
    /// The user it acts for, as the backend says.
    pub on_behalf_of: Option<String>,
}

/// A raw token exchange against `svc`: challenge, attestation signed by
/// `device` for `agent` running `component_path`, exchange.
pub async fn raw_exchange(
    svc: &Service,
    agent: &str,
    device: (&str, &dyn edgeward_core::keys::Signer),
    component_path: &'static str,
    seed: u64,
    lifetime: u64,
    user_assertion: Option<&str>,
) -> anyhow::Result<RawInstance> {
    let subject = user_assertion.map(|a| (a, edgeward_core::egress::JWT_TOKEN_TYPE));
    raw_exchange_as(svc, agent, device, component_path, seed, lifetime, subject).await
}

/// [`raw_exchange`] with any subject: `(subject_token, subject_token_type)`,
/// or `None` for the attestation itself. The instance key comes from `seed`
/// (so a test can know a child's key before its exchange).
pub async fn raw_exchange_as(
    svc: &Service,
    agent: &str,
    (device_id, device): (&str, &dyn edgeward_core::keys::Signer),
    component_path: &'static str,
    seed: u64,
    lifetime: u64,
    subject: Option<(&str, &str)>,
) -> anyhow::Result<RawInstance> {
    use edgeward_core::attest::{AttestationClaims, sign_attestation};
    use edgeward_core::egress::{ATTESTATION_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT};
    use edgeward_core::keys::Signer as _;
    let challenge = svc
        .client
        .send(http::Request::get(format!("{}/v1/challenge", svc.url)).body(Bytes::new())?)
        .await?;
    let nonce: serde_json::Value = serde_json::from_slice(challenge.body())?;
    let key = edgeward_core::keys::Ed25519Signer::generate(&mut SeededEntropy::new(seed))?;
    let claims = AttestationClaims {
        nonce: nonce["nonce"].as_str().context("nonce")?.into(),
        device: device_id.into(),
        agent: agent.into(),
        digest: digest(component_path),
        instance_key: key.public_key(),
        grants: vec![],
        lifetime,
        iat: SystemClock.now(),
    };
    let att = sign_attestation(&claims, device_id, device)?;
    let (subject, subject_type) = subject.unwrap_or((att.as_str(), ATTESTATION_TOKEN_TYPE));
    let r = svc
        .client
        .post_form(
            &format!("{}/v1/token", svc.url),
            &[
                ("grant_type", TOKEN_EXCHANGE_GRANT),
                ("actor_token", &att),
                ("actor_token_type", ATTESTATION_TOKEN_TYPE),
                ("subject_token", subject),
                ("subject_token_type", subject_type),
            ],
        )
        .await?;
    let v: serde_json::Value = serde_json::from_slice(r.body())?;
    anyhow::ensure!(r.status() == 200, "exchange refused: {v}");
    Ok(RawInstance {
        token: v["access_token"].as_str().context("token")?.into(),
        instance_id: v["edgeward_instance_id"].as_str().context("id")?.into(),
        key,
        chain_key: v["edgeward_chain_key"]
            .as_str()
            .and_then(edgeward_core::caveat::ChainKey::from_b64),
        on_behalf_of: v["edgeward_on_behalf_of"].as_str().map(str::to_owned),
    })
}

/// One proxied GET through `svc`'s egress route with `presented` (a token
/// or an attenuated token) and a fresh DPoP proof from `key`: the status
/// and the refusal class (empty if none).
pub async fn raw_egress(
    svc: &Service,
    presented: &str,
    key: &dyn edgeward_core::keys::Signer,
    url: &str,
    grant: &str,
) -> (u16, String) {
    let a = raw_call(svc, presented, key, "GET", url, grant, &[], b"").await;
    (a.status, a.class)
}

/// What the backend answered a raw proxied call.
#[derive(Debug)]
pub struct RawAnswer {
    /// HTTP status.
    pub status: u16,
    /// The refusal class (`edgeward-refusal`), empty for an upstream answer.
    pub class: String,
    /// The body.
    pub body: Bytes,
}

impl RawAnswer {
    /// The body as JSON (a problem document for a refusal).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

/// One proxied call of any method, with extra headers and a body.
#[allow(clippy::too_many_arguments)]
pub async fn raw_call(
    svc: &Service,
    presented: &str,
    key: &dyn edgeward_core::keys::Signer,
    method: &str,
    url: &str,
    grant: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawAnswer {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut jti = [0u8; 16];
    jti[..8].copy_from_slice(&N.fetch_add(1, Ordering::SeqCst).to_be_bytes());
    let proof = edgeward_core::dpop::create_proof(
        key,
        &method.parse().expect("method"),
        &url.parse().expect("url"),
        presented,
        SystemClock.now(),
        &jti,
    )
    .expect("proof");
    let mut req = http::Request::post(format!("{}/v1/egress", svc.url))
        .header("edgeward-method", method)
        .header("authorization", format!("DPoP {presented}"))
        .header("dpop", proof)
        .header("edgeward-target", url)
        .header("edgeward-grant", grant);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let r = svc
        .client
        .send(req.body(Bytes::copy_from_slice(body)).expect("request"))
        .await
        .expect("egress");
    RawAnswer {
        status: r.status().as_u16(),
        class: r
            .headers()
            .get("edgeward-refusal")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_default(),
        body: r.body().clone(),
    }
}

/// RFC 7009 revocation of `token` at `svc`, with a DPoP proof from `key` if
/// given: the HTTP status.
pub async fn raw_revoke(
    svc: &Service,
    token: &str,
    key: Option<&dyn edgeward_core::keys::Signer>,
) -> u16 {
    static N: AtomicU64 = AtomicU64::new(1 << 40);
    let url = format!("{}/v1/revoke", svc.url);
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("token", token)
        .append_pair("token_type_hint", "access_token");
    let mut req =
        http::Request::post(&url).header("content-type", "application/x-www-form-urlencoded");
    if let Some(key) = key {
        let mut jti = [0u8; 16];
        jti[..8].copy_from_slice(&N.fetch_add(1, Ordering::SeqCst).to_be_bytes());
        let proof = edgeward_core::dpop::create_proof(
            key,
            &http::Method::POST,
            &url.parse().expect("url"),
            token,
            SystemClock.now(),
            &jti,
        )
        .expect("proof");
        req = req.header("dpop", proof);
    }
    svc.client
        .send(req.body(Bytes::from(form.finish())).expect("request"))
        .await
        .expect("revoke")
        .status()
        .as_u16()
}

/// Pieces of a test config (TOML), so a test file writes only what is its
/// own. Every grant uses an `x-api-key` header credential read from an
/// environment-style secret the test passes to [`Service::start`].
pub mod conf {
    use edgeward_core::digest::ComponentDigest;
    use edgeward_core::keys::Signer;

    /// `[backend]` as the TLS-service tests use it (the IdP's assertions
    /// name `edgeward-test` as their audience).
    pub const BACKEND: &str = "[backend]\nissuer = \"https://backend.test\"\naudience = \"edgeward-test\"\ntrust_domain = \"edgeward.test\"\n";

    fn list(items: &[&str]) -> String {
        let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
        format!("[{}]", quoted.join(", "))
    }

    /// A `[[device]]` enrolled with `key`'s public half.
    pub fn device(id: &str, key: &dyn Signer) -> String {
        format!(
            "\n[[device]]\nid = \"{id}\"\nowner = \"ops@edgeward.invalid\"\npublic_key = \"{}\"\n",
            key.public_key()
        )
    }

    /// A `[[grant]]` on `origin` for `methods` under one path prefix; lines
    /// appended to the result belong to the same table.
    pub fn grant(name: &str, origin: &str, methods: &[&str], prefix: &str, env: &str) -> String {
        format!(
            "\n[[grant]]\nname = \"{name}\"\norigin = \"{origin}\"\nmethods = {}\npath_prefixes = [\"{prefix}\"]\ncredential = {{ kind = \"header\", name = \"x-api-key\" }}\nsecret = {{ env = \"{env}\" }}\n",
            list(methods)
        )
    }

    /// An `[[agent]]` running `digest` on `devices` (up to 16 live
    /// instances per device).
    pub fn agent(
        name: &str,
        digest: &ComponentDigest,
        grants: &[&str],
        devices: &[&str],
    ) -> String {
        format!(
            "\n[[agent]]\nname = \"{name}\"\nowner = \"tests@edgeward.invalid\"\ndigests = [\"{digest}\"]\ngrants = {}\ndevices = {}\nmax_instances_per_device = 16\n",
            list(grants),
            list(devices)
        )
    }

    /// The test identity provider `corp` (`https://idp.test`) with its JWKS,
    /// trusted for `agents`.
    pub fn user_issuer(jwks: &str, agents: &[&str]) -> String {
        format!(
            "\n[[user_issuer]]\nname = \"corp\"\nissuer = \"https://idp.test\"\naudience = \"edgeward-test\"\njwks = '{jwks}'\nagents = {}\n",
            list(agents)
        )
    }
}
