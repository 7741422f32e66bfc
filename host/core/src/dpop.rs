//! DPoP proofs (RFC 9449): proof that the caller holds the instance key a
//! token is bound to (`cnf.jkt`), so a stolen token alone is useless.
//!
//! Why our own compact JWS rather than jwt-simple: jwt-simple 0.15 types the
//! JWS `jwk` header member as a string, so it cannot read a DPoP proof, and
//! a second JWT crate would bring a second crypto stack. A DPoP proof is a
//! small, fixed shape; this module parses exactly that shape over the
//! signature code already in [`crate::keys`].
//!
//! 1. The runtime signs, with the instance key, a JWS with header
//!    `{"typ":"dpop+jwt","alg":…,"jwk":<public key>}` and claims
//!    `{"jti","htm","htu","iat","ath"}` ([`create_proof`]).
//! 2. The backend parses it ([`UnverifiedProof::parse`]), verifies the
//!    signature with the embedded key and checks method, URI, freshness,
//!    the access-token hash, and that the key's thumbprint is the token's
//!    `cnf.jkt` ([`UnverifiedProof::verify`]).
//! 3. The backend refuses a `jti` it has seen (a replay cache, as for nonces).

use crate::keys::{PublicKey, SigAlg, Signer};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The JWS `typ` of a DPoP proof.
pub const PROOF_TYPE: &str = "dpop+jwt";
/// Longest proof accepted, before any decoding.
pub const MAX_PROOF_LEN: usize = 4096;
/// How far a proof's `iat` may be from now, seconds, either way.
pub const MAX_SKEW_SECS: u64 = 60;

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DpopError {
    /// Not a compact JWS of the expected shape.
    #[error("the DPoP proof is malformed: {0}")]
    Malformed(&'static str),
    /// `typ` is not `dpop+jwt`.
    #[error("the DPoP proof has the wrong type")]
    WrongType,
    /// The algorithm is not supported or does not match the key.
    #[error("the DPoP proof's algorithm is not accepted")]
    WrongAlgorithm,
    /// The signature does not verify with the embedded key.
    #[error("the DPoP proof's signature does not verify")]
    BadSignature,
    /// The proof is for another method.
    #[error("the DPoP proof is for another method")]
    WrongMethod,
    /// The proof is for another URI.
    #[error("the DPoP proof is for another URI")]
    WrongUri,
    /// `iat` is too far from now.
    #[error("the DPoP proof is not fresh")]
    Stale,
    /// `ath` is not the hash of the presented token.
    #[error("the DPoP proof is for another access token")]
    WrongToken,
    /// The proof's key is not the key the token is bound to.
    #[error("the DPoP proof is signed by a key the token is not bound to")]
    WrongKey,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    typ: String,
    alg: String,
    jwk: serde_json::Value,
}

/// The claims of a proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofClaims {
    /// Unique per proof (replay detection).
    pub jti: String,
    /// HTTP method.
    pub htm: String,
    /// HTTP URI, without query and fragment.
    pub htu: String,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// base64url(SHA-256(access token)).
    pub ath: String,
}

/// The `htu` form of a URI: scheme, authority and path; no query, no
/// fragment (RFC 9449 §4.3).
pub fn htu(uri: &http::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    format!("{scheme}://{authority}{}", uri.path())
}

