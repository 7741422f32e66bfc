//! Fixed keys and expectations shared by the fuzz targets and by
//! `examples/seed.rs`, which signs the valid seed inputs with the same keys, so
//! a seed is accepted by exactly the target that replays it.
//!
//! Everything is derived from fixed seeds: the targets are deterministic, and a
//! crash reproduces from its input alone. Built once per process (`LazyLock`):
//! key generation and pattern compilation are not what is being fuzzed.
#![forbid(unsafe_code)]

use edgeward_core::entropy::SeededEntropy;
use edgeward_core::keys::{Ed25519Signer, PublicKey, Signer};
use edgeward_core::nonce::NonceIssuer;
use edgeward_core::redact::Redactor;
use edgeward_core::scan::{Action, Rule, Scanner, ScannerConfig};
use edgeward_core::token::{TokenIssuer, TokenVerifier};
use std::sync::LazyLock;

/// "Now" for every time-dependent check: 2026-01-01T00:00:00Z, the clock of
/// `host/core/tests/vectors`.
pub const NOW: u64 = 1_767_225_600;

/// `iss` and `aud` of access tokens, as in `host/core/tests/vectors`.
pub const TOKEN_ISSUER: &str = "https://backend.edgeward.test";
/// See [`TOKEN_ISSUER`].
pub const TOKEN_AUDIENCE: &str = "edgeward-egress";
/// The clock tolerance the backend uses.
pub const TOKEN_TOLERANCE_SECS: u64 = 5;
/// Seed of the token signing key.
pub const TOKEN_SEED: [u8; 32] = [7; 32];

/// The request a DPoP proof must be for.
pub const DPOP_METHOD: &str = "POST";
/// See [`DPOP_METHOD`].
pub const DPOP_URI: &str = "https://backend.edgeward.test/v1/egress";
/// The access token the proof's `ath` must hash.
pub const DPOP_ACCESS_TOKEN: &str = "edgeward-fuzz-access-token";

/// The live credential the scanner must never let through.
pub const LIVE_SECRET: &[u8] = b"edgeward-fuzz-live-secret-0001";

/// The device key attestations are verified with. The same seed as
/// `host/core/tests/vectors/attestation_ed25519.json`, so that vector's `jws`
/// verifies here.
pub fn device_signer() -> Ed25519Signer {
    Ed25519Signer::generate(&mut SeededEntropy::new(1)).expect("a seeded key")
}

/// The instance key DPoP proofs are bound to (`cnf.jkt`).
pub fn instance_signer() -> Ed25519Signer {
    Ed25519Signer::generate(&mut SeededEntropy::new(3)).expect("a seeded key")
}

/// The token issuer whose key [`TOKEN_VERIFIER`] trusts.
pub fn token_issuer() -> TokenIssuer {
    TokenIssuer::new(&TOKEN_SEED, TOKEN_ISSUER, TOKEN_AUDIENCE).expect("a seeded key")
}

/// The nonce issuer (key, boot epoch 1, 60 s maximum age).
pub fn nonce_issuer() -> NonceIssuer {
    NonceIssuer::new([9; 32], 1, 60)
}

/// Public half of [`device_signer`].
pub static DEVICE_KEY: LazyLock<PublicKey> = LazyLock::new(|| device_signer().public_key());

/// A verifier holding the one key of [`token_issuer`].
pub static TOKEN_VERIFIER: LazyLock<TokenVerifier> = LazyLock::new(|| {
    let issuer = token_issuer();
    let mut verifier = TokenVerifier::new(TOKEN_ISSUER, TOKEN_AUDIENCE, TOKEN_TOLERANCE_SECS);
    verifier.add_key(issuer.kid(), issuer.public_key());
    verifier
});

/// Thumbprint of [`instance_signer`]'s key: the `cnf.jkt` proofs must match.
pub static INSTANCE_JKT: LazyLock<String> =
    LazyLock::new(|| instance_signer().public_key().jwk_thumbprint());

/// See [`nonce_issuer`].
pub static NONCE_ISSUER: LazyLock<NonceIssuer> = LazyLock::new(nonce_issuer);

/// The default configuration (redact known formats and live credentials,
/// audit high entropy), with PEM keys blocking, so all three actions run.
pub static SCANNER: LazyLock<Scanner> = LazyLock::new(|| {
    let live = Redactor::new([LIVE_SECRET]).expect("a valid live secret");
    let config = ScannerConfig::default().with_action(Rule::PemPrivateKey, Action::Block);
    Scanner::new(config, live).expect("the built-in patterns compile")
});

/// [`DPOP_METHOD`] and [`DPOP_URI`], parsed.
pub static DPOP_REQUEST: LazyLock<(http::Method, http::Uri)> = LazyLock::new(|| {
    (
        DPOP_METHOD.parse().expect("a valid method"),
        DPOP_URI.parse().expect("a valid URI"),
    )
});
