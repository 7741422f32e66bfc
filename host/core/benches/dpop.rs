//! What proof of possession adds to every proxied call, against the access
//! token check the backend does anyway (the baseline), side by side.
//!
//! `cargo bench -p edgeward-core --bench dpop`

use criterion::{Criterion, criterion_group, criterion_main};
use edgeward_core::dpop::{Expected, UnverifiedProof, create_proof};
use edgeward_core::entropy::SeededEntropy;
use edgeward_core::grant::GrantName;
use edgeward_core::keys::{Ed25519Signer, Signer as _};
use edgeward_core::token::{Mint, TokenIssuer, TokenVerifier};
use std::hint::black_box;

const NOW: u64 = 1_767_225_600;

fn bench(c: &mut Criterion) {
    let instance = Ed25519Signer::generate(&mut SeededEntropy::new(1)).expect("key");
    let jkt = instance.public_key().jwk_thumbprint();
    let issuer = TokenIssuer::new(&[7; 32], "https://b", "edgeward").expect("issuer");
    let mut verifier = TokenVerifier::new("https://b", "edgeward", 5);
    verifier.add_key(issuer.kid().to_owned(), issuer.public_key());
    let token = issuer
        .mint(&Mint {
            sub: "spiffe://t/agent/a/instance/i".into(),
            instance_spiffe: "spiffe://t/agent/a/instance/i".into(),
            device_spiffe: "spiffe://t/device/d".into(),
            agent: "a".into(),
            scope: vec![GrantName::new("api").expect("grant")],
            generation: 1,
            jkt: jkt.clone(),
            now: NOW,
            lifetime: 300,
            jti: "j".into(),
        })
        .expect("mint");
    let uri: http::Uri = "https://api.example/v1/forecast?city=Paris"
        .parse()
        .expect("uri");
    let method = http::Method::GET;
    let proof = create_proof(&instance, &method, &uri, &token, NOW, &[1; 16]).expect("proof");

    let mut g = c.benchmark_group("per-call");
    g.bench_function("baseline: access token verify", |b| {
        b.iter(|| verifier.verify(black_box(&token), NOW).expect("valid"))
    });
    g.bench_function("dpop: create proof (runtime)", |b| {
        b.iter(|| {
            create_proof(&instance, &method, &uri, black_box(&token), NOW, &[1; 16]).expect("proof")
        })
    });
    g.bench_function("dpop: parse + verify proof (backend)", |b| {
        b.iter(|| {
            UnverifiedProof::parse(black_box(&proof))
                .expect("parse")
                .verify(&Expected {
                    method: &method,
                    uri: &uri,
                    token: &token,
                    jkt: &jkt,
                    now: NOW,
                })
                .expect("valid")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
