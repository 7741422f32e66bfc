//! `edgeward policy …` and `edgeward approvals …`: calls to the admin API
//! of a running `edgeward serve`.

use crate::admin_cli::{Client, print_json, put, query_value, shown, table};
use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

/// `edgeward policy …`.
#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Store a policy document (TOML: `agent = "NAME"` or `"*"`, then its
    /// `[[rule]]`, `[[after]]`, `[[limit]]`, `[[budget]]`, `[[rate]]`
    /// tables). It applies to the next call.
    Set {
        /// The policy file.
        file: PathBuf,
    },
    /// Print an agent's policy (`*`: the global defaults).
    Show {
        #[arg(long)]
        agent: String,
    },
    /// Every policy.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an agent's policy.
    Remove {
        #[arg(long)]
        agent: String,
    },
    /// Explain which rule decides a call (and which sequence and limit
    /// rules also cover it).
    Check {
        #[arg(long)]
        agent: String,
        #[arg(long)]
        method: String,
        #[arg(long)]
        url: String,
        /// The user principal (`user:<issuer>/<sub>`) the call is for.
        #[arg(long)]
        user: Option<String>,
        /// The grant, when several share the URL's origin.
        #[arg(long)]
        grant: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `edgeward approvals …`.
#[derive(Subcommand, Debug)]
pub enum ApprovalsCmd {
    /// Tickets, newest first.
    List {
        /// Only these: pending, approved, denied, used, expired.
        #[arg(long)]
        status: Option<String>,
        /// At most this many (default 50).
        #[arg(long)]
        limit: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One ticket in full: the call as the backend would forward it.
    Show {
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending ticket: that exact call goes through, once.
    Approve { id: String },
    /// Deny a pending ticket.
    Deny { id: String },
    /// Per agent: calls allowed vs sent for approval, approval latency and
    /// approve/deny counts — to move routine actions into the policy.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn policy(c: &Client, cmd: PolicyCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCmd::Set { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let v = c.post("/v1/policies/set", json!({ "toml": text })).await?;
            println!(
                "policy of {} stored",
                shown(v["agent"].as_str().unwrap_or("?"))
            );
        }
        PolicyCmd::Show { agent } => {
            let v = c
                .get(&format!("/v1/policies/show?agent={}", query_value(&agent)))
                .await?;
            print!("{}", shown_block(v["toml"].as_str().unwrap_or("")));
        }
        PolicyCmd::List { json } => {
            let v = c.get("/v1/policies").await?;
            if json {
                print_json(&v)?;
            } else {
                for p in v["policies"].as_array().into_iter().flatten() {
                    println!("# policy of {}", shown(p["agent"].as_str().unwrap_or("?")));
                    print!("{}", shown_block(p["toml"].as_str().unwrap_or("")));
                    println!();
                }
            }
        }
        PolicyCmd::Remove { agent } => {
            c.post("/v1/policies/remove", json!({ "agent": agent }))
                .await?;
            println!("policy of {} removed", shown(&agent));
        }
        PolicyCmd::Check {
            agent,
            method,
            url,
            user,
            grant,
            json,
        } => {
            let mut body = json!({ "agent": agent, "method": method, "url": url });
            put(&mut body, "user", user);
            put(&mut body, "grant", grant);
            let v = c.post("/v1/policies/check", body).await?;
            if json {
                print_json(&v)?;
            } else {
                println!(
                    "{} — {} (grant {})",
                    shown(v["decision"].as_str().unwrap_or("?")),
                    shown(v["rule"].as_str().unwrap_or("?")),
                    shown(v["grant"].as_str().unwrap_or("?"))
                );
                println!("{}", shown(v["detail"].as_str().unwrap_or("")));
                for r in v["also_applies"].as_array().into_iter().flatten() {
                    println!("also applies: {}", shown(r.as_str().unwrap_or("")));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn approvals(c: &Client, cmd: ApprovalsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ApprovalsCmd::List {
            status,
            limit,
            json,
        } => {
            let mut q = Vec::new();
            if let Some(s) = &status {
                q.push(format!("status={}", query_value(s)));
            }
            if let Some(l) = limit {
                q.push(format!("limit={l}"));
            }
            let q = q.join("&");
            let path = if q.is_empty() {
                "/v1/approvals".to_owned()
            } else {
                format!("/v1/approvals?{q}")
            };
            let v = c.get(&path).await?;
            if json {
                print_json(&v)?;
            } else {
                let rows = v["approvals"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        vec![
                            text(t, "id"),
                            text(t, "status"),
                            text(t, "agent"),
                            text(t, "user"),
                            format!("{} {}", text(t, "method"), text(t, "url")),
                            text(t, "rule"),
                        ]
                    })
                    .collect();
                table(&["ID", "STATUS", "AGENT", "USER", "CALL", "RULE"], rows);
            }
        }
        ApprovalsCmd::Show { id, json } => {
            let t = c
                .get(&format!("/v1/approvals/show?id={}", query_value(&id)))
                .await?;
            if json {
                print_json(&t)?;
            } else {
                print_ticket(&t);
            }
        }
        ApprovalsCmd::Approve { id } => {
            let t = c.post("/v1/approvals/approve", json!({ "id": id })).await?;
            println!(
                "approved {}: {} {} may go through once, until {}",
                shown(&id),
                shown_field(&t, "method"),
                shown_field(&t, "url"),
                when(&t["expires_at"])
            );
        }
        ApprovalsCmd::Deny { id } => {
            c.post("/v1/approvals/deny", json!({ "id": id })).await?;
            println!("denied {}", shown(&id));
        }
        ApprovalsCmd::Stats { json } => {
            let v = c.get("/v1/approvals/stats").await?;
            if json {
                print_json(&v)?;
            } else {
                let rows = v["agents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        vec![
                            text(a, "agent"),
                            a["allowed_by_policy"].to_string(),
                            a["sent_for_approval"].to_string(),
                            a["approved"].to_string(),
                            a["denied"].to_string(),
                            a["expired"].to_string(),
                            a["approve_ratio"]
                                .as_f64()
                                .map_or("-".into(), |r| format!("{:.0}%", r * 100.0)),
                            a["mean_latency_s"]
                                .as_u64()
                                .map_or("-".into(), |s| format!("{s} s")),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "AGENT", "ALLOWED", "SENT", "APPROVED", "DENIED", "EXPIRED", "APPROVE%",
                        "LATENCY",
                    ],
                    rows,
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A field as text, unescaped: `table` escapes its cells, every other
/// use goes through `shown`.
fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A field as text, escaped for the terminal.
fn shown_field(v: &Value, key: &str) -> String {
    shown(&text(v, key))
}

/// Multi-line text from the server, each line shown safely.
fn shown_block(text: &str) -> String {
    text.lines().map(|l| shown(l) + "\n").collect()
}

fn print_ticket(t: &Value) {
    println!("ticket   {}", shown_field(t, "id"));
    println!("status   {}", shown_field(t, "status"));
    println!(
        "agent    {} (instance {}, delegation root {})",
        shown_field(t, "agent"),
        shown_field(t, "instance"),
        shown_field(t, "root")
    );
    println!("user     {}", shown_field(t, "user"));
    println!(
        "call     {} {} (grant {})",
        shown_field(t, "method"),
        shown_field(t, "url"),
        shown_field(t, "grant")
    );
    for h in t["headers"].as_array().into_iter().flatten() {
        println!(
            "header   {}: {}",
            shown(h[0].as_str().unwrap_or("")),
            shown(h[1].as_str().unwrap_or(""))
        );
    }
    println!("body     sha256 {}", shown_field(t, "body_sha256"));
    for line in t["body_preview"].as_str().unwrap_or("").lines() {
        println!("         | {}", shown(line));
    }
    println!("rule     {}", shown_field(t, "rule"));
    println!(
        "opened   {}  expires {}",
        when(&t["created_at"]),
        when(&t["expires_at"])
    );
    if !t["decided_by"].is_null() {
        println!(
            "decided  by {} at {}",
            shown_field(t, "decided_by"),
            when(&t["decided_at"])
        );
    }
}

/// A Unix time from the API as the admin CLI prints every time.
fn when(v: &serde_json::Value) -> String {
    v.as_u64()
        .map_or_else(|| "-".to_owned(), crate::admin_cli::time)
}
