//! Delegation through WIT (`edgeward:agent/delegation@0.2.0`), in split
//! mode over real TLS on loopback: a guest starts a registered sub-agent
//! with narrower rights; the runtime narrows the parent's token offline and
//! runs the child in its own instance with its own key; the backend holds
//! the child to the caveats and to the sub-agent's registered grants.
//!
//! The `courier` guest plays every part: registered as `courier` (the
//! parent), `reader` (a sub-agent holding only `api`) and `ghost` (loaded on
//! the device, never registered).

use edgeward_backend::revocation::RevocationKind;
use edgeward_core::clock::SystemClock;
use edgeward_core::egress::{ACCESS_TOKEN_TYPE, BearerToken};
use edgeward_core::entropy::SeededEntropy;
use edgeward_core::keys::{Ed25519Signer, Signer};
use edgeward_runtime::{
    AgentInstance, AgentSpec, AttestOptions, ChildRights, DeviceIdentity, LoadedAgent,
};
use edgeward_tests::{
    COURIER_WASM, HELLO_WASM, Service, Upstream, component, digest, raw_egress, raw_exchange_as,
    respond, runtime,
};
use serde_json::{Value, json};
use std::sync::Arc;

const KEY: &str = "wit-delegation-upstream-key-0123456789";

fn device() -> Ed25519Signer {
    Ed25519Signer::generate(&mut SeededEntropy::new(909)).expect("key")
}

/// A second device, where a delegated child may run with a token of its own.
fn device2() -> Ed25519Signer {
    Ed25519Signer::generate(&mut SeededEntropy::new(910)).expect("key")
}

fn config(origin: &str) -> String {
    use edgeward_tests::conf;
    [
        conf::BACKEND.to_owned(),
        conf::device("dev-1", &device()),
        conf::device("dev-2", &device2()),
        conf::grant("api", origin, &["GET", "POST"], "/v1", "API_KEY"),
        conf::grant("other", "http://127.0.0.2:9", &["GET"], "/v2", "API_KEY"),
        conf::agent(
            "courier",
            &digest(COURIER_WASM),
            &["api", "other"],
            &["dev-1"],
        ),
        conf::agent(
            "reader",
            &digest(COURIER_WASM),
            &["api"],
            &["dev-1", "dev-2"],
        ),
        conf::agent("hello", &digest(HELLO_WASM), &["api"], &["dev-1"]),
    ]
    .concat()
}

struct Setup {
    up: Upstream,
    svc: Service,
    parent: AgentInstance,
}

fn load(name: &str, path: &'static str) -> LoadedAgent {
    runtime()
        .load(
            component(path),
            AgentSpec {
                name: name.to_owned(),
                allowed_digests: vec![digest(path)],
            },
        )
        .expect("load")
}

/// An attested instance of `agent` (no stop channel: revocation is seen on
/// the next call, which is what these tests look at).
async fn attest(svc: &Service, loaded: &LoadedAgent, seed: u64) -> AgentInstance {
    let remote = Arc::new(svc.remote());
    loaded
        .attest(AttestOptions {
            device: DeviceIdentity {
                id: "dev-1".into(),
                signer: Arc::new(device()),
            },
            exchange: remote.clone(),
            egress: remote,
            stop_channel: None,
            clock: Arc::new(SystemClock),
            entropy: &mut SeededEntropy::new(seed),
            grants: vec![],
            lifetime: None,
            user_assertion: None,
        })
        .await
        .expect("attest")
}

async fn setup() -> Setup {
    let up = Upstream::start(|r| {
        if r.headers.get("x-api-key").map(|v| v.as_bytes()) == Some(KEY.as_bytes()) {
            respond(200, &[], format!("ok {}", r.uri))
        } else {
            respond(401, &[], "no key")
        }
    })
    .await;
    let svc = Service::start(
        &config(&up.origin()),
        &[("API_KEY", KEY)],
        Arc::new(SystemClock),
    )
    .await
    .expect("service");
    let parent = attest(&svc, &load("courier", COURIER_WASM), 1)
        .await
        .with_sub_agents(
            vec![
                Arc::new(load("reader", COURIER_WASM)),
                Arc::new(load("ghost", COURIER_WASM)),
            ],
            Box::new(SeededEntropy::new(77)),
        );
    Setup { up, svc, parent }
}

