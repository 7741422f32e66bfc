//! The backend as a Spin component (`host/spin`), served by the test host
//! (`edgeward_tests::spin_host`: wasmtime + wasmtime-wasi-http + Spin's
//! sqlite and variables interfaces; no Spin runtime can be installed here).
//!
//! One table of cases ([`CASES`]) drives the same exchange, proxy and
//! revocation steps against the native backend (`edgeward serve` over TLS)
//! and the Spin one: same inputs, and both must give the table's status
//! and error code. A split-mode runtime runs a real guest against the Spin
//! backend unchanged, and `spin.toml` is checked against the code.

use bytes::Bytes;
use edgeward_core::attest::{AttestationClaims, sign_attestation};
use edgeward_core::clock::{Clock, SystemClock};
use edgeward_core::egress::{ACCESS_TOKEN_TYPE, ATTESTATION_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT};
use edgeward_core::entropy::SeededEntropy;
use edgeward_core::grant::GrantName;
use edgeward_core::keys::{Ed25519Signer, Es256Signer, Signer};
use edgeward_core::revocation::RevocationKind;
use edgeward_tests::spin_host::{SpinApp, SpinServer};
use edgeward_tests::{
    HELLO_WASM, HOSTILE_WASM, SPIN_BUILD_COMMAND, SPIN_WASM, Service, TlsClient, Upstream,
    assert_no_secret, attest_split, digest, guest_visible, respond,
};
use http_body_util::{BodyExt as _, Full};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The upstream credential both backends hold.
const KEY: &str = "spin-case-upstream-key-0123456789";
/// The admin credential of the Spin backend's revoke route.
const ADMIN: &str = "spin-admin-credential-for-the-tests";

struct Keys {
    ed: Ed25519Signer,
    es: Es256Signer,
    other: Ed25519Signer,
    stranger: Ed25519Signer,
}

fn keys() -> Keys {
    let mut e = SeededEntropy::new(4242);
    Keys {
        ed: Ed25519Signer::generate(&mut e).expect("key"),
        es: Es256Signer::generate(&mut e).expect("key"),
        other: Ed25519Signer::generate(&mut e).expect("key"),
        stranger: Ed25519Signer::generate(&mut e).expect("key"),
    }
}

/// The config both backends run: agent `hello` may use grant `api` on
/// `dev-ed` and `dev-es`; `hostile` holds both grants, one instance per
/// device; `dev-other` may run nothing.
fn config(origin: &str, k: &Keys) -> String {
    format!(
        r#"
[backend]
issuer = "https://backend.test"
audience = "edgeward-test"
trust_domain = "edgeward.test"
stop_poll_s = 1

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
methods = ["GET", "POST"]
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
limits = {{ max_request_bytes = 1024 }}

[[agent]]
name = "hostile"
owner = "tests@edgeward.invalid"
digests = ["{hostile}"]
grants = ["api", "other-api"]
devices = ["dev-ed"]
max_instances_per_device = 1
"#,
        ed = k.ed.public_key(),
        es = k.es.public_key(),
        other = k.other.public_key(),
        hello = digest(HELLO_WASM),
        hostile = digest(HOSTILE_WASM),
    )
}

/// Answers `ok <path>` when the credential came, and echoes the credential
/// on `/v1/echo` (the backend must redact it).
async fn upstream() -> Upstream {
    Upstream::start(|r| {
        let keyed = r.headers.get("x-api-key").map(|v| v.as_bytes()) == Some(KEY.as_bytes());
        match (keyed, r.uri.as_str()) {
            (false, _) => respond(401, &[], "no key"),
            (true, "/v1/echo") => respond(200, &[("x-echo", KEY)], format!("you sent {KEY}")),
            (true, path) => respond(200, &[], format!("ok {path}")),
        }
    })
    .await
}

type Plain = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// A backend under test, native or Spin, reached over HTTP.
struct Backend {
    name: &'static str,
    url: String,
    client: Client,
    kind: Kind,
}

enum Client {
    Tls(TlsClient),
    Plain(Plain),
}

enum Kind {
    Native(Service),
    Spin {
        server: SpinServer,
        db: PathBuf,
        _dir: TempDir,
    },
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "edgeward-spin-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hex32(seed: u8) -> String {
    format!("{:02x}", seed).repeat(32)
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The Spin variables for `config_text`, as `spin up` would resolve them.
fn spin_variables(config_text: &str) -> HashMap<String, String> {
    HashMap::from([
        ("edgeward_config".to_owned(), config_text.to_owned()),
        ("signing_seed".to_owned(), hex32(0x51)),
        ("nonce_key".to_owned(), hex32(0x52)),
        ("admin_token_sha256".to_owned(), sha256_hex(ADMIN)),
        ("api_key".to_owned(), KEY.to_owned()),
    ])
}

async fn native(config_text: &str) -> Backend {
    let svc = Service::start(config_text, &[("API_KEY", KEY)], Arc::new(SystemClock))
        .await
        .expect("native backend");
    Backend {
        name: "native",
        url: svc.url.clone(),
        client: Client::Tls(svc.client.clone()),
        kind: Kind::Native(svc),
    }
}

async fn spin(config_text: &str, origin: &str) -> Backend {
    let dir = TempDir::new("db");
    let db = dir.0.join("spin.db");
    let server = SpinServer::start(SpinApp {
        component: SPIN_WASM.into(),
        variables: spin_variables(config_text),
        sqlite_path: db.clone(),
        allowed_outbound_hosts: vec![origin.to_owned()],
    })
    .await
    .expect("spin backend");
    spin_backend(server, db, dir)
}

fn spin_backend(server: SpinServer, db: PathBuf, dir: TempDir) -> Backend {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    Backend {
        name: "spin",
        url: server.url(),
        client: Client::Plain(client),
        kind: Kind::Spin {
            server,
            db,
            _dir: dir,
        },
    }
}

impl Backend {
    async fn send(&self, req: http::Request<Bytes>) -> http::Response<Bytes> {
        match &self.client {
            Client::Tls(c) => c.send(req).await.expect("request"),
            Client::Plain(c) => {
                let (parts, body) = req.into_parts();
                let r = c
                    .request(http::Request::from_parts(parts, Full::new(body)))
                    .await
                    .expect("request");
                let (parts, body) = r.into_parts();
                let body = body.collect().await.expect("body").to_bytes();
                http::Response::from_parts(parts, body)
            }
        }
    }

