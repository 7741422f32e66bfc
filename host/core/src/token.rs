//! Access tokens: RFC 9068 JWTs (`typ: at+jwt`, EdDSA), minted by the
//! backend after an attestation verified, checked on every proxied call.
//!
//! 1. [`TokenIssuer`] holds the Ed25519 signing key (from a 32-byte seed,
//!    wiped on drop) and mints with [`TokenIssuer::mint`]. Its `kid` is the
//!    key's RFC 7638 thumbprint unless set with [`TokenIssuer::with_kid`];
//!    [`TokenIssuer::jwks`] publishes the public key.
//! 2. [`TokenVerifier`] knows the issuer, the audience, a clock tolerance in
//!    seconds and one or more keys by `kid` (several during rotation).
//!    [`TokenVerifier::verify`] takes the current time as an argument and
//!    returns a [`VerifiedToken`] or a precise [`TokenError`].
//!
//! Claims: `iss`, `aud`, `sub`, `act` (`{"sub": instance, "act": {"sub":
//! device}}`, RFC 8693 delegation), `scope` (space-separated grant names),
//! `iat`, `nbf`, `exp`, `jti`, `cnf.jkt` (RFC 7638 thumbprint of the instance
//! key), `gen` (agent generation), `agent`.
//!
//! A token minted for a delegated child ([`TokenIssuer::mint_delegated`],
//! the RFC 8693 exchange of a caveat chain) keeps its parent's `sub`, and its
//! `act` nests the whole line: `{child instance, act: {child device, act:
//! {parent instance, act: {parent device, …}}}}`. Two more claims say what
//! the backend checks on every call: `dlg` (each ancestor's `jti`, agent and
//! generation, direct parent first: revoking any ancestor refuses the child)
//! and `cav` (the caveats the child inherited, which keep narrowing it).
//!
//! jwt-simple does the signature and its standard checks with injected time
//! and our tolerance (never its 15-minute default). Then the verified payload
//! is parsed again, strictly, by this module: every claim required, no unknown
//! claim, and times re-checked as plain `u64` seconds (jwt-simple accepts a
//! token with no `exp` at all, and its timestamps saturate past 2106).
//!
//! ```
//! use edgeward_core::token::{Mint, TokenIssuer, TokenVerifier};
//! use edgeward_core::grant::GrantName;
//! let issuer = TokenIssuer::new(&[1; 32], "https://edgeward.local", "edgeward").unwrap();
//! let mut verifier = TokenVerifier::new("https://edgeward.local", "edgeward", 5);
//! verifier.add_key(issuer.kid(), issuer.public_key());
//! let token = issuer
//!     .mint(&Mint {
//!         sub: "spiffe://td/agent/a/instance/i".into(),
//!         instance_spiffe: "spiffe://td/agent/a/instance/i".into(),
//!         device_spiffe: "spiffe://td/device/d".into(),
//!         agent: "a".into(),
//!         scope: vec![GrantName::new("weather").unwrap()],
//!         generation: 1,
//!         jkt: "thumbprint".into(),
//!         now: 1_767_225_600,
//!         lifetime: 300,
//!         jti: "id-1".into(),
//!     })
//!     .unwrap();
//! let t = verifier.verify(&token, 1_767_225_700).unwrap();
//! assert_eq!(t.agent(), "a");
//! assert!(verifier.verify(&token, 1_767_225_906).is_err()); // exp + tolerance
//! ```

use crate::grant::{GrantName, validate_name};
use crate::keys::{Ed25519PublicKey, PublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::prelude::{
    Audiences, Duration, Ed25519KeyPair, Ed25519PublicKey as JwtPublicKey, EdDSAKeyPairLike as _,
    EdDSAPublicKeyLike as _, HeaderOptions, JWTClaims, NoCustomClaims, UnixTimeStamp,
    VerificationOptions,
};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;
use zeroize::Zeroizing;

/// The JWT `typ` of an access token (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Longest token accepted, checked before anything is decoded. A real one is
/// well under 2 KiB.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Latest time (and token expiry) this module handles: jwt-simple's
/// timestamps hold whole seconds in 32 bits (until 2106).
pub const MAX_TIME: u64 = u32::MAX as u64;

/// Longest clock tolerance a verifier accepts: tolerance is for clock drift,
/// seconds, not a way to extend token lifetimes.
pub const MAX_TOLERANCE_SECS: u64 = 300;

/// Why a token was refused or could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("the token is {len} bytes, more than the {max} allowed")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a compact JWS, or the header or claims are not what edgeward mints.
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not `EdDSA` (this includes `none` and `HS256`).
    #[error("the token is not signed with EdDSA")]
    WrongAlgorithm,
    /// The header's `typ` is not `at+jwt`.
    #[error("the token is not an access token (typ at+jwt)")]
    WrongType,
    /// No `kid`, or a `kid` this verifier has no key for.
    #[error("the token's signing key is unknown")]
    UnknownKey,
    /// The signature does not verify under the key named by `kid`.
    #[error("the token signature does not verify")]
    BadSignature,
    /// `exp` has passed (beyond the tolerance).
    #[error("the token expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the tolerance).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iss` is missing or not this verifier's issuer.
    #[error("the token was issued by someone else")]
    WrongIssuer,
    /// `aud` is missing or not this verifier's audience.
    #[error("the token is meant for another audience")]
    WrongAudience,
    /// The time given, or a token's expiry, is past [`MAX_TIME`].
    #[error("time out of range (after 2106)")]
    TimeOutOfRange,
    /// The mint request is inconsistent.
    #[error("cannot mint: {0}")]
    InvalidMint(&'static str),
    /// The signing key cannot be used (an all-zero seed).
    #[error("the token signing key is unusable")]
    BadSigningKey,
    /// jwt-simple failed to sign.
    #[error("signing the token failed: {0}")]
    Signing(String),
}

/// Why a SPIFFE id could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeError {
    /// The trust domain is empty, too long, or uses characters outside
    /// `[a-z0-9._-]`.
    #[error("a trust domain must be 1 to 255 characters of a-z, 0-9, '.', '-' or '_'")]
    BadTrustDomain,
    /// A path segment breaks the naming rules of [`validate_name`].
    #[error("{what} is not a valid name for a SPIFFE id")]
    BadName {
        /// Which segment.
        what: &'static str,
    },
}

