//! `NonceIssuer::check` on an untrusted attestation challenge.
#![no_main]

use edgeward_fuzz::{NONCE_ISSUER, NOW};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(nonce) = std::str::from_utf8(data) else {
        return;
    };
    let _ = NONCE_ISSUER.check(nonce, NOW);
});
