//! An instance's identity towards the backend: its own key pair, the
//! device-signed attestation, and the short-lived access token it yields.
//!
//! The token lives in memory only and is renewed before it expires, on the
//! egress path itself (the next call that needs it), so a long task keeps
//! working across expiry and an idle instance holds no fresh token.

use edgeward_core::attest::{AttestationClaims, sign_attestation};
use edgeward_core::clock::Clock;
use edgeward_core::digest::ComponentDigest;
use edgeward_core::egress::{
    AgentProfile, BearerToken, ExchangeFailure, TokenExchange, TokenGrant, TokenRequest,
};
use edgeward_core::grant::GrantName;
use edgeward_core::keys::Signer;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The device this runtime runs on: its enrolled id and its key.
#[derive(Clone)]
pub struct DeviceIdentity {
    /// Enrolled device id.
    pub id: String,
    /// The device key (a file today; TPM/PKCS#11 later, behind the same trait).
    pub signer: Arc<dyn Signer>,
}

impl std::fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceIdentity({})", self.id)
    }
}

struct Current {
    token: BearerToken,
    issued_at: u64,
    expires_at: u64,
}

/// Attests and keeps one instance's token fresh.
pub(crate) struct InstanceToken {
    device: DeviceIdentity,
    instance_key: Box<dyn Signer>,
    agent: String,
    digest: ComponentDigest,
    grants: Vec<GrantName>,
    lifetime: u64,
    exchange: Arc<dyn TokenExchange>,
    clock: Arc<dyn Clock>,
    current: tokio::sync::Mutex<Option<Current>>,
    /// Mirror of the current expiry for the guest's `identity` interface,
    /// readable without the async lock.
    expires_at: AtomicU64,
    instance_id: std::sync::OnceLock<String>,
    profile: std::sync::OnceLock<AgentProfile>,
    /// The user's assertion, sent again on each renewal (a token never
    /// outlives it).
    user_assertion: Option<BearerToken>,
    /// The user the backend says this instance acts for.
    on_behalf_of: std::sync::OnceLock<Option<String>>,
    /// DPoP `jti`s: a random per-instance prefix and a counter, unique
    /// without needing randomness on every call.
    jti_prefix: [u8; 8],
    jti_counter: AtomicU64,
}

