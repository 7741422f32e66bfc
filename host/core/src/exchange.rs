//! The token exchange's decisions (RFC 8693), pure, for every backend: the
//! native one and the Spin component call these in the same order, with
//! their own storage around them, so both refuse the same requests with
//! the same error codes.
//!
//! Order, and why:
//! 1. [`ExchangeRequest::parse`] the form. Until the device signature
//!    verified, every refusal is the same `invalid_grant` on the wire
//!    ([`ExchangeError::before`]): an unauthenticated caller learns nothing.
//! 2. The backend verifies the attestation, a user assertion or a
//!    delegation chain ([`check_hand_off`]), uses up the nonce, and asks
//!    its revocations.
//! 3. [`authorize`]: the agent may run on the device, the component digest
//!    is allowed, the grants are the agent's (and the delegation's); the
//!    lifetime is capped.
//! 4. [`mint_claims`] and [`lineage_of`]: what the token says.

use crate::attest::VerifiedAttestation;
use crate::caveat::{Caveat, Rights};
use crate::config::{AgentConfig, EMBEDDED_DEVICE};
use crate::digest::ComponentDigest;
use crate::egress::{
    ACCESS_TOKEN_TYPE, ATTESTATION_TOKEN_TYPE, JWT_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT,
};
use crate::grant::GrantName;
use crate::token::{Ancestor, Lineage, Mint, VerifiedToken};
use std::collections::HashMap;

/// A refused exchange: the OAuth error, whether the caller had
/// authenticated, and the full reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}: {reason}")]
pub struct ExchangeError {
    /// OAuth error code (`invalid_request`, `invalid_grant`, `invalid_scope`,
    /// `server_error`).
    pub error: &'static str,
    /// Whether the device signature had verified; before that, the wire
    /// answer is always the same.
    pub authenticated: bool,
    /// Full detail, for the log and the audit record (and for the caller
    /// once authenticated).
    pub reason: String,
}

impl ExchangeError {
    /// A refusal before the device signature verified.
    pub fn before(reason: impl Into<String>) -> ExchangeError {
        ExchangeError {
            error: "invalid_grant",
            authenticated: false,
            reason: reason.into(),
        }
    }

    /// A refusal of an authenticated caller.
    pub fn after(error: &'static str, reason: impl Into<String>) -> ExchangeError {
        ExchangeError {
            error,
            authenticated: true,
            reason: reason.into(),
        }
    }

    /// The description the caller sees.
    pub fn public_description(&self) -> &str {
        if self.authenticated {
            &self.reason
        } else {
            "the attestation was not accepted"
        }
    }
}

/// Whom the exchanged token is for, besides the attested instance. Its
/// `Debug` names the kind, never the assertion or the chain.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// The instance itself.
    Instance,
    /// A user's assertion (a JWT): the instance acts for the user.
    User(&'a str),
    /// A parent's access token narrowed by a caveat chain: the instance
    /// becomes a delegated child.
    Delegation(&'a str),
}

impl<'a> Subject<'a> {
    /// The user's assertion, if the token is for a user.
    pub fn user_assertion(self) -> Option<&'a str> {
        match self {
            Subject::User(jwt) => Some(jwt),
            _ => None,
        }
    }

    /// The parent's chain, if the instance is a delegated child.
    pub fn delegation(self) -> Option<&'a str> {
        match self {
            Subject::Delegation(chain) => Some(chain),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Subject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Subject::Instance => "Instance",
            Subject::User(_) => "User([REDACTED])",
            Subject::Delegation(_) => "Delegation([REDACTED])",
        })
    }
}

/// A parsed exchange request. Its `Debug` never shows the attestation,
/// the assertion or the chain.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ExchangeRequest<'a> {
    /// The device-signed attestation.
    pub actor: &'a str,
    /// Whom the token is for.
    pub subject: Subject<'a>,
}

impl std::fmt::Debug for ExchangeRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeRequest")
            .field("actor", &"[REDACTED]")
            .field("subject", &self.subject)
            .finish()
    }
}

