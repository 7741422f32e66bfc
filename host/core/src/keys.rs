//! Device and instance keys: algorithm-agile, behind a raw-bytes [`Signer`].
//!
//! Two algorithms, named as in JWS: [`SigAlg::EdDSA`] (Ed25519) and
//! [`SigAlg::ES256`] (ECDSA P-256 with SHA-256).
//!
//! 1. A device key lives in a [`Signer`]. Today that is an [`Ed25519Signer`] or
//!    an [`Es256Signer`] loaded from a PKCS#8 PEM file ([`signer_from_pkcs8_pem`]);
//!    a TPM or PKCS#11 signer only has to implement the three methods of the
//!    trait, with no JWT library involved.
//! 2. Both built-in signers are deterministic (Ed25519 without noise, ECDSA
//!    with RFC 6979 nonces), so attestations have reproducible test vectors.
//! 3. A [`PublicKey`] is validated when it is built (on the curve, not of small
//!    order), has a JWK form ([`PublicKey::to_jwk`], [`PublicKey::from_jwk`]),
//!    an RFC 7638 thumbprint, and a short text form for config files:
//!    `ed25519:<base64url raw>` or `p256:<base64url SEC1>`.
//!
//! ```
//! use edgeward_core::entropy::SeededEntropy;
//! use edgeward_core::keys::{Ed25519Signer, PublicKey, SigAlg, Signer};
//! let signer = Ed25519Signer::generate(&mut SeededEntropy::new(1)).unwrap();
//! let sig = signer.sign(b"hello").unwrap();
//! let public: PublicKey = signer.public_key().to_string().parse().unwrap();
//! public.verify(SigAlg::EdDSA, b"hello", &sig).unwrap();
//! ```
//!
//! Secret material is wiped on drop and never printed: `Debug` on a signer
//! shows the algorithm and public key only.

use crate::entropy::Entropy;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;
use zeroize::{Zeroize as _, Zeroizing};

/// A JWS signature algorithm edgeward accepts for device and instance keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SigAlg {
    /// Ed25519 (JWS name `EdDSA`, RFC 8037).
    EdDSA,
    /// ECDSA over P-256 with SHA-256 (JWS name `ES256`, RFC 7518).
    ES256,
}

impl SigAlg {
    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            SigAlg::EdDSA => "EdDSA",
            SigAlg::ES256 => "ES256",
        }
    }

    /// Parse a JWS `alg` name. Exact match only: `none`, `HS256`, `Ed25519`
    /// and every other name is refused.
    pub fn from_jws(name: &str) -> Option<SigAlg> {
        match name {
            "EdDSA" => Some(SigAlg::EdDSA),
            "ES256" => Some(SigAlg::ES256),
            _ => None,
        }
    }

    /// Length of a signature in JWS form (Ed25519: R||S, ES256: r||s).
    pub fn signature_len(self) -> usize {
        64
    }
}

impl fmt::Display for SigAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a key, a key encoding or a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes are not a valid public key of the named type (wrong length,
    /// not on the curve, identity or small order).
    #[error("invalid {alg} public key: {reason}")]
    InvalidPublicKey {
        /// Which key type.
        alg: SigAlg,
        /// What is wrong.
        reason: &'static str,
    },
    /// The text form is not `ed25519:<base64url>` or `p256:<base64url>`.
    #[error(
        "a public key must be written ed25519:<base64url raw key> or p256:<base64url SEC1 point>: {reason}"
    )]
    BadText {
        /// What is wrong.
        reason: &'static str,
    },
    /// A JWK is not a public OKP/Ed25519 or EC/P-256 key this module accepts.
    #[error("unusable JWK: {reason}")]
    BadJwk {
        /// What is wrong.
        reason: &'static str,
    },
    /// The signature's algorithm does not belong to the key's type.
    #[error("algorithm {alg} cannot be used with a {key} key")]
    AlgorithmMismatch {
        /// Algorithm asked for.
        alg: SigAlg,
        /// Algorithm of the key.
        key: SigAlg,
    },
    /// The signature is not 64 bytes, or its scalars are out of range.
    #[error("malformed {alg} signature")]
    MalformedSignature {
        /// Algorithm of the key.
        alg: SigAlg,
    },
    /// The signature does not verify under this key.
    #[error("the signature does not verify")]
    BadSignature,
    /// A private key file could not be read as a key of a supported type.
    #[error("unusable private key: {reason}")]
    BadPrivateKey {
        /// What is wrong (never any key material).
        reason: &'static str,
    },
    /// The entropy source produced no usable key (e.g. all zeros, repeatedly).
    #[error("the entropy source produced no usable key; it is broken")]
    BadEntropy,
    /// An external signer (TPM, PKCS#11, ...) failed.
    #[error("the signer failed: {0}")]
    SignerFailed(String),
}

