//! Secret scanning on both sides (DESIGN flow 8): the runtime scans what the
//! guest outputs, the backend scans outbound requests, upstream responses and
//! audit records. The guest sees a generic marker; the rule name goes to the
//! logs and the audit log only.

use edgeward_tests::{HOSTILE_WASM, Harness, Upstream, digest, guest_visible, host_logs, respond};

const KEY: &str = "scanning-upstream-key-0123456789";

/// Known-format look-alikes, built at run time (nothing secret-shaped is
/// written in the repository).
fn aws_key() -> String {
    format!("AKIA{}", "Q7X2".repeat(4))
}

fn github_token() -> String {
    format!("ghp_{}", "aB3dE5fG7h".repeat(3) + "iJ9kLm")
}

fn config(origin: &str, outbound: &str) -> String {
    format!(
        r#"
[[grant]]
name = "api"
origin = "{origin}"
methods = ["GET", "POST"]
path_prefixes = ["/v1"]
credential = {{ kind = "header", name = "x-api-key" }}
secret = {{ env = "API_KEY" }}
{outbound}

[[agent]]
name = "hostile"
owner = "tests@edgeward.invalid"
digests = ["{}"]
grants = ["api"]
"#,
        digest(HOSTILE_WASM)
    )
}

#[tokio::test]
async fn guest_output_is_scanned_by_the_runtime() {
    let up = Upstream::start(|_| respond(200, &[], "ok")).await;
    let h = Harness::new(
        &config(&up.origin(), ""),
        "hostile",
        HOSTILE_WASM,
        &[("API_KEY", KEY)],
    )
    .await
    .expect("harness");
    // A value no other test uses, so the shared host log can be searched.
    let secret = format!("AKIA{}", "ZZ99".repeat(4));
    let report = h.run(&format!("say {secret}")).await;
    let visible = guest_visible(&report);
    assert!(!visible.contains(&secret), "{visible}");
    assert!(visible.contains("said [REDACTED]"), "{visible}");
    assert!(
        visible.contains("saying [REDACTED]") && visible.contains("stdout [REDACTED]"),
        "{visible}"
    );
    let logs = host_logs();
    assert!(
        logs.contains("secrets removed from the agent's output"),
        "the rule is logged"
    );
    assert!(!logs.contains(&secret));
}

#[tokio::test]
async fn upstream_responses_are_scanned_for_known_formats() {
    let secret = github_token();
    let body = format!("{{\"leaked\":\"{secret}\"}}");
    let up = Upstream::start(move |_| respond(200, &[], body.clone())).await;
    let h = Harness::new(
        &config(&up.origin(), ""),
        "hostile",
        HOSTILE_WASM,
        &[("API_KEY", KEY)],
    )
    .await
    .expect("harness");
    let doc = h.run_json(&format!("fetch GET {}/v1/x", up.origin())).await;
    assert_eq!(doc["body"], "{\"leaked\":\"[REDACTED]\"}", "{doc}");
}

#[tokio::test]
async fn outbound_secrets_are_blocked_by_default_or_redacted_per_grant() {
    let secret = aws_key();
    let up = Upstream::start(|r| {
        respond(
            200,
            &[],
            format!("got {}", String::from_utf8_lossy(&r.body)),
        )
    })
    .await;
    let h = Harness::new(
        &config(&up.origin(), ""),
        "hostile",
        HOSTILE_WASM,
        &[("API_KEY", KEY)],
    )
    .await
    .expect("harness");
    let doc = h
        .run_json(&format!("fetch GET {}/v1/x?k={secret}", up.origin()))
        .await;
    assert_eq!(doc["problem"], "denied", "{doc}");
    assert!(
        doc["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("secret scanning"),
        "{doc}"
    );
    assert!(
        !doc.to_string().contains("aws"),
        "the rule stays out of what the guest sees: {doc}"
    );
    assert!(up.received().is_empty());

    let h = Harness::new(
        &config(&up.origin(), "outbound_secrets = \"redact\""),
        "hostile",
        HOSTILE_WASM,
        &[("API_KEY", KEY)],
    )
    .await
    .expect("harness");
    let doc = h
        .run_json(&format!("fetch GET {}/v1/x?k={secret}", up.origin()))
        .await;
    assert_eq!(doc["status"], 200, "{doc}");
    let got = &up.received()[0];
    assert!(!got.uri.contains(&secret), "{}", got.uri);
    assert!(got.uri.contains("REDACTED"), "{}", got.uri);
}
