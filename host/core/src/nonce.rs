//! Attestation challenges: stateless nonces and the replay cache.
//!
//! 1. The backend hands out [`NonceIssuer::issue`]d nonces. A nonce is
//!    `base64url(boot_epoch || issued_at || salt || HMAC-SHA256(key,
//!    "edgeward-nonce-v1" || boot_epoch || issued_at || salt))` (numbers 8
//!    bytes big-endian, `salt` 16 random bytes), so issuing one writes
//!    nothing and an unauthenticated caller cannot fill any table by asking
//!    for challenges. The salt makes two challenges issued in the same second
//!    different: without it, two devices asking at once would get the same
//!    nonce and the second would be refused as a replay.
//! 2. The device signs the nonce into its attestation.
//! 3. After the attestation's signature verified, the backend calls
//!    [`NonceIssuer::check`] (authentic, this boot, fresh) and then
//!    [`ReplayCache::insert_if_new`] (never used before).
//!
//! The order in step 3 matters: a nonce is recorded as used only once a device
//! signature over it verified, so forged attestations cannot burn the nonces of
//! real devices.
//!
//! ```
//! use edgeward_core::nonce::{NonceIssuer, ReplayCache};
//! let issuer = NonceIssuer::new([7; 32], 1, 60);
//! let nonce = issuer.issue(1_000, [9; 16]);
//! // ... the attestation carrying `nonce` verified ...
//! let issued_at = issuer.check(&nonce, 1_010).unwrap();
//! let mut cache = ReplayCache::default();
//! assert!(cache.insert_if_new(&nonce, issuer.expires_at(issued_at), 1_010));
//! assert!(!cache.insert_if_new(&nonce, issuer.expires_at(issued_at), 1_011));
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::fmt;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

const DOMAIN: &[u8] = b"edgeward-nonce-v1";
const RAW_LEN: usize = 8 + 8 + SALT_LEN + 32;
/// Random bytes in each nonce.
pub const SALT_LEN: usize = 16;
/// Length of an encoded nonce: 64 bytes in unpadded base64url.
pub const NONCE_LEN: usize = 86;
/// How far in the future a nonce's issue time may be before it is refused.
/// A nonce is only ever issued by this backend, so this covers nothing but a
/// clock that stepped back a little between issue and check.
pub const FUTURE_TOLERANCE_SECS: u64 = 5;

/// Why a nonce was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NonceError {
    /// Not a nonce this backend could have issued: wrong length or encoding.
    #[error("the nonce is malformed")]
    Malformed,
    /// The MAC does not verify: forged, altered, or issued under another key.
    #[error("the nonce is not authentic")]
    BadMac,
    /// Authentic, but issued before the backend last restarted.
    #[error("the nonce was issued before the backend restarted")]
    OtherEpoch,
    /// Older than the maximum age.
    #[error("the nonce is stale ({age} s old)")]
    Stale {
        /// Seconds since it was issued.
        age: u64,
    },
    /// Issued later than now, beyond the small clock tolerance.
    #[error("the nonce was issued in the future")]
    FromFuture,
}

/// Issues and checks stateless nonces. Holds the HMAC key (wiped on drop).
pub struct NonceIssuer {
    key: Zeroizing<[u8; 32]>,
    boot_epoch: u64,
    max_age_secs: u64,
}

impl NonceIssuer {
    /// `key` authenticates nonces; `boot_epoch` is fresh at every start of the
    /// backend (random or a counter), so nonces from before a restart are
    /// refused; `max_age_secs` is how long a device has to use one.
    pub fn new(key: [u8; 32], boot_epoch: u64, max_age_secs: u64) -> NonceIssuer {
        NonceIssuer {
            key: Zeroizing::new(key),
            boot_epoch,
            max_age_secs,
        }
    }

    /// The maximum age in seconds.
    pub fn max_age_secs(&self) -> u64 {
        self.max_age_secs
    }