fn validate_trust_domain(td: &str) -> Result<(), SpiffeError> {
    let ok = !td.is_empty()
        && td.len() <= 255
        && td
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(SpiffeError::BadTrustDomain)
    }
}

/// `spiffe://<trust-domain>/agent/<agent>/instance/<instance_id>`.
pub fn spiffe_instance(
    trust_domain: &str,
    agent: &str,
    instance_id: &str,
) -> Result<String, SpiffeError> {
    validate_trust_domain(trust_domain)?;
    validate_name(agent, "agent").map_err(|_| SpiffeError::BadName { what: "agent" })?;
    validate_name(instance_id, "instance").map_err(|_| SpiffeError::BadName {
        what: "instance id",
    })?;
    Ok(format!(
        "spiffe://{trust_domain}/agent/{agent}/instance/{instance_id}"
    ))
}

/// `spiffe://<trust-domain>/device/<device_id>`.
pub fn spiffe_device(trust_domain: &str, device_id: &str) -> Result<String, SpiffeError> {
    validate_trust_domain(trust_domain)?;
    validate_name(device_id, "device").map_err(|_| SpiffeError::BadName { what: "device id" })?;
    Ok(format!("spiffe://{trust_domain}/device/{device_id}"))
}

/// What a new token says. The caller (the backend) has decided every value;
/// `jti` comes from its entropy source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mint {
    /// `sub`: the user when acting on a user's behalf, else the instance.
    pub sub: String,
    /// The instance's SPIFFE id (`act.sub`).
    pub instance_spiffe: String,
    /// The device's SPIFFE id (`act.act.sub`).
    pub device_spiffe: String,
    /// Agent name.
    pub agent: String,
    /// Grants the token may use.
    pub scope: Vec<GrantName>,
    /// The agent's generation (`gen`).
    pub generation: u64,
    /// RFC 7638 thumbprint of the instance key (`cnf.jkt`).
    pub jkt: String,
    /// Issue time, unix seconds (`iat` and `nbf`).
    pub now: u64,
    /// Seconds until `exp`.
    pub lifetime: u64,
    /// Unique token id (`jti`).
    pub jti: String,
}

/// `act`: who is acting, nesting who they act for (RFC 8693 §4.1).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Actor {
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    act: Option<Box<Actor>>,
}

impl Actor {
    /// `subs[0]` acting, nesting the rest in order.
    fn nest(subs: &[&str]) -> Option<Actor> {
        let (first, rest) = subs.split_first()?;
        Some(Actor {
            sub: (*first).to_owned(),
            act: Actor::nest(rest).map(Box::new),
        })
    }

    /// The nested subjects, outermost first; more than `max` is refused
    /// (the token's length bounds the nesting serde parsed).
    fn flatten(self, max: usize) -> Result<Vec<String>, TokenError> {
        let mut out = Vec::new();
        let mut next = Some(Box::new(self));
        while let Some(a) = next {
            if out.len() == max {
                return Err(TokenError::Malformed("act nests too deep"));
            }
            out.push(a.sub);
            next = a.act;
        }
        Ok(out)
    }
}

/// One token a delegated child's rights descend from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ancestor {
    /// Its instance's SPIFFE id.
    pub instance_spiffe: String,
    /// Its device's SPIFFE id.
    pub device_spiffe: String,
    /// Its `jti`.
    pub jti: String,
    /// Its agent.
    pub agent: String,
    /// Its agent generation.
    pub generation: u64,
}

/// What a delegated child's token carries besides a [`Mint`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lineage {
    /// Every token the child's rights descend from, direct parent first.
    pub ancestors: Vec<Ancestor>,
    /// The caveats the child stays held to, in order.
    pub caveats: Vec<crate::caveat::Caveat>,
}

/// A token's `iat`, read without verifying it: to verify a possibly
/// expired token at its own issue time (RFC 7009 revocation of an expired
/// token of ours). `None` for anything that is not a JWT with an `iat`.
pub fn unverified_iat(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    if payload.len() > MAX_TOKEN_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    #[derive(Deserialize)]
    struct Iat {
        iat: u64,
    }
    serde_json::from_slice::<Iat>(&bytes).ok().map(|c| c.iat)
}

/// The caveats a token says its holder inherited (`cav`), read without
/// verifying it: for a runtime's own pre-checks on the token the backend
/// handed it (the backend applies them itself on every call). Empty for a
/// token minted from an attestation alone.
pub fn unverified_inherited_caveats(token: &str) -> Result<Vec<crate::caveat::Caveat>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong {
            len: token.len(),
            max: MAX_TOKEN_LEN,
        });
    }
    #[derive(Deserialize)]
    struct Cav {
        #[serde(default)]
        cav: Vec<String>,
    }
    let payload = token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .ok_or(TokenError::Malformed("the claims are not base64url"))?;
    let c: Cav = serde_json::from_slice(&payload)
        .map_err(|_| TokenError::Malformed("the claims are not JSON"))?;
    c.cav
        .iter()
        .map(|t| crate::caveat::Caveat::parse(t))
        .collect::<Result<_, _>>()
        .map_err(|_| TokenError::Malformed("an inherited caveat is invalid"))
}

