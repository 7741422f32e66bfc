//! Command-line interface.

use crate::{demo, embedded};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use edgeward_core::digest::ComponentDigest;
use std::path::PathBuf;
use std::process::ExitCode;

/// Run untrusted AI agents as sandboxed Wasm components; every credential is
/// attached outside the sandbox.
#[derive(Parser, Debug)]
#[command(name = "edgeward", version, about)]
pub struct Cli {
    /// More host logging (-v: debug, -vv: trace). `EDGEWARD_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    pub fn log_filter(&self) -> &'static str {
        match self.verbose {
            0 => "warn,edgeward=info,edgeward_runtime=info,edgeward_backend=info",
            1 => "info,edgeward=debug,edgeward_runtime=debug,edgeward_backend=debug",
            _ => "debug,edgeward=trace,edgeward_runtime=trace,edgeward_backend=trace",
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a component's digest (`sha256:…`), as the config's `digests` lists it.
    Digest {
        /// The component file.
        component: PathBuf,
    },
    /// Run one task of a component in embedded mode (runtime and backend in
    /// this process).
    Run {
        /// The TOML config with agents and grants.
        #[arg(long)]
        config: PathBuf,
        /// The agent to run as; by default, the one agent whose digests
        /// include this component.
        #[arg(long)]
        agent: Option<String>,
        /// The task string passed to the agent's `run`.
        #[arg(long)]
        task: String,
        /// The component file.
        component: PathBuf,
    },
    /// Start a demo upstream that requires an API key, run the example agent
    /// against it, and show that the agent never saw the key.
    Demo {
        /// The example agent component.
        #[arg(long, default_value = "guest/target/wasm32-wasip2/release/hello.wasm")]
        component: PathBuf,
    },
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Digest { component } => {
            let bytes = read_component(&component)?;
            println!("{}", ComponentDigest::of(&bytes));
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            config,
            agent,
            task,
            component,
        } => {
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("cannot read config {}", config.display()))?;
            let config = edgeward_core::config::Config::parse(&text)
                .with_context(|| format!("invalid config {}", config.display()))?;
            let bytes = read_component(&component)?;
            let report = tokio_runtime()?.block_on(embedded::run_once(
                &config,
                agent.as_deref(),
                &bytes,
                &task,
            ))?;
            Ok(embedded::print_report(&report))
        }
        Command::Demo { component } => {
            let bytes = read_component(&component).with_context(|| {
                "build the example agent first: \
                 cargo build --manifest-path guest/Cargo.toml --release --target wasm32-wasip2 -p hello \
                 (scripts/demo does this for you)"
            })?;
            tokio_runtime()?.block_on(demo::run(&bytes))
        }
    }
}

fn read_component(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read component {}", path.display()))
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
