//! Device-signed attestations: a compact JWS the runtime sends as the
//! `actor_token` of the token exchange.
//!
//! 1. The runtime fills [`AttestationClaims`] (the backend's nonce, device id,
//!    agent, component digest, the fresh instance public key, requested grants
//!    and lifetime) and calls [`sign_attestation`] with the device [`Signer`].
//! 2. The backend calls [`UnverifiedAttestation::parse`] on the untrusted
//!    string: size cap, strict base64url, known header only, claims with no
//!    unknown fields. Only [`UnverifiedAttestation::device_id`] and
//!    [`UnverifiedAttestation::alg`] are readable, to pick the device key.
//! 3. [`UnverifiedAttestation::verify`] checks the signature and returns a
//!    [`VerifiedAttestation`], the only type that exposes the claims.
//!
//! Non-goals: freshness of the nonce, whether the device may run the agent,
//! whether the digest and grants are allowed. Those are the backend's
//! decisions, made on the verified claims.
//!
//! ```
//! use edgeward_core::attest::{sign_attestation, AttestationClaims, UnverifiedAttestation};
//! use edgeward_core::entropy::SeededEntropy;
//! use edgeward_core::grant::GrantName;
//! use edgeward_core::keys::{Ed25519Signer, Signer};
//! let mut entropy = SeededEntropy::new(1);
//! let device = Ed25519Signer::generate(&mut entropy).unwrap();
//! let instance = Ed25519Signer::generate(&mut entropy).unwrap();
//! let claims = AttestationClaims {
//!     nonce: "n".into(),
//!     device: "dev-1".into(),
//!     agent: "hello".into(),
//!     digest: edgeward_core::digest::ComponentDigest::of(b"component"),
//!     instance_key: instance.public_key(),
//!     grants: vec![GrantName::new("weather").unwrap()],
//!     lifetime: 300,
//!     iat: 1_767_225_600,
//! };
//! let jws = sign_attestation(&claims, "dev-1", &device).unwrap();
//! let unverified = UnverifiedAttestation::parse(&jws).unwrap();
//! assert_eq!(unverified.device_id(), "dev-1");
//! let verified = unverified.verify(&device.public_key()).unwrap();
//! assert_eq!(verified.claims(), &claims);
//! ```

use crate::digest::{ComponentDigest, DigestError};
use crate::grant::{GrantName, validate_name};
use crate::keys::{KeyError, PublicKey, SigAlg, Signer};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// The JWS `typ` of an attestation.
pub const ATTESTATION_TYP: &str = "edgeward-attestation+jwt";

/// Longest attestation accepted, checked before anything is decoded. A real
/// one is well under 2 KiB.
pub const MAX_ATTESTATION_LEN: usize = 8 * 1024;