/// The `ath` of an access token.
pub fn ath(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// Sign a proof for one request with the instance key.
pub fn create_proof(
    signer: &dyn Signer,
    method: &http::Method,
    uri: &http::Uri,
    token: &str,
    now: u64,
    jti: &[u8; 16],
) -> Result<String, crate::keys::KeyError> {
    let header = Header {
        typ: PROOF_TYPE.into(),
        alg: signer.alg().as_str().into(),
        jwk: signer.public_key().to_jwk(),
    };
    let claims = ProofClaims {
        jti: URL_SAFE_NO_PAD.encode(jti),
        htm: method.as_str().into(),
        htu: htu(uri),
        iat: now,
        ath: ath(token),
    };
    // Serialising plain structs of strings and numbers cannot fail.
    let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default());
    let c = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
    let input = format!("{h}.{c}");
    let sig = signer.sign(input.as_bytes())?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

/// A parsed proof whose signature has not been checked yet.
#[derive(Debug)]
pub struct UnverifiedProof {
    alg: SigAlg,
    key: PublicKey,
    claims: ProofClaims,
    signing_input: String,
    signature: Vec<u8>,
}

/// What the proof must match.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The request's method.
    pub method: &'a http::Method,
    /// The request's URI.
    pub uri: &'a http::Uri,
    /// The presented access token.
    pub token: &'a str,
    /// The token's `cnf.jkt`.
    pub jkt: &'a str,
    /// Now, unix seconds.
    pub now: u64,
}

impl UnverifiedProof {
    /// Parse a compact JWS proof: shape only, nothing trusted yet.
    pub fn parse(proof: &str) -> Result<UnverifiedProof, DpopError> {
        if proof.len() > MAX_PROOF_LEN {
            return Err(DpopError::Malformed("too long"));
        }
        let mut parts = proof.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(DpopError::Malformed("not three parts"));
        };
        let decode = |p: &str| {
            URL_SAFE_NO_PAD
                .decode(p)
                .map_err(|_| DpopError::Malformed("bad base64url"))
        };
        let header: Header =
            serde_json::from_slice(&decode(h)?).map_err(|_| DpopError::Malformed("bad header"))?;
        if header.typ != PROOF_TYPE {
            return Err(DpopError::WrongType);
        }
        let alg = SigAlg::from_jws(&header.alg).ok_or(DpopError::WrongAlgorithm)?;
        // The jwk must be a public key: `from_jwk` refuses private members.
        let key = PublicKey::from_jwk(&header.jwk).map_err(|_| DpopError::Malformed("bad jwk"))?;
        if key.alg() != alg {
            return Err(DpopError::WrongAlgorithm);
        }
        let claims: ProofClaims =
            serde_json::from_slice(&decode(c)?).map_err(|_| DpopError::Malformed("bad claims"))?;
        Ok(UnverifiedProof {
            alg,
            key,
            claims,
            signing_input: format!("{h}.{c}"),
            signature: decode(s)?,
        })
    }

    /// Verify the signature and every binding; the proof's `jti` is
    /// returned for the caller's replay cache.
    pub fn verify(self, expected: &Expected<'_>) -> Result<ProofClaims, DpopError> {
        self.key
            .verify(self.alg, self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| DpopError::BadSignature)?;
        if self.key.jwk_thumbprint() != expected.jkt {
            return Err(DpopError::WrongKey);
        }
        if self.claims.htm != expected.method.as_str() {
            return Err(DpopError::WrongMethod);
        }
        if self.claims.htu != htu(expected.uri) {
            return Err(DpopError::WrongUri);
        }
        if self.claims.iat.abs_diff(expected.now) > MAX_SKEW_SECS {
            return Err(DpopError::Stale);
        }
        if self.claims.ath != ath(expected.token) {
            return Err(DpopError::WrongToken);
        }
        Ok(self.claims)
    }
}

/// A proof that verified, and how to remember it against replay: the key
/// (the holder's thumbprint and the proof's `jti`) and until when it could
/// still verify. Remember it only after it verified, so forged proofs
/// cannot fill a replay cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fresh {
    /// Replay-cache key: `<jkt>.<jti>`.
    pub key: String,
    /// Unix time after which the proof no longer verifies anyway.
    pub until: u64,
}

