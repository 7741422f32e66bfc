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

use crate::revocation::{RevocationKind, Revocations};
use crate::store::{self, AuditEntry, Checkpoint, IssuedToken, Store, StoreError};
use edgeward_core::attest::{UnverifiedAttestation, VerifiedAttestation};
use edgeward_core::clock::Clock;
use edgeward_core::config::{BackendSettings, EMBEDDED_DEVICE};
use edgeward_core::egress::{AgentProfile, StopPoll};
use edgeward_core::entropy::Entropy;
use edgeward_core::grant::GrantName;
use edgeward_core::keys::{Ed25519Signer, Es256Signer, PublicKey, SigAlg, Signer as _};
use edgeward_core::nonce::{NonceIssuer, ReplayCache};
use edgeward_core::token::{TokenError, TokenIssuer, TokenVerifier, VerifiedToken};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Sign an audit checkpoint every this many records.
pub const CHECKPOINT_EVERY: u64 = 64;
/// How long a challenge stays valid, seconds.
pub const NONCE_MAX_AGE: u64 = 60;
/// Clock tolerance for token verification, seconds.
pub const CLOCK_TOLERANCE: u64 = 5;

pub use edgeward_core::exchange::ExchangeError;

/// The result of a successful exchange. Its `Debug` never shows the token.
#[derive(Clone)]
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
    /// Lets the instance attenuate this token offline.
    pub chain_key: edgeward_core::caveat::ChainKey,
    /// The user the instance acts for (`sub`), if a user assertion came.
    pub on_behalf_of: Option<String>,
    /// The token's `jti`.
    pub jti: String,
    /// For a delegated child: its line, e.g. `courier (instance …) > reader`.
    pub delegated_by: Option<String>,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("token", &"[REDACTED]")
            .field("expires_in", &self.expires_in)
            .field("instance_id", &self.instance_id)
            .field("agent", &self.agent)
            .field("device", &self.device)
            .field("jti", &self.jti)
            .finish_non_exhaustive()
    }
}

/// Fail closed: no verdict on a token without the registry.
fn registry_unavailable(e: StoreError) -> AccessError {
    AccessError::Unavailable(format!("registry unavailable: {e}"))
}

/// What a delegated child's token descends from (none for an instance).
fn lineage_of(parent: Option<&Access>) -> edgeward_core::token::Lineage {
    parent.map_or_else(Default::default, |p| {
        edgeward_core::exchange::lineage_of(&p.token, &p.caveats)
    })
}

/// Randomness for the service, behind a lock (it is `FnMut`-like).
pub type SharedEntropy = Arc<Mutex<Box<dyn Entropy + Send>>>;

pub use edgeward_core::access::AccessError;

/// A token that passed [`TokenService::check_access`], with its agent as the
/// registry has it now.
#[derive(Debug)]
pub struct Access {
    /// The verified token.
    pub token: VerifiedToken,
    /// The agent's current record (grants, limits, generation).
    pub agent: store::AgentRecord,
    /// What the presented token may do: the token's own rights, narrowed by
    /// its caveats if it was attenuated. Proofs of possession must come from
    /// `rights.holder`.
    pub rights: edgeward_core::caveat::Rights,
    /// The caveats of the chain the token was presented with (none for a
    /// bare token).
    pub caveats: Vec<edgeward_core::caveat::Caveat>,
    /// The registry generation of the agent acting (the chain's last
    /// sub-agent, else the token's agent): approvals are bound to it.
    pub acting_generation: u64,
}

