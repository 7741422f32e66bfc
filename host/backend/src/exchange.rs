//! The token service: challenges, attestation verification, minting, and
//! access-token verification for the egress path.
//!
//! Order of checks in [`TokenService::exchange`], and why:
//! 1. parse the form and the attestation, look up the device, verify the
//!    device signature. Every failure up to here is the same `invalid_grant`
//!    on the wire: an unauthenticated caller learns nothing (which devices
//!    exist, which keys are right).
//! 2. only then the nonce: authentic MAC, this boot, fresh, and not used
//!    before — recorded as used now, after the signature verified, so
//!    forged attestations cannot burn other devices' nonces.
//! 3. agent rules: the device is allowed, the digest is allowed, the grants
//!    are the agent's, the live-instance cap; the lifetime is capped.
//! 4. mint. The instance id is derived from (device, agent, instance key), so
//!    a renewal with the same instance key keeps the same identity.

use edgeward_core::attest::{UnverifiedAttestation, VerifiedAttestation};
use edgeward_core::clock::Clock;
use edgeward_core::config::{BackendSettings, Config, EMBEDDED_DEVICE, Limits};
use edgeward_core::digest::ComponentDigest;
use edgeward_core::egress::AgentProfile;
use edgeward_core::entropy::Entropy;
use edgeward_core::grant::{GrantName, GrantRules};
use edgeward_core::keys::PublicKey;
use edgeward_core::nonce::{NonceIssuer, ReplayCache};
use edgeward_core::token::{Mint, TokenError, TokenIssuer, TokenVerifier, VerifiedToken};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How long a challenge stays valid, seconds.
pub const NONCE_MAX_AGE: u64 = 60;
/// Clock tolerance for token verification, seconds.
pub const CLOCK_TOLERANCE: u64 = 5;

/// A refused exchange: the OAuth error, what the caller is told, and the full
/// reason for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}: {reason}")]
pub struct ExchangeError {
    /// OAuth error code (`invalid_request`, `invalid_grant`, `invalid_scope`).
    pub error: &'static str,
    /// Whether the device signature had verified; before that, the wire
    /// answer is always the same.
    pub authenticated: bool,
    /// Full detail, for the log (and for the caller once authenticated).
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

/// The result of a successful exchange.
#[derive(Debug, Clone)]
pub struct Minted {
    /// The access token.
    pub token: String,
    /// Seconds until expiry.
    pub expires_in: u64,
    /// Assigned instance id.
    pub instance_id: String,
    /// Granted grants.
    pub scope: Vec<GrantName>,
    /// The agent.
    pub agent: String,
    /// The device.
    pub device: String,
    /// The public rules and limits the runtime needs.
    pub profile: AgentProfile,
}

struct AgentRules {
    digests: Vec<ComponentDigest>,
    grants: Vec<GrantName>,
    rules: Vec<GrantRules>,
    limits: Limits,
    devices: Vec<String>,
    max_instances_per_device: u32,
    max_lifetime: u64,
    generation: u64,
}

/// Randomness for the service, behind a lock (it is `FnMut`-like).
pub type SharedEntropy = Arc<Mutex<Box<dyn Entropy + Send>>>;

/// The token service. Thread-safe; share it behind an `Arc`.
pub struct TokenService {
    devices: HashMap<String, PublicKey>,
    agents: HashMap<String, AgentRules>,
    settings: BackendSettings,
    nonces: NonceIssuer,
    replay: Mutex<ReplayCache>,
    issuer: TokenIssuer,
    verifier: TokenVerifier,
    clock: Arc<dyn Clock>,
    entropy: SharedEntropy,
    /// Live instances per (device, agent): instance id -> token expiry.
    live: Mutex<HashMap<(String, String), HashMap<String, u64>>>,
}

/// Secrets the token service is built from.
pub struct ServiceKeys<'a> {
    /// Seed of the Ed25519 token signing key.
    pub signing_seed: &'a [u8; 32],
    /// HMAC key for nonces.
    pub nonce_key: &'a [u8; 32],
    /// Random per start: nonces from before a restart are refused.
    pub boot_epoch: u64,
}