/// Most ancestors a token may name: one per delegation hop.
const MAX_ANCESTORS: usize = crate::caveat::MAX_DELEGATION_DEPTH as usize;
/// Most inherited caveats: a full chain per hop.
const MAX_INHERITED_CAVEATS: usize = crate::caveat::MAX_CAVEATS * MAX_ANCESTORS;

/// `dlg` entries.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct WireAncestor {
    jti: String,
    agent: String,
    #[serde(rename = "gen")]
    generation: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Confirmation {
    jkt: String,
}

/// edgeward's claims beyond the registered ones; jwt-simple flattens them
/// after `iat, exp, nbf, iss, sub, aud, jti`.
#[derive(Serialize)]
struct MintClaims<'a> {
    act: Actor,
    scope: String,
    cnf: Confirmation,
    #[serde(rename = "gen")]
    generation: u64,
    agent: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dlg: Vec<WireAncestor>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cav: Vec<String>,
}

/// The whole payload, as edgeward mints it: parsed strictly after the
/// signature verified.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireAccessClaims {
    iat: u64,
    exp: u64,
    nbf: u64,
    iss: String,
    sub: String,
    aud: String,
    jti: String,
    act: Actor,
    scope: String,
    cnf: Confirmation,
    #[serde(rename = "gen")]
    generation: u64,
    agent: String,
    #[serde(default)]
    dlg: Vec<WireAncestor>,
    #[serde(default)]
    cav: Vec<String>,
}

/// The header as edgeward mints it; every member optional so each absence has
/// its own error, unknown members (`crit`, `jku`, `jwk`, ...) refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireHeader {
    alg: Option<String>,
    kid: Option<String>,
    typ: Option<String>,
}

/// Mints access tokens. The signing key is wiped on drop and never printed.
pub struct TokenIssuer {
    // jwt-simple's key pair holds an ed25519_compact::SecretKey, which wipes
    // itself on drop.
    key: Ed25519KeyPair,
    public: Ed25519PublicKey,
    kid: String,
    issuer: String,
    audience: String,
}

impl TokenIssuer {
    /// An issuer signing with the Ed25519 key of this 32-byte seed. The `kid`
    /// is the key's RFC 7638 thumbprint.
    pub fn new(
        seed: &[u8; 32],
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Result<TokenIssuer, TokenError> {
        let mut s = ed25519_compact::Seed::new(*seed);
        let kp = ed25519_compact::KeyPair::try_from_seed(s);
        // Seed is Copy and not wiped on drop; wipe our copy.
        s.wipe_mut();
        let kp = kp.map_err(|_| TokenError::BadSigningKey)?;
        // seed || public key, the form jwt-simple imports; wiped after use.
        let raw = Zeroizing::new(*kp);
        let public =
            Ed25519PublicKey::from_bytes(&kp.pk[..]).map_err(|_| TokenError::BadSigningKey)?;
        let kid = PublicKey::Ed25519(public).jwk_thumbprint();
        let key = Ed25519KeyPair::from_bytes(&raw[..])
            .map_err(|_| TokenError::BadSigningKey)?
            .with_key_id(&kid);
        Ok(TokenIssuer {
            key,
            public,
            kid,
            issuer: issuer.into(),
            audience: audience.into(),
        })
    }

    /// Use this `kid` instead of the thumbprint.
    pub fn with_kid(mut self, kid: impl Into<String>) -> TokenIssuer {
        self.kid = kid.into();
        self.key = self.key.with_key_id(&self.kid);
        self
    }

    /// The key id put in every token header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key, for [`TokenVerifier::add_key`].
    pub fn public_key(&self) -> Ed25519PublicKey {
        self.public
    }

    /// `iss` of minted tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `aud` of minted tokens.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The public JWK with `kid`, `alg` and `use`.
    pub fn jwk(&self) -> serde_json::Value {
        let mut jwk = PublicKey::Ed25519(self.public).to_jwk();
        if let Some(m) = jwk.as_object_mut() {
            m.insert("kid".into(), self.kid.clone().into());
            m.insert("alg".into(), "EdDSA".into());
            m.insert("use".into(), "sig".into());
        }
        jwk
    }

    /// The JWKS document (`{"keys": [...]}`) with this issuer's key. During a
    /// rotation the backend publishes the keys of several issuers together.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.jwk()] })
    }

    /// Mint a token. `iat` = `nbf` = `m.now`, `exp` = `m.now + m.lifetime`.
    pub fn mint(&self, m: &Mint) -> Result<String, TokenError> {
        self.mint_delegated(m, &Lineage::default())
    }

