//! An instance's identity towards the backend: its own key pair, the
//! device-signed attestation, and the short-lived access token it yields.
//!
//! The token lives in memory only and is renewed before it expires, on the
//! egress path itself (the next call that needs it), so a long task keeps
//! working across expiry and an idle instance holds no fresh token.

use edgeward_core::attest::{AttestationClaims, sign_attestation};
use edgeward_core::caveat::{Chain, ChainKey, MAX_DELEGATION_DEPTH, Rights};
use edgeward_core::clock::Clock;
use edgeward_core::digest::ComponentDigest;
use edgeward_core::egress::{
    AgentProfile, BearerToken, ExchangeFailure, Subject, TokenExchange, TokenGrant, TokenRequest,
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
    /// Lets this instance narrow `token` for a child (see `delegation`).
    chain_key: Option<ChainKey>,
}

/// A child's credential: its parent's token narrowed by caveats, the last
/// of which names the child's own key. It is never renewed: a child lives
/// for one task, and its rights end when the chain's do.
struct Delegated {
    chain: Chain,
    /// The wire form, presented on every call.
    presented: BearerToken,
    rights: Rights,
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
    /// Whom the instance's tokens are for: itself, a user (their
    /// assertion) or a delegating parent (its chain). Sent again on each
    /// renewal, so a token never outlives it.
    subject: Subject,
    /// The user the backend says this instance acts for.
    on_behalf_of: std::sync::OnceLock<Option<String>>,
    /// DPoP `jti`s: a random per-instance prefix and a counter, unique
    /// without needing randomness on every call.
    jti_prefix: [u8; 8],
    jti_counter: AtomicU64,
    /// Set for a child instance (see [`InstanceToken::delegated`]).
    delegated: Option<Delegated>,
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
        subject: Subject,
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
            subject,
            on_behalf_of: std::sync::OnceLock::new(),
            jti_prefix,
            jti_counter: AtomicU64::new(0),
            delegated: None,
        }
    }

    /// A child's token: `chain` (its parent's token with caveats ending in
    /// the child key's `holder`), with the `rights` it leaves. The child
    /// keeps its parent's device and token service (for nothing but naming
    /// them); it never exchanges.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn delegated(
        parent: &InstanceToken,
        child_key: Box<dyn Signer>,
        agent: String,
        digest: ComponentDigest,
        instance_id: String,
        profile: AgentProfile,
        chain: Chain,
        rights: Rights,
        jti_prefix: [u8; 8],
    ) -> InstanceToken {
        InstanceToken {
            device: parent.device.clone(),
            instance_key: child_key,
            agent,
            digest,
            grants: rights.grants.clone(),
            lifetime: 0,
            exchange: Arc::clone(&parent.exchange),
            clock: Arc::clone(&parent.clock),
            current: tokio::sync::Mutex::new(None),
            expires_at: AtomicU64::new(rights.expires_at),
            instance_id: std::sync::OnceLock::from(instance_id),
            profile: std::sync::OnceLock::from(profile),
            subject: Subject::Instance,
            on_behalf_of: std::sync::OnceLock::from(parent.on_behalf_of().map(str::to_owned)),
            jti_prefix,
            jti_counter: AtomicU64::new(0),
            delegated: Some(Delegated {
                presented: BearerToken::new(chain.encode()),
                chain,
                rights,
            }),
        }
    }

    /// The current time, from the instance's clock.
    pub(crate) fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Thumbprint of this instance's key.
    pub(crate) fn jkt(&self) -> String {
        self.instance_key.public_key().jwk_thumbprint()
    }

    /// What a child of this instance starts from: this instance's token as
    /// a chain it may append to, and the rights that chain holds now.
    /// `min_left`: seconds the token must stay valid (the child's time
    /// limit), renewing it first if needed.
    pub(crate) async fn delegation_base(
        &self,
        min_left: u64,
    ) -> Result<(Chain, Rights), ExchangeFailure> {
        if let Some(d) = &self.delegated {
            if self.clock.now() >= d.rights.expires_at {
                return Err(delegation_expired());
            }
            return Ok((d.chain.clone(), d.rights.clone()));
        }
        let (token, key, expires_at) = self.fresh(min_left).await?;
        let key = key.ok_or_else(|| {
            ExchangeFailure::Local("the backend gave this instance no chain key".into())
        })?;
        let scope: Vec<GrantName> = self
            .profile()
            .map(|p| p.grants.iter().map(|g| g.name.clone()).collect())
            .unwrap_or_default();
        // A standalone child's token carries what it inherited (`cav`): the
        // local pre-check starts from there, as the backend does.
        let inherited = edgeward_core::token::unverified_inherited_caveats(token.expose())
            .map_err(|e| {
                ExchangeFailure::Local(format!("cannot read this token's caveats: {e}"))
            })?;
        let rights = Rights::of_token(&scope, expires_at, &self.jkt(), MAX_DELEGATION_DEPTH)
            .attenuate(&inherited)
            .map_err(|e| ExchangeFailure::Local(format!("this token's caveats: {e}")))?;
        Ok((Chain::new(token.expose(), key), rights))
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
        if let Some(d) = &self.delegated {
            return Some(d.presented.clone());
        }
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

    /// A token valid for a while yet: the current one, or a renewed one
    /// (a child's chain, until it expires).
    pub(crate) async fn token(&self) -> Result<BearerToken, ExchangeFailure> {
        if let Some(d) = &self.delegated {
            if self.clock.now() >= d.rights.expires_at {
                return Err(delegation_expired());
            }
            return Ok(d.presented.clone());
        }
        self.fresh(0).await.map(|(token, _, _)| token)
    }

    /// The current token (renewed if needed) with its chain key and expiry,
    /// read together so a renewal cannot pair one token with another's key.
    /// `min_left`: renew unless the token stays valid at least this long.
    async fn fresh(
        &self,
        min_left: u64,
    ) -> Result<(BearerToken, Option<ChainKey>, u64), ExchangeFailure> {
        let mut current = self.current.lock().await;
        let now = self.clock.now();
        let of = |c: &Current| (c.token.clone(), c.chain_key.clone(), c.expires_at);
        if let Some(c) = current.as_ref() {
            // Renew once three quarters of the lifetime are gone, so a call
            // never leaves with a token about to expire in flight. A
            // `min_left` longer than the backend grants at all is capped at
            // three quarters of it: asking for more would re-attest on every
            // call (a delegation's deadline beyond the agent's max lifetime)
            // and never get it.
            let lifetime = c.expires_at.saturating_sub(c.issued_at);
            let margin = (lifetime / 4)
                .max(1)
                .max(min_left.min(lifetime - lifetime / 4));
            if now.saturating_add(margin) < c.expires_at {
                return Ok(of(c));
            }
        }
        let fresh = match self.attest().await {
            Ok(fresh) => fresh,
            // A failed renewal does not throw away a token that is still
            // valid; a refusal (revoked) does.
            Err(ExchangeFailure::Unreachable(e)) => match current.as_ref() {
                Some(c) if now < c.expires_at => {
                    tracing::warn!("token renewal failed, using the current token: {e}");
                    return Ok(of(c));
                }
                _ => return Err(ExchangeFailure::Unreachable(e)),
            },
            Err(e) => return Err(e),
        };
        let out = of(&fresh);
        self.expires_at.store(fresh.expires_at, Ordering::Relaxed);
        *current = Some(fresh);
        Ok(out)
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
                subject: self.subject.clone(),
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
            chain_key: grant.chain_key,
        })
    }
}

fn delegation_expired() -> ExchangeFailure {
    ExchangeFailure::Refused {
        error: "invalid_grant".into(),
        description: "the delegation expired".into(),
    }
}
