//! The policy envelope and approvals (issue 8), over real TLS on loopback:
//! rules, sequences, limits, approval tickets bound to the exact call.
//! Calls go over the wire (`raw_call`) so method, headers and body are the
//! test's to choose.

use edgeward_core::clock::Clock as _;
use edgeward_core::entropy::SeededEntropy;
use edgeward_core::keys::Ed25519Signer;
use edgeward_tests::{
    COURIER_WASM, HOSTILE_WASM, RawAnswer, RawInstance, Service, TestClock, Upstream, digest,
    raw_call, raw_exchange, respond,
};
use serde_json::Value;
use std::sync::Arc;

const KEY: &str = "policy-upstream-key-0123456789abcdef";

fn device() -> Ed25519Signer {
    Ed25519Signer::generate(&mut SeededEntropy::new(1111)).expect("key")
}

fn idp() -> Ed25519Signer {
    Ed25519Signer::generate(&mut SeededEntropy::new(1112)).expect("key")
}

/// The config: three grants on one upstream, two agents on the same
/// component, a user issuer, and `policies` appended as written.
fn config(origin: &str, webhook: &str, policies: &str) -> String {
    use edgeward_tests::conf;
    let all = ["mail", "paste", "weather"];
    [
        conf::BACKEND.to_owned(),
        format!("\n[backend.approvals]\nuse_within_s = 30\nper_agent_per_hour = 8\n{webhook}\n"),
        conf::device("dev-1", &device()),
        conf::grant("mail", origin, &["GET", "HEAD"], "/mail", "API_KEY"),
        conf::grant(
            "paste",
            origin,
            &["GET", "POST", "PUT", "PATCH", "DELETE"],
            "/p",
            "API_KEY",
        ),
        conf::grant("weather", origin, &["GET"], "/v1", "API_KEY"),
        conf::user_issuer(&edgeward_tests::idp_jwks(&idp()), &["hostile"]),
        conf::agent("hostile", &digest(HOSTILE_WASM), &all, &["dev-1"]),
        conf::agent("other", &digest(HOSTILE_WASM), &all, &["dev-1"]),
        conf::agent("courier", &digest(COURIER_WASM), &all, &["dev-1"]),
        policies.to_owned(),
    ]
    .concat()
}

/// The policy most tests run under (for both agents: the global default).
const POLICY: &str = r#"
[[policy]]
agent = "*"

[[policy.rule]]
name = "weather-admin"
grant = "weather"
path = "/v1/admin/**"
effect = "approve"

[[policy.rule]]
name = "weather"
grant = "weather"
effect = "allow"

[[policy.rule]]
name = "mail-read"
grant = "mail"
methods = ["GET"]
effect = "allow"

[[policy.rule]]
name = "paste-write"
grant = "paste"
methods = ["PUT", "PATCH"]
effect = "approve"

[[policy.rule]]
name = "paste-delete"
grant = "paste"
methods = ["DELETE"]
effect = "deny"

[[policy.rule]]
name = "paste"
grant = "paste"
effect = "allow"

# After reading mail, posting to paste needs a person.
[[policy.after]]
name = "no-exfil-after-mail"
after = { grant = "mail" }
then = { grant = "paste", methods = ["POST"] }
effect = "approve"

# After touching the secret folder, the weather grant is off.
[[policy.after]]
name = "quiet-after-secrets"
after = { grant = "mail", path = "/mail/secret/**" }
then = { grant = "weather" }
effect = "deny"

[[policy.limit]]
name = "mail-reads"
match = { grant = "mail" }
max = 4
window_s = 30

[[policy.budget]]
name = "paste-bytes"
match = { grant = "paste", methods = ["POST"] }
bytes = 400
window_s = 600

[[policy.rate]]
name = "weather-rate"
match = { grant = "weather" }
per_second = 1
burst = 3
"#;

struct Setup {
    up: Upstream,
    svc: Service,
    clock: Arc<TestClock>,
    hook: Option<Upstream>,
}

