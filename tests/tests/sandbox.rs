//! The sandbox: hostile guests built from source are contained, the bound
//! they hit is named, and the next task is still served.

use edgeward_runtime::{AgentSpec, LimitExceeded, LogSource, RuntimeError, TaskError};
use edgeward_tests::{
    HELLO_WASM, HOSTILE_WASM, Harness, Upstream, component, digest, respond, runtime,
};
use serde_json::Value;
use std::time::Duration;

const KEY: &str = "sandbox-test-key-0123456789";

fn config(origin: &str, limits: &str) -> String {
    format!(
        r#"
[[grant]]
name = "api"
origin = "{origin}"
methods = ["GET"]
path_prefixes = ["/"]
credential = {{ kind = "bearer" }}
secret = {{ env = "API_KEY" }}

[[agent]]
name = "hostile"
owner = "tests@edgeward.invalid"
digests = ["{hostile}"]
grants = ["api"]
limits = {{ {limits} }}
"#,
        hostile = digest(HOSTILE_WASM),
    )
}

async fn harness(limits: &str) -> (Harness, Upstream) {
    let upstream = Upstream::start(|_| respond(200, &[], "still serving")).await;
    let h = Harness::new(
        &config(&upstream.origin(), limits),
        "hostile",
        HOSTILE_WASM,
        &[("API_KEY", KEY)],
    )
    .await
    .expect("harness");
    (h, upstream)
}

/// After a guest misbehaves, the same instance still serves a normal task.
async fn still_serves(h: &Harness, upstream: &Upstream) {
    let doc = h
        .run_json(&format!("fetch GET {}/ok", upstream.origin()))
        .await;
    assert_eq!(doc["body"], "still serving", "{doc}");
}

#[tokio::test]
async fn no_environment_no_arguments() {
    let (h, _u) = harness("").await;
    let doc = h.run_json("env").await;
    assert_eq!(doc["vars"], Value::Array(vec![]), "{doc}");
    // std may report a program name; nothing the host passed.
    assert!(
        doc["args"].as_array().is_some_and(|a| a.len() <= 1),
        "{doc}"
    );
}

#[tokio::test]
async fn no_filesystem() {
    let (h, _u) = harness("").await;
    let doc = h.run_json("files").await;
    for key in [
        "read_dir_root",
        "read_dir_cwd",
        "read_etc_passwd",
        "write_escape",
    ] {
        let status = doc[key].as_str().unwrap_or_default();
        assert!(status.starts_with("err"), "{key}: {status}");
    }
}

#[tokio::test]
async fn an_endless_loop_hits_the_time_limit_and_the_host_keeps_serving() {
    let (h, u) = harness("task_timeout_ms = 300").await;
    let started = std::time::Instant::now();
    let report = h.run("loop").await;
    assert_eq!(
        report.outcome,
        Err(TaskError::Timeout {
            limit: Duration::from_millis(300)
        })
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped promptly"
    );
    assert!(
        report
            .outcome
            .unwrap_err()
            .to_string()
            .contains("time limit of 300 ms")
    );
    still_serves(&h, &u).await;
}

#[tokio::test]
async fn unbounded_allocation_hits_the_memory_limit_and_the_host_keeps_serving() {
    let (h, u) = harness("memory_mib = 16").await;
    let report = h.run("alloc").await;
    let err = report.outcome.expect_err("stopped");
    assert_eq!(
        err,
        TaskError::Limit(LimitExceeded::Memory { limit: 16 << 20 })
    );
    assert_eq!(err.to_string(), "memory limit of 16 MiB exceeded");
    still_serves(&h, &u).await;
}

#[tokio::test]
async fn a_panic_is_a_trap_with_the_message_in_the_agent_log() {
    let (h, u) = harness("").await;
    let report = h.run("trap").await;
    assert!(
        matches!(report.outcome, Err(TaskError::Trap { .. })),
        "{:?}",
        report.outcome
    );
    assert!(
        report
            .logs
            .iter()
            .any(|l| l.source == LogSource::Stderr && l.message.contains("panicked on purpose")),
        "{:?}",
        report.logs
    );
    still_serves(&h, &u).await;
}