impl InstanceToken {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        device: DeviceIdentity,
        instance_key: Box<dyn Signer>,
        agent: String,
        digest: ComponentDigest,
        grants: Vec<GrantName>,
        lifetime: u64,
        exchange: Arc<dyn TokenExchange>,
        clock: Arc<dyn Clock>,
        jti_prefix: [u8; 8],
        user_assertion: Option<BearerToken>,
    ) -> InstanceToken {
        InstanceToken {
            device,
            instance_key,
            agent,
            digest,
            grants,
            lifetime,
            exchange,
            clock,
            current: tokio::sync::Mutex::new(None),
            expires_at: AtomicU64::new(0),
            instance_id: std::sync::OnceLock::new(),
            profile: std::sync::OnceLock::new(),
            user_assertion,
            on_behalf_of: std::sync::OnceLock::new(),
            jti_prefix,
            jti_counter: AtomicU64::new(0),
        }
    }

    /// A DPoP proof for one request with the current token, signed by the
    /// instance key (which never leaves this process).
    pub(crate) fn proof(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        token: &BearerToken,
    ) -> Result<String, ExchangeFailure> {
        let mut jti = [0u8; 16];
        jti[..8].copy_from_slice(&self.jti_prefix);
        jti[8..].copy_from_slice(
            &self
                .jti_counter
                .fetch_add(1, Ordering::Relaxed)
                .to_be_bytes(),
        );
        edgeward_core::dpop::create_proof(
            self.instance_key.as_ref(),
            method,
            uri,
            token.expose(),
            self.clock.now(),
            &jti,
        )
        .map_err(|e| ExchangeFailure::Local(format!("cannot sign a DPoP proof: {e}")))
    }

    /// The backend-assigned instance id, once the first exchange succeeded.
    pub(crate) fn instance_id(&self) -> Option<&str> {
        self.instance_id.get().map(String::as_str)
    }

    /// The current token, if there is one and nobody is renewing it right
    /// now (for scanning guest output; never renews).
    pub(crate) fn peek(&self) -> Option<BearerToken> {
        self.current
            .try_lock()
            .ok()?
            .as_ref()
            .map(|c| c.token.clone())
    }

    /// The user this instance acts for (from the first exchange).
    pub(crate) fn on_behalf_of(&self) -> Option<&str> {
        self.on_behalf_of.get().and_then(|u| u.as_deref())
    }

    /// The agent profile from the first exchange.
    pub(crate) fn profile(&self) -> Option<&AgentProfile> {
        self.profile.get()
    }

    /// When the current token expires (0 before the first exchange).
    pub(crate) fn expires_at(&self) -> u64 {
        self.expires_at.load(Ordering::Relaxed)
    }

    /// A token valid for a while yet: the current one, or a renewed one.
    pub(crate) async fn token(&self) -> Result<BearerToken, ExchangeFailure> {
        let mut current = self.current.lock().await;
        let now = self.clock.now();
        if let Some(c) = current.as_ref() {
            // Renew once three quarters of the lifetime are gone, so a call
            // never leaves with a token about to expire in flight.
            let margin = (c.expires_at.saturating_sub(c.issued_at) / 4).max(1);
            if now.saturating_add(margin) < c.expires_at {
                return Ok(c.token.clone());
            }
        }
        let fresh = match self.attest().await {
            Ok(fresh) => fresh,
            // A failed renewal does not throw away a token that is still
            // valid; a refusal (revoked) does.
            Err(ExchangeFailure::Unreachable(e)) => match current.as_ref() {
                Some(c) if now < c.expires_at => {
                    tracing::warn!("token renewal failed, using the current token: {e}");
                    return Ok(c.token.clone());
                }
                _ => return Err(ExchangeFailure::Unreachable(e)),
            },
            Err(e) => return Err(e),
        };
        let token = fresh.token.clone();
        self.expires_at.store(fresh.expires_at, Ordering::Relaxed);
        *current = Some(fresh);
        Ok(token)
    }

    async fn attest(&self) -> Result<Current, ExchangeFailure> {
        let nonce = self.exchange.challenge().await?;
        let now = self.clock.now();
        let claims = AttestationClaims {
            nonce,
            device: self.device.id.clone(),
            agent: self.agent.clone(),
            digest: self.digest,
            instance_key: self.instance_key.public_key(),
            grants: self.grants.clone(),
            lifetime: self.lifetime,
            iat: now,
        };
        let jws = sign_attestation(&claims, &self.device.id, self.device.signer.as_ref())
            .map_err(|e| ExchangeFailure::Local(e.to_string()))?;
        let attestation = BearerToken::new(jws);
        let grant: TokenGrant = self
            .exchange
            .exchange(TokenRequest {
                actor_token: attestation,
                user_assertion: self.user_assertion.clone(),
            })
            .await?;
        // The backend derives the id from (device, agent, instance key): a
        // renewal that comes back with another id is not this instance.
        let id = self.instance_id.get_or_init(|| grant.instance_id.clone());
        // The profile of the first token holds for the instance's life; a new
        // definition applies to new instances.
        self.profile.get_or_init(|| grant.profile.clone());
        // Likewise the user: an instance acts for one user for its life.
        let user = self.on_behalf_of.get_or_init(|| grant.on_behalf_of.clone());
        if *user != grant.on_behalf_of {
            return Err(ExchangeFailure::Unreachable(
                "the backend named a different user on renewal".into(),
            ));
        }
        if *id != grant.instance_id {
            return Err(ExchangeFailure::Unreachable(
                "the backend assigned a different instance id on renewal".into(),
            ));
        }
        Ok(Current {
            token: grant.access_token,
            issued_at: now,
            expires_at: now.saturating_add(grant.expires_in),
        })
    }
}