async fn setup(policies: &str, with_webhook: bool) -> Setup {
    let up = Upstream::start(|r| {
        if r.headers.get("x-api-key").map(|v| v.as_bytes()) == Some(KEY.as_bytes()) {
            respond(200, &[], format!("ok {} {}", r.method, r.uri))
        } else {
            respond(401, &[], "no key")
        }
    })
    .await;
    let hook = if with_webhook {
        Some(Upstream::start(|_| respond(204, &[], "")).await)
    } else {
        None
    };
    let webhook = hook
        .as_ref()
        .map(|h| format!("webhook = \"{}/hook\"", h.origin()))
        .unwrap_or_default();
    let clock = TestClock::at(edgeward_core::clock::SystemClock.now());
    let svc = Service::start(
        &config(&up.origin(), &webhook, policies),
        &[("API_KEY", KEY)],
        clock.clone(),
    )
    .await
    .expect("service");
    Setup {
        up,
        svc,
        clock,
        hook,
    }
}

async fn instance(svc: &Service, agent: &str, seed: u64) -> RawInstance {
    raw_exchange(
        svc,
        agent,
        ("dev-1", &device()),
        HOSTILE_WASM,
        seed,
        120,
        None,
    )
    .await
    .expect("exchange")
}

async fn call(
    s: &Setup,
    who: &RawInstance,
    method: &str,
    path: &str,
    grant: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawAnswer {
    let url = format!("{}{path}", s.up.origin());
    raw_call(
        &s.svc, &who.token, &who.key, method, &url, grant, headers, body,
    )
    .await
}

fn rule_of(a: &RawAnswer) -> String {
    a.json()["rule"].as_str().unwrap_or("").to_owned()
}

fn ticket_of(a: &RawAnswer) -> String {
    a.json()["ticket"]
        .as_str()
        .unwrap_or_else(|| panic!("no ticket: {:?}", a.json()))
        .to_owned()
}

fn audit_reasons(svc: &Service) -> Vec<String> {
    svc.tokens
        .store()
        .audit_range(1, 10_000)
        .expect("audit")
        .into_iter()
        .filter(|r| r.entry.kind == "egress")
        .filter_map(|r| r.entry.reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_effect_reaches_the_guest_and_the_audit_log_with_its_rule() {
    let s = setup(POLICY, false).await;
    let a = instance(&s.svc, "hostile", 1).await;
    // allow
    let r = call(&s, &a, "GET", "/v1/forecast", "weather", &[], b"").await;
    assert_eq!((r.status, r.class.as_str()), (200, ""));
    // deny
    let r = call(&s, &a, "DELETE", "/p/1", "paste", &[], b"").await;
    assert_eq!((r.status, r.class.as_str()), (403, "denied"));
    assert_eq!(rule_of(&r), "policy \"*\".rule \"paste-delete\"");
    // approve: a ticket
    let r = call(&s, &a, "PUT", "/p/1", "paste", &[], b"hello").await;
    assert_eq!((r.status, r.class.as_str()), (403, "needs-approval"));
    assert_eq!(rule_of(&r), "policy \"*\".rule \"paste-write\"");
    assert_eq!(ticket_of(&r).len(), 32);
    // nothing matched: the grant allows HEAD, no rule does
    let r = call(&s, &a, "HEAD", "/mail/inbox", "mail", &[], b"").await;
    assert_eq!((r.status, r.class.as_str()), (403, "denied"));
    assert_eq!(rule_of(&r), "default deny");
    // Only the allowed call reached the upstream.
    assert_eq!(s.up.received().len(), 1);
    let reasons = audit_reasons(&s.svc);
    assert!(
        reasons[0].contains("policy: allowed by policy \"*\".rule \"weather\""),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("(rule policy \"*\".rule \"paste-delete\")"),
        "{reasons:?}"
    );
    assert!(reasons[2].starts_with("needs-approval"), "{reasons:?}");
    assert!(reasons[3].contains("(rule default deny)"), "{reasons:?}");

    // Policy changes take effect on the next call.
    let p = edgeward_core::policy::Policy::from_toml(
        "agent = \"hostile\"\n[[rule]]\nname = \"no-weather\"\ngrant = \"weather\"\neffect = \"deny\"\n",
    )
    .expect("policy");
    s.svc
        .tokens
        .store()
        .put_policy(&p, s.clock.now(), "test")
        .expect("put");
    let r = call(&s, &a, "GET", "/v1/forecast", "weather", &[], b"").await;
    assert_eq!(rule_of(&r), "policy \"hostile\".rule \"no-weather\"");
    // Another agent still falls back to the global policy.
    let b = instance(&s.svc, "other", 2).await;
    let r = call(&s, &b, "GET", "/v1/forecast", "weather", &[], b"").await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_rules_fire_only_after_their_trigger_and_a_new_instance_does_not_reset_them() {
    let s = setup(POLICY, false).await;
    let first = instance(&s.svc, "hostile", 1).await;
    // Before the trigger: posting is allowed, weather is allowed.
    let r = call(&s, &first, "POST", "/p/new", "paste", &[], b"draft").await;
    assert_eq!(r.status, 200);
    // The trigger: reading mail (and the secret folder).
    let r = call(&s, &first, "GET", "/mail/secret/x", "mail", &[], b"").await;
    assert_eq!(r.status, 200);
    // A fresh instance of the same agent inherits the state.
    let second = instance(&s.svc, "hostile", 2).await;
    assert_ne!(first.instance_id, second.instance_id);
    let r = call(&s, &second, "POST", "/p/new", "paste", &[], b"draft").await;
    assert_eq!(r.class, "needs-approval");
    assert_eq!(rule_of(&r), "policy \"*\".after \"no-exfil-after-mail\"");
    let r = call(&s, &second, "GET", "/v1/forecast", "weather", &[], b"").await;
    assert_eq!(r.class, "denied");
    assert_eq!(rule_of(&r), "policy \"*\".after \"quiet-after-secrets\"");
    // Another agent has its own state: nothing fired for it.
    let other = instance(&s.svc, "other", 3).await;
    let r = call(&s, &other, "POST", "/p/new", "paste", &[], b"draft").await;
    assert_eq!(r.status, 200);

    // A count limit: 4 mail reads per window, across instances.
    for who in [&first, &second, &second] {
        assert_eq!(
            call(&s, who, "GET", "/mail/inbox", "mail", &[], b"")
                .await
                .status,
            200
        );
    }
    let third = instance(&s.svc, "hostile", 4).await;
    let r = call(&s, &third, "GET", "/mail/inbox", "mail", &[], b"").await;
    assert_eq!((r.status, r.class.as_str()), (429, "limit-exceeded"));
    assert_eq!(rule_of(&r), "policy \"*\".limit \"mail-reads\"");
    // The window moves on.
    s.clock.set(s.clock.now() + 30);
    assert_eq!(
        call(&s, &third, "GET", "/mail/inbox", "mail", &[], b"")
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_and_rate_limits_run_out() {
    let s = setup(POLICY, false).await;
    let a = instance(&s.svc, "other", 1).await;
    // A byte budget of 400 per window on POSTs to paste: body, URL and
    // headers all count.
    let r = call(&s, &a, "POST", "/p/a", "paste", &[], &[b'x'; 200]).await;
    assert_eq!(r.status, 200);
    let r = call(&s, &a, "POST", "/p/b", "paste", &[], &[b'x'; 200]).await;
    assert_eq!((r.status, r.class.as_str()), (429, "limit-exceeded"));
    assert_eq!(rule_of(&r), "policy \"*\".budget \"paste-bytes\"");
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap_or("")
            .contains("of 400 bytes")
    );
    // A fresh instance does not get a fresh budget.
    let b = instance(&s.svc, "other", 2).await;
    let r = call(&s, &b, "POST", "/p/c", "paste", &[], &[b'x'; 200]).await;
    assert_eq!(r.class, "limit-exceeded");
    let r = call(&s, &b, "POST", "/p/c", "paste", &[], &[b'x'; 10]).await;
    assert_eq!(r.status, 200);
    // A long query string counts as much as a body.
    let long = format!("/p/q?{}", "x".repeat(200));
    let r = call(&s, &b, "POST", &long, "paste", &[], b"").await;
    assert_eq!(r.class, "limit-exceeded");
    // A rate of 1/s with a burst of 3 (the test clock stands still).
    for _ in 0..3 {
        assert_eq!(
            call(&s, &a, "GET", "/v1/x", "weather", &[], b"")
                .await
                .status,
            200
        );
    }
    let r = call(&s, &b, "GET", "/v1/x", "weather", &[], b"").await;
    assert_eq!(rule_of(&r), "policy \"*\".rate \"weather-rate\"");
    s.clock.set(s.clock.now() + 1);
    assert_eq!(
        call(&s, &b, "GET", "/v1/x", "weather", &[], b"")
            .await
            .status,
        200
    );
}

/// An approver's decision, straight in the registry (the admin API and CLI
/// are tested with the real binary in host/tests).
fn decide(s: &Setup, ticket: &str, approve: bool) {
    let now = s.clock.now();
    s.svc
        .tokens
        .store()
        .decide_approval(ticket, approve, "pat@edgeward.invalid", now, now + 30)
        .expect("decide");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_is_bound_to_the_exact_call_used_once_and_short_lived() {
    let s = setup(POLICY, true).await;
    let a = instance(&s.svc, "hostile", 1).await;
    let put = |who, headers, body| call(&s, who, "PUT", "/p/doc?v=1", "paste", headers, body);
    let r = put(&a, &[("x-note", "1")], b"the body").await;
    let ticket = ticket_of(&r);
    // Asking again while it waits names the same ticket: no new prompt.
    assert_eq!(
        ticket_of(&put(&a, &[("x-note", "1")], b"the body").await),
        ticket
    );
    decide(&s, &ticket, true);

    // The approval covers that call only: another body, URL, method,
    // header, user or agent opens a ticket of its own.
    let mut others = Vec::new();
    others.push(put(&a, &[("x-note", "1")], b"another body").await);
    others.push(
        call(
            &s,
            &a,
            "PUT",
            "/p/doc?v=2",
            "paste",
            &[("x-note", "1")],
            b"the body",
        )
        .await,
    );
    others.push(
        call(
            &s,
            &a,
            "PATCH",
            "/p/doc?v=1",
            "paste",
            &[("x-note", "1")],
            b"the body",
        )
        .await,
    );
    others.push(put(&a, &[("x-note", "2")], b"the body").await);
    let b = instance(&s.svc, "other", 2).await;
    others.push(put(&b, &[("x-note", "1")], b"the body").await);
    let now = s.clock.now();
    let alice = edgeward_tests::user_assertion(
        &idp(),
        serde_json::json!({
            "iss": "https://idp.test", "sub": "alice", "aud": "edgeward-test",
            "iat": now, "exp": now + 600
        }),
    );
    let as_alice = raw_exchange(
        &s.svc,
        "hostile",
        ("dev-1", &device()),
        HOSTILE_WASM,
        3,
        120,
        Some(&alice),
    )
    .await
    .expect("user exchange");
    others.push(put(&as_alice, &[("x-note", "1")], b"the body").await);
    for r in &others {
        assert_eq!(r.class, "needs-approval", "{:?}", r.json());
        assert_ne!(ticket_of(r), ticket);
    }
    assert_eq!(
        s.up.received().len(),
        0,
        "nothing went through on the approval"
    );

    // The exact call goes through, once.
    let r = put(&a, &[("x-note", "1")], b"the body").await;
    assert_eq!((r.status, r.class.as_str()), (200, ""), "{:?}", r.json());
    let again = put(&a, &[("x-note", "1")], b"the body").await;
    assert_eq!(again.class, "needs-approval");
    assert_ne!(ticket_of(&again), ticket);
    assert_eq!(s.up.received().len(), 1);
    // The audit record reads as a sentence.
    let reasons = audit_reasons(&s.svc);
    let approved = reasons
        .iter()
        .find(|r| r.contains("approved by"))
        .expect("approved record");
    assert!(
        approved.starts_with(&format!(
            "agent hostile (instance {}) did PUT {}/p/doc, approved by pat@edgeward.invalid at ",
            a.instance_id,
            s.up.origin()
        )),
        "{approved}"
    );
    assert!(
        approved.contains(&format!("(ticket {ticket})")),
        "{approved}"
    );

    // An approval not used in time expires.
    let late = ticket_of(&again);
    decide(&s, &late, true);
    s.clock.set(s.clock.now() + 31);
    let r = put(&a, &[("x-note", "1")], b"the body").await;
    assert_eq!(r.class, "needs-approval");
    assert_ne!(ticket_of(&r), late);

    // A denied ticket: the same call is refused as denied, without a new
    // prompt, while the denial stands.
    let denied = ticket_of(&r);
    decide(&s, &denied, false);
    let r = put(&a, &[("x-note", "1")], b"the body").await;
    assert_eq!((r.status, r.class.as_str()), (403, "denied"));
    assert_eq!(ticket_of(&r), denied);

    // The webhook heard of every ticket, without the body.
    let heard = s.hook.as_ref().expect("hook").received();
    assert!(!heard.is_empty());
    let doc: Value = serde_json::from_slice(&heard[0].body).expect("json");
    assert_eq!(doc["event"], "approval.opened");
    assert_eq!(doc["ticket"], ticket.as_str());
    assert!(!String::from_utf8_lossy(&heard[0].body).contains("the body"));
    // The ticket as the approver sees it: rendered by the backend.
    let t = s
        .svc
        .tokens
        .store()
        .approval(&ticket, s.clock.now())
        .expect("read")
        .expect("ticket");
    assert_eq!(
        (t.agent.as_str(), t.method.as_str(), t.grant.as_str()),
        ("hostile", "PUT", "paste")
    );
    assert!(t.url.ends_with("/p/doc?v=1"), "{}", t.url);
    assert!(t.headers.iter().any(|(n, v)| n == "x-note" && v == "1"));
    assert_eq!(t.body_preview, "the body");
    assert_eq!(t.rule, "policy \"*\".rule \"paste-write\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_per_agent_are_rate_limited_and_stats_count_them() {
    let s = setup(POLICY, false).await;
    let a = instance(&s.svc, "hostile", 1).await;
    for i in 0..8 {
        let r = call(&s, &a, "PUT", &format!("/p/{i}"), "paste", &[], b"x").await;
        assert_eq!(r.class, "needs-approval");
    }
    let r = call(&s, &a, "PUT", "/p/9", "paste", &[], b"x").await;
    assert_eq!((r.status, r.class.as_str()), (429, "limit-exceeded"));
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap_or("")
            .contains("opened 8 tickets")
    );
    // Stats: allowed vs sent for approval, decisions and latency.
    let tickets = s
        .svc
        .tokens
        .store()
        .approvals(None, None, 100, s.clock.now())
        .expect("list");
    s.clock.set(s.clock.now() + 7);
    decide(&s, &tickets[0].id, true);
    decide(&s, &tickets[1].id, false);
    assert_eq!(
        call(&s, &a, "GET", "/v1/ok", "weather", &[], b"")
            .await
            .status,
        200
    );
    let stats = s
        .svc
        .tokens
        .store()
        .approval_stats(s.clock.now())
        .expect("stats");
    let h = stats
        .iter()
        .find(|x| x.agent == "hostile")
        .expect("hostile");
    assert_eq!(
        (h.allowed, h.sent_for_approval, h.approved, h.denied),
        (1, 8, 1, 1)
    );
    assert_eq!((h.mean_latency_s, h.max_latency_s), (Some(7), Some(7)));
}

/// A guest (built against `edgeward:agent@0.3.0`) waits on its ticket
/// through the WIT `approval` interface while a person approves it; the
/// same call then goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_waits_for_its_approval_while_a_person_approves_it() {
    let s = setup(POLICY, false).await;
    let remote = Arc::new(s.svc.remote());
    let loaded = edgeward_tests::runtime()
        .load(
            edgeward_tests::component(COURIER_WASM),
            edgeward_runtime::AgentSpec {
                name: "courier".into(),
                allowed_digests: vec![digest(COURIER_WASM)],
            },
        )
        .expect("load");
    let instance = loaded
        .attest(edgeward_runtime::AttestOptions {
            device: edgeward_runtime::DeviceIdentity {
                id: "dev-1".into(),
                signer: Arc::new(device()),
            },
            exchange: remote.clone(),
            egress: remote.clone(),
            stop_channel: None,
            clock: s.clock.clone(),
            entropy: &mut SeededEntropy::new(5),
            grants: vec![],
            lifetime: None,
            user_assertion: None,
        })
        .await
        .expect("attest")
        .with_approvals(remote);
    let instance = Arc::new(instance);
    let url = format!("{}/p/report", s.up.origin());
    let task = serde_json::json!({
        "approved": url, "method": "PUT", "body": "quarterly numbers", "wait_ms": 8000,
        "grant": "paste"
    })
    .to_string();
    let running = {
        let instance = Arc::clone(&instance);
        tokio::spawn(async move { instance.run(&task).await })
    };
    // The approver's side: wait for the ticket to open, look at it, approve.
    let store = s.svc.tokens.store().clone();
    let mut waited = 0;
    let ticket = loop {
        let pending = store
            .approvals(
                Some(edgeward_backend::store::ApprovalStatus::Pending),
                None,
                10,
                s.clock.now(),
            )
            .expect("list");
        if let Some(t) = pending.into_iter().next() {
            break t;
        }
        assert!(
            waited < 500 && !running.is_finished(),
            "no ticket opened; the guest ended: {:?}",
            running.is_finished()
        );
        waited += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        (ticket.agent.as_str(), ticket.method.as_str()),
        ("courier", "PUT")
    );
    assert_eq!(ticket.body_preview, "quarterly numbers");
    decide(&s, &ticket.id, true);
    let report = running.await.expect("join");
    let answer: Value = match report.outcome {
        Ok(Ok(text)) => serde_json::from_str(&text).expect("json"),
        other => panic!("{other:?}: {:?}", report.logs),
    };
    assert_eq!(answer["waited"], "Approved", "{answer}");
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["ticket"], ticket.id.as_str());
    assert_eq!(s.up.received().len(), 1);

    // Waiting on a ticket of another agent tells nothing: `unknown`, as
    // for an id that does not exist.
    let theirs = instance_ticket_of_other_agent(&s).await;
    for id in [
        theirs.as_str(),
        "00000000000000000000000000000000",
        "not-a-ticket",
    ] {
        let task = serde_json::json!({ "wait": id, "wait_ms": 100 }).to_string();
        let report = instance.run(&task).await;
        let answer: Value = match report.outcome {
            Ok(Ok(text)) => serde_json::from_str(&text).expect("json"),
            other => panic!("{other:?}"),
        };
        assert_eq!(answer["waited"], "Unknown", "{id}: {answer}");
    }
}

/// A ticket opened by another agent (`hostile`), for the visibility check.
async fn instance_ticket_of_other_agent(s: &Setup) -> String {
    let a = instance(&s.svc, "hostile", 9).await;
    let r = call(s, &a, "PUT", "/p/theirs", "paste", &[], b"x").await;
    ticket_of(&r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_calls_share_one_ticket_and_deprovisioning_drops_policy_and_approvals() {
    let s = setup(POLICY, false).await;
    let store = s.svc.tokens.store().clone();
    let a = instance(&s.svc, "other", 1).await;
    let first = call(&s, &a, "PUT", "/p/x", "paste", &[], b"same").await;
    let ticket = ticket_of(&first);
    // The store opens at most one pending ticket per exact action.
    let t = store
        .approval(&ticket, s.clock.now())
        .expect("read")
        .expect("ticket");
    let again = edgeward_backend::store::ApprovalRecord {
        id: "f".repeat(32),
        ..t.clone()
    };
    let (stored, opened) = store.open_approval(&again, s.clock.now()).expect("open");
    assert!(!opened);
    assert_eq!(stored.id, ticket);
    decide(&s, &ticket, true);
    // An agent-specific policy, then the agent is deprovisioned: its policy
    // and its live approval go with it.
    let p = edgeward_core::policy::Policy::from_toml(
        "agent = \"other\"\n[[rule]]\nname = \"all\"\neffect = \"allow\"\n",
    )
    .expect("policy");
    store.put_policy(&p, s.clock.now(), "test").expect("put");
    store
        .deprovision_agent("other", s.clock.now())
        .expect("deprovision");
    assert!(store.policy("other").expect("read").is_none());
    let t = store
        .approval(&ticket, s.clock.now())
        .expect("read")
        .expect("ticket");
    assert_eq!(t.status, edgeward_backend::store::ApprovalStatus::Expired);
}

/// The backend restarts (a new `Backend` over the same registry): the
/// sequence state is rebuilt from the calls stored with their audit
/// records, so a trigger and a count still hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_state_survives_a_restart_of_the_backend() {
    use edgeward_core::egress::{BearerToken, Egress as _, EgressCall};
    let s = setup(POLICY, false).await;
    let a = instance(&s.svc, "hostile", 1).await;
    // The trigger (mail) and three of the four mail reads, before the restart.
    for _ in 0..3 {
        assert_eq!(
            call(&s, &a, "GET", "/mail/inbox", "mail", &[], b"")
                .await
                .status,
            200
        );
    }
    let restarted = edgeward_backend::Backend::with_secrets(
        Arc::clone(&s.svc.tokens),
        edgeward_tests::secrets_from(&[("API_KEY", KEY)]),
    )
    .expect("backend");
    let jti = std::sync::atomic::AtomicU8::new(0);
    let through_new = |method: &str, path: &str, grant: &str| {
        let n = jti.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let url = format!("{}{path}", s.up.origin());
        let uri: http::Uri = url.parse().expect("url");
        let method: http::Method = method.parse().expect("method");
        let proof = edgeward_core::dpop::create_proof(
            &a.key,
            &method,
            &uri,
            &a.token,
            edgeward_core::clock::SystemClock.now(),
            &[n; 16],
        )
        .expect("proof");
        let mut request = http::Request::new(bytes::Bytes::from_static(b"x"));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        restarted.forward(EgressCall {
            token: BearerToken::new(a.token.clone()),
            proof,
            grant: edgeward_core::grant::GrantName::new(grant).expect("grant"),
            request,
        })
    };
    // The trigger still holds: posting to paste needs approval...
    let refused = through_new("POST", "/p/after-restart", "paste")
        .await
        .expect_err("needs approval");
    assert_eq!(refused.class.as_str(), "needs-approval");
    assert_eq!(
        refused.rule.as_deref(),
        Some("policy \"*\".after \"no-exfil-after-mail\"")
    );
    // ...and the count: one mail read is left in the window, not four.
    assert!(through_new("GET", "/mail/inbox", "mail").await.is_ok());
    let limited = through_new("GET", "/mail/inbox", "mail")
        .await
        .expect_err("limit");
    assert_eq!(limited.class.as_str(), "limit-exceeded");
}

/// The stored policy events carry the guest's path: scrubbed like the
/// audit record they sit beside, so a secret a guest puts in a path is not
/// kept there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_policy_events_do_not_keep_a_secret_from_the_path() {
    let s = setup(POLICY, false).await;
    let a = instance(&s.svc, "hostile", 1).await;
    // Built from pieces: a GitHub token shape in a path segment.
    let token = format!("ghp_{}", "aB3dE6gH9jK2mN5pQ8rS1tU4vW7xY0zA1bC2");
    let r = call(&s, &a, "GET", &format!("/v1/{token}"), "weather", &[], b"").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let events = s.svc.tokens.store().policy_events_since(0).expect("events");
    let ours: Vec<_> = events
        .iter()
        .filter(|(_, e)| e.grant == "weather")
        .collect();
    assert_eq!(ours.len(), 1);
    assert!(
        !ours[0].1.path.contains(&token),
        "the event keeps the secret"
    );
    assert!(ours[0].1.path.starts_with("/v1/"));
    for reason in audit_reasons(&s.svc) {
        assert!(!reason.contains(&token));
    }
}

/// A parent's sequence rule sees what its sub-agents do: a child (agent
/// `other`, with no policy of its own) reading mail sets the parent's
/// trigger, so the parent cannot launder "no paste after mail" through it —
/// also after a restart of the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parents_sequence_rules_see_its_sub_agents_calls() {
    use edgeward_core::caveat::{Caveat, Chain};
    use edgeward_core::keys::Signer as _;
    const TREE: &str = r#"
[[policy]]
agent = "hostile"

[[policy.rule]]
name = "all"
effect = "allow"

[[policy.after]]
name = "no-paste-after-mail"
after = { grant = "mail" }
then = { grant = "paste", methods = ["POST"] }
effect = "deny"
"#;
    let s = setup(TREE, false).await;
    let parent = instance(&s.svc, "hostile", 7).await;
    assert_eq!(
        call(&s, &parent, "POST", "/p/before", "paste", &[], b"x")
            .await
            .status,
        200
    );
    let child_key = Ed25519Signer::generate(&mut SeededEntropy::new(71)).expect("key");
    let chain = Chain::new(
        parent.token.clone(),
        parent.chain_key.clone().expect("chain key"),
    )
    .append(Caveat::Agent("other".into()))
    .and_then(|c| c.append(Caveat::Holder(child_key.public_key().jwk_thumbprint())))
    .expect("caveats")
    .encode();
    let url = format!("{}/mail/inbox", s.up.origin());
    let read = raw_call(&s.svc, &chain, &child_key, "GET", &url, "mail", &[], b"").await;
    assert_eq!(read.status, 200, "{:?}", read.body);
    let refused = call(&s, &parent, "POST", "/p/after", "paste", &[], b"x").await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    assert_eq!(
        rule_of(&refused),
        "policy \"hostile\".after \"no-paste-after-mail\""
    );

    // The child's call is stored as a policy event and replayed: a
    // restarted backend still holds the parent to it.
    let restarted = edgeward_backend::Backend::with_secrets(
        Arc::clone(&s.svc.tokens),
        edgeward_tests::secrets_from(&[("API_KEY", KEY)]),
    )
    .expect("backend");
    let url = format!("{}/p/after-restart", s.up.origin());
    let proof = edgeward_core::dpop::create_proof(
        &parent.key,
        &http::Method::POST,
        &url.parse().expect("url"),
        &parent.token,
        edgeward_core::clock::SystemClock.now(),
        &[9; 16],
    )
    .expect("proof");
    let mut request = http::Request::new(bytes::Bytes::from_static(b"x"));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = url.parse().expect("url");
    use edgeward_core::egress::Egress as _;
    let after_restart = restarted
        .forward(edgeward_core::egress::EgressCall {
            token: edgeward_core::egress::BearerToken::new(parent.token.clone()),
            proof,
            grant: edgeward_core::grant::GrantName::new("paste").expect("grant"),
            request,
        })
        .await
        .expect_err("still after mail");
    assert_eq!(
        after_restart.rule.as_deref(),
        Some("policy \"hostile\".after \"no-paste-after-mail\"")
    );
}