    fn mac(&self, epoch: &[u8; 8], issued_at: &[u8; 8], salt: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.key[..])
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(DOMAIN);
        mac.update(epoch);
        mac.update(issued_at);
        mac.update(salt);
        mac
    }

    /// A fresh nonce issued at `now`, made unique by `salt` (random bytes
    /// from the caller). Writes nothing.
    pub fn issue(&self, now: u64, salt: [u8; SALT_LEN]) -> String {
        let epoch = self.boot_epoch.to_be_bytes();
        let issued_at = now.to_be_bytes();
        let tag = self.mac(&epoch, &issued_at, &salt).finalize().into_bytes();
        let mut raw = [0u8; RAW_LEN];
        raw[..8].copy_from_slice(&epoch);
        raw[8..16].copy_from_slice(&issued_at);
        raw[16..16 + SALT_LEN].copy_from_slice(&salt);
        raw[16 + SALT_LEN..].copy_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Check a nonce at `now`; on success, the time it was issued.
    ///
    /// The MAC is checked first (in constant time), so nothing about an
    /// unauthenticated nonce is interpreted.
    pub fn check(&self, nonce: &str, now: u64) -> Result<u64, NonceError> {
        if nonce.len() != NONCE_LEN {
            return Err(NonceError::Malformed);
        }
        let mut raw = [0u8; RAW_LEN];
        match URL_SAFE_NO_PAD.decode_slice(nonce, &mut raw) {
            Ok(RAW_LEN) => {}
            _ => return Err(NonceError::Malformed),
        }
        let mut epoch = [0u8; 8];
        epoch.copy_from_slice(&raw[..8]);
        let mut issued = [0u8; 8];
        issued.copy_from_slice(&raw[8..16]);
        self.mac(&epoch, &issued, &raw[16..16 + SALT_LEN])
            .verify_slice(&raw[16 + SALT_LEN..])
            .map_err(|_| NonceError::BadMac)?;
        if u64::from_be_bytes(epoch) != self.boot_epoch {
            return Err(NonceError::OtherEpoch);
        }
        let issued_at = u64::from_be_bytes(issued);
        if issued_at > now.saturating_add(FUTURE_TOLERANCE_SECS) {
            return Err(NonceError::FromFuture);
        }
        let age = now.saturating_sub(issued_at);
        if age > self.max_age_secs {
            return Err(NonceError::Stale { age });
        }
        Ok(issued_at)
    }

    /// The first second at which a nonce issued at `issued_at` can no longer
    /// pass [`NonceIssuer::check`]: how long a [`ReplayCache`] must remember it.
    pub fn expires_at(&self, issued_at: u64) -> u64 {
        issued_at
            .saturating_add(self.max_age_secs)
            .saturating_add(1)
    }
}

impl fmt::Debug for NonceIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceIssuer")
            .field("boot_epoch", &self.boot_epoch)
            .field("max_age_secs", &self.max_age_secs)
            .finish_non_exhaustive()
    }
}

/// Nonces already used, each until it could no longer pass a check anyway.
///
/// Pure data: the backend holds it behind a mutex. Insert a nonce **only
/// after** the attestation that carries it verified; otherwise anyone could
/// burn a real device's challenge with a forged attestation.
///
/// Memory is bounded by (verified attestations per second) x (nonce max age):
/// only enrolled devices can add entries, and every entry expires.
#[derive(Debug, Default, Clone)]
pub struct ReplayCache {
    seen: HashMap<String, u64>,
    last_prune: u64,
}

impl ReplayCache {
    /// An empty cache.
    pub fn new() -> ReplayCache {
        ReplayCache::default()
    }

    /// Record `nonce` as used until `expires_at`. Returns `false` if it was
    /// already recorded and has not expired (a replay), `true` if it is new.
    pub fn insert_if_new(&mut self, nonce: &str, expires_at: u64, now: u64) -> bool {
        // Prune at most once per second: a full sweep per insert would make a
        // burst of exchanges quadratic.
        if now > self.last_prune {
            self.seen.retain(|_, exp| *exp > now);
            self.last_prune = now;
        }
        if self.seen.get(nonce).is_some_and(|exp| *exp > now) {
            return false;
        }
        self.seen.insert(nonce.to_owned(), expires_at);
        true
    }

