//! P3: token exchanges per second (challenge, attestation verification,
//! mint, registry reads, audit record) against the pure crypto cost of the
//! same work (one device-signature verify and one token signature),
//! measured in the same run. The device's own signing is not counted: it
//! happens on the device.
//!
//! The backend runs on a test clock that moves 150 s (half the default
//! token lifetime) per exchange, so each instance renews about as often as
//! it would in the field and the registry holds a realistic number of live
//! tokens, not thousands minted within one second.

use crate::stats::Samples;
use base64::Engine as _;
use edgeward_backend::TokenService;
use edgeward_core::attest::{AttestationClaims, sign_attestation};
use edgeward_core::digest::ComponentDigest;
use edgeward_core::egress::{ATTESTATION_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT};
use edgeward_core::entropy::SeededEntropy;
use edgeward_core::keys::{Ed25519Signer, Signer};
use edgeward_core::token::{Mint, TokenIssuer};
use edgeward_tests::TestClock;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// Where the test clock starts.
pub const NOW: u64 = 1_767_225_600;

pub struct Exchange {
    /// Challenge + exchange, per token.
    pub exchange: Samples,
    /// Signature verify + token sign, per token.
    pub crypto: Samples,
    /// The exchange's own stages (`exchange.*` spans).
    pub stages: BTreeMap<&'static str, Samples>,
}

/// [`measure`], with the exchange's stage spans recorded.
pub fn run(
    tokens: &TokenService,
    clock: &TestClock,
    device_id: &str,
    device: &dyn Signer,
    digest: ComponentDigest,
    n: usize,
    seed: u64,
) -> anyhow::Result<Exchange> {
    let (out, stages) =
        crate::stages::record_sync(|| measure(tokens, clock, device_id, device, digest, n, seed));
    let mut out = out?;
    out.stages = stages;
    Ok(out)
}

fn measure(
    tokens: &TokenService,
    clock: &TestClock,
    device_id: &str,
    device: &dyn Signer,
    digest: ComponentDigest,
    n: usize,
    seed: u64,
) -> anyhow::Result<Exchange> {
    let mut entropy = SeededEntropy::new(seed);
    let issuer = TokenIssuer::new(&[9u8; 32], "https://backend.bench", "edgeward-bench")?;
    let mut out = Exchange {
        exchange: Samples::default(),
        crypto: Samples::default(),
        stages: BTreeMap::new(),
    };
    // Four instances (the default limit per device), attested in turn: the
    // exchange counts a device's live instances, and thousands of live
    // instances on one device is not a workload that exists.
    let instances = (0..4)
        .map(|_| Ed25519Signer::generate(&mut entropy))
        .collect::<Result<Vec<_>, _>>()?;
    for i in 0..n {
        let instance = &instances[i % instances.len()];
        clock.set(NOW + 150 * i as u64);

        let t = Instant::now();
        let nonce = tokens.challenge();
        let challenge = t.elapsed();
        let claims = AttestationClaims {
            nonce,
            device: device_id.to_owned(),
            agent: "bench".into(),
            digest,
            instance_key: instance.public_key(),
            grants: Vec::new(),
            lifetime: 0,
            iat: NOW + 150 * i as u64,
        };
        let jws = sign_attestation(&claims, device_id, device)?;
        let form: HashMap<String, String> = [
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("actor_token", &jws),
            ("actor_token_type", ATTESTATION_TOKEN_TYPE),
            ("subject_token", &jws),
            ("subject_token_type", ATTESTATION_TOKEN_TYPE),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let t = Instant::now();
        let minted = tokens.exchange(&form);
        out.exchange.push(challenge + t.elapsed());
        if let Err(e) = minted {
            anyhow::bail!("exchange {i} refused: {e:?}");
        }

        // The same signature checked and a token of the same shape signed,
        // with nothing around them.
        let (input, sig) = jws
            .rsplit_once('.')
            .ok_or_else(|| anyhow::anyhow!("not a JWS"))?;
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig)?;
        let key = device.public_key();
        let mint = Mint {
            sub: format!("spiffe://edgeward.bench/instance/{i}"),
            instance_spiffe: format!("spiffe://edgeward.bench/instance/{i}"),
            device_spiffe: format!("spiffe://edgeward.bench/device/{device_id}"),
            agent: "bench".into(),
            scope: vec![edgeward_core::grant::GrantName::new("api")?],
            generation: 1,
            jkt: instance.public_key().jwk_thumbprint(),
            now: NOW + 150 * i as u64,
            lifetime: 300,
            jti: format!("bench-{i:016x}"),
        };
        let t = Instant::now();
        key.verify(device.alg(), input.as_bytes(), &sig)?;
        issuer.mint(&mint)?;
        out.crypto.push(t.elapsed());
    }
    Ok(out)
}