impl TokenService {
    /// Build from the config. `embedded_device` is the in-process device of
    /// embedded mode, if any: it may run every agent.
    pub fn new(
        config: &Config,
        keys: ServiceKeys<'_>,
        embedded_device: Option<PublicKey>,
        clock: Arc<dyn Clock>,
        entropy: SharedEntropy,
    ) -> Result<TokenService, TokenError> {
        let mut devices: HashMap<String, PublicKey> = config
            .devices
            .iter()
            .map(|d| (d.id.clone(), d.public_key))
            .collect();
        if let Some(key) = embedded_device {
            devices.insert(EMBEDDED_DEVICE.to_owned(), key);
        }
        let agents = config
            .agents
            .iter()
            .map(|a| {
                (
                    a.name.clone(),
                    AgentRules {
                        digests: a.digests.clone(),
                        grants: a.grants.clone(),
                        rules: config.rules_for(a),
                        limits: a.limits,
                        devices: a.devices.clone(),
                        max_instances_per_device: a.max_instances_per_device,
                        max_lifetime: a.max_token_lifetime,
                        generation: a.generation,
                    },
                )
            })
            .collect();
        let settings = config.backend.clone();
        let issuer = TokenIssuer::new(
            keys.signing_seed,
            settings.issuer.clone(),
            settings.audience.clone(),
        )?;
        let mut verifier = TokenVerifier::new(
            settings.issuer.clone(),
            settings.audience.clone(),
            CLOCK_TOLERANCE,
        );
        verifier.add_key(issuer.kid().to_owned(), issuer.public_key());
        Ok(TokenService {
            devices,
            agents,
            nonces: NonceIssuer::new(*keys.nonce_key, keys.boot_epoch, NONCE_MAX_AGE),
            replay: Mutex::new(ReplayCache::default()),
            issuer,
            verifier,
            settings,
            clock,
            entropy,
            live: Mutex::new(HashMap::new()),
        })
    }

    /// A fresh challenge. Writes nothing.
    pub fn challenge(&self) -> String {
        let mut salt = [0u8; edgeward_core::nonce::SALT_LEN];
        if let Ok(mut e) = self.entropy.lock() {
            e.fill(&mut salt);
        }
        // A poisoned lock leaves the salt zero: the nonce is still authentic
        // and fresh, only no longer unique within its second.
        self.nonces.issue(self.clock.now(), salt)
    }