/// The token service. Thread-safe; share it behind an `Arc`.
pub struct TokenService {
    revocations: Revocations,
    store: Arc<dyn Store>,
    embedded_device: Option<PublicKey>,
    settings: BackendSettings,
    nonces: NonceIssuer,
    replay: Mutex<ReplayCache>,
    keys: std::sync::RwLock<SigningKeys>,
    /// DPoP proofs seen (jkt + jti), until they could no longer be fresh.
    proof_replay: Mutex<ReplayCache>,
    clock: Arc<dyn Clock>,
    entropy: SharedEntropy,
    /// Keys no device holds (Ed25519, P-256): unknown devices are verified
    /// against them so timing matches a known device with a bad signature.
    stand_in: (PublicKey, PublicKey),
    /// When the last revocation was applied (monotonic), to measure stops.
    last_revoke: Mutex<Option<std::time::Instant>>,
    /// Per agent, the last stop order sent.
    last_stops: Mutex<HashMap<String, LastStop>>,
    /// Scans every audit record before it is written (set by the backend,
    /// which holds the credentials).
    audit_scanner: std::sync::OnceLock<edgeward_core::scan::Scanner>,
    /// Serialises the live-instance count and the token record of one
    /// exchange, so two racing exchanges cannot both take the last slot.
    minting: Mutex<()>,
    /// Root of every token's caveat chain (see `edgeward_core::caveat`).
    caveat_root: zeroize::Zeroizing<[u8; 32]>,
    /// Async writes under way (see `write_async`).
    writes_in_flight: std::sync::atomic::AtomicUsize,
    /// Tokens whose signature verified, so a call does not verify the same
    /// signature again (revocation and registry are still checked).
    verified: crate::verified::VerifiedCache,
    /// Bumped whenever an approval ticket is decided: wakes waiting guests.
    tickets_decided: tokio::sync::watch::Sender<u64>,
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
    /// Build on a store (the registry and revocations) with these settings.
    /// `embedded_device` is the in-process device of embedded mode, if any:
    /// it may run every agent.
    pub fn new(
        store: Arc<dyn Store>,
        settings: BackendSettings,
        keys: ServiceKeys<'_>,
        embedded_device: Option<PublicKey>,
        clock: Arc<dyn Clock>,
        entropy: SharedEntropy,
    ) -> Result<TokenService, ServiceError> {
        let signing = SigningKeys::load(store.as_ref(), &settings, keys.signing_seed, clock.now())?;
        let stand_in = {
            let mut seed = [0u8; 32];
            entropy
                .lock()
                .map_err(|_| ServiceError::Entropy)?
                .fill(&mut seed);
            let ed = Ed25519Signer::from_seed(&seed).map_err(|_| ServiceError::Entropy)?;
            let es =
                Es256Signer::generate(&mut **entropy.lock().map_err(|_| ServiceError::Entropy)?)
                    .map_err(|_| ServiceError::Entropy)?;
            (ed.public_key(), es.public_key())
        };
        let revocations = Revocations::default();
        for r in store.revocations()? {
            revocations.add(&from_stored(&r));
        }
        Ok(TokenService {
            revocations,
            store,
            embedded_device,
            nonces: NonceIssuer::new(*keys.nonce_key, keys.boot_epoch, NONCE_MAX_AGE),
            replay: Mutex::new(ReplayCache::default()),
            proof_replay: Mutex::new(ReplayCache::default()),
            keys: std::sync::RwLock::new(signing),
            settings,
            clock,
            entropy,
            minting: Mutex::new(()),
            // From the nonce key under its own label: it survives signing-key
            // rotation and needs no key material of its own on disk.
            caveat_root: edgeward_core::caveat::derive_root(keys.nonce_key),
            verified: Default::default(),
            tickets_decided: tokio::sync::watch::channel(0).0,
            writes_in_flight: Default::default(),
            audit_scanner: std::sync::OnceLock::new(),
            last_revoke: Mutex::new(None),
            last_stops: Mutex::new(HashMap::new()),
            stand_in,
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
        match self.keys.read() {
            Ok(k) => k.jwks(self.clock.now()),
            Err(_) => serde_json::json!({ "keys": [] }),
        }
    }

    /// Token service settings.
    pub fn settings(&self) -> &BackendSettings {
        &self.settings
    }

    /// Append an audit record; every [`CHECKPOINT_EVERY`] records, sign a
    /// checkpoint with the backend key. A failure is returned: callers fail
    /// closed (no decision without its record).
    pub fn audit(&self, mut entry: AuditEntry) -> Result<(), StoreError> {
        entry.at = self.clock.now();
        if let Some(scanner) = self.audit_scanner.get() {
            scrub_entry(scanner, &mut entry);
        }
        let record = self.store.append_audit(&entry)?;
        if record.seq % CHECKPOINT_EVERY == 0 {
            self.checkpoint_at(record.seq, record.hash)?;
        }
        Ok(())
    }

    /// [`TokenService::audit`] from async code (see [`Self::write_async`]).
    pub async fn audit_async(self: &Arc<Self>, entry: AuditEntry) -> Result<(), StoreError> {
        self.write_async(move |t| t.audit(entry))
            .await
            .unwrap_or(Err(StoreError::Busy))
    }

    /// [`TokenService::exchange`] from async code (see [`Self::write_async`]).
    pub async fn exchange_async(
        self: &Arc<Self>,
        form: HashMap<String, String>,
    ) -> Result<Minted, ExchangeError> {
        self.write_async(move |t| t.exchange(&form))
            .await
            .unwrap_or_else(|| {
                Err(ExchangeError::after(
                    "server_error",
                    "the token exchange was interrupted",
                ))
            })
    }

    /// Run `write` (which writes to the store) from async code. When the
    /// store's writes wait for the disk and another write is in flight, it
    /// runs on a blocking thread: its fsync is shared with the others (group
    /// commit) and holds no worker. Alone, or on a store that does not wait,
    /// it runs in place: a thread hand-off would cost more than it saves.
    /// `None` if the blocking thread died.
    async fn write_async<T: Send + 'static>(
        self: &Arc<Self>,
        write: impl FnOnce(&TokenService) -> T + Send + 'static,
    ) -> Option<T> {
        if !self.store.writes_wait_for_disk() {
            return Some(write(self));
        }
        let busy = InFlight::enter(&self.writes_in_flight);
        if !busy.crowded {
            return Some(write(self));
        }
        let this = Arc::clone(self);
        let result = tokio::task::spawn_blocking(move || write(&this)).await.ok();
        drop(busy);
        result
    }

    /// Install the scanner audit records go through (once).
    pub fn set_audit_scanner(&self, scanner: edgeward_core::scan::Scanner) {
        let _ = self.audit_scanner.set(scanner);
    }

    /// Sign a checkpoint of the current head (also called by `audit verify`
    /// callers who want the tail covered).
    pub fn checkpoint(&self) -> Result<Option<u64>, StoreError> {
        match self.store.audit_head()? {
            Some((seq, hash)) => {
                self.checkpoint_at(seq, hash)?;
                Ok(Some(seq))
            }
            None => Ok(None),
        }
    }

    fn checkpoint_at(&self, seq: u64, hash: [u8; 32]) -> Result<(), StoreError> {
        let keys = self.keys.read().map_err(|_| StoreError::Busy)?;
        let current = keys.current();
        let mut cp = Checkpoint {
            seq,
            hash,
            at: self.clock.now(),
            kid: current.issuer.kid().to_owned(),
            signature: Vec::new(),
        };
        cp.signature =
            current
                .signer
                .sign(&cp.signing_input())
                .map_err(|e| StoreError::Invalid {
                    field: "checkpoint",
                    reason: e.to_string(),
                })?;
        drop(keys);
        self.store.add_checkpoint(&cp)
    }

    /// Whether a checkpoint carries a valid signature of one of this
    /// backend's keys (current or rotated out).
    pub fn checkpoint_is_authentic(&self, cp: &Checkpoint) -> bool {
        let Ok(keys) = self.keys.read() else {
            return false;
        };
        keys.all.iter().any(|k| {
            k.issuer.kid() == cp.kid
                && k.signer
                    .public_key()
                    .verify(SigAlg::EdDSA, &cp.signing_input(), &cp.signature)
                    .is_ok()
        })
    }

    /// `keys rotate`: a new signing key signs from now on; the old one stays
    /// in the JWKS and the verifier until every token it signed has expired.
    /// Returns the new `kid`.
    pub fn rotate_signing_key(&self) -> Result<String, StoreError> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        self.entropy
            .lock()
            .map_err(|_| StoreError::Busy)?
            .fill(seed.as_mut());
        let now = self.clock.now();
        let key =
            SigningKey::new(&seed, &self.settings, None).map_err(|e| StoreError::Invalid {
                field: "signing key",
                reason: e.to_string(),
            })?;
        let kid = key.issuer.kid().to_owned();
        let mut keys = self.keys.write().map_err(|_| StoreError::Busy)?;
        let old = keys.current().issuer.kid().to_owned();
        self.store.add_signing_key(&kid, seed.as_ref(), now)?;
        self.store.retire_signing_key(&old, now)?;
        keys.rotate(key, now);
        drop(keys);
        self.verified.clear();
        tracing::warn!(%kid, retired = %old, "signing key rotated");
        self.audit(AuditEntry {
            kind: "admin".into(),
            decision: "allow".into(),
            reason: Some(format!("signing key rotated: {old} -> {kid}")),
            ..AuditEntry::default()
        })?;
        Ok(kid)
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

    /// RFC 8693 exchange. `form` is the decoded request body. Every outcome
    /// is audited; without its audit record, no token leaves.
    pub fn exchange(&self, form: &HashMap<String, String>) -> Result<Minted, ExchangeError> {
        let result = self.exchange_unaudited(form);
        match &result {
            Ok(m) => tracing::info!(
                agent = %m.agent,
                device = %m.device,
                instance = %m.instance_id,
                expires_in = m.expires_in,
                "token minted"
            ),
            // Debug-formatted: the reason may quote unauthenticated input.
            Err(e) => tracing::warn!(
                authenticated = e.authenticated,
                reason = ?e.reason,
                "token exchange refused"
            ),
        }
        let entry = match &result {
            Ok(m) => AuditEntry {
                kind: "exchange".into(),
                decision: "allow".into(),
                agent: Some(m.agent.clone()),
                instance: Some(m.instance_id.clone()),
                device: Some(m.device.clone()),
                jti: Some(m.jti.clone()),
                user: m.on_behalf_of.clone(),
                reason: {
                    let user = m.on_behalf_of.as_ref().map(|u| format!("on behalf of {u}"));
                    let line = m.delegated_by.as_ref().map(|d| format!("delegated: {d}"));
                    match (user, line) {
                        (Some(u), Some(l)) => Some(format!("{l}, {u}")),
                        (u, l) => l.or(u),
                    }
                },
                ..AuditEntry::default()
            },
            Err(e) => AuditEntry {
                kind: "exchange".into(),
                decision: "deny".into(),
                reason: Some(e.reason.chars().take(1000).collect()),
                ..AuditEntry::default()
            },
        };
        let stage = tracing::trace_span!(target: "edgeward::stage", "exchange.audit");
        let written = self.audit(entry);
        drop(stage);
        if let Err(e) = written {
            tracing::error!("cannot write the audit log: {e}");
            return Err(ExchangeError::after(
                "server_error",
                "the audit log is unavailable",
            ));
        }
        result
    }

    fn exchange_unaudited(&self, form: &HashMap<String, String>) -> Result<Minted, ExchangeError> {
        use edgeward_core::exchange::ExchangeRequest;
        let request = ExchangeRequest::parse(form)?;
        let actor = request.actor;
        // The subject is the attested instance itself, a user's assertion
        // (the instance acts for the user), or a parent's token narrowed for
        // this instance (a delegated child). The assertion and the chain are
        // checked only after the device's signature: before that, every
        // refusal looks the same.
        let (user_assertion, delegation) = (
            request.subject.user_assertion(),
            request.subject.delegation(),
        );
        // Stage spans (target `edgeward::stage`) time the exchange for the
        // benchmarks; disabled, each costs one relaxed load.
        let stage = tracing::trace_span!(target: "edgeward::stage", "exchange.verify");
        let unverified = UnverifiedAttestation::parse(actor)
            .map_err(|e| ExchangeError::before(format!("malformed attestation: {e}")))?;
        let device = unverified.device_id().to_owned();
        // An unknown device is checked against a stand-in key of the claimed
        // algorithm, so it costs what a bad signature costs: response time
        // does not tell which device ids exist.
        let (key, known) = match self.device_key(&device) {
            Ok(key) => (key, true),
            Err(e) => (self.stand_in_key(unverified.alg()), {
                tracing::debug!("{}", e.reason);
                false
            }),
        };
        let verified = unverified.verify(&key);
        if !known {
            return Err(ExchangeError::before(format!("unknown device {device:?}")));
        }
        let verified =
            verified.map_err(|e| ExchangeError::before(format!("device {device}: {e}")))?;
        let user = match user_assertion {
            None => None,
            Some(jwt) => Some(
                edgeward_core::user::verify_assertion(
                    jwt,
                    &self.settings.user_issuers,
                    self.clock.now(),
                    CLOCK_TOLERANCE,
                )
                .map_err(|e| {
                    ExchangeError::after("invalid_grant", format!("user assertion refused: {e}"))
                })?,
            ),
        };
        if let Some(u) = &user {
            edgeward_core::user::may_act_for(
                &self.settings.user_issuers,
                verified.agent(),
                &u.principal(),
            )
            .map_err(|e| {
                ExchangeError::after("invalid_grant", format!("user assertion refused: {e}"))
            })?;
        }
        let parent = match delegation {
            None => None,
            Some(chain) => Some(self.check_delegation(chain, &verified)?),
        };
        drop(stage);
        self.authorize_and_mint(&device, &verified, user.as_ref(), parent.as_ref())
    }

    /// The parent a delegated child's exchange presents: a chain that
    /// verifies now, whose last holder is the attested instance key and
    /// whose last `agent` caveat names the attested agent.
    fn check_delegation(
        &self,
        chain: &str,
        att: &VerifiedAttestation,
    ) -> Result<Access, ExchangeError> {
        let refused = |reason: String| {
            ExchangeError::after("invalid_grant", format!("delegation refused: {reason}"))
        };
        let access = self
            .check_access(chain)
            .map_err(|e| refused(e.to_string()))?;
        edgeward_core::exchange::check_hand_off(
            &access.token,
            &access.caveats,
            &access.rights,
            att,
        )?;
        Ok(access)
    }

    fn authorize_and_mint(
        &self,
        device: &str,
        att: &VerifiedAttestation,
        user: Option<&edgeward_core::user::VerifiedUser>,
        parent: Option<&Access>,
    ) -> Result<Minted, ExchangeError> {
        let stage = tracing::trace_span!(target: "edgeward::stage", "exchange.authorize");
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
        let jkt = att.instance_key().jwk_thumbprint();
        let instance_id = instance_id(device, agent_name, &jkt);
        if let Some(reason) = self
            .revocations
            .refuses_exchange(device, agent_name, &instance_id)
        {
            return Err(ExchangeError::after("invalid_grant", reason));
        }
        let agent = self
            .store
            .agent(agent_name)
            .map_err(store_failure)?
            .ok_or_else(|| {
                ExchangeError::after("invalid_grant", format!("unknown agent {agent_name:?}"))
            })?;
        if let Some(reason) = self
            .revocations
            .refuses_generation(agent_name, agent.generation)
        {
            return Err(ExchangeError::after("invalid_grant", reason));
        }
        let authorized = edgeward_core::exchange::authorize(
            edgeward_core::exchange::AgentRules {
                name: &agent.name,
                devices: &agent.devices,
                digests: &agent.digests,
                grants: &agent.grants,
                max_token_lifetime: agent.max_token_lifetime,
            },
            device,
            att,
            user.map(|u| u.expires_at),
            parent.map(|p| edgeward_core::exchange::Parent {
                grants: &p.rights.grants,
                expires_at: p.rights.expires_at.min(p.token.exp()),
            }),
            self.settings.default_token_lifetime,
            now,
        )?;
        let lifetime = authorized.lifetime;

        let _minting = self.minting.lock().map_err(|_| poisoned())?;
        let live: Vec<String> = self
            .store
            .live_instance_ids(agent_name, device, now)
            .map_err(store_failure)?;
        edgeward_core::exchange::check_instance_cap(
            agent_name,
            device,
            &instance_id,
            &live,
            agent.max_instances_per_device,
        )?;
        drop(stage);
        let stage = tracing::trace_span!(target: "edgeward::stage", "exchange.mint");
        let mut jti = [0u8; 16];
        self.entropy.lock().map_err(|_| poisoned())?.fill(&mut jti);
        let principal = user.map(edgeward_core::user::VerifiedUser::principal);
        let (mint, on_behalf_of) = edgeward_core::exchange::mint_claims(
            edgeward_core::exchange::Minting {
                trust_domain: &self.settings.trust_domain,
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
            hex::encode(jti),
        );
        let token = self
            .keys
            .read()
            .map_err(|_| poisoned())?
            .current()
            .issuer
            .mint_delegated(&mint, &lineage_of(parent))
            .map_err(|e| edgeward_core::exchange::mint_refused(parent.is_some(), e))?;
        drop(stage);
        let _stage = tracing::trace_span!(target: "edgeward::stage", "exchange.record");
        self.store
            .record_token(&IssuedToken {
                jti: mint.jti.clone(),
                instance_id: instance_id.clone(),
                agent: agent_name.to_owned(),
                device: device.to_owned(),
                generation: agent.generation,
                issued_at: now,
                expires_at: now + lifetime,
            })
            .map_err(store_failure)?;
        let mut rules = Vec::new();
        for name in &authorized.scope {
            if let Some(g) = self.store.grant(name).map_err(store_failure)? {
                rules.push(g.rules);
            }
        }
        let profile = AgentProfile {
            grants: rules,
            limits: agent.limits,
        };
        let chain_key = edgeward_core::caveat::ChainKey::derive(&self.caveat_root, &token);
        let delegated_by = parent.map(|p| {
            let t = &p.token;
            let instance =
                crate::revocation::spiffe_segment(t.instance(), "/instance/").unwrap_or("-");
            std::iter::once(format!(
                "{} (instance {instance}, token {})",
                t.agent(),
                t.jti()
            ))
            .chain(p.rights.agents.iter().cloned())
            .collect::<Vec<_>>()
            .join(" > ")
        });
        Ok(Minted {
            delegated_by,
            on_behalf_of,
            chain_key,
            token,
            expires_in: lifetime,
            instance_id,
            scope: authorized.scope,
            agent: agent_name.to_owned(),
            device: device.to_owned(),
            profile,
            jti: mint.jti,
        })
    }

    fn verify_signed(&self, token: &str, now: u64) -> Result<VerifiedToken, TokenError> {
        match self.keys.read() {
            Ok(keys) => keys.verifier.verify(token, now),
            Err(_) => Err(TokenError::UnknownKey),
        }
    }

    /// The key of a device that may attest; `unknown device` otherwise. A
    /// revoked device's key is still returned: its refusal comes after the
    /// signature verified, with a precise reason.
    fn device_key(&self, device: &str) -> Result<PublicKey, ExchangeError> {
        if device == EMBEDDED_DEVICE {
            return self
                .embedded_device
                .ok_or_else(|| ExchangeError::before("no in-process device here"));
        }
        match self.store.device(device) {
            Ok(Some(d)) => Ok(d.public_key),
            Ok(None) => Err(ExchangeError::before(format!("unknown device {device:?}"))),
            Err(e) => Err(ExchangeError::before(format!("store: {e}"))),
        }
    }

    fn stand_in_key(&self, alg: SigAlg) -> PublicKey {
        match alg {
            SigAlg::ES256 => self.stand_in.1,
            _ => self.stand_in.0,
        }
    }

    /// An approval ticket was decided: wake the guests waiting on tickets.
    pub fn note_ticket_decided(&self) {
        self.tickets_decided.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// 16 random bytes, hex: ids for tickets and the like.
    pub fn random_id(&self) -> String {
        let mut id = [0u8; 16];
        // A poisoned lock still holds a working source: ids must never
        // repeat, so it is used rather than skipped.
        self.entropy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .fill(&mut id);
        hex::encode(id)
    }

    /// The store behind the service.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Verify an access token presented on the egress path: valid, not
    /// revoked, of the agent's current generation. Returns the agent's
    /// registry record too (read once per call: the hot path needs it).
    pub fn check_access(&self, presented: &str) -> Result<Access, AccessError> {
        use edgeward_core::access::{LiveAgent, Presented, check_lineage, check_users};
        let now = self.clock.now();
        // Bounded, and an attenuated token's chain verified against the
        // root, before anything else is read.
        let presented = Presented::parse(presented, &self.caveat_root)?;
        let token = presented.token;
        let verified = match self.verified.get(token, now) {
            Some(v) => v,
            None => {
                let v = self.verify_signed(token, now)?;
                self.verified.insert(token, &v, now);
                v
            }
        };
        // The token's own agent is read once: the call needs its record.
        let agent = match self.store.agent(verified.agent()) {
            Ok(a) => a,
            Err(e) => return Err(registry_unavailable(e)),
        };
        let own = agent.as_ref();
        let lookup = |name: &str| -> Result<Option<LiveAgent<'_>>, AccessError> {
            if name == verified.agent() {
                return Ok(own.map(|r| LiveAgent {
                    generation: r.generation,
                    grants: r.grants.as_slice().into(),
                }));
            }
            let record = self.store.agent(name).map_err(registry_unavailable)?;
            Ok(record.map(|r| LiveAgent {
                generation: r.generation,
                grants: r.grants.into(),
            }))
        };
        let checked = self
            .revocations
            .with(|set| check_lineage(&verified, &presented.caveats, set, lookup))
            .map_err(|e| AccessError::Unavailable(e.into()))??;
        check_users(&self.settings.user_issuers, &verified, &checked.rights)?;
        let agent = agent.ok_or_else(|| {
            AccessError::Revoked(format!("agent {} no longer exists", verified.agent()))
        })?;
        Ok(Access {
            caveats: presented.caveats,
            token: verified,
            agent,
            rights: checked.rights,
            acting_generation: checked.acting_generation,
        })
    }

    /// Revoke: written to the store first (it must survive a crash right
    /// after this returns), then in memory, where it takes effect on the
    /// next call of any affected token and wakes the stop channel.
    pub fn revoke(&self, kind: &RevocationKind, by: &str, reason: &str) -> Result<(), StoreError> {
        let stored = self
            .store
            .add_revocation(&to_stored(kind), self.clock.now(), by, reason)?;
        tracing::warn!(?kind, by, "revoked");
        self.revocations.add(&from_stored(&stored));
        if let Ok(mut t) = self.last_revoke.lock() {
            *t = Some(std::time::Instant::now());
        }
        Ok(())
    }

    /// Apply a revocation another code path already stored (deprovision,
    /// generation bumps).
    pub fn note_revoked(&self, kind: &RevocationKind) {
        self.revocations.add(kind);
        if let Ok(mut t) = self.last_revoke.lock() {
            *t = Some(std::time::Instant::now());
        }
    }

    /// Check a DPoP proof for a request made with a verified token bound to
    /// `jkt`; its `jti` is then remembered so it cannot be replayed.
    pub fn check_proof(
        &self,
        proof: &str,
        method: &http::Method,
        uri: &http::Uri,
        token: &str,
        jkt: &str,
    ) -> Result<(), edgeward_core::dpop::DpopError> {
        use edgeward_core::dpop::{DpopError, Expected, verify_fresh};
        let now = self.clock.now();
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
        let fresh = self
            .proof_replay
            .lock()
            .map(|mut c| c.insert_if_new(&seen.key, seen.until, now))
            .unwrap_or(false);
        if fresh {
            Ok(())
        } else {
            Err(DpopError::Malformed("replayed proof"))
        }
    }

    /// RFC 7009: revoke a presented token if it is one of ours (expired or
    /// already revoked tokens included) and `proof` is a DPoP proof for
    /// `POST uri` from its key; anything not ours is ignored.
    pub fn revoke_presented(
        &self,
        token: &str,
        proof: Option<&str>,
        uri: &http::Uri,
    ) -> Result<(), edgeward_core::dpop::DpopError> {
        // Verify at the token's own issue time: an expired token of ours may
        // still be revoked, a forged one is ignored (so the set cannot be
        // filled with junk).
        let Some(iat) = edgeward_core::token::unverified_iat(token) else {
            return Ok(());
        };
        if let Ok(verified) = self.verify_signed(token, iat) {
            // Only the key holder: a chain's holder has the token, not the key.
            let proof = proof.ok_or(edgeward_core::dpop::DpopError::Malformed("no DPoP proof"))?;
            self.check_proof(proof, &http::Method::POST, uri, token, verified.jkt())?;
            let kind = RevocationKind::Token {
                jti: verified.jti().to_owned(),
            };
            if let Err(e) = self.revoke(&kind, "rfc7009", "revoked by its holder") {
                tracing::error!("cannot store a revocation: {e}");
            }
        }
        Ok(())
    }

    /// Record that a stop order left for an instance, and how long after
    /// the last revocation: the inventory's "how fast revocable".
    fn note_stop_delivered(&self, token: &str, reason: &str) {
        let now = self.clock.now();
        let Ok(verified) = self.verify_signed(token, now) else {
            return;
        };
        let after = self
            .last_revoke
            .lock()
            .ok()
            .and_then(|t| *t)
            .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX));
        if let Ok(mut stops) = self.last_stops.lock() {
            stops.insert(
                verified.agent().to_owned(),
                LastStop {
                    at: now,
                    after_revoke_ms: after,
                },
            );
        }
        let instance =
            crate::revocation::spiffe_segment(verified.instance(), "/instance/").map(str::to_owned);
        let entry = AuditEntry {
            kind: "stop".into(),
            decision: "stop".into(),
            agent: Some(verified.agent().to_owned()),
            instance,
            jti: Some(verified.jti().to_owned()),
            reason: Some(match after {
                Some(ms) => format!("stop order sent {ms} ms after the revocation: {reason}"),
                None => format!("stop order sent: {reason}"),
            }),
            ..AuditEntry::default()
        };
        if let Err(e) = self.audit(entry) {
            tracing::error!("cannot write the audit log: {e}");
        }
    }

