//! Writes the hand-made seed inputs under `fuzz/corpus/<target>/`:
//! `valid-*` files are accepted by their target's fixtures (`src/lib.rs`),
//! `bad-*` files are refused, each for one reason. Every seed is checked here
//! before it is written, so a seed that stops meaning what its name says is
//! caught when the seeds are regenerated.
//!
//! ```text
//! cargo +nightly run --manifest-path fuzz/Cargo.toml --example seed
//! ```
//!
//! Everything is deterministic (seeded keys, Ed25519 signatures, a fixed clock),
//! so re-running it rewrites the same bytes. Inputs that fuzzing found are
//! named by their hash and are left alone.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edgeward_core::attest::{AttestationClaims, UnverifiedAttestation, sign_attestation};
use edgeward_core::config::Config;
use edgeward_core::digest::ComponentDigest;
use edgeward_core::dpop::{self, Expected, UnverifiedProof};
use edgeward_core::entropy::SeededEntropy;
use edgeward_core::grant::GrantName;
use edgeward_core::keys::{Ed25519Signer, Es256Signer, Signer};
use edgeward_core::scan::Rule;
use edgeward_core::token::{Mint, spiffe_device, spiffe_instance};
use edgeward_fuzz::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

type Seeds = Vec<(&'static str, Vec<u8>)>;
/// Makes (and checks) one target's seeds.
type Generator = fn() -> Seeds;

fn b64_json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("JSON"))
}

