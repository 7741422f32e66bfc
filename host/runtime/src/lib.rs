//! edgeward-runtime: the edge side of edgeward.
//!
//! It runs untrusted agent components under wasmtime with no ambient
//! authority, and sends every HTTP request they make through edgeward's
//! egress hook to an [`Egress`](edgeward_core::egress::Egress) — never to a
//! socket. It holds no upstream credential and cannot name one: this crate
//! does not depend on the backend crate.
//!
//! 1. Build a [`Runtime`] once (engine, linker, epoch ticker).
//! 2. [`Runtime::load`] a component for an [`AgentSpec`]: the sha256 is
//!    checked against the agent's allow-list, then it is compiled and
//!    pre-linked (`InstancePre`).
//! 3. [`LoadedAgent::instance`] makes an identity bound to an egress.
//! 4. [`AgentInstance::run`] runs one task in a fresh `Store`, bounded in
//!    time (epoch deadline), memory and tables (`ResourceLimiter`), stdout and
//!    stderr (captured into the agent log) and log records.
//!
//! ```no_run
//! # async fn demo(bytes: Vec<u8>, spec: edgeward_runtime::AgentSpec,
//! #               egress: std::sync::Arc<dyn edgeward_core::egress::Egress>) {
//! use edgeward_runtime::{Runtime, RuntimeConfig};
//! let runtime = Runtime::new(RuntimeConfig::default()).expect("engine");
//! let agent = runtime.load(&bytes, spec).expect("component allowed and valid");
//! let instance = agent.instance("i-1".into(), None, None, egress);
//! let report = instance.run("https://api.example/v1/hello").await;
//! println!("{:?}", report.outcome);
//! # }
//! ```
//!
//! Non-goals: attestation and tokens (they arrive with the split-mode
//! backend), and any knowledge of credentials.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod agent;
mod bindings;
mod egress_hook;
mod engine;
mod error;
mod limits;
mod task;

pub use agent::{AgentInstance, AgentSpec, LoadedAgent, Runtime, TaskReport};
pub use engine::RuntimeConfig;
pub use error::{RuntimeError, TaskError};
pub use limits::LimitExceeded;
pub use task::{InstanceIdentity, LogLevel, LogRecord, LogSource};