    /// When the last stop order for an agent's instance left, and how long
    /// after the revocation that caused it.
    pub fn last_stop(&self, agent: &str) -> Option<LastStop> {
        self.last_stops.lock().ok()?.get(agent).copied()
    }

    /// Wait up to `timeout` for a decision on an approval ticket, as the
    /// holder of `token`: a ticket of another agent or user is `Unknown`
    /// (it says nothing about other agents' tickets).
    pub async fn wait_ticket(
        &self,
        token: &str,
        ticket: &str,
        timeout: std::time::Duration,
    ) -> Result<edgeward_core::egress::TicketState, AccessError> {
        use crate::store::ApprovalStatus;
        use edgeward_core::egress::TicketState;
        let access = self.check_access(token)?;
        let agent = access
            .rights
            .agents
            .last()
            .map_or(access.token.agent(), String::as_str)
            .to_owned();
        let user = access.token.on_behalf_of().map(str::to_owned);
        if !edgeward_core::egress::is_ticket_id(ticket) {
            return Ok(TicketState::Unknown);
        }
        let mut decided = self.tickets_decided.subscribe();
        let until =
            tokio::time::Instant::now() + timeout.min(edgeward_core::egress::MAX_TICKET_WAIT);
        loop {
            let t = self
                .store
                .approval(ticket, self.clock.now())
                .map_err(registry_unavailable)?;
            let state = match t {
                Some(t) if t.agent == agent && t.user == user => match t.status {
                    ApprovalStatus::Pending => TicketState::Pending,
                    ApprovalStatus::Approved => TicketState::Approved,
                    ApprovalStatus::Denied => TicketState::Denied,
                    ApprovalStatus::Used | ApprovalStatus::Expired => TicketState::Expired,
                },
                _ => TicketState::Unknown,
            };
            if state != TicketState::Pending || tokio::time::Instant::now() >= until {
                return Ok(state);
            }
            // Woken by a decision made through this backend; a decision
            // made elsewhere on the same database is seen within a second.
            let next = (tokio::time::Instant::now() + std::time::Duration::from_secs(1)).min(until);
            let _ = tokio::time::timeout_at(next, decided.changed()).await;
        }
    }