fn part(jws: &str, i: usize) -> Value {
    let p = jws.split('.').nth(i).expect("a JWS part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("base64url")).expect("JSON")
}

/// A compact JWS over these exact header and payload members.
fn jws(header: &Value, payload: &Value, signer: &dyn Signer) -> String {
    let input = format!("{}.{}", b64_json(header), b64_json(payload));
    let sig = signer.sign(input.as_bytes()).expect("signs");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn with(v: &Value, key: &str, new: Value) -> Value {
    let mut v = v.clone();
    v[key] = new;
    v
}

fn vector(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../host/core/tests/vectors")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).expect("a test vector")).expect("JSON")
}

fn attestation() -> Seeds {
    let device = device_signer();
    let mut entropy = SeededEntropy::new(3);
    let instance = Ed25519Signer::generate(&mut entropy).expect("seeded key");
    let claims = AttestationClaims {
        nonce: nonce_issuer().issue(NOW, [1; 16]),
        device: "dev-1".into(),
        agent: "hello".into(),
        digest: ComponentDigest::of(b"component"),
        instance_key: instance.public_key(),
        grants: vec![GrantName::new("weather").expect("a valid name")],
        lifetime: 300,
        iat: NOW,
    };
    let good = sign_attestation(&claims, "dev-1", &device).expect("signs");
    let header = part(&good, 0);
    let payload = part(&good, 1);
    let es256 = Es256Signer::generate(&mut SeededEntropy::new(2)).expect("seeded key");
    let other = Ed25519Signer::generate(&mut SeededEntropy::new(5)).expect("seeded key");
    let sig = good.rsplit_once('.').expect("three parts").1;
    let unsigned = format!(
        "{}.{}.",
        b64_json(&with(&header, "alg", json!("none"))),
        b64_json(&payload)
    );
    let mut seeds: Seeds = vec![
        ("valid-ed25519", good.clone()),
        (
            "valid-vector",
            vector("attestation_ed25519.json")["jws"]
                .as_str()
                .expect("jws")
                .to_owned(),
        ),
        (
            "bad-es256-alg-for-ed25519-key",
            vector("attestation_es256.json")["jws"]
                .as_str()
                .expect("jws")
                .to_owned(),
        ),
        ("bad-other-key", jws(&header, &payload, &other)),
        (
            "bad-tampered-grants",
            format!(
                "{}.{}.{sig}",
                b64_json(&header),
                b64_json(&with(&payload, "grants", json!(["weather", "admin"])))
            ),
        ),
        ("bad-alg-none", unsigned),
        (
            "bad-header-jku",
            jws(
                &with(&header, "jku", json!("https://evil.example/jwks")),
                &payload,
                &device,
            ),
        ),
        (
            "bad-unknown-claim",
            jws(&header, &with(&payload, "admin", json!(true)), &device),
        ),
        (
            "bad-kid-mismatch",
            jws(&with(&header, "kid", json!("dev-2")), &payload, &device),
        ),
        (
            "bad-digest",
            jws(
                &header,
                &with(&payload, "digest", json!("sha256:00")),
                &device,
            ),
        ),
        (
            "bad-es256-signed",
            jws(&with(&header, "alg", json!("ES256")), &payload, &es256),
        ),
        ("bad-truncated", good[..good.len() / 2].to_owned()),
        ("bad-four-parts", format!("{good}.AA")),
    ]
    .into_iter()
    .map(|(n, s)| (n, s.into_bytes()))
    .collect();
    seeds.push(("bad-empty", Vec::new()));
    for (name, input) in &seeds {
        let verified = std::str::from_utf8(input)
            .ok()
            .and_then(|s| UnverifiedAttestation::parse(s).ok())
            .map(|u| u.verify(&DEVICE_KEY).is_ok());
        assert_eq!(
            verified == Some(true),
            name.starts_with("valid-"),
            "attestation seed {name}"
        );
    }
    seeds
}

fn token() -> Seeds {
    let issuer = token_issuer();
    // jwt-simple signs EdDSA with added noise; re-signing its signing input
    // with the same Ed25519 seed gives the deterministic signature, which
    // verifies the same, so the seed files do not change on every run.
    let signer = Ed25519Signer::from_seed(&TOKEN_SEED).expect("seeded key");
    let instance = spiffe_instance("edgeward.test", "hello", "i-0123456789abcdef").expect("valid");
    let mint = Mint {
        sub: instance.clone(),
        instance_spiffe: instance,
        device_spiffe: spiffe_device("edgeward.test", "dev-1").expect("valid"),
        agent: "hello".into(),
        scope: vec![GrantName::new("weather").expect("a valid name")],
        generation: 1,
        jkt: INSTANCE_JKT.clone(),
        now: NOW - 10,
        lifetime: 300,
        jti: "6708ece85e75e9f1cf22f08b4e2d627f".into(),
    };
    let minted = issuer.mint(&mint).expect("mints");
    let header = part(&minted, 0);
    let claims = part(&minted, 1);
    let good = jws(&header, &claims, &signer);
    let sig = good.rsplit_once('.').expect("three parts").1;
    let other = Ed25519Signer::generate(&mut SeededEntropy::new(5)).expect("seeded key");
    let timed = |iat: u64, exp: u64| {
        let c = with(&claims, "iat", json!(iat));
        let c = with(&c, "nbf", json!(iat));
        jws(&header, &with(&c, "exp", json!(exp)), &signer)
    };
    let seeds: Vec<(&'static str, String)> = vec![
        ("valid", good.clone()),
        (
            "bad-unknown-kid-vector",
            vector("access_token.json")["token"]
                .as_str()
                .expect("token")
                .to_owned(),
        ),
        ("bad-expired", timed(NOW - 1000, NOW - 700)),
        ("bad-not-yet-valid", timed(NOW + 1000, NOW + 1300)),
        (
            "bad-audience",
            jws(&header, &with(&claims, "aud", json!("elsewhere")), &signer),
        ),
        (
            "bad-issuer",
            jws(
                &header,
                &with(&claims, "iss", json!("https://evil.example")),
                &signer,
            ),
        ),
        (
            "bad-tampered-scope",
            format!(
                "{}.{}.{sig}",
                b64_json(&header),
                b64_json(&with(&claims, "scope", json!("weather admin")))
            ),
        ),
        ("bad-other-key", jws(&header, &claims, &other)),
        (
            "bad-alg-none",
            format!(
                "{}.{}.",
                b64_json(&with(&header, "alg", json!("none"))),
                b64_json(&claims)
            ),
        ),
        (
            "bad-typ-jwt",
            jws(&with(&header, "typ", json!("JWT")), &claims, &signer),
        ),
        ("bad-truncated", good[..good.len() - 10].to_owned()),
        ("bad-garbage", "not.a.token".to_owned()),
    ];
    for (name, input) in &seeds {
        assert_eq!(
            TOKEN_VERIFIER.verify(input, NOW).is_ok(),
            name.starts_with("valid"),
            "token seed {name}"
        );
    }
    seeds
        .into_iter()
        .map(|(n, s)| (n, s.into_bytes()))
        .collect()
}

fn dpop() -> Seeds {
    let instance = instance_signer();
    let (method, uri) = &*DPOP_REQUEST;
    let proof = |signer: &dyn Signer, m: &http::Method, u: &str, tok: &str, now: u64| {
        let u: http::Uri = u.parse().expect("a URI");
        dpop::create_proof(signer, m, &u, tok, now, &[4; 16]).expect("signs")
    };
    let good = proof(&instance, method, DPOP_URI, DPOP_ACCESS_TOKEN, NOW);
    let header = part(&good, 0);
    let claims = part(&good, 1);
    let sig = good.rsplit_once('.').expect("three parts").1;
    let other = Ed25519Signer::generate(&mut SeededEntropy::new(5)).expect("seeded key");
    let es256 = Es256Signer::generate(&mut SeededEntropy::new(2)).expect("seeded key");
    let seeds: Vec<(&'static str, String)> = vec![
        ("valid", good.clone()),
        (
            "valid-with-query",
            proof(
                &instance,
                method,
                &format!("{DPOP_URI}?x=1"),
                DPOP_ACCESS_TOKEN,
                NOW + 30,
            ),
        ),
        (
            "bad-other-key",
            proof(&other, method, DPOP_URI, DPOP_ACCESS_TOKEN, NOW),
        ),
        (
            "bad-es256-key",
            proof(&es256, method, DPOP_URI, DPOP_ACCESS_TOKEN, NOW),
        ),
        (
            "bad-method",
            proof(
                &instance,
                &http::Method::GET,
                DPOP_URI,
                DPOP_ACCESS_TOKEN,
                NOW,
            ),
        ),
        (
            "bad-uri",
            proof(
                &instance,
                method,
                "https://evil.example/v1/egress",
                DPOP_ACCESS_TOKEN,
                NOW,
            ),
        ),
        (
            "bad-stale",
            proof(&instance, method, DPOP_URI, DPOP_ACCESS_TOKEN, NOW - 61),
        ),
        (
            "bad-other-token",
            proof(&instance, method, DPOP_URI, "another-token", NOW),
        ),
        (
            "bad-tampered-iat",
            format!(
                "{}.{}.{sig}",
                b64_json(&header),
                b64_json(&with(&claims, "iat", json!(NOW + 1)))
            ),
        ),
        (
            "bad-alg-none",
            format!(
                "{}.{}.",
                b64_json(&with(&header, "alg", json!("none"))),
                b64_json(&claims)
            ),
        ),
        (
            "bad-private-jwk",
            jws(
                &with(
                    &header,
                    "jwk",
                    with(
                        &header["jwk"],
                        "d",
                        json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                    ),
                ),
                &claims,
                &instance,
            ),
        ),
        ("bad-truncated", good[..good.len() - 3].to_owned()),
    ];
    for (name, input) in &seeds {
        let ok = UnverifiedProof::parse(input)
            .and_then(|p| {
                p.verify(&Expected {
                    method,
                    uri,
                    token: DPOP_ACCESS_TOKEN,
                    jkt: &INSTANCE_JKT,
                    now: NOW,
                })
            })
            .is_ok();
        assert_eq!(ok, name.starts_with("valid"), "dpop seed {name}");
    }
    seeds
        .into_iter()
        .map(|(n, s)| (n, s.into_bytes()))
        .collect()
}

fn nonce() -> Seeds {
    let issuer = nonce_issuer();
    let good = issuer.issue(NOW - 10, [1; 16]);
    let mut flipped = good.clone().into_bytes();
    flipped[40] = if flipped[40] == b'A' { b'B' } else { b'A' };
    let seeds: Vec<(&'static str, Vec<u8>)> = vec![
        ("valid", good.clone().into_bytes()),
        ("bad-stale", issuer.issue(NOW - 61, [2; 16]).into_bytes()),
        ("bad-future", issuer.issue(NOW + 60, [3; 16]).into_bytes()),
        (
            "bad-other-epoch",
            edgeward_core::nonce::NonceIssuer::new([9; 32], 2, 60)
                .issue(NOW, [4; 16])
                .into_bytes(),
        ),
        (
            "bad-other-key",
            edgeward_core::nonce::NonceIssuer::new([8; 32], 1, 60)
                .issue(NOW, [5; 16])
                .into_bytes(),
        ),
        ("bad-flipped", flipped),
        ("bad-padded", format!("{}==", &good[..84]).into_bytes()),
        ("bad-short", good.as_bytes()[..85].to_vec()),
    ];
    for (name, input) in &seeds {
        let ok = std::str::from_utf8(input)
            .ok()
            .map(|s| NONCE_ISSUER.check(s, NOW).is_ok());
        assert_eq!(
            ok == Some(true),
            name.starts_with("valid"),
            "nonce seed {name}"
        );
    }
    seeds
}

const CONFIG: &str = r#"[runtime]
pooling = false
max_concurrent_tasks = 4

[backend]
issuer = "https://edgeward.local"
audience = "edgeward"
trust_domain = "edgeward.local"
default_token_lifetime_s = 300

[[device]]
id = "edge-1"
owner = "ops@example.com"
public_key = "ed25519:11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"

[[grant]]
name = "weather"
origin = "https://api.weather.example"
methods = ["GET", "POST"]
path_prefixes = ["/v1/"]
credential = { kind = "header", name = "x-api-key", prefix = "" }
secret = { env = "WEATHER_API_KEY" }
connect_timeout_ms = 5000
timeout_ms = 30000

[[grant]]
name = "mail"
origin = "http://127.0.0.1:8025"
methods = ["POST"]
path_prefixes = ["/"]
credential = { kind = "basic", username = "svc" }
secret = { file = "/run/secrets/mail" }

[[agent]]
name = "weather-bot"
owner = "alice@example.com"
digests = ["sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"]
grants = ["weather", "mail"]
devices = ["edge-1"]
max_instances_per_device = 4
max_token_lifetime_s = 300
[agent.limits]
memory_mib = 64
task_timeout_ms = 30000
"#;

fn config() -> Seeds {
    let seeds: Vec<(&'static str, String)> = vec![
        ("valid-full", CONFIG.to_owned()),
        ("valid-empty", String::new()),
        (
            "bad-inline-secret",
            CONFIG.replace(
                "secret = { env = \"WEATHER_API_KEY\" }",
                "secret = \"sk_live_pasted\"",
            ),
        ),
        (
            "bad-unknown-field",
            CONFIG.replace("pooling = false", "colour = 1"),
        ),
        (
            "bad-plain-http",
            CONFIG.replace("https://api.weather.example", "http://api.weather.example"),
        ),
        (
            "bad-unknown-grant",
            CONFIG.replace("grants = [\"weather\", \"mail\"]", "grants = [\"admin\"]"),
        ),
        ("bad-digest", CONFIG.replace("sha256:ba78", "sha256:zz78")),
        ("bad-syntax", CONFIG.replace("[[agent]]", "[[agent")),
    ];
    for (name, input) in &seeds {
        assert_eq!(
            Config::parse(input).is_ok(),
            name.starts_with("valid"),
            "config seed {name}"
        );
    }
    seeds
        .into_iter()
        .map(|(n, s)| (n, s.into_bytes()))
        .collect()
}

fn scanner() -> Seeds {
    let token = String::from_utf8(token()[0].1.clone()).expect("UTF-8");
    let live = std::str::from_utf8(LIVE_SECRET).expect("ASCII");
    let live_b64 = base64::engine::general_purpose::STANDARD.encode(LIVE_SECRET);
    let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n-----END PRIVATE KEY-----\n";
    // Every credential below is a documentation example or spelled EXAMPLE:
    // the shapes are real, the values are not.
    let google = "AIzaSyEXAMPLE-example_EXAMPLE-example00";
    use Rule::*;
    let seeds: Vec<(&'static str, String, &[Rule])> = vec![
        (
            "hit-log-line",
            "INFO calling api key=AKIAIOSFODNN7EXAMPLE token=ghp_aB3dE6gH9jK2mN5pQ8rS1tU4vW7xY0zA1bC2\n"
                .to_owned(),
            &[AwsAccessKeyId, GitHubToken],
        ),
        (
            "hit-json",
            format!(
                r#"{{"slack":"xoxb-0000000000-0000000000000-EXAMPLEexample0EXAMPLE0","stripe":"sk_live_EXAMPLE0example0EXAMPLE0","google":"{google}","aws_secret_access_key":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY","jwt":"{token}"}}"#
            ),
            &[SlackToken, StripeKey, GoogleApiKey, AwsSecretAccessKey, Jwt],
        ),
        (
            "hit-url",
            format!(
                "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX?key={google}&live=edgeward%2Dfuzz%2Dlive%2Dsecret%2D0001"
            ),
            &[SlackWebhook, GoogleApiKey, LiveCredential],
        ),
        ("hit-pem-block", format!("key:\n{pem}"), &[PemPrivateKey]),
        (
            "hit-pem-truncated",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAEXAMPLE0EXAMPLE0EXAMPLE0EXAMPLE0EXAMPLE0EXAMPLE0\n".to_owned(),
            &[PemPrivateKey],
        ),
        (
            "hit-live",
            format!("echo: {live} / {live_b64}"),
            &[LiveCredential],
        ),
        (
            "hit-high-entropy",
            "session=Zk9xT2pLbW5RcjRzVDd1Vng4WTB6QTFiQzJkRTNmRzQ\n".to_owned(),
            &[HighEntropy],
        ),
        (
            "miss-lookalikes",
            "id=123e4567-e89b-12d3-a456-426614174000 sha256=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 commit=3f786850e387550fdab836ed7e6dc881de23001b AKIAIOSFODNN7EXAMPL ghp_short\n"
                .to_owned(),
            &[],
        ),
    ];
    let mut seeds: Vec<(&'static str, Vec<u8>, &[Rule])> = seeds
        .into_iter()
        .map(|(n, s, r)| (n, s.into_bytes(), r))
        .collect();
    seeds.push((
        "miss-binary",
        vec![0, 0xff, 0xfe, b'A', b'K', b'I', b'A', 0x80, b'\n'],
        &[],
    ));
    for (name, input, expected) in &seeds {
        let mut found: Vec<Rule> = SCANNER.scan(input).iter().map(|f| f.rule).collect();
        found.sort();
        found.dedup();
        let mut expected = expected.to_vec();
        expected.sort();
        assert_eq!(found, expected, "scanner seed {name}");
    }
    seeds.into_iter().map(|(n, s, _)| (n, s)).collect()
}

fn write(dir: &Path, seeds: &Seeds) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let targets: [(&str, Generator); 6] = [
        ("attestation", attestation),
        ("token", token),
        ("dpop", dpop),
        ("nonce", nonce),
        ("config", config),
        ("scanner", scanner),
    ];
    for (target, seeds) in targets {
        let seeds = seeds();
        write(&corpus.join(target), &seeds)?;
        println!("{target}: {} seeds", seeds.len());
    }
    Ok(())
}