/// Why an attestation was refused (or could not be made).
///
/// Detailed for the audit log. On the wire, every refusal before the
/// signature verified must look the same (`invalid_grant`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// Longer than [`MAX_ATTESTATION_LEN`].
    #[error("the attestation is {len} bytes, more than the {max} allowed")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a compact JWS: parts, base64url or JSON are wrong.
    #[error("the attestation is malformed: {0}")]
    Malformed(&'static str),
    /// The protected header has members other than `alg`, `typ` and `kid`,
    /// or they are not strings.
    #[error("the attestation header is not acceptable: {0}")]
    BadHeader(String),
    /// `alg` is missing or not `EdDSA`/`ES256` (this includes `none`).
    #[error("unsupported attestation algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// `typ` is missing or not [`ATTESTATION_TYP`].
    #[error("the attestation's typ is not {ATTESTATION_TYP}")]
    WrongType,
    /// No `kid`: the device cannot be identified.
    #[error("the attestation names no device (kid)")]
    MissingKeyId,
    /// The device id breaks the naming rules.
    #[error("the attestation's device id is not a valid name")]
    BadDeviceId,
    /// The claims are not exactly the expected members with the right types.
    #[error("the attestation claims are not acceptable: {0}")]
    BadClaims(String),
    /// The agent name breaks the naming rules.
    #[error("the attestation's agent is not a valid name")]
    BadAgent,
    /// The component digest is not `sha256:<64 hex>`.
    #[error("the attestation's component digest is malformed: {0}")]
    BadDigest(DigestError),
    /// A requested grant name breaks the naming rules.
    #[error("the attestation requests a grant with an invalid name")]
    BadGrant,
    /// The instance key is not a usable public JWK.
    #[error("the attestation's instance key is unusable: {0}")]
    BadInstanceKey(KeyError),
    /// The header's `kid` and the `device` claim differ.
    #[error("the attestation's kid and device claim differ")]
    DeviceMismatch,
    /// The header's `alg` does not belong to the device key's type.
    #[error("the attestation is signed with {alg} but the device key is for {key}")]
    AlgorithmMismatch {
        /// The header's algorithm.
        alg: SigAlg,
        /// The device key's algorithm.
        key: SigAlg,
    },
    /// The signature does not verify under the device key.
    #[error("the attestation signature does not verify")]
    BadSignature,
    /// Signing failed (the device signer reported an error or produced a
    /// signature that does not verify).
    #[error("the attestation could not be signed: {0}")]
    Signing(KeyError),
}

/// What the device vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationClaims {
    /// The backend's challenge.
    pub nonce: String,
    /// Device id (also the header's `kid`).
    pub device: String,
    /// Agent name.
    pub agent: String,
    /// Digest of the component the runtime measured.
    pub digest: ComponentDigest,
    /// The fresh per-instance public key (sent as a JWK).
    pub instance_key: PublicKey,
    /// Grants requested.
    pub grants: Vec<GrantName>,
    /// Requested token lifetime in seconds (0: the backend's default).
    pub lifetime: u64,
    /// When the device signed, unix seconds (informational: freshness comes
    /// from the nonce).
    pub iat: u64,
}

/// The claims as they are on the wire. Members in this order, so signing is
/// deterministic.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireClaims {
    nonce: String,
    device: String,
    agent: String,
    digest: String,
    instance_key: serde_json::Value,
    grants: Vec<String>,
    lifetime: u64,
    iat: u64,
}

impl WireClaims {
    fn of(c: &AttestationClaims) -> WireClaims {
        WireClaims {
            nonce: c.nonce.clone(),
            device: c.device.clone(),
            agent: c.agent.clone(),
            digest: c.digest.to_string(),
            instance_key: c.instance_key.to_jwk(),
            grants: c.grants.iter().map(|g| g.as_str().to_owned()).collect(),
            lifetime: c.lifetime,
            iat: c.iat,
        }
    }

    fn check(self) -> Result<AttestationClaims, AttestError> {
        validate_name(&self.device, "device").map_err(|_| AttestError::BadDeviceId)?;
        validate_name(&self.agent, "agent").map_err(|_| AttestError::BadAgent)?;
        let digest = self
            .digest
            .parse::<ComponentDigest>()
            .map_err(AttestError::BadDigest)?;
        let instance_key =
            PublicKey::from_jwk(&self.instance_key).map_err(AttestError::BadInstanceKey)?;
        let grants = self
            .grants
            .iter()
            .map(|g| GrantName::new(g).map_err(|_| AttestError::BadGrant))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AttestationClaims {
            nonce: self.nonce,
            device: self.device,
            agent: self.agent,
            digest,
            instance_key,
            grants,
            lifetime: self.lifetime,
            iat: self.iat,
        })
    }
}

#[derive(Serialize)]
struct WireHeaderOut<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

/// Every member optional, so a missing one gets its own precise error;
/// unknown members (`crit`, `jwk`, `jku`, `x5u`, ...) are refused, so nothing in
/// the header can steer key selection.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireHeaderIn {
    alg: Option<String>,
    typ: Option<String>,
    kid: Option<String>,
}