impl<'a> ExchangeRequest<'a> {
    /// Read the decoded form body.
    pub fn parse(form: &'a HashMap<String, String>) -> Result<ExchangeRequest<'a>, ExchangeError> {
        let field = |name: &str| form.get(name).map(String::as_str);
        if field("grant_type") != Some(TOKEN_EXCHANGE_GRANT) {
            return Err(ExchangeError::before("grant_type is not token-exchange"));
        }
        let actor = field("actor_token").ok_or_else(|| ExchangeError::before("no actor_token"))?;
        let subject =
            field("subject_token").ok_or_else(|| ExchangeError::before("no subject_token"))?;
        if field("actor_token_type") != Some(ATTESTATION_TOKEN_TYPE) {
            return Err(ExchangeError::before(
                "actor_token_type is not the attestation type",
            ));
        }
        let subject = match field("subject_token_type") {
            Some(ATTESTATION_TOKEN_TYPE) if subject == actor => Subject::Instance,
            Some(ATTESTATION_TOKEN_TYPE) => {
                return Err(ExchangeError::before(
                    "subject_token differs from actor_token but is typed as the attestation",
                ));
            }
            Some(JWT_TOKEN_TYPE) => Subject::User(subject),
            Some(ACCESS_TOKEN_TYPE) => Subject::Delegation(subject),
            _ => {
                return Err(ExchangeError::before(
                    "subject_token_type is neither the attestation, a JWT nor an access token",
                ));
            }
        };
        Ok(ExchangeRequest { actor, subject })
    }
}

/// A parent's chain presented for a delegated child's exchange, after it
/// verified as an access token (`caveats` are the chain's, `rights` what it
/// leaves): it must hand off to a new key after naming the sub-agent (so a
/// hop costs depth and a holder cannot re-mint itself under another name),
/// to this instance's key, for this agent.
pub fn check_hand_off(
    token: &VerifiedToken,
    caveats: &[Caveat],
    rights: &Rights,
    att: &VerifiedAttestation,
) -> Result<(), ExchangeError> {
    let refused = |reason: String| {
        ExchangeError::after("invalid_grant", format!("delegation refused: {reason}"))
    };
    let last = |want: fn(&Caveat) -> bool| caveats.iter().rposition(want);
    let handed_off = match (
        last(|c| matches!(c, Caveat::Agent(_))),
        last(|c| matches!(c, Caveat::Holder(_))),
    ) {
        (Some(agent), Some(holder)) => holder > agent,
        _ => false,
    };
    if !handed_off || rights.holder == token.jkt() {
        return Err(refused(
            "the chain does not hand off to a new key after naming the sub-agent".into(),
        ));
    }
    if rights.holder != att.instance_key().jwk_thumbprint() {
        return Err(refused(
            "the chain is not narrowed for this instance's key (its last holder differs)".into(),
        ));
    }
    if rights.agents.last().map(String::as_str) != Some(att.agent()) {
        return Err(refused(format!(
            "the chain does not delegate to agent {}",
            att.agent()
        )));
    }
    Ok(())
}

/// What a delegated child's token descends from: its parent (the token the
/// chain was made from) and the parent's own ancestors; and the caveats it
/// stays held to: the parent's inherited ones, then the chain's.
pub fn lineage_of(parent: &VerifiedToken, chain: &[Caveat]) -> Lineage {
    let mut ancestors = vec![Ancestor {
        instance_spiffe: parent.instance().to_owned(),
        device_spiffe: parent.device().to_owned(),
        jti: parent.jti().to_owned(),
        agent: parent.agent().to_owned(),
        generation: parent.generation(),
    }];
    ancestors.extend(parent.ancestors().iter().cloned());
    let mut caveats = parent.inherited_caveats().to_vec();
    caveats.extend(chain.iter().cloned());
    Lineage { ancestors, caveats }
}

/// The registry's word on an agent, as the exchange reads it (a view of
/// the native registry's record or of the config's `[[agent]]`).
#[derive(Debug, Clone, Copy)]
pub struct AgentRules<'a> {
    /// Its name.
    pub name: &'a str,
    /// Devices that may run it.
    pub devices: &'a [String],
    /// Component digests it may run as.
    pub digests: &'a [ComponentDigest],
    /// Grants it holds.
    pub grants: &'a [GrantName],
    /// Longest token lifetime, seconds.
    pub max_token_lifetime: u64,
}