    async fn get(&self, path: &str) -> http::Response<Bytes> {
        self.send(
            http::Request::get(format!("{}{path}", self.url))
                .body(Bytes::new())
                .expect("request"),
        )
        .await
    }

    /// Revoke as an administrator: the native token service's own call,
    /// the Spin component's admin route.
    async fn revoke(&self, kind: &RevocationKind) {
        match &self.kind {
            Kind::Native(svc) => {
                let kind = match kind {
                    RevocationKind::Agent { name, .. } => RevocationKind::Agent {
                        name: name.clone(),
                        before_generation: Some(
                            svc.tokens
                                .store()
                                .agent(name)
                                .expect("store")
                                .expect("agent")
                                .generation
                                + 1,
                        ),
                    },
                    // The kill switch covers what was issued until now.
                    RevocationKind::All { .. } => RevocationKind::All {
                        at: SystemClock.now(),
                    },
                    other => other.clone(),
                };
                svc.tokens
                    .revoke(&kind, "tests", "case table")
                    .expect("revoke");
            }
            Kind::Spin { .. } => {
                let body = match kind {
                    RevocationKind::Token { jti } => json!({ "token": jti }),
                    RevocationKind::Instance { id } => json!({ "instance": id }),
                    RevocationKind::Agent { name, .. } => json!({ "agent": name }),
                    RevocationKind::Device { id } => json!({ "device": id }),
                    RevocationKind::All { .. } => json!({ "all": true }),
                };
                let r = self.admin_revoke(ADMIN, &body.to_string()).await;
                assert_eq!(r.status(), 200, "admin revoke: {:?}", r.body());
            }
        }
    }

    async fn admin_revoke(&self, credential: &str, body: &str) -> http::Response<Bytes> {
        self.send(
            http::Request::post(format!("{}/v1/admin/revoke", self.url))
                .header("authorization", format!("Bearer {credential}"))
                .header("content-type", "application/json")
                .body(Bytes::from(body.to_owned()))
                .expect("request"),
        )
        .await
    }

    fn remote(&self) -> edgeward_runtime::remote::RemoteBackend {
        match &self.kind {
            Kind::Native(svc) => svc.remote(),
            Kind::Spin { .. } => {
                edgeward_runtime::remote::danger::plaintext_backend(&self.url).expect("remote")
            }
        }
    }
}

/// What a step got: the status and a code (the OAuth `error`, the
/// problem class, `ok`, or `stop`/`continue` for the stop channel).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    status: u16,
    code: String,
}

fn outcome(r: &http::Response<Bytes>) -> Outcome {
    let v: Value = serde_json::from_slice(r.body()).unwrap_or_default();
    let code = if let Some(class) = r.headers().get("edgeward-refusal") {
        class.to_str().unwrap_or("?").to_owned()
    } else if let Some(e) = v["error"].as_str() {
        e.to_owned()
    } else if let Some(stop) = v["stop"].as_bool() {
        if stop { "stop" } else { "continue" }.to_owned()
    } else {
        "ok".to_owned()
    };
    Outcome {
        status: r.status().as_u16(),
        code,
    }
}

/// The shared table: each step of [`scenario`], by name, with the status
/// and code both backends must give.
#[rustfmt::skip]
const CASES: &[(&str, u16, &str)] = &[
    // The exchange.
    ("exchange: a good attestation (Ed25519 device)", 200, "ok"),
    ("exchange: a good attestation (P-256 device)", 200, "ok"),
    ("exchange: an unknown device", 400, "invalid_grant"),
    ("exchange: signed by another key", 400, "invalid_grant"),
    ("exchange: the nonce again", 400, "invalid_grant"),
    ("exchange: a component the agent may not run", 400, "invalid_grant"),
    ("exchange: a device the agent may not use", 400, "invalid_grant"),
    ("exchange: a grant the agent does not hold", 400, "invalid_scope"),
    ("exchange: not a form body", 400, "invalid_grant"),
    ("exchange: a repeated parameter", 400, "invalid_grant"),
    ("exchange: another grant type", 400, "invalid_grant"),
    ("exchange: the subject is another attestation", 400, "invalid_grant"),
    ("exchange: hostile's one instance", 200, "ok"),
    ("exchange: hostile's second instance (over the cap)", 400, "invalid_grant"),
    // The egress proxy.
    ("egress: a call the grant allows", 200, "ok"),
    ("egress: the upstream echoes the credential", 200, "ok"),
    ("egress: a POST with a body", 200, "ok"),
    ("egress: no DPoP proof", 401, "denied"),
    ("egress: a bearer token", 401, "denied"),
    ("egress: the proof again", 401, "denied"),
    ("egress: a proof from another key", 401, "denied"),
    ("egress: a tampered token", 401, "denied"),
    ("egress: a path outside the grant", 403, "denied"),
    ("egress: a method outside the grant", 403, "denied"),
    ("egress: a grant outside the token", 403, "denied"),
    ("egress: another origin", 403, "denied"),
    ("egress: the guest sets the credential header", 400, "invalid-request"),
    ("egress: a body over the agent's limit", 413, "limit-exceeded"),
    ("egress: a secret in the body", 403, "denied"),
    ("egress: no edgeward-target", 400, "invalid-request"),
    // Revocation.
    ("stop: a live instance", 200, "continue"),
    ("revoke (RFC 7009): without a proof", 401, "invalid_dpop_proof"),
    ("revoke (RFC 7009): with the key's proof", 200, "ok"),
    ("egress: after its holder revoked it", 401, "revoked"),
    ("egress: after the instance was revoked", 401, "revoked"),
    ("stop: a revoked instance", 200, "stop"),
    ("exchange: hostile again once its instance is revoked (the slot is free)", 200, "ok"),
    ("exchange: on a revoked device", 400, "invalid_grant"),
    ("exchange: a revoked agent", 400, "invalid_grant"),
    ("egress: a token of a revoked agent", 401, "revoked"),
    ("exchange: hello before the kill switch", 200, "ok"),
    ("egress: after the kill switch", 401, "revoked"),
    ("stop: after the kill switch", 200, "stop"),
];

/// An instance as a device holds it after an exchange.
struct Instance {
    token: String,
    key: Ed25519Signer,
    instance_id: String,
}

struct Steps<'a> {
    b: &'a Backend,
    k: &'a Keys,
    got: Vec<(String, Outcome)>,
}

