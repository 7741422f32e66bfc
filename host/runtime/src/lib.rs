//! edgeward-runtime: the edge side of edgeward.
//!
//! It runs untrusted agent components under wasmtime with no ambient
//! authority, and sends every HTTP request they make through edgeward's
//! egress hook to an [`Egress`](edgeward_core::egress::Egress) — never to a
//! socket. It holds no upstream credential and cannot name one: this crate
//! does not depend on the backend crate.
//!
//! 1. Build a [`Runtime`] once (engine, linker, epoch ticker).
//! 2. [`Runtime::load`] a component as an agent: the sha256 is checked
//!    against the device's allow-list, then it is compiled and pre-linked
//!    (`InstancePre`, cached by digest).
//! 3. [`LoadedAgent::attest`] makes an instance: a fresh instance key pair,
//!    an attestation signed with the device key, exchanged for a short-lived
//!    token that also carries the agent's grants and limits. The token stays
//!    in memory and is renewed before it expires.
//! 4. [`AgentInstance::run`] runs one task in a fresh `Store`, bounded in
//!    time (epoch deadline), memory and tables (`ResourceLimiter`), stdout and
//!    stderr (captured into the agent log) and log records. Every HTTP
//!    request of the guest goes, with the token, to the [`Egress`].
//!
//! ```no_run
//! # async fn demo(bytes: Vec<u8>, device: edgeward_runtime::DeviceIdentity,
//! #               backend: std::sync::Arc<edgeward_runtime::remote::RemoteBackend>) {
//! use edgeward_runtime::{AgentSpec, AttestOptions, Runtime, RuntimeConfig};
//! use std::sync::Arc;
//! let runtime = Runtime::new(RuntimeConfig::default()).expect("engine");
//! let spec = AgentSpec {
//!     name: "weather-bot".into(),
//!     allowed_digests: vec![edgeward_core::digest::ComponentDigest::of(&bytes)],
//! };
//! let agent = runtime.load(&bytes, spec).expect("component allowed and valid");
//! let mut os_random = |buf: &mut [u8]| { /* fill from the OS */ };
//! let instance = agent
//!     .attest(AttestOptions {
//!         device,
//!         exchange: backend.clone(),
//!         egress: backend.clone(),
//!         stop_channel: Some(backend),
//!         clock: Arc::new(edgeward_core::clock::SystemClock),
//!         entropy: &mut os_random,
//!         grants: vec![],
//!         lifetime: None,
//!         user_assertion: None,
//!     })
//!     .await
//!     .expect("attested");
//! let report = instance.run("https://api.example/v1/hello").await;
//! println!("{:?}", report.outcome);
//! # }
//! ```
//!
//! [`Egress`]: edgeward_core::egress::Egress
//!
//! Non-goals: any knowledge of upstream credentials, and any state on disk.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod agent;
mod bindings;
mod credentials;
mod delegation;
mod egress_hook;
mod engine;
mod error;
mod limits;
pub mod remote;
mod stop;
mod task;

pub use agent::{AgentInstance, AgentSpec, AttestOptions, LoadedAgent, Runtime, TaskReport};
pub use credentials::DeviceIdentity;
pub use delegation::{ChildRights, DelegationError};
pub use engine::RuntimeConfig;
pub use error::{RuntimeError, TaskError};
pub use limits::LimitExceeded;
pub use task::{InstanceIdentity, LogLevel, LogRecord, LogSource};
