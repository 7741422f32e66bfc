//! Component digests: the sha256 of a component's bytes, written `sha256:<hex>`.

use sha2::{Digest as _, Sha256};
use std::fmt;

/// A component's sha256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ComponentDigest([u8; 32]);

/// Why a digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// It does not start with `sha256:`.
    #[error("a component digest must start with \"sha256:\"")]
    MissingPrefix,
    /// The hex part is not 64 lower-case hex digits.
    #[error("a component digest must be \"sha256:\" followed by 64 lower-case hex digits")]
    BadHex,
}

impl ComponentDigest {
    /// Digest of these component bytes.
    pub fn of(bytes: &[u8]) -> ComponentDigest {
        ComponentDigest(Sha256::digest(bytes).into())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::str::FromStr for ComponentDigest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_part = s
            .strip_prefix("sha256:")
            .ok_or(DigestError::MissingPrefix)?;
        // Lower case only, so one digest has exactly one spelling in configs and logs.
        if hex_part.len() != 64
            || !hex_part
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(DigestError::BadHex);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| DigestError::BadHex)?;
        Ok(ComponentDigest(out))
    }
}

impl fmt::Display for ComponentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for ComponentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<'de> serde::Deserialize<'de> for ComponentDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_and_round_trip() {
        let d = ComponentDigest::of(b"abc");
        let s = d.to_string();
        assert_eq!(
            s,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(s.parse::<ComponentDigest>().unwrap(), d);
    }

    #[test]
    fn refuses_malformed() {
        assert_eq!(
            "ba78".parse::<ComponentDigest>(),
            Err(DigestError::MissingPrefix)
        );
        assert_eq!(
            "sha256:BA78".parse::<ComponentDigest>(),
            Err(DigestError::BadHex)
        );
        let upper = format!("sha256:{}", "A".repeat(64));
        assert_eq!(upper.parse::<ComponentDigest>(), Err(DigestError::BadHex));
    }
}
