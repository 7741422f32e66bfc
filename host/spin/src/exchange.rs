//! RFC 8693 exchange of a device attestation for an access token, in the
//! native backend's order (see `edgeward_backend::exchange`): form, then the
//! device signature (every failure before it is the same `invalid_grant`),
//! then the user assertion or delegation chain, then the nonce (used up in
//! the database, atomically), revocations, the agent's rules, the
//! live-instance cap, and the mint.

use crate::service::{Access, CLOCK_TOLERANCE, NONCE_MAX_AGE, Service, now, random};
use crate::store::AuditEntry;
use edgeward_core::attest::{UnverifiedAttestation, VerifiedAttestation};
use edgeward_core::caveat::ChainKey;
use edgeward_core::egress::AgentProfile;
pub use edgeward_core::exchange::ExchangeError;
use edgeward_core::exchange::{ExchangeRequest, Minting, Parent};
use edgeward_core::grant::GrantName;
use edgeward_core::keys::{Ed25519Signer, Es256Signer, PublicKey, SigAlg, Signer as _};
use edgeward_core::nonce::NonceIssuer;
use std::collections::HashMap;

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
    let request = ExchangeRequest::parse(form)?;
    let actor = request.actor;
    let (user_assertion, delegation) = (
        request.subject.user_assertion(),
        request.subject.delegation(),
    );
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
    edgeward_core::exchange::check_hand_off(&access.token, &access.caveats, &access.rights, att)?;
    Ok(access)
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
    let authorized = edgeward_core::exchange::authorize(
        agent.into(),
        device,
        att,
        user.map(|u| u.expires_at),
        parent.map(|p| Parent {
            grants: &p.rights.grants,
            expires_at: p.rights.expires_at.min(p.token.exp()),
        }),
        config.backend.default_token_lifetime,
        now,
    )?;
    let lifetime = authorized.lifetime;
    let mut jti = [0u8; 16];
    random(&mut jti)
        .map_err(|_| ExchangeError::after("server_error", "the random source is unavailable"))?;
    let jti = hex::encode(jti);
    let principal = user.map(edgeward_core::user::VerifiedUser::principal);
    let (mint, on_behalf_of) = edgeward_core::exchange::mint_claims(
        Minting {
            trust_domain: &config.backend.trust_domain,
            device,
            agent: agent_name,
            generation: agent.generation,
            instance_id: &instance_id,
            jkt: &jkt,
            user: principal.as_deref(),
            parent: parent.map(|p| &p.token),
        },
        &authorized,
        now,
        jti.clone(),
    );
    let lineage = parent.map_or_else(Default::default, |p| {
        edgeward_core::exchange::lineage_of(&p.token, &p.caveats)
    });
    let token = service
        .issuer
        .mint_delegated(&mint, &lineage)
        .map_err(|e| edgeward_core::exchange::mint_refused(parent.is_some(), e))?;
    // The cap and the record in one transaction: two racing exchanges on
    // two instances cannot both take the last slot.
    service
        .store
        .transaction(|s| {
            let live = s.live_instance_ids(agent_name, device, now)?;
            if let Err(refused) = edgeward_core::exchange::check_instance_cap(
                agent_name,
                device,
                &instance_id,
                &live,
                agent.max_instances_per_device,
            ) {
                return Ok(Err(refused));
            }
            s.record_token(&jti, &instance_id, agent_name, device, now, now + lifetime)?;
            Ok(Ok(()))
        })
        .map_err(store_failed)??;
    let profile = AgentProfile {
        grants: authorized
            .scope
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
        scope: authorized.scope,
        profile,
        chain_key,
        on_behalf_of,
        agent: agent_name.to_owned(),
        device: device.to_owned(),
        jti,
    })
}