/// Sign `claims` as device `device_id` (which must equal `claims.device`).
///
/// The result is parsed and verified again before it is returned, so a
/// faulty signer (or a fault-injected signature) is caught on the device
/// rather than refused by the backend.
pub fn sign_attestation(
    claims: &AttestationClaims,
    device_id: &str,
    signer: &dyn Signer,
) -> Result<String, AttestError> {
    if claims.device != device_id {
        return Err(AttestError::DeviceMismatch);
    }
    validate_name(device_id, "device").map_err(|_| AttestError::BadDeviceId)?;
    let alg = signer.alg();
    let header = WireHeaderOut {
        alg: alg.as_str(),
        typ: ATTESTATION_TYP,
        kid: device_id,
    };
    // Serializing these plain structs cannot fail (string keys, no maps with
    // non-string keys, no floats).
    let header = serde_json::to_vec(&header).map_err(|e| AttestError::BadHeader(e.to_string()))?;
    let payload = serde_json::to_vec(&WireClaims::of(claims))
        .map_err(|e| AttestError::BadClaims(e.to_string()))?;
    let mut jws = String::with_capacity(1024);
    URL_SAFE_NO_PAD.encode_string(&header, &mut jws);
    jws.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut jws);
    let sig = signer.sign(jws.as_bytes()).map_err(AttestError::Signing)?;
    jws.push('.');
    URL_SAFE_NO_PAD.encode_string(&sig, &mut jws);

    let parsed = UnverifiedAttestation::parse(&jws)?;
    parsed.verify(&signer.public_key()).map_err(|e| match e {
        AttestError::BadSignature => AttestError::Signing(KeyError::BadSignature),
        other => other,
    })?;
    Ok(jws)
}

/// A structurally valid attestation whose signature has not been checked.
/// Its claims are not readable: only what is needed to find the device key.
#[derive(Debug, Clone)]
pub struct UnverifiedAttestation {
    alg: SigAlg,
    kid: String,
    signing_input: String,
    signature: Vec<u8>,
    claims: AttestationClaims,
}

fn b64(part: &str, what: &'static str) -> Result<Vec<u8>, AttestError> {
    // URL_SAFE_NO_PAD refuses padding, the standard alphabet, whitespace and
    // non-zero trailing bits, so every JWS has exactly one accepted spelling.
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AttestError::Malformed(what))
}

impl UnverifiedAttestation {
    /// Parse an untrusted compact JWS.
    pub fn parse(jws: &str) -> Result<UnverifiedAttestation, AttestError> {
        if jws.len() > MAX_ATTESTATION_LEN {
            return Err(AttestError::TooLong {
                len: jws.len(),
                max: MAX_ATTESTATION_LEN,
            });
        }
        let mut parts = jws.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AttestError::Malformed("not three dot-separated parts"));
        };
        let header = b64(h64, "the header is not base64url")?;
        let header: WireHeaderIn =
            serde_json::from_slice(&header).map_err(|e| AttestError::BadHeader(e.to_string()))?;
        let alg_name = header
            .alg
            .ok_or_else(|| AttestError::UnsupportedAlgorithm(String::new()))?;
        let alg = SigAlg::from_jws(&alg_name).ok_or_else(|| {
            // The name is attacker-chosen; keep the audit line short.
            AttestError::UnsupportedAlgorithm(alg_name.chars().take(32).collect())
        })?;
        if header.typ.as_deref() != Some(ATTESTATION_TYP) {
            return Err(AttestError::WrongType);
        }
        let kid = header.kid.ok_or(AttestError::MissingKeyId)?;
        validate_name(&kid, "device").map_err(|_| AttestError::BadDeviceId)?;

        let signature = b64(s64, "the signature is not base64url")?;
        if signature.len() != alg.signature_len() {
            return Err(AttestError::Malformed("the signature has the wrong length"));
        }
        let payload = b64(p64, "the payload is not base64url")?;
        let wire: WireClaims =
            serde_json::from_slice(&payload).map_err(|e| AttestError::BadClaims(e.to_string()))?;
        let claims = wire.check()?;
        if claims.device != kid {
            return Err(AttestError::DeviceMismatch);
        }
        Ok(UnverifiedAttestation {
            alg,
            kid,
            signing_input: jws[..h64.len() + 1 + p64.len()].to_owned(),
            signature,
            claims,
        })
    }

    /// The device id (`kid`) to look the device key up by. Unauthenticated.
    pub fn device_id(&self) -> &str {
        &self.kid
    }

    /// The signature algorithm named in the header. Unauthenticated.
    pub fn alg(&self) -> SigAlg {
        self.alg
    }

    /// Check the signature with the device's enrolled key.
    pub fn verify(self, device_key: &PublicKey) -> Result<VerifiedAttestation, AttestError> {
        match device_key.verify(self.alg, self.signing_input.as_bytes(), &self.signature) {
            Ok(()) => Ok(VerifiedAttestation {
                alg: self.alg,
                claims: self.claims,
            }),
            Err(KeyError::AlgorithmMismatch { alg, key }) => {
                Err(AttestError::AlgorithmMismatch { alg, key })
            }
            // Malformed scalars and a plain mismatch are one thing to the
            // caller: this key did not sign this attestation.
            Err(_) => Err(AttestError::BadSignature),
        }
    }
}