/// The egress route's envelope for `method target` under grant `grant`,
/// with whatever authorization and proof a case needs (`None`: left out).
fn egress_request(
    b: &Backend,
    method: &str,
    authorization: &str,
    proof: Option<&str>,
    target: Option<&str>,
    grant: &str,
) -> http::request::Builder {
    let mut req = http::Request::post(format!("{}/v1/egress", b.url))
        .header("edgeward-method", method)
        .header("authorization", authorization)
        .header("edgeward-grant", grant);
    if let Some(p) = proof {
        req = req.header("dpop", p);
    }
    if let Some(t) = target {
        req = req.header("edgeward-target", t);
    }
    req
}

static PROOF_IDS: AtomicU64 = AtomicU64::new(1);

fn proof(key: &dyn Signer, method: &str, url: &str, token: &str) -> String {
    let mut jti = [0u8; 16];
    jti[..8].copy_from_slice(&PROOF_IDS.fetch_add(1, Ordering::SeqCst).to_be_bytes());
    edgeward_core::dpop::create_proof(
        key,
        &method.parse().expect("method"),
        &url.parse().expect("url"),
        token,
        SystemClock.now(),
        &jti,
    )
    .expect("proof")
}

impl Steps<'_> {
    fn note(&mut self, name: &str, o: Outcome) {
        self.got.push((name.to_owned(), o));
    }

    async fn nonce(&self) -> String {
        let r = self.b.get("/v1/challenge").await;
        let v: Value = serde_json::from_slice(r.body()).expect("challenge json");
        v["nonce"].as_str().expect("nonce").to_owned()
    }

    #[allow(clippy::too_many_arguments)]
    fn attestation(
        &self,
        nonce: &str,
        device: &str,
        signer: &dyn Signer,
        agent: &str,
        component: &'static str,
        key: &Ed25519Signer,
        grants: &[&str],
    ) -> String {
        let claims = AttestationClaims {
            nonce: nonce.into(),
            device: device.into(),
            agent: agent.into(),
            digest: digest(component),
            instance_key: key.public_key(),
            grants: grants
                .iter()
                .map(|g| GrantName::new(g).expect("grant"))
                .collect(),
            lifetime: 300,
            iat: SystemClock.now(),
        };
        sign_attestation(&claims, device, signer).expect("attestation")
    }

    async fn post_form(&self, content_type: &str, body: String) -> http::Response<Bytes> {
        self.b
            .send(
                http::Request::post(format!("{}/v1/token", self.b.url))
                    .header("content-type", content_type)
                    .body(Bytes::from(body))
                    .expect("request"),
            )
            .await
    }

    async fn exchange_with(&self, actor: &str, subject: &str) -> http::Response<Bytes> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", TOKEN_EXCHANGE_GRANT)
            .append_pair("actor_token", actor)
            .append_pair("actor_token_type", ATTESTATION_TOKEN_TYPE)
            .append_pair("subject_token", subject)
            .append_pair("subject_token_type", ATTESTATION_TOKEN_TYPE);
        self.post_form("application/x-www-form-urlencoded", form.finish())
            .await
    }

    /// One exchange step; the instance if it was granted.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &mut self,
        name: &str,
        device: &str,
        signer: &dyn Signer,
        agent: &str,
        component: &'static str,
        seed: u64,
        grants: &[&str],
    ) -> Option<Instance> {
        let key = Ed25519Signer::generate(&mut SeededEntropy::new(seed)).expect("key");
        let nonce = self.nonce().await;
        let att = self.attestation(&nonce, device, signer, agent, component, &key, grants);
        let r = self.exchange_with(&att, &att).await;
        self.note(name, outcome(&r));
        let v: Value = serde_json::from_slice(r.body()).ok()?;
        assert!(
            r.status() != 200 || v["issued_token_type"] == ACCESS_TOKEN_TYPE,
            "{}: {v}",
            self.b.name
        );
        Some(Instance {
            token: v["access_token"].as_str()?.to_owned(),
            instance_id: v["edgeward_instance_id"].as_str()?.to_owned(),
            key,
        })
    }

    /// [`Steps::exchange`] for the common case: `agent` (`hello` or
    /// `hostile`, each with its own component) on `dev-ed`, all its grants.
    async fn on_dev_ed(&mut self, name: &str, agent: &str, seed: u64) -> Option<Instance> {
        let component = if agent == "hello" {
            HELLO_WASM
        } else {
            HOSTILE_WASM
        };
        let signer = &self.k.ed;
        self.exchange(name, "dev-ed", signer, agent, component, seed, &[])
            .await
    }

    /// One egress step: `method url` through the route, with a proof from
    /// `key` for `presented`, extra headers and a body.
    #[allow(clippy::too_many_arguments)]
    async fn egress(
        &mut self,
        name: &str,
        presented: &str,
        key: &dyn Signer,
        method: &str,
        url: &str,
        grant: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> http::Response<Bytes> {
        let p = proof(key, method, url, presented);
        let mut req = egress_request(
            self.b,
            method,
            &format!("DPoP {presented}"),
            Some(&p),
            Some(url),
            grant,
        );
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let r = self
            .b
            .send(req.body(Bytes::copy_from_slice(body)).expect("request"))
            .await;
        self.note(name, outcome(&r));
        r
    }

    /// [`Steps::egress`] for the common case: a GET under grant `api`.
    async fn get(&mut self, name: &str, who: &Instance, url: &str) -> http::Response<Bytes> {
        self.egress(name, &who.token, &who.key, "GET", url, "api", &[], b"")
            .await
    }

    async fn stop(&mut self, name: &str, token: &str) {
        let r = self
            .b
            .send(
                http::Request::get(format!("{}/v1/stop", self.b.url))
                    .header("authorization", format!("Bearer {token}"))
                    .body(Bytes::new())
                    .expect("request"),
            )
            .await;
        self.note(name, outcome(&r));
    }

    async fn rfc7009(&mut self, name: &str, token: &str, key: Option<&dyn Signer>) {
        let url = format!("{}/v1/revoke", self.b.url);
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("token", token);
        let mut req =
            http::Request::post(&url).header("content-type", "application/x-www-form-urlencoded");
        if let Some(key) = key {
            req = req.header("dpop", proof(key, "POST", &url, token));
        }
        let r = self
            .b
            .send(req.body(Bytes::from(form.finish())).expect("request"))
            .await;
        self.note(name, outcome(&r));
    }
}