    /// Long-poll the stop channel for the instance holding `token`: returns
    /// at once if it is revoked, else when a revocation concerns it, else
    /// after the poll time with the lease.
    pub async fn poll_stop(&self, token: &str) -> Result<StopPoll, AccessError> {
        let mut changes = self.revocations.subscribe();
        let until = tokio::time::Instant::now()
            + std::time::Duration::from_secs(self.settings.stop_poll_secs);
        loop {
            changes.borrow_and_update();
            match self.check_access(token) {
                Ok(_) => {}
                Err(AccessError::Revoked(reason)) => {
                    self.note_stop_delivered(token, &reason);
                    return Ok(StopPoll::Stop { reason });
                }
                Err(e) => return Err(e),
            }
            match tokio::time::timeout_at(until, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    return Ok(StopPoll::Continue {
                        lease_secs: self.settings.stop_lease_secs,
                    });
                }
            }
        }
    }
}

/// Replace secrets in every text field of an audit record (the rule names
/// are appended to the reason, so the record says what was removed).
fn scrub_entry(scanner: &edgeward_core::scan::Scanner, entry: &mut AuditEntry) {
    let mut found: Vec<edgeward_core::scan::Finding> = Vec::new();
    let mut scrub = |text: &mut String| {
        let scanned = scanner.apply(text.as_bytes());
        let acting: Vec<_> = scanned
            .findings
            .iter()
            .filter(|f| f.action != edgeward_core::scan::Action::AuditOnly)
            .cloned()
            .collect();
        if !acting.is_empty() {
            found.extend(acting);
            *text = String::from_utf8_lossy(&scanned.bytes).into_owned();
        }
    };
    let fields: [&mut Option<String>; 11] = [
        &mut entry.agent,
        &mut entry.instance,
        &mut entry.device,
        &mut entry.user,
        &mut entry.grant,
        &mut entry.method,
        &mut entry.origin,
        &mut entry.path,
        &mut entry.reason,
        &mut entry.jti,
        &mut entry.admin,
    ];
    for text in fields.into_iter().flatten() {
        scrub(text);
    }
    // The policy event is stored beside the record and carries the guest's
    // path too. (A rule naming a secret-looking path segment no longer
    // matches the scrubbed event on replay.)
    if let Some(e) = entry.policy_event.as_mut() {
        scrub(&mut e.path);
        if let Some(user) = e.user.as_mut() {
            scrub(user);
        }
    }
    if !found.is_empty() {
        let note = format!(
            " [secrets removed: {}]",
            edgeward_core::crossing::rules_of(&found)
        );
        entry.reason = Some(entry.reason.take().unwrap_or_default() + &note);
    }
}