/// An attestation whose device signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAttestation {
    alg: SigAlg,
    claims: AttestationClaims,
}

impl VerifiedAttestation {
    /// The algorithm the device signed with.
    pub fn alg(&self) -> SigAlg {
        self.alg
    }

    /// All claims.
    pub fn claims(&self) -> &AttestationClaims {
        &self.claims
    }

    /// All claims, by value.
    pub fn into_claims(self) -> AttestationClaims {
        self.claims
    }

    /// The backend's challenge, to check with [`crate::nonce::NonceIssuer::check`].
    pub fn nonce(&self) -> &str {
        &self.claims.nonce
    }

    /// The device id.
    pub fn device_id(&self) -> &str {
        &self.claims.device
    }

    /// The agent name.
    pub fn agent(&self) -> &str {
        &self.claims.agent
    }

    /// The measured component digest.
    pub fn digest(&self) -> &ComponentDigest {
        &self.claims.digest
    }

    /// The instance public key.
    pub fn instance_key(&self) -> &PublicKey {
        &self.claims.instance_key
    }

    /// The requested grants.
    pub fn grants(&self) -> &[GrantName] {
        &self.claims.grants
    }

    /// The requested lifetime, seconds.
    pub fn lifetime(&self) -> u64 {
        self.claims.lifetime
    }

