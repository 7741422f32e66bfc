//! A cache of access tokens whose signature already verified.
//!
//! An instance presents the same token on every call until it renews it, so
//! checking the same Ed25519 signature again on each call (about 45 µs)
//! buys nothing: the token's bytes cannot change without changing its
//! cache key. What can change — revocation, the agent's generation, the
//! registry — is still checked on every call by the caller, and a cached
//! entry is used only strictly inside its `nbf`..`exp` window (at the edges
//! the full verification, with its clock tolerance, decides).

use edgeward_core::token::VerifiedToken;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// Most cached tokens. One per live instance is the working set; above
/// this, expired entries are dropped, and if that is not enough the cache
/// starts over (a miss only costs one verification).
const CAPACITY: usize = 16_384;

#[derive(Default)]
pub(crate) struct VerifiedCache {
    entries: Mutex<HashMap<[u8; 32], VerifiedToken>>,
}

impl VerifiedCache {
    /// The verified form of `token`, if it verified before and `now` is
    /// strictly inside its validity window.
    pub(crate) fn get(&self, token: &str, now: u64) -> Option<VerifiedToken> {
        let key = key(token);
        let entries = self.entries.lock().ok()?;
        entries
            .get(&key)
            .filter(|v| v.nbf() <= now && now < v.exp())
            .cloned()
    }

    /// Remember a token that just verified.
    pub(crate) fn insert(&self, token: &str, verified: &VerifiedToken, now: u64) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= CAPACITY {
            entries.retain(|_, v| now < v.exp());
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key(token), verified.clone());
    }

    /// Forget everything (the signing keys changed).
    pub(crate) fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}

fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeward_core::grant::GrantName;
    use edgeward_core::token::{Mint, TokenIssuer, TokenVerifier, spiffe_device, spiffe_instance};

    const NOW: u64 = 1_767_225_600;

    fn token(jti: &str) -> (String, VerifiedToken) {
        let issuer = TokenIssuer::new(&[3; 32], "https://b.test", "aud").unwrap();
        let mut verifier = TokenVerifier::new("https://b.test", "aud", 5);
        verifier.add_key(issuer.kid(), issuer.public_key());
        let instance = spiffe_instance("b.test", "a", "i1").unwrap();
        let token = issuer
            .mint(&Mint {
                sub: instance.clone(),
                instance_spiffe: instance,
                device_spiffe: spiffe_device("b.test", "d1").unwrap(),
                agent: "a".into(),
                scope: vec![GrantName::new("g").unwrap()],
                generation: 1,
                jkt: "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k".into(),
                now: NOW,
                lifetime: 60,
                jti: jti.into(),
            })
            .unwrap();
        let verified = verifier.verify(&token, NOW).unwrap();
        (token, verified)
    }

    #[test]
    fn hits_only_the_same_bytes_inside_the_window() {
        let cache = VerifiedCache::default();
        let (t, v) = token("00000000000000000000000000000001");
        assert_eq!(cache.get(&t, NOW), None);
        cache.insert(&t, &v, NOW);
        assert_eq!(cache.get(&t, NOW), Some(v.clone()));
        assert_eq!(cache.get(&t, NOW + 59), Some(v.clone()));
        // At and after exp, and before nbf, the full verification decides.
        assert_eq!(cache.get(&t, NOW + 60), None);
        assert_eq!(cache.get(&t, NOW - 1), None);
        // One byte different is another key.
        let mut other = t.clone();
        other.push('x');
        assert_eq!(cache.get(&other, NOW), None);
        cache.clear();
        assert_eq!(cache.get(&t, NOW), None);
    }

    #[test]
    fn stays_bounded() {
        let cache = VerifiedCache::default();
        let (_, v) = token("00000000000000000000000000000002");
        for i in 0..CAPACITY + 10 {
            cache.insert(&format!("token-{i}"), &v, NOW);
        }
        let len = cache.entries.lock().unwrap().len();
        assert!(len <= CAPACITY, "{len}");
    }
}
