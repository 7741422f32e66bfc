//! Generates the checked-in test vectors in `host/core/tests/vectors/`.
//!
//! Run `cargo run -p edgeward-core --example gen_vectors` to re-bless them
//! after an intended format change; `tests/vectors.rs` regenerates them on
//! every test run and fails on any difference.
//!
//! Everything comes from seeded keys ([`SeededEntropy`]) and a fixed clock, so
//! the output is identical on every run, with one exception: jwt-simple adds
//! random noise to each EdDSA signature it makes, so the signature of the one
//! token minted through [`TokenIssuer`] differs per run. For that token the
//! generator keeps the checked-in token when its signed part (`header.payload`)
//! is unchanged; the test then verifies that checked-in token. Every other
//! token here is signed with [`Ed25519Signer`], which is deterministic.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edgeward_core::attest::{AttestationClaims, UnverifiedAttestation, sign_attestation};
use edgeward_core::caveat::{Caveat, Chain, ChainKey, Rights};
use edgeward_core::digest::ComponentDigest;
use edgeward_core::entropy::{Entropy, SeededEntropy};
use edgeward_core::grant::GrantName;
use edgeward_core::keys::{Ed25519Signer, Es256Signer, PublicKey, Signer};
use edgeward_core::nonce::NonceIssuer;
use edgeward_core::token::{Mint, TokenIssuer, TokenVerifier, spiffe_device, spiffe_instance};
use hmac::Mac as _;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The fixed clock: 2026-01-01T00:00:00Z.
pub const NOW: u64 = 1_767_225_600;
/// Issuer, audience and trust domain of the vector tokens.
pub const ISSUER: &str = "https://backend.edgeward.test";
/// `aud` of the vector tokens.
pub const AUDIENCE: &str = "edgeward-egress";
/// Trust domain of the vector SPIFFE ids.
pub const TRUST_DOMAIN: &str = "edgeward.test";
/// Clock tolerance the vector verifier uses.
pub const TOLERANCE: u64 = 5;
/// Nonce max age.
pub const NONCE_MAX_AGE: u64 = 60;
/// Requested token lifetime.
pub const LIFETIME: u64 = 300;

/// Seeds, one per key, so each vector file names where its keys come from.
const SEED_DEVICE_ED25519: u64 = 1;
const SEED_DEVICE_ES256: u64 = 2;
const SEED_INSTANCE: u64 = 3;
const SEED_TOKEN_ISSUER: u64 = 4;
const SEED_OTHER: u64 = 5;
const SEED_NONCE_KEY: u64 = 6;
const SEED_JTI: u64 = 7;
const SEED_CAVEAT_ROOT: u64 = 8;
const SEED_CHILD: u64 = 9;
/// Delegation depth the caveat vectors start from.
pub const MAX_DEPTH: u32 = 2;

