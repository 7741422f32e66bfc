//! The parts every scenario uses: one upstream on loopback, the config, and
//! instances of the benchmark agent in embedded and split mode.

use anyhow::Context as _;
use bytes::Bytes;
use edgeward_core::clock::{Clock, SystemClock};
use edgeward_core::config::{Config, EMBEDDED_DEVICE};
use edgeward_core::egress::{Egress, EgressCall, EgressFuture, StopChannel, TokenExchange};
use edgeward_core::entropy::SeededEntropy;
use edgeward_core::keys::{Ed25519Signer, Signer};
use edgeward_core::problem::REFUSAL_HEADER;
use edgeward_runtime::{AgentInstance, AgentSpec, AttestOptions, DeviceIdentity};
use edgeward_tests::{BENCH_WASM, Service, Upstream, component, digest, respond, runtime};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The upstream credential. The status-quo guest sends it itself.
pub const KEY: &str = "bench-upstream-key-6f1c2d0e9a8b7c6d";
/// A typical small JSON answer (scanned and redacted on the edgeward path).
const ANSWER: &str = r#"{"id":"item-42","status":"ok","items":[1,2,3],"note":"benchmark answer"}"#;

/// The benchmark upstream: answers 200 to the key, 401 to anything else.
pub async fn upstream() -> Upstream {
    Upstream::start(|r| {
        if r.headers.get("x-api-key").map(|v| v.as_bytes()) == Some(KEY.as_bytes()) {
            respond(200, &[("content-type", "application/json")], ANSWER)
        } else {
            respond(401, &[], "no key")
        }
    })
    .await
}

/// Agent `bench` with grant `api` on `origin`, runnable on `dev-bench`
/// (whose key is `device`) and, as every agent, on the embedded device.
pub fn config(origin: &str, device: &Ed25519Signer) -> String {
    format!(
        r#"
[backend]
issuer = "https://backend.bench"
audience = "edgeward-bench"
trust_domain = "edgeward.bench"

[[device]]
id = "dev-bench"
owner = "bench@edgeward.invalid"
public_key = "{device}"

[[grant]]
name = "api"
origin = "{origin}"
methods = ["GET"]
path_prefixes = ["/v1"]
credential = {{ kind = "header", name = "x-api-key" }}
secret = {{ env = "API_KEY" }}

[[agent]]
name = "bench"
owner = "bench@edgeward.invalid"
digests = ["{digest}"]
grants = ["api"]
devices = ["dev-bench"]
max_instances_per_device = 10000
max_token_lifetime_s = 3600
"#,
        device = device.public_key(),
        digest = digest(BENCH_WASM),
    )
}

pub fn device_key() -> Ed25519Signer {
    Ed25519Signer::generate(&mut SeededEntropy::new(2026)).expect("seeded key")
}

/// An in-process backend with its device key.
pub struct Embedded {
    pub backend: edgeward_backend::Backend,
    pub device: Arc<dyn Signer>,
    seed: Mutex<u64>,
}

impl Embedded {
    pub fn new(config_text: &str) -> anyhow::Result<Embedded> {
        Embedded::with_clock(config_text, Arc::new(SystemClock))
    }

    pub fn with_clock(config_text: &str, clock: Arc<dyn Clock>) -> anyhow::Result<Embedded> {
        let config = Config::parse(config_text).context("config")?;
        let embedded = edgeward_backend::embedded::embedded(
            &config,
            edgeward_tests::secrets_from(&[("API_KEY", KEY)]),
            clock,
            edgeward_tests::seeded(7),
        )?;
        Ok(Embedded {
            backend: embedded.backend,
            device: embedded.device_key,
            seed: Mutex::new(100),
        })
    }

    /// Attest a fresh instance; its calls go through `wrap(backend)`.
    pub async fn instance(
        &self,
        wrap: impl FnOnce(Arc<dyn Egress>) -> Arc<dyn Egress>,
    ) -> anyhow::Result<AgentInstance> {
        let shared = Arc::new(self.backend.clone());
        let seed = {
            let mut s = self.seed.lock().map_err(|_| anyhow::anyhow!("seed lock"))?;
            *s += 1;
            *s
        };
        let device = DeviceIdentity {
            id: EMBEDDED_DEVICE.to_owned(),
            signer: Arc::clone(&self.device),
        };
        attest(device, shared, seed, wrap).await
    }
}

/// The backend as a TLS service on loopback, with a file-backed registry.
pub async fn service(config_text: &str) -> anyhow::Result<Service> {
    service_with_clock(config_text, Arc::new(SystemClock)).await
}

pub async fn service_with_clock(
    config_text: &str,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Service> {
    Service::start(config_text, &[("API_KEY", KEY)], clock).await
}

/// A split-mode instance on device `dev-bench`.
pub async fn split_instance(
    svc: &Service,
    seed: u64,
    wrap: impl FnOnce(Arc<dyn Egress>) -> Arc<dyn Egress>,
) -> anyhow::Result<AgentInstance> {
    let device = DeviceIdentity {
        id: "dev-bench".to_owned(),
        signer: Arc::new(device_key()),
    };
    attest(device, Arc::new(svc.remote()), seed, wrap).await
}

/// An instance of the bench agent on `device`, through `backend` (in
/// process or remote), its calls going through `wrap(backend)`.
async fn attest<B: Egress + TokenExchange + StopChannel>(
    device: DeviceIdentity,
    backend: Arc<B>,
    seed: u64,
    wrap: impl FnOnce(Arc<dyn Egress>) -> Arc<dyn Egress>,
) -> anyhow::Result<AgentInstance> {
    Ok(loaded()?
        .attest(AttestOptions {
            device,
            exchange: backend.clone(),
            egress: wrap(backend.clone()),
            stop_channel: Some(backend),
            clock: Arc::new(SystemClock),
            entropy: &mut SeededEntropy::new(seed),
            grants: Vec::new(),
            lifetime: None,
            user_assertion: None,
        })
        .await?)
}

fn loaded() -> anyhow::Result<edgeward_runtime::LoadedAgent> {
    Ok(runtime().load(
        component(BENCH_WASM),
        AgentSpec {
            name: "bench".into(),
            allowed_digests: vec![digest(BENCH_WASM)],
        },
    )?)
}

/// No wrapping.
pub fn direct(e: Arc<dyn Egress>) -> Arc<dyn Egress> {
    e
}

/// An `Egress` that notes when each call started and whether it was let
/// through: a call that starts after a revocation returned and is let
/// through is a call accepted after the revocation.
pub struct Recording {
    inner: Arc<dyn Egress>,
    pub calls: Arc<Mutex<Vec<(Instant, bool)>>>,
}

impl Recording {
    pub fn wrap(
        calls: Arc<Mutex<Vec<(Instant, bool)>>>,
    ) -> impl FnOnce(Arc<dyn Egress>) -> Arc<dyn Egress> {
        move |inner| Arc::new(Recording { inner, calls })
    }
}

impl Egress for Recording {
    fn forward(&self, call: EgressCall) -> EgressFuture {
        let started = Instant::now();
        let fut = self.inner.forward(call);
        let calls = Arc::clone(&self.calls);
        Box::pin(async move {
            let result: Result<http::Response<Bytes>, _> = fut.await;
            // In split mode a refusal arrives as a response with the
            // backend's marker header (which upstream answers cannot carry).
            let through = matches!(&result, Ok(r) if !r.headers().contains_key(REFUSAL_HEADER));
            if let Ok(mut c) = calls.lock() {
                c.push((started, through));
            }
            result
        })
    }
}