impl<'a> From<&'a AgentConfig> for AgentRules<'a> {
    fn from(a: &'a AgentConfig) -> Self {
        AgentRules {
            name: &a.name,
            devices: &a.devices,
            digests: &a.digests,
            grants: &a.grants,
            max_token_lifetime: a.max_token_lifetime,
        }
    }
}

/// A parent a delegated child's exchange presented, as [`authorize`] needs
/// it.
#[derive(Debug, Clone, Copy)]
pub struct Parent<'a> {
    /// The grants the chain still holds.
    pub grants: &'a [GrantName],
    /// When the chain or the parent's token ends, whichever is first.
    pub expires_at: u64,
}

/// What an exchange may be granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized {
    /// The granted grants.
    pub scope: Vec<GrantName>,
    /// Seconds the token lives.
    pub lifetime: u64,
}

/// The agent's rules for an attested instance: the device may run it, the
/// component is allowed, the requested grants (none: all it holds, or all
/// the delegation still holds) are its own and the delegation's; the
/// lifetime is the request's (or `default_lifetime`), capped by the agent,
/// the user's assertion and the parent.
pub fn authorize(
    agent: AgentRules<'_>,
    device: &str,
    att: &VerifiedAttestation,
    user_expires_at: Option<u64>,
    parent: Option<Parent<'_>>,
    default_lifetime: u64,
    now: u64,
) -> Result<Authorized, ExchangeError> {
    let name = agent.name;
    if device != EMBEDDED_DEVICE && !agent.devices.iter().any(|d| d == device) {
        return Err(ExchangeError::after(
            "invalid_grant",
            format!("device {device} is not allowed to run agent {name}"),
        ));
    }
    if !agent.digests.contains(att.digest()) {
        return Err(ExchangeError::after(
            "invalid_grant",
            format!("component {} is not allowed for agent {name}", att.digest()),
        ));
    }
    let scope: Vec<GrantName> = if att.grants().is_empty() {
        let mut all = agent.grants.to_vec();
        if let Some(p) = parent {
            all.retain(|g| p.grants.contains(g));
        }
        all
    } else {
        att.grants().to_vec()
    };
    let beyond = |held: &[GrantName]| -> Vec<&str> {
        scope
            .iter()
            .filter(|g| !held.contains(g))
            .map(GrantName::as_str)
            .collect()
    };
    if let Some(p) = parent {
        let beyond = beyond(p.grants);
        if !beyond.is_empty() {
            return Err(ExchangeError::after(
                "invalid_scope",
                format!(
                    "the delegation does not cover grant(s) {}",
                    beyond.join(", ")
                ),
            ));
        }
    }
    let not_held = beyond(agent.grants);
    if !not_held.is_empty() {
        return Err(ExchangeError::after(
            "invalid_scope",
            format!(
                "agent {name} does not hold grant(s) {}",
                not_held.join(", ")
            ),
        ));
    }
    let requested = if att.lifetime() == 0 {
        default_lifetime
    } else {
        att.lifetime()
    };
    let mut lifetime = requested.min(agent.max_token_lifetime);
    if let Some(expires_at) = user_expires_at {
        // Acting for a user ends when the user's assertion does.
        let left = expires_at.saturating_sub(now);
        if left == 0 {
            return Err(ExchangeError::after(
                "invalid_grant",
                "user assertion refused: it expires now",
            ));
        }
        lifetime = lifetime.min(left);
    }
    if let Some(p) = parent {
        // A child's token ends when its chain or its parent's token does.
        let left = p.expires_at.saturating_sub(now);
        if left == 0 {
            return Err(ExchangeError::after(
                "invalid_grant",
                "delegation refused: it expires now",
            ));
        }
        lifetime = lifetime.min(left);
    }
    Ok(Authorized { scope, lifetime })
}