    /// Mint for a delegated child: `m` describes the child (its instance,
    /// device, agent, key; `sub` stays its parent's), `lineage` what it
    /// descends from and remains held to.
    pub fn mint_delegated(&self, m: &Mint, lineage: &Lineage) -> Result<String, TokenError> {
        if lineage.ancestors.len() > MAX_ANCESTORS || lineage.caveats.len() > MAX_INHERITED_CAVEATS
        {
            return Err(TokenError::InvalidMint("the delegation line is too long"));
        }
        if m.lifetime == 0 {
            return Err(TokenError::InvalidMint("the lifetime is zero"));
        }
        let exp = m
            .now
            .checked_add(m.lifetime)
            .filter(|exp| *exp <= MAX_TIME)
            .ok_or(TokenError::TimeOutOfRange)?;
        if m.sub.is_empty() || m.jti.is_empty() || m.jkt.is_empty() {
            return Err(TokenError::InvalidMint(
                "sub, jti and jkt must not be empty",
            ));
        }
        if !m.instance_spiffe.starts_with("spiffe://") || !m.device_spiffe.starts_with("spiffe://")
        {
            return Err(TokenError::InvalidMint(
                "instance and device must be SPIFFE ids",
            ));
        }
        validate_name(&m.agent, "agent")
            .map_err(|_| TokenError::InvalidMint("the agent name is invalid"))?;
        let mut line = vec![m.instance_spiffe.as_str(), m.device_spiffe.as_str()];
        for a in &lineage.ancestors {
            line.push(&a.instance_spiffe);
            line.push(&a.device_spiffe);
        }
        let custom = MintClaims {
            act: Actor::nest(&line).ok_or(TokenError::InvalidMint("no actor"))?,
            scope: join_scope(&m.scope),
            cnf: Confirmation { jkt: m.jkt.clone() },
            generation: m.generation,
            agent: &m.agent,
            dlg: lineage
                .ancestors
                .iter()
                .map(|a| WireAncestor {
                    jti: a.jti.clone(),
                    agent: a.agent.clone(),
                    generation: a.generation,
                })
                .collect(),
            cav: lineage.caveats.iter().map(|c| c.encode()).collect(),
        };
        // Built field by field: jwt-simple's `Claims::create` would read the
        // system clock.
        let claims = JWTClaims {
            issued_at: Some(UnixTimeStamp::from_secs(m.now)),
            expires_at: Some(UnixTimeStamp::from_secs(exp)),
            invalid_before: Some(UnixTimeStamp::from_secs(m.now)),
            issuer: Some(self.issuer.clone()),
            subject: Some(m.sub.clone()),
            audiences: Some(Audiences::AsString(self.audience.clone())),
            jwt_id: Some(m.jti.clone()),
            nonce: None,
            custom,
        };
        let options = HeaderOptions {
            signature_type: Some(ACCESS_TOKEN_TYP.into()),
            ..HeaderOptions::default()
        };
        let token = self
            .key
            .sign_with_options(claims, &options)
            .map_err(|e| TokenError::Signing(e.to_string()))?;
        // Never mint what `verify` would refuse (a long delegation line).
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::InvalidMint(
                "the token would be longer than a verifier accepts",
            ));
        }
        Ok(token)
    }
}

fn join_scope(scope: &[GrantName]) -> String {
    let names: Vec<&str> = scope.iter().map(GrantName::as_str).collect();
    names.join(" ")
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// Verifies access tokens against known keys, one issuer and one audience.
pub struct TokenVerifier {
    issuer: String,
    audience: String,
    tolerance: u64,
    keys: HashMap<String, JwtPublicKey>,
}

impl TokenVerifier {
    /// A verifier with no keys yet. `tolerance_secs` is the clock drift
    /// allowed on `exp`, `nbf` and `iat`, capped at [`MAX_TOLERANCE_SECS`].
    pub fn new(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        tolerance_secs: u64,
    ) -> TokenVerifier {
        TokenVerifier {
            issuer: issuer.into(),
            audience: audience.into(),
            tolerance: tolerance_secs.min(MAX_TOLERANCE_SECS),
            keys: HashMap::new(),
        }
    }

    /// Trust `key` for tokens whose header names `kid`. Replaces an earlier
    /// key with the same `kid`.
    pub fn add_key(&mut self, kid: impl Into<String>, key: Ed25519PublicKey) {
        // Invariant: `Ed25519PublicKey` already passed ed25519_compact's
        // `validate()`, which is exactly the check jwt-simple's `from_bytes`
        // runs, so this cannot fail.
        let jwt_key = JwtPublicKey::from_bytes(key.as_bytes())
            .expect("a validated Ed25519 public key is accepted by jwt-simple");
        self.keys.insert(kid.into(), jwt_key);
    }

    /// Stop trusting the key named `kid`. Returns whether it was known.
    pub fn remove_key(&mut self, kid: &str) -> bool {
        self.keys.remove(kid).is_some()
    }

    /// The clock tolerance in force, seconds.
    pub fn tolerance_secs(&self) -> u64 {
        self.tolerance
    }

    /// Verify `token` at time `now` (unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<VerifiedToken, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong {
                len: token.len(),
                max: MAX_TOKEN_LEN,
            });
        }
        // jwt-simple adds the tolerance to `now` in 32.32 fixed point.
        if now.saturating_add(self.tolerance) > MAX_TIME {
            return Err(TokenError::TimeOutOfRange);
        }
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not three dot-separated parts"));
        };

        // The header is read here, before jwt-simple, to pin the algorithm
        // exactly (jwt-simple also accepts the alias "Ed25519"), to refuse
        // unknown header members and to pick the key by kid.
        let header = URL_SAFE_NO_PAD
            .decode(h64)
            .map_err(|_| TokenError::Malformed("the header is not base64url"))?;
        let header: WireHeader = serde_json::from_slice(&header)
            .map_err(|_| TokenError::Malformed("the header is not what edgeward mints"))?;
        if header.alg.as_deref() != Some("EdDSA") {
            return Err(TokenError::WrongAlgorithm);
        }
        if !header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP))
        {
            return Err(TokenError::WrongType);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.keys.get(&kid).ok_or(TokenError::UnknownKey)?;

        let options = VerificationOptions {
            required_signature_type: Some(ACCESS_TOKEN_TYP.into()),
            required_key_id: Some(kid.clone()),
            allowed_issuers: Some(HashSet::from([self.issuer.clone()])),
            allowed_audiences: Some(HashSet::from([self.audience.clone()])),
            // Never jwt-simple's 15-minute default.
            time_tolerance: Some(Duration::from_secs(self.tolerance)),
            // Injected time: jwt-simple then never reads the system clock.
            artificial_time: Some(UnixTimeStamp::from_secs(now)),
            max_token_length: Some(MAX_TOKEN_LEN),
            max_header_length: Some(1024),
            accept_future: false,
            ..VerificationOptions::default()
        };
        key.verify_token::<NoCustomClaims>(token, Some(options))
            .map_err(|e| map_jwt_error(e, token.len()))?;

        // The signature verified, so the payload is ours; parse it strictly
        // and re-check what jwt-simple checks loosely or not at all.
        let payload = URL_SAFE_NO_PAD
            .decode(p64)
            .map_err(|_| TokenError::Malformed("the claims are not base64url"))?;
        let c: WireAccessClaims = serde_json::from_slice(&payload)
            .map_err(|_| TokenError::Malformed("the claims are not what edgeward mints"))?;
        if c.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if c.aud != self.audience {
            return Err(TokenError::WrongAudience);
        }
        let latest_start = now + self.tolerance;
        if c.nbf > latest_start || c.iat > latest_start {
            return Err(TokenError::NotYetValid);
        }
        // RFC 7519 §4.1.4: the token must not be accepted on or after `exp`.
        if now >= c.exp.saturating_add(self.tolerance) {
            return Err(TokenError::Expired);
        }
        let scope = if c.scope.is_empty() {
            Vec::new()
        } else {
            c.scope
                .split(' ')
                .map(GrantName::new)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| TokenError::Malformed("the scope is not a list of grant names"))?
        };
        // `act` is pairs of (instance, device): the token's own, then one
        // per ancestor named in `dlg`.
        let line = c.act.flatten(2 * (MAX_ANCESTORS + 1))?;
        if line.len() % 2 != 0 || line.len() / 2 != c.dlg.len() + 1 {
            return Err(TokenError::Malformed(
                "act does not name instance and device for the token and each ancestor",
            ));
        }
        if c.cav.len() > MAX_INHERITED_CAVEATS {
            return Err(TokenError::Malformed("too many inherited caveats"));
        }
        let caveats = c
            .cav
            .iter()
            .map(|text| crate::caveat::Caveat::parse(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| TokenError::Malformed("an inherited caveat is invalid"))?;
        let mut pairs = line.chunks_exact(2).map(|p| (p[0].clone(), p[1].clone()));
        let (instance, device) = pairs
            .next()
            .ok_or(TokenError::Malformed("act names no instance"))?;
        let ancestors = pairs
            .zip(c.dlg)
            .map(|((instance_spiffe, device_spiffe), a)| Ancestor {
                instance_spiffe,
                device_spiffe,
                jti: a.jti,
                agent: a.agent,
                generation: a.generation,
            })
            .collect();
        Ok(VerifiedToken {
            kid,
            sub: c.sub,
            agent: c.agent,
            instance,
            device,
            ancestors,
            caveats,
            scope,
            iat: c.iat,
            nbf: c.nbf,
            exp: c.exp,
            jti: c.jti,
            jkt: c.cnf.jkt,
            generation: c.generation,
        })
    }
}

