//! Delegation (issue 7), over real TLS on loopback:
//! - by attenuation: a token narrowed offline with caveats, presented by a
//!   child key, checked by the backend. These tests drive the wire format
//!   directly, including forms no runtime would make; `wit_delegation.rs`
//!   starts children from a guest through the WIT `delegation` interface.
//! - for a user: a user's assertion from a trusted issuer as the exchange's
//!   `subject_token`; without a valid one there is no on-behalf-of.

use edgeward_backend::revocation::RevocationKind;
use edgeward_core::caveat::{Caveat, Chain, MAX_DELEGATION_DEPTH};
use edgeward_core::clock::SystemClock;
use edgeward_core::entropy::SeededEntropy;
use edgeward_core::grant::GrantName;
use edgeward_core::keys::{Ed25519Signer, Signer};
use edgeward_tests::{
    HOSTILE_WASM, RawInstance, Service, Upstream, digest, raw_egress, raw_exchange, respond,
};
use std::sync::Arc;

const KEY: &str = "delegation-upstream-key-0123456789";
/// The mail grant's credentials: the service's own and one per user.
const MAIL: [(&str, &str); 3] = [
    ("MAIL_SERVICE", "mail-service-key-aaaaaaaaaaaaaaaa"),
    ("MAIL_ALICE", "mail-alice-key-bbbbbbbbbbbbbbbbbbbb"),
    ("MAIL_BOB", "mail-bob-key-cccccccccccccccccccccc"),
];

fn device() -> Ed25519Signer {
    Ed25519Signer::generate(&mut SeededEntropy::new(707)).expect("key")
}

fn key(seed: u64) -> Ed25519Signer {
    Ed25519Signer::generate(&mut SeededEntropy::new(seed)).expect("key")
}

fn config(origin: &str) -> String {
    use edgeward_tests::conf;
    let hostile = digest(HOSTILE_WASM);
    [
        conf::BACKEND.to_owned(),
        conf::device("dev-1", &device()),
        conf::grant("api", origin, &["GET"], "/v1", "API_KEY"),
        conf::grant("other", origin, &["GET"], "/v2", "API_KEY"),
        conf::grant("mail", origin, &["GET"], "/mail", "MAIL_SERVICE"),
        r#"user_secrets = { "user:corp/alice@example.com" = { env = "MAIL_ALICE" }, "user:corp/bob@example.com" = { env = "MAIL_BOB" } }
"#
        .to_owned(),
        conf::user_issuer(&jwks(), &["hostile"]),
        conf::agent("hostile", &hostile, &["api", "other", "mail"], &["dev-1"]),
        // The same component under a name the issuer does not list.
        conf::agent("unlisted", &hostile, &["api"], &["dev-1"]),
    ]
    .concat()
}

/// The test IdP's signing key and its JWKS.
fn idp() -> Ed25519Signer {
    key(808)
}

fn jwks() -> String {
    edgeward_tests::idp_jwks(&idp())
}

/// A user assertion as the test IdP (or `signer`, for forgeries) signs it.
fn assertion(signer: &dyn Signer, claims: serde_json::Value) -> String {
    edgeward_tests::user_assertion(signer, claims)
}

fn user_claims(sub: &str) -> serde_json::Value {
    let now = edgeward_core::clock::Clock::now(&SystemClock);
    serde_json::json!({
        "iss": "https://idp.test", "sub": sub, "aud": "edgeward-test",
        "iat": now, "exp": now + 600, "name": "A. User"
    })
}

fn claims_of(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("b64"),
    )
    .expect("json")
}