/// Where the vector files live.
pub fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn bytes32(seed: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    SeededEntropy::new(seed).fill(&mut out);
    out
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_json(v: &Value) -> String {
    b64(serde_json::to_vec(v).expect("a JSON value serializes"))
}

/// Sign `header.payload` with a deterministic signer and return the JWS.
fn jws_with(header: &Value, payload: &Value, signer: &dyn Signer) -> String {
    let input = format!("{}.{}", b64_json(header), b64_json(payload));
    let sig = signer
        .sign(input.as_bytes())
        .expect("in-memory signers do not fail");
    format!("{input}.{}", b64(sig))
}

fn part(jws: &str, i: usize) -> Value {
    let p = jws.split('.').nth(i).expect("three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("base64url")).expect("JSON")
}

fn signing_input(jws: &str) -> &str {
    jws.rsplit_once('.').map_or(jws, |(input, _)| input)
}

struct Setup {
    device_ed: Ed25519Signer,
    device_es: Es256Signer,
    instance: Ed25519Signer,
    other: Ed25519Signer,
    nonce: String,
    claims: AttestationClaims,
}

fn setup() -> Setup {
    let device_ed =
        Ed25519Signer::generate(&mut SeededEntropy::new(SEED_DEVICE_ED25519)).expect("seeded key");
    let device_es =
        Es256Signer::generate(&mut SeededEntropy::new(SEED_DEVICE_ES256)).expect("seeded key");
    let instance =
        Ed25519Signer::generate(&mut SeededEntropy::new(SEED_INSTANCE)).expect("seeded key");
    let other = Ed25519Signer::generate(&mut SeededEntropy::new(SEED_OTHER)).expect("seeded key");
    let nonce = NonceIssuer::new(bytes32(SEED_NONCE_KEY), 1, NONCE_MAX_AGE).issue(NOW, NONCE_SALT);
    let claims = AttestationClaims {
        nonce: nonce.clone(),
        device: "dev-1".into(),
        agent: "hello".into(),
        digest: ComponentDigest::of(b"edgeward test component"),
        instance_key: instance.public_key(),
        grants: vec![
            GrantName::new("weather").expect("valid"),
            GrantName::new("mail").expect("valid"),
        ],
        lifetime: LIFETIME,
        iat: NOW,
    };
    Setup {
        device_ed,
        device_es,
        instance,
        other,
        nonce,
        claims,
    }
}

/// The random part of the vector nonce (fixed, so the vector is stable).
const NONCE_SALT: [u8; 16] = *b"edgeward-salt-01";

fn nonce_vector(s: &Setup) -> Value {
    json!({
        "description": "A stateless nonce: base64url(boot_epoch || issued_at || salt || HMAC-SHA256(key, \"edgeward-nonce-v1\" || boot_epoch || issued_at || salt)).",
        "salt_hex": hex::encode(NONCE_SALT),
        "key_hex": hex::encode(bytes32(SEED_NONCE_KEY)),
        "boot_epoch": 1,
        "max_age_secs": NONCE_MAX_AGE,
        "issued_at": NOW,
        "nonce": s.nonce,
    })
}

fn attestation_vector(s: &Setup, signer: &dyn Signer, seed: u64) -> Value {
    let jws = sign_attestation(&s.claims, "dev-1", signer).expect("the vector claims are valid");
    json!({
        "description": "A device-signed attestation (compact JWS). Device signatures are deterministic, so every byte is reproducible.",
        "alg": signer.alg().as_str(),
        "device_seed": seed,
        "device_id": "dev-1",
        "device_public_key": signer.public_key().to_string(),
        "device_public_jwk": signer.public_key().to_jwk(),
        "instance_public_jwk": s.instance.public_key().to_jwk(),
        "instance_jkt": s.instance.public_key().jwk_thumbprint(),
        "header": part(&jws, 0),
        "claims": part(&jws, 1),
        "jws": jws,
    })
}

fn attestation_negative(s: &Setup) -> Value {
    let good = sign_attestation(&s.claims, "dev-1", &s.device_ed).expect("valid");
    let header = part(&good, 0);
    let claims = part(&good, 1);
    let sig = good
        .rsplit_once('.')
        .map(|(_, sig)| sig.to_owned())
        .unwrap_or_default();
    let with_header = |k: &str, v: Value| {
        let mut h = header.clone();
        h[k] = v;
        h
    };
    let resigned = |h: &Value, c: &Value| jws_with(h, c, &s.device_ed);
    let mut tampered = claims.clone();
    tampered["grants"] = json!(["weather", "mail", "admin"]);
    let mut unknown_claim = claims.clone();
    unknown_claim["admin"] = json!(true);
    let mut no_kid = header.clone();
    if let Some(m) = no_kid.as_object_mut() {
        m.remove("kid");
    }
    let mut other_device = claims.clone();
    other_device["device"] = json!("dev-2");
    let mut bad_instance_key = claims.clone();
    bad_instance_key["instance_key"]["d"] = json!(b64([1u8; 32]));

    let ed = s.device_ed.public_key().to_string();
    let es = s.device_es.public_key().to_string();
    let other = s.other.public_key().to_string();
    let cases = vec![
        (
            "tampered_claims",
            format!("{}.{}.{sig}", b64_json(&header), b64_json(&tampered)),
            &ed,
            "BadSignature",
        ),
        (
            "signed_by_another_device",
            jws_with(&header, &claims, &s.other),
            &ed,
            "BadSignature",
        ),
        (
            "verified_with_another_key",
            good.clone(),
            &other,
            "BadSignature",
        ),
        (
            "alg_does_not_match_key_type",
            good.clone(),
            &es,
            "AlgorithmMismatch",
        ),
        (
            "alg_none",
            format!(
                "{}.{}.",
                b64_json(&with_header("alg", json!("none"))),
                b64_json(&claims)
            ),
            &ed,
            "UnsupportedAlgorithm",
        ),
        (
            "alg_hs256",
            resigned(&with_header("alg", json!("HS256")), &claims),
            &ed,
            "UnsupportedAlgorithm",
        ),
        (
            "wrong_typ",
            resigned(&with_header("typ", json!("JWT")), &claims),
            &ed,
            "WrongType",
        ),
        (
            "missing_kid",
            resigned(&no_kid, &claims),
            &ed,
            "MissingKeyId",
        ),
        (
            "kid_is_not_the_device_claim",
            resigned(&header, &other_device),
            &ed,
            "DeviceMismatch",
        ),
        (
            "header_carries_a_key",
            resigned(&with_header("jwk", s.other.public_key().to_jwk()), &claims),
            &ed,
            "BadHeader",
        ),
        (
            "unknown_claim",
            resigned(&header, &unknown_claim),
            &ed,
            "BadClaims",
        ),
        (
            "instance_key_is_private",
            resigned(&header, &bad_instance_key),
            &ed,
            "BadInstanceKey",
        ),
        ("padded_base64", format!("{good}="), &ed, "Malformed"),
        (
            "too_long",
            format!("{good}{}", "A".repeat(8 * 1024)),
            &ed,
            "TooLong",
        ),
    ];
    json!({
        "description": "Attestations that must be refused, each with the AttestError variant expected from parse-then-verify with device_public_key.",
        "now": NOW,
        "cases": cases.into_iter().map(|(name, jws, key, err)| json!({
            "name": name,
            "jws": jws,
            "device_public_key": key,
            "expected_error": err,
        })).collect::<Vec<_>>(),
    })
}

fn token_issuer() -> TokenIssuer {
    TokenIssuer::new(&bytes32(SEED_TOKEN_ISSUER), ISSUER, AUDIENCE).expect("seeded key")
}

fn mint_request(s: &Setup) -> Mint {
    // As the backend does: from the verified attestation.
    let jws = sign_attestation(&s.claims, "dev-1", &s.device_ed).expect("valid");
    let att = UnverifiedAttestation::parse(&jws)
        .and_then(|u| u.verify(&s.device_ed.public_key()))
        .expect("the vector attestation verifies");
    let mut jti = [0u8; 16];
    SeededEntropy::new(SEED_JTI).fill(&mut jti);
    let instance = spiffe_instance(TRUST_DOMAIN, att.agent(), "i-0123456789abcdef").expect("valid");
    Mint {
        sub: instance.clone(),
        instance_spiffe: instance,
        device_spiffe: spiffe_device(TRUST_DOMAIN, att.device_id()).expect("valid"),
        agent: att.agent().to_owned(),
        scope: att.grants().to_vec(),
        generation: 1,
        jkt: att.instance_key().jwk_thumbprint(),
        now: NOW,
        lifetime: att.lifetime(),
        jti: hex::encode(jti),
    }
}

/// The minted token, or the checked-in one if its signed part is unchanged
/// (jwt-simple's signatures carry random noise).
fn minted_token(s: &Setup, previous: Option<&Value>) -> String {
    let fresh = token_issuer().mint(&mint_request(s)).expect("valid mint");
    match previous.and_then(|p| p["token"].as_str()) {
        Some(old) if signing_input(old) == signing_input(&fresh) => old.to_owned(),
        _ => fresh,
    }
}

fn access_token_vector(s: &Setup, token: &str) -> Value {
    let issuer = token_issuer();
    let m = mint_request(s);
    json!({
        "description": "An access token minted by TokenIssuer (jwt-simple, EdDSA, typ at+jwt). jwt-simple's signatures are hedged (random noise), so only signing_input is reproducible; token is one run's output and must verify at verify_at.",
        "issuer_seed": SEED_TOKEN_ISSUER,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "kid": issuer.kid(),
        "issuer_public_key": PublicKey::Ed25519(issuer.public_key()).to_string(),
        "jwks": issuer.jwks(),
        "tolerance_secs": TOLERANCE,
        "mint": {
            "sub": m.sub,
            "instance_spiffe": m.instance_spiffe,
            "device_spiffe": m.device_spiffe,
            "agent": m.agent,
            "scope": m.scope.iter().map(GrantName::as_str).collect::<Vec<_>>(),
            "generation": m.generation,
            "jkt": m.jkt,
            "now": m.now,
            "lifetime": m.lifetime,
            "jti": m.jti,
        },
        "header": part(token, 0),
        "claims": part(token, 1),
        "signing_input": signing_input(token),
        "token": token,
        "verify_at": NOW + 10,
    })
}

fn access_token_negative(s: &Setup, good: &str) -> Value {
    let issuer = token_issuer();
    let issuer_signer = Ed25519Signer::from_seed(&bytes32(SEED_TOKEN_ISSUER)).expect("seeded key");
    let header = part(good, 0);
    let claims = part(good, 1);
    let sig = good
        .rsplit_once('.')
        .map(|(_, sig)| sig.to_owned())
        .unwrap_or_default();
    let with_header = |k: &str, v: Value| {
        let mut h = header.clone();
        h[k] = v;
        h
    };
    let with_claim = |k: &str, v: Value| {
        let mut c = claims.clone();
        c[k] = v;
        c
    };
    // Ed25519 is deterministic: a token signed here with the issuer's seed is
    // what jwt-simple would produce without noise, and verifies the same.
    let signed = |h: &Value, c: &Value| jws_with(h, c, &issuer_signer);
    let mut no_exp = claims.clone();
    if let Some(m) = no_exp.as_object_mut() {
        m.remove("exp");
    }
    let hs256_header = with_header("alg", json!("HS256"));
    let hs256_input = format!("{}.{}", b64_json(&hs256_header), b64_json(&claims));
    // The classic confusion: HMAC keyed with the verifier's public key.
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(issuer.public_key().as_bytes())
            .expect("HMAC takes any key length");
    mac.update(hs256_input.as_bytes());
    let hs256 = format!("{hs256_input}.{}", b64(mac.finalize().into_bytes()));

    let exp = NOW + LIFETIME;
    let cases = vec![
        (
            "tampered_claims",
            format!(
                "{}.{}.{sig}",
                b64_json(&header),
                b64_json(&with_claim("scope", json!("weather mail admin")))
            ),
            NOW,
            "BadSignature",
        ),
        (
            "unknown_kid",
            format!(
                "{}.{}.{sig}",
                b64_json(&with_header("kid", json!("retired-key"))),
                b64_json(&claims)
            ),
            NOW,
            "UnknownKey",
        ),
        (
            "signed_by_another_key",
            jws_with(&header, &claims, &s.other),
            NOW,
            "BadSignature",
        ),
        ("expired", good.to_owned(), exp + TOLERANCE, "Expired"),
        ("expired_long_ago", good.to_owned(), exp + 3600, "Expired"),
        (
            "not_yet_valid",
            good.to_owned(),
            NOW - TOLERANCE - 1,
            "NotYetValid",
        ),
        (
            "wrong_issuer",
            signed(
                &header,
                &with_claim("iss", json!("https://other.edgeward.test")),
            ),
            NOW,
            "WrongIssuer",
        ),
        (
            "wrong_audience",
            signed(&header, &with_claim("aud", json!("someone-else"))),
            NOW,
            "WrongAudience",
        ),
        (
            "wrong_typ",
            signed(&with_header("typ", json!("JWT")), &claims),
            NOW,
            "WrongType",
        ),
        (
            "alg_none",
            format!(
                "{}.{}.",
                b64_json(&with_header("alg", json!("none"))),
                b64_json(&claims)
            ),
            NOW,
            "WrongAlgorithm",
        ),
        (
            "alg_hs256_keyed_with_public_key",
            hs256,
            NOW,
            "WrongAlgorithm",
        ),
        (
            "alg_alias_ed25519",
            signed(&with_header("alg", json!("Ed25519")), &claims),
            NOW,
            "WrongAlgorithm",
        ),
        ("no_exp_claim", signed(&header, &no_exp), NOW, "Malformed"),
        (
            "unknown_claim",
            signed(&header, &with_claim("admin", json!(true))),
            NOW,
            "Malformed",
        ),
        (
            "too_long",
            format!("{good}{}", "A".repeat(8 * 1024)),
            NOW,
            "TooLong",
        ),
    ];
    json!({
        "description": "Access tokens that must be refused, each with the TokenError variant expected from TokenVerifier::verify(token, now) with the issuer key of access_token.json.",
        "cases": cases.into_iter().map(|(name, token, now, err)| json!({
            "name": name,
            "token": token,
            "now": now,
            "expected_error": err,
        })).collect::<Vec<_>>(),
    })
}

/// Every vector file: (file name, content). `previous` gives the checked-in
/// content of a file, if any (used only to keep the hedged token stable).
pub fn generate(previous: &dyn Fn(&str) -> Option<Value>) -> Vec<(&'static str, Value)> {
    let s = setup();
    // Minted once, so both token files hold the same token even on a first run.
    let token = minted_token(&s, previous("access_token.json").as_ref());
    vec![
        ("nonce.json", nonce_vector(&s)),
        (
            "attestation_ed25519.json",
            attestation_vector(&s, &s.device_ed, SEED_DEVICE_ED25519),
        ),
        (
            "attestation_es256.json",
            attestation_vector(&s, &s.device_es, SEED_DEVICE_ES256),
        ),
        ("attestation_negative.json", attestation_negative(&s)),
        ("access_token.json", access_token_vector(&s, &token)),
        (
            "access_token_negative.json",
            access_token_negative(&s, &token),
        ),
        ("caveats.json", caveat_vector(&s, &token)),
    ]
}

/// The rights as the vector files write them.
pub fn rights_json(r: &Rights) -> Value {
    json!({
        "grants": r.grants.iter().map(GrantName::as_str).collect::<Vec<_>>(),
        "methods": r.methods,
        "path_prefixes": r.path_prefixes,
        "expires_at": r.expires_at,
        "depth": r.depth,
        "holder": r.holder,
        "agents": r.agents,
    })
}

/// Caveat chains over the vector token: valid ones with their effective
/// rights, and broken ones with the error they must give.
fn caveat_vector(s: &Setup, token: &str) -> Value {
    let root = bytes32(SEED_CAVEAT_ROOT);
    let child = Ed25519Signer::generate(&mut SeededEntropy::new(SEED_CHILD))
        .expect("seeded key")
        .public_key()
        .jwk_thumbprint();
    let parent = s.instance.public_key().jwk_thumbprint();
    let scope = s.claims.grants.clone();
    let base = Rights::of_token(&scope, NOW + LIFETIME, &parent, MAX_DEPTH);
    let grant = |n: &str| GrantName::new(n).expect("valid name");
    let start = Chain::new(token, ChainKey::derive(&root, token));
    let one_hop = start
        .append(Caveat::grants([grant("weather")]))
        .and_then(|c| c.append(Caveat::methods(["GET"])?))
        .and_then(|c| c.append(Caveat::path_prefixes(["/v1/forecast"])?))
        .and_then(|c| c.append(Caveat::ExpiresAt(NOW + 120)))
        .and_then(|c| c.append(Caveat::Holder(child.clone())))
        .expect("valid caveats");
    let two_hops = one_hop
        .append(Caveat::MaxDepth(0))
        .and_then(|c| c.append(Caveat::Holder(parent.clone())));
    // MaxDepth(0) then a holder: the chain is authentic, the rights are not.
    let two_hops = two_hops.expect("valid caveats");
    let second = one_hop
        .append(Caveat::ExpiresAt(NOW + 60))
        .and_then(|c| c.append(Caveat::Holder(parent.clone())))
        .expect("valid caveats");
    let widened = start
        .append(Caveat::grants([grant("admin"), grant("weather")]))
        .expect("valid caveat");
    // What a runtime appends for a child started through WIT.
    let sub_agent = start
        .append(Caveat::Agent("summarizer".into()))
        .and_then(|c| c.append(Caveat::grants([grant("mail")])))
        .and_then(|c| c.append(Caveat::Holder(child.clone())))
        .and_then(|c| c.append(Caveat::MaxDepth(0)))
        .expect("valid caveats");

    let wire = one_hop.encode();
    let parts: Vec<&str> = wire.split('~').collect();
    let join = |p: Vec<&str>| p.join("~");
    let dropped = join(vec![
        parts[0], parts[1], parts[3], parts[4], parts[5], parts[6],
    ]);
    let reordered = join(vec![
        parts[0], parts[2], parts[1], parts[3], parts[4], parts[5], parts[6],
    ]);
    let widened_grant = b64("grants:mail,weather");
    let tampered = join(vec![
        parts[0],
        &widened_grant,
        parts[2],
        parts[3],
        parts[4],
        parts[5],
        parts[6],
    ]);
    let stripped = join(vec![parts[0], parts[6]]);
    let non_canonical = join(vec![parts[0], &b64("methods:POST,GET"), parts[6]]);

    let ok = |name: &str, chain: &Chain| {
        let rights = base
            .clone()
            .attenuate(chain.caveats())
            .expect("valid rights");
        json!({"name": name, "chain": chain.encode(), "expected": {"rights": rights_json(&rights)}})
    };
    let err = |name: &str, chain: String, error: &str| json!({"name": name, "chain": chain, "expected": {"error": error}});
    let mut widened_case = ok(
        "widened scope: a caveat naming a grant the token lacks adds nothing",
        &widened,
    );
    widened_case["expected"]["narrows"] = json!("NotNarrower");
    json!({
        "description": "macaroon-style caveat chains (HMAC-SHA256) over the access token of access_token.json; rights = base_rights attenuated by the caveats in order",
        "root_key_hex": hex::encode(root),
        "token": token,
        "chain_key": b64(ChainKey::derive(&root, token).expose()),
        "base_rights": rights_json(&base),
        "max_depth": MAX_DEPTH,
        "cases": [
            ok("valid: one delegation (grant, method, path, expiry, child key)", &one_hop),
            ok("valid: the child delegates on (earlier expiry, key back to the parent)", &second),
            widened_case,
            ok("valid: a child of sub-agent summarizer (agent, grant, child key, no further depth)", &sub_agent),
            err("dropped caveat", dropped, "BadTag"),
            err("reordered caveats", reordered, "BadTag"),
            err("tampered caveat (grants widened in place)", tampered, "BadTag"),
            err("every caveat stripped, the final tag kept", stripped, "BadTag"),
            err("a caveat not in canonical form", non_canonical, "BadCaveat"),
            err("depth exhausted: depth 0, then another holder", two_hops.encode(), "DepthExhausted"),
        ],
    })
}

/// Read a checked-in vector file.
pub fn read_vector(name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(vectors_dir().join(name)).ok()?;
    serde_json::from_str(&text).ok()
}

/// A verifier for the vector tokens.
pub fn vector_verifier() -> TokenVerifier {
    let issuer = token_issuer();
    let mut v = TokenVerifier::new(ISSUER, AUDIENCE, TOLERANCE);
    v.add_key(issuer.kid(), issuer.public_key());
    v
}

fn main() -> std::io::Result<()> {
    let dir = vectors_dir();
    std::fs::create_dir_all(&dir)?;
    for (name, value) in generate(&read_vector) {
        let mut text = serde_json::to_string_pretty(&value).map_err(std::io::Error::other)?;
        text.push('\n');
        let path = dir.join(name);
        let unchanged = std::fs::read_to_string(&path).is_ok_and(|old| old == text);
        std::fs::write(&path, text)?;
        println!(
            "{} {}",
            if unchanged { "unchanged" } else { "wrote    " },
            path.display()
        );
    }
    Ok(())
}
