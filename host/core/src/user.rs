//! User assertions: how an instance proves it acts for a user.
//!
//! An agent serving people acts for one of them only with that person's
//! assertion — a JWT signed by a configured trusted issuer (an IdP) — sent
//! as the `subject_token` of the token exchange, beside the device's
//! attestation as `actor_token` (RFC 8693 delegation: the minted token's
//! `sub` is the user and `act` the instance). Claiming a user name is not
//! enough: without an assertion that verifies there is no on-behalf-of.
//!
//! Checked: a compact JWS with `alg` EdDSA or ES256 and a `kid` the issuer's
//! JWKS names; `iss` of a configured issuer; its audience in `aud`; `exp`
//! in the future and `nbf`/`iat` not in the future (with the clock
//! tolerance); a `sub` of at most 128 safe characters. Other claims are
//! allowed (IdPs add many) and ignored.
//!
//! Non-goals: fetching JWKS over the network (keys are configured), and
//! OIDC discovery.

use crate::keys::{PublicKey, SigAlg};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Longest assertion accepted, bytes.
pub const MAX_ASSERTION_LEN: usize = 8192;
/// Longest user id (`sub`) accepted.
pub const MAX_SUBJECT_LEN: usize = 128;

/// A trusted issuer of user assertions (`[[user_issuer]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIssuer {
    /// Short name, used in the minted token's `sub` (`user:<name>/<sub>`).
    pub name: String,
    /// The `iss` its assertions carry.
    pub issuer: String,
    /// The audience its assertions must name (this backend).
    pub audience: String,
    /// Its signing keys by `kid` (from its JWKS).
    pub keys: BTreeMap<String, PublicKey>,
    /// Longest `exp - iat` accepted, seconds: an assertion is a bearer
    /// credential, so long-lived ones are refused.
    pub max_lifetime: u64,
    /// The agents that may act for this issuer's users (and only these, as
    /// parents or as delegated children): an assertion is a bearer
    /// credential, so a copy must not let just any agent act for the user.
    pub agents: Vec<String>,
}

impl UserIssuer {
    /// Keys from a JWKS document (`{"keys": [...]}`); every key needs a
    /// `kid`, private keys are refused.
    pub fn keys_from_jwks(jwks: &str) -> Result<BTreeMap<String, PublicKey>, String> {
        let doc: serde_json::Value =
            serde_json::from_str(jwks).map_err(|_| "the JWKS is not JSON".to_owned())?;
        let keys = doc["keys"]
            .as_array()
            .ok_or("the JWKS has no \"keys\" array")?;
        if keys.is_empty() {
            return Err("the JWKS has no keys".into());
        }
        let mut out = BTreeMap::new();
        for (i, jwk) in keys.iter().enumerate() {
            let kid = jwk["kid"]
                .as_str()
                .filter(|k| !k.is_empty() && k.len() <= 128)
                .ok_or_else(|| format!("key {i} has no kid"))?;
            if jwk.get("use").is_some_and(|u| u != "sig") {
                return Err(format!("key {kid:?} is not a signing key (use)"));
            }
            let key = PublicKey::from_jwk(jwk).map_err(|e| format!("key {kid:?}: {e}"))?;
            if out.insert(kid.to_owned(), key).is_some() {
                return Err(format!("kid {kid:?} appears twice"));
            }
        }
        Ok(out)
    }
}

/// Check the shape of a user principal (`user:<issuer name>/<sub>`), as
/// config files name users.
pub fn check_principal(principal: &str) -> Result<(), &'static str> {
    let rest = principal
        .strip_prefix("user:")
        .ok_or("it must start with user:")?;
    let (issuer, sub) = rest
        .split_once('/')
        .ok_or("it must be user:<issuer>/<user id>")?;
    crate::grant::validate_name(issuer, "user issuer").map_err(|_| "bad issuer name")?;
    if !valid_subject(sub) {
        return Err("bad user id");
    }
    Ok(())
}

fn valid_subject(sub: &str) -> bool {
    !sub.is_empty()
        && sub.len() <= MAX_SUBJECT_LEN
        && sub
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b))
}

/// Why a user assertion is refused. Details are for the audit log; the
/// exchange answers `invalid_grant` either way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssertionError {
    /// Not a compact JWS of the expected shape.
    #[error("malformed user assertion: {0}")]
    Malformed(&'static str),
    /// `alg` is not EdDSA or ES256.
    #[error("unsupported algorithm")]
    Algorithm,
    /// No configured issuer has this `iss`.
    #[error("the issuer is not trusted")]
    UnknownIssuer,
    /// The issuer has no key with this `kid`, or the key type differs.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// This backend is not in `aud`.
    #[error("the assertion is for another audience")]
    Audience,
    /// Expired, or not yet valid.
    #[error("the assertion is not valid at this time")]
    Time,
    /// `sub` missing, too long or with unsafe characters.
    #[error("the assertion's subject is not a valid user id")]
    Subject,
}

/// A user assertion that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedUser {
    /// The issuer's configured name.
    pub issuer: String,
    /// The user id (`sub`).
    pub subject: String,
    /// When the assertion expires; a token minted on it must not outlive it.
    pub expires_at: u64,
}

