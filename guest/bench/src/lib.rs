//! The benchmark agent. The same code runs under edgeward (no credential,
//! edgeward attaches it) and as the status quo (the key passed in the task
//! and sent by the guest itself), so the two differ only in the host.
//!
//! Tasks:
//! - `noop`: returns at once (task start cost).
//! - `calls <n> <url> [<name>:<value>]`: `n` sequential GETs, each timed
//!   with the monotonic clock from inside the guest; returns the
//!   nanoseconds per call, comma-separated. Any answer other than 200 ends
//!   the task with an error naming the call.
//! - `until-stopped <url>`: GETs in a loop whatever the answers, until the
//!   host stops the task (the revocation benchmark).

use edgeward_sdk::http::{Error, Request};
use edgeward_sdk::{Agent, export_agent};
use std::time::Instant;

struct Bench;

impl Agent for Bench {
    fn run(task: String) -> Result<String, String> {
        let words: Vec<&str> = task.split(' ').collect();
        match words.as_slice() {
            ["noop"] => Ok("ok".to_owned()),
            ["calls", n, url] => calls(n, url, None),
            ["calls", n, url, header] => calls(n, url, Some(header)),
            ["until-stopped", url] => loop {
                // Refusals included: only the host can end this task.
                let _ = Request::get(*url).send();
            },
            _ => Err(format!("unknown task {task:?}")),
        }
    }
}

fn calls(n: &str, url: &str, header: Option<&str>) -> Result<String, String> {
    let n: usize = n.parse().map_err(|_| format!("{n:?} is not a count"))?;
    let header = match header {
        Some(h) => Some(
            h.split_once(':')
                .ok_or_else(|| format!("header argument {h:?} is not name:value"))?,
        ),
        None => None,
    };
    let mut out = String::with_capacity(n * 8);
    for i in 0..n {
        let mut request = Request::get(url);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let start = Instant::now();
        let response = request.send();
        let elapsed = start.elapsed().as_nanos();
        match response {
            Ok(r) if r.status == 200 => {}
            Ok(r) => return Err(format!("call {i}: status {}: {}", r.status, r.text())),
            Err(Error::Refused(p)) => {
                return Err(format!(
                    "call {i}: refused ({}): {}",
                    p.class,
                    p.detail.as_deref().unwrap_or(&p.title)
                ));
            }
            Err(e) => return Err(format!("call {i}: {e}")),
        }
        if i > 0 {
            out.push(',');
        }
        out.push_str(&elapsed.to_string());
    }
    Ok(out)
}

export_agent!(Bench);