/// jwt-simple's errors, mapped one by one. It does distinguish expired from
/// not-yet-valid; a future `iat` ("clock drift") counts as not yet valid.
fn map_jwt_error(e: jwt_simple::Error, len: usize) -> TokenError {
    use jwt_simple::JWTError as J;
    match e.downcast_ref::<J>() {
        Some(J::TokenTooLong) => TokenError::TooLong {
            len,
            max: MAX_TOKEN_LEN,
        },
        Some(J::AlgorithmMismatch) => TokenError::WrongAlgorithm,
        Some(J::RequiredSignatureTypeMismatch | J::NotJWT) => TokenError::WrongType,
        Some(J::KeyIdentifierMismatch | J::MissingJWTKeyIdentifier) => TokenError::UnknownKey,
        Some(J::InvalidSignature) => TokenError::BadSignature,
        Some(J::TokenHasExpired) => TokenError::Expired,
        Some(J::TokenNotValidYet | J::ClockDrift) => TokenError::NotYetValid,
        Some(J::RequiredIssuerMismatch | J::RequiredIssuerMissing) => TokenError::WrongIssuer,
        Some(J::RequiredAudienceMismatch | J::RequiredAudienceMissing) => TokenError::WrongAudience,
        Some(J::UnknownCriticalExtension) => {
            TokenError::Malformed("the header has critical extensions")
        }
        Some(J::HeaderTooLarge) => TokenError::Malformed("the header is too large"),
        // Base64, JSON, and ed25519 signature-length errors come through as
        // other error types.
        _ => TokenError::Malformed("jwt-simple could not decode the token"),
    }
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("TokenVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("tolerance", &self.tolerance)
            .field("kids", &kids)
            .finish()
    }
}

/// A token whose signature, type, issuer, audience and times verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    kid: String,
    sub: String,
    agent: String,
    instance: String,
    device: String,
    scope: Vec<GrantName>,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: String,
    jkt: String,
    generation: u64,
    ancestors: Vec<Ancestor>,
    caveats: Vec<crate::caveat::Caveat>,
}

impl VerifiedToken {
    /// The tokens a delegated child's rights descend from, direct parent
    /// first (empty for a token minted from an attestation alone).
    pub fn ancestors(&self) -> &[Ancestor] {
        &self.ancestors
    }

    /// The caveats a delegated child inherited (applied before any chain it
    /// presents).
    pub fn inherited_caveats(&self) -> &[crate::caveat::Caveat] {
        &self.caveats
    }

