//! `TokenVerifier::verify` on an untrusted access token, with one trusted key.
#![no_main]

use edgeward_fuzz::{NOW, TOKEN_VERIFIER};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let _ = TOKEN_VERIFIER.verify(token, NOW);
});