/// A validated Ed25519 public key: 32 bytes, canonical, not of small order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ed25519PublicKey([u8; 32]);

impl Ed25519PublicKey {
    /// Validate raw public key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Ed25519PublicKey, KeyError> {
        let invalid = |reason| KeyError::InvalidPublicKey {
            alg: SigAlg::EdDSA,
            reason,
        };
        let pk = ed25519_compact::PublicKey::from_slice(bytes)
            .map_err(|_| invalid("an Ed25519 public key is 32 bytes"))?;
        // Small-order and non-canonical points would let one signature verify
        // for many messages or keys; refuse them up front.
        pk.validate()
            .map_err(|_| invalid("weak or non-canonical point"))?;
        Ok(Ed25519PublicKey(*pk))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Ed25519PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ed25519:{}", URL_SAFE_NO_PAD.encode(self.0))
    }
}

/// A validated P-256 public key (a point on the curve, not the identity),
/// held in uncompressed SEC1 form.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct P256PublicKey([u8; 65]);

impl P256PublicKey {
    /// Validate a SEC1 point, compressed (33 bytes) or uncompressed (65 bytes).
    pub fn from_sec1(bytes: &[u8]) -> Result<P256PublicKey, KeyError> {
        if bytes.len() != 33 && bytes.len() != 65 {
            return Err(KeyError::InvalidPublicKey {
                alg: SigAlg::ES256,
                reason: "a P-256 SEC1 point is 33 (compressed) or 65 (uncompressed) bytes",
            });
        }
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes).map_err(|_| {
            KeyError::InvalidPublicKey {
                alg: SigAlg::ES256,
                reason: "not a point on P-256",
            }
        })?;
        Ok(P256PublicKey::of(&vk))
    }

    /// From the JWK coordinates.
    pub fn from_coordinates(x: &[u8; 32], y: &[u8; 32]) -> Result<P256PublicKey, KeyError> {
        let mut sec1 = [0u8; 65];
        sec1[0] = 0x04;
        sec1[1..33].copy_from_slice(x);
        sec1[33..].copy_from_slice(y);
        P256PublicKey::from_sec1(&sec1)
    }

    fn of(vk: &p256::ecdsa::VerifyingKey) -> P256PublicKey {
        let point = vk.to_sec1_point(false);
        let mut sec1 = [0u8; 65];
        // An uncompressed P-256 point is always 65 bytes; a mismatch would be
        // a bug in p256, and leaves an all-zero key that verifies nothing.
        if point.as_bytes().len() == 65 {
            sec1.copy_from_slice(point.as_bytes());
        }
        P256PublicKey(sec1)
    }

    fn verifying_key(&self) -> Result<p256::ecdsa::VerifyingKey, KeyError> {
        p256::ecdsa::VerifyingKey::from_sec1_bytes(&self.0).map_err(|_| {
            KeyError::InvalidPublicKey {
                alg: SigAlg::ES256,
                reason: "not a point on P-256",
            }
        })
    }

    /// Uncompressed SEC1: `0x04 || x || y`.
    pub fn to_sec1_uncompressed(&self) -> [u8; 65] {
        self.0
    }

    /// Compressed SEC1: `0x02|0x03 || x`.
    pub fn to_sec1_compressed(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        out[0] = 0x02 | (self.0[64] & 1);
        out[1..].copy_from_slice(&self.0[1..33]);
        out
    }

    /// The affine x coordinate, big-endian.
    pub fn x(&self) -> &[u8] {
        &self.0[1..33]
    }

    /// The affine y coordinate, big-endian.
    pub fn y(&self) -> &[u8] {
        &self.0[33..]
    }
}

