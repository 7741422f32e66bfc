//! RFC 8693 exchange of a device attestation for an access token, in the
//! native backend's order (see `edgeward_backend::exchange`): form, then the
//! device signature (every failure before it is the same `invalid_grant`),
//! then the user assertion or delegation chain, then the nonce (used up in
//! the database, atomically), revocations, the agent's rules, the
//! live-instance cap, and the mint.

use crate::service::{Access, CLOCK_TOLERANCE, NONCE_MAX_AGE, Service, now, random};
use crate::store::AuditEntry;
use edgeward_core::attest::{UnverifiedAttestation, VerifiedAttestation};
use edgeward_core::caveat::{Caveat, ChainKey};
use edgeward_core::egress::{
    ACCESS_TOKEN_TYPE, ATTESTATION_TOKEN_TYPE, AgentProfile, JWT_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT,
};
use edgeward_core::grant::GrantName;
use edgeward_core::keys::{Ed25519Signer, Es256Signer, PublicKey, SigAlg, Signer as _};
use edgeward_core::nonce::NonceIssuer;
use edgeward_core::token::{Ancestor, Lineage, Mint, TokenError};
use std::collections::HashMap;

/// A refused exchange (as natively: before the device signature verified,
/// the caller only ever learns "not accepted").
#[derive(Debug)]
pub struct ExchangeError {
    /// OAuth error code.
    pub error: &'static str,
    /// Whether the device signature had verified.
    pub authenticated: bool,
    /// Full detail, for the audit log (and the caller once authenticated).
    pub reason: String,
}

impl ExchangeError {
    fn before(reason: impl Into<String>) -> ExchangeError {
        ExchangeError {
            error: "invalid_grant",
            authenticated: false,
            reason: reason.into(),
        }
    }

