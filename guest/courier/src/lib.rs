//! A test agent for delegation (`edgeward:agent@0.2.0`). The task is JSON:
//!
//! - `{"fetch": URL, "method"?: M}`: one request; answers
//!   `{"status", "body"}` or `{"refused": class, "detail"}`.
//! - `{"child": {"agent", "task", "rights"?: {grants?, methods?, paths?,
//!   lifetime?, depth?}}}`: run a sub-agent; answers `{"ok": result}`,
//!   `{"err": failure}` or `{"refused": error}`.
//! - `{"who": true}`: the identity it sees, and its sub-agents.
//!
//! The same component serves as parent and child (registered under two
//! agent names), so a chain of children is a nesting of tasks.

use edgeward_sdk::delegation::{self, Rights};
use edgeward_sdk::http::{Error, Request};
use edgeward_sdk::{Agent, export_agent, identity};
use serde_json::{Value, json};

struct Courier;

impl Agent for Courier {
    fn run(task: String) -> Result<String, String> {
        let task: Value = serde_json::from_str(&task).map_err(|e| format!("bad task: {e}"))?;
        let answer = if let Some(url) = task["fetch"].as_str() {
            fetch(task["method"].as_str().unwrap_or("GET"), url)
        } else if task["child"].is_object() {
            child(&task["child"])?
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

fn fetch(method: &str, url: &str) -> Value {
    match Request::new(method, url).send() {
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