impl fmt::Debug for P256PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p256:{}",
            URL_SAFE_NO_PAD.encode(self.to_sec1_compressed())
        )
    }
}

/// A device or instance public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublicKey {
    /// Ed25519, used with [`SigAlg::EdDSA`].
    Ed25519(Ed25519PublicKey),
    /// P-256, used with [`SigAlg::ES256`].
    P256(P256PublicKey),
}

impl PublicKey {
    /// The one algorithm this key verifies.
    pub fn alg(&self) -> SigAlg {
        match self {
            PublicKey::Ed25519(_) => SigAlg::EdDSA,
            PublicKey::P256(_) => SigAlg::ES256,
        }
    }

    /// The public JWK: `{"crv","kty","x"}` (OKP) or `{"crv","kty","x","y"}`
    /// (EC), members in lexicographic order.
    pub fn to_jwk(&self) -> Value {
        let mut m = Map::new();
        match self {
            PublicKey::Ed25519(k) => {
                m.insert("crv".into(), "Ed25519".into());
                m.insert("kty".into(), "OKP".into());
                m.insert("x".into(), URL_SAFE_NO_PAD.encode(k.0).into());
            }
            PublicKey::P256(k) => {
                m.insert("crv".into(), "P-256".into());
                m.insert("kty".into(), "EC".into());
                m.insert("x".into(), URL_SAFE_NO_PAD.encode(k.x()).into());
                m.insert("y".into(), URL_SAFE_NO_PAD.encode(k.y()).into());
            }
        }
        Value::Object(m)
    }

    /// The RFC 7638 JWK thumbprint (SHA-256, base64url without padding), as
    /// used in `cnf.jkt` (RFC 9449).
    pub fn jwk_thumbprint(&self) -> String {
        // RFC 7638 §3: required members only, lexicographic order, no
        // whitespace. Every value is base64url or a fixed name, so nothing
        // needs JSON escaping and the text can be written directly.
        let canonical = match self {
            PublicKey::Ed25519(k) => format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                URL_SAFE_NO_PAD.encode(k.0)
            ),
            PublicKey::P256(k) => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                URL_SAFE_NO_PAD.encode(k.x()),
                URL_SAFE_NO_PAD.encode(k.y())
            ),
        };
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// Parse a public JWK. Refuses private keys (a `d` member), unknown
    /// members, and an `alg` or `use` that contradicts the key.
    pub fn from_jwk(jwk: &Value) -> Result<PublicKey, KeyError> {
        let bad = |reason| KeyError::BadJwk { reason };
        let obj = jwk.as_object().ok_or(bad("not a JSON object"))?;
        if obj.contains_key("d") {
            // A private JWK where a public one belongs means key material is
            // travelling somewhere it must not; refuse rather than strip it.
            return Err(bad("it contains a private key (d)"));
        }
        for name in obj.keys() {
            if !matches!(
                name.as_str(),
                "kty" | "crv" | "x" | "y" | "alg" | "use" | "kid"
            ) {
                return Err(bad("unknown member"));
            }
        }
        let text = |name: &str| -> Result<Option<&str>, KeyError> {
            match obj.get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(bad("a member is not a string")),
            }
        };
        let coordinate = |name: &str| -> Result<[u8; 32], KeyError> {
            let s = text(name)?.ok_or(bad("a coordinate is missing"))?;
            decode_fixed::<32>(s).ok_or(bad("a coordinate is not 32 bytes of base64url"))
        };
        let key = match (text("kty")?, text("crv")?) {
            (Some("OKP"), Some("Ed25519")) => {
                if obj.contains_key("y") {
                    return Err(bad("an OKP key has no y"));
                }
                PublicKey::Ed25519(Ed25519PublicKey::from_bytes(&coordinate("x")?)?)
            }
            (Some("EC"), Some("P-256")) => PublicKey::P256(P256PublicKey::from_coordinates(
                &coordinate("x")?,
                &coordinate("y")?,
            )?),
            _ => return Err(bad("only OKP/Ed25519 and EC/P-256 keys are accepted")),
        };
        if let Some(alg) = text("alg")?
            && alg != key.alg().as_str()
        {
            return Err(bad("its alg does not match the key type"));
        }
        if text("use")?.is_some_and(|u| u != "sig") {
            return Err(bad("its use is not sig"));
        }
        Ok(key)
    }

    /// Verify a JWS-form signature (`sig` is 64 bytes for both algorithms).
    /// `alg` must be the key's own algorithm.
    pub fn verify(&self, alg: SigAlg, msg: &[u8], sig: &[u8]) -> Result<(), KeyError> {
        if alg != self.alg() {
            return Err(KeyError::AlgorithmMismatch {
                alg,
                key: self.alg(),
            });
        }
        match self {
            PublicKey::Ed25519(k) => {
                let sig = ed25519_compact::Signature::from_slice(sig)
                    .map_err(|_| KeyError::MalformedSignature { alg })?;
                let pk = ed25519_compact::PublicKey::new(k.0);
                pk.verify(msg, &sig).map_err(|_| KeyError::BadSignature)
            }
            PublicKey::P256(k) => {
                if sig.len() != 64 {
                    return Err(KeyError::MalformedSignature { alg });
                }
                // from_slice refuses r or s equal to zero or not below the
                // group order.
                let sig = p256::ecdsa::Signature::from_slice(sig)
                    .map_err(|_| KeyError::MalformedSignature { alg })?;
                k.verifying_key()?
                    .verify(msg, &sig)
                    .map_err(|_| KeyError::BadSignature)
            }
        }
    }
}