/// A store failure during an exchange: the server's, never the caller's.
fn store_failure(e: StoreError) -> ExchangeError {
    ExchangeError::after("server_error", format!("registry unavailable: {e}"))
}

fn to_stored(kind: &RevocationKind) -> store::RevocationKind {
    match kind {
        RevocationKind::Token { jti } => store::RevocationKind::Token { jti: jti.clone() },
        RevocationKind::Instance { id } => store::RevocationKind::Instance { id: id.clone() },
        RevocationKind::Agent {
            name,
            before_generation,
        } => store::RevocationKind::Agent {
            name: name.clone(),
            before_generation: *before_generation,
        },
        RevocationKind::Device { id } => store::RevocationKind::Device { id: id.clone() },
        RevocationKind::All { .. } => store::RevocationKind::All,
    }
}

fn from_stored(r: &store::Revocation) -> RevocationKind {
    match &r.kind {
        store::RevocationKind::Token { jti } => RevocationKind::Token { jti: jti.clone() },
        store::RevocationKind::Instance { id } => RevocationKind::Instance { id: id.clone() },
        store::RevocationKind::Agent {
            name,
            before_generation,
        } => RevocationKind::Agent {
            name: name.clone(),
            before_generation: *before_generation,
        },
        store::RevocationKind::Device { id } => RevocationKind::Device { id: id.clone() },
        store::RevocationKind::All => RevocationKind::All { at: r.at },
    }
}

