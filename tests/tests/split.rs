//! Split mode over real TLS on loopback: attestation, token exchange, token
//! verification on the egress route, renewal.

use bytes::Bytes;
use edgeward_core::attest::{AttestationClaims, sign_attestation};
use edgeward_core::clock::{Clock, SystemClock};
use edgeward_core::digest::ComponentDigest;
use edgeward_core::egress::{ATTESTATION_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT};
use edgeward_core::entropy::SeededEntropy;
use edgeward_core::grant::GrantName;
use edgeward_core::keys::{Ed25519Signer, Es256Signer, PublicKey, Signer};
use edgeward_core::token::{Mint, TokenIssuer};
use edgeward_runtime::{AgentSpec, AttestOptions, DeviceIdentity};
use edgeward_tests::{
    HELLO_WASM, HOSTILE_WASM, Service, TestClock, Upstream, assert_no_secret, component, digest,
    guest_visible, host_logs, respond, runtime,
};
use serde_json::Value;
use std::sync::Arc;

const KEY: &str = "split-mode-upstream-key-0123456789";
const NOW: u64 = 1_767_225_600;

struct Devices {
    ed: Ed25519Signer,
    es: Es256Signer,
    stranger: Ed25519Signer,
    other_key: Ed25519Signer,
}

fn devices() -> Devices {
    let mut e = SeededEntropy::new(99);
    Devices {
        ed: Ed25519Signer::generate(&mut e).expect("key"),
        es: Es256Signer::generate(&mut e).expect("key"),
        stranger: Ed25519Signer::generate(&mut e).expect("key"),
        other_key: Ed25519Signer::generate(&mut e).expect("key"),
    }
}

/// Agents `hello` and `hostile` on devices `dev-ed` and `dev-es`; device
/// `dev-other` is enrolled but allowed to run nothing.
fn config(origin: &str, d: &Devices, agent_extra: &str) -> String {
    format!(
        r#"
[backend]
issuer = "https://backend.test"
audience = "edgeward-test"
trust_domain = "edgeward.test"

[[device]]
id = "dev-ed"
owner = "ops@edgeward.invalid"
public_key = "{ed}"

[[device]]
id = "dev-es"
owner = "ops@edgeward.invalid"
public_key = "{es}"

[[device]]
id = "dev-other"
owner = "ops@edgeward.invalid"
public_key = "{other}"

[[grant]]
name = "api"
origin = "{origin}"
methods = ["GET"]
path_prefixes = ["/v1"]
credential = {{ kind = "header", name = "x-api-key" }}
secret = {{ env = "API_KEY" }}

[[grant]]
name = "other-api"
origin = "{origin}"
methods = ["GET"]
path_prefixes = ["/v2"]
credential = {{ kind = "header", name = "x-api-key" }}
secret = {{ env = "API_KEY" }}

[[agent]]
name = "hello"
owner = "tests@edgeward.invalid"
digests = ["{hello}"]
grants = ["api"]
devices = ["dev-ed", "dev-es"]
max_token_lifetime_s = 120
{agent_extra}

[[agent]]
name = "hostile"
owner = "tests@edgeward.invalid"
digests = ["{hostile}"]
grants = ["api", "other-api"]
devices = ["dev-ed"]
max_token_lifetime_s = 2
limits = {{ task_timeout_ms = 20000 }}
"#,
        ed = d.ed.public_key(),
        es = d.es.public_key(),
        other = d.other_key.public_key(),
        hello = digest(HELLO_WASM),
        hostile = digest(HOSTILE_WASM),
    )
}

