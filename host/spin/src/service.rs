//! One request's view of the backend: settings, database, keys, and the
//! access-token check every device-facing route shares.
//!
//! The order and the words of every check follow the native backend's
//! `TokenService::check_access`; the decisions themselves (token
//! verification, caveat chains, rights, revocation, user issuers) are
//! `edgeward-core`'s, so both backends decide alike.

use crate::settings::Settings;
use crate::store::{AuditEntry, Store, StoreError};
use edgeward_core::caveat::{Caveat, CaveatError, Rights, UnverifiedChain};
use edgeward_core::config::AgentConfig;
use edgeward_core::dpop::{DpopError, Expected, MAX_SKEW_SECS, UnverifiedProof};
use edgeward_core::problem::{ProblemClass, Refusal};
use edgeward_core::token::{TokenError, TokenIssuer, TokenVerifier, VerifiedToken};
use http::StatusCode;
use zeroize::Zeroizing;

/// How long a challenge stays valid, seconds (as natively).
pub const NONCE_MAX_AGE: u64 = 60;
/// Clock tolerance for token verification, seconds (as natively).
pub const CLOCK_TOLERANCE: u64 = 5;

/// Why an access token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Not a valid token.
    #[error("{0}")]
    Token(#[from] TokenError),
    /// Valid, but revoked (or its state is unavailable: fail closed).
    #[error("revoked: {0}")]
    Revoked(String),
    /// A caveat chain that does not verify or leaves nothing.
    #[error("delegation: {0}")]
    Chain(#[from] CaveatError),
}

/// A token that passed [`Service::check_access`].
pub struct Access<'s> {
    /// The verified token.
    pub token: VerifiedToken,
    /// Its agent as the config has it now.
    pub agent: &'s AgentConfig,
    /// What the presented token may do (narrowed by its caveats).
    pub rights: Rights,
    /// The presented chain's caveats (none for a bare token).
    pub caveats: Vec<Caveat>,
}

/// The current time, seconds since the Unix epoch (Spin's wall clock).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Fill a buffer from the host's secure random source.
pub fn random(buf: &mut [u8]) -> Result<(), StoreError> {
    getrandom::fill(buf).map_err(|_| StoreError::from_text("the random source is unavailable"))
}

/// One request's backend.
pub struct Service {
    /// Variables, config, secrets.
    pub settings: Settings,
    /// The database.
    pub store: Store,
    /// Token signing key.
    pub issuer: TokenIssuer,
    verifier: TokenVerifier,
    /// Root of every token's caveat chain.
    pub caveat_root: Zeroizing<[u8; 32]>,
}

/// Fail closed, without internal detail on the wire.
fn fail_closed(_: StoreError) -> AccessError {
    AccessError::Revoked("revocation state unavailable".into())
}

impl Service {
    /// Build from loaded settings and an open database.
    pub fn new(settings: Settings, store: Store) -> Result<Service, TokenError> {
        let b = &settings.config.backend;
        let issuer = TokenIssuer::new(&settings.signing_seed, &b.issuer, &b.audience)?;
        let mut verifier = TokenVerifier::new(&b.issuer, &b.audience, CLOCK_TOLERANCE);
        verifier.add_key(issuer.kid(), issuer.public_key());
        // From the nonce key under its own label, as natively: a chain made
        // against either backend with the same keys verifies on the other.
        let caveat_root = edgeward_core::caveat::derive_root(&settings.nonce_key);
        Ok(Service {
            settings,
            store,
            issuer,
            verifier,
            caveat_root,
        })
    }

    /// Verify a token's signature and claims at `now`.
    pub fn verify_signed(&self, token: &str, now: u64) -> Result<VerifiedToken, TokenError> {
        self.verifier.verify(token, now)
    }