async fn run(instance: &AgentInstance, task: Value) -> Value {
    let report = instance.run(&task.to_string()).await;
    match report.outcome {
        Ok(Ok(text)) => serde_json::from_str(&text).expect("json result"),
        other => panic!("task {task} failed: {other:?}; logs {:?}", report.logs),
    }
}

/// A child task's answer, parsed: the child's own JSON result.
fn child_answer(v: &Value) -> Value {
    let ok = v["ok"]
        .as_str()
        .unwrap_or_else(|| panic!("the child did not finish: {v}"));
    serde_json::from_str(ok).expect("child json")
}

fn child(agent: &str, task: Value, rights: Value) -> Value {
    json!({ "child": { "agent": agent, "task": task, "rights": rights } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_started_through_wit_is_held_to_its_caveats_while_its_parent_is_not() {
    let Setup { up, svc, parent } = setup().await;
    let at = |path: &str| format!("{}{path}", up.origin());
    let narrow = json!({ "grants": ["api"], "methods": ["GET"], "paths": ["/v1/forecast"] });

    // The parent may use the whole grant.
    let p = run(&parent, json!({ "fetch": at("/v1/other") })).await;
    assert_eq!(p["status"], 200, "{p}");

    // The child only its prefix and method.
    let c = run(
        &parent,
        child(
            "reader",
            json!({ "fetch": at("/v1/forecast/today") }),
            narrow.clone(),
        ),
    )
    .await;
    assert_eq!(child_answer(&c)["status"], 200, "{c}");
    for (method, path) in [("GET", "/v1/other"), ("POST", "/v1/forecast/x")] {
        let c = run(
            &parent,
            child(
                "reader",
                json!({ "fetch": at(path), "method": method }),
                narrow.clone(),
            ),
        )
        .await;
        assert_eq!(
            child_answer(&c)["refused"],
            "denied",
            "{method} {path}: {c}"
        );
    }
    assert_eq!(
        up.received()
            .iter()
            .filter(|r| r.uri == "/v1/other")
            .count(),
        1,
        "only the parent's call outside the child's prefix reached the upstream"
    );

    // The child sees its own identity: the sub-agent's name, an instance of
    // its own under its parent's, only the grants it was given.
    let who = child_answer(
        &run(
            &parent,
            child("reader", json!({ "who": true }), narrow.clone()),
        )
        .await,
    );
    assert_eq!(who["agent"], "reader");
    assert_eq!(who["grants"], json!(["api"]));
    let parent_id = parent.identity().instance_id.clone();
    let child_id = who["instance"].as_str().expect("id");
    assert!(child_id.starts_with(&format!("{parent_id}.")) && child_id != parent_id);

    // A child asking for more than its parent holds is not started.
    for (rights, why) in [
        (json!({ "grants": ["admin"] }), "NotNarrower"),
        (json!({ "lifetime": 10_000_000_000u64 }), "NotNarrower"),
        (json!({ "depth": 9 }), "NotNarrower"),
        (json!({ "methods": ["get"] }), "Invalid"),
    ] {
        let c = run(
            &parent,
            child("reader", json!({ "who": true }), rights.clone()),
        )
        .await;
        assert!(
            c["refused"].as_str().is_some_and(|r| r.starts_with(why)),
            "{rights}: {c}"
        );
    }
    // Nor further down: a child holding GET cannot give its own child POST.
    let c = run(
        &parent,
        child(
            "reader",
            child(
                "reader",
                json!({ "who": true }),
                json!({ "methods": ["GET", "POST"] }),
            ),
            narrow.clone(),
        ),
    )
    .await;
    let inner = child_answer(&c);
    assert!(
        inner["refused"]
            .as_str()
            .is_some_and(|r| r.starts_with("NotNarrower")),
        "{c}"
    );
    // An unknown sub-agent is not started either.
    let c = run(&parent, child("nobody", json!({ "who": true }), json!({}))).await;
    assert!(
        c["refused"]
            .as_str()
            .is_some_and(|r| r.starts_with("UnknownAgent")),
        "{c}"
    );

    // The sub-agent's registered grants bound it too: `reader` does not
    // hold `other`, so a child given `other` still cannot use it.
    let c = run(
        &parent,
        child(
            "reader",
            json!({ "fetch": "http://127.0.0.2:9/v2/x" }),
            json!({ "grants": ["other"] }),
        ),
    )
    .await;
    assert_eq!(child_answer(&c)["refused"], "denied", "{c}");
    // And a sub-agent nobody registered holds nothing at all.
    let c = run(
        &parent,
        child("ghost", json!({ "fetch": at("/v1/forecast/a") }), json!({})),
    )
    .await;
    let ghost = child_answer(&c);
    assert_eq!(ghost["refused"], "revoked", "{c}");
    assert!(
        ghost["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not registered")),
        "{c}"
    );

    // The audit trail shows the whole chain.
    let records = svc.tokens.store().audit_range(1, 10_000).expect("audit");
    let chained: Vec<_> = records
        .iter()
        .filter_map(|r| r.entry.reason.as_deref())
        .filter(|r| r.contains("delegated: chain courier > reader"))
        .collect();
    assert!(chained.len() >= 3, "{chained:?}");
    assert!(
        chained
            .iter()
            .any(|r| r.contains("grants [api]") && r.contains("paths [/v1/forecast]"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegation_depth_is_limited_and_revoking_the_parent_stops_its_children() {
    let Setup { up, svc, parent } = setup().await;
    let fetch = json!({ "fetch": format!("{}/v1/a", up.origin()) });

    // Three hops are allowed below a minted token; the fourth is not.
    let mut task = json!({ "who": true });
    for _ in 0..4 {
        task = child("reader", task, json!({}));
    }
    let mut answer = run(&parent, task).await;
    for hop in 1..=3 {
        answer = child_answer(&answer);
        if hop == 3 {
            assert_eq!(answer["refused"], "DepthExhausted", "{answer}");
        }
    }
    // A child given depth 0 cannot delegate at all.
    let c = run(
        &parent,
        child(
            "reader",
            child("reader", json!({ "who": true }), json!({})),
            json!({ "depth": 0 }),
        ),
    )
    .await;
    assert_eq!(child_answer(&c)["refused"], "DepthExhausted", "{c}");

    // Revoking the parent's instance stops every descendant's next call.
    let nested = child(
        "reader",
        child("reader", fetch.clone(), json!({})),
        json!({}),
    );
    let before = child_answer(&child_answer(&run(&parent, nested.clone()).await));
    assert_eq!(before["status"], 200, "{before}");
    svc.tokens
        .revoke(
            &RevocationKind::Instance {
                id: parent.identity().instance_id.clone(),
            },
            "test",
            "parent revoked",
        )
        .expect("revoke");
    let after = child_answer(&child_answer(&run(&parent, nested).await));
    assert_eq!(after["refused"], "revoked", "{after}");
    let served = up.received().len();
    assert_eq!(
        served, 1,
        "nothing reached the upstream after the revocation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_built_against_0_1_runs_unchanged_beside_0_2_guests() {
    let Setup { up, svc, parent } = setup().await;
    // `hello` imports edgeward:agent@0.1.0 only; `courier` also 0.2.0.
    let imports = |path: &'static str| -> Vec<String> {
        let engine = runtime().engine();
        let c = wasmtime::component::Component::new(engine, component(path)).expect("component");
        c.component_type()
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .filter(|n| n.starts_with("edgeward:"))
            .collect()
    };
    let hello = imports(HELLO_WASM);
    assert!(hello.iter().all(|n| n.ends_with("@0.1.0")), "{hello:?}");
    assert!(imports(COURIER_WASM).contains(&"edgeward:agent/delegation@0.2.0".to_owned()));

    let old = attest(&svc, &load("hello", HELLO_WASM), 5).await;
    let report = old.run(&format!("{}/v1/hello", up.origin())).await;
    assert_eq!(
        report.outcome,
        Ok(Ok("ok /v1/hello".into())),
        "{:?}",
        report.logs
    );
    // In the same runtime, the 0.2 guest delegates.
    let c = run(&parent, child("reader", json!({ "who": true }), json!({}))).await;
    assert_eq!(child_answer(&c)["agent"], "reader");
}

fn claims_of(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("b64"),
    )
    .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_exchanged_on_another_device_mints_a_standalone_child_token() {
    let Setup { up, svc, parent } = setup().await;
    let at = |path: &str| format!("{}{path}", up.origin());
    let rights = ChildRights {
        grants: Some(vec!["api".into()]),
        methods: Some(vec!["GET".into()]),
        path_prefixes: Some(vec!["/v1/forecast".into()]),
        ..ChildRights::default()
    };
    // The child's device makes its key first; the parent narrows its own
    // token for that key, offline.
    let child_seed = 55;
    let child_key = Ed25519Signer::generate(&mut SeededEntropy::new(child_seed)).expect("key");
    let chain = parent
        .delegate("reader", &rights, &child_key.public_key())
        .await
        .expect("delegate");
    let exchange = |agent: &'static str, seed: u64| {
        let chain = chain.expose().to_owned();
        let svc = &svc;
        async move {
            raw_exchange_as(
                svc,
                agent,
                ("dev-2", &device2()),
                COURIER_WASM,
                seed,
                60,
                Some((&chain, ACCESS_TOKEN_TYPE)),
            )
            .await
        }
    };

    // The RFC 8693 exchange of the chain on dev-2 mints the child a token
    // of its own: the parent's subject, an `act` nesting the whole line,
    // the parent in `dlg`, the chain's caveats in `cav`.
    let child = exchange("reader", child_seed)
        .await
        .expect("child exchange");
    let claims = claims_of(&child.token);
    let parent_id = parent.identity().instance_id.clone();
    let parent_spiffe = format!("spiffe://edgeward.test/agent/courier/instance/{parent_id}");
    assert_eq!(claims["sub"], parent_spiffe.as_str());
    assert_eq!(claims["agent"], "reader");
    assert_eq!(claims["scope"], "api");
    assert_eq!(
        claims["act"]["act"]["sub"],
        "spiffe://edgeward.test/device/dev-2"
    );
    assert_eq!(claims["act"]["act"]["act"]["sub"], parent_spiffe.as_str());
    assert_eq!(
        claims["act"]["act"]["act"]["act"]["sub"],
        "spiffe://edgeward.test/device/dev-1"
    );
    assert_eq!(claims["dlg"][0]["agent"], "courier");
    assert_eq!(
        claims["cnf"]["jkt"],
        child_key.public_key().jwk_thumbprint().as_str()
    );
    assert!(
        claims["cav"]
            .as_array()
            .is_some_and(|c| c.contains(&json!("paths:/v1/forecast"))),
        "{claims}"
    );

    // It stays held to the chain's caveats.
    assert_eq!(
        raw_egress(&svc, &child.token, &child.key, &at("/v1/forecast/a"), "api").await,
        (200, String::new())
    );
    assert_eq!(
        raw_egress(&svc, &child.token, &child.key, &at("/v1/other"), "api").await,
        (403, "denied".into())
    );

    // Only the key the chain names, only as the agent the chain names.
    let err = exchange("reader", 56)
        .await
        .err()
        .expect("other key refused")
        .to_string();
    assert!(err.contains("holder differs"), "{err}");
    let err = exchange("courier", child_seed)
        .await
        .err()
        .expect("other agent refused")
        .to_string();
    assert!(err.contains("does not delegate to agent courier"), "{err}");
    // The runtime on dev-2 does the same through `attest_delegated`.
    let remote = Arc::new(svc.remote());
    let runtime_child = load("reader", COURIER_WASM)
        .attest_delegated(
            AttestOptions {
                device: DeviceIdentity {
                    id: "dev-2".into(),
                    signer: Arc::new(device2()),
                },
                exchange: remote.clone(),
                egress: remote,
                stop_channel: None,
                clock: Arc::new(SystemClock),
                entropy: &mut SeededEntropy::new(57),
                grants: vec![],
                lifetime: None,
                user_assertion: None,
            },
            BearerToken::new(chain.expose().to_owned()),
            Ed25519Signer::generate(&mut SeededEntropy::new(child_seed)).expect("key"),
        )
        .await
        .expect("attest delegated");
    assert_eq!(runtime_child.identity().grants, ["api"]);
    let r = run(&runtime_child, json!({ "fetch": at("/v1/forecast/b") })).await;
    assert_eq!(r["status"], 200, "{r}");
    let r = run(&runtime_child, json!({ "fetch": at("/v1/other") })).await;
    assert_eq!(r["refused"], "denied", "{r}");

    // The audit log names the line for the exchange.
    let records = svc.tokens.store().audit_range(1, 10_000).expect("audit");
    assert!(records.iter().any(|r| r.entry.kind == "exchange"
        && r.entry.decision == "allow"
        && r.entry.reason.as_deref().is_some_and(
            |x| x.starts_with("delegated: courier (instance ") && x.ends_with("> reader")
        )));

    // Revoking the parent's token refuses the child's standalone token on
    // its next call, and every new exchange of the chain.
    let parent_jti = claims["dlg"][0]["jti"].as_str().expect("jti").to_owned();
    svc.tokens
        .revoke(
            &RevocationKind::Token { jti: parent_jti },
            "test",
            "parent token revoked",
        )
        .expect("revoke");
    assert_eq!(
        raw_egress(&svc, &child.token, &child.key, &at("/v1/forecast/c"), "api").await,
        (401, "revoked".into())
    );
    let r = run(&runtime_child, json!({ "fetch": at("/v1/forecast/d") })).await;
    assert_eq!(r["refused"], "revoked", "{r}");
    assert!(exchange("reader", child_seed).await.is_err());
    assert!(
        !up.received()
            .iter()
            .any(|r| r.uri.starts_with("/v1/forecast/c") || r.uri.starts_with("/v1/forecast/d"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_child_needs_a_hand_off_and_dies_with_its_parents_generation() {
    use edgeward_core::caveat::{Caveat, Chain};
    let Setup { up, svc, .. } = setup().await;
    let at = |path: &str| format!("{}{path}", up.origin());
    // A parent made over the wire, so the test holds its chain key.
    let parent = raw_exchange_as(
        &svc,
        "courier",
        ("dev-1", &device()),
        COURIER_WASM,
        64,
        120,
        None,
    )
    .await
    .expect("parent");
    let chain = || Chain::new(parent.token.clone(), parent.chain_key.clone().expect("key"));
    let child_seed = 66;
    let child_jkt = Ed25519Signer::generate(&mut SeededEntropy::new(child_seed))
        .expect("key")
        .public_key()
        .jwk_thumbprint();
    let exchange = |chain: String, seed: u64| {
        let svc = &svc;
        async move {
            raw_exchange_as(
                svc,
                "reader",
                ("dev-2", &device2()),
                COURIER_WASM,
                seed,
                60,
                Some((&chain, ACCESS_TOKEN_TYPE)),
            )
            .await
        }
    };
    let agent = || Caveat::Agent("reader".into());
    let holder = |jkt: &str| Caveat::Holder(jkt.to_owned());
    // The key handed to before the sub-agent is named: no hand-off.
    let before = chain()
        .append(holder(&child_jkt))
        .and_then(|c| c.append(agent()))
        .expect("caveats")
        .encode();
    let err = exchange(before, child_seed)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("does not hand off to a new key"), "{err}");
    // The sub-agent named, but possession left with the parent's own key:
    // the parent cannot re-mint itself as `reader` without using depth.
    let own = chain().append(agent()).expect("caveat").encode();
    let err = exchange(own, 64).await.err().expect("refused").to_string();
    assert!(err.contains("does not hand off to a new key"), "{err}");

    let good = chain()
        .append(agent())
        .and_then(|c| c.append(holder(&child_jkt)))
        .expect("caveats")
        .encode();
    let child = exchange(good, child_seed).await.expect("child");
    assert_eq!(
        raw_egress(&svc, &child.token, &child.key, &at("/v1/a"), "api").await,
        (200, String::new())
    );
    // The parent agent is re-issued straight in the registry (as after a
    // restart, with nothing in the in-memory revocation set): its child's
    // token dies too.
    svc.tokens
        .store()
        .update_agent(
            "courier",
            &edgeward_backend::store::AgentUpdate {
                grants: Some(vec![
                    edgeward_core::grant::GrantName::new("api").expect("name"),
                ]),
                ..Default::default()
            },
            edgeward_core::clock::Clock::now(&SystemClock),
        )
        .expect("update");
    assert_eq!(
        raw_egress(&svc, &child.token, &child.key, &at("/v1/b"), "api").await,
        (401, "revoked".into())
    );
}

/// A parent whose task may run longer than its agent's longest token: a
/// child needs the parent's token to outlive the child's deadline, which
/// the backend can never grant. That must not re-attest on every child (it
/// once did: a device-signed exchange per `run-child`); the token is
/// renewed at most once per quarter of its lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_of_a_long_task_do_not_re_attest_every_time() {
    let up = Upstream::start(|r| {
        if r.headers.get("x-api-key").map(|v| v.as_bytes()) == Some(KEY.as_bytes()) {
            respond(200, &[], format!("ok {}", r.uri))
        } else {
            respond(401, &[], "no key")
        }
    })
    .await;
    // The agent's tokens live at most 60 s; its tasks may run 120 s.
    let text = config(&up.origin()).replacen(
        "\n[[agent]]\nname = \"courier\"",
        "\n[[agent]]\nmax_token_lifetime_s = 60\nlimits = { task_timeout_ms = 120000 }\nname = \"courier\"",
        1,
    );
    assert!(text.contains("max_token_lifetime_s = 60"));
    let svc = Service::start(&text, &[("API_KEY", KEY)], Arc::new(SystemClock))
        .await
        .expect("service");
    let parent = attest(&svc, &load("courier", COURIER_WASM), 1)
        .await
        .with_sub_agents(
            vec![Arc::new(load("reader", COURIER_WASM))],
            Box::new(SeededEntropy::new(78)),
        );
    let exchanges = || {
        svc.tokens
            .store()
            .audit_range(1, 10_000)
            .expect("audit")
            .into_iter()
            .filter(|r| r.entry.kind == "exchange" && r.entry.decision == "allow")
            .count()
    };
    assert_eq!(exchanges(), 1, "the parent's own attestation");
    let narrow = json!({ "grants": ["api"], "methods": ["GET"] });
    for _ in 0..3 {
        let c = run(
            &parent,
            child(
                "reader",
                json!({ "fetch": format!("{}/v1/x", up.origin()) }),
                narrow.clone(),
            ),
        )
        .await;
        assert_eq!(child_answer(&c)["status"], 200, "{c}");
    }
    assert!(
        exchanges() <= 2,
        "three children made {} exchanges",
        exchanges()
    );
}
