//! A test agent for delegation (`edgeward:agent@0.2.0`). The task is JSON:
//!
//! Every request task takes an optional `"grant"` (the `edgeward-grant`
//! choice when several grants share an origin).
//!
//! - `{"fetch": URL, "method"?: M}`: one request; answers
//!   `{"status", "body"}` or `{"refused": class, "detail"}`.
//! - `{"child": {"agent", "task", "rights"?: {grants?, methods?, paths?,
//!   lifetime?, depth?}}}`: run a sub-agent; answers `{"ok": result}`,
//!   `{"err": failure}` or `{"refused": error}`.
//! - `{"who": true}`: the identity it sees, and its sub-agents.
//! - `{"approved": URL, "method"?: M, "body"?: TEXT, "wait_ms": N}`: one
//!   request; if it needs approval, wait up to N ms for the decision and, if
//!   approved, send it again. Answers like `fetch`, plus `"waited": state`.
//! - `{"wait": TICKET, "wait_ms": N}`: wait on any ticket id; answers
//!   `{"waited": state}`.
//!
//! The same component serves as parent and child (registered under two
//! agent names), so a chain of children is a nesting of tasks.

use edgeward_sdk::approval;
use edgeward_sdk::delegation::{self, Rights};
use edgeward_sdk::http::{Error, ProblemClass, Request};
use edgeward_sdk::{Agent, export_agent, identity};
use serde_json::{Value, json};
use std::time::Duration;

struct Courier;

impl Agent for Courier {
    fn run(task: String) -> Result<String, String> {
        let task: Value = serde_json::from_str(&task).map_err(|e| format!("bad task: {e}"))?;
        let grant = task["grant"].as_str();
        let answer = if let Some(url) = task["fetch"].as_str() {
            fetch(task["method"].as_str().unwrap_or("GET"), url, grant)
        } else if task["child"].is_object() {
            child(&task["child"])?
        } else if let Some(url) = task["approved"].as_str() {
            approved(
                request(task["method"].as_str().unwrap_or("GET"), url, grant)
                    .body(task["body"].as_str().unwrap_or("").as_bytes().to_vec()),
                task["wait_ms"].as_u64().unwrap_or(0),
            )
        } else if let Some(ticket) = task["wait"].as_str() {
            let wait = Duration::from_millis(task["wait_ms"].as_u64().unwrap_or(0));
            json!({ "waited": format!("{:?}", approval::wait(ticket, wait)) })
        } else if task["who"].as_bool() == Some(true) {
            json!({
                "agent": identity::agent_name(),
                "instance": identity::instance_id(),
                "user": identity::on_behalf_of(),
                "grants": identity::grants(),
                "sub_agents": delegation::sub_agents(),
            })
        } else {
            return Err("unknown task".into());
        };
        Ok(answer.to_string())
    }
}

fn fetch(method: &str, url: &str, grant: Option<&str>) -> Value {
    answer_of(request(method, url, grant).send())
}

fn request(method: &str, url: &str, grant: Option<&str>) -> Request {
    let r = Request::new(method, url);
    match grant {
        Some(g) => r.grant(g),
        None => r,
    }
}

fn approved(request: Request, wait_ms: u64) -> Value {
    match request.clone().send() {
        Err(Error::Refused(p)) if p.class == ProblemClass::NeedsApproval => {
            let ticket = p.ticket.clone().unwrap_or_default();
            let state = approval::wait(&ticket, Duration::from_millis(wait_ms));
            let mut answer = if state == approval::State::Approved {
                answer_of(request.send())
            } else {
                json!({ "refused": p.class.to_string(), "detail": p.detail })
            };
            answer["waited"] = json!(format!("{state:?}"));
            answer["ticket"] = json!(ticket);
            answer
        }
        other => answer_of(other),
    }
}

fn answer_of(result: Result<edgeward_sdk::http::Response, Error>) -> Value {
    match result {
        Ok(r) => json!({ "status": r.status, "body": r.text() }),
        Err(Error::Refused(p)) => json!({ "refused": p.class.to_string(), "detail": p.detail }),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

fn child(spec: &Value) -> Result<Value, String> {
    let agent = spec["agent"].as_str().ok_or("child.agent is missing")?;
    let task = match &spec["task"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let r = &spec["rights"];
    let list = |v: &Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
    };
    let rights = Rights {
        grants: list(&r["grants"]),
        methods: list(&r["methods"]),
        path_prefixes: list(&r["paths"]),
        lifetime_seconds: r["lifetime"].as_u64(),
        max_depth: r["depth"].as_u64().map(|d| d as u32),
    };
    Ok(match delegation::run_child(agent, &task, &rights) {
        Ok(Ok(result)) => json!({ "ok": result }),
        Ok(Err(failure)) => json!({ "err": failure }),
        Err(e) => json!({ "refused": format!("{e:?}"), "message": e.to_string() }),
    })
}

export_agent!(Courier);
