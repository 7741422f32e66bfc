//! `UnverifiedChain::parse` + `verify` on an untrusted attenuated token, and
//! the rights its caveats leave.
#![no_main]

use edgeward_core::caveat::{Rights, UnverifiedChain};
use libfuzzer_sys::fuzz_target;

const ROOT: [u8; 32] = [9; 32];

fuzz_target!(|data: &[u8]| {
    let Ok(wire) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(chain) = UnverifiedChain::parse(wire) else {
        return;
    };
    // Forged chains are refused; parsed caveats still go through the
    // rights arithmetic, which must never panic.
    let _ = chain.token();
    if let Ok(verified) = chain.verify(&ROOT) {
        let _ = Rights::of_token(&[], 0, "", 3).attenuate(verified.caveats());
    }
});