#[tokio::test]
async fn stdout_and_stderr_are_captured_and_bounded() {
    let (h, u) = harness("max_output_bytes = 2000").await;
    let report = h.run("print 3").await;
    assert_eq!(report.outcome, Ok(Ok("printed".into())));
    let lines: Vec<_> = report
        .logs
        .iter()
        .map(|l| (l.source, l.message.as_str()))
        .collect();
    assert!(
        lines.contains(&(LogSource::Stdout, "stdout line 2")),
        "{lines:?}"
    );
    assert!(
        lines.contains(&(LogSource::Stderr, "stderr line 0")),
        "{lines:?}"
    );

    let report = h.run("print 100000").await;
    assert_eq!(
        report.outcome,
        Err(TaskError::Output {
            stream: "stdout",
            limit: 2000
        })
    );
    still_serves(&h, &u).await;
}

#[tokio::test]
async fn log_records_are_bounded() {
    let (h, _u) = harness("max_log_records = 10").await;
    let report = h.run("log 25").await;
    assert_eq!(report.outcome, Ok(Ok("logged 25".into())));
    assert_eq!(
        report
            .logs
            .iter()
            .filter(|l| l.source == LogSource::Log)
            .count(),
        10
    );
    assert_eq!(report.logs_dropped, 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_concurrently_each_in_a_fresh_store() {
    let (h, u) = harness("").await;
    let h = std::sync::Arc::new(h);
    let url = format!("fetch GET {}/x", u.origin());
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (h, url) = (std::sync::Arc::clone(&h), url.clone());
        set.spawn(async move { h.run_json(&url).await });
    }
    let mut n = 0;
    while let Some(doc) = set.join_next().await {
        assert_eq!(doc.expect("task")["body"], "still serving");
        n += 1;
    }
    assert_eq!(n, 8);
    assert_eq!(u.received().len(), 8);
}

#[tokio::test]
async fn a_component_not_on_the_allow_list_is_refused_before_compiling() {
    let spec = AgentSpec {
        name: "hostile".into(),
        allowed_digests: vec![digest(HELLO_WASM)],
    };
    match runtime().load(component(HOSTILE_WASM), spec) {
        Err(RuntimeError::DigestNotAllowed { digest: d, agent }) => {
            assert_eq!(d, digest(HOSTILE_WASM));
            assert_eq!(agent, "hostile");
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a component off the allow-list was loaded"),
    }
}

#[tokio::test]
async fn garbage_is_not_a_component() {
    let bytes: &'static [u8] = b"\0asm\x0d\0\x01\0garbage";
    let spec = AgentSpec {
        name: "x".into(),
        allowed_digests: vec![edgeward_core::digest::ComponentDigest::of(bytes)],
    };
    assert!(matches!(
        runtime().load(bytes, spec),
        Err(RuntimeError::InvalidComponent(_))
    ));
}

#[tokio::test]
async fn the_pooling_allocator_can_be_turned_off_for_small_devices() {
    let small = edgeward_runtime::Runtime::new(edgeward_runtime::RuntimeConfig {
        pooling: false,
        max_concurrent_tasks: 1,
        max_memory_bytes: 16 << 20,
    })
    .expect("runtime");
    let upstream = Upstream::start(|_| respond(200, &[], "still serving")).await;
    let h = Harness::on(
        &small,
        &config(&upstream.origin(), "memory_mib = 16"),
        "hostile",
        HOSTILE_WASM,
        &[("API_KEY", KEY)],
    )
    .await
    .expect("harness");
    still_serves(&h, &upstream).await;
    let report = h.run("alloc").await;
    assert_eq!(
        report.outcome,
        Err(TaskError::Limit(LimitExceeded::Memory { limit: 16 << 20 }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_a_task_parked_in_a_host_call() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let slow = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let h = Harness::new(
        &config(&slow, "task_timeout_ms = 20000"),
        "hostile",
        HOSTILE_WASM,
        &[("API_KEY", KEY)],
    )
    .await
    .expect("harness");
    let h = std::sync::Arc::new(h);
    let task = {
        let h = std::sync::Arc::clone(&h);
        let url = format!("fetch GET {slow}/x");
        tokio::spawn(async move { h.run(&url).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!task.is_finished());
    h.instance.stop("test stop");
    let report = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stopped promptly")
        .expect("join");
    assert!(
        matches!(report.outcome, Err(TaskError::Stopped { .. })),
        "{:?}",
        report.outcome
    );
}
