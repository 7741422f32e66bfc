//! Embedded mode: the backend and the runtime in one process, joined by the
//! `Egress` trait from core.

use anyhow::{Context as _, bail};
use edgeward_core::clock::{Clock, SystemClock};
use edgeward_core::config::{AgentConfig, Config, EMBEDDED_DEVICE};
use edgeward_core::digest::ComponentDigest;
use edgeward_runtime::{
    AgentInstance, AgentSpec, AttestOptions, DeviceIdentity, LogSource, Runtime, RuntimeConfig,
    TaskReport,
};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

/// Pick the agent for a component: by name, or the only one allowing its digest.
pub fn pick_agent<'c>(
    config: &'c Config,
    name: Option<&str>,
    digest: &ComponentDigest,
) -> anyhow::Result<&'c AgentConfig> {
    if let Some(name) = name {
        return config
            .agent(name)
            .with_context(|| format!("the config defines no agent named {name}"));
    }
    let matching: Vec<&AgentConfig> = config
        .agents
        .iter()
        .filter(|a| a.digests.contains(digest))
        .collect();
    match matching.as_slice() {
        [one] => Ok(one),
        [] => {
            bail!("no agent in the config allows component {digest}; add it to an agent's digests")
        }
        _ => bail!("several agents allow component {digest}; choose one with --agent"),
    }
}

/// The runtime settings implied by a config.
pub fn runtime_config(config: &Config) -> RuntimeConfig {
    RuntimeConfig {
        pooling: config.runtime.pooling,
        max_concurrent_tasks: config.runtime.max_concurrent_tasks,
        max_memory_bytes: config
            .agents
            .iter()
            .map(|a| a.limits.memory_bytes)
            .max()
            .unwrap_or(RuntimeConfig::default().max_memory_bytes),
    }
}

/// The operating system's randomness, as core's `Entropy`.
pub fn os_entropy(buf: &mut [u8]) {
    rand::RngCore::fill_bytes(&mut rand::rng(), buf);
}

/// Load the backend and the runtime from a config, attest one instance
/// in-process, and run one task.
pub async fn run_once(
    config: &Config,
    agent: Option<&str>,
    component: &[u8],
    task: &str,
    token_lifetime: Option<u64>,
    extras: &crate::extras::Extras,
) -> anyhow::Result<TaskReport> {
    let digest = ComponentDigest::of(component);
    let agent = pick_agent(config, agent, &digest)?;
    let instance = start(config, agent, component, token_lifetime, extras).await?;
    Ok(instance.run(task).await)
}

/// Build the in-process backend and attest an instance of `agent`.
pub async fn start(
    config: &Config,
    agent: &AgentConfig,
    component: &[u8],
    token_lifetime: Option<u64>,
    extras: &crate::extras::Extras,
) -> anyhow::Result<AgentInstance> {
    let entropy: edgeward_backend::exchange::SharedEntropy =
        Arc::new(Mutex::new(Box::new(os_entropy)));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let embedded = edgeward_backend::embedded::embedded(
        config,
        edgeward_backend::resolve_secret,
        Arc::clone(&clock),
        entropy,
    )
    .context("cannot start the backend")?;
    let runtime = Runtime::new(runtime_config(config))?;
    let spec = AgentSpec {
        name: agent.name.clone(),
        allowed_digests: agent.digests.clone(),
    };
    let loaded = runtime.load(component, spec)?;
    let backend = Arc::new(embedded.backend);
    let instance = loaded
        .attest(AttestOptions {
            device: DeviceIdentity {
                id: EMBEDDED_DEVICE.to_owned(),
                signer: embedded.device_key,
            },
            exchange: backend.clone(),
            egress: backend.clone(),
            stop_channel: Some(backend.clone()),
            clock,
            entropy: &mut os_entropy,
            grants: Vec::new(),
            lifetime: token_lifetime,
            user_assertion: extras.user_assertion.clone(),
        })
        .await
        .context("the instance could not attest")?;
    // Guests may wait for approval tickets through the in-process backend.
    extras.attach(&runtime, instance.with_approvals(backend))
}

/// Guest text on a terminal: control characters (escape sequences, carriage
/// returns) are shown escaped, so an agent cannot drive the terminal or fake
/// lines of output.
pub fn without_controls(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Print the agent log to stderr and the result to stdout; the exit code says
/// how the task ended (0 ok, 1 the agent returned an error, 3 the sandbox
/// stopped it).
pub fn print_report(report: &TaskReport) -> ExitCode {
    for record in &report.logs {
        let source = match record.source {
            LogSource::Log => "log",
            LogSource::Stdout => "stdout",
            LogSource::Stderr => "stderr",
        };
        eprintln!(
            "[agent {source} {:?}] {}",
            record.level,
            without_controls(&record.message)
        );
    }
    if report.logs_dropped > 0 {
        eprintln!(
            "[agent] {} log records dropped (limit reached)",
            report.logs_dropped
        );
    }
    match &report.outcome {
        Ok(Ok(result)) => {
            println!("{result}");
            ExitCode::SUCCESS
        }
        Ok(Err(message)) => {
            eprintln!("agent returned an error: {message}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("task stopped by the sandbox: {e}");
            ExitCode::from(3)
        }
    }
}
