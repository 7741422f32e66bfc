//! The `edgeward` binary, run as a user would.

use edgeward_tests::{COURIER_WASM, HELLO_WASM, Upstream, digest, respond};
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
    // Trace-level host logging of every crate, and still no key (checked
    // before any assertion prints the output).
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY));
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(stdout.trim(), "hello, echo=[REDACTED]");
    assert!(stderr.contains("egress forwarded"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `run --user-assertion FILE --sub-agent NAME=COMPONENT`: the instance
/// acts for the user, and the child it starts through WIT does too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_acts_for_a_user_and_starts_sub_agents() {
    use edgeward_core::entropy::SeededEntropy;
    use edgeward_core::keys::Ed25519Signer;
    let upstream = Upstream::start(|_| respond(200, &[], "ok")).await;
    let dir = std::env::temp_dir().join(format!("edgeward-cli-user-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let idp = Ed25519Signer::generate(&mut SeededEntropy::new(404)).expect("idp key");
    let config = dir.join("edgeward.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[grant]]
name = "api"
origin = "{origin}"
methods = ["GET"]
path_prefixes = ["/v1/"]
credential = {{ kind = "bearer" }}
secret = {{ env = "EDGEWARD_CLI_TEST_UNUSED" }}

[[user_issuer]]
name = "corp"
issuer = "https://idp.test"
audience = "edgeward"
jwks = '{jwks}'
agents = ["courier", "reader"]

[[agent]]
name = "courier"
owner = "tests@edgeward.invalid"
digests = ["{courier}"]
grants = ["api"]

[[agent]]
name = "reader"
owner = "tests@edgeward.invalid"
digests = ["{courier}"]
grants = ["api"]
"#,
            origin = upstream.origin(),
            jwks = edgeward_tests::idp_jwks(&idp),
            courier = digest(COURIER_WASM),
        ),
    )
    .expect("config");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let jwt = edgeward_tests::user_assertion(
        &idp,
        serde_json::json!({
            "iss": "https://idp.test", "sub": "alice@example.com", "aud": "edgeward",
            "iat": now, "exp": now + 600
        }),
    );
    let assertion = dir.join("alice.jwt");
    std::fs::write(&assertion, format!("{jwt}\n")).expect("assertion");
    let junk = dir.join("junk.jwt");
    std::fs::write(&junk, "not a jwt but a secret-ish line").expect("junk");
    // A user assertion is a bearer secret: only its owner may read the file.
    for f in [&assertion, &junk] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let task = serde_json::json!({
        "child": { "agent": "reader", "task": { "who": true }, "rights": { "methods": ["GET"] } }
    })
    .to_string();
    let args = |assertion: &std::path::Path| -> Vec<String> {
        vec![
            "run".into(),
            "--config".into(),
            config.display().to_string(),
            "--agent".into(),
            "courier".into(),
            "--user-assertion".into(),
            assertion.display().to_string(),
            "--sub-agent".into(),
            format!("reader={COURIER_WASM}"),
            "--task".into(),
            task.clone(),
            COURIER_WASM.into(),
        ]
    };
    let (good, bad) = (args(&assertion), args(&junk));
    let (ok, refused) = tokio::task::spawn_blocking(move || {
        let run = |a: Vec<String>| {
            edgeward()
                .env("EDGEWARD_CLI_TEST_UNUSED", "cli-test-unused-key-0123")
                .args(a)
                .output()
                .expect("run")
        };
        (run(good), run(bad))
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&ok.stdout).to_string();
    let stderr = String::from_utf8_lossy(&ok.stderr).to_string();
    // Before anything prints the output: the assertion itself must not leak.
    assert!(!stdout.contains(&jwt) && !stderr.contains(&jwt));
    assert!(ok.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let outer: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json");
    let who: serde_json::Value =
        serde_json::from_str(outer["ok"].as_str().expect("child result")).expect("json");
    assert_eq!(who["agent"], "reader");
    assert_eq!(who["user"], "user:corp/alice@example.com");
    assert!(!stdout.contains(&jwt) && !stderr.contains(&jwt));

    let stderr = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(!refused.status.success());
    assert!(stderr.contains("does not hold one compact JWT"), "{stderr}");
    assert!(
        !stderr.contains("secret-ish"),
        "the refusal quotes the file's content"
    );
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
    // First, and without printing it: the refusal must not quote the secret.
    assert!(
        !stderr.contains("sk_live"),
        "the config error quotes the pasted secret"
    );
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 8"), "{stderr}");
    assert!(
        stderr.contains("secrets are never written in the config"),
        "{stderr}"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_mode_through_the_cli_init_keygen_serve_run() {
    use std::io::BufRead as _;
    const KEY: &str = "cli-split-upstream-key-0123456789";
    let upstream = Upstream::start(|r| {
        let ok = r.headers.get("x-api-key").map(|v| v.as_bytes()) == Some(KEY.as_bytes());
        respond(
            if ok { 200 } else { 401 },
            &[],
            if ok { "split ok" } else { "no" },
        )
    })
    .await;
    let dir = std::env::temp_dir().join(format!("edgeward-cli-split-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let data = dir.join("data");
    let run = |args: Vec<String>| {
        let out = edgeward().args(&args).output().expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let s = |x: &std::path::Path| x.display().to_string();

    let (code, stdout, stderr) = run(vec!["init".into(), "--data-dir".into(), s(&data)]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    #[cfg(unix)]
    for f in ["signing-key", "nonce-key", "server-key.pem", "ca-key.pem"] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.join(f))
            .expect(f)
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let (code, _, stderr) = run(vec!["init".into(), "--data-dir".into(), s(&data)]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--force"), "{stderr}");

    let key = dir.join("device.key");
    let (code, stdout, stderr) = run(vec![
        "keygen".into(),
        "--alg".into(),
        "es256".into(),
        "--out".into(),
        s(&key),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let public = stdout
        .lines()
        .find_map(|l| l.strip_prefix("public_key = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("public key line")
        .to_owned();
    assert!(public.starts_with("p256:"), "{public}");

    let config = dir.join("edgeward.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[device]]
id = "dev-1"
owner = "ops@edgeward.invalid"
public_key = "{public}"

[[grant]]
name = "api"
origin = "{}"
methods = ["GET"]
path_prefixes = ["/v1/"]
credential = {{ kind = "header", name = "x-api-key" }}
secret = {{ env = "EDGEWARD_CLI_TEST_KEY" }}

[[agent]]
name = "hello"
owner = "tests@edgeward.invalid"
digests = ["{}"]
grants = ["api"]
devices = ["dev-1"]
"#,
            upstream.origin(),
            digest(HELLO_WASM)
        ),
    )
    .expect("config");

    let mut server = edgeward()
        .args([
            "serve",
            "--config",
            &s(&config),
            "--data-dir",
            &s(&data),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("EDGEWARD_CLI_TEST_KEY", KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve");
    let stdout = server.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    })
    .await
    .expect("join")
    .expect("read");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_owned();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let task = format!("{}/v1/hi", upstream.origin());
    let args: Vec<String> = [
        "run",
        "--backend",
        &url,
        "--ca",
        &s(&data.join("ca.pem")),
        "--device",
        "dev-1",
        "--device-key",
        &s(&key),
        "--agent",
        "hello",
        "--task",
        &task,
        HELLO_WASM,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run_owned(args))
        .await
        .expect("join");
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(stdout.trim(), "split ok");
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY));

    // Plain http needs the danger flag, on both sides.
    let args: Vec<String> = [
        "run",
        "--backend",
        "http://127.0.0.1:9",
        "--device",
        "dev-1",
        "--device-key",
        &s(&key),
        "--agent",
        "hello",
        "--task",
        "x",
        HELLO_WASM,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let (code, _, stderr) = tokio::task::spawn_blocking(move || run_owned(args))
        .await
        .expect("join");
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--ca is required") || stderr.contains("https://"),
        "{stderr}"
    );

    let _ = server.kill();
    let _ = server.wait();
    std::fs::remove_dir_all(&dir).ok();
}

fn run_owned(args: Vec<String>) -> (Option<i32>, String, String) {
    let out = edgeward().args(&args).output().expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}