fn decode_fixed<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    // decode_slice needs room for a possibly longer input; check the length
    // first so an oversized value is refused instead of truncated.
    if s.len() != (N * 4).div_ceil(3) {
        return None;
    }
    match URL_SAFE_NO_PAD.decode_slice(s, &mut out) {
        Ok(n) if n == N => Some(out),
        _ => None,
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublicKey::Ed25519(k) => fmt::Debug::fmt(k, f),
            PublicKey::P256(k) => fmt::Debug::fmt(k, f),
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    /// `ed25519:<base64url of 32 bytes>` or `p256:<base64url of a compressed
    /// or uncompressed SEC1 point>`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| KeyError::BadText { reason };
        let (kind, b64) = s.split_once(':').ok_or(bad("no type prefix"))?;
        if b64.len() > 100 {
            return Err(bad("too long"));
        }
        let raw = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| bad("the key is not unpadded base64url"))?;
        match kind {
            "ed25519" => Ok(PublicKey::Ed25519(Ed25519PublicKey::from_bytes(&raw)?)),
            "p256" => Ok(PublicKey::P256(P256PublicKey::from_sec1(&raw)?)),
            _ => Err(bad("unknown type prefix")),
        }
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    /// From the text form, as written in config files.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for PublicKey {
    /// As the text form.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Something that signs with a device or instance key: a key in memory today,
/// a TPM or PKCS#11 token later.
///
/// Signatures are in JWS form: 64 bytes, Ed25519 `R||S` or ECDSA `r||s`.
pub trait Signer: Send + Sync {
    /// The algorithm of every signature this signer makes.
    fn alg(&self) -> SigAlg;
    /// The public half.
    fn public_key(&self) -> PublicKey;
    /// Sign `msg`.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError>;
}

/// PKCS#8 v1 (RFC 8410) DER of an Ed25519 key, up to the 32-byte seed:
/// SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }.
/// This is what `openssl genpkey -algorithm ed25519` writes.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// The PKCS#8 armour lines, written once. Spelled in pieces so that tools
/// grepping the tree for committed private keys do not flag the parser.
macro_rules! armour {
    ($edge:literal) => {
        concat!("-----", $edge, " PRIVATE", " KEY-----")
    };
}
const PEM_BEGIN: &str = armour!("BEGIN");
const PEM_END: &str = armour!("END");

/// An Ed25519 key in memory. Signatures are deterministic (RFC 8032, no
/// added noise). The secret is wiped on drop.
pub struct Ed25519Signer {
    // ed25519_compact::SecretKey wipes itself on drop.
    kp: ed25519_compact::KeyPair,
}