/// Whether `agent` may act for `principal` (`user:<issuer>/<sub>`): the
/// issuer must be configured and list the agent. The reason when not.
pub fn may_act_for(issuers: &[UserIssuer], agent: &str, principal: &str) -> Result<(), String> {
    check_principal(principal).map_err(|e| format!("not a user principal: {e}"))?;
    // check_principal guarantees `user:<issuer>/…`.
    let issuer = principal
        .strip_prefix("user:")
        .and_then(|rest| rest.split_once('/'))
        .map_or("", |(issuer, _)| issuer);
    let issuer = issuers
        .iter()
        .find(|i| i.name == issuer)
        .ok_or_else(|| format!("user issuer {issuer} is no longer configured"))?;
    if issuer.agents.iter().any(|a| a == agent) {
        Ok(())
    } else {
        Err(format!(
            "agent {agent} may not act for users of issuer {} (not in its agents)",
            issuer.name
        ))
    }
}

impl VerifiedUser {
    /// The user as the minted token's `sub` and the guest's `on-behalf-of`.
    pub fn principal(&self) -> String {
        format!("user:{}/{}", self.issuer, self.subject)
    }
}

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Verify `jwt` against the trusted `issuers` at `now` (unix seconds),
/// allowing `tolerance` seconds of clock drift.
pub fn verify_assertion(
    jwt: &str,
    issuers: &[UserIssuer],
    now: u64,
    tolerance: u64,
) -> Result<VerifiedUser, AssertionError> {
    if jwt.len() > MAX_ASSERTION_LEN {
        return Err(AssertionError::Malformed("too long"));
    }
    let mut parts = jwt.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AssertionError::Malformed("not three dot-separated parts"));
    };
    let decode = |part: &str, what: &'static str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| AssertionError::Malformed(what))
    };
    let header: Header = serde_json::from_slice(&decode(h64, "the header is not base64url")?)
        .map_err(|_| AssertionError::Malformed("the header is not JSON"))?;
    let claims: Claims = serde_json::from_slice(&decode(p64, "the payload is not base64url")?)
        .map_err(|_| AssertionError::Malformed("the payload is not a JSON claims set"))?;
    let signature = decode(s64, "the signature is not base64url")?;
    let alg = header
        .alg
        .as_deref()
        .and_then(SigAlg::from_jws)
        .ok_or(AssertionError::Algorithm)?;
    let issuer = issuers
        .iter()
        .find(|i| claims.iss.as_deref() == Some(i.issuer.as_str()))
        .ok_or(AssertionError::UnknownIssuer)?;
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| issuer.keys.get(kid))
        .ok_or(AssertionError::UnknownKey)?;
    if key.alg() != alg {
        return Err(AssertionError::UnknownKey);
    }
    let input = &jwt[..h64.len() + 1 + p64.len()];
    key.verify(alg, input.as_bytes(), &signature)
        .map_err(|_| AssertionError::Signature)?;

    // Authentic from here on: the checks below are about validity.
    let audience_ok = match &claims.aud {
        Some(Audience::One(a)) => a == &issuer.audience,
        Some(Audience::Many(v)) => v.iter().any(|a| a == &issuer.audience),
        None => false,
    };
    if !audience_ok {
        return Err(AssertionError::Audience);
    }
    let exp = claims.exp.ok_or(AssertionError::Time)?;
    if now >= exp.saturating_add(tolerance) {
        return Err(AssertionError::Time);
    }
    // Issued when, and for how long: a long-lived assertion is refused.
    let iat = claims.iat.ok_or(AssertionError::Time)?;
    if exp.saturating_sub(iat) > issuer.max_lifetime {
        return Err(AssertionError::Time);
    }
    if claims
        .nbf
        .into_iter()
        .chain(claims.iat)
        .any(|t| t > now.saturating_add(tolerance))
    {
        return Err(AssertionError::Time);
    }
    let subject = claims.sub.ok_or(AssertionError::Subject)?;
    if !valid_subject(&subject) {
        return Err(AssertionError::Subject);
    }
    Ok(VerifiedUser {
        issuer: issuer.name.clone(),
        subject,
        expires_at: exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::SeededEntropy;
    use crate::keys::{Ed25519Signer, Es256Signer, Signer};
    use serde_json::json;

    const NOW: u64 = 1_767_225_600;

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn sign(header: serde_json::Value, claims: serde_json::Value, key: &dyn Signer) -> String {
        let input = format!("{}.{}", b64(&header), b64(&claims));
        let sig = key.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    fn idp() -> (Ed25519Signer, Es256Signer, UserIssuer) {
        let ed = Ed25519Signer::generate(&mut SeededEntropy::new(1)).unwrap();
        let es = Es256Signer::generate(&mut SeededEntropy::new(2)).unwrap();
        let mut k1 = ed.public_key().to_jwk();
        k1["kid"] = json!("k1");
        let mut k2 = es.public_key().to_jwk();
        k2["kid"] = json!("k2");
        let jwks = json!({ "keys": [k1, k2] }).to_string();
        let issuer = UserIssuer {
            name: "corp".into(),
            issuer: "https://idp.test".into(),
            audience: "edgeward".into(),
            keys: UserIssuer::keys_from_jwks(&jwks).unwrap(),
            max_lifetime: 3600,
            agents: vec!["hello".into()],
        };
        (ed, es, issuer)
    }

    fn claims() -> serde_json::Value {
        json!({
            "iss": "https://idp.test", "sub": "alice@example.com",
            "aud": ["other", "edgeward"], "exp": NOW + 60, "iat": NOW,
            "email": "alice@example.com"
        })
    }

    #[test]
    fn a_good_assertion_names_the_user() {
        let (ed, es, issuer) = idp();
        for (kid, alg, key) in [("k1", "EdDSA", &ed as &dyn Signer), ("k2", "ES256", &es)] {
            let jwt = sign(json!({"alg": alg, "kid": kid}), claims(), key);
            let user = verify_assertion(&jwt, std::slice::from_ref(&issuer), NOW, 5).unwrap();
            assert_eq!(user.principal(), "user:corp/alice@example.com");
            assert_eq!(user.expires_at, NOW + 60);
        }
    }

    #[test]
    fn forged_foreign_or_stale_assertions_are_refused() {
        let (ed, es, issuer) = idp();
        let issuers = std::slice::from_ref(&issuer);
        let stranger = Ed25519Signer::generate(&mut SeededEntropy::new(3)).unwrap();
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut c = claims();
            f(&mut c);
            sign(json!({"alg": "EdDSA", "kid": "k1"}), c, &ed)
        };
        let cases: Vec<(String, AssertionError)> = vec![
            (
                sign(json!({"alg": "EdDSA", "kid": "k1"}), claims(), &stranger),
                AssertionError::Signature,
            ),
            (
                sign(json!({"alg": "EdDSA", "kid": "k9"}), claims(), &ed),
                AssertionError::UnknownKey,
            ),
            (
                sign(json!({"alg": "ES256", "kid": "k1"}), claims(), &es),
                AssertionError::UnknownKey,
            ),
            (
                sign(json!({"alg": "HS256", "kid": "k1"}), claims(), &ed),
                AssertionError::Algorithm,
            ),
            (
                sign(json!({"alg": "none", "kid": "k1"}), claims(), &ed),
                AssertionError::Algorithm,
            ),
            (
                with(&|c| c["iss"] = json!("https://evil.test")),
                AssertionError::UnknownIssuer,
            ),
            (
                with(&|c| c["aud"] = json!("other")),
                AssertionError::Audience,
            ),
            (with(&|c| c["exp"] = json!(NOW - 10)), AssertionError::Time),
            (with(&|c| c["nbf"] = json!(NOW + 100)), AssertionError::Time),
            (
                with(&|c| c["exp"] = json!(NOW + 7200)),
                AssertionError::Time,
            ),
            (
                with(&|c| {
                    c.as_object_mut().unwrap().remove("iat");
                }),
                AssertionError::Time,
            ),
            (
                with(&|c| c["sub"] = json!("alice/../bob")),
                AssertionError::Subject,
            ),
            (with(&|c| c["sub"] = json!("")), AssertionError::Subject),
        ];
        for (jwt, want) in cases {
            assert_eq!(verify_assertion(&jwt, issuers, NOW, 5), Err(want));
        }
        // Tampered payload, good signature of another payload.
        let good = with(&|_| {});
        let evil = with(&|c| c["sub"] = json!("mallory"));
        let parts: Vec<&str> = good.split('.').collect();
        let swapped = format!(
            "{}.{}.{}",
            parts[0],
            evil.split('.').nth(1).unwrap(),
            parts[2]
        );
        assert_eq!(
            verify_assertion(&swapped, issuers, NOW, 5),
            Err(AssertionError::Signature)
        );
        for junk in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert!(matches!(
                verify_assertion(junk, issuers, NOW, 5),
                Err(AssertionError::Malformed(_))
            ));
        }
        assert_eq!(
            verify_assertion(&good, &[], NOW, 5),
            Err(AssertionError::UnknownIssuer)
        );
    }

    #[test]
    fn jwks_parsing_refuses_private_keys_and_missing_kids() {
        let ed = Ed25519Signer::generate(&mut SeededEntropy::new(1)).unwrap();
        let jwk = ed.public_key().to_jwk();
        assert!(UserIssuer::keys_from_jwks(&json!({"keys": [jwk]}).to_string()).is_err());
        let mut private = ed.public_key().to_jwk();
        private["kid"] = json!("k");
        private["d"] = json!("AAAA");
        assert!(UserIssuer::keys_from_jwks(&json!({"keys": [private]}).to_string()).is_err());
        assert!(UserIssuer::keys_from_jwks("{}").is_err());
        let mut enc = ed.public_key().to_jwk();
        enc["kid"] = json!("k");
        enc["use"] = json!("enc");
        assert!(UserIssuer::keys_from_jwks(&json!({"keys": [enc]}).to_string()).is_err());
        assert!(UserIssuer::keys_from_jwks("not json").is_err());
    }
}