/// The token service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The signing key is unusable.
    #[error("token signing key: {0}")]
    Key(#[from] TokenError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The randomness source failed.
    #[error("the randomness source is unavailable")]
    Entropy,
}

fn poisoned() -> ExchangeError {
    ExchangeError::after("server_error", "internal state lock poisoned")
}

/// A stop order sent for an agent's instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LastStop {
    /// When it was sent, unix seconds.
    pub at: u64,
    /// Milliseconds from the revocation to the order leaving the backend.
    pub after_revoke_ms: Option<u64>,
}

/// One token signing key: the issuer (tokens, JWKS) and a raw signer over
/// the same seed (audit checkpoints).
struct SigningKey {
    issuer: TokenIssuer,
    signer: Ed25519Signer,
    retired_at: Option<u64>,
}

impl SigningKey {
    fn new(
        seed: &[u8; 32],
        settings: &BackendSettings,
        retired_at: Option<u64>,
    ) -> Result<SigningKey, TokenError> {
        Ok(SigningKey {
            issuer: TokenIssuer::new(seed, settings.issuer.clone(), settings.audience.clone())?,
            signer: Ed25519Signer::from_seed(seed).map_err(|_| TokenError::BadSigningKey)?,
            retired_at,
        })
    }
}

/// Every signing key the backend has had; the last one signs.
struct SigningKeys {
    all: Vec<SigningKey>,
    verifier: TokenVerifier,
    /// How long after retirement a key's tokens may still be valid.
    max_lifetime: u64,
}