    /// The JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        self.issuer.jwks()
    }

    /// Token service settings.
    pub fn settings(&self) -> &BackendSettings {
        &self.settings
    }

    /// RFC 8414 metadata for a backend reachable at `base_url`.
    pub fn metadata(&self, base_url: &str) -> serde_json::Value {
        serde_json::json!({
            "issuer": self.settings.issuer,
            "token_endpoint": format!("{base_url}/v1/token"),
            "jwks_uri": format!("{base_url}/.well-known/jwks.json"),
            "grant_types_supported": [edgeward_core::egress::TOKEN_EXCHANGE_GRANT],
            "token_endpoint_auth_methods_supported": ["none"],
            "response_types_supported": [],
            "edgeward_challenge_endpoint": format!("{base_url}/v1/challenge"),
            "edgeward_attestation_token_type": edgeward_core::egress::ATTESTATION_TOKEN_TYPE,
        })
    }

    /// RFC 8693 exchange. `form` is the decoded request body.
    pub fn exchange(&self, form: &HashMap<String, String>) -> Result<Minted, ExchangeError> {
        let field = |name: &str| form.get(name).map(String::as_str);
        if field("grant_type") != Some(edgeward_core::egress::TOKEN_EXCHANGE_GRANT) {
            return Err(ExchangeError::before("grant_type is not token-exchange"));
        }
        let actor = field("actor_token").ok_or_else(|| ExchangeError::before("no actor_token"))?;
        let subject =
            field("subject_token").ok_or_else(|| ExchangeError::before("no subject_token"))?;
        for (name, expected) in [
            (
                "actor_token_type",
                edgeward_core::egress::ATTESTATION_TOKEN_TYPE,
            ),
            (
                "subject_token_type",
                edgeward_core::egress::ATTESTATION_TOKEN_TYPE,
            ),
        ] {
            if field(name) != Some(expected) {
                return Err(ExchangeError::before(format!(
                    "{name} is not the attestation type"
                )));
            }
        }
        // Without a user, the subject is the attested instance itself.
        if actor != subject {
            return Err(ExchangeError::before(
                "subject_token differs from actor_token and user assertions are not supported",
            ));
        }
        let unverified = UnverifiedAttestation::parse(actor)
            .map_err(|e| ExchangeError::before(format!("malformed attestation: {e}")))?;
        let device = unverified.device_id().to_owned();
        let key = self
            .devices
            .get(&device)
            .ok_or_else(|| ExchangeError::before(format!("unknown device {device:?}")))?;
        let verified = unverified
            .verify(key)
            .map_err(|e| ExchangeError::before(format!("device {device}: {e}")))?;
        self.authorize_and_mint(&device, &verified)
    }

    fn authorize_and_mint(
        &self,
        device: &str,
        att: &VerifiedAttestation,
    ) -> Result<Minted, ExchangeError> {
        let now = self.clock.now();
        let issued_at = self
            .nonces
            .check(att.nonce(), now)
            .map_err(|e| ExchangeError::after("invalid_grant", format!("nonce refused: {e}")))?;
        {
            let mut replay = self.replay.lock().map_err(|_| poisoned())?;
            if !replay.insert_if_new(att.nonce(), issued_at + NONCE_MAX_AGE + 1, now) {
                return Err(ExchangeError::after(
                    "invalid_grant",
                    "nonce refused: it was already used",
                ));
            }
        }
        let agent_name = att.agent();
        let agent = self.agents.get(agent_name).ok_or_else(|| {
            ExchangeError::after("invalid_grant", format!("unknown agent {agent_name:?}"))
        })?;
        if device != EMBEDDED_DEVICE && !agent.devices.iter().any(|d| d == device) {
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
        // No grants requested means all of the agent's grants.
        let scope: Vec<GrantName> = if att.grants().is_empty() {
            agent.grants.clone()
        } else {
            att.grants().to_vec()
        };
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
            self.settings.default_token_lifetime
        } else {
            att.lifetime()
        };
        let lifetime = requested.min(agent.max_lifetime);

        let jkt = att.instance_key().jwk_thumbprint();
        let instance_id = instance_id(device, agent_name, &jkt);
        {
            let mut live = self.live.lock().map_err(|_| poisoned())?;
            let slot = live
                .entry((device.to_owned(), agent_name.to_owned()))
                .or_default();
            slot.retain(|_, exp| *exp > now);
            if !slot.contains_key(&instance_id)
                && slot.len() >= agent.max_instances_per_device as usize
            {
                return Err(ExchangeError::after(
                    "invalid_grant",
                    format!(
                        "agent {agent_name} already has {} live instance(s) on device {device} (the maximum)",
                        slot.len()
                    ),
                ));
            }
            slot.insert(instance_id.clone(), now + lifetime);
        }
        let mut jti = [0u8; 16];
        self.entropy.lock().map_err(|_| poisoned())?.fill(&mut jti);
        let td = &self.settings.trust_domain;
        let instance_spiffe = format!("spiffe://{td}/agent/{agent_name}/instance/{instance_id}");
        let mint = Mint {
            sub: instance_spiffe.clone(),
            instance_spiffe,
            device_spiffe: format!("spiffe://{td}/device/{device}"),
            agent: agent_name.to_owned(),
            scope: scope.clone(),
            generation: agent.generation,
            jkt,
            now,
            lifetime,
            jti: hex::encode(jti),
        };
        let token = self
            .issuer
            .mint(&mint)
            .map_err(|e| ExchangeError::after("server_error", format!("cannot mint: {e}")))?;
        let profile = AgentProfile {
            grants: agent
                .rules
                .iter()
                .filter(|r| scope.contains(&r.name))
                .cloned()
                .collect(),
            limits: agent.limits,
        };
        Ok(Minted {
            token,
            expires_in: lifetime,
            instance_id,
            scope,
            agent: agent_name.to_owned(),
            device: device.to_owned(),
            profile,
        })
    }

    /// Verify an access token presented on the egress path.
    pub fn verify_access(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        self.verifier.verify(token, self.clock.now())
    }
}

fn poisoned() -> ExchangeError {
    ExchangeError::after("server_error", "internal state lock poisoned")
}

/// Instance ids are derived, not stored: the same device, agent and instance
/// key always give the same id, so renewal keeps the identity.
pub fn instance_id(device: &str, agent: &str, jkt: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"edgeward-instance-v1\0");
    h.update(device.as_bytes());
    h.update([0]);
    h.update(agent.as_bytes());
    h.update([0]);
    h.update(jkt.as_bytes());
    hex::encode(&h.finalize()[..10])
}
