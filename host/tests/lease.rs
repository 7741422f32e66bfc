//! The lease: a runtime cut off from its backend (killed with SIGKILL) stops
//! its running instances once the lease runs out — fail closed.

use edgeward_core::clock::SystemClock;
use edgeward_core::entropy::SeededEntropy;
use edgeward_core::keys::{Ed25519Signer, Signer};
use edgeward_runtime::remote::{RemoteBackend, load_ca};
use edgeward_runtime::{AgentSpec, AttestOptions, DeviceIdentity, TaskError};
use edgeward_tests::{HOSTILE_WASM, Upstream, component, digest, respond, runtime};
use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_stop_when_the_backend_is_gone_longer_than_the_lease() {
    let up = Upstream::start(|_| respond(200, &[], "ok")).await;
    let dir = std::env::temp_dir().join(format!("edgeward-lease-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let data = dir.join("data");
    let status = Command::new(env!("CARGO_BIN_EXE_edgeward"))
        .args(["init", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::null())
        .status()
        .expect("init");
    assert!(status.success());
    let device = Ed25519Signer::generate(&mut SeededEntropy::new(77)).expect("key");
    let config = dir.join("edgeward.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[backend]
stop_poll_s = 1
stop_lease_s = 2

[[device]]
id = "dev-1"
owner = "ops@edgeward.invalid"
public_key = "{}"

[[grant]]
name = "api"
origin = "{}"
methods = ["GET"]
path_prefixes = ["/v1"]
credential = {{ kind = "bearer" }}
secret = {{ env = "EDGEWARD_LEASE_TEST_KEY" }}

[[agent]]
name = "hostile"
owner = "tests@edgeward.invalid"
digests = ["{}"]
grants = ["api"]
devices = ["dev-1"]
limits = {{ task_timeout_ms = 60000 }}
"#,
            device.public_key(),
            up.origin(),
            digest(HOSTILE_WASM)
        ),
    )
    .expect("config");
    let mut server = Command::new(env!("CARGO_BIN_EXE_edgeward"))
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0"])
        .env("EDGEWARD_LEASE_TEST_KEY", "lease-test-upstream-key-0123")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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

    let remote = Arc::new(
        RemoteBackend::new(&url, load_ca(&data.join("ca.pem")).expect("ca")).expect("remote"),
    );
    let loaded = runtime()
        .load(
            component(HOSTILE_WASM),
            AgentSpec {
                name: "hostile".into(),
                allowed_digests: vec![digest(HOSTILE_WASM)],
            },
        )
        .expect("load");
    let instance = Arc::new(
        loaded
            .attest(AttestOptions {
                device: DeviceIdentity {
                    id: "dev-1".into(),
                    signer: Arc::new(device),
                },
                exchange: remote.clone(),
                egress: remote.clone(),
                stop_channel: Some(remote),
                clock: Arc::new(SystemClock),
                entropy: &mut SeededEntropy::new(5),
                grants: vec![],
                lifetime: None,
                user_assertion: None,
            })
            .await
            .expect("attest"),
    );
    let task = {
        let instance = Arc::clone(&instance);
        let target = format!("stubborn {}/v1/x", up.origin());
        tokio::spawn(async move { instance.run(&target).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!task.is_finished(), "running while the backend answers");

    // SIGKILL: no goodbye, no stop order. Only the lease can end the task.
    server.kill().expect("kill");
    let _ = server.wait();
    let killed = Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("the lease stopped the task")
        .expect("join");
    match report.outcome {
        Err(TaskError::Stopped { reason }) => assert!(reason.contains("lease"), "{reason}"),
        other => panic!("{other:?}"),
    }
    eprintln!(
        "stopped {:?} after the backend was killed (lease 2 s)",
        killed.elapsed()
    );
    std::fs::remove_dir_all(&dir).ok();
}