/// Parse and verify a proof; the caller then uses up [`Fresh::key`] in its
/// replay cache (in memory, or a database row) and refuses a second use.
pub fn verify_fresh(proof: &str, expected: &Expected<'_>) -> Result<Fresh, DpopError> {
    let claims = UnverifiedProof::parse(proof)?.verify(expected)?;
    Ok(Fresh {
        key: format!("{}.{}", expected.jkt, claims.jti),
        until: claims.iat + MAX_SKEW_SECS + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::SeededEntropy;
    use crate::keys::{Ed25519Signer, Es256Signer};

    const NOW: u64 = 1_767_225_600;

    fn setup() -> (Ed25519Signer, http::Uri, http::Method) {
        let k = Ed25519Signer::generate(&mut SeededEntropy::new(1)).unwrap();
        (
            k,
            "https://api.example/v1/x?q=1".parse().unwrap(),
            http::Method::GET,
        )
    }

    #[test]
    fn a_proof_verifies_for_its_request_only() {
        let (k, uri, m) = setup();
        let jkt = k.public_key().jwk_thumbprint();
        let proof = create_proof(&k, &m, &uri, "tok", NOW, &[1; 16]).unwrap();
        let ok = Expected {
            method: &m,
            uri: &uri,
            token: "tok",
            jkt: &jkt,
            now: NOW + 5,
        };
        let claims = UnverifiedProof::parse(&proof).unwrap().verify(&ok).unwrap();
        assert_eq!(claims.htu, "https://api.example/v1/x");

        let post = http::Method::POST;
        let other_uri: http::Uri = "https://api.example/v1/y".parse().unwrap();
        let cases = [
            (
                Expected {
                    method: &post,
                    ..ok
                },
                DpopError::WrongMethod,
            ),
            (
                Expected {
                    uri: &other_uri,
                    ..ok
                },
                DpopError::WrongUri,
            ),
            (
                Expected {
                    token: "other",
                    ..ok
                },
                DpopError::WrongToken,
            ),
            (
                Expected {
                    now: NOW + 61,
                    ..ok
                },
                DpopError::Stale,
            ),
            (
                Expected {
                    jkt: "not-the-key",
                    ..ok
                },
                DpopError::WrongKey,
            ),
        ];
        for (expected, err) in cases {
            assert_eq!(
                UnverifiedProof::parse(&proof).unwrap().verify(&expected),
                Err(err)
            );
        }
    }

    #[test]
    fn es256_proofs_and_tampering() {
        let k = Es256Signer::generate(&mut SeededEntropy::new(2)).unwrap();
        let (_, uri, m) = setup();
        let jkt = k.public_key().jwk_thumbprint();
        let proof = create_proof(&k, &m, &uri, "tok", NOW, &[2; 16]).unwrap();
        let ok = Expected {
            method: &m,
            uri: &uri,
            token: "tok",
            jkt: &jkt,
            now: NOW,
        };
        assert!(UnverifiedProof::parse(&proof).unwrap().verify(&ok).is_ok());
        // Swap in other claims, keep the signature.
        let mut parts: Vec<&str> = proof.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"jti":"x","htm":"GET","htu":"https://api.example/v1/x","iat":1767225600,"ath":"y"}"#);
        parts[1] = &forged;
        let tampered = parts.join(".");
        assert_eq!(
            UnverifiedProof::parse(&tampered).unwrap().verify(&ok),
            Err(DpopError::BadSignature)
        );
    }

    #[test]
    fn malformed_proofs_are_refused() {
        for p in [
            "",
            "a.b",
            "a.b.c.d",
            &"x".repeat(MAX_PROOF_LEN + 1),
            "!!.!!.!!",
        ] {
            assert!(
                matches!(UnverifiedProof::parse(p), Err(DpopError::Malformed(_))),
                "{p:.20}"
            );
        }
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"EdDSA","jwk":{}}"#);
        assert_eq!(
            UnverifiedProof::parse(&format!("{header}.e30.AA")).err(),
            Some(DpopError::WrongType)
        );
        let none = URL_SAFE_NO_PAD.encode(br#"{"typ":"dpop+jwt","alg":"none","jwk":{}}"#);
        assert_eq!(
            UnverifiedProof::parse(&format!("{none}.e30.")).err(),
            Some(DpopError::WrongAlgorithm)
        );
    }
}