    fn after(error: &'static str, reason: impl Into<String>) -> ExchangeError {
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

/// A minted token and what the token response carries.
pub struct Minted {
    /// The access token.
    pub token: String,
    /// Seconds until expiry.
    pub expires_in: u64,
    /// The instance id.
    pub instance_id: String,
    /// Granted grants.
    pub scope: Vec<GrantName>,
    /// Public rules and limits for the runtime.
    pub profile: AgentProfile,
    /// Lets the instance attenuate the token offline.
    pub chain_key: ChainKey,
    /// The user the instance acts for.
    pub on_behalf_of: Option<String>,
    agent: String,
    device: String,
    jti: String,
}

/// The challenge issuer. No boot epoch on Spin (an instance lives for one
/// request): freshness is the 60 s window, single use is the database.
pub fn nonces(service: &Service) -> NonceIssuer {
    NonceIssuer::new(*service.settings.nonce_key, 0, NONCE_MAX_AGE)
}

/// A fresh challenge. Writes nothing.
pub fn challenge(service: &Service) -> Result<String, crate::store::StoreError> {
    let mut salt = [0u8; edgeward_core::nonce::SALT_LEN];
    random(&mut salt)?;
    Ok(nonces(service).issue(now(), salt))
}

/// Exchange, audited: without its audit record, no token leaves.
pub fn exchange(
    service: &Service,
    form: &HashMap<String, String>,
) -> Result<Minted, ExchangeError> {
    let result = exchange_unaudited(service, form);
    let entry = match &result {
        Ok(m) => AuditEntry::new("exchange", "allow")
            .with("agent", Some(m.agent.as_str()))
            .with("instance", Some(m.instance_id.as_str()))
            .with("device", Some(m.device.as_str()))
            .with("jti", Some(m.jti.as_str()))
            .with("user", m.on_behalf_of.as_deref())
            .with(
                "reason",
                m.on_behalf_of.as_ref().map(|u| format!("on behalf of {u}")),
            ),
        Err(e) => AuditEntry::new("exchange", "deny").with(
            "reason",
            Some(e.reason.chars().take(1000).collect::<String>()),
        ),
    };
    if service.audit(entry).is_err() {
        return Err(ExchangeError::after(
            "server_error",
            "the audit log is unavailable",
        ));
    }
    result
}

fn exchange_unaudited(
    service: &Service,
    form: &HashMap<String, String>,
) -> Result<Minted, ExchangeError> {
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
    let (user_assertion, delegation) = match field("subject_token_type") {
        Some(ATTESTATION_TOKEN_TYPE) if subject == actor => (None, None),
        Some(ATTESTATION_TOKEN_TYPE) => {
            return Err(ExchangeError::before(
                "subject_token differs from actor_token but is typed as the attestation",
            ));
        }
        Some(JWT_TOKEN_TYPE) => (Some(subject), None),
        Some(ACCESS_TOKEN_TYPE) => (None, Some(subject)),
        _ => {
            return Err(ExchangeError::before(
                "subject_token_type is neither the attestation, a JWT nor an access token",
            ));
        }
    };
    let unverified = UnverifiedAttestation::parse(actor)
        .map_err(|e| ExchangeError::before(format!("malformed attestation: {e}")))?;
    let device = unverified.device_id().to_owned();
    let config = &service.settings.config;
    // An unknown device is checked against a stand-in key of the claimed
    // algorithm, so response time does not tell which device ids exist.
    let known = config.devices.iter().find(|d| d.id == device);
    let key = match known {
        Some(d) => d.public_key,
        None => stand_in_key(service, unverified.alg())?,
    };
    let verified = unverified.verify(&key);
    if known.is_none() {
        return Err(ExchangeError::before(format!("unknown device {device:?}")));
    }
    let verified = verified.map_err(|e| ExchangeError::before(format!("device {device}: {e}")))?;
    let issuers = &config.backend.user_issuers;
    let user = match user_assertion {
        None => None,
        Some(jwt) => Some(
            edgeward_core::user::verify_assertion(jwt, issuers, now(), CLOCK_TOLERANCE).map_err(
                |e| ExchangeError::after("invalid_grant", format!("user assertion refused: {e}")),
            )?,
        ),
    };
    if let Some(u) = &user {
        edgeward_core::user::may_act_for(issuers, verified.agent(), &u.principal()).map_err(
            |e| ExchangeError::after("invalid_grant", format!("user assertion refused: {e}")),
        )?;
    }
    let parent = match delegation {
        None => None,
        Some(chain) => Some(check_delegation(service, chain, &verified)?),
    };
    authorize_and_mint(service, &device, &verified, user.as_ref(), parent.as_ref())
}

/// Keys no device holds, so an unknown device costs what a bad signature
/// costs. Ed25519's is fixed per deployment (from the nonce key); a P-256
/// one is drawn when needed.
fn stand_in_key(service: &Service, alg: SigAlg) -> Result<PublicKey, ExchangeError> {
    let unavailable = || ExchangeError::before("the random source is unavailable");
    match alg {
        SigAlg::ES256 => {
            let mut fill = |buf: &mut [u8]| {
                // A failing source leaves zeros: the key is still no
                // device's, which is all a stand-in must be.
                let _ = random(buf);
            };
            Es256Signer::generate(&mut fill)
                .map(|s| s.public_key())
                .map_err(|_| unavailable())
        }
        _ => {
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            h.update(b"edgeward-spin-stand-in-v1\0");
            h.update(&service.settings.nonce_key[..]);
            let seed: [u8; 32] = h.finalize().into();
            Ed25519Signer::from_seed(&seed)
                .map(|s| s.public_key())
                .map_err(|_| unavailable())
        }
    }
}

/// A delegated child's parent chain: it verifies now, its last holder is
/// the attested instance key (a new key, after the sub-agent is named),
/// and its last `agent` caveat names the attested agent.
fn check_delegation<'s>(
    service: &'s Service,
    chain: &str,
    att: &VerifiedAttestation,
) -> Result<Access<'s>, ExchangeError> {
    let refused = |reason: String| {
        ExchangeError::after("invalid_grant", format!("delegation refused: {reason}"))
    };
    let access = service
        .check_access(chain)
        .map_err(|e| refused(e.to_string()))?;
    let last = |want: fn(&Caveat) -> bool| access.caveats.iter().rposition(want);
    let handed_off = match (
        last(|c| matches!(c, Caveat::Agent(_))),
        last(|c| matches!(c, Caveat::Holder(_))),
    ) {
        (Some(agent), Some(holder)) => holder > agent,
        _ => false,
    };
    if !handed_off || access.rights.holder == access.token.jkt() {
        return Err(refused(
            "the chain does not hand off to a new key after naming the sub-agent".into(),
        ));
    }
    if access.rights.holder != att.instance_key().jwk_thumbprint() {
        return Err(refused(
            "the chain is not narrowed for this instance's key (its last holder differs)".into(),
        ));
    }
    if access.rights.agents.last().map(String::as_str) != Some(att.agent()) {
        return Err(refused(format!(
            "the chain does not delegate to agent {}",
            att.agent()
        )));
    }
    Ok(access)
}

