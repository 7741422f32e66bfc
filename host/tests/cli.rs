//! The `edgeward` binary, run as a user would.

use edgeward_tests::{HELLO_WASM, Upstream, digest, respond};
use std::process::Command;

fn edgeward() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeward"));
    cmd.env_remove("EDGEWARD_LOG");
    cmd
}

#[test]
fn digest_prints_the_component_sha256() {
    let out = edgeward()
        .args(["digest", HELLO_WASM])
        .output()
        .expect("run");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        digest(HELLO_WASM).to_string()
    );
}

#[test]
fn demo_runs_and_proves_the_key_never_reached_the_agent() {
    let out = edgeward()
        .args(["demo", "--component", HELLO_WASM])
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("\"forecast\":\"sunny\""), "{stdout}");
    assert!(stdout.contains("refused (denied)"), "{stdout}");
    assert!(
        stdout.contains("in anything the agent saw (results, logs): nowhere"),
        "{stdout}"
    );
    // The key is random per run; it looks like demo_live_<32 hex>.
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains("demo_live_"),
            "the demo key was printed:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_uses_the_config_and_reads_the_secret_from_a_file() {
    const KEY: &str = "file-secret-0123456789abcdef";
    let upstream = Upstream::start(|r| {
        let ok = r.headers.get("authorization").map(|v| v.as_bytes())
            == Some(format!("Bearer {KEY}").as_bytes());
        respond(
            if ok { 200 } else { 401 },
            &[],
            if ok {
                format!("hello, echo={KEY}")
            } else {
                "no".into()
            },
        )
    })
    .await;
    let dir = std::env::temp_dir().join(format!("edgeward-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let key_file = dir.join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("key");
    let config = dir.join("edgeward.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[grant]]
name = "api"
origin = "{}"
methods = ["GET"]
path_prefixes = ["/v1/"]
credential = {{ kind = "bearer" }}
secret = {{ file = "{}" }}

[[agent]]
name = "hello"
owner = "tests@edgeward.invalid"
digests = ["{}"]
grants = ["api"]
"#,
            upstream.origin(),
            key_file.display(),
            digest(HELLO_WASM)
        ),
    )
    .expect("config");
    let url = format!("{}/v1/hi", upstream.origin());
    let config_arg = config.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        edgeward()
            .args([
                "-vv",
                "run",
                "--config",
                &config_arg,
                "--task",
                &url,
                HELLO_WASM,
            ])
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(stdout.trim(), "hello, echo=[REDACTED]");
    // Trace-level host logging of every crate, and still no key.
    assert!(stderr.contains("egress forwarded"), "{stderr}");
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bad_config_names_the_field_and_does_not_echo_values() {
    let dir = std::env::temp_dir().join(format!("edgeward-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("bad.toml");
    std::fs::write(
        &config,
        r#"
[[grant]]
name = "api"
origin = "https://api.example"
methods = ["GET"]
path_prefixes = ["/"]
credential = { kind = "bearer" }
secret = "sk_live_pasted_here_by_mistake"
"#,
    )
    .expect("config");
    let out = edgeward()
        .args(["run", "--config"])
        .arg(&config)
        .args(["--task", "x", HELLO_WASM])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 8"), "{stderr}");
    assert!(
        stderr.contains("secrets are never written in the config"),
        "{stderr}"
    );
    assert!(!stderr.contains("sk_live"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_missing_secret_says_where_it_looked() {
    let dir = std::env::temp_dir().join(format!("edgeward-cli-missing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[grant]]
name = "api"
origin = "https://api.example"
methods = ["GET"]
path_prefixes = ["/"]
credential = {{ kind = "bearer" }}
secret = {{ env = "EDGEWARD_TEST_SURELY_UNSET_VAR" }}

[[agent]]
name = "hello"
owner = "o"
digests = ["{}"]
grants = ["api"]
"#,
            digest(HELLO_WASM)
        ),
    )
    .expect("config");
    let out = edgeward()
        .args(["run", "--config"])
        .arg(&config)
        .args(["--task", "x", HELLO_WASM])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr
            .contains("grant api: environment variable EDGEWARD_TEST_SURELY_UNSET_VAR is not set"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