    /// The signing key's id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `sub`.
    pub fn sub(&self) -> &str {
        &self.sub
    }

    /// The user the instance acts for: `sub` when it is not the instance
    /// itself (RFC 8693 delegation), else `None`.
    pub fn on_behalf_of(&self) -> Option<&str> {
        // A delegated child keeps its parent's `sub`: that is a user only
        // when it is none of the instances in the line.
        let an_instance = self.sub == self.instance
            || self.ancestors.iter().any(|a| a.instance_spiffe == self.sub);
        (!an_instance).then_some(self.sub.as_str())
    }

    /// The agent name.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// The instance's SPIFFE id (`act.sub`).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The device's SPIFFE id (`act.act.sub`).
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The grants the token may use.
    pub fn scope(&self) -> &[GrantName] {
        &self.scope
    }

    /// Issue time.
    pub fn iat(&self) -> u64 {
        self.iat
    }

    /// Not-before time.
    pub fn nbf(&self) -> u64 {
        self.nbf
    }

    /// Expiry time.
    pub fn exp(&self) -> u64 {
        self.exp
    }

    /// Token id.
    pub fn jti(&self) -> &str {
        &self.jti
    }

    /// Thumbprint of the instance key the token is bound to.
    pub fn jkt(&self) -> &str {
        &self.jkt
    }

    /// The agent generation it was minted for.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_767_225_600;
    const ISS: &str = "https://edgeward.test";
    const AUD: &str = "edgeward-egress";

    fn mint_req() -> Mint {
        Mint {
            sub: spiffe_instance("edgeward.test", "hello", "abc123").unwrap(),
            instance_spiffe: spiffe_instance("edgeward.test", "hello", "abc123").unwrap(),
            device_spiffe: spiffe_device("edgeward.test", "dev-1").unwrap(),
            agent: "hello".into(),
            scope: vec![
                GrantName::new("weather").unwrap(),
                GrantName::new("mail").unwrap(),
            ],
            generation: 3,
            jkt: "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k".into(),
            now: NOW,
            lifetime: 300,
            jti: "00112233445566778899aabbccddeeff".into(),
        }
    }

    fn setup() -> (TokenIssuer, TokenVerifier) {
        let issuer = TokenIssuer::new(&[7; 32], ISS, AUD).unwrap();
        let mut verifier = TokenVerifier::new(ISS, AUD, 5);
        verifier.add_key(issuer.kid(), issuer.public_key());
        (issuer, verifier)
    }

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn a_delegated_child_token_nests_its_line_and_keeps_its_parents_subject() {
        let (issuer, verifier) = setup();
        let parent = mint_req();
        let child = Mint {
            sub: parent.instance_spiffe.clone(),
            instance_spiffe: spiffe_instance("edgeward.test", "reader", "def456").unwrap(),
            device_spiffe: spiffe_device("edgeward.test", "dev-2").unwrap(),
            agent: "reader".into(),
            jti: "child-jti".into(),
            ..mint_req()
        };
        let lineage = Lineage {
            ancestors: vec![Ancestor {
                instance_spiffe: parent.instance_spiffe.clone(),
                device_spiffe: parent.device_spiffe.clone(),
                jti: parent.jti.clone(),
                agent: "hello".into(),
                generation: 3,
            }],
            caveats: vec![
                crate::caveat::Caveat::Agent("reader".into()),
                crate::caveat::Caveat::methods(["GET"]).unwrap(),
            ],
        };
        let token = issuer.mint_delegated(&child, &lineage).unwrap();
        let claims = decode(token.split('.').nth(1).unwrap());
        assert_eq!(
            claims["act"],
            json!({
                "sub": "spiffe://edgeward.test/agent/reader/instance/def456",
                "act": {"sub": "spiffe://edgeward.test/device/dev-2",
                    "act": {"sub": "spiffe://edgeward.test/agent/hello/instance/abc123",
                        "act": {"sub": "spiffe://edgeward.test/device/dev-1"}}}
            })
        );
        assert_eq!(
            claims["dlg"],
            json!([{"jti": parent.jti, "agent": "hello", "gen": 3}])
        );
        assert_eq!(claims["cav"], json!(["agent:reader", "methods:GET"]));
        let t = verifier.verify(&token, NOW).unwrap();
        assert_eq!(t.ancestors(), &lineage.ancestors[..]);
        assert_eq!(t.inherited_caveats(), &lineage.caveats[..]);
        assert_eq!(t.device(), "spiffe://edgeward.test/device/dev-2");
        // The parent instance is not a user.
        assert_eq!(t.on_behalf_of(), None);
        let for_user = issuer
            .mint_delegated(
                &Mint {
                    sub: "user:corp/alice".into(),
                    ..child.clone()
                },
                &lineage,
            )
            .unwrap();
        assert_eq!(
            verifier.verify(&for_user, NOW).unwrap().on_behalf_of(),
            Some("user:corp/alice")
        );
        // Too long a line is refused at minting.
        let long = Lineage {
            ancestors: vec![lineage.ancestors[0].clone(); MAX_ANCESTORS + 1],
            caveats: vec![],
        };
        assert!(issuer.mint_delegated(&child, &long).is_err());
    }

