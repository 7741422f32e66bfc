//! `Policy::from_toml` on untrusted TOML; a policy that parses must survive
//! the registry's round trip and decide calls without panicking.
#![no_main]

use edgeward_core::policy::{Call, KeyState, Policy, evaluate, record, static_decision};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::from_toml(text) else {
        return;
    };
    let stored = Policy::from_json(&policy.to_json()).expect("the registry form parses");
    assert_eq!(stored, policy, "the registry form round-trips");
    let mut state = KeyState::default();
    let calls = [
        ("weather", "GET", "/v1/forecast/oslo", None, 10),
        ("mail", "POST", "/", Some("user:corp/alice"), 1 << 20),
        ("paste", "PUT", "/a/b/c/d/e", None, 0),
    ];
    for (i, (grant, method, path, user, bytes)) in calls.iter().enumerate() {
        let call = Call {
            agent: "fuzz",
            grant,
            method,
            path,
            user: *user,
            bytes: *bytes,
        };
        let now = 1_767_225_600 + i as u64 * 7;
        let _ = static_decision(&[&policy], &call);
        let _ = evaluate(&[&policy], &mut state, &call, now);
        record(&[&policy], &mut state, &call, now);
        let _ = evaluate(&[&policy], &mut state, &call, u64::MAX);
    }
});
