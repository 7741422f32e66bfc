//! One request's view of the backend: settings, database, keys, and the
//! access-token check every device-facing route shares.
//!
//! The order and the words of every check follow the native backend's
//! `TokenService::check_access`; the decisions themselves (token
//! verification, caveat chains, rights, revocation, user issuers) are
//! `edgeward-core`'s, so both backends decide alike.

use crate::settings::Settings;
use crate::store::{AuditEntry, Store, StoreError};
use edgeward_core::caveat::{Caveat, Rights};
use edgeward_core::config::AgentConfig;
use edgeward_core::dpop::{DpopError, Expected, verify_fresh};
use edgeward_core::problem::Refusal;
use edgeward_core::token::{TokenError, TokenIssuer, TokenVerifier, VerifiedToken};
use zeroize::Zeroizing;

/// How long a challenge stays valid, seconds (as natively).
pub const NONCE_MAX_AGE: u64 = 60;
/// Clock tolerance for token verification, seconds (as natively).
pub const CLOCK_TOLERANCE: u64 = 5;

pub use edgeward_core::access::AccessError;

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

/// What a change of which moves an agent to its next generation, as the
/// native import has it: its digests, devices and grants.
fn fingerprint(a: &edgeward_core::config::AgentConfig) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    let mut digests: Vec<String> = a.digests.iter().map(ToString::to_string).collect();
    let mut devices = a.devices.clone();
    let mut grants: Vec<&str> = a.grants.iter().map(|g| g.as_str()).collect();
    digests.sort();
    devices.sort();
    grants.sort();
    for list in [
        digests.iter().map(String::as_str).collect::<Vec<_>>(),
        devices.iter().map(String::as_str).collect(),
        grants,
    ] {
        for item in list {
            h.update(item.as_bytes());
            h.update([0]);
        }
        h.update([1]);
    }
    hex::encode(h.finalize())
}

/// The service could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The signing seed makes no key.
    #[error("the signing key: {0}")]
    Key(TokenError),
    /// The database failed.
    #[error("{0}")]
    Store(#[from] StoreError),
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

/// Fail closed when the database cannot say whether a token is revoked.
fn fail_closed(_: StoreError) -> AccessError {
    AccessError::Unavailable("the revocation state is unavailable".into())
}

impl Service {
    /// Build from loaded settings and an open database: the config is
    /// imported into the registry if this text is new (see
    /// [`Store::import`]), and agents are at the registry's generations.
    pub fn new(mut settings: Settings, store: Store) -> Result<Service, ServiceError> {
        let agents: Vec<(&str, String)> = settings
            .config
            .agents
            .iter()
            .map(|a| (a.name.as_str(), fingerprint(a)))
            .collect();
        store.import(&settings.config_sha256, &agents, now())?;
        let generations: std::collections::HashMap<String, u64> =
            store.generations()?.into_iter().collect();
        // The registry decides: an agent a newer config removed (this
        // instance still serving an older text during a deploy) no longer
        // exists here either.
        settings
            .config
            .agents
            .retain(|a| generations.contains_key(&a.name));
        for a in settings.config.agents.iter_mut() {
            if let Some(g) = generations.get(&a.name) {
                a.generation = *g;
            }
        }
        let b = &settings.config.backend;
        let issuer = TokenIssuer::new(&settings.signing_seed, &b.issuer, &b.audience)
            .map_err(ServiceError::Key)?;
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
        use edgeward_core::access::{
            LiveAgent, Presented, check_lineage, check_users, revocation_names,
        };
        let presented = Presented::parse(presented, &self.caveat_root)?;
        let verified = self.verify_signed(presented.token, now())?;
        // One read of the database covers every name the check needs: the
        // token, its ancestors, the chain's sub-agents.
        let [jtis, instances, agents, devices] = revocation_names(&verified, &presented.caveats);
        let revoked = self
            .store
            .revocations_for(&jtis, &instances, &agents, &devices)
            .map_err(fail_closed)?;
        let config = &self.settings.config;
        let rights = check_lineage(&verified, &presented.caveats, &revoked, |name| {
            Ok(config.agent(name).map(|a| LiveAgent {
                generation: a.generation,
                grants: a.grants.as_slice().into(),
            }))
        })?
        .rights;
        check_users(&config.backend.user_issuers, &verified, &rights)?;
        let agent = config.agent(verified.agent()).ok_or_else(|| {
            AccessError::Revoked(format!("agent {} no longer exists", verified.agent()))
        })?;
        Ok(Access {
            token: verified,
            agent,
            rights,
            caveats: presented.caveats,
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
        let seen = verify_fresh(
            proof,
            &Expected {
                method,
                uri,
                token,
                jkt,
                now,
            },
        )?;
        match self.store.use_proof(&seen.key, seen.until, now) {
            Ok(true) => Ok(()),
            Ok(false) => Err(DpopError::Malformed("replayed proof")),
            // Fail closed: a proof that cannot be used up is not accepted.
            Err(_) => Err(DpopError::Malformed("the proof could not be recorded")),
        }
    }

    /// Append an audit record; every text field is scanned first, so no
    /// credential or known secret format reaches the log.
    pub fn audit(&self, mut entry: AuditEntry) -> Result<(), StoreError> {
        // No record without its scrub: an unavailable scanner fails closed.
        let scanner = &self
            .settings
            .guards()
            .map_err(|_| StoreError::from_text("the secret scanner is unavailable"))?
            .scanner;
        let mut found: Vec<&'static str> = Vec::new();
        for (_, value) in entry.fields.iter_mut() {
            let scanned = scanner.apply(value.as_bytes());
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
    e.refusal()
}