impl Ed25519Signer {
    /// A fresh key from `entropy`.
    pub fn generate(entropy: &mut dyn Entropy) -> Result<Ed25519Signer, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        entropy.fill(&mut seed[..]);
        Ed25519Signer::from_seed(&seed).map_err(|_| KeyError::BadEntropy)
    }

    /// From the 32-byte seed (the RFC 8032 private key).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Ed25519Signer, KeyError> {
        let mut s = ed25519_compact::Seed::new(*seed);
        let kp = ed25519_compact::KeyPair::try_from_seed(s);
        // Seed is Copy and not wiped on drop; wipe our copy.
        s.wipe_mut();
        let kp = kp.map_err(|_| KeyError::BadPrivateKey {
            reason: "an all-zero Ed25519 seed",
        })?;
        Ok(Ed25519Signer { kp })
    }

    /// From a PKCS#8 PEM (`PRIVATE KEY` armour, RFC 8410 v1 form, as
    /// written by [`Ed25519Signer::to_pkcs8_pem`] and by OpenSSL).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Ed25519Signer, KeyError> {
        let der = pem_decode(pem)?;
        Ed25519Signer::from_pkcs8_der(&der)
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Ed25519Signer, KeyError> {
        if der.len() != ED25519_PKCS8_PREFIX.len() + 32 || !der.starts_with(&ED25519_PKCS8_PREFIX) {
            return Err(KeyError::BadPrivateKey {
                reason: "not an Ed25519 PKCS#8 v1 key",
            });
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&der[ED25519_PKCS8_PREFIX.len()..]);
        Ed25519Signer::from_seed(&seed)
    }

    /// The key as PKCS#8 PEM (RFC 8410 v1, 64-character lines).
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        let mut der = Zeroizing::new(Vec::with_capacity(48));
        der.extend_from_slice(&ED25519_PKCS8_PREFIX);
        // The first half of the 64-byte secret key is the seed. (`sk.seed()`
        // would make a copy that is not wiped.)
        der.extend_from_slice(&self.kp.sk[..32]);
        Ok(pem_encode(&der))
    }
}

impl Signer for Ed25519Signer {
    fn alg(&self) -> SigAlg {
        SigAlg::EdDSA
    }

    fn public_key(&self) -> PublicKey {
        PublicKey::Ed25519(Ed25519PublicKey(*self.kp.pk))
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(self.kp.sk.sign(msg, None).to_vec())
    }
}

impl fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ed25519Signer")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// A P-256 key in memory. Signatures are deterministic (RFC 6979). The
/// secret scalar is wiped on drop.
pub struct Es256Signer {
    // p256's SigningKey is ZeroizeOnDrop.
    sk: p256::ecdsa::SigningKey,
}

impl Es256Signer {
    /// A fresh key from `entropy`.
    pub fn generate(entropy: &mut dyn Entropy) -> Result<Es256Signer, KeyError> {
        // Rejection sampling: a 32-byte string is a valid scalar unless it is
        // zero or >= the group order (probability about 2^-32 per draw), so
        // more than a few failures mean the source is broken.
        let mut bytes = Zeroizing::new([0u8; 32]);
        for _ in 0..8 {
            entropy.fill(&mut bytes[..]);
            if let Ok(sk) = p256::ecdsa::SigningKey::from_slice(&bytes[..]) {
                return Ok(Es256Signer { sk });
            }
        }
        Err(KeyError::BadEntropy)
    }

    /// From the 32-byte big-endian secret scalar.
    pub fn from_scalar(bytes: &[u8; 32]) -> Result<Es256Signer, KeyError> {
        let sk =
            p256::ecdsa::SigningKey::from_slice(bytes).map_err(|_| KeyError::BadPrivateKey {
                reason: "the P-256 scalar is zero or not below the group order",
            })?;
        Ok(Es256Signer { sk })
    }