/// Who a minted token is about.
#[derive(Debug, Clone, Copy)]
pub struct Minting<'a> {
    /// The SPIFFE trust domain.
    pub trust_domain: &'a str,
    /// The device.
    pub device: &'a str,
    /// The agent.
    pub agent: &'a str,
    /// Its registry generation.
    pub generation: u64,
    /// The derived instance id.
    pub instance_id: &'a str,
    /// The instance key's thumbprint.
    pub jkt: &'a str,
    /// The user the instance acts for (from its own assertion), if any.
    pub user: Option<&'a str>,
    /// A delegated child's parent token, if any.
    pub parent: Option<&'a VerifiedToken>,
}

/// The token's claims: `sub` is a delegated child's parent's subject, else
/// the user, else the instance itself; `act` the instance and its device.
/// Returns the claims and whom the token acts for.
pub fn mint_claims(
    m: Minting<'_>,
    authorized: &Authorized,
    now: u64,
    jti: String,
) -> (Mint, Option<String>) {
    let td = m.trust_domain;
    let instance_spiffe = format!("spiffe://{td}/agent/{}/instance/{}", m.agent, m.instance_id);
    let on_behalf_of = match m.parent {
        Some(p) => p.on_behalf_of().map(str::to_owned),
        None => m.user.map(str::to_owned),
    };
    let mint = Mint {
        sub: match m.parent {
            Some(p) => p.sub().to_owned(),
            None => on_behalf_of
                .clone()
                .unwrap_or_else(|| instance_spiffe.clone()),
        },
        instance_spiffe,
        device_spiffe: format!("spiffe://{td}/device/{}", m.device),
        agent: m.agent.to_owned(),
        scope: authorized.scope.clone(),
        generation: m.generation,
        jkt: m.jkt.to_owned(),
        now,
        lifetime: authorized.lifetime,
        jti,
    };
    (mint, on_behalf_of)
}

/// The live-instance cap: a new instance of `agent` on `device` is refused
/// while `live` (instance ids with a valid token) holds `max` others.
pub fn check_instance_cap(
    agent: &str,
    device: &str,
    instance_id: &str,
    live: &[String],
    max: u32,
) -> Result<(), ExchangeError> {
    if !live.iter().any(|i| i == instance_id) && live.len() >= max as usize {
        return Err(ExchangeError::after(
            "invalid_grant",
            format!(
                "agent {agent} already has {} live instance(s) on device {device} (the maximum)",
                live.len()
            ),
        ));
    }
    Ok(())
}

/// A mint that failed: a delegation line too long to carry is the
/// caller's (`invalid_grant`), anything else the server's.
pub fn mint_refused(delegated: bool, e: crate::token::TokenError) -> ExchangeError {
    match e {
        e @ crate::token::TokenError::InvalidMint(_) if delegated => {
            ExchangeError::after("invalid_grant", format!("delegation refused: {e}"))
        }
        e => ExchangeError::after("server_error", format!("cannot mint: {e}")),
    }
}

/// The token endpoint's answer to a granted exchange (RFC 8693 §2.2.1, with
/// edgeward's members). Never cached, never logged: it carries the token
/// and the chain key.
pub struct TokenResponse<'a> {
    /// The access token.
    pub token: &'a str,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// The granted grants.
    pub scope: &'a [GrantName],
    /// The instance id.
    pub instance_id: &'a str,
    /// The public rules and limits the runtime enforces.
    pub profile: &'a crate::egress::AgentProfile,
    /// Lets the instance attenuate the token offline; as secret as the
    /// token.
    pub chain_key: &'a crate::caveat::ChainKey,
    /// The user the instance acts for.
    pub on_behalf_of: Option<&'a str>,
}