async fn setup() -> (Upstream, Service, RawInstance) {
    let up = Upstream::start(|r| {
        let key = r.headers.get("x-api-key").map(|v| v.as_bytes());
        if key == Some(KEY.as_bytes()) {
            return respond(200, &[], "ok");
        }
        // The mail upstream says whose mailbox the key opens, and
        // (carelessly) echoes the key.
        match MAIL.iter().find(|(_, k)| Some(k.as_bytes()) == key) {
            Some((who, k)) => respond(200, &[], format!("mailbox {who} key {k}")),
            None => respond(401, &[], "no key"),
        }
    })
    .await;
    let mut secrets = vec![("API_KEY", KEY)];
    secrets.extend(MAIL);
    let svc = Service::start(&config(&up.origin()), &secrets, Arc::new(SystemClock))
        .await
        .expect("service");
    let parent = raw_exchange(
        &svc,
        "hostile",
        ("dev-1", &device()),
        HOSTILE_WASM,
        1,
        120,
        None,
    )
    .await
    .expect("parent exchange");
    (up, svc, parent)
}

fn grants(names: &[&str]) -> Vec<GrantName> {
    names
        .iter()
        .map(|n| GrantName::new(n).expect("name"))
        .collect()
}

/// The parent's chain, narrowed for a child holding `child`.
fn child_chain(parent: &RawInstance, child: &Ed25519Signer) -> Chain {
    Chain::new(
        parent.token.clone(),
        parent
            .chain_key
            .clone()
            .expect("the backend hands out a chain key"),
    )
    .append(Caveat::grants(grants(&["api"])))
    .and_then(|c| c.append(Caveat::methods(["GET"])?))
    .and_then(|c| c.append(Caveat::path_prefixes(["/v1/forecast"])?))
    .and_then(|c| c.append(Caveat::Holder(child.public_key().jwk_thumbprint())))
    .expect("valid caveats")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_is_held_to_its_caveats_while_its_parent_is_not() {
    let (up, svc, parent) = setup().await;
    let child = key(2);
    let chain = child_chain(&parent, &child).encode();
    let at = |path: &str| format!("{}{path}", up.origin());

    // The parent may use the whole grant; the child only its prefix.
    assert_eq!(
        raw_egress(&svc, &parent.token, &parent.key, &at("/v1/other"), "api").await,
        (200, String::new())
    );
    assert_eq!(
        raw_egress(&svc, &chain, &child, &at("/v1/other"), "api").await,
        (403, "denied".into())
    );
    assert_eq!(
        raw_egress(&svc, &chain, &child, &at("/v1/forecast/today"), "api").await,
        (200, String::new())
    );
    // Its grants are the parent's intersected with its caveats.
    assert_eq!(
        raw_egress(&svc, &parent.token, &parent.key, &at("/v2/x"), "other").await,
        (200, String::new())
    );
    assert_eq!(
        raw_egress(&svc, &chain, &child, &at("/v2/x"), "other").await,
        (403, "denied".into())
    );
    // Asking for more further down the chain adds nothing.
    let wider = child_chain(&parent, &child)
        .append(Caveat::grants(grants(&["api", "other"])))
        .expect("caveat")
        .encode();
    assert_eq!(
        raw_egress(&svc, &wider, &child, &at("/v2/x"), "other").await,
        (403, "denied".into())
    );
    // Possession moved to the child: the parent's key cannot use the chain.
    assert_eq!(
        raw_egress(&svc, &chain, &parent.key, &at("/v1/forecast/a"), "api").await,
        (401, "denied".into())
    );
    let received = up.received();
    assert_eq!(
        received
            .iter()
            .filter(|r| r.uri.starts_with("/v1/other"))
            .count(),
        1,
        "the child's call outside its prefix never left the backend"
    );
    // The audit log tells the child's calls from the parent's.
    let records = svc.tokens.store().audit_range(1, 1000).expect("audit");
    let holder = child.public_key().jwk_thumbprint();
    let delegated: Vec<_> = records
        .iter()
        .filter(|r| r.entry.kind == "egress")
        .filter(|r| {
            r.entry
                .reason
                .as_deref()
                .is_some_and(|x| x.contains(&holder))
        })
        .collect();
    assert_eq!(delegated.len(), 5, "{delegated:#?}");
    assert!(delegated.iter().all(|r| {
        let reason = r.entry.reason.as_deref().unwrap_or("");
        r.entry.instance.as_deref() == Some(parent.instance_id.as_str())
            && (reason.contains("4 caveat(s)") || reason.contains("5 caveat(s)"))
            && reason.contains("grants [api]")
            && reason.contains("paths [/v1/forecast]")
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripped_or_forged_chains_are_refused() {
    let (up, svc, parent) = setup().await;
    let child = key(3);
    let url = format!("{}/v1/forecast/today", up.origin());
    let wire = child_chain(&parent, &child).encode();
    let parts: Vec<&str> = wire.split('~').collect();
    let tag = parts[parts.len() - 1];

    // The parent's bare token with every caveat stripped, proof from the
    // child's own key: bound to the parent's key, so refused.
    assert_eq!(
        raw_egress(&svc, &parent.token, &child, &url, "api").await,
        (401, "denied".into())
    );
    // Nor can the child revoke its parent's token: that needs the parent's key.
    assert_eq!(
        edgeward_tests::raw_revoke(&svc, &parent.token, Some(&child)).await,
        401
    );
    assert_eq!(
        raw_egress(
            &svc,
            &parent.token,
            &parent.key,
            &format!("{}/v1/x", up.origin()),
            "api"
        )
        .await
        .0,
        200
    );
    // Caveats stripped but the child's tag kept; one caveat dropped;
    // reordered; a caveat widened in place; a made-up tag.
    let stripped = format!("{}~{tag}", parts[0]);
    let dropped = [parts[0], parts[1], parts[3], parts[4], tag].join("~");
    let reordered = [parts[0], parts[2], parts[1], parts[3], parts[4], tag].join("~");
    let widened = wire.replacen(
        parts[3],
        &base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            "paths:/v1",
        ),
        1,
    );
    let forged = format!("{}~{}", parts[..parts.len() - 1].join("~"), "A".repeat(43));
    for (name, bad) in [
        ("stripped", stripped),
        ("dropped", dropped),
        ("reordered", reordered),
        ("widened", widened),
        ("forged", forged),
    ] {
        assert_eq!(
            raw_egress(&svc, &bad, &child, &url, "api").await,
            (401, "denied".into()),
            "{name}"
        );
    }
    // Not canonical, not base64: refused before any verification.
    for junk in [
        format!("{}~@@@~{tag}", parts[0]),
        format!("{}~~{tag}", parts[0]),
    ] {
        assert_eq!(raw_egress(&svc, &junk, &child, &url, "api").await.0, 401);
    }
    assert_eq!(
        up.received().len(),
        1,
        "only the parent's own call reached the upstream, no refused chain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_is_limited_and_revoking_the_parent_stops_every_descendant() {
    let (up, svc, parent) = setup().await;
    let url = format!("{}/v1/forecast/today", up.origin());
    // A chain of MAX_DELEGATION_DEPTH hops works; one more does not.
    let keys: Vec<Ed25519Signer> = (0..=MAX_DELEGATION_DEPTH as u64)
        .map(|i| key(100 + i))
        .collect();
    let mut deep = child_chain(&parent, &keys[0]);
    for k in &keys[1..MAX_DELEGATION_DEPTH as usize] {
        deep = deep
            .append(Caveat::Holder(k.public_key().jwk_thumbprint()))
            .expect("caveat");
    }
    let deepest = &keys[MAX_DELEGATION_DEPTH as usize - 1];
    assert_eq!(
        raw_egress(&svc, &deep.encode(), deepest, &url, "api").await,
        (200, String::new())
    );
    let too_deep = deep
        .append(Caveat::Holder(
            keys[MAX_DELEGATION_DEPTH as usize]
                .public_key()
                .jwk_thumbprint(),
        ))
        .expect("caveat");
    assert_eq!(
        raw_egress(
            &svc,
            &too_deep.encode(),
            &keys[MAX_DELEGATION_DEPTH as usize],
            &url,
            "api"
        )
        .await,
        (401, "denied".into())
    );

    // Revoking the parent's instance revokes every chain built on its token.
    let child = key(9);
    let chain = child_chain(&parent, &child).encode();
    assert_eq!(raw_egress(&svc, &chain, &child, &url, "api").await.0, 200);
    svc.tokens
        .revoke(
            &RevocationKind::Instance {
                id: parent.instance_id.clone(),
            },
            "test-admin",
            "test",
        )
        .expect("revoke");
    assert_eq!(
        raw_egress(&svc, &chain, &child, &url, "api").await,
        (401, "revoked".into())
    );
    // Every descendant, however deep.
    assert_eq!(
        raw_egress(&svc, &deep.encode(), deepest, &url, "api").await,
        (401, "revoked".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_assertion_makes_the_user_the_subject_and_the_instance_the_actor() {
    let (up, svc, plain) = setup().await;
    // Without an assertion the instance acts for itself.
    assert_eq!(plain.on_behalf_of, None);
    let own = claims_of(&plain.token);
    assert_eq!(own["sub"], own["act"]["sub"]);

    let alice = assertion(&idp(), user_claims("alice@example.com"));
    let raw = raw_exchange(
        &svc,
        "hostile",
        ("dev-1", &device()),
        HOSTILE_WASM,
        21,
        120,
        Some(&alice),
    )
    .await
    .expect("exchange with a user assertion");
    assert_eq!(
        raw.on_behalf_of.as_deref(),
        Some("user:corp/alice@example.com")
    );
    let c = claims_of(&raw.token);
    assert_eq!(c["sub"], "user:corp/alice@example.com");
    // `act` is the instance, nesting the device: delegation, not impersonation.
    assert!(
        c["act"]["sub"]
            .as_str()
            .is_some_and(|s| s.ends_with(&format!("/instance/{}", raw.instance_id)))
    );
    assert!(
        c["act"]["act"]["sub"]
            .as_str()
            .is_some_and(|s| s.ends_with("/device/dev-1"))
    );
    // The token works, and the audit log says for whom.
    let url = format!("{}/v1/x", up.origin());
    assert_eq!(
        raw_egress(&svc, &raw.token, &raw.key, &url, "api").await,
        (200, String::new())
    );
    let records = svc.tokens.store().audit_range(1, 1000).expect("audit");
    assert!(records.iter().any(|r| {
        r.entry.kind == "exchange"
            && r.entry.reason.as_deref() == Some("on behalf of user:corp/alice@example.com")
    }));

    // Through the runtime: the guest reads its user from `identity`.
    let loaded = edgeward_tests::runtime()
        .load(
            edgeward_tests::component(HOSTILE_WASM),
            edgeward_runtime::AgentSpec {
                name: "hostile".into(),
                allowed_digests: vec![digest(HOSTILE_WASM)],
            },
        )
        .expect("load");
    let remote = Arc::new(svc.remote());
    let instance = loaded
        .attest(edgeward_runtime::AttestOptions {
            device: edgeward_runtime::DeviceIdentity {
                id: "dev-1".into(),
                signer: Arc::new(device()),
            },
            exchange: remote.clone(),
            egress: remote.clone(),
            stop_channel: Some(remote),
            clock: Arc::new(SystemClock),
            entropy: &mut SeededEntropy::new(22),
            grants: vec![],
            lifetime: None,
            user_assertion: Some(edgeward_core::egress::BearerToken::new(alice)),
        })
        .await
        .expect("attest for alice");
    let report = instance.run("identity").await;
    let text = match report.outcome {
        Ok(Ok(t)) => t,
        other => panic!("identity task: {other:?}"),
    };
    let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(doc["user"], "user:corp/alice@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_foreign_user_assertion_gives_no_on_behalf_of() {
    let (_up, svc, _) = setup().await;
    let forger = key(999);
    let now = edgeward_core::clock::Clock::now(&SystemClock);
    let mut cases = vec![
        (
            "signed by another key",
            assertion(&forger, user_claims("alice")),
        ),
        ("not a JWT", "alice".to_owned()),
    ];
    for (name, edit) in [
        (
            "untrusted issuer",
            ("iss", serde_json::json!("https://evil.test")),
        ),
        (
            "another audience",
            ("aud", serde_json::json!("someone-else")),
        ),
        ("expired", ("exp", serde_json::json!(now - 60))),
        ("no subject", ("sub", serde_json::Value::Null)),
    ] {
        let mut c = user_claims("alice");
        c[edit.0] = edit.1;
        cases.push((name, assertion(&idp(), c)));
    }
    for (i, (name, bad)) in cases.into_iter().enumerate() {
        let refused = raw_exchange(
            &svc,
            "hostile",
            ("dev-1", &device()),
            HOSTILE_WASM,
            40 + i as u64,
            120,
            Some(&bad),
        )
        .await;
        let err = refused.err().unwrap_or_else(|| panic!("{name}: accepted"));
        assert!(err.to_string().contains("invalid_grant"), "{name}: {err}");
    }
    // A valid assertion does not let an agent its issuer does not list act
    // for the user: a copy of an assertion is not a key to every agent.
    let err = raw_exchange(
        &svc,
        "unlisted",
        ("dev-1", &device()),
        HOSTILE_WASM,
        49,
        120,
        Some(&assertion(&idp(), user_claims("alice"))),
    )
    .await
    .err()
    .expect("unlisted agent refused");
    assert!(
        err.to_string()
            .contains("agent unlisted may not act for users of issuer corp"),
        "{err}"
    );
    // Every refusal is audited with its reason.
    let audit = svc.tokens.store().audit_range(1, 1000).expect("audit");
    assert!(
        audit
            .iter()
            .filter(|r| r.entry.kind == "exchange" && r.entry.decision == "deny")
            .all(|r| r
                .entry
                .reason
                .as_deref()
                .is_some_and(|x| x.contains("user assertion refused"))),
        "{audit:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_gets_only_their_own_credential() {
    let (up, svc, service_instance) = setup().await;
    let url = format!("{}/mail/inbox", up.origin());
    let as_user = |sub: &str, seed: u64| {
        let jwt = assertion(&idp(), user_claims(sub));
        let svc = &svc;
        async move {
            raw_exchange(
                svc,
                "hostile",
                ("dev-1", &device()),
                HOSTILE_WASM,
                seed,
                120,
                Some(&jwt),
            )
            .await
            .expect("exchange")
        }
    };
    let alice = as_user("alice@example.com", 61).await;
    let bob = as_user("bob@example.com", 62).await;
    let carol = as_user("carol@example.com", 63).await;
    for (who, inst) in [("alice", &alice), ("bob", &bob)] {
        assert_eq!(
            raw_egress(&svc, &inst.token, &inst.key, &url, "mail").await,
            (200, String::new()),
            "{who}"
        );
    }
    // Each call reached the upstream with the caller's own credential.
    let seen: Vec<String> = up
        .received()
        .iter()
        .filter_map(|r| r.headers.get("x-api-key"))
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    assert_eq!(seen, [MAIL[1].1, MAIL[2].1]);
    // A user without a credential on a per-user grant is refused, and so is
    // a call on nobody's behalf: skipping the assertion does not reach the
    // grant's own credential.
    for inst in [&carol, &service_instance] {
        assert_eq!(
            raw_egress(&svc, &inst.token, &inst.key, &url, "mail").await,
            (403, "denied".into())
        );
    }
    assert_eq!(up.received().len(), 2);
    // The audit log names the user of each call.
    let audit = svc.tokens.store().audit_range(1, 1000).expect("audit");
    let users: Vec<Option<&str>> = audit
        .iter()
        .filter(|r| r.entry.kind == "egress")
        .map(|r| r.entry.user.as_deref())
        .collect();
    assert_eq!(
        users,
        [
            Some("user:corp/alice@example.com"),
            Some("user:corp/bob@example.com"),
            Some("user:corp/carol@example.com"),
            None
        ]
    );
    // An instance is its key: the same key acting for another user is the
    // same instance, so revoking it stops the key whoever it acts for.
    let same_key = |sub: &str| {
        let jwt = assertion(&idp(), user_claims(sub));
        let svc = &svc;
        async move {
            raw_exchange(
                svc,
                "hostile",
                ("dev-1", &device()),
                HOSTILE_WASM,
                61,
                120,
                Some(&jwt),
            )
            .await
        }
    };
    let same_instance = same_key("bob@example.com").await.expect("exchange");
    assert_eq!(same_instance.instance_id, alice.instance_id);
    svc.tokens
        .revoke(
            &RevocationKind::Instance {
                id: alice.instance_id.clone(),
            },
            "test-admin",
            "test",
        )
        .expect("revoke");
    assert!(same_key("dave@example.com").await.is_err());
    // Alice's instance cannot borrow Bob's token: it is bound to Bob's key.
    assert_eq!(
        raw_egress(&svc, &bob.token, &alice.key, &url, "mail").await,
        (401, "denied".into())
    );
}

/// Runtime level: two instances of one agent on one device, one per user.
/// Each sees only its own user, and its calls carry only that user's
/// credential (which the guest never sees, even when the upstream echoes
/// it); the two share no key, token, store or instance id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_instances_of_one_agent_keep_apart() {
    let (up, svc, _) = setup().await;
    let remote = Arc::new(svc.remote());
    let loaded = edgeward_tests::runtime()
        .load(
            edgeward_tests::component(HOSTILE_WASM),
            edgeward_runtime::AgentSpec {
                name: "hostile".into(),
                allowed_digests: vec![digest(HOSTILE_WASM)],
            },
        )
        .expect("load");
    let mut instances = Vec::new();
    for (i, user) in ["alice@example.com", "bob@example.com"].iter().enumerate() {
        let jwt = assertion(&idp(), user_claims(user));
        let instance = loaded
            .attest(edgeward_runtime::AttestOptions {
                device: edgeward_runtime::DeviceIdentity {
                    id: "dev-1".into(),
                    signer: Arc::new(device()),
                },
                exchange: remote.clone(),
                egress: remote.clone(),
                stop_channel: None,
                clock: Arc::new(SystemClock),
                entropy: &mut SeededEntropy::new(90 + i as u64),
                grants: vec![],
                lifetime: None,
                user_assertion: Some(edgeward_core::egress::BearerToken::new(jwt)),
            })
            .await
            .expect("attest");
        instances.push(instance);
    }
    let url = format!("{}/mail/inbox", up.origin());
    let mut ids = Vec::new();
    for (instance, (who, other)) in instances
        .iter()
        .zip([("MAIL_ALICE", "MAIL_BOB"), ("MAIL_BOB", "MAIL_ALICE")])
    {
        let report = instance.run("identity").await;
        let id: serde_json::Value = match &report.outcome {
            Ok(Ok(text)) => serde_json::from_str(text).expect("json"),
            other => panic!("{other:?}"),
        };
        let user = format!(
            "user:corp/{}@example.com",
            who.trim_start_matches("MAIL_").to_lowercase()
        );
        assert_eq!(id["user"], user.as_str());
        ids.push(id["instance"].as_str().expect("id").to_owned());
        let report = instance
            .run(&format!("fetch GET {url} edgeward-grant:mail"))
            .await;
        let seen = edgeward_tests::guest_visible(&report);
        assert!(seen.contains(&format!("mailbox {who}")), "{seen}");
        assert!(!seen.contains(other), "{seen}");
        for (_, key) in MAIL {
            edgeward_tests::assert_no_secret(&seen, key, who);
        }
    }
    assert_ne!(ids[0], ids[1]);
}