    /// Verify an access token presented on a device-facing route: valid,
    /// not revoked (nor any ancestor or named sub-agent), of its agent's
    /// current generation, narrowed by its chain.
    pub fn check_access(&self, presented: &str) -> Result<Access<'_>, AccessError> {
        if presented.len() > edgeward_core::caveat::MAX_PRESENTED_LEN {
            return Err(AccessError::Token(TokenError::TooLong {
                len: presented.len(),
                max: edgeward_core::caveat::MAX_PRESENTED_LEN,
            }));
        }
        let now = now();
        let chain = if presented.contains(edgeward_core::caveat::SEPARATOR) {
            Some(UnverifiedChain::parse(presented)?.verify(&self.caveat_root)?)
        } else {
            None
        };
        let token = chain.as_ref().map_or(presented, |c| c.token());
        let verified = self.verify_signed(token, now)?;
        let caveats = chain.map(|c| c.caveats().to_vec()).unwrap_or_default();
        // The rights first (pure), so one query covers every name the
        // revocation check needs: the token, its ancestors, its sub-agents.
        let rights = Rights::of_token(
            verified.scope(),
            u64::MAX,
            verified.jkt(),
            edgeward_core::caveat::MAX_DELEGATION_DEPTH,
        )
        .attenuate(verified.inherited_caveats())?
        .attenuate(&caveats)?;
        let segment = edgeward_core::crossing::spiffe_segment;
        let ancestors = verified.ancestors();
        let mut jtis = vec![verified.jti()];
        let mut instances = vec![segment(verified.instance(), "/instance/").unwrap_or("")];
        let mut devices = vec![segment(verified.device(), "/device/").unwrap_or("")];
        let mut agents = vec![verified.agent()];
        for a in ancestors {
            jtis.push(&a.jti);
            instances.push(segment(&a.instance_spiffe, "/instance/").unwrap_or(""));
            devices.push(segment(&a.device_spiffe, "/device/").unwrap_or(""));
            agents.push(&a.agent);
        }
        agents.extend(rights.agents.iter().map(String::as_str));
        let revoked = self
            .store
            .revocations_for(&jtis, &instances, &agents, &devices)
            .map_err(fail_closed)?;
        if let Some(reason) = revoked.check(&verified) {
            return Err(AccessError::Revoked(reason));
        }
        let config = &self.settings.config;
        for a in ancestors {
            if let Some(reason) = revoked.check_ancestor(a) {
                return Err(AccessError::Revoked(format!(
                    "delegated by a revoked token: {reason}"
                )));
            }
            match config.agent(&a.agent) {
                Some(r) if r.generation == a.generation => {}
                _ => {
                    return Err(AccessError::Revoked(format!(
                        "delegated by agent {} at generation {}, which it no longer is",
                        a.agent, a.generation
                    )));
                }
            }
        }
        let agent = match config.agent(verified.agent()) {
            Some(agent) if agent.generation == verified.generation() => agent,
            Some(agent) => {
                return Err(AccessError::Revoked(format!(
                    "agent {} is at generation {}; this token is of generation {}",
                    agent.name,
                    agent.generation,
                    verified.generation()
                )));
            }
            None => {
                return Err(AccessError::Revoked(format!(
                    "agent {} no longer exists",
                    verified.agent()
                )));
            }
        };
        let mut rights = rights;
        // A chain naming sub-agents holds at most what each holds now.
        for name in rights.agents.clone() {
            let Some(sub) = config.agent(&name) else {
                return Err(AccessError::Revoked(format!(
                    "sub-agent {name} is not registered"
                )));
            };
            if let Some(reason) = revoked.refuses_agent(&name, sub.generation) {
                return Err(AccessError::Revoked(format!("sub-agent {name}: {reason}")));
            }
            rights.grants.retain(|g| sub.grants.contains(g));
        }
        if let Some(user) = verified.on_behalf_of() {
            let issuers = &config.backend.user_issuers;
            for name in std::iter::once(verified.agent())
                .chain(ancestors.iter().map(|a| a.agent.as_str()))
                .chain(rights.agents.iter().map(String::as_str))
            {
                edgeward_core::user::may_act_for(issuers, name, user)
                    .map_err(AccessError::Revoked)?;
            }
        }
        Ok(Access {
            token: verified,
            agent,
            rights,
            caveats,
        })
    }

    /// Check a DPoP proof for a request made with a verified token bound to
    /// `jkt`; its `jti` is then used up (in the database: any instance
    /// serving a replay sees it).
    pub fn check_proof(
        &self,
        proof: &str,
        method: &http::Method,
        uri: &http::Uri,
        token: &str,
        jkt: &str,
    ) -> Result<(), DpopError> {
        let now = now();
        let claims = UnverifiedProof::parse(proof)?.verify(&Expected {
            method,
            uri,
            token,
            jkt,
            now,
        })?;
        let key = format!("{jkt}.{}", claims.jti);
        match self
            .store
            .use_proof(&key, claims.iat + MAX_SKEW_SECS + 1, now)
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(DpopError::Malformed("replayed proof")),
            // Fail closed: a proof that cannot be used up is not accepted.
            Err(_) => Err(DpopError::Malformed("the proof could not be recorded")),
        }
    }

    /// Append an audit record; every text field is scanned first, so no
    /// credential or known secret format reaches the log.
    pub fn audit(&self, mut entry: AuditEntry) -> Result<(), StoreError> {
        let mut found: Vec<&'static str> = Vec::new();
        for (_, value) in entry.fields.iter_mut() {
            let scanned = self.settings.scanner.apply(value.as_bytes());
            if !scanned.findings.is_empty() {
                found.extend(scanned.findings.iter().map(|f| f.rule.name()));
                *value = String::from_utf8_lossy(&scanned.bytes).into_owned();
            }
            value.truncate(value.floor_char_boundary(2000));
        }
        if !found.is_empty() {
            found.dedup();
            entry
                .fields
                .push(("scrubbed", format!("removed: {}", found.join(","))));
        }
        self.store.audit(&entry, now())
    }
}

/// How a refused access token reaches the guest (as natively).
pub fn token_refusal(e: &AccessError) -> Refusal {
    match e {
        AccessError::Revoked(reason) => Refusal::new(ProblemClass::Revoked, reason.clone()),
        AccessError::Chain(e) => Refusal::denied(format!("the delegation chain is refused: {e}"))
            .with_status(StatusCode::UNAUTHORIZED),
        AccessError::Token(TokenError::Expired) => {
            Refusal::new(ProblemClass::Expired, "the instance's access token expired")
        }
        AccessError::Token(_) => Refusal::denied("the instance's access token is not valid")
            .with_status(StatusCode::UNAUTHORIZED),
    }
}
