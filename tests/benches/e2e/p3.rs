//! P3: token exchanges per second (challenge, attestation verification,
//! mint, registry reads, audit record) against the pure crypto cost of the
//! same work (one device-signature verify and one token signature),
//! measured in the same run. The device's own signing is not counted: it
//! happens on the device.

use crate::stats::Samples;
use base64::Engine as _;
use edgeward_backend::TokenService;
use edgeward_core::attest::{AttestationClaims, sign_attestation};
use edgeward_core::digest::ComponentDigest;
use edgeward_core::egress::{ATTESTATION_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT};
use edgeward_core::entropy::SeededEntropy;
use edgeward_core::keys::{Ed25519Signer, Signer};
use edgeward_core::token::{Mint, TokenIssuer};
use std::collections::HashMap;
use std::time::Instant;

pub struct Exchange {
    /// Challenge + exchange, per token.
    pub exchange: Samples,
    /// Signature verify + token sign, per token.
    pub crypto: Samples,
}

pub fn run(
    tokens: &TokenService,
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
    };
    for i in 0..n {
        // A fresh instance key each time: a first attestation, not a renewal.
        let instance = Ed25519Signer::generate(&mut entropy)?;

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
            iat: crate::setup::now(),
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
            now: crate::setup::now(),
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