    /// When the device signed.
    pub fn iat(&self) -> u64 {
        self.claims.iat
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::SeededEntropy;
    use crate::keys::{Ed25519Signer, Es256Signer};

    const NOW: u64 = 1_767_225_600;

    fn claims(instance: PublicKey) -> AttestationClaims {
        AttestationClaims {
            nonce: "bm9uY2U".into(),
            device: "dev-1".into(),
            agent: "hello".into(),
            digest: ComponentDigest::of(b"component"),
            instance_key: instance,
            grants: vec![
                GrantName::new("weather").unwrap(),
                GrantName::new("mail").unwrap(),
            ],
            lifetime: 300,
            iat: NOW,
        }
    }

    fn pieces(jws: &str) -> (serde_json::Value, serde_json::Value, String) {
        let mut p = jws.split('.');
        let h =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p.next().unwrap()).unwrap()).unwrap();
        let c =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p.next().unwrap()).unwrap()).unwrap();
        (h, c, p.next().unwrap().to_owned())
    }

    fn assemble(h: &serde_json::Value, c: &serde_json::Value, sig: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(h).unwrap()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).unwrap()),
            sig
        )
    }

    #[test]
    fn both_algorithms_round_trip_deterministically() {
        let mut e = SeededEntropy::new(11);
        let instance = Ed25519Signer::generate(&mut e).unwrap().public_key();
        let ed: Box<dyn Signer> = Box::new(Ed25519Signer::generate(&mut e).unwrap());
        let es: Box<dyn Signer> = Box::new(Es256Signer::generate(&mut e).unwrap());
        for signer in [ed, es] {
            let c = claims(instance);
            let jws = sign_attestation(&c, "dev-1", signer.as_ref()).unwrap();
            assert_eq!(jws, sign_attestation(&c, "dev-1", signer.as_ref()).unwrap());
            let (h, _, _) = pieces(&jws);
            assert_eq!(h["alg"], signer.alg().as_str());
            assert_eq!(h["typ"], ATTESTATION_TYP);
            assert_eq!(h["kid"], "dev-1");
            let u = UnverifiedAttestation::parse(&jws).unwrap();
            assert_eq!(u.alg(), signer.alg());
            let v = u.verify(&signer.public_key()).unwrap();
            assert_eq!(v.claims(), &c);
            assert_eq!(v.nonce(), "bm9uY2U");
            assert_eq!(v.device_id(), "dev-1");
            assert_eq!(v.agent(), "hello");
            assert_eq!(v.lifetime(), 300);
            assert_eq!(v.iat(), NOW);
            assert_eq!(v.grants().len(), 2);
            assert_eq!(v.instance_key(), &instance);
            assert_eq!(v.digest(), &ComponentDigest::of(b"component"));
        }
    }

    #[test]
    fn signature_and_key_refusals() {
        let mut e = SeededEntropy::new(12);
        let device = Ed25519Signer::generate(&mut e).unwrap();
        let other = Ed25519Signer::generate(&mut e).unwrap();
        let p256 = Es256Signer::generate(&mut e).unwrap();
        let c = claims(other.public_key());
        let jws = sign_attestation(&c, "dev-1", &device).unwrap();

        let u = UnverifiedAttestation::parse(&jws).unwrap();
        assert_eq!(
            u.clone().verify(&other.public_key()),
            Err(AttestError::BadSignature)
        );
        assert_eq!(
            u.verify(&p256.public_key()),
            Err(AttestError::AlgorithmMismatch {
                alg: SigAlg::EdDSA,
                key: SigAlg::ES256
            })
        );

        // Altered claims, original signature.
        let (h, mut cl, sig) = pieces(&jws);
        cl["grants"] = serde_json::json!(["weather", "mail", "admin"]);
        let tampered = assemble(&h, &cl, &sig);
        assert_eq!(
            UnverifiedAttestation::parse(&tampered)
                .unwrap()
                .verify(&device.public_key()),
            Err(AttestError::BadSignature)
        );
    }

    #[test]
    fn structural_refusals_are_precise() {
        let mut e = SeededEntropy::new(13);
        let device = Ed25519Signer::generate(&mut e).unwrap();
        let jws = sign_attestation(&claims(device.public_key()), "dev-1", &device).unwrap();
        let (h, c, sig) = pieces(&jws);
        let parse = |s: &str| UnverifiedAttestation::parse(s).unwrap_err();
        let with_header = |k: &str, v: serde_json::Value| {
            let mut h = h.clone();
            h[k] = v;
            parse(&assemble(&h, &c, &sig))
        };
        let with_claim = |k: &str, v: serde_json::Value| {
            let mut c = c.clone();
            c[k] = v;
            parse(&assemble(&h, &c, &sig))
        };

        assert!(matches!(
            parse(&"a".repeat(MAX_ATTESTATION_LEN + 1)),
            AttestError::TooLong { .. }
        ));
        assert!(matches!(parse("a.b"), AttestError::Malformed(_)));
        assert!(matches!(
            parse(&format!("{jws}.x")),
            AttestError::Malformed(_)
        ));
        assert!(matches!(
            parse(&format!("{jws}=")),
            AttestError::Malformed(_)
        ));
        assert!(matches!(
            parse(&format!(
                "{}.{}",
                jws.rsplit_once('.').unwrap().0,
                "+".repeat(86)
            )),
            AttestError::Malformed(_)
        ));
        assert_eq!(
            with_header("alg", "none".into()),
            AttestError::UnsupportedAlgorithm("none".into())
        );
        assert_eq!(
            with_header("alg", "HS256".into()),
            AttestError::UnsupportedAlgorithm("HS256".into())
        );
        assert_eq!(
            with_header("alg", "Ed25519".into()),
            AttestError::UnsupportedAlgorithm("Ed25519".into())
        );
        assert_eq!(with_header("typ", "JWT".into()), AttestError::WrongType);
        assert!(matches!(
            with_header("jwk", serde_json::json!({})),
            AttestError::BadHeader(_)
        ));
        assert!(matches!(
            with_header("crit", serde_json::json!(["exp"])),
            AttestError::BadHeader(_)
        ));
        let mut no_kid = h.clone();
        no_kid.as_object_mut().unwrap().remove("kid");
        assert_eq!(
            parse(&assemble(&no_kid, &c, &sig)),
            AttestError::MissingKeyId
        );
        assert_eq!(with_header("kid", "Dev/1".into()), AttestError::BadDeviceId);
        assert_eq!(
            with_header("kid", "dev-2".into()),
            AttestError::DeviceMismatch
        );

        assert!(matches!(
            with_claim("extra", 1.into()),
            AttestError::BadClaims(_)
        ));
        assert!(matches!(
            with_claim("lifetime", "300".into()),
            AttestError::BadClaims(_)
        ));
        assert!(matches!(
            with_claim("lifetime", (-1).into()),
            AttestError::BadClaims(_)
        ));
        assert_eq!(with_claim("agent", "Hello".into()), AttestError::BadAgent);
        assert!(matches!(
            with_claim("digest", "md5:00".into()),
            AttestError::BadDigest(_)
        ));
        assert_eq!(
            with_claim("grants", serde_json::json!(["../x"])),
            AttestError::BadGrant
        );
        assert!(matches!(
            with_claim(
                "instance_key",
                serde_json::json!({"kty": "oct", "k": "AAAA"})
            ),
            AttestError::BadInstanceKey(_)
        ));
        let mut missing = c.clone();
        missing.as_object_mut().unwrap().remove("nonce");
        assert!(matches!(
            parse(&assemble(&h, &missing, &sig)),
            AttestError::BadClaims(_)
        ));

        // Duplicate members would let two parsers read different claims.
        let dup_payload = URL_SAFE_NO_PAD.encode(
            br#"{"nonce":"a","nonce":"b","device":"dev-1","agent":"hello","digest":"x","instance_key":{},"grants":[],"lifetime":1,"iat":1}"#,
        );
        let (h64, _) = jws.split_once('.').unwrap();
        assert!(matches!(
            parse(&format!("{h64}.{dup_payload}.{sig}")),
            AttestError::BadClaims(_)
        ));
        let short_sig = URL_SAFE_NO_PAD.encode([0u8; 63]);
        assert!(matches!(
            parse(&assemble(&h, &c, &short_sig)),
            AttestError::Malformed(_)
        ));
    }

    #[test]
    fn signing_refuses_inconsistent_input() {
        let mut e = SeededEntropy::new(14);
        let device = Ed25519Signer::generate(&mut e).unwrap();
        let c = claims(device.public_key());
        assert_eq!(
            sign_attestation(&c, "dev-2", &device),
            Err(AttestError::DeviceMismatch)
        );

        struct Broken(Ed25519Signer);
        impl Signer for Broken {
            fn alg(&self) -> SigAlg {
                SigAlg::EdDSA
            }
            fn public_key(&self) -> PublicKey {
                self.0.public_key()
            }
            fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
                let mut sig = self.0.sign(msg)?;
                sig[0] ^= 1;
                Ok(sig)
            }
        }
        assert_eq!(
            sign_attestation(&c, "dev-1", &Broken(device)),
            Err(AttestError::Signing(KeyError::BadSignature))
        );
    }
}
