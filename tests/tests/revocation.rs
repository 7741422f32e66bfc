//! Revocation on the next call, and stop orders that end running instances
//! — one computing and ignoring refusals, one parked on a slow upstream —
//! in split mode over real TLS.

use edgeward_backend::revocation::RevocationKind;
use edgeward_core::clock::{Clock, SystemClock};
use edgeward_core::entropy::SeededEntropy;
use edgeward_core::keys::{Ed25519Signer, Signer};
use edgeward_runtime::{AgentInstance, TaskError};
use edgeward_tests::{HOSTILE_WASM, Service, Upstream, digest, respond};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "revocation-upstream-key-0123456789";

fn device() -> Ed25519Signer {
    Ed25519Signer::generate(&mut SeededEntropy::new(404)).expect("key")
}

fn config(origin: &str, slow: &str) -> String {
    format!(
        r#"
[backend]
stop_poll_s = 5
stop_lease_s = 30

[[device]]
id = "dev-1"
owner = "ops@edgeward.invalid"
public_key = "{device}"

[[grant]]
name = "api"
origin = "{origin}"
methods = ["GET"]
path_prefixes = ["/v1"]
credential = {{ kind = "bearer" }}
secret = {{ env = "API_KEY" }}

[[grant]]
name = "slow"
origin = "{slow}"
methods = ["GET"]
path_prefixes = ["/v1"]
credential = {{ kind = "bearer" }}
secret = {{ env = "API_KEY" }}

[[agent]]
name = "hostile"
owner = "tests@edgeward.invalid"
digests = ["{hostile}"]
grants = ["api", "slow"]
devices = ["dev-1"]
max_instances_per_device = 8
limits = {{ task_timeout_ms = 60000 }}
"#,
        device = device().public_key(),
        hostile = digest(HOSTILE_WASM),
    )
}

async fn attest(svc: &Service, seed: u64) -> AgentInstance {
    edgeward_tests::attest_split(
        HOSTILE_WASM,
        "hostile",
        "dev-1",
        Arc::new(device()),
        Arc::new(svc.remote()),
        seed,
        vec![],
    )
    .await
    .expect("attest")
}

/// A token from a raw exchange (another instance of the same agent and device).
async fn raw_token(svc: &Service, seed: u64) -> (String, String, Ed25519Signer) {
    let raw = edgeward_tests::raw_exchange(
        svc,
        "hostile",
        ("dev-1", &device()),
        HOSTILE_WASM,
        seed,
        60,
        None,
    )
    .await
    .expect("exchange");
    (raw.token, raw.instance_id, raw.key)
}

async fn egress_with(svc: &Service, token: &str, key: &Ed25519Signer, url: &str) -> (u16, String) {
    edgeward_tests::raw_egress(svc, token, key, url, "api").await
}

fn jti_of(token: &str) -> String {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("payload");
    let v: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("b64"),
    )
    .expect("json");
    v["jti"].as_str().expect("jti").into()
}