    #[test]
    fn minted_tokens_have_the_documented_shape() {
        let (issuer, verifier) = setup();
        let token = issuer.mint(&mint_req()).unwrap();
        let mut parts = token.split('.');
        let header = decode(parts.next().unwrap());
        assert_eq!(
            header,
            json!({"alg": "EdDSA", "kid": issuer.kid(), "typ": "at+jwt"})
        );
        let claims = decode(parts.next().unwrap());
        assert_eq!(
            claims,
            json!({
                "iat": NOW, "exp": NOW + 300, "nbf": NOW,
                "iss": ISS, "sub": "spiffe://edgeward.test/agent/hello/instance/abc123",
                "aud": AUD, "jti": "00112233445566778899aabbccddeeff",
                "act": {
                    "sub": "spiffe://edgeward.test/agent/hello/instance/abc123",
                    "act": {"sub": "spiffe://edgeward.test/device/dev-1"}
                },
                "scope": "weather mail",
                "cnf": {"jkt": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"},
                "gen": 3,
                "agent": "hello"
            })
        );
        let t = verifier.verify(&token, NOW + 10).unwrap();
        assert_eq!(t.kid(), issuer.kid());
        assert_eq!(
            t.sub(),
            "spiffe://edgeward.test/agent/hello/instance/abc123"
        );
        assert_eq!(t.instance(), t.sub());
        assert_eq!(t.on_behalf_of(), None);
        // Minted for a user: `sub` is the user, the instance stays the actor.
        let for_user = issuer
            .mint(&Mint {
                sub: "user:corp/alice".into(),
                ..mint_req()
            })
            .unwrap();
        let u = verifier.verify(&for_user, NOW).unwrap();
        assert_eq!(u.on_behalf_of(), Some("user:corp/alice"));
        assert_eq!(u.instance(), t.instance());
        assert_eq!(t.device(), "spiffe://edgeward.test/device/dev-1");
        assert_eq!(t.agent(), "hello");
        assert_eq!(
            t.scope(),
            &[
                GrantName::new("weather").unwrap(),
                GrantName::new("mail").unwrap()
            ]
        );
        assert_eq!((t.iat(), t.nbf(), t.exp()), (NOW, NOW, NOW + 300));
        assert_eq!(t.jti(), "00112233445566778899aabbccddeeff");
        assert_eq!(t.jkt(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        assert_eq!(t.generation(), 3);
    }

    #[test]
    fn time_bounds_use_the_given_tolerance() {
        let (issuer, verifier) = setup();
        let token = issuer.mint(&mint_req()).unwrap();
        assert!(verifier.verify(&token, NOW - 5).is_ok());
        assert_eq!(
            verifier.verify(&token, NOW - 6),
            Err(TokenError::NotYetValid)
        );
        assert!(verifier.verify(&token, NOW + 304).is_ok());
        // jwt-simple would still accept at exp + tolerance; edgeward does not.
        assert_eq!(verifier.verify(&token, NOW + 305), Err(TokenError::Expired));
        assert_eq!(verifier.verify(&token, NOW + 306), Err(TokenError::Expired));
        // Far outside: never jwt-simple's 15-minute default.
        assert_eq!(
            verifier.verify(&token, NOW + 300 + 600),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verifier.verify(&token, MAX_TIME),
            Err(TokenError::TimeOutOfRange)
        );
        // Zero tolerance is exact.
        let mut strict = TokenVerifier::new(ISS, AUD, 0);
        strict.add_key(issuer.kid(), issuer.public_key());
        assert!(strict.verify(&token, NOW).is_ok());
        assert!(strict.verify(&token, NOW + 299).is_ok());
        assert_eq!(strict.verify(&token, NOW + 300), Err(TokenError::Expired));
        assert_eq!(strict.verify(&token, NOW - 1), Err(TokenError::NotYetValid));
        // Tolerance is capped.
        assert_eq!(
            TokenVerifier::new(ISS, AUD, 10_000).tolerance_secs(),
            MAX_TOLERANCE_SECS
        );
    }

    #[test]
    fn issuer_audience_key_and_rotation() {
        let (issuer, verifier) = setup();
        let token = issuer.mint(&mint_req()).unwrap();

        let other_iss = TokenIssuer::new(&[7; 32], "https://evil.test", AUD).unwrap();
        assert_eq!(
            verifier.verify(&other_iss.mint(&mint_req()).unwrap(), NOW),
            Err(TokenError::WrongIssuer)
        );
        let other_aud = TokenIssuer::new(&[7; 32], ISS, "elsewhere").unwrap();
        assert_eq!(
            verifier.verify(&other_aud.mint(&mint_req()).unwrap(), NOW),
            Err(TokenError::WrongAudience)
        );
        // Another key claiming the known kid.
        let impostor = TokenIssuer::new(&[8; 32], ISS, AUD)
            .unwrap()
            .with_kid(issuer.kid());
        assert_eq!(
            verifier.verify(&impostor.mint(&mint_req()).unwrap(), NOW),
            Err(TokenError::BadSignature)
        );
        // Another key with its own kid.
        let stranger = TokenIssuer::new(&[8; 32], ISS, AUD).unwrap();
        assert_eq!(
            verifier.verify(&stranger.mint(&mint_req()).unwrap(), NOW),
            Err(TokenError::UnknownKey)
        );

        // Rotation: both keys trusted, then the old one dropped.
        let mut rotating = TokenVerifier::new(ISS, AUD, 5);
        rotating.add_key(issuer.kid(), issuer.public_key());
        rotating.add_key(stranger.kid(), stranger.public_key());
        assert!(rotating.verify(&token, NOW).is_ok());
        assert!(
            rotating
                .verify(&stranger.mint(&mint_req()).unwrap(), NOW)
                .is_ok()
        );
        assert!(rotating.remove_key(issuer.kid()));
        assert_eq!(rotating.verify(&token, NOW), Err(TokenError::UnknownKey));
    }

    #[test]
    fn header_refusals() {
        let (issuer, verifier) = setup();
        let token = issuer.mint(&mint_req()).unwrap();
        let (_, rest) = token.split_once('.').unwrap();
        let with_header = |h: serde_json::Value| {
            format!(
                "{}.{rest}",
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&h).unwrap())
            )
        };
        let kid = issuer.kid();
        for (header, expected) in [
            (
                json!({"alg": "none", "kid": kid, "typ": "at+jwt"}),
                TokenError::WrongAlgorithm,
            ),
            (
                json!({"alg": "HS256", "kid": kid, "typ": "at+jwt"}),
                TokenError::WrongAlgorithm,
            ),
            (
                json!({"alg": "Ed25519", "kid": kid, "typ": "at+jwt"}),
                TokenError::WrongAlgorithm,
            ),
            (
                json!({"kid": kid, "typ": "at+jwt"}),
                TokenError::WrongAlgorithm,
            ),
            (
                json!({"alg": "EdDSA", "kid": kid, "typ": "JWT"}),
                TokenError::WrongType,
            ),
            (json!({"alg": "EdDSA", "kid": kid}), TokenError::WrongType),
            (
                json!({"alg": "EdDSA", "typ": "at+jwt"}),
                TokenError::UnknownKey,
            ),
            (
                json!({"alg": "EdDSA", "kid": "nope", "typ": "at+jwt"}),
                TokenError::UnknownKey,
            ),
        ] {
            assert_eq!(
                verifier.verify(&with_header(header.clone()), NOW),
                Err(expected),
                "{header}"
            );
        }
        // Same members, different bytes: the signature covers the header.
        let spaced = format!(r#"{{"alg":"EdDSA", "kid":"{kid}","typ":"at+jwt"}}"#);
        assert_eq!(
            verifier.verify(&format!("{}.{rest}", URL_SAFE_NO_PAD.encode(spaced)), NOW),
            Err(TokenError::BadSignature)
        );
        assert!(matches!(
            verifier.verify(
                &with_header(json!({"alg": "EdDSA", "kid": kid, "typ": "at+jwt", "crit": ["x"]})),
                NOW
            ),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            verifier.verify(&"a".repeat(MAX_TOKEN_LEN + 1), NOW),
            Err(TokenError::TooLong { .. })
        ));
        assert!(matches!(
            verifier.verify("a.b", NOW),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            verifier.verify(&format!("{token}="), NOW),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            verifier.verify("", NOW),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn mint_refusals() {
        let (issuer, _) = setup();
        let m = |f: fn(&mut Mint)| {
            let mut r = mint_req();
            f(&mut r);
            issuer.mint(&r)
        };
        assert!(matches!(
            m(|r| r.lifetime = 0),
            Err(TokenError::InvalidMint(_))
        ));
        assert_eq!(m(|r| r.now = MAX_TIME), Err(TokenError::TimeOutOfRange));
        assert_eq!(
            m(|r| r.lifetime = u64::MAX),
            Err(TokenError::TimeOutOfRange)
        );
        assert!(matches!(
            m(|r| r.jti.clear()),
            Err(TokenError::InvalidMint(_))
        ));
        assert!(matches!(
            m(|r| r.agent = "A b".into()),
            Err(TokenError::InvalidMint(_))
        ));
        assert!(matches!(
            m(|r| r.device_spiffe = "dev-1".into()),
            Err(TokenError::InvalidMint(_))
        ));
        assert_eq!(
            TokenIssuer::new(&[0; 32], ISS, AUD).unwrap_err(),
            TokenError::BadSigningKey
        );
        // An empty scope is a valid (if useless) token.
        let (issuer, verifier) = setup();
        let mut r = mint_req();
        r.scope.clear();
        let t = verifier.verify(&issuer.mint(&r).unwrap(), NOW).unwrap();
        assert!(t.scope().is_empty());
    }

    #[test]
    fn jwks_and_kid() {
        let (issuer, _) = setup();
        let jwks = issuer.jwks();
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert_eq!(key["alg"], "EdDSA");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["kid"], issuer.kid());
        assert_eq!(
            PublicKey::from_jwk(key).unwrap(),
            PublicKey::Ed25519(issuer.public_key())
        );
        assert_eq!(
            issuer.kid(),
            PublicKey::Ed25519(issuer.public_key()).jwk_thumbprint()
        );
        let renamed = TokenIssuer::new(&[7; 32], ISS, AUD).unwrap().with_kid("k1");
        assert_eq!(renamed.kid(), "k1");
        assert_eq!(renamed.jwks()["keys"][0]["kid"], "k1");
        assert!(!format!("{renamed:?}").contains("0707"));
    }

    #[test]
    fn spiffe_ids_are_validated() {
        assert_eq!(
            spiffe_instance("example.org", "hello", "i-1").unwrap(),
            "spiffe://example.org/agent/hello/instance/i-1"
        );
        assert_eq!(
            spiffe_device("example.org", "dev_1").unwrap(),
            "spiffe://example.org/device/dev_1"
        );
        assert_eq!(
            spiffe_instance("Example.org", "hello", "i"),
            Err(SpiffeError::BadTrustDomain)
        );
        assert_eq!(
            spiffe_instance("example.org/x", "hello", "i"),
            Err(SpiffeError::BadTrustDomain)
        );
        assert_eq!(spiffe_device("", "d"), Err(SpiffeError::BadTrustDomain));
        assert_eq!(
            spiffe_instance("example.org", "../x", "i"),
            Err(SpiffeError::BadName { what: "agent" })
        );
        assert_eq!(
            spiffe_instance("example.org", "a", "i/j"),
            Err(SpiffeError::BadName {
                what: "instance id"
            })
        );
        assert_eq!(
            spiffe_device("example.org", "D"),
            Err(SpiffeError::BadName { what: "device id" })
        );
    }
}
