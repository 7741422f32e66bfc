//! The admin commands: devices, agents, revocation, inventory, the audit log,
//! admin principals, policies and approvals (`policy_cli`). Every one is a call to the admin API of a running
//! `edgeward serve` over its Unix socket; none of them opens the database,
//! so the server stays the only writer and every change is audited with the
//! person who made it.

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use edgeward_backend::admin::api::{
    AgentChange, AgentView, AuditPage, AuditView, DeviceView, ErrorBody, HeadView, Inventory,
    InviteView, NewPrincipal, PrincipalView, TombstoneView, VerifyView,
};
use edgeward_backend::store::Role;
use http_body_util::{BodyExt as _, Full};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use zeroize::Zeroizing;

/// Where the admin socket is when neither `--admin-socket` nor
/// `EDGEWARD_ADMIN_SOCKET` says.
const DEFAULT_SOCKET: &str = "edgeward-data/admin.sock";
const SOCKET_ENV: &str = "EDGEWARD_ADMIN_SOCKET";
const CREDENTIAL_ENV: &str = "EDGEWARD_ADMIN_CREDENTIAL";
/// Audit records fetched per call by `audit export`.
const EXPORT_PAGE: u64 = 1000;

/// How to reach the admin API, and as whom.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// The admin socket of a running `edgeward serve` (default:
    /// $EDGEWARD_ADMIN_SOCKET, else ./edgeward-data/admin.sock).
    #[arg(long, global = true, value_name = "PATH")]
    admin_socket: Option<PathBuf>,
    /// A file (mode 0600) holding your admin credential (default: the
    /// EDGEWARD_ADMIN_CREDENTIAL environment variable).
    #[arg(long, global = true, value_name = "FILE")]
    credential_file: Option<PathBuf>,
}

/// `edgeward keys …`.
#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Make a new token signing key the active one.
    Rotate,
}

