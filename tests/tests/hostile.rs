//! The hostile-guest suite: guests built from source try to exhaust the host,
//! smuggle requests past the grant, or fish for secrets. For each, the host
//! keeps serving and no secret reaches guest-visible bytes.

use edgeward_runtime::TaskError;
use edgeward_tests::{
    HOSTILE_WASM, Harness, Upstream, assert_no_secret, digest, guest_visible, host_logs, respond,
};
use serde_json::Value;

const KEY: &str = "hostile-suite-upstream-key-0123456789";

fn config(origin: &str, limits: &str) -> String {
    format!(
        r#"
[[grant]]
name = "api"
origin = "{origin}"
methods = ["GET", "POST"]
path_prefixes = ["/v1"]
credential = {{ kind = "header", name = "x-api-key" }}
secret = {{ env = "API_KEY" }}

[[agent]]
name = "hostile"
owner = "tests@edgeward.invalid"
digests = ["{}"]
grants = ["api"]
limits = {{ task_timeout_ms = 20000 {limits} }}
"#,
        digest(HOSTILE_WASM)
    )
}

async fn setup(limits: &str) -> (Harness, Upstream) {
    // A careless upstream: echoes the key in a header and the body.
    let up = Upstream::start(|r| {
        let key = String::from_utf8_lossy(
            r.headers
                .get("x-api-key")
                .map(|v| v.as_bytes())
                .unwrap_or_default(),
        )
        .to_string();
        let mut resp = respond(200, &[], format!("you sent {key}"));
        if let Ok(v) = http::HeaderValue::from_str(&key) {
            resp.headers_mut().insert("x-echo", v);
        }
        resp
    })
    .await;
    let h = Harness::new(
        &config(&up.origin(), limits),
        "hostile",
        HOSTILE_WASM,
        &[("API_KEY", KEY)],
    )
    .await
    .expect("harness");
    (h, up)
}

async fn still_serves(h: &Harness, up: &Upstream) {
    let report = h.run(&format!("fetch GET {}/v1/ok", up.origin())).await;
    let visible = guest_visible(&report);
    let doc: Value =
        serde_json::from_str(report.outcome.expect("ran").expect("ok").as_str()).expect("json");
    assert_eq!(doc["status"], 200, "{doc}");
    assert_no_secret(&visible, KEY, "still serving");
}

#[tokio::test]
async fn deep_recursion_traps_on_the_stack_limit() {
    let (h, up) = setup("").await;
    let report = h.run("recurse 100000000").await;
    match &report.outcome {
        // Rust's stack lives in linear memory: overflowing it is an
        // out-of-bounds access below the stack, or wasm's own stack limit.
        Err(TaskError::Trap { reason }) => assert!(
            reason.contains("stack") || reason.contains("out of bounds"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    still_serves(&h, &up).await;
}

#[tokio::test]
async fn huge_request_headers_are_refused_at_a_clear_limit() {
    let (h, up) = setup("").await;
    // 1 MiB header value: wasi:http's fields limit refuses it in the sandbox.
    let report = h
        .run(&format!(
            "fetch GET {}/v1/x x-big:{}",
            up.origin(),
            "a".repeat(1 << 20)
        ))
        .await;
    match &report.outcome {
        Ok(Ok(text)) => {
            let doc: Value = serde_json::from_str(text).expect("json");
            assert!(
                doc.get("error").is_some() || doc.get("problem").is_some(),
                "{doc}"
            );
        }
        // wasi:http refuses the oversized fields by trapping the guest: the
        // bound is named, the host goes on.
        Err(TaskError::Trap { reason }) => {
            assert!(reason.contains("fields exceeds limit"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(up.received().is_empty(), "nothing reached the upstream");
    still_serves(&h, &up).await;
}

#[tokio::test]
async fn huge_upstream_headers_are_refused_not_passed_through() {
    let up = Upstream::start(|_| respond(200, &[("x-huge", &"b".repeat(600 * 1024))], "ok")).await;
    let h = Harness::new(
        &config(&up.origin(), ""),
        "hostile",
        HOSTILE_WASM,
        &[("API_KEY", KEY)],
    )
    .await
    .expect("harness");
    let doc = h.run_json(&format!("fetch GET {}/v1/x", up.origin())).await;
    assert_eq!(doc["problem"], "upstream-failed", "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_requests_in_a_tight_loop() {
    let (h, up) = setup("").await;
    let doc = h
        .run_json(&format!("flood 2000 {}/v1/x", up.origin()))
        .await;
    assert_eq!(doc["200"], 2000, "{doc}");
    assert_eq!(up.received().len(), 2000);
    still_serves(&h, &up).await;
    assert_no_secret(&host_logs(), KEY, "host logs");
}

#[tokio::test]
async fn ssrf_tricks_do_not_reach_anything_the_grant_does_not_name() {
    let (h, up) = setup("").await;
    let port = up.addr.port();
    let tricks = [
        // Same port, other spelling of loopback: a different origin.
        format!("http://localhost:{port}/v1/x"),
        format!("http://[::1]:{port}/v1/x"),
        format!("http://127.0.0.2:{port}/v1/x"),
        // Userinfo, percent-encoded and non-ASCII hosts.
        format!("http://user:pass@127.0.0.1:{port}/v1/x"),
        format!("http://127.0.0.%31:{port}/v1/x"),
        format!("http://１２７.0.0.1:{port}/v1/x"),
        // The metadata service of a cloud host.
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ];
    for url in tricks {
        let doc = h.run_json(&format!("fetch GET {url}")).await;
        let refused = doc["problem"] == "denied"
            || doc["problem"] == "invalid-request"
            || doc.get("error").is_some();
        assert!(refused, "{url}: {doc}");
    }
    assert!(up.received().is_empty(), "no trick reached the upstream");
}

#[tokio::test]
async fn fishing_for_secrets_through_identity_problems_and_logs() {
    let (h, up) = setup("").await;
    let identity = h.run_json("identity").await;
    assert_eq!(identity["agent"], "hostile");
    assert_eq!(identity["grants"], serde_json::json!(["api"]));
    assert!(identity["token_expires_at"].as_u64().is_some());
    assert_no_secret(&identity.to_string(), KEY, "identity");

    // The echoing upstream, a refused request, and the agent's own log.
    for task in [
        format!("fetch GET {}/v1/echo", up.origin()),
        format!("fetch GET {}/admin", up.origin()),
        format!("fetch GET {}/v1/x x-api-key:{KEY}", up.origin()),
        "log 3".to_owned(),
    ] {
        let report = h.run(&task).await;
        assert_no_secret(&guest_visible(&report), KEY, &task);
    }
    assert_no_secret(&host_logs(), KEY, "host logs");
}
