//! `UnverifiedAttestation::parse` on untrusted text, then `verify` with the
//! fixed device key.
#![no_main]

use edgeward_core::attest::UnverifiedAttestation;
use edgeward_fuzz::DEVICE_KEY;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(jws) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(unverified) = UnverifiedAttestation::parse(jws) {
        let _ = unverified.device_id();
        let _ = unverified.verify(&DEVICE_KEY);
    }
});