impl SigningKeys {
    /// Load from the store; a new store gets the data directory's key.
    fn load(
        store: &dyn Store,
        settings: &BackendSettings,
        first_seed: &[u8; 32],
        now: u64,
    ) -> Result<SigningKeys, ServiceError> {
        let mut records = store.signing_keys()?;
        if records.is_empty() {
            let first = SigningKey::new(first_seed, settings, None)?;
            store.add_signing_key(first.issuer.kid(), first_seed, now)?;
            records = store.signing_keys()?;
        }
        records.sort_by_key(|r| (r.retired_at.is_none(), r.created_at));
        let mut all = Vec::new();
        for r in records {
            let seed: [u8; 32] = r.seed.as_slice().try_into().map_err(|_| {
                ServiceError::Store(StoreError::Invalid {
                    field: "signing key",
                    reason: "not 32 bytes".into(),
                })
            })?;
            all.push(SigningKey::new(&seed, settings, r.retired_at)?);
        }
        let mut keys = SigningKeys {
            all,
            verifier: TokenVerifier::new(
                settings.issuer.clone(),
                settings.audience.clone(),
                CLOCK_TOLERANCE,
            ),
            // Tokens never live longer than a day (config bound).
            max_lifetime: 86_400,
        };
        keys.refresh_verifier(now);
        Ok(keys)
    }