/// The admin commands, as top-level subcommands of `edgeward`.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Enrolled devices: enroll, list, revoke, invite.
    Device {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: DeviceCmd,
    },
    /// Registered agents: register, list, show, update, review, deprovision.
    Agent {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: AgentCmd,
    },
    /// Revoke a token, an instance, an agent, a device, or everything (the
    /// kill switch). Takes effect on the very next call.
    Revoke {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        target: RevokeTarget,
        /// Why (recorded with the revocation and in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Per agent: which credentials it uses, which systems it reaches, when
    /// it was last reviewed, and how its access is revoked.
    Inventory {
        #[command(flatten)]
        conn: Conn,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Flag reviews older than this many days (default 90).
        #[arg(long, value_name = "N")]
        review_max_age_days: Option<u64>,
    },
    /// Token signing keys: `keys rotate` makes a new key sign from now on;
    /// the old one stays published and accepted until its tokens expire.
    Keys {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// The hash-chained audit log: tail, export, verify.
    Audit {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Apply a config file's grants, devices and agents to the registry of a
    /// running backend.
    Import {
        #[command(flatten)]
        conn: Conn,
        /// The TOML config.
        file: PathBuf,
    },
    /// Admin principals (people): add, list, whoami.
    Admin {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: PrincipalCmd,
    },
    /// Policies: set, show, list, remove, and check which rule decides a call.
    Policy {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: crate::policy_cli::PolicyCmd,
    },
    /// Approval tickets: list, show, approve, deny, stats.
    Approvals {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: crate::policy_cli::ApprovalsCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum DeviceCmd {
    /// Enrol a device with its public key (from `edgeward keygen`).
    Enroll {
        /// Device id (a-z, 0-9, '-', '_').
        #[arg(long)]
        id: String,
        /// Who answers for it.
        #[arg(long)]
        owner: String,
        /// Its public key: ed25519:… or p256:….
        #[arg(long)]
        public_key: String,
    },
    /// List enrolled devices.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a device: its tokens are refused and its instances stopped.
    Revoke {
        /// Device id.
        #[arg(long)]
        id: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Make a one-time enrolment code for a device of this owner.
    Invite {
        /// Owner of the device it will enrol.
        #[arg(long)]
        owner: String,
        /// Seconds until the code expires (default a day).
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AgentCmd {
    /// Register an agent (generation 1, or above its name's tombstone).
    Register {
        /// Unique name.
        #[arg(long)]
        name: String,
        /// Who answers for it.
        #[arg(long)]
        owner: String,
        /// What it is for.
        #[arg(long)]
        description: Option<String>,
        /// An allowed component digest (sha256:…, from `edgeward digest`); repeat for more.
        #[arg(long = "digest", required = true, value_name = "DIGEST")]
        digests: Vec<String>,
        /// A device allowed to run it; repeat for more.
        #[arg(long = "device", value_name = "ID")]
        devices: Vec<String>,
        /// A grant it may use; repeat for more.
        #[arg(long = "grant", value_name = "GRANT")]
        grants: Vec<String>,
        /// Longest token lifetime, seconds.
        #[arg(long, value_name = "SECONDS")]
        max_token_lifetime: Option<u64>,
        /// Most live instances per device.
        #[arg(long, value_name = "N")]
        max_instances_per_device: Option<u32>,
    },
    /// List live agents.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one agent.
    Show {
        /// Agent name.
        #[arg(long)]
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change an agent. New digests, devices or grants replace the old
    /// lists and bump the generation: every older token is refused.
    Update {
        /// Agent name.
        #[arg(long)]
        name: String,
        /// New owner.
        #[arg(long)]
        owner: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
        /// New allowed digests (repeat; replaces the list).
        #[arg(long = "digest", value_name = "DIGEST")]
        digests: Vec<String>,
        /// New allowed devices (repeat; replaces the list).
        #[arg(long = "device", value_name = "ID", conflicts_with = "no_devices")]
        devices: Vec<String>,
        /// Allow no device at all.
        #[arg(long)]
        no_devices: bool,
        /// New grants (repeat; replaces the list).
        #[arg(long = "grant", value_name = "GRANT", conflicts_with = "no_grants")]
        grants: Vec<String>,
        /// Hold no grant at all.
        #[arg(long)]
        no_grants: bool,
        /// New longest token lifetime, seconds.
        #[arg(long, value_name = "SECONDS")]
        max_token_lifetime: Option<u64>,
        /// New most live instances per device.
        #[arg(long, value_name = "N")]
        max_instances_per_device: Option<u32>,
    },
    /// Record that you reviewed the agent's privileges.
    Review {
        /// Agent name.
        #[arg(long)]
        name: String,
    },
    /// Remove the agent with its instances and tokens, leaving a tombstone
    /// (its generations are never reused) and its audit records.
    Deprovision {
        /// Agent name.
        #[arg(long)]
        name: String,
    },
}

/// Exactly one thing to revoke.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct RevokeTarget {
    /// One token, by its `jti`.
    #[arg(long, value_name = "JTI")]
    token: Option<String>,
    /// One instance, every token it has.
    #[arg(long, value_name = "ID")]
    instance: Option<String>,
    /// An agent: every token, every instance, new exchanges.
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// A device: every token of every instance on it, new exchanges.
    #[arg(long, value_name = "ID")]
    device: Option<String>,
    /// Everything: every token issued so far (the kill switch).
    #[arg(long)]
    all: bool,
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// The last records.
    Tail {
        /// How many.
        #[arg(short = 'n', default_value_t = 20)]
        n: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The whole log with its head hash, as JSON (keep the head off this
    /// machine: `audit verify --expected-head` detects a rewritten or cut
    /// log with it).
    Export {
        /// Print JSON (the only format).
        #[arg(long)]
        json: bool,
    },
    /// Verify the hash chain and the signed checkpoints; names the first bad
    /// record. Exits 1 if the log is not intact.
    Verify {
        /// A head exported earlier, SEQ:HASH.
        #[arg(long, value_name = "SEQ:HASH")]
        expected_head: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PrincipalCmd {
    /// Add a person; prints their new credential once.
    Add {
        /// The person (e.g. an e-mail address).
        #[arg(long)]
        name: String,
        /// What they may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// For an approver: an agent they decide for; repeat for more.
        #[arg(long = "agent", value_name = "NAME")]
        agents: Vec<String>,
    },
    /// List principals (never their credentials).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Who the credential you use belongs to.
    Whoami,
}

/// A role, as given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    /// Everything.
    Admin,
    /// Read only.
    Auditor,
    /// Decides approvals for given agents.
    Approver,
}

pub fn run(cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(execute(cmd))
}

async fn execute(cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AdminCommand::Device { conn, cmd } => device(&Client::new(&conn)?, cmd).await,
        AdminCommand::Agent { conn, cmd } => agent(&Client::new(&conn)?, cmd).await,
        AdminCommand::Revoke {
            conn,
            target,
            reason,
        } => {
            let c = Client::new(&conn)?;
            let mut body = match (target.token, target.instance, target.agent, target.device) {
                (Some(t), _, _, _) => json!({ "token": t }),
                (_, Some(i), _, _) => json!({ "instance": i }),
                (_, _, Some(a), _) => json!({ "agent": a }),
                (_, _, _, Some(d)) => json!({ "device": d }),
                // clap's group guarantees exactly one.
                _ => json!({ "all": target.all }),
            };
            if let Some(r) = reason {
                body["reason"] = json!(r);
            }
            let v = c.post("/v1/revoke", body).await?;
            print_revoked(&v);
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::Keys {
            conn,
            cmd: KeysCmd::Rotate,
        } => {
            let c = Client::new(&conn)?;
            let v = c.post("/v1/keys/rotate", json!({})).await?;
            println!(
                "new signing key {}; {}",
                shown(v["kid"].as_str().unwrap_or("?")),
                shown(v["note"].as_str().unwrap_or(""))
            );
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::Inventory {
            conn,
            json,
            review_max_age_days,
        } => {
            let c = Client::new(&conn)?;
            let path = match review_max_age_days {
                Some(d) => format!("/v1/inventory?review_max_age_days={d}"),
                None => "/v1/inventory".to_owned(),
            };
            let v = c.get(&path).await?;
            if json {
                print_json(&v)?;
            } else {
                print_inventory(&parse(v)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::Audit { conn, cmd } => audit(&Client::new(&conn)?, cmd).await,
        AdminCommand::Import { conn, file } => {
            let c = Client::new(&conn)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let v = c.post("/v1/import", json!({ "toml": text })).await?;
            let s = &v["summary"];
            println!(
                "imported {}: {} grant(s), {} device(s) enrolled, {} agent(s) registered, {} agent(s) updated",
                file.display(),
                s["grants"],
                s["devices_enrolled"],
                s["agents_registered"],
                s["agents_updated"]
            );
            for note in v["notes"].as_array().into_iter().flatten() {
                println!("note: {}", shown(note.as_str().unwrap_or_default()));
            }
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::Admin { conn, cmd } => principal(&Client::new(&conn)?, cmd).await,
        AdminCommand::Policy { conn, cmd } => {
            crate::policy_cli::policy(&Client::new(&conn)?, cmd).await
        }
        AdminCommand::Approvals { conn, cmd } => {
            crate::policy_cli::approvals(&Client::new(&conn)?, cmd).await
        }
    }
}

async fn device(c: &Client, cmd: DeviceCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        DeviceCmd::Enroll {
            id,
            owner,
            public_key,
        } => {
            let d: DeviceView = parse(
                c.post(
                    "/v1/devices/enroll",
                    json!({ "id": id, "owner": owner, "public_key": public_key }),
                )
                .await?,
            )?;
            println!(
                "enrolled device {} (owner {})",
                shown(&d.id),
                shown(&d.owner)
            );
        }
        DeviceCmd::List { json } => {
            let v = c.get("/v1/devices").await?;
            if json {
                print_json(&v)?;
            } else {
                let devices: Vec<DeviceView> = parse(v["devices"].clone())?;
                table(
                    &["ID", "OWNER", "ENROLLED", "REVOKED", "PUBLIC KEY"],
                    devices
                        .iter()
                        .map(|d| {
                            vec![
                                d.id.clone(),
                                d.owner.clone(),
                                time(d.enrolled_at),
                                d.revoked_at.map(time).unwrap_or_else(|| "-".into()),
                                d.public_key.clone(),
                            ]
                        })
                        .collect(),
                );
            }
        }
        DeviceCmd::Revoke { id, reason } => {
            let mut body = json!({ "id": id });
            if let Some(r) = reason {
                body["reason"] = json!(r);
            }
            print_revoked(&c.post("/v1/devices/revoke", body).await?);
        }
        DeviceCmd::Invite { owner, ttl } => {
            let mut body = json!({ "owner": owner });
            if let Some(t) = ttl {
                body["ttl_s"] = json!(t);
            }
            let i: InviteView = parse(c.post("/v1/devices/invite", body).await?)?;
            println!(
                "one-time enrolment code for a device of {}, valid until {} (shown once; only its hash is kept):",
                shown(&i.owner),
                time(i.expires_at)
            );
            println!("{}", i.code);
            println!("note: {}", shown(&i.note));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn agent(c: &Client, cmd: AgentCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AgentCmd::Register {
            name,
            owner,
            description,
            digests,
            devices,
            grants,
            max_token_lifetime,
            max_instances_per_device,
        } => {
            let mut body = json!({
                "name": name, "owner": owner, "digests": digests,
                "devices": devices, "grants": grants,
            });
            put(&mut body, "description", description);
            put(&mut body, "max_token_lifetime_s", max_token_lifetime);
            put(
                &mut body,
                "max_instances_per_device",
                max_instances_per_device,
            );
            let change: AgentChange = parse(c.post("/v1/agents/register", body).await?)?;
            println!(
                "registered agent {} (id {}, generation {})",
                shown(&change.agent.name),
                change.agent.id,
                change.agent.generation
            );
            for w in &change.warnings {
                println!("warning: {}", shown(w));
            }
        }
        AgentCmd::List { json } => {
            let v = c.get("/v1/agents").await?;
            if json {
                print_json(&v)?;
            } else {
                let agents: Vec<AgentView> = parse(v["agents"].clone())?;
                table(
                    &["NAME", "GEN", "OWNER", "GRANTS", "DEVICES", "REVIEWED"],
                    agents
                        .iter()
                        .map(|a| {
                            vec![
                                a.name.clone(),
                                a.generation.to_string(),
                                a.owner.clone(),
                                list(&a.grants),
                                list(&a.devices),
                                a.last_reviewed_at
                                    .map(time)
                                    .unwrap_or_else(|| "never".into()),
                            ]
                        })
                        .collect(),
                );
            }
        }
        AgentCmd::Show { name, json } => {
            let v = c
                .get(&format!("/v1/agents/show?name={}", query_value(&name)))
                .await?;
            if json {
                print_json(&v)?;
            } else {
                print_agent(&parse(v)?);
            }
        }
        AgentCmd::Update {
            name,
            owner,
            description,
            digests,
            devices,
            no_devices,
            grants,
            no_grants,
            max_token_lifetime,
            max_instances_per_device,
        } => {
            let mut body = json!({ "name": name });
            put(&mut body, "owner", owner);
            put(&mut body, "description", description);
            put(
                &mut body,
                "digests",
                (!digests.is_empty()).then_some(digests),
            );
            put(
                &mut body,
                "devices",
                (!devices.is_empty() || no_devices).then_some(devices),
            );
            put(
                &mut body,
                "grants",
                (!grants.is_empty() || no_grants).then_some(grants),
            );
            put(&mut body, "max_token_lifetime_s", max_token_lifetime);
            put(
                &mut body,
                "max_instances_per_device",
                max_instances_per_device,
            );
            let change: AgentChange = parse(c.post("/v1/agents/update", body).await?)?;
            let before = change
                .previous_generation
                .unwrap_or(change.agent.generation);
            if change.agent.generation > before {
                println!(
                    "updated agent {}: generation {before} -> {} (tokens of older generations are refused)",
                    shown(&change.agent.name),
                    change.agent.generation
                );
            } else {
                println!(
                    "updated agent {} (generation {} unchanged)",
                    shown(&change.agent.name),
                    change.agent.generation
                );
            }
        }
        AgentCmd::Review { name } => {
            let a: AgentView = parse(c.post("/v1/agents/review", json!({ "name": name })).await?)?;
            println!(
                "recorded a privilege review of agent {} by {} at {}",
                shown(&a.name),
                shown(a.last_reviewed_by.as_deref().unwrap_or("?")),
                a.last_reviewed_at.map(time).unwrap_or_default()
            );
        }
        AgentCmd::Deprovision { name } => {
            let t: TombstoneView = parse(
                c.post("/v1/agents/deprovision", json!({ "name": name }))
                    .await?,
            )?;
            println!(
                "deprovisioned agent {} (id {}); a re-registration starts above generation {}",
                shown(&t.name),
                t.agent_id,
                t.last_generation
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn audit(c: &Client, cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::Tail { n, json } => {
            let v = c.get(&format!("/v1/audit?tail={n}&limit={n}")).await?;
            if json {
                print_json(&v)?;
            } else {
                let page: AuditPage = parse(v)?;
                print_audit(&page.records);
            }
        }
        AuditCmd::Export { json: _ } => {
            let mut records: Vec<AuditView> = Vec::new();
            let mut from = 1u64;
            loop {
                let page: AuditPage = parse(
                    c.get(&format!("/v1/audit?from={from}&limit={EXPORT_PAGE}"))
                        .await?,
                )?;
                let Some(last) = page.records.last() else {
                    break;
                };
                from = last.seq.saturating_add(1);
                let full = page.records.len() as u64 == EXPORT_PAGE;
                records.extend(page.records);
                if !full {
                    break;
                }
            }
            // The head is the last record exported, so it matches the
            // records even if the log grew meanwhile.
            let head = records.last().map(|r| HeadView {
                seq: r.seq,
                hash: r.hash.clone(),
            });
            print_json(&json!({ "head": head, "records": records }))?;
        }
        AuditCmd::Verify { expected_head } => {
            let path = match expected_head {
                Some(h) => format!("/v1/audit/verify?expected_head={}", query_value(&h)),
                None => "/v1/audit/verify".to_owned(),
            };
            let v: VerifyView = parse(c.get(&path).await?)?;
            if !v.ok {
                println!(
                    "audit log NOT intact: {}",
                    shown(v.problem.as_deref().unwrap_or("unknown problem"))
                );
                return Ok(ExitCode::from(1));
            }
            match &v.head {
                Some(h) => println!(
                    "audit log intact: {} record(s), {} signed checkpoint(s); head {}:{} (keep it off this machine)",
                    v.records, v.checkpoints, h.seq, h.hash
                ),
                None => println!("audit log intact: it is empty"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn principal(c: &Client, cmd: PrincipalCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        PrincipalCmd::Add { name, role, agents } => {
            let role_name = match role {
                RoleArg::Admin => "admin",
                RoleArg::Auditor => "auditor",
                RoleArg::Approver => "approver",
            };
            let mut body = json!({ "name": name, "role": role_name });
            if !agents.is_empty() {
                body["agents"] = json!(agents);
            }
            let p: NewPrincipal = parse(c.post("/v1/admins/add", body).await?)?;
            println!(
                "added {} as {}; their credential (shown once, hand it over privately):",
                shown(&p.principal.name),
                roles(&p.principal.roles)
            );
            println!("{}", p.credential);
        }
        PrincipalCmd::List { json } => {
            let v = c.get("/v1/admins").await?;
            if json {
                print_json(&v)?;
            } else {
                let admins: Vec<PrincipalView> = parse(v["admins"].clone())?;
                table(
                    &["NAME", "ROLES", "ADDED"],
                    admins
                        .iter()
                        .map(|a| {
                            vec![
                                a.name.clone(),
                                roles(&a.roles),
                                a.created_at.map(time).unwrap_or_default(),
                            ]
                        })
                        .collect(),
                );
            }
        }
        PrincipalCmd::Whoami => {
            let p: PrincipalView = parse(c.get("/v1/whoami").await?)?;
            println!("{} ({})", shown(&p.name), roles(&p.roles));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An admin API client over the Unix socket.
pub(crate) struct Client {
    socket: PathBuf,
    credential: Zeroizing<String>,
}

impl Client {
    pub(crate) fn new(conn: &Conn) -> anyhow::Result<Client> {
        let socket = conn
            .admin_socket
            .clone()
            .or_else(|| std::env::var_os(SOCKET_ENV).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        let credential = match &conn.credential_file {
            Some(file) => read_credential(file)?,
            None => match std::env::var(CREDENTIAL_ENV) {
                Ok(c) if !c.trim().is_empty() => Zeroizing::new(c.trim().to_owned()),
                _ => bail!(
                    "no admin credential: set {CREDENTIAL_ENV} or pass --credential-file \
                     (`edgeward init` wrote the first admin's to <data-dir>/admin-credential)"
                ),
            },
        };
        Ok(Client { socket, credential })
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(http::Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(http::Method::POST, path, Some(body)).await
    }

    /// One request on a fresh connection. A non-2xx answer becomes an error
    /// carrying the API's message.
    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .with_context(|| {
                format!(
                    "cannot reach the admin API at {} (is `edgeward serve` running? pass --admin-socket or set {SOCKET_ENV})",
                    self.socket.display()
                )
            })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .context("admin API handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut builder = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "localhost")
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.credential.as_str()),
            );
        let bytes = match body {
            Some(b) => {
                builder = builder.header(http::header::CONTENT_TYPE, "application/json");
                serde_json::to_vec(&b)?
            }
            None => Vec::new(),
        };
        let request = builder
            .body(Full::new(bytes::Bytes::from(bytes)))
            .context("building the admin request")?;
        let response = sender
            .send_request(request)
            .await
            .context("the admin API did not answer")?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the admin API's answer")?
            .to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|e| e.message)
                .unwrap_or_else(|_| format!("the admin API answered {status}"));
            return Err(anyhow!("{}", shown(&message)));
        }
        serde_json::from_slice(&body).context("the admin API's answer is not JSON")
    }
}

/// Read a credential file, refusing one that others can read.
fn read_credential(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    read_secret_file(path, "an admin credential", 64 * 1024)
}

/// A file holding one secret (an admin credential, a user assertion):
/// refused if group or others may read it, over `max_bytes`, or empty;
/// trimmed; the text is wiped when dropped, and never quoted in an error.
pub(crate) fn read_secret_file(
    path: &Path,
    what: &str,
    max_bytes: u64,
) -> anyhow::Result<Zeroizing<String>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o077 != 0 {
            bail!(
                "{} is readable by group or others; it holds {what}: chmod 600 it",
                path.display()
            );
        }
    }
    if meta.len() > max_bytes {
        bail!(
            "{} is over {max_bytes} bytes; it should hold {what}",
            path.display()
        );
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("{} is not text", path.display()))?,
    );
    let secret = text.trim();
    if secret.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(Zeroizing::new(secret.to_owned()))
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> anyhow::Result<T> {
    serde_json::from_value(v).context("the admin API's answer has an unexpected shape")
}

pub(crate) fn put<T: serde::Serialize>(body: &mut Value, key: &str, value: Option<T>) {
    if let Some(v) = value {
        body[key] = json!(v);
    }
}

/// A query-string value, percent-encoded.
pub(crate) fn query_value(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub(crate) fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn print_revoked(v: &Value) {
    let kind = v["revoked"]["kind"].as_str().unwrap_or("?");
    match v["revoked"]["target"].as_str() {
        Some(target) => println!(
            "revoked {kind} {}: the next call with any of its tokens is refused",
            shown(target)
        ),
        None => println!("revoked everything (kill switch): every token issued so far is refused"),
    }
}

fn print_agent(a: &AgentView) {
    let rows: Vec<(&str, String)> = vec![
        ("name", a.name.clone()),
        ("id", a.id.clone()),
        ("generation", a.generation.to_string()),
        ("owner", a.owner.clone()),
        ("description", a.description.clone()),
        ("digests", list(&a.digests)),
        ("devices", list(&a.devices)),
        ("grants", list(&a.grants)),
        (
            "max token lifetime",
            format!("{} s", a.max_token_lifetime_s),
        ),
        (
            "max instances per device",
            a.max_instances_per_device.to_string(),
        ),
        ("created", time(a.created_at)),
        ("updated", time(a.updated_at)),
        (
            "last reviewed",
            match (&a.last_reviewed_at, &a.last_reviewed_by) {
                (Some(at), Some(by)) => format!("{} by {by}", time(*at)),
                (Some(at), None) => time(*at),
                _ => "never".into(),
            },
        ),
    ];
    for (k, v) in rows {
        println!("{k:<26}{}", shown(&v));
    }
}

fn print_inventory(inv: &Inventory) {
    table(
        &[
            "AGENT",
            "CREDENTIALS",
            "SYSTEMS",
            "LAST REVIEW",
            "LIVE",
            "TOKENS",
            "LAST REVOCATION",
            "LAST STOP AFTER",
        ],
        inv.agents
            .iter()
            .map(|a| {
                let review = match (a.review.last_reviewed_at, a.review.overdue) {
                    (None, _) => "never (OVERDUE)".to_owned(),
                    (Some(at), true) => format!("{} (OVERDUE)", time(at)),
                    (Some(at), false) => time(at),
                };
                let last = a
                    .revocation
                    .last_revocation
                    .as_ref()
                    .map(|r| {
                        format!(
                            "{} {} at {} by {}",
                            r.kind,
                            r.target.as_deref().unwrap_or(""),
                            time(r.at),
                            r.by
                        )
                    })
                    .unwrap_or_else(|| "-".into());
                vec![
                    a.name.clone(),
                    a.credentials
                        .iter()
                        .map(|c| {
                            if c.defined {
                                c.grant.clone()
                            } else {
                                format!("{} (undefined)", c.grant)
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    a.systems
                        .iter()
                        .map(|s| s.origin.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                    review,
                    a.revocation.live_instances.len().to_string(),
                    a.revocation.outstanding_tokens.to_string(),
                    last,
                    a.revocation
                        .last_stop_seconds
                        .map(|s| format!("{s:.3} s"))
                        .unwrap_or_else(|| "-".into()),
                ]
            })
            .collect(),
    );
    println!(
        "reviews older than {} days are flagged; revoke an agent with `edgeward revoke --agent NAME`; LAST STOP AFTER: from the revocation to the stop order leaving the backend, since it started",
        inv.review_max_age_days
    );
}

fn print_audit(records: &[AuditView]) {
    table(
        &["SEQ", "TIME", "KIND", "DECISION", "WHO", "REASON"],
        records
            .iter()
            .map(|r| {
                let who = r
                    .admin
                    .clone()
                    .or_else(|| r.agent.clone())
                    .or_else(|| r.device.clone())
                    .unwrap_or_else(|| "-".into());
                vec![
                    r.seq.to_string(),
                    time(r.at),
                    r.kind.clone(),
                    r.decision.clone(),
                    who,
                    r.reason.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    );
}

fn roles(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| match r {
            Role::Admin => "admin".to_owned(),
            Role::Auditor => "auditor".to_owned(),
            Role::Approver { agents } => format!("approver for {}", agents.join(", ")),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

/// Text from the registry on a terminal: control characters escaped, so a
/// name or reason cannot drive the terminal or fake lines.
pub(crate) fn shown(text: &str) -> String {
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

/// Columns padded to their widest cell.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| r.iter().map(|c| shown(c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Unix seconds as a UTC date and time, `2026-01-31 12:00:00Z`.
pub(crate) fn time(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(time(0), "1970-01-01 00:00:00Z");
        assert_eq!(time(1_700_000_000), "2023-11-14 22:13:20Z");
        assert_eq!(time(951_782_400), "2000-02-29 00:00:00Z");
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(query_value("a b&c"), "a%20b%26c");
        assert_eq!(query_value("12:ab"), "12%3Aab");
    }
}
