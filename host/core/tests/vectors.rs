//! Checked-in test vectors (biscuit style).
//!
//! 1. The generator (`examples/gen_vectors.rs`, compiled in here too) must
//!    reproduce every file in `tests/vectors/` exactly; a difference means the
//!    wire format changed. If that was intended, re-bless with
//!    `cargo run -p edgeward-core --example gen_vectors` and review the diff.
//! 2. Independently of the generator, every checked-in vector is verified with
//!    only the public values written in the files, and every negative vector
//!    must fail with its recorded error.

#[allow(dead_code)]
#[path = "../examples/gen_vectors.rs"]
mod gen_vectors;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use edgeward_core::attest::UnverifiedAttestation;
use edgeward_core::keys::PublicKey;
use edgeward_core::nonce::NonceIssuer;
use edgeward_core::token::TokenVerifier;
use serde_json::Value;
use std::fmt::Debug;

const REBLESS: &str = "if the change is intended, re-bless with `cargo run -p edgeward-core --example gen_vectors` and review the diff";

fn load(name: &str) -> Value {
    gen_vectors::read_vector(name)
        .unwrap_or_else(|| panic!("tests/vectors/{name} is missing or not JSON; {REBLESS}"))
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string"))
}

fn number(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number"))
}

/// The variant name of an error (`TooLong { .. }` -> `TooLong`): stable
/// across wording changes of the messages inside.
fn variant(e: &impl Debug) -> String {
    let shown = format!("{e:?}");
    shown
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn decode_part(jws: &str, i: usize) -> Value {
    let part = jws.split('.').nth(i).expect("three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

#[test]
fn generator_reproduces_the_checked_in_vectors() {
    let generated = gen_vectors::generate(&gen_vectors::read_vector);
    let mut stale = Vec::new();
    for (name, value) in &generated {
        // Compared as JSON values, so member order in the file does not matter.
        if gen_vectors::read_vector(name).as_ref() != Some(value) {
            stale.push(*name);
        }
    }
    assert!(
        stale.is_empty(),
        "test vectors differ from what the code generates: {stale:?}; {REBLESS}"
    );
    let mut on_disk: Vec<String> = std::fs::read_dir(gen_vectors::vectors_dir())
        .expect("vectors dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut expected: Vec<String> = generated.iter().map(|(n, _)| (*n).to_owned()).collect();
    expected.sort();
    assert_eq!(on_disk, expected, "unexpected files in tests/vectors");
}

#[test]
fn nonce_vector() {
    let v = load("nonce.json");
    let key: [u8; 32] = hex::decode(text(&v, "key_hex"))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let issuer = NonceIssuer::new(key, number(&v, "boot_epoch"), number(&v, "max_age_secs"));
    let at = number(&v, "issued_at");
    let salt: [u8; 16] = hex::decode(text(&v, "salt_hex"))
        .expect("hex")
        .try_into()
        .expect("16 bytes");
    assert_eq!(issuer.issue(at, salt), text(&v, "nonce"));
    assert_eq!(issuer.check(text(&v, "nonce"), at + 1), Ok(at));
}

#[test]
fn attestation_vectors_verify() {
    for file in ["attestation_ed25519.json", "attestation_es256.json"] {
        let v = load(file);
        let key: PublicKey = text(&v, "device_public_key").parse().expect("key text");
        assert_eq!(
            PublicKey::from_jwk(&v["device_public_jwk"]),
            Ok(key),
            "{file}"
        );
        let jws = text(&v, "jws");
        assert_eq!(decode_part(jws, 0), v["header"], "{file}");
        assert_eq!(decode_part(jws, 1), v["claims"], "{file}");
        let unverified = UnverifiedAttestation::parse(jws).expect("parses");
        assert_eq!(unverified.device_id(), text(&v, "device_id"));
        assert_eq!(unverified.alg().as_str(), text(&v, "alg"));
        let att = unverified.verify(&key).expect("verifies");
        let instance = PublicKey::from_jwk(&v["instance_public_jwk"]).expect("jwk");
        assert_eq!(att.instance_key(), &instance);
        assert_eq!(instance.jwk_thumbprint(), text(&v, "instance_jkt"));
        assert_eq!(att.nonce(), text(&v["claims"], "nonce"));
        assert_eq!(att.lifetime(), number(&v["claims"], "lifetime"));
    }
}

#[test]
fn attestation_negative_vectors_fail_as_recorded() {
    let v = load("attestation_negative.json");
    let cases = v["cases"].as_array().expect("cases");
    assert!(cases.len() >= 10);
    for case in cases {
        let name = text(case, "name");
        let key: PublicKey = text(case, "device_public_key").parse().expect("key text");
        let result = UnverifiedAttestation::parse(text(case, "jws")).and_then(|u| u.verify(&key));
        let err = result.expect_err(name);
        assert_eq!(variant(&err), text(case, "expected_error"), "{name}: {err}");
    }
}

fn verifier_from(v: &Value) -> TokenVerifier {
    let PublicKey::Ed25519(key) = text(v, "issuer_public_key").parse().expect("key text") else {
        panic!("the token issuer key is Ed25519");
    };
    let mut verifier = TokenVerifier::new(
        text(v, "issuer"),
        text(v, "audience"),
        number(v, "tolerance_secs"),
    );
    verifier.add_key(text(v, "kid"), key);
    verifier
}

#[test]
fn access_token_vector_verifies() {
    let v = load("access_token.json");
    let token = text(&v, "token");
    assert!(token.starts_with(&format!("{}.", text(&v, "signing_input"))));
    assert_eq!(decode_part(token, 0), v["header"]);
    assert_eq!(decode_part(token, 1), v["claims"]);
    assert_eq!(v["header"]["typ"], "at+jwt");
    assert_eq!(v["header"]["alg"], "EdDSA");
    assert_eq!(v["jwks"]["keys"][0]["kid"], v["kid"]);

    let t = verifier_from(&v)
        .verify(token, number(&v, "verify_at"))
        .expect("the checked-in token verifies");
    let m = &v["mint"];
    assert_eq!(t.sub(), text(m, "sub"));
    assert_eq!(t.instance(), text(m, "instance_spiffe"));
    assert_eq!(t.device(), text(m, "device_spiffe"));
    assert_eq!(t.agent(), text(m, "agent"));
    let scope: Vec<&str> = t.scope().iter().map(|g| g.as_str()).collect();
    let expected: Vec<&str> = m["scope"]
        .as_array()
        .expect("scope")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(scope, expected);
    assert_eq!(t.generation(), number(m, "generation"));
    assert_eq!(t.jkt(), text(m, "jkt"));
    assert_eq!(t.jti(), text(m, "jti"));
    assert_eq!(t.iat(), number(m, "now"));
    assert_eq!(t.exp(), number(m, "now") + number(m, "lifetime"));
    assert_eq!(t.kid(), text(&v, "kid"));

    // The bound instance key is the one in the attestation vector.
    let att = load("attestation_ed25519.json");
    assert_eq!(t.jkt(), text(&att, "instance_jkt"));
}

#[test]
fn access_token_negative_vectors_fail_as_recorded() {
    let verifier = verifier_from(&load("access_token.json"));
    let v = load("access_token_negative.json");
    let cases = v["cases"].as_array().expect("cases");
    assert!(cases.len() >= 10);
    for case in cases {
        let name = text(case, "name");
        let err = verifier
            .verify(text(case, "token"), number(case, "now"))
            .expect_err(name);
        assert_eq!(variant(&err), text(case, "expected_error"), "{name}: {err}");
    }
}

#[test]
fn fresh_mints_match_the_vector_signing_input() {
    // jwt-simple's hedged signatures differ per run; the signed part must not.
    let v = load("access_token.json");
    let fresh = gen_vectors::generate(&|_| None);
    let (_, fresh_token) = fresh
        .iter()
        .find(|(n, _)| *n == "access_token.json")
        .expect("generated");
    assert_eq!(fresh_token["signing_input"], v["signing_input"]);
    let token = text(fresh_token, "token");
    gen_vectors::vector_verifier()
        .verify(token, number(&v, "verify_at"))
        .expect("a freshly minted token verifies");
}

#[test]
fn caveat_vectors_verify() {
    use edgeward_core::caveat::{Caveat, ChainKey, Rights, UnverifiedChain};
    use edgeward_core::grant::GrantName;
    let v = load("caveats.json");
    let root: [u8; 32] = hex::decode(text(&v, "root_key_hex"))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let token = text(&v, "token");
    assert_eq!(
        URL_SAFE_NO_PAD.encode(ChainKey::derive(&root, token).expose()),
        text(&v, "chain_key")
    );
    // The token underneath is the access-token vector, and verifies as one.
    let verified = gen_vectors::vector_verifier()
        .verify(token, gen_vectors::NOW)
        .expect("the vector token verifies");
    let base = Rights::of_token(
        verified.scope(),
        verified.exp(),
        verified.jkt(),
        u32::try_from(number(&v, "max_depth")).expect("small"),
    );
    assert_eq!(gen_vectors::rights_json(&base), v["base_rights"]);
    let cases = v["cases"].as_array().expect("cases");
    assert!(cases.len() >= 9);
    for case in cases {
        let name = text(case, "name");
        let expected = &case["expected"];
        let outcome = UnverifiedChain::parse(text(case, "chain"))
            .and_then(|c| c.verify(&root))
            .and_then(|c| {
                assert_eq!(c.token(), token, "{name}");
                let caveats = c.caveats().to_vec();
                base.clone()
                    .attenuate(&caveats)
                    .map(|rights| (caveats, rights))
            });
        match (outcome, expected["error"].as_str()) {
            (Ok((caveats, rights)), None) => {
                assert_eq!(
                    gen_vectors::rights_json(&rights),
                    expected["rights"],
                    "{name}"
                );
                if let Some(err) = expected["narrows"].as_str() {
                    // What a runtime checks before starting the child.
                    let refused = caveats
                        .iter()
                        .find_map(|c| base.narrows(c).err())
                        .unwrap_or_else(|| panic!("{name}: a caveat should not narrow"));
                    assert_eq!(variant(&refused), err, "{name}");
                }
                // Rights never exceed the token's own.
                let any = GrantName::new("admin").expect("name");
                assert!(
                    rights
                        .allows(&any, "GET", "/v1/forecast", gen_vectors::NOW)
                        .is_err()
                );
                assert!(
                    rights.grants.iter().all(|g| base.grants.contains(g)),
                    "{name}"
                );
                assert!(rights.expires_at <= base.expires_at, "{name}");
            }
            (Err(e), Some(want)) => assert_eq!(variant(&e), want, "{name}"),
            (got, want) => panic!("{name}: expected {want:?}, got {got:?}"),
        }
    }
    // A caveat's canonical text is what the tag covers.
    assert!(Caveat::parse("grants:weather").is_ok());
}