#[derive(Debug, Clone, Copy)]
enum Level {
    Token,
    Instance,
    Agent,
    Device,
    All,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_at_each_level_refuses_the_next_call_and_stops_running_instances() {
    let up = Upstream::start(|_| respond(200, &[], "ok")).await;
    // Accepts connections and never answers: a guest parked on it can only
    // be ended from outside.
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

    for (i, level) in [
        Level::Token,
        Level::Instance,
        Level::Agent,
        Level::Device,
        Level::All,
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 100 * i as u64;
        let svc = Service::start(
            &config(&up.origin(), &slow),
            &[("API_KEY", KEY)],
            Arc::new(SystemClock),
        )
        .await
        .expect("service");
        let busy = Arc::new(attest(&svc, seed + 1).await);
        let parked = Arc::new(attest(&svc, seed + 2).await);
        let (token, token_instance, key) = raw_token(&svc, seed + 3).await;
        assert_eq!(
            egress_with(&svc, &token, &key, &format!("{}/v1/x", up.origin()))
                .await
                .0,
            200
        );

        let busy_task = {
            let busy = Arc::clone(&busy);
            let url = format!("{}/v1/x", up.origin());
            tokio::spawn(async move { busy.run(&format!("stubborn {url}")).await })
        };
        let parked_task = {
            let parked = Arc::clone(&parked);
            let url = format!("{slow}/v1/wait");
            tokio::spawn(async move { parked.run(&format!("fetch GET {url}")).await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !busy_task.is_finished() && !parked_task.is_finished(),
            "{level:?}: both running"
        );

        let kinds = match level {
            Level::Token => vec![RevocationKind::Token {
                jti: jti_of(&token),
            }],
            Level::Instance => vec![
                RevocationKind::Instance {
                    id: busy.identity().instance_id.clone(),
                },
                RevocationKind::Instance {
                    id: parked.identity().instance_id.clone(),
                },
                RevocationKind::Instance {
                    id: token_instance.clone(),
                },
            ],
            Level::Agent => vec![RevocationKind::Agent {
                name: "hostile".into(),
                before_generation: None,
            }],
            Level::Device => vec![RevocationKind::Device { id: "dev-1".into() }],
            Level::All => vec![RevocationKind::All {
                at: SystemClock.now(),
            }],
        };
        let revoked_at = Instant::now();
        for k in &kinds {
            svc.tokens.revoke(k, "test-admin", "test").expect("revoke");
        }
        // The very next call with the affected token is refused.
        assert_eq!(
            egress_with(&svc, &token, &key, &format!("{}/v1/x", up.origin())).await,
            (401, "revoked".to_owned()),
            "{level:?}"
        );

        if matches!(level, Level::Token) {
            // Only that token: the running instances carry on.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!busy_task.is_finished() && !parked_task.is_finished());
            busy.stop("test over");
            parked.stop("test over");
            let _ = busy_task.await;
            let _ = parked_task.await;
            continue;
        }
        for (name, task) in [("busy", busy_task), ("parked", parked_task)] {
            let report = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{level:?}: {name} was not stopped\n{}",
                        edgeward_tests::host_logs()
                    )
                })
                .expect("join");
            match report.outcome {
                Err(TaskError::Stopped { reason }) => {
                    assert!(
                        reason.contains("revoked") || reason.contains("kill switch"),
                        "{level:?} {name}: {reason}"
                    );
                }
                other => panic!("{level:?}: {name} ended with {other:?}"),
            }
        }
        eprintln!(
            "{level:?}: both instances stopped {:?} after the revoke",
            revoked_at.elapsed()
        );
        // A stopped instance runs nothing more.
        assert!(matches!(
            busy.run("env").await.outcome,
            Err(TaskError::Stopped { .. })
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7009_a_holder_can_revoke_its_own_token() {
    let up = Upstream::start(|_| respond(200, &[], "ok")).await;
    let svc = Service::start(
        &config(&up.origin(), &up.origin()),
        &[("API_KEY", KEY)],
        Arc::new(SystemClock),
    )
    .await
    .expect("service");
    let (token, _, key) = raw_token(&svc, 9).await;
    let url = format!("{}/v1/x", up.origin());
    assert_eq!(egress_with(&svc, &token, &key, &url).await.0, 200);
    // Holding the token is not enough: the proof must come from its key.
    let stranger = Ed25519Signer::generate(&mut SeededEntropy::new(77)).expect("key");
    assert_eq!(edgeward_tests::raw_revoke(&svc, &token, None).await, 401);
    assert_eq!(
        edgeward_tests::raw_revoke(&svc, &token, Some(&stranger)).await,
        401
    );
    assert_eq!(egress_with(&svc, &token, &key, &url).await.0, 200);
    // Not one of ours: 200 either way, nothing revealed.
    assert_eq!(edgeward_tests::raw_revoke(&svc, "garbage", None).await, 200);
    assert_eq!(
        edgeward_tests::raw_revoke(&svc, &token, Some(&key)).await,
        200
    );
    assert_eq!(
        egress_with(&svc, &token, &key, &url).await,
        (401, "revoked".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_bump_or_re_registration_never_revives_old_tokens() {
    let up = Upstream::start(|_| respond(200, &[], "ok")).await;
    let svc = Service::start(
        &config(&up.origin(), &up.origin()),
        &[("API_KEY", KEY)],
        Arc::new(SystemClock),
    )
    .await
    .expect("service");
    let url = format!("{}/v1/x", up.origin());
    let store = svc.tokens.store();
    let (old, _, key) = raw_token(&svc, 21).await;
    assert_eq!(egress_with(&svc, &old, &key, &url).await.0, 200);

    // A lifecycle change (another allowed device list) bumps the generation.
    let update = edgeward_backend::store::AgentUpdate {
        digests: Some(vec![
            digest(HOSTILE_WASM),
            digest(edgeward_tests::HELLO_WASM),
        ]),
        ..Default::default()
    };
    let updated = store
        .update_agent("hostile", &update, SystemClock.now())
        .expect("update");
    assert_eq!(updated.generation, 2);
    assert_eq!(
        egress_with(&svc, &old, &key, &url).await,
        (401, "revoked".to_owned())
    );
    let (gen2, _, key2) = raw_token(&svc, 22).await;
    assert_eq!(egress_with(&svc, &gen2, &key2, &url).await.0, 200);

    // Deprovision and register the name again: a new identity, a higher
    // generation, and no old token works.
    let tomb = store
        .deprovision_agent("hostile", SystemClock.now())
        .expect("deprovision");
    assert_eq!(tomb.last_generation, 2);
    assert_eq!(
        egress_with(&svc, &gen2, &key2, &url).await,
        (401, "revoked".to_owned())
    );
    let again = edgeward_backend::store::NewAgent {
        id: "00112233445566778899aabbccddeeff".into(),
        ..edgeward_backend::store::NewAgent::from_config(
            edgeward_core::config::Config::parse(&config(&up.origin(), &up.origin()))
                .expect("config")
                .agent("hostile")
                .expect("agent"),
            String::new(),
            String::new(),
        )
    };
    let registered = store
        .register_agent(&again, SystemClock.now())
        .expect("register");
    assert_eq!(registered.generation, 3);
    for (token, key) in [(&old, &key), (&gen2, &key2)] {
        assert_eq!(
            egress_with(&svc, token, key, &url).await,
            (401, "revoked".to_owned())
        );
    }
    let (gen3, _, key3) = raw_token(&svc, 23).await;
    assert_eq!(egress_with(&svc, &gen3, &key3, &url).await.0, 200);
}