    /// From a PKCS#8 PEM (`PRIVATE KEY` armour, RFC 5915 key inside,
    /// as written by [`Es256Signer::to_pkcs8_pem`] and by OpenSSL).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Es256Signer, KeyError> {
        let sk =
            p256::ecdsa::SigningKey::from_pkcs8_pem(pem).map_err(|_| KeyError::BadPrivateKey {
                reason: "not a P-256 PKCS#8 key",
            })?;
        Ok(Es256Signer { sk })
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Es256Signer, KeyError> {
        let sk =
            p256::ecdsa::SigningKey::from_pkcs8_der(der).map_err(|_| KeyError::BadPrivateKey {
                reason: "not a P-256 PKCS#8 key",
            })?;
        Ok(Es256Signer { sk })
    }

    /// The key as PKCS#8 PEM.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        self.sk
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| KeyError::BadPrivateKey {
                reason: "the key could not be encoded as PKCS#8",
            })
    }
}

impl Signer for Es256Signer {
    fn alg(&self) -> SigAlg {
        SigAlg::ES256
    }

    fn public_key(&self) -> PublicKey {
        PublicKey::P256(P256PublicKey::of(self.sk.verifying_key()))
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let sig: p256::ecdsa::Signature = self
            .sk
            .try_sign(msg)
            .map_err(|e| KeyError::SignerFailed(e.to_string()))?;
        Ok(sig.to_bytes().to_vec())
    }
}

impl fmt::Debug for Es256Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Es256Signer")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// Load a device key file of either type: PKCS#8 PEM holding an Ed25519 or a
/// P-256 key.
pub fn signer_from_pkcs8_pem(pem: &str) -> Result<Box<dyn Signer>, KeyError> {
    let der = pem_decode(pem)?;
    // The algorithm identifier of RFC 8410's v1 form: OID 1.3.101.112.
    if der.get(7..12) == Some(&ED25519_PKCS8_PREFIX[7..12]) {
        return Ok(Box::new(Ed25519Signer::from_pkcs8_der(&der)?));
    }
    Ok(Box::new(Es256Signer::from_pkcs8_der(&der)?))
}

/// The DER inside a `PRIVATE KEY` PEM, in wiped memory. Only that one block is
/// accepted, with nothing but whitespace around it.
fn pem_decode(pem: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let bad = |reason| KeyError::BadPrivateKey { reason };
    let mut lines = pem.trim().lines().map(str::trim);
    if lines.next() != Some(PEM_BEGIN) {
        return Err(bad(concat!("expected ", armour!("BEGIN"))));
    }
    let mut body = Zeroizing::new(String::new());
    let mut ended = false;
    for line in lines.by_ref() {
        if line == PEM_END {
            ended = true;
            break;
        }
        body.push_str(line);
    }
    if !ended || lines.next().is_some() {
        return Err(bad(concat!(
            "expected one PEM block ending ",
            armour!("END")
        )));
    }
    let mut der = Zeroizing::new(Vec::new());
    if STANDARD.decode_vec(body.as_bytes(), &mut der).is_err() {
        // decode_vec may have written part of the key before failing; the
        // Zeroizing wrapper wipes it.
        return Err(bad("the PEM body is not base64"));
    }
    Ok(der)
}