    /// Entries currently held (expired ones may linger until the next prune).
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_767_225_600;

    const SALT: [u8; SALT_LEN] = [5; SALT_LEN];

    fn issuer() -> NonceIssuer {
        NonceIssuer::new([42; 32], 9, 60)
    }

    #[test]
    fn issued_nonces_check_and_are_pinned() {
        let i = issuer();
        let n = i.issue(NOW, SALT);
        assert_eq!(n.len(), NONCE_LEN);
        assert_eq!(i.check(&n, NOW), Ok(NOW));
        assert_eq!(i.check(&n, NOW + 60), Ok(NOW));
        // Same inputs, same nonce: issuing is a pure function; the salt makes
        // two nonces of the same second differ.
        assert_eq!(n, i.issue(NOW, SALT));
        assert_ne!(n, i.issue(NOW + 1, SALT));
        assert_ne!(n, i.issue(NOW, [6; SALT_LEN]));
    }

    #[test]
    fn refusals_are_precise() {
        let i = issuer();
        let n = i.issue(NOW, SALT);
        assert_eq!(i.check(&n, NOW + 61), Err(NonceError::Stale { age: 61 }));
        assert_eq!(i.check(&n, NOW - 5), Ok(NOW));
        assert_eq!(i.check(&n, NOW - 6), Err(NonceError::FromFuture));

        let restarted = NonceIssuer::new([42; 32], 10, 60);
        assert_eq!(restarted.check(&n, NOW), Err(NonceError::OtherEpoch));
        let rekeyed = NonceIssuer::new([43; 32], 9, 60);
        assert_eq!(rekeyed.check(&n, NOW), Err(NonceError::BadMac));

        // Flip one bit of the issue time: the MAC no longer matches.
        let mut raw = URL_SAFE_NO_PAD.decode(&n).unwrap();
        raw[15] ^= 1;
        let altered = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(i.check(&altered, NOW), Err(NonceError::BadMac));

        assert_eq!(i.check("", NOW), Err(NonceError::Malformed));
        assert_eq!(i.check(&n[..63], NOW), Err(NonceError::Malformed));
        let bad_char = format!("{}+", &n[..63]);
        assert_eq!(i.check(&bad_char, NOW), Err(NonceError::Malformed));
        // Same length, non-canonical last character (trailing bits set).
        let mut chars: Vec<char> = n.chars().collect();
        let last = NONCE_LEN - 1;
        chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
        let wrong_tail: String = chars.into_iter().collect();
        assert_ne!(i.check(&wrong_tail, NOW), Ok(NOW));
    }

    #[test]
    fn replay_cache_refuses_reuse_until_expiry_and_prunes() {
        let i = issuer();
        let a = i.issue(NOW, SALT);
        let b = i.issue(NOW + 1, SALT);
        let mut c = ReplayCache::new();
        assert!(c.insert_if_new(&a, i.expires_at(NOW), NOW));
        assert!(!c.insert_if_new(&a, i.expires_at(NOW), NOW + 30));
        assert!(c.insert_if_new(&b, i.expires_at(NOW + 1), NOW + 30));
        assert_eq!(c.len(), 2);
        // Once expired, `a` is pruned; it could not pass `check` any more anyway.
        assert_eq!(
            i.check(&a, i.expires_at(NOW)),
            Err(NonceError::Stale { age: 61 })
        );
        assert!(c.insert_if_new("x", NOW + 100, i.expires_at(NOW)));
        assert_eq!(c.len(), 2);
        assert!(!c.is_empty());
    }

    #[test]
    fn debug_hides_the_key() {
        let shown = format!("{:?}", issuer());
        assert!(!shown.contains("42"), "{shown}");
    }
}