    fn current(&self) -> &SigningKey {
        // `load` always leaves at least one key and `rotate` only adds.
        &self.all[self.all.len() - 1]
    }

    /// Keys whose tokens may still be valid: the current one, and retired
    /// ones for at most the longest token lifetime after retirement.
    fn live(&self, now: u64) -> impl Iterator<Item = &SigningKey> {
        let max = self.max_lifetime;
        self.all
            .iter()
            .filter(move |k| k.retired_at.is_none_or(|r| r.saturating_add(max) > now))
    }

    fn refresh_verifier(&mut self, now: u64) {
        let max = self.max_lifetime;
        for k in &self.all {
            if k.retired_at.is_some_and(|r| r.saturating_add(max) <= now) {
                self.verifier.remove_key(k.issuer.kid());
            }
        }
        let live: Vec<(String, edgeward_core::keys::Ed25519PublicKey)> = self
            .live(now)
            .map(|k| (k.issuer.kid().to_owned(), k.issuer.public_key()))
            .collect();
        for (kid, key) in live {
            self.verifier.add_key(kid, key);
        }
    }

    fn rotate(&mut self, key: SigningKey, now: u64) {
        if let Some(last) = self.all.last_mut() {
            last.retired_at = Some(now);
        }
        self.all.push(key);
        self.refresh_verifier(now);
    }

    fn jwks(&self, now: u64) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self.live(now).map(|k| k.issuer.jwk()).collect();
        serde_json::json!({ "keys": keys })
    }
}

pub use edgeward_core::crossing::instance_id;

/// One async write in flight; counted down when dropped.
struct InFlight<'a> {
    count: &'a std::sync::atomic::AtomicUsize,
    /// Another write was in flight when this one started.
    crowded: bool,
}

impl<'a> InFlight<'a> {
    fn enter(count: &'a std::sync::atomic::AtomicUsize) -> InFlight<'a> {
        let before = count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        InFlight {
            count,
            crowded: before > 0,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}
