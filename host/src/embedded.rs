//! Embedded mode: the backend and the runtime in one process, joined by the
//! `Egress` trait from core.

use anyhow::{Context as _, bail};
use edgeward_backend::Backend;
use edgeward_core::config::{AgentConfig, Config};
use edgeward_core::digest::ComponentDigest;
use edgeward_runtime::{AgentSpec, LogSource, Runtime, RuntimeConfig, TaskReport};
use std::process::ExitCode;
use std::sync::Arc;

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

/// A fresh random instance id.
pub fn new_instance_id() -> String {
    let bytes: [u8; 12] = rand::random();
    format!("i-{}", hex::encode(bytes))
}

/// Load the backend and the runtime from a config and run one task.
pub async fn run_once(
    config: &Config,
    agent: Option<&str>,
    component: &[u8],
    task: &str,
) -> anyhow::Result<TaskReport> {
    let digest = ComponentDigest::of(component);
    let agent = pick_agent(config, agent, &digest)?;
    let backend = Backend::from_config(config).context("cannot start the backend")?;
    let runtime = Runtime::new(runtime_config(config))?;
    let spec = AgentSpec {
        name: agent.name.clone(),
        allowed_digests: agent.digests.clone(),
        grants: config.rules_for(agent),
        limits: agent.limits,
    };
    let loaded = runtime.load(component, spec)?;
    let instance = loaded.instance(new_instance_id(), None, None, Arc::new(backend));
    Ok(instance.run(task).await)
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
        eprintln!("[agent {source} {:?}] {}", record.level, record.message);
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
