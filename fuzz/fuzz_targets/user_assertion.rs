//! `verify_assertion` on an untrusted user assertion (the exchange's
//! `subject_token`).
#![no_main]

use edgeward_core::user::{UserIssuer, verify_assertion};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static ISSUERS: LazyLock<Vec<UserIssuer>> = LazyLock::new(|| {
    let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
    vec![UserIssuer {
        name: "corp".into(),
        issuer: "https://idp.test".into(),
        audience: "edgeward".into(),
        keys: UserIssuer::keys_from_jwks(jwks).unwrap_or_default(),
        max_lifetime: 3600,
        agents: vec!["hello".into()],
    }]
});

fuzz_target!(|data: &[u8]| {
    let Ok(jwt) = std::str::from_utf8(data) else {
        return;
    };
    let _ = verify_assertion(jwt, &ISSUERS, 1_767_225_600, 5);
});
