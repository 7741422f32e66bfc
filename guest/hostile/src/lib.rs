//! A test agent that behaves like a compromised one: it looks for ambient
//! authority (environment, files), burns CPU and memory, panics, floods
//! stdout, stderr and the log, and sends requests edgeward should refuse.
//!
//! The task is `command args...`, separated by whitespace; every command that
//! finishes answers with a JSON document (see each handler) so tests can
//! assert on exactly what the guest observed.

use std::hint::black_box;

use edgeward_sdk::http::{Error, Request, Response};
use edgeward_sdk::{Agent, export_agent, log};
use serde_json::{Value, json};

struct Hostile;

impl Agent for Hostile {
    fn run(task: String) -> Result<String, String> {
        let words: Vec<&str> = task.split_whitespace().collect();
        match words.as_slice() {
            ["env"] => Ok(env()),
            ["files"] => Ok(files()),
            ["loop"] => spin_forever(),
            ["alloc"] => hoard_memory_forever(),
            ["trap"] => panic!("hostile guest panicked on purpose"),
            ["print", n] => print(count(n)?),
            ["set-header", name, url] => Ok(outcome(
                Request::get(*url).header(*name, "guest-value").send(),
            )),
            ["fetch", method, url, headers @ ..] => fetch(method, url, headers),
            ["post-big", n, url] => {
                let body = vec![b'a'; count(n)?];
                Ok(outcome(Request::post(*url, body).send()))
            }
            ["repeat", n, ms, url] => repeat(count(n)?, count(ms)?, url),
            ["stubborn", url] => stubborn(url),
            ["recurse", n] => Ok(format!("depth {}", recurse(count(n)? as u64))),
            ["flood", n, url] => flood(count(n)?, url),
            ["identity"] => Ok(identity()),
            ["say", text] => {
                log::info(&format!("saying {text}"));
                println!("stdout {text}");
                Ok(format!("said {text}"))
            }
            ["log", n] => {
                let n = count(n)?;
                for i in 0..n {
                    log::info(&format!("hostile log record {i}"));
                }
                Ok(format!("logged {n}"))
            }
            _ => Err("unknown command".to_owned()),
        }
    }
}

export_agent!(Hostile);

/// `env`: everything the process environment reveals.
fn env() -> String {
    let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    let args: Vec<String> = std::env::args().collect();
    json!({ "vars": vars, "args": args }).to_string()
}

/// `files`: every filesystem access a sandbox must refuse.
fn files() -> String {
    fn status<T>(result: std::io::Result<T>) -> String {
        match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("err: {e}"),
        }
    }
    json!({
        "read_dir_root": status(std::fs::read_dir("/")),
        "read_dir_cwd": status(std::fs::read_dir(".")),
        "read_etc_passwd": status(std::fs::read("/etc/passwd")),
        "write_escape": status(std::fs::write("escape.txt", b"x")),
    })
    .to_string()
}

/// `loop`: pure computation, no host calls, until the host interrupts it.
fn spin_forever() -> ! {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// `alloc`: grab and touch 1 MiB blocks until the memory limit stops it.
fn hoard_memory_forever() -> ! {
    const BLOCK: usize = 1 << 20;
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; BLOCK];
        // Touch every page so the memory is really used.
        for byte in block.iter_mut().step_by(4096) {
            *byte = 1;
        }
        hoard.push(black_box(block));
    }
}

/// `print <n>`: flood stdout and stderr.
fn print(n: usize) -> Result<String, String> {
    for i in 0..n {
        println!("stdout line {i}");
        eprintln!("stderr line {i}");
    }
    Ok("printed".to_owned())
}

/// `fetch <METHOD> <url> [name:value ...]`.
fn fetch(method: &str, url: &str, headers: &[&str]) -> Result<String, String> {
    let mut request = Request::new(method, url);
    for header in headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("header argument {header:?} is not name:value"))?;
        request = request.header(name, value);
    }
    Ok(outcome(request.send()))
}

/// `repeat <n> <ms> <url>`: a long task — `n` GETs, `ms` apart — that
/// outlives a short token; returns each call's outcome and the token expiry
/// the guest saw before each call.
fn repeat(n: usize, ms: usize, url: &str) -> Result<String, String> {
    let mut calls = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(ms as u64));
        }
        let expires = edgeward_sdk::identity::token_expires_at();
        let outcome: Value =
            serde_json::from_str(&outcome(Request::get(url).send())).map_err(|e| e.to_string())?;
        calls.push(json!({ "token_expires_at": expires, "outcome": outcome }));
    }
    Ok(json!({ "calls": calls }).to_string())
}

/// `stubborn <url>`: ignores every refusal and keeps going — calling, then
/// computing — forever. Only the host can end it.
fn stubborn(url: &str) -> ! {
    let mut counter = 0u64;
    loop {
        let _ignored = Request::get(url).send();
        for _ in 0..1_000_000 {
            counter = black_box(counter.wrapping_add(1));
        }
    }
}

/// `recurse <n>`: recursion `n` deep, each frame holding a buffer, to
/// exhaust the wasm stack.
#[inline(never)]
fn recurse(n: u64) -> u64 {
    let frame = black_box([n as u8; 256]);
    if n == 0 {
        return u64::from(frame[0]);
    }
    black_box(recurse(n - 1)) + u64::from(frame[255] & 1)
}

/// `flood <n> <url>`: `n` requests in a tight loop; counts the outcomes.
fn flood(n: usize, url: &str) -> Result<String, String> {
    let mut by_outcome = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..n {
        let key = match Request::get(url).send() {
            Ok(r) => r.status.to_string(),
            Err(Error::Refused(p)) => p.class.as_str().to_owned(),
            Err(_) => "error".to_owned(),
        };
        *by_outcome.entry(key).or_default() += 1;
    }
    Ok(json!(by_outcome).to_string())
}

/// `identity`: everything the identity interface reveals.
fn identity() -> String {
    use edgeward_sdk::identity as id;
    json!({
        "agent": id::agent_name(),
        "instance": id::instance_id(),
        "user": id::on_behalf_of(),
        "grants": id::grants(),
        "token_expires_at": id::token_expires_at(),
    })
    .to_string()
}

/// What a request came to, as JSON.
fn outcome(result: Result<Response, Error>) -> String {
    let doc = match result {
        Ok(response) => {
            let headers: Vec<Value> = response
                .headers
                .iter()
                .map(|(name, value)| json!([name, String::from_utf8_lossy(value)]))
                .collect();
            json!({
                "status": response.status,
                "headers": headers,
                "body": response.text(),
            })
        }
        Err(Error::Refused(problem)) => {
            let mut doc = json!({
                "problem": problem.class.as_str(),
                "status": problem.status,
                "detail": problem.detail,
                "title": problem.title,
            });
            if let Some(ticket) = problem.ticket {
                doc["ticket"] = json!(ticket);
            }
            doc
        }
        Err(e) => {
            let kind = match &e {
                Error::Transport(_) => "transport",
                Error::InvalidUrl(_) => "url",
                Error::InvalidMethod(_) => "method",
                Error::Header { .. } => "header",
                Error::Body(_) => "body",
                _ => "other",
            };
            json!({ "error": e.to_string(), "kind": kind })
        }
    };
    doc.to_string()
}

fn count(word: &str) -> Result<usize, String> {
    word.parse().map_err(|_| format!("{word:?} is not a count"))
}