impl TokenResponse<'_> {
    /// The JSON body.
    pub fn to_json(&self) -> serde_json::Value {
        let scope: Vec<&str> = self.scope.iter().map(GrantName::as_str).collect();
        serde_json::json!({
            "access_token": self.token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "DPoP",
            "expires_in": self.expires_in,
            "scope": scope.join(" "),
            "edgeward_instance_id": self.instance_id,
            "edgeward_profile": self.profile.to_json(),
            "edgeward_chain_key": self.chain_key.to_b64(),
            "edgeward_on_behalf_of": self.on_behalf_of,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::{AttestationClaims, UnverifiedAttestation, sign_attestation};
    use crate::entropy::SeededEntropy;
    use crate::keys::{Ed25519Signer, Signer as _};

    const NOW: u64 = 1_767_225_600;

    fn attested(agent: &str, grants: &[&str], lifetime: u64) -> VerifiedAttestation {
        let mut e = SeededEntropy::new(7);
        let device = Ed25519Signer::generate(&mut e).expect("device key");
        let instance = Ed25519Signer::generate(&mut e).expect("instance key");
        let claims = AttestationClaims {
            nonce: "n".into(),
            device: "dev-1".into(),
            agent: agent.into(),
            digest: ComponentDigest::of(b"component"),
            instance_key: instance.public_key(),
            grants: grants
                .iter()
                .map(|g| GrantName::new(g).expect("grant"))
                .collect(),
            lifetime,
            iat: NOW,
        };
        let jws = sign_attestation(&claims, "dev-1", &device).expect("sign");
        UnverifiedAttestation::parse(&jws)
            .expect("parse")
            .verify(&device.public_key())
            .expect("verify")
    }

    struct Agent {
        devices: Vec<String>,
        digests: Vec<ComponentDigest>,
        grants: Vec<GrantName>,
    }

    fn agent() -> Agent {
        Agent {
            devices: vec!["dev-1".into()],
            digests: vec![ComponentDigest::of(b"component")],
            grants: vec![
                GrantName::new("a").expect("a"),
                GrantName::new("b").expect("b"),
            ],
        }
    }

    fn rules(a: &Agent) -> AgentRules<'_> {
        AgentRules {
            name: "bot",
            devices: &a.devices,
            digests: &a.digests,
            grants: &a.grants,
            max_token_lifetime: 600,
        }
    }

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn requests_parse_into_their_subject_and_refuse_alike_before_authentication() {
        let base = [
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("actor_token", "att"),
            ("actor_token_type", ATTESTATION_TOKEN_TYPE),
        ];
        let with = |subject: &str, kind: &str| {
            let mut f = form(&base);
            f.insert("subject_token".into(), subject.into());
            f.insert("subject_token_type".into(), kind.into());
            f
        };
        let f = with("att", ATTESTATION_TOKEN_TYPE);
        assert_eq!(
            ExchangeRequest::parse(&f).expect("instance").subject,
            Subject::Instance
        );
        let f = with("jwt", JWT_TOKEN_TYPE);
        let r = ExchangeRequest::parse(&f).expect("user");
        assert_eq!(
            (r.subject.user_assertion(), r.subject.delegation()),
            (Some("jwt"), None)
        );
        let f = with("chain", ACCESS_TOKEN_TYPE);
        let r = ExchangeRequest::parse(&f).expect("child");
        assert_eq!(
            (r.subject.user_assertion(), r.subject.delegation()),
            (None, Some("chain"))
        );
        for bad in [
            with("other", ATTESTATION_TOKEN_TYPE),
            with("att", "urn:nope"),
            form(&base),
            form(&[("grant_type", "client_credentials")]),
        ] {
            let e = ExchangeRequest::parse(&bad).expect_err("refused");
            assert_eq!((e.error, e.authenticated), ("invalid_grant", false));
            assert_eq!(e.public_description(), "the attestation was not accepted");
        }
    }

    #[test]
    fn authorize_checks_device_digest_and_grants_and_caps_the_lifetime() {
        let a = agent();
        let att = attested("bot", &[], 0);
        let ok = authorize(rules(&a), "dev-1", &att, None, None, 900, NOW).expect("all grants");
        assert_eq!(ok.scope, a.grants);
        assert_eq!(ok.lifetime, 600, "capped by the agent");
        let e = authorize(rules(&a), "dev-2", &att, None, None, 900, NOW).expect_err("device");
        assert_eq!(e.error, "invalid_grant");
        assert!(e.reason.contains("device dev-2 is not allowed"));
        let other = Agent {
            digests: vec![ComponentDigest::of(b"other")],
            ..agent()
        };
        let e = authorize(rules(&other), "dev-1", &att, None, None, 900, NOW).expect_err("digest");
        assert!(e.reason.contains("is not allowed for agent bot"));
        let att = attested("bot", &["c"], 100);
        let e = authorize(rules(&a), "dev-1", &att, None, None, 900, NOW).expect_err("scope");
        assert_eq!(
            (e.error, e.reason.as_str()),
            ("invalid_scope", "agent bot does not hold grant(s) c")
        );
        // The user's assertion and a parent bound the lifetime; a parent
        // bounds the grants too.
        let att = attested("bot", &[], 300);
        let ok = authorize(rules(&a), "dev-1", &att, Some(NOW + 50), None, 900, NOW).expect("user");
        assert_eq!(ok.lifetime, 50);
        let e =
            authorize(rules(&a), "dev-1", &att, Some(NOW), None, 900, NOW).expect_err("expired");
        assert!(e.reason.contains("expires now"));
        let held = [GrantName::new("b").expect("b")];
        let parent = Parent {
            grants: &held,
            expires_at: NOW + 20,
        };
        let ok = authorize(rules(&a), "dev-1", &att, None, Some(parent), 900, NOW).expect("child");
        assert_eq!((ok.scope.as_slice(), ok.lifetime), (&held[..], 20));
        let att = attested("bot", &["a"], 0);
        let e =
            authorize(rules(&a), "dev-1", &att, None, Some(parent), 900, NOW).expect_err("beyond");
        assert_eq!(
            (e.error, e.reason.as_str()),
            ("invalid_scope", "the delegation does not cover grant(s) a")
        );
        // The in-process device of embedded mode may run every agent.
        let att = attested("bot", &[], 0);
        assert!(authorize(rules(&a), EMBEDDED_DEVICE, &att, None, None, 900, NOW).is_ok());
    }

    #[test]
    fn mint_claims_name_the_instance_the_user_or_the_parent() {
        let authorized = Authorized {
            scope: vec![GrantName::new("a").expect("a")],
            lifetime: 60,
        };
        let m = Minting {
            trust_domain: "td.test",
            device: "dev-1",
            agent: "bot",
            generation: 3,
            instance_id: "i1",
            jkt: "k",
            user: None,
            parent: None,
        };
        let (mint, on_behalf_of) = mint_claims(m, &authorized, NOW, "j".into());
        assert_eq!(mint.sub, "spiffe://td.test/agent/bot/instance/i1");
        assert_eq!(mint.device_spiffe, "spiffe://td.test/device/dev-1");
        assert_eq!(
            (mint.generation, mint.lifetime, on_behalf_of),
            (3, 60, None)
        );
        let (mint, on_behalf_of) = mint_claims(
            Minting {
                user: Some("user:corp/alice"),
                ..m
            },
            &authorized,
            NOW,
            "j".into(),
        );
        assert_eq!(mint.sub, "user:corp/alice");
        assert_eq!(
            mint.instance_spiffe,
            "spiffe://td.test/agent/bot/instance/i1"
        );
        assert_eq!(on_behalf_of.as_deref(), Some("user:corp/alice"));
    }

    #[test]
    fn the_instance_cap_counts_other_instances_only() {
        let live = vec!["a".to_owned(), "b".to_owned()];
        assert!(
            check_instance_cap("bot", "d", "a", &live, 2).is_ok(),
            "a renewal"
        );
        let e = check_instance_cap("bot", "d", "c", &live, 2).expect_err("a third");
        assert!(e.reason.contains("already has 2 live instance(s)"));
        assert!(check_instance_cap("bot", "d", "c", &live, 3).is_ok());
    }
}
