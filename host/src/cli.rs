//! Command-line interface.

use crate::{admin_cli, demo, embedded, keys, serve, split};
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
    /// Run one task of a component: in embedded mode with `--config`
    /// (runtime and backend in this process), or in split mode with
    /// `--backend` (the backend over TLS).
    Run {
        /// Embedded mode: the TOML config with agents and grants.
        #[arg(long, conflicts_with_all = ["backend", "ca", "device", "device_key"])]
        config: Option<PathBuf>,
        /// The agent to run as; in embedded mode, by default the one agent
        /// whose digests include this component.
        #[arg(long)]
        agent: Option<String>,
        /// Split mode: the backend's URL, `https://host:port`.
        #[arg(long, requires_all = ["device", "device_key", "agent"])]
        backend: Option<String>,
        /// Split mode: the backend's CA certificate (from `edgeward init`); the
        /// only certificate authority trusted for the backend.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Split mode: this device's enrolled id.
        #[arg(long)]
        device: Option<String>,
        /// Split mode: this device's private key (from `edgeward keygen`).
        #[arg(long)]
        device_key: Option<PathBuf>,
        /// Split mode, development only: talk to a backend started with
        /// `--danger-plaintext-http` (no TLS: tokens travel in clear text).
        #[arg(long)]
        danger_plaintext_http: bool,
        /// Requested token lifetime in seconds (capped by the agent's maximum).
        #[arg(long)]
        token_lifetime: Option<u64>,
        /// Act for a user: a file holding the user's assertion (one JWT from
        /// an issuer the backend trusts, a `[[user_issuer]]`).
        #[arg(long, value_name = "FILE")]
        user_assertion: Option<PathBuf>,
        /// A sub-agent the agent may start through the WIT `delegation`
        /// interface: its registered name and its component. Repeatable.
        #[arg(long = "sub-agent", value_name = "NAME=COMPONENT")]
        sub_agents: Vec<String>,
        /// The task string passed to the agent's `run`.
        #[arg(long)]
        task: String,
        /// The component file.
        component: PathBuf,
    },
    /// Create the backend's data directory: a private CA, the server
    /// certificate, the token signing key and the nonce key (files 0600),
    /// the registry database and the first admin's credential.
    Init {
        /// Where to put them.
        #[arg(long)]
        data_dir: PathBuf,
        /// Extra DNS names or IP addresses for the server certificate
        /// (localhost, 127.0.0.1 and ::1 are always included).
        #[arg(long)]
        san: Vec<String>,
        /// Replace existing key material (issued tokens and devices' CA pins stop working).
        #[arg(long)]
        force: bool,
    },
    /// Create a device key pair; prints the public key line for the config.
    Keygen {
        /// Signature algorithm.
        #[arg(long, value_enum, default_value = "ed25519")]
        alg: Alg,
        /// Where to write the private key (created with mode 0600).
        #[arg(long)]
        out: PathBuf,
    },
    /// Enrol this device with a one-time code from `edgeward device invite`:
    /// the device's public key goes to the backend, the private key stays.
    Enroll {
        /// The backend's URL, `https://host:port`.
        #[arg(long)]
        backend: String,
        /// The backend's CA certificate.
        #[arg(long)]
        ca: PathBuf,
        /// The one-time code.
        #[arg(long)]
        code: String,
        /// The id to enrol this device as.
        #[arg(long)]
        device: String,
        /// This device's private key (from `edgeward keygen`).
        #[arg(long)]
        device_key: PathBuf,
    },
    /// Run the backend service: token exchange and the egress proxy, over TLS.
    Serve {
        /// The TOML config (agents, grants, devices, backend settings).
        #[arg(long)]
        config: PathBuf,
        /// The data directory made by `edgeward init`.
        #[arg(long)]
        data_dir: PathBuf,
        /// Listen address (default: the config's backend.listen).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Development only: serve plain HTTP instead of TLS. Tokens and
        /// guest requests then travel in clear text.
        #[arg(long)]
        danger_plaintext_http: bool,
        /// The admin API's Unix socket, created with mode 0600 (default:
        /// <data-dir>/admin.sock).
        #[arg(long, value_name = "PATH")]
        admin_socket: Option<PathBuf>,
    },
    /// Start a demo upstream that requires an API key, run the example agent
    /// against it, and show that the agent never saw the key.
    Demo {
        /// The example agent component.
        #[arg(long, default_value = "guest/target/wasm32-wasip2/release/hello.wasm")]
        component: PathBuf,
    },
    #[command(flatten)]
    Admin(admin_cli::AdminCommand),
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Digest { component } => {
            let bytes = crate::extras::read_component(&component)?;
            println!("{}", ComponentDigest::of(&bytes));
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            config,
            agent,
            backend,
            ca,
            device,
            device_key,
            danger_plaintext_http,
            token_lifetime,
            user_assertion,
            sub_agents,
            task,
            component,
        } => {
            let bytes = crate::extras::read_component(&component)?;
            let extras = crate::extras::Extras::read(user_assertion.as_deref(), &sub_agents)?;
            let report = match (config, backend) {
                (Some(config), None) => {
                    let config = load_config(&config)?;
                    tokio_runtime()?.block_on(embedded::run_once(
                        &config,
                        agent.as_deref(),
                        &bytes,
                        &task,
                        token_lifetime,
                        &extras,
                    ))?
                }
                (None, Some(url)) => {
                    let split = split::Split {
                        url,
                        ca,
                        device: device.context("--device is required with --backend")?,
                        device_key: device_key
                            .context("--device-key is required with --backend")?,
                        agent: agent.context("--agent is required with --backend")?,
                        danger_plaintext_http,
                        token_lifetime,
                    };
                    tokio_runtime()?.block_on(split.run_once(&bytes, &task, &extras))?
                }
                _ => {
                    anyhow::bail!("give either --config (embedded mode) or --backend (split mode)")
                }
            };
            Ok(embedded::print_report(&report))
        }
        Command::Init {
            data_dir,
            san,
            force,
        } => {
            edgeward_backend::tls::init(&data_dir, &san, force, &mut |b: &mut [u8]| {
                rand::RngCore::fill_bytes(&mut rand::rng(), b)
            })?;
            println!("created backend key material in {}", data_dir.display());
            let now = edgeward_core::clock::Clock::now(&edgeward_core::clock::SystemClock);
            match edgeward_backend::tls::init_registry(&data_dir, now, &mut |b: &mut [u8]| {
                rand::RngCore::fill_bytes(&mut rand::rng(), b)
            })? {
                Some(credential) => println!(
                    "  the first admin principal is `{}`; its credential is in {} (mode 0600): \
                     export EDGEWARD_ADMIN_CREDENTIAL=\"$(cat {})\" or pass --credential-file",
                    edgeward_backend::tls::FIRST_ADMIN,
                    credential.display(),
                    credential.display()
                ),
                None => println!(
                    "  the registry {} already has admin principals; they are kept",
                    data_dir.join(edgeward_backend::tls::REGISTRY_DB).display()
                ),
            }
            println!(
                "  give devices the CA certificate: {}",
                data_dir.join(edgeward_backend::tls::CA_CERT).display()
            );
            println!(
                "  then: edgeward serve --config edgeward.toml --data-dir {}",
                data_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Enroll {
            backend,
            ca,
            code,
            device,
            device_key,
        } => {
            let signer = keys::load(&device_key)?;
            let remote = edgeward_runtime::remote::RemoteBackend::new(
                &backend,
                edgeward_runtime::remote::load_ca(&ca)?,
            )?;
            tokio_runtime()?.block_on(remote.enroll(&code, &device, &signer.public_key()))?;
            println!("device {device} enrolled");
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { alg, out } => {
            let public = keys::generate(alg, &out)?;
            println!(
                "wrote the private key to {} (mode 0600); enrol the device with:",
                out.display()
            );
            println!();
            println!("[[device]]");
            println!("id = \"<device id>\"");
            println!("owner = \"<who answers for it>\"");
            println!("public_key = \"{public}\"");
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            config,
            data_dir,
            listen,
            danger_plaintext_http,
            admin_socket,
        } => {
            let config = load_config(&config)?;
            let admin_socket = admin_socket.unwrap_or_else(|| data_dir.join("admin.sock"));
            tokio_runtime()?.block_on(serve::run(
                &config,
                &data_dir,
                listen,
                danger_plaintext_http,
                &admin_socket,
            ))
        }
        Command::Demo { component } => {
            let bytes = crate::extras::read_component(&component).with_context(|| {
                "build the example agent first: \
                 cargo build --manifest-path guest/Cargo.toml --release --target wasm32-wasip2 -p hello \
                 (scripts/demo does this for you)"
            })?;
            tokio_runtime()?.block_on(demo::run(&bytes))
        }
        Command::Admin(cmd) => admin_cli::run(cmd),
    }
}

/// Signature algorithm of a device key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Alg {
    /// Ed25519 (EdDSA).
    Ed25519,
    /// ECDSA P-256 with SHA-256.
    Es256,
}

pub fn load_config(path: &PathBuf) -> anyhow::Result<edgeward_core::config::Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    edgeward_core::config::Config::parse(&text)
        .with_context(|| format!("invalid config {}", path.display()))
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