/// What a delegated child's token descends from (as natively).
fn lineage_of(parent: Option<&Access<'_>>) -> Lineage {
    let Some(p) = parent else {
        return Lineage::default();
    };
    let t = &p.token;
    let mut ancestors = vec![Ancestor {
        instance_spiffe: t.instance().to_owned(),
        device_spiffe: t.device().to_owned(),
        jti: t.jti().to_owned(),
        agent: t.agent().to_owned(),
        generation: t.generation(),
    }];
    ancestors.extend(t.ancestors().iter().cloned());
    let mut caveats = t.inherited_caveats().to_vec();
    caveats.extend(p.caveats.iter().cloned());
    Lineage { ancestors, caveats }
}

fn authorize_and_mint(
    service: &Service,
    device: &str,
    att: &VerifiedAttestation,
    user: Option<&edgeward_core::user::VerifiedUser>,
    parent: Option<&Access<'_>>,
) -> Result<Minted, ExchangeError> {
    let now = now();
    let store_failed = |_| ExchangeError::after("server_error", "the database is unavailable");
    let issued_at = nonces(service)
        .check(att.nonce(), now)
        .map_err(|e| ExchangeError::after("invalid_grant", format!("nonce refused: {e}")))?;
    // Used up only after the signature verified: forged attestations
    // cannot burn other devices' nonces.
    if !service
        .store
        .use_nonce(att.nonce(), issued_at + NONCE_MAX_AGE + 1, now)
        .map_err(store_failed)?
    {
        return Err(ExchangeError::after(
            "invalid_grant",
            "nonce refused: it was already used",
        ));
    }
    let agent_name = att.agent();
    let jkt = att.instance_key().jwk_thumbprint();
    let instance_id = edgeward_core::crossing::instance_id(device, agent_name, &jkt);
    let revoked = service
        .store
        .revocations_for(&[], &[&instance_id], &[agent_name], &[device])
        .map_err(store_failed)?;
    if let Some(reason) = revoked.refuses_exchange(device, agent_name, &instance_id) {
        return Err(ExchangeError::after("invalid_grant", reason));
    }
    let config = &service.settings.config;
    let agent = config.agent(agent_name).ok_or_else(|| {
        ExchangeError::after("invalid_grant", format!("unknown agent {agent_name:?}"))
    })?;
    if let Some(reason) = revoked.refuses_generation(agent_name, agent.generation) {
        return Err(ExchangeError::after("invalid_grant", reason));
    }
    if !agent.devices.iter().any(|d| d == device) {
        return Err(ExchangeError::after(
            "invalid_grant",
            format!("device {device} is not allowed to run agent {agent_name}"),
        ));
    }
    if !agent.digests.contains(att.digest()) {
        return Err(ExchangeError::after(
            "invalid_grant",
            format!(
                "component {} is not allowed for agent {agent_name}",
                att.digest()
            ),
        ));
    }
    let scope: Vec<GrantName> = if att.grants().is_empty() {
        let mut all = agent.grants.clone();
        if let Some(p) = parent {
            all.retain(|g| p.rights.grants.contains(g));
        }
        all
    } else {
        att.grants().to_vec()
    };
    if let Some(p) = parent {
        let beyond: Vec<&str> = scope
            .iter()
            .filter(|g| !p.rights.grants.contains(g))
            .map(GrantName::as_str)
            .collect();
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
    let beyond: Vec<&str> = scope
        .iter()
        .filter(|g| !agent.grants.contains(g))
        .map(GrantName::as_str)
        .collect();
    if !beyond.is_empty() {
        return Err(ExchangeError::after(
            "invalid_scope",
            format!(
                "agent {agent_name} does not hold grant(s) {}",
                beyond.join(", ")
            ),
        ));
    }
    let requested = if att.lifetime() == 0 {
        config.backend.default_token_lifetime
    } else {
        att.lifetime()
    };
    let mut lifetime = requested.min(agent.max_token_lifetime);
    if let Some(u) = user {
        let left = u.expires_at.saturating_sub(now);
        if left == 0 {
            return Err(ExchangeError::after(
                "invalid_grant",
                "user assertion refused: it expires now",
            ));
        }
        lifetime = lifetime.min(left);
    }
    if let Some(p) = parent {
        let left = p.rights.expires_at.min(p.token.exp()).saturating_sub(now);
        if left == 0 {
            return Err(ExchangeError::after(
                "invalid_grant",
                "delegation refused: it expires now",
            ));
        }
        lifetime = lifetime.min(left);
    }
    let mut jti = [0u8; 16];
    random(&mut jti)
        .map_err(|_| ExchangeError::after("server_error", "the random source is unavailable"))?;
    let jti = hex::encode(jti);
    let td = &config.backend.trust_domain;
    let instance_spiffe = format!("spiffe://{td}/agent/{agent_name}/instance/{instance_id}");
    let on_behalf_of = match parent {
        Some(p) => p.token.on_behalf_of().map(str::to_owned),
        None => user.map(edgeward_core::user::VerifiedUser::principal),
    };
    let mint = Mint {
        sub: match parent {
            Some(p) => p.token.sub().to_owned(),
            None => on_behalf_of
                .clone()
                .unwrap_or_else(|| instance_spiffe.clone()),
        },
        instance_spiffe,
        device_spiffe: format!("spiffe://{td}/device/{device}"),
        agent: agent_name.to_owned(),
        scope: scope.clone(),
        generation: agent.generation,
        jkt,
        now,
        lifetime,
        jti: jti.clone(),
    };
    let token = service
        .issuer
        .mint_delegated(&mint, &lineage_of(parent))
        .map_err(|e| match (parent, e) {
            (Some(_), e @ TokenError::InvalidMint(_)) => {
                ExchangeError::after("invalid_grant", format!("delegation refused: {e}"))
            }
            (_, e) => ExchangeError::after("server_error", format!("cannot mint: {e}")),
        })?;
    // The cap and the record in one transaction: two racing exchanges on
    // two instances cannot both take the last slot.
    let cap = agent.max_instances_per_device as usize;
    let taken = service
        .store
        .transaction(|s| {
            let live = s.live_instance_ids(agent_name, device, now)?;
            if !live.contains(&instance_id) && live.len() >= cap {
                return Ok(Some(live.len()));
            }
            s.record_token(&jti, &instance_id, agent_name, device, now, now + lifetime)?;
            Ok(None)
        })
        .map_err(store_failed)?;
    if let Some(n) = taken {
        return Err(ExchangeError::after(
            "invalid_grant",
            format!(
                "agent {agent_name} already has {n} live instance(s) on device {device} (the maximum)"
            ),
        ));
    }
    let profile = AgentProfile {
        grants: scope
            .iter()
            .filter_map(|n| config.grant(n).map(|g| g.rules.clone()))
            .collect(),
        limits: agent.limits,
    };
    let chain_key = ChainKey::derive(&service.caveat_root, &token);
    Ok(Minted {
        token,
        expires_in: lifetime,
        instance_id,
        scope,
        profile,
        chain_key,
        on_behalf_of,
        agent: agent_name.to_owned(),
        device: device.to_owned(),
        jti,
    })
}