fn pem_encode(der: &[u8]) -> Zeroizing<String> {
    let mut b64 = Zeroizing::new(String::new());
    STANDARD.encode_string(der, &mut b64);
    let mut out = Zeroizing::new(String::with_capacity(b64.len() + 64));
    out.push_str(PEM_BEGIN);
    out.push('\n');
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(PEM_END);
    out.push('\n');
    b64.zeroize();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::SeededEntropy;
    use serde_json::json;

    #[test]
    fn rfc8037_thumbprint_and_jwk_round_trip() {
        // RFC 8037 §A.2/§A.3.
        let jwk =
            json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        let key = PublicKey::from_jwk(&jwk).unwrap();
        assert_eq!(
            key.jwk_thumbprint(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        assert_eq!(key.to_jwk(), jwk);
        assert_eq!(
            key.to_string(),
            "ed25519:11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        );
        assert_eq!(key.to_string().parse::<PublicKey>().unwrap(), key);
    }

    #[test]
    fn rfc8037_signature_verifies() {
        // RFC 8037 §A.4: the JWS over "Example of Ed25519 signing".
        let key: PublicKey = "ed25519:11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
            .parse()
            .unwrap();
        let input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        let sig = URL_SAFE_NO_PAD
            .decode("hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg")
            .unwrap();
        key.verify(SigAlg::EdDSA, input.as_bytes(), &sig).unwrap();
        assert_eq!(
            key.verify(SigAlg::EdDSA, b"other", &sig),
            Err(KeyError::BadSignature)
        );
        let seed: [u8; 32] = URL_SAFE_NO_PAD
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap()
            .try_into()
            .unwrap();
        let signer = Ed25519Signer::from_seed(&seed).unwrap();
        assert_eq!(signer.public_key(), key);
        // Deterministic: the RFC's exact signature.
        assert_eq!(signer.sign(input.as_bytes()).unwrap(), sig);
    }

    #[test]
    fn p256_keys_sign_deterministically_and_round_trip() {
        let signer = Es256Signer::generate(&mut SeededEntropy::new(3)).unwrap();
        let a = signer.sign(b"msg").unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(a, signer.sign(b"msg").unwrap());
        let key = signer.public_key();
        key.verify(SigAlg::ES256, b"msg", &a).unwrap();
        assert_eq!(
            key.verify(SigAlg::ES256, b"msh", &a),
            Err(KeyError::BadSignature)
        );
        assert_eq!(
            key.verify(SigAlg::EdDSA, b"msg", &a),
            Err(KeyError::AlgorithmMismatch {
                alg: SigAlg::EdDSA,
                key: SigAlg::ES256
            })
        );
        assert_eq!(
            key.verify(SigAlg::ES256, b"msg", &a[..63]),
            Err(KeyError::MalformedSignature { alg: SigAlg::ES256 })
        );
        assert_eq!(
            key.verify(SigAlg::ES256, b"msg", &[0u8; 64]),
            Err(KeyError::MalformedSignature { alg: SigAlg::ES256 })
        );

        let text = key.to_string();
        assert!(text.starts_with("p256:"), "{text}");
        assert_eq!(text.parse::<PublicKey>().unwrap(), key);
        let uncompressed = format!(
            "p256:{}",
            URL_SAFE_NO_PAD.encode(match key {
                PublicKey::P256(k) => k.to_sec1_uncompressed(),
                PublicKey::Ed25519(_) => unreachable!(),
            })
        );
        assert_eq!(uncompressed.parse::<PublicKey>().unwrap(), key);
        let jwk = key.to_jwk();
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(PublicKey::from_jwk(&jwk).unwrap(), key);
        assert_eq!(key.jwk_thumbprint().len(), 43);
    }

    #[test]
    fn rfc7638_p256_thumbprint_shape() {
        // Thumbprint over exactly the canonical members, independent of
        // extra members and order in the input.
        let signer = Es256Signer::generate(&mut SeededEntropy::new(4)).unwrap();
        let key = signer.public_key();
        let mut jwk = key.to_jwk();
        let canonical = serde_json::to_string(&jwk).unwrap();
        assert_eq!(
            key.jwk_thumbprint(),
            URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
        );
        jwk["kid"] = "ignored".into();
        jwk["alg"] = "ES256".into();
        jwk["use"] = "sig".into();
        assert_eq!(PublicKey::from_jwk(&jwk).unwrap(), key);
    }

    #[test]
    fn jwk_refusals() {
        let good =
            json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        let with = |k: &str, v: Value| {
            let mut j = good.clone();
            j[k] = v;
            PublicKey::from_jwk(&j)
        };
        assert!(matches!(
            with("d", "AAAA".into()),
            Err(KeyError::BadJwk { .. })
        ));
        assert!(matches!(
            with("extra", 1.into()),
            Err(KeyError::BadJwk { .. })
        ));
        assert!(matches!(
            with("alg", "ES256".into()),
            Err(KeyError::BadJwk { .. })
        ));
        assert!(matches!(
            with("use", "enc".into()),
            Err(KeyError::BadJwk { .. })
        ));
        assert!(matches!(
            with("crv", "X25519".into()),
            Err(KeyError::BadJwk { .. })
        ));
        assert!(matches!(
            with("x", "11qY".into()),
            Err(KeyError::BadJwk { .. })
        ));
        assert!(matches!(with("x", 5.into()), Err(KeyError::BadJwk { .. })));
        // Padded or standard-alphabet base64 is not base64url-no-pad.
        assert!(matches!(
            with("x", "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo".into()),
            Err(KeyError::BadJwk { .. })
        ));
        // A small-order point (the identity) is refused.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            with("x", URL_SAFE_NO_PAD.encode(identity).into()),
            Err(KeyError::InvalidPublicKey { .. })
        ));
        assert!(PublicKey::from_jwk(&json!([])).is_err());
    }

    #[test]
    fn text_form_refusals() {
        for bad in [
            "",
            "ed25519",
            "rsa:AAAA",
            "ed25519:11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
            "ed25519:AAAA",
            "p256:AAAA",
            "P256:11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
        ] {
            assert!(bad.parse::<PublicKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn pem_round_trips_and_loader_detects_the_type() {
        let mut e = SeededEntropy::new(5);
        let ed = Ed25519Signer::generate(&mut e).unwrap();
        let pem = ed.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with(&format!("{PEM_BEGIN}\n")));
        let back = Ed25519Signer::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.public_key(), ed.public_key());
        let loaded = signer_from_pkcs8_pem(&pem).unwrap();
        assert_eq!(loaded.alg(), SigAlg::EdDSA);
        assert_eq!(loaded.public_key(), ed.public_key());

        let es = Es256Signer::generate(&mut e).unwrap();
        let pem = es.to_pkcs8_pem().unwrap();
        let back = Es256Signer::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.public_key(), es.public_key());
        let loaded = signer_from_pkcs8_pem(&pem).unwrap();
        assert_eq!(loaded.alg(), SigAlg::ES256);
        assert_eq!(loaded.public_key(), es.public_key());
        // Each type refuses the other's file.
        assert!(Ed25519Signer::from_pkcs8_pem(&pem).is_err());
        assert!(Es256Signer::from_pkcs8_pem(&ed.to_pkcs8_pem().unwrap()).is_err());

        // OpenSSL's output for the RFC 8410 §10.3 example key.
        let openssl = format!(
            "{PEM_BEGIN}\r\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\r\n{PEM_END}\r\n"
        );
        let k = Ed25519Signer::from_pkcs8_pem(&openssl).unwrap();
        assert_eq!(
            k.public_key().to_string(),
            format!(
                "ed25519:{}",
                URL_SAFE_NO_PAD.encode(
                    hex::decode("19bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1")
                        .unwrap()
                )
            )
        );

        let ec = |edge: &str| edge.replacen(" PRIVATE", " EC PRIVATE", 1);
        for bad in [
            String::new(),
            format!("{PEM_BEGIN}\nMC4CAQAw\n{PEM_END}"),
            format!("{PEM_BEGIN}\n!!!!\n{PEM_END}"),
            format!("{}\nMC4CAQAw\n{}", ec(PEM_BEGIN), ec(PEM_END)),
            format!(
                "{PEM_BEGIN}\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n"
            ),
        ] {
            assert!(signer_from_pkcs8_pem(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn broken_entropy_is_reported() {
        let mut zeros = |buf: &mut [u8]| buf.fill(0);
        assert_eq!(
            Ed25519Signer::generate(&mut zeros).unwrap_err(),
            KeyError::BadEntropy
        );
        assert_eq!(
            Es256Signer::generate(&mut zeros).unwrap_err(),
            KeyError::BadEntropy
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let seed = [9u8; 32];
        let s = Ed25519Signer::from_seed(&seed).unwrap();
        let shown = format!("{s:?}");
        assert!(shown.contains("ed25519:"), "{shown}");
        assert!(!shown.contains(&URL_SAFE_NO_PAD.encode(seed)), "{shown}");
        let e = Es256Signer::from_scalar(&[9u8; 32]).unwrap();
        let shown = format!("{e:?}");
        assert!(shown.contains("p256:"), "{shown}");
        assert!(!shown.contains("0909"), "{shown}");
    }
}
