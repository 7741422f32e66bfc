//! `UnverifiedProof::parse` on an untrusted DPoP proof, then `verify` against
//! a fixed request, token, key binding and clock.
#![no_main]

use edgeward_core::dpop::{Expected, UnverifiedProof};
use edgeward_fuzz::{DPOP_ACCESS_TOKEN, DPOP_REQUEST, INSTANCE_JKT, NOW};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(proof) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(unverified) = UnverifiedProof::parse(proof) {
        let (method, uri) = &*DPOP_REQUEST;
        let _ = unverified.verify(&Expected {
            method,
            uri,
            token: DPOP_ACCESS_TOKEN,
            jkt: &INSTANCE_JKT,
            now: NOW,
        });
    }
});