/// The steps of [`CASES`], in order, against one backend.
async fn scenario(b: &Backend, up: &Upstream) -> Vec<(String, Outcome)> {
    let k = keys();
    let mut s = Steps {
        b,
        k: &k,
        got: Vec::new(),
    };
    let k = s.k;
    let o = up.origin();
    let good = s
        .on_dev_ed("exchange: a good attestation (Ed25519 device)", "hello", 1)
        .await
        .expect("good instance");
    let es = s
        .exchange(
            "exchange: a good attestation (P-256 device)",
            "dev-es",
            &k.es,
            "hello",
            HELLO_WASM,
            2,
            &[],
        )
        .await
        .expect("P-256 instance");
    s.exchange(
        "exchange: an unknown device",
        "dev-nobody",
        &k.stranger,
        "hello",
        HELLO_WASM,
        3,
        &[],
    )
    .await;
    s.exchange(
        "exchange: signed by another key",
        "dev-ed",
        &k.stranger,
        "hello",
        HELLO_WASM,
        4,
        &[],
    )
    .await;
    {
        let key = Ed25519Signer::generate(&mut SeededEntropy::new(5)).expect("key");
        let nonce = s.nonce().await;
        let att = s.attestation(&nonce, "dev-ed", &k.ed, "hello", HELLO_WASM, &key, &[]);
        let first = s.exchange_with(&att, &att).await;
        assert_eq!(first.status(), 200, "{}: first use of the nonce", b.name);
        let again = s.exchange_with(&att, &att).await;
        s.note("exchange: the nonce again", outcome(&again));
    }
    s.exchange(
        "exchange: a component the agent may not run",
        "dev-ed",
        &k.ed,
        "hello",
        HOSTILE_WASM,
        6,
        &[],
    )
    .await;
    s.exchange(
        "exchange: a device the agent may not use",
        "dev-other",
        &k.other,
        "hello",
        HELLO_WASM,
        7,
        &[],
    )
    .await;
    s.exchange(
        "exchange: a grant the agent does not hold",
        "dev-ed",
        &k.ed,
        "hello",
        HELLO_WASM,
        8,
        &["other-api"],
    )
    .await;
    {
        let key = Ed25519Signer::generate(&mut SeededEntropy::new(9)).expect("key");
        let nonce = s.nonce().await;
        let att = s.attestation(&nonce, "dev-ed", &k.ed, "hello", HELLO_WASM, &key, &[]);
        let json_body =
            json!({ "grant_type": TOKEN_EXCHANGE_GRANT, "actor_token": att }).to_string();
        let r = s.post_form("application/json", json_body).await;
        s.note("exchange: not a form body", outcome(&r));
        let r = s
            .post_form(
                "application/x-www-form-urlencoded",
                format!("grant_type=a&grant_type=b&actor_token={att}"),
            )
            .await;
        s.note("exchange: a repeated parameter", outcome(&r));
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials")
            .append_pair("actor_token", &att)
            .append_pair("actor_token_type", ATTESTATION_TOKEN_TYPE);
        let r = s
            .post_form("application/x-www-form-urlencoded", form.finish())
            .await;
        s.note("exchange: another grant type", outcome(&r));
        let other = s.attestation(
            &s.nonce().await,
            "dev-ed",
            &k.ed,
            "hello",
            HELLO_WASM,
            &key,
            &[],
        );
        let r = s.exchange_with(&att, &other).await;
        s.note("exchange: the subject is another attestation", outcome(&r));
    }
    let hostile = s
        .on_dev_ed("exchange: hostile's one instance", "hostile", 10)
        .await
        .expect("hostile instance");
    s.on_dev_ed(
        "exchange: hostile's second instance (over the cap)",
        "hostile",
        11,
    )
    .await;

    // The egress proxy, with the good instance.
    let t = good.token.as_str();
    let key = &good.key;
    let r = s
        .egress(
            "egress: a call the grant allows",
            t,
            key,
            "GET",
            &format!("{o}/v1/forecast"),
            "api",
            &[],
            b"",
        )
        .await;
    assert_eq!(r.body().as_ref(), b"ok /v1/forecast", "{}", b.name);
    let r = s
        .egress(
            "egress: the upstream echoes the credential",
            t,
            key,
            "GET",
            &format!("{o}/v1/echo"),
            "api",
            &[],
            b"",
        )
        .await;
    let seen = format!("{:?} {:?}", r.headers(), r.body());
    assert_no_secret(&seen, KEY, &format!("{}: echoed response", b.name));
    s.egress(
        "egress: a POST with a body",
        t,
        key,
        "POST",
        &format!("{o}/v1/upload"),
        "api",
        &[("content-type", "application/json")],
        br#"{"reading": 21.5}"#,
    )
    .await;
    let sent = up.received();
    let upload = sent.last().expect("the upload reached the upstream");
    assert_eq!(upload.body.as_ref(), br#"{"reading": 21.5}"#, "{}", b.name);
    assert_eq!(
        upload.headers.get("content-length").map(|v| v.as_bytes()),
        Some(b"17".as_slice()),
        "{}: the body goes with its length, not chunked",
        b.name
    );
    {
        let url = format!("{o}/v1/forecast");
        let send = |authorization: String, p: Option<String>| {
            let req = egress_request(b, "GET", &authorization, p.as_deref(), Some(&url), "api");
            b.send(req.body(Bytes::new()).expect("request"))
        };
        let r = send(format!("DPoP {t}"), None).await;
        s.note("egress: no DPoP proof", outcome(&r));
        let r = send(format!("Bearer {t}"), Some(proof(key, "GET", &url, t))).await;
        s.note("egress: a bearer token", outcome(&r));
        let p = Some(proof(key, "GET", &url, t));
        let send = |p: Option<String>| send(format!("DPoP {t}"), p);
        let first = send(p.clone()).await;
        assert_eq!(first.status(), 200, "{}: first use of the proof", b.name);
        let again = send(p).await;
        s.note("egress: the proof again", outcome(&again));
    }
    s.egress(
        "egress: a proof from another key",
        t,
        &k.stranger,
        "GET",
        &format!("{o}/v1/forecast"),
        "api",
        &[],
        b"",
    )
    .await;
    let mut tampered = good.token.clone();
    tampered.pop();
    tampered.push(if good.token.ends_with('A') { 'B' } else { 'A' });
    s.egress(
        "egress: a tampered token",
        &tampered,
        key,
        "GET",
        &format!("{o}/v1/forecast"),
        "api",
        &[],
        b"",
    )
    .await;
    s.egress(
        "egress: a path outside the grant",
        t,
        key,
        "GET",
        &format!("{o}/v2/forecast"),
        "api",
        &[],
        b"",
    )
    .await;
    s.egress(
        "egress: a method outside the grant",
        t,
        key,
        "DELETE",
        &format!("{o}/v1/forecast"),
        "api",
        &[],
        b"",
    )
    .await;
    s.egress(
        "egress: a grant outside the token",
        t,
        key,
        "GET",
        &format!("{o}/v2/forecast"),
        "other-api",
        &[],
        b"",
    )
    .await;
    s.egress(
        "egress: another origin",
        t,
        key,
        "GET",
        "http://127.0.0.2:9/v1/forecast",
        "api",
        &[],
        b"",
    )
    .await;
    s.egress(
        "egress: the guest sets the credential header",
        t,
        key,
        "GET",
        &format!("{o}/v1/forecast"),
        "api",
        &[("x-api-key", "mine")],
        b"",
    )
    .await;
    s.egress(
        "egress: a body over the agent's limit",
        t,
        key,
        "POST",
        &format!("{o}/v1/upload"),
        "api",
        &[],
        &[b'x'; 2048],
    )
    .await;
    let leaked = format!("token=ghp_{}", "aB3dE6gH9jK2mN5pQ8rS1tU4vW7xY0zA1bC2");
    s.egress(
        "egress: a secret in the body",
        t,
        key,
        "POST",
        &format!("{o}/v1/upload"),
        "api",
        &[],
        leaked.as_bytes(),
    )
    .await;
    {
        let p = proof(key, "GET", "http://x/", t);
        let req = egress_request(b, "GET", &format!("DPoP {t}"), Some(&p), None, "api");
        let r = b.send(req.body(Bytes::new()).expect("request")).await;
        s.note("egress: no edgeward-target", outcome(&r));
    }

    // Revocation.
    s.stop("stop: a live instance", &es.token).await;
    s.rfc7009("revoke (RFC 7009): without a proof", &es.token, None)
        .await;
    s.rfc7009(
        "revoke (RFC 7009): with the key's proof",
        &es.token,
        Some(&es.key),
    )
    .await;
    s.get(
        "egress: after its holder revoked it",
        &es,
        &format!("{o}/v1/forecast"),
    )
    .await;
    b.revoke(&RevocationKind::Instance {
        id: good.instance_id.clone(),
    })
    .await;
    s.egress(
        "egress: after the instance was revoked",
        t,
        key,
        "GET",
        &format!("{o}/v1/forecast"),
        "api",
        &[],
        b"",
    )
    .await;
    s.stop("stop: a revoked instance", t).await;
    b.revoke(&RevocationKind::Instance {
        id: hostile.instance_id.clone(),
    })
    .await;
    let hostile = s
        .on_dev_ed(
            "exchange: hostile again once its instance is revoked (the slot is free)",
            "hostile",
            14,
        )
        .await
        .expect("a new hostile instance");
    b.revoke(&RevocationKind::Device {
        id: "dev-es".into(),
    })
    .await;
    s.exchange(
        "exchange: on a revoked device",
        "dev-es",
        &k.es,
        "hello",
        HELLO_WASM,
        12,
        &[],
    )
    .await;
    b.revoke(&RevocationKind::Agent {
        name: "hostile".into(),
        before_generation: None,
    })
    .await;
    s.on_dev_ed("exchange: a revoked agent", "hostile", 13)
        .await;
    s.get(
        "egress: a token of a revoked agent",
        &hostile,
        &format!("{o}/v1/forecast"),
    )
    .await;
    let last = s
        .on_dev_ed("exchange: hello before the kill switch", "hello", 15)
        .await
        .expect("a hello instance");
    b.revoke(&RevocationKind::All { at: 0 }).await;
    s.get(
        "egress: after the kill switch",
        &last,
        &format!("{o}/v1/forecast"),
    )
    .await;
    s.stop("stop: after the kill switch", &last.token).await;
    s.got
}

/// The Spin database's audit records, after checking that each links to
/// the one before and its hash covers it.
fn audit_chain(db: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).expect("open the Spin database");
    let mut stmt = conn
        .prepare("SELECT record, prev, hash FROM audit ORDER BY seq")
        .expect("audit query");
    let rows: Vec<(String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("audit rows")
        .collect::<Result<_, _>>()
        .expect("audit rows");
    let mut prev = String::new();
    for (record, p, hash) in &rows {
        assert_eq!(p, &prev, "the chain links");
        let mut h = Sha256::new();
        h.update(b"edgeward-spin-audit-v1\0");
        h.update(p.as_bytes());
        h.update([0]);
        h.update(record.as_bytes());
        let want: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hash, &want, "the hash covers the record");
        prev = hash.clone();
    }
    rows.into_iter().map(|(r, _, _)| r).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_and_spin_decide_every_case_alike() {
    let up = upstream().await;
    let text = config(&up.origin(), &keys());
    let backends = [native(&text).await, spin(&text, &up.origin()).await];
    let mut runs = Vec::new();
    for b in &backends {
        runs.push((b.name, scenario(b, &up).await));
    }
    for (name, got) in &runs {
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        let want: Vec<&str> = CASES.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(names, want, "{name}: the steps are the table's");
        for ((step, o), (_, status, code)) in got.iter().zip(CASES) {
            assert_eq!(
                (o.status, o.code.as_str()),
                (*status, *code),
                "{name}: {step}"
            );
        }
    }
    // Side by side too (the same as the table, so the same as each other).
    assert_eq!(runs[0].1, runs[1].1);
    // Spin's own request headers (the device's address, the backend's URL)
    // never reach an upstream.
    for r in up.received() {
        assert!(
            !r.headers.keys().any(|k| k.as_str().starts_with("spin-")),
            "{:?}",
            r.headers
        );
    }

    // The Spin backend's durable state: the audit chain links, and no
    // credential is anywhere in the database.
    let Kind::Spin { server, db, .. } = &backends[1].kind else {
        unreachable!("the second backend is the Spin one")
    };
    assert_eq!(
        server.outbound_denied(),
        0,
        "only the grant's origin was called"
    );
    let rows = audit_chain(db);
    assert!(rows.len() >= CASES.len(), "every step left a record");
    let joined = rows.join("\n");
    assert!(joined.contains("\"kind\":\"egress\"") && joined.contains("upstream answered 200"));
    assert!(
        joined.contains("revoked instance"),
        "the admin revocation is audited"
    );
    // Nothing the component wrote to stderr holds a credential either.
    let stderr = server.stderr();
    assert_no_secret(&stderr, KEY, "the Spin component's stderr");
    assert_no_secret(&stderr, ADMIN, "the Spin component's stderr");
    let bytes = std::fs::read(db).expect("database file");
    assert_no_secret(&String::from_utf8_lossy(&bytes), KEY, "the Spin database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_mode_runtime_works_against_the_spin_backend_unchanged() {
    let up = upstream().await;
    let k = keys();
    let b = spin(&config(&up.origin(), &k), &up.origin()).await;
    let signer: Arc<dyn Signer> =
        Arc::new(Ed25519Signer::from_pkcs8_pem(&k.ed.to_pkcs8_pem().expect("pem")).expect("key"));
    let remote = Arc::new(b.remote());
    let instance = attest_split(HELLO_WASM, "hello", "dev-ed", signer, remote, 77, vec![])
        .await
        .expect("attest against the Spin backend");
    let report = instance.run(&format!("{}/v1/forecast", up.origin())).await;
    assert_eq!(
        report.outcome,
        Ok(Ok("ok /v1/forecast".into())),
        "{:?}",
        report.logs
    );
    assert_no_secret(&guest_visible(&report), KEY, "guest-visible output");
    let upstream_saw = up.received();
    assert_eq!(upstream_saw.len(), 1);
    // Compared without printing: a failure must not show the credential.
    assert!(
        upstream_saw[0].headers["x-api-key"] == KEY,
        "the upstream did not get the credential"
    );

    // Revoked through the admin route: the next call is refused, and the
    // stop channel tells the running instance.
    b.revoke(&RevocationKind::Agent {
        name: "hello".into(),
        before_generation: None,
    })
    .await;
    let report = instance.run(&format!("{}/v1/forecast", up.origin())).await;
    assert_ne!(report.outcome, Ok(Ok("ok /v1/forecast".into())));
    // Refused as revoked (the guest sees the problem type), not failed.
    assert!(
        guest_visible(&report).contains("revoked"),
        "{:?}",
        report.outcome
    );
    assert_eq!(
        up.received().len(),
        1,
        "nothing reached the upstream after the revocation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_route_is_authenticated_and_refuses_bad_bodies_without_a_change() {
    let up = upstream().await;
    let k = keys();
    let b = spin(&config(&up.origin(), &k), &up.origin()).await;
    let cases: [(&str, &str, u16, &str); 6] = [
        (
            "wrong-credential",
            r#"{"agent":"hello"}"#,
            401,
            "invalid_token",
        ),
        (ADMIN, "not json", 400, "invalid_request"),
        (
            ADMIN,
            r#"{"agent":"hello","device":"dev-ed"}"#,
            400,
            "invalid_request",
        ),
        (ADMIN, r#"{"agnet":"hello"}"#, 400, "invalid_request"),
        (ADMIN, r#"{"agent":"nobody"}"#, 400, "invalid_request"),
        (ADMIN, r#"{"all":false}"#, 400, "invalid_request"),
    ];
    for (credential, body, status, code) in cases {
        let r = b.admin_revoke(credential, body).await;
        assert_eq!(
            (r.status().as_u16(), outcome(&r).code.as_str()),
            (status, code),
            "{body}"
        );
    }
    // Nothing was revoked: hello still exchanges.
    let mut s = Steps {
        b: &b,
        k: &k,
        got: Vec::new(),
    };
    assert!(
        s.on_dev_ed("after refused admin calls", "hello", 21)
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_spin_backend_names_the_variable_and_fails_closed() {
    let up = upstream().await;
    let k = keys();
    let text = config(&up.origin(), &k);
    let dir = TempDir::new("misconfigured");
    let cases: [(&str, Option<&str>, &str); 4] = [
        (
            "signing_seed",
            None,
            "Spin variable signing_seed is not set",
        ),
        (
            "nonce_key",
            Some("abcd"),
            "Spin variable nonce_key: must be exactly 64 hex characters",
        ),
        (
            "api_key",
            Some("short"),
            "Spin variable api_key: shorter than",
        ),
        (
            "edgeward_config",
            Some("[[policy]]\nagent = \"hello\"\n[[policy.rule]]\neffect = \"allow\"\n"),
            "edgeward_config",
        ),
    ];
    for (i, (name, value, says)) in cases.into_iter().enumerate() {
        let mut variables = spin_variables(&text);
        match value {
            None => {
                variables.remove(name);
            }
            Some(v) => {
                variables.insert(name.to_owned(), v.to_owned());
            }
        }
        let server = SpinServer::start(SpinApp {
            component: SPIN_WASM.into(),
            variables,
            sqlite_path: dir.0.join(format!("{i}.db")),
            allowed_outbound_hosts: vec![up.origin()],
        })
        .await
        .expect("server");
        let b = spin_backend(server, PathBuf::new(), TempDir::new("unused"));
        let r = b.get("/v1/challenge").await;
        assert_eq!(r.status(), 500, "{name}");
        let v: Value = serde_json::from_slice(r.body()).expect("json");
        let text = v["error_description"].as_str().unwrap_or_default();
        assert_no_secret(text, KEY, "a configuration error");
        assert!(text.contains(says), "{name}: {text}");
    }
}

/// `spin.toml` against the code: the component's source is where the build
/// command puts it, every variable the manifest declares is one the code
/// reads (and the other way round), the one route covers every route the
/// code serves, and the component may reach exactly its grants' origins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_toml_matches_the_code() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned();
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(root.join("spin.toml")).expect("read spin.toml"))
            .expect("spin.toml is TOML");
    assert_eq!(manifest["spin_manifest_version"].as_integer(), Some(2));
    let component = &manifest["component"]["edgeward"];
    let build = &component["build"];
    let workdir = build["workdir"].as_str().expect("build.workdir");
    assert_eq!(workdir, "host/spin");
    assert_eq!(build["command"].as_str(), Some(SPIN_BUILD_COMMAND));
    let source = component["source"].as_str().expect("source");
    let built_at = "target/wasm32-wasip2/release/edgeward_spin.wasm";
    assert_eq!(source, format!("{workdir}/{built_at}"));
    assert!(
        SPIN_WASM.ends_with(built_at),
        "the tests serve what that command builds"
    );

    // Routes: one trigger, every path to the one component.
    let triggers = manifest["trigger"]["http"]
        .as_array()
        .expect("trigger.http");
    assert_eq!(triggers.len(), 1);
    assert_eq!(triggers[0]["route"].as_str(), Some("/..."));
    assert_eq!(triggers[0]["component"].as_str(), Some("edgeward"));

    // Variables: the application's, the component's, and what the code
    // reads while serving every route with the example config.
    let app_vars = manifest["variables"].as_table().expect("variables");
    let comp_vars = component["variables"]
        .as_table()
        .expect("component variables");
    let declared: BTreeSet<String> = app_vars.keys().cloned().collect();
    assert_eq!(declared, comp_vars.keys().cloned().collect::<BTreeSet<_>>());
    for (name, value) in comp_vars {
        assert_eq!(
            value.as_str(),
            Some(format!("{{{{ {name} }}}}").as_str()),
            "{name}"
        );
    }
    for (name, spec) in app_vars {
        let secret = spec.get("secret").and_then(toml::Value::as_bool) == Some(true);
        assert_eq!(secret, name != "edgeward_config", "{name}: secret flag");
    }
    let example = std::fs::read_to_string(root.join("host/spin/edgeward.toml"))
        .expect("read host/spin/edgeward.toml");
    let config = edgeward_core::config::Config::parse(&example).expect("the example config");
    let mut variables: HashMap<String, String> = declared
        .iter()
        .map(|n| (n.clone(), "x".repeat(40)))
        .collect();
    variables.insert("edgeward_config".into(), example.clone());
    variables.insert("signing_seed".into(), hex32(1));
    variables.insert("nonce_key".into(), hex32(2));
    variables.insert("admin_token_sha256".into(), sha256_hex(ADMIN));
    let dir = TempDir::new("manifest");
    let server = SpinServer::start(SpinApp {
        component: SPIN_WASM.into(),
        variables,
        sqlite_path: dir.0.join("m.db"),
        allowed_outbound_hosts: component["allowed_outbound_hosts"]
            .as_array()
            .expect("allowed_outbound_hosts")
            .iter()
            .filter_map(|h| h.as_str().map(str::to_owned))
            .collect(),
    })
    .await
    .expect("serve the example");
    let db = dir.0.join("m.db");
    let b = spin_backend(server, db, dir);
    let routes: [(&str, &str, u16); 9] = [
        ("GET", "/v1/challenge", 200),
        ("GET", "/.well-known/jwks.json", 200),
        ("GET", "/.well-known/oauth-authorization-server", 200),
        ("POST", "/v1/token", 400),
        ("POST", "/v1/egress", 401),
        ("GET", "/v1/stop", 401),
        ("POST", "/v1/revoke", 200),
        ("POST", "/v1/admin/revoke", 401),
        ("POST", "/v1/admin/reissue", 401),
    ];
    for (method, path, status) in routes {
        let r = b
            .send(
                http::Request::builder()
                    .method(method)
                    .uri(format!("{}{path}", b.url))
                    .body(Bytes::new())
                    .expect("request"),
            )
            .await;
        assert_eq!(
            r.status().as_u16(),
            status,
            "{method} {path}: {:?}",
            r.body()
        );
    }
    assert_eq!(b.get("/v1/nothing-here").await.status(), 404);
    let Kind::Spin { server, .. } = &b.kind else {
        unreachable!("a Spin backend")
    };
    assert_eq!(
        server.variables_read(),
        declared,
        "the code reads exactly the variables spin.toml declares"
    );

    // Outbound hosts: exactly the example's grant origins.
    let mut allowed: Vec<String> = component["allowed_outbound_hosts"]
        .as_array()
        .expect("allowed_outbound_hosts")
        .iter()
        .filter_map(|h| h.as_str())
        .map(|h| {
            edgeward_core::grant::Origin::parse(h)
                .expect("an allowed host is an origin")
                .to_string()
        })
        .collect();
    let mut origins: Vec<String> = config
        .grants
        .iter()
        .map(|g| g.rules.origin.to_string())
        .collect();
    allowed.sort();
    origins.sort();
    origins.dedup();
    assert_eq!(allowed, origins);
}

/// On Spin the registry is the config, so re-issuing an agent (natively: an
/// update that bumps its generation) is an admin route: a revoked agent
/// stays revoked until then, and its older tokens stay refused after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_comes_back_only_when_reissued() {
    let up = upstream().await;
    let k = keys();
    let b = spin(&config(&up.origin(), &k), &up.origin()).await;
    let o = up.origin();
    let mut s = Steps {
        b: &b,
        k: &k,
        got: Vec::new(),
    };
    let old = s
        .on_dev_ed("before", "hello", 31)
        .await
        .expect("an instance");
    b.revoke(&RevocationKind::Agent {
        name: "hello".into(),
        before_generation: None,
    })
    .await;
    assert!(s.on_dev_ed("revoked", "hello", 32).await.is_none());
    let reissue = |credential: &'static str, body: &'static str| {
        b.send(
            http::Request::post(format!("{}/v1/admin/reissue", b.url))
                .header("authorization", format!("Bearer {credential}"))
                .body(Bytes::from(body))
                .expect("request"),
        )
    };
    assert_eq!(reissue("wrong", r#"{"agent":"hello"}"#).await.status(), 401);
    assert_eq!(reissue(ADMIN, r#"{"agent":"nobody"}"#).await.status(), 400);
    assert_eq!(
        reissue(ADMIN, r#"{"agent":"hello","x":1}"#).await.status(),
        400
    );
    let r = reissue(ADMIN, r#"{"agent":"hello"}"#).await;
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_slice(r.body()).expect("json");
    assert_eq!(v["generation"], 2);
    let new = s
        .on_dev_ed("reissued", "hello", 33)
        .await
        .expect("exchanges again at generation 2");
    let url = format!("{o}/v1/forecast");
    let r = s.get("new", &new, &url).await;
    assert_eq!(r.status(), 200);
    let r = s.get("old", &old, &url).await;
    assert_eq!(outcome(&r).code, "revoked");
    let v: Value = serde_json::from_slice(r.body()).expect("problem");
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("generation"),
        "{v}"
    );
}

/// The registry lives in the Spin database: a redeploy with a new config
/// is imported once, with the native import's rules (a changed device,
/// digest or grant list moves the agent to its next generation; a removed
/// agent's tokens die; added back, it starts above its tombstone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeployed_config_is_imported_into_the_registry() {
    let up = upstream().await;
    let k = keys();
    let o = up.origin();
    let dir = TempDir::new("redeploy");
    let db = dir.0.join("registry.db");
    let first = config(&o, &k);
    let deploy = |text: String| {
        let db = db.clone();
        let o = o.clone();
        async move {
            SpinServer::start(SpinApp {
                component: SPIN_WASM.into(),
                variables: spin_variables(&text),
                sqlite_path: db,
                allowed_outbound_hosts: vec![o],
            })
            .await
            .expect("deploy")
        }
    };
    let b = spin_backend(
        deploy(first.clone()).await,
        db.clone(),
        TempDir::new("unused"),
    );
    let mut s = Steps {
        b: &b,
        k: &k,
        got: Vec::new(),
    };
    let url = format!("{o}/v1/forecast");
    let hello = s.on_dev_ed("hello", "hello", 41).await.expect("hello");
    let hostile = s
        .on_dev_ed("hostile", "hostile", 42)
        .await
        .expect("hostile");
    assert_eq!(
        s.get("hello, first deploy", &hello, &url).await.status(),
        200
    );
    assert_eq!(
        s.get("hostile, first deploy", &hostile, &url)
            .await
            .status(),
        200
    );

    // Redeploy: hello may now also run on dev-other (its device list
    // changed), hostile is gone.
    let second = first
        .replace(
            "devices = [\"dev-ed\", \"dev-es\"]",
            "devices = [\"dev-ed\", \"dev-es\", \"dev-other\"]",
        )
        .replace("name = \"hostile\"", "name = \"hostile-gone\"");
    assert_ne!(second, first);
    let b2 = spin_backend(deploy(second).await, db.clone(), TempDir::new("unused"));
    let mut s2 = Steps {
        b: &b2,
        k: &k,
        got: Vec::new(),
    };
    let detail = |r: &http::Response<Bytes>| -> String {
        let v: Value = serde_json::from_slice(r.body()).unwrap_or_default();
        v["detail"].as_str().unwrap_or_default().to_owned()
    };
    let r = s2.get("hello after the change", &hello, &url).await;
    assert_eq!(outcome(&r).code, "revoked");
    assert!(detail(&r).contains("generation 2"), "{}", detail(&r));
    let r = s2.get("hostile after its removal", &hostile, &url).await;
    assert_eq!(outcome(&r).code, "revoked");
    assert!(detail(&r).contains("no longer exists"), "{}", detail(&r));
    let fresh = s2
        .exchange(
            "hello at generation 2",
            "dev-other",
            &k.other,
            "hello",
            HELLO_WASM,
            43,
            &[],
        )
        .await
        .expect("dev-other may run hello now");
    assert_eq!(s2.get("fresh", &fresh, &url).await.status(), 200);

    // The old deploy still serving during the rollout imports nothing: the
    // new generation stands.
    let r = s.get("old deploy, old token", &hello, &url).await;
    assert_eq!(outcome(&r).code, "revoked");

    // Back to the first config under a new text: hostile returns above its
    // tombstone, so its old token stays dead.
    let third = format!("{first}\n# redeployed\n");
    let b3 = spin_backend(deploy(third).await, db.clone(), TempDir::new("unused"));
    let mut s3 = Steps {
        b: &b3,
        k: &k,
        got: Vec::new(),
    };
    let r = s3.get("hostile's old token", &hostile, &url).await;
    assert_eq!(outcome(&r).code, "revoked");
    assert!(detail(&r).contains("generation 2"), "{}", detail(&r));
    assert!(s3.on_dev_ed("hostile again", "hostile", 44).await.is_some());
}

/// Single use holds across concurrent instances (each request is its own
/// instance with its own database connection): of eight racing exchanges
/// with one attestation, and eight racing calls with one proof, exactly one
/// goes through; the audit chain stays linked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_use_holds_under_concurrent_instances() {
    let up = upstream().await;
    let k = keys();
    let b = spin(&config(&up.origin(), &k), &up.origin()).await;
    let s = Steps {
        b: &b,
        k: &k,
        got: Vec::new(),
    };
    let key = Ed25519Signer::generate(&mut SeededEntropy::new(51)).expect("key");
    let nonce = s.nonce().await;
    let att = s.attestation(&nonce, "dev-ed", &k.ed, "hello", HELLO_WASM, &key, &[]);
    let racing = (0..8).map(|_| s.exchange_with(&att, &att));
    let answers = futures_join_all(racing).await;
    let granted: Vec<&http::Response<Bytes>> =
        answers.iter().filter(|r| r.status() == 200).collect();
    assert_eq!(granted.len(), 1, "one exchange per nonce");
    // The others were refused for the nonce, not failed (no 5xx).
    for r in answers.iter().filter(|r| r.status() != 200) {
        assert_eq!(
            (r.status().as_u16(), outcome(r).code.as_str()),
            (400, "invalid_grant")
        );
        let v: Value = serde_json::from_slice(r.body()).expect("json");
        assert_eq!(v["error_description"], "nonce refused: it was already used");
    }
    let v: Value = serde_json::from_slice(granted[0].body()).expect("token");
    let token = v["access_token"].as_str().expect("token");
    let url = format!("{}/v1/forecast", up.origin());
    let p = proof(&key, "GET", &url, token);
    let racing = (0..8).map(|_| {
        let req = egress_request(
            &b,
            "GET",
            &format!("DPoP {token}"),
            Some(&p),
            Some(&url),
            "api",
        );
        b.send(req.body(Bytes::new()).expect("request"))
    });
    let answers = futures_join_all(racing).await;
    let passed = answers.iter().filter(|r| r.status() == 200).count();
    assert_eq!(passed, 1, "one call per proof");
    for r in answers.iter().filter(|r| r.status() != 200) {
        assert_eq!(
            (r.status().as_u16(), outcome(r).code.as_str()),
            (401, "denied")
        );
    }
    assert_eq!(up.received().len(), 1);
    let Kind::Spin { db, .. } = &b.kind else {
        unreachable!("a Spin backend")
    };
    assert!(
        audit_chain(db).len() >= 16,
        "every racing request left a record"
    );
}

/// Await every future, concurrently (no extra dependency for join_all).
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}