async fn upstream() -> Upstream {
    Upstream::start(|r| {
        if r.headers.get("x-api-key").map(|v| v.as_bytes()) == Some(KEY.as_bytes()) {
            respond(200, &[], format!("ok {}", r.uri))
        } else {
            respond(401, &[], "no key")
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_mode_happy_path_with_ed25519_and_es256_devices() {
    let up = upstream().await;
    let d = devices();
    let svc = Service::start(
        &config(&up.origin(), &d, ""),
        &[("API_KEY", KEY)],
        Arc::new(SystemClock),
    )
    .await
    .expect("service");
    let loaded = runtime()
        .load(
            component(HELLO_WASM),
            AgentSpec {
                name: "hello".into(),
                allowed_digests: vec![digest(HELLO_WASM)],
            },
        )
        .expect("load");
    let signers: [(&str, Arc<dyn Signer>); 2] = [
        (
            "dev-ed",
            Arc::new(
                Ed25519Signer::from_pkcs8_pem(&d.ed.to_pkcs8_pem().expect("pem")).expect("key"),
            ),
        ),
        (
            "dev-es",
            Arc::new(Es256Signer::from_pkcs8_pem(&d.es.to_pkcs8_pem().expect("pem")).expect("key")),
        ),
    ];
    for (id, signer) in signers {
        let remote = Arc::new(svc.remote());
        let instance = loaded
            .attest(AttestOptions {
                device: DeviceIdentity {
                    id: id.into(),
                    signer,
                },
                exchange: remote.clone(),
                egress: remote.clone(),
                stop_channel: Some(remote),
                clock: Arc::new(SystemClock),
                entropy: &mut SeededEntropy::new(u64::from(id.as_bytes()[5])),
                grants: vec![],
                lifetime: Some(600),
                user_assertion: None,
            })
            .await
            .unwrap_or_else(|e| panic!("{id}: attest: {e}"));
        assert_eq!(instance.identity().instance_id.len(), 20);
        let report = instance.run(&format!("{}/v1/forecast", up.origin())).await;
        assert_eq!(
            report.outcome,
            Ok(Ok("ok /v1/forecast".into())),
            "{id}: {:?}",
            report.logs
        );
        assert_no_secret(&guest_visible(&report), KEY, id);
    }
    assert_no_secret(&host_logs(), KEY, "host logs");
    assert!(host_logs().contains("token minted"));

    // The well-known documents.
    let jwks = svc
        .client
        .send(
            http::Request::get(format!("{}/.well-known/jwks.json", svc.url))
                .body(Bytes::new())
                .unwrap(),
        )
        .await
        .expect("jwks");
    let jwks: Value = serde_json::from_slice(jwks.body()).expect("json");
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    assert!(jwks["keys"][0]["kid"].is_string());
    let meta = svc
        .client
        .send(
            http::Request::get(format!(
                "{}/.well-known/oauth-authorization-server",
                svc.url
            ))
            .body(Bytes::new())
            .unwrap(),
        )
        .await
        .expect("metadata");
    let meta: Value = serde_json::from_slice(meta.body()).expect("json");
    assert_eq!(meta["issuer"], "https://backend.test");
    assert!(
        meta["token_endpoint"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/v1/token")
    );
    assert_eq!(meta["grant_types_supported"][0], TOKEN_EXCHANGE_GRANT);
}

/// Everything needed to forge or replay attestations against the service.
struct Wire<'a> {
    svc: &'a Service,
}

impl Wire<'_> {
    async fn nonce(&self) -> String {
        let r = self
            .svc
            .client
            .send(
                http::Request::get(format!("{}/v1/challenge", self.svc.url))
                    .body(Bytes::new())
                    .unwrap(),
            )
            .await
            .expect("challenge");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let v: Value = serde_json::from_slice(r.body()).expect("json");
        v["nonce"].as_str().expect("nonce").to_owned()
    }

    async fn exchange_raw(&self, actor: &str, subject: &str) -> http::Response<Bytes> {
        self.svc
            .client
            .post_form(
                &format!("{}/v1/token", self.svc.url),
                &[
                    ("grant_type", TOKEN_EXCHANGE_GRANT),
                    ("actor_token", actor),
                    ("actor_token_type", ATTESTATION_TOKEN_TYPE),
                    ("subject_token", subject),
                    ("subject_token_type", ATTESTATION_TOKEN_TYPE),
                ],
            )
            .await
            .expect("token endpoint")
    }

    async fn exchange(&self, att: &str) -> http::Response<Bytes> {
        self.exchange_raw(att, att).await
    }
}

fn claims(
    nonce: String,
    device: &str,
    agent: &str,
    digest: ComponentDigest,
    grants: &[&str],
    lifetime: u64,
) -> AttestationClaims {
    // A distinct instance key per nonce: each attestation is a new instance.
    let seed = nonce
        .bytes()
        .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let instance = Ed25519Signer::generate(&mut SeededEntropy::new(seed)).expect("key");
    AttestationClaims {
        nonce,
        device: device.into(),
        agent: agent.into(),
        digest,
        instance_key: instance.public_key(),
        grants: grants
            .iter()
            .map(|g| GrantName::new(g).expect("grant"))
            .collect(),
        lifetime,
        iat: NOW,
    }
}

/// The instance key `claims` uses for an attestation with this nonce.
fn instance_key_for(nonce: &str) -> Ed25519Signer {
    let seed = nonce
        .bytes()
        .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    Ed25519Signer::generate(&mut SeededEntropy::new(seed)).expect("key")
}

fn error_of(r: &http::Response<Bytes>) -> (u16, String, String) {
    let v: Value = serde_json::from_slice(r.body()).expect("json");
    (
        r.status().as_u16(),
        v["error"].as_str().unwrap_or_default().to_owned(),
        v["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attestation_refusal_and_pre_verification_ones_look_the_same() {
    let up = upstream().await;
    let d = devices();
    let clock = TestClock::at(NOW);
    let svc = Service::start(
        &config(&up.origin(), &d, "max_instances_per_device = 1"),
        &[("API_KEY", KEY)],
        clock.clone(),
    )
    .await
    .expect("service");
    let w = Wire { svc: &svc };
    let hello = digest(HELLO_WASM);

    // Before the device signature verifies: one identical answer.
    let mut pre = Vec::new();
    let c = claims(w.nonce().await, "dev-nobody", "hello", hello, &["api"], 60);
    pre.push((
        "unknown device",
        w.exchange(&sign_attestation(&c, "dev-nobody", &d.ed).expect("sign"))
            .await,
    ));
    let c = claims(w.nonce().await, "dev-ed", "hello", hello, &["api"], 60);
    pre.push((
        "bad signature",
        w.exchange(&sign_attestation(&c, "dev-ed", &d.stranger).expect("sign"))
            .await,
    ));
    pre.push(("malformed", w.exchange("not.an.attestation").await));
    let c_es = claims(w.nonce().await, "dev-es", "hello", hello, &["api"], 60);
    pre.push((
        "EdDSA attestation for an ES256 device",
        w.exchange(&sign_attestation(&c_es, "dev-es", &d.ed).expect("sign"))
            .await,
    ));
    pre.push(("oversized", w.exchange(&"a".repeat(12_000)).await));
    let good = sign_attestation(&c, "dev-ed", &d.ed).expect("sign");
    let other = sign_attestation(
        &claims(w.nonce().await, "dev-ed", "hello", hello, &["api"], 60),
        "dev-ed",
        &d.ed,
    )
    .expect("sign");
    pre.push((
        "subject differs from actor",
        w.exchange_raw(&good, &other).await,
    ));
    let wrong_grant_type = svc
        .client
        .post_form(
            &format!("{}/v1/token", svc.url),
            &[("grant_type", "client_credentials"), ("actor_token", &good)],
        )
        .await
        .expect("post");
    pre.push(("wrong grant type", wrong_grant_type));
    let not_a_form = svc
        .client
        .send(
            http::Request::post(format!("{}/v1/token", svc.url))
                .body(Bytes::from_static(b"{}"))
                .unwrap(),
        )
        .await
        .expect("post");
    pre.push(("not a form", not_a_form));
    let (first_name, first) = &pre[0];
    for (name, r) in &pre {
        assert_eq!(r.status(), 400, "{name}");
        assert_eq!(
            r.body(),
            first.body(),
            "{name} differs on the wire from {first_name}"
        );
        assert_eq!(error_of(r).1, "invalid_grant", "{name}");
    }

    // After it verifies: precise reasons.
    let accepted = w.exchange(&good).await;
    assert_eq!(accepted.status(), 200, "{:?}", error_of(&accepted));
    let body: Value = serde_json::from_slice(accepted.body()).expect("json");
    assert_eq!(body["token_type"], "DPoP");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(body["expires_in"], 60);
    assert_eq!(body["scope"], "api");

    let replay = w.exchange(&good).await;
    assert!(
        error_of(&replay).2.contains("already used"),
        "{:?}",
        error_of(&replay)
    );

    let stale_nonce = w.nonce().await;
    clock.set(NOW + 600);
    let r = w
        .exchange(
            &sign_attestation(
                &claims(stale_nonce, "dev-ed", "hello", hello, &["api"], 60),
                "dev-ed",
                &d.ed,
            )
            .expect("sign"),
        )
        .await;
    let (status, error, description) = error_of(&r);
    assert_eq!((status, error.as_str()), (400, "invalid_grant"));
    assert!(description.contains("nonce"), "{description}");
    clock.set(NOW);

    let cases: Vec<(&str, AttestationClaims, &Ed25519Signer, &str, &str)> = vec![
        (
            "device not allowed",
            claims(w.nonce().await, "dev-other", "hello", hello, &["api"], 60),
            &d.other_key,
            "invalid_grant",
            "not allowed to run agent hello",
        ),
        (
            "digest not allowed",
            claims(
                w.nonce().await,
                "dev-ed",
                "hello",
                digest(HOSTILE_WASM),
                &["api"],
                60,
            ),
            &d.ed,
            "invalid_grant",
            "is not allowed for agent hello",
        ),
        (
            "grants beyond the agent's",
            claims(
                w.nonce().await,
                "dev-ed",
                "hello",
                hello,
                &["api", "other-api"],
                60,
            ),
            &d.ed,
            "invalid_scope",
            "other-api",
        ),
        (
            "unknown agent",
            claims(w.nonce().await, "dev-ed", "ghost", hello, &[], 60),
            &d.ed,
            "invalid_grant",
            "unknown agent",
        ),
        (
            "too many live instances",
            claims(w.nonce().await, "dev-ed", "hello", hello, &["api"], 60),
            &d.ed,
            "invalid_grant",
            "live instance",
        ),
    ];
    for (name, c, key, error, needle) in cases {
        let device = c.device.clone();
        let r = w
            .exchange(&sign_attestation(&c, &device, key).expect("sign"))
            .await;
        let (status, e, description) = error_of(&r);
        assert_eq!(status, 400, "{name}");
        assert_eq!(e, error, "{name}: {description}");
        assert!(description.contains(needle), "{name}: {description}");
    }

    // A lifetime above the agent's maximum is capped, and says so.
    let svc2 = Service::start(
        &config(&up.origin(), &d, ""),
        &[("API_KEY", KEY)],
        clock.clone(),
    )
    .await
    .expect("service");
    let w2 = Wire { svc: &svc2 };
    let c = claims(w2.nonce().await, "dev-ed", "hello", hello, &[], 100_000);
    let r = w2
        .exchange(&sign_attestation(&c, "dev-ed", &d.ed).expect("sign"))
        .await;
    let body: Value = serde_json::from_slice(r.body()).expect("json");
    assert_eq!(body["expires_in"], 120, "{body}");

    // The log has the full detail of every refusal, pre-verification included.
    let logs = host_logs();
    for needle in ["unknown device", "dev-nobody", "malformed attestation"] {
        assert!(logs.contains(needle), "log lacks {needle:?}");
    }
}

/// Send one guest request through the egress route with a given token and
/// a DPoP proof signed by `key` at `now`.
async fn egress_with(
    svc: &Service,
    token: &str,
    key: &dyn Signer,
    now: u64,
    grant: &str,
    url: &str,
) -> http::Response<Bytes> {
    let uri: http::Uri = url.parse().expect("url");
    let mut jti = [0u8; 16];
    edgeward_core::entropy::Entropy::fill(
        &mut SeededEntropy::new(now ^ url.len() as u64 ^ token.len() as u64),
        &mut jti,
    );
    jti[0] = jti[0].wrapping_add(PROOFS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) as u8);
    let proof = edgeward_core::dpop::create_proof(key, &http::Method::GET, &uri, token, now, &jti)
        .expect("proof");
    send_egress(svc, token, &proof, grant, url).await
}

static PROOFS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn send_egress(
    svc: &Service,
    token: &str,
    proof: &str,
    grant: &str,
    url: &str,
) -> http::Response<Bytes> {
    svc.client
        .send(
            http::Request::post(format!("{}/v1/egress", svc.url))
                .header("edgeward-method", "GET")
                .header("authorization", format!("DPoP {token}"))
                .header("dpop", proof)
                .header("edgeward-target", url)
                .header("edgeward-grant", grant)
                .body(Bytes::new())
                .unwrap(),
        )
        .await
        .expect("egress")
}

fn problem(r: &http::Response<Bytes>) -> (u16, String, String) {
    let v: Value = serde_json::from_slice(r.body()).unwrap_or_default();
    (
        r.status().as_u16(),
        r.headers()
            .get("edgeward-refusal")
            .map(|h| h.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default(),
        v["detail"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_on_the_egress_route() {
    let up = upstream().await;
    let d = devices();
    let clock = TestClock::at(NOW);
    let svc = Service::start(
        &config(&up.origin(), &d, ""),
        &[("API_KEY", KEY)],
        clock.clone(),
    )
    .await
    .expect("service");
    let w = Wire { svc: &svc };
    let url = format!("{}/v1/x", up.origin());

    // A real token for grant `api`, from a real exchange.
    let c = claims(
        w.nonce().await,
        "dev-ed",
        "hostile",
        digest(HOSTILE_WASM),
        &["api"],
        2,
    );
    let r = w
        .exchange(&sign_attestation(&c, "dev-ed", &d.ed).expect("sign"))
        .await;
    let key = instance_key_for(&c.nonce);
    let body: Value = serde_json::from_slice(r.body()).expect("json");
    assert_eq!(body["token_type"], "DPoP");
    let token = body["access_token"].as_str().expect("token").to_owned();
    let ok = egress_with(&svc, &token, &key, clock.now(), "api", &url).await;
    assert_eq!(ok.status(), 200, "{:?}", problem(&ok));
    assert_eq!(ok.body().as_ref(), b"ok /v1/x");

    // The same token for another grant of the same agent.
    let r = egress_with(
        &svc,
        &token,
        &key,
        clock.now(),
        "other-api",
        &format!("{}/v2/x", up.origin()),
    )
    .await;
    let (status, class, detail) = problem(&r);
    assert_eq!((status, class.as_str()), (403, "denied"), "{detail}");
    assert!(
        detail.contains("does not cover grant other-api"),
        "{detail}"
    );

    // Tampered: flip a claim, keep the signature.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: Value =
        serde_json::from_slice(&b64.decode(&parts[1]).expect("b64")).expect("json");
    payload["scope"] = "api other-api".into();
    parts[1] = b64.encode(payload.to_string());
    let tampered = parts.join(".");
    let (status, class, _) = problem(
        &egress_with(
            &svc,
            &tampered,
            &key,
            clock.now(),
            "other-api",
            &format!("{}/v2/x", up.origin()),
        )
        .await,
    );
    assert_eq!((status, class.as_str()), (401, "denied"));

    // Expired, and not yet valid.
    clock.set(NOW + 3600);
    let (status, class, _) =
        problem(&egress_with(&svc, &token, &key, clock.now(), "api", &url).await);
    assert_eq!((status, class.as_str()), (401, "expired"));
    clock.set(NOW - 3600);
    let (status, class, _) =
        problem(&egress_with(&svc, &token, &key, clock.now(), "api", &url).await);
    assert_eq!((status, class.as_str()), (401, "denied"));
    clock.set(NOW);

    // Well-formed tokens from the wrong issuer, for the wrong audience, or
    // signed by a key the backend does not have.
    let seed = hex_seed(&svc);
    let mint = |iss: &str, aud: &str, seed: &[u8; 32]| {
        let issuer = TokenIssuer::new(seed, iss, aud).expect("issuer");
        issuer
            .mint(&Mint {
                sub: "spiffe://edgeward.test/agent/hostile/instance/x".into(),
                instance_spiffe: "spiffe://edgeward.test/agent/hostile/instance/x".into(),
                device_spiffe: "spiffe://edgeward.test/device/dev-ed".into(),
                agent: "hostile".into(),
                scope: vec![GrantName::new("api").expect("grant")],
                generation: 1,
                jkt: key.public_key().jwk_thumbprint(),
                now: NOW,
                lifetime: 60,
                jti: "jti-1".into(),
            })
            .expect("mint")
    };
    for (name, forged) in [
        (
            "wrong issuer",
            mint("https://evil.test", "edgeward-test", &seed),
        ),
        (
            "wrong audience",
            mint("https://backend.test", "someone-else", &seed),
        ),
        (
            "unknown key",
            mint("https://backend.test", "edgeward-test", &[7u8; 32]),
        ),
    ] {
        let (status, class, _) =
            problem(&egress_with(&svc, &forged, &key, clock.now(), "api", &url).await);
        assert_eq!((status, class.as_str()), (401, "denied"), "{name}");
    }
    // And the control: the same minting with the right issuer, audience and key passes.
    let control = mint("https://backend.test", "edgeward-test", &seed);
    assert_eq!(
        egress_with(&svc, &control, &key, clock.now(), "api", &url)
            .await
            .status(),
        200
    );

    let (status, _, _) = problem(&egress_with(&svc, "", &key, clock.now(), "api", &url).await);
    assert_eq!(status, 401);

    // Proof of possession: the real token with a proof from another key is
    // refused, and so is a replayed proof.
    let thief = Ed25519Signer::generate(&mut SeededEntropy::new(31337)).expect("key");
    let (status, class, detail) =
        problem(&egress_with(&svc, &token, &thief, clock.now(), "api", &url).await);
    assert_eq!((status, class.as_str()), (401, "denied"), "{detail}");
    assert!(detail.contains("proof of possession"), "{detail}");
    let uri: http::Uri = url.parse().expect("url");
    let proof = edgeward_core::dpop::create_proof(
        &key,
        &http::Method::GET,
        &uri,
        &token,
        clock.now(),
        &[9; 16],
    )
    .expect("proof");
    assert_eq!(
        send_egress(&svc, &token, &proof, "api", &url)
            .await
            .status(),
        200
    );
    let (status, _, detail) = problem(&send_egress(&svc, &token, &proof, "api", &url).await);
    assert_eq!(status, 401, "a replayed proof: {detail}");
    // A proof for another URL is not a proof for this one.
    let other: http::Uri = format!("{}/v1/other", up.origin()).parse().expect("url");
    let wrong = edgeward_core::dpop::create_proof(
        &key,
        &http::Method::GET,
        &other,
        &token,
        clock.now(),
        &[10; 16],
    )
    .expect("proof");
    assert_eq!(
        send_egress(&svc, &token, &wrong, "api", &url)
            .await
            .status(),
        401
    );
    // A bearer presentation of a DPoP-bound token is refused.
    let bearer = svc
        .client
        .send(
            http::Request::post(format!("{}/v1/egress", svc.url))
                .header("edgeward-method", "GET")
                .header("authorization", format!("Bearer {token}"))
                .header("edgeward-target", url.as_str())
                .header("edgeward-grant", "api")
                .body(Bytes::new())
                .unwrap(),
        )
        .await
        .expect("egress");
    assert_eq!(bearer.status(), 401);
    assert_eq!(
        up.received().len(),
        3,
        "only the three valid calls reached the upstream"
    );
}

fn hex_seed(svc: &Service) -> [u8; 32] {
    let text = std::fs::read_to_string(svc.dir.join("signing-key")).expect("seed");
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text.trim()[2 * i..2 * i + 2], 16).expect("hex");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_task_keeps_working_across_token_expiry() {
    let up = upstream().await;
    let d = devices();
    let svc = Service::start(
        &config(&up.origin(), &d, ""),
        &[("API_KEY", KEY)],
        Arc::new(SystemClock),
    )
    .await
    .expect("service");
    let signer = Ed25519Signer::from_pkcs8_pem(&d.ed.to_pkcs8_pem().expect("pem")).expect("key");
    let instance = edgeward_tests::attest_split(
        HOSTILE_WASM,
        "hostile",
        "dev-ed",
        Arc::new(signer),
        Arc::new(svc.remote()),
        2,
        // Only `api`: the agent's two grants share an origin.
        vec![GrantName::new("api").expect("grant")],
    )
    .await
    .expect("attest");
    // Token lifetime is 2 s (the agent's maximum); the task runs ~5 s.
    let report = instance
        .run(&format!("repeat 8 700 {}/v1/tick", up.origin()))
        .await;
    let doc: Value = match &report.outcome {
        Ok(Ok(text)) => serde_json::from_str(text).expect("json"),
        other => panic!("{other:?} {:?}", report.logs),
    };
    let calls = doc["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 8);
    for c in calls {
        assert_eq!(c["outcome"]["status"], 200, "{c}");
    }
    let expiries: std::collections::BTreeSet<u64> = calls
        .iter()
        .filter_map(|c| c["token_expires_at"].as_u64())
        .collect();
    assert!(
        expiries.len() >= 2,
        "the token was renewed during the task: {expiries:?}"
    );
    let _ = SystemClock.now();
}

#[test]
fn public_keys_round_trip_in_config_form() {
    let d = devices();
    for key in [d.ed.public_key(), d.es.public_key()] {
        let text = key.to_string();
        assert_eq!(text.parse::<PublicKey>().expect("parse"), key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_trusts_only_the_pinned_ca() {
    let up = upstream().await;
    let d = devices();
    let svc = Service::start(
        &config(&up.origin(), &d, ""),
        &[("API_KEY", KEY)],
        Arc::new(SystemClock),
    )
    .await
    .expect("service");
    let other = Service::start(
        &config(&up.origin(), &d, ""),
        &[("API_KEY", KEY)],
        Arc::new(SystemClock),
    )
    .await
    .expect("service");
    // The other backend's CA, not this one's: the handshake must fail.
    let wrong_ca = edgeward_runtime::remote::load_ca(&other.dir.join("ca.pem")).expect("ca");
    let remote =
        Arc::new(edgeward_runtime::remote::RemoteBackend::new(&svc.url, wrong_ca).expect("remote"));
    let signer = Ed25519Signer::from_pkcs8_pem(&d.ed.to_pkcs8_pem().expect("pem")).expect("key");
    let err = edgeward_tests::attest_split(
        HELLO_WASM,
        "hello",
        "dev-ed",
        Arc::new(signer),
        remote,
        1,
        vec![],
    )
    .await
    .err()
    .expect("a backend with a certificate from another CA is refused");
    assert!(
        matches!(err, edgeward_core::egress::ExchangeFailure::Unreachable(_)),
        "{err}"
    );
    // And plain http to a TLS URL is not even attempted.
    assert!(edgeward_runtime::remote::RemoteBackend::new("http://127.0.0.1:1", vec![]).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_keeps_old_tokens_valid_and_publishes_both_keys() {
    let up = upstream().await;
    let d = devices();
    let svc = Service::start(
        &config(&up.origin(), &d, ""),
        &[("API_KEY", KEY)],
        Arc::new(SystemClock),
    )
    .await
    .expect("service");
    let w = Wire { svc: &svc };
    let mint = |nonce| {
        sign_attestation(
            &claims(nonce, "dev-ed", "hello", digest(HELLO_WASM), &["api"], 60),
            "dev-ed",
            &d.ed,
        )
        .expect("sign")
    };
    let n1 = w.nonce().await;
    let key1 = instance_key_for(&n1);
    let before = w.exchange(&mint(n1)).await;
    let before: Value = serde_json::from_slice(before.body()).expect("json");
    let old_token = before["access_token"].as_str().expect("token").to_owned();
    let old_kid = svc.tokens.jwks()["keys"][0]["kid"]
        .as_str()
        .expect("kid")
        .to_owned();

    let new_kid = svc.tokens.rotate_signing_key().expect("rotate");
    assert_ne!(new_kid, old_kid);
    let kids: Vec<String> = svc.tokens.jwks()["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str().map(str::to_owned))
        .collect();
    assert!(
        kids.contains(&old_kid) && kids.contains(&new_kid),
        "{kids:?}"
    );

    let n2 = w.nonce().await;
    let key2 = instance_key_for(&n2);
    let after = w.exchange(&mint(n2)).await;
    let after: Value = serde_json::from_slice(after.body()).expect("json");
    let new_token = after["access_token"].as_str().expect("token").to_owned();
    use base64::Engine as _;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(new_token.split('.').next().expect("header"))
            .expect("b64"),
    )
    .expect("json");
    assert_eq!(header["kid"], new_kid.as_str());
    let url = format!("{}/v1/x", up.origin());
    assert_eq!(
        egress_with(&svc, &old_token, &key1, SystemClock.now(), "api", &url)
            .await
            .status(),
        200,
        "old key's token still valid"
    );
    assert_eq!(
        egress_with(&svc, &new_token, &key2, SystemClock.now(), "api", &url)
            .await
            .status(),
        200
    );
    // Checkpoints signed by either key verify.
    svc.tokens.checkpoint().expect("checkpoint");
    edgeward_backend::store::verify_store(
        svc.tokens.store().as_ref(),
        |cp| svc.tokens.checkpoint_is_authentic(cp),
        None,
    )
    .expect("log verifies across the rotation");
}
