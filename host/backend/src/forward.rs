//! The egress proxy: check, inject, forward, decode, redact.

use crate::exchange::TokenService;
use crate::resolve::PublicResolver;
use crate::secrets::{SecretError, resolve_secret};
use crate::store::AuditEntry;
use bytes::Bytes;
use edgeward_core::codec;
use edgeward_core::config::OutboundSecrets;
use edgeward_core::scan::{Scanner, ScannerConfig};
use hyper_util::client::legacy::connect::dns::GaiResolver;

use edgeward_core::caveat::Rights;
use edgeward_core::egress::{
    BearerToken, BoxFuture, Egress, EgressCall, EgressFuture, ExchangeFailure, StopChannel,
    StopPoll, TokenExchange, TokenGrant, TokenRequest,
};
use edgeward_core::grant::{CredentialKind, GrantName, GrantRules, inject_credential};
use edgeward_core::headers::sanitize_request;
use edgeward_core::problem::Refusal;
use edgeward_core::redact::Redactor;
use edgeward_core::secret::Secret;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector<PublicResolver>>, Full<Bytes>>;

/// Building the backend failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// A grant's secret could not be read.
    #[error("grant {grant}: {source}")]
    Secret {
        /// The grant.
        grant: String,
        /// Why.
        source: SecretError,
    },
    /// A secret is too short to be redacted safely.
    #[error("grant {grant}: the secret is shorter than {min} bytes, too short to redact reliably")]
    SecretTooShort {
        /// The grant.
        grant: String,
        /// The minimum.
        min: usize,
    },
    /// TLS could not be set up.
    #[error("cannot set up TLS for upstream connections: {0}")]
    Tls(String),
    /// The randomness source failed.
    #[error("the randomness source is unavailable")]
    Entropy,
    /// The token service could not be built.
    #[error("cannot start the token service: {0}")]
    Tokens(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(crate::store::StoreError),
    /// The redactor over the held secrets could not be built.
    #[error("cannot build the credential redactor: {0}")]
    Redactor(edgeward_core::redact::RedactError),
}

/// A grant with its secret loaded.
struct LiveGrant {
    rules: GrantRules,
    outbound_secrets: OutboundSecrets,
    credential: CredentialKind,
    secret: Secret,
    /// Per-user credentials by user principal (see `GrantConfig`).
    user_secrets: HashMap<String, Secret>,
    timeout: Duration,
    /// One pool per grant: the connect timeout is the grant's, and idle
    /// connections to one upstream are reused across calls and tasks.
    client: HttpsClient,
}

struct Inner {
    grants: HashMap<GrantName, LiveGrant>,
    /// Every credential this backend holds, so no response carries any of
    /// them back, whichever grant the call used.
    redactor: Redactor,
    /// The same credentials lower-cased, for header names (which HTTP
    /// lower-cases).
    name_redactor: Redactor,
    /// Known secret formats plus every credential held: upstream responses
    /// and outbound requests go through it.
    scanner: Scanner,
    tokens: Arc<TokenService>,
    /// Policy state and approvals.
    policy: crate::policy::PolicyEngine,
}

/// The backend's egress proxy. Cheap to clone.
#[derive(Clone)]
pub struct Backend {
    inner: Arc<Inner>,
}

impl Backend {
    /// Load every grant's secret (grants come from the token service's
    /// store) and build the connection pools.
    pub fn new(tokens: Arc<TokenService>) -> Result<Backend, BackendError> {
        Backend::with_secrets(tokens, resolve_secret)
    }

    /// As [`Backend::new`], with the secret reader injected (tests).
    pub fn with_secrets(
        tokens: Arc<TokenService>,
        mut read: impl FnMut(&edgeward_core::secret::SecretSource) -> Result<Secret, SecretError>,
    ) -> Result<Backend, BackendError> {
        let tls = tls_config()?;
        let mut grants = HashMap::new();
        let configured = tokens.store().grants().map_err(BackendError::Store)?;
        for g in &configured {
            let secret = read(&g.secret).map_err(|source| BackendError::Secret {
                grant: g.rules.name.to_string(),
                source,
            })?;
            let mut user_secrets = HashMap::new();
            for (user, source) in &g.user_secrets {
                let s = read(source).map_err(|source| BackendError::Secret {
                    grant: format!("{} (user {user})", g.rules.name),
                    source,
                })?;
                user_secrets.insert(user.clone(), s);
            }
            if std::iter::once(&secret)
                .chain(user_secrets.values())
                .any(|s| s.len() < edgeward_core::redact::MIN_SECRET_LEN)
            {
                return Err(BackendError::SecretTooShort {
                    grant: g.rules.name.to_string(),
                    min: edgeward_core::redact::MIN_SECRET_LEN,
                });
            }
            // Names must resolve to public addresses: SSRF into the backend's
            // network is only possible through a grant naming it literally.
            let mut http =
                HttpConnector::new_with_resolver(PublicResolver::new(GaiResolver::new()));
            http.set_connect_timeout(Some(g.connect_timeout));
            http.set_nodelay(true);
            http.enforce_http(false);
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                // http is only reachable for loopback origins: the config
                // refuses plain http anywhere else.
                .https_or_http()
                .enable_http1()
                .wrap_connector(http);
            let client = Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(32)
                .build(https);
            grants.insert(
                g.rules.name.clone(),
                LiveGrant {
                    rules: g.rules.clone(),
                    outbound_secrets: g.outbound_secrets,
                    credential: g.credential.clone(),
                    secret,
                    user_secrets,
                    timeout: g.timeout,
                    client,
                },
            );
        }
        // Every credential held, the per-user ones included.
        let all = || {
            grants
                .values()
                .flat_map(|g| std::iter::once(&g.secret).chain(g.user_secrets.values()))
        };
        let redactor = Redactor::new(all().map(Secret::expose)).map_err(BackendError::Redactor)?;
        let lowered: Vec<zeroize::Zeroizing<Vec<u8>>> = all()
            .map(|s| zeroize::Zeroizing::new(s.expose().to_ascii_lowercase()))
            .collect();
        let name_redactor =
            Redactor::new(lowered.iter().map(|v| v.as_slice())).map_err(BackendError::Redactor)?;
        let scanner = Scanner::new(ScannerConfig::default(), redactor.clone())
            .map_err(|e| BackendError::Tokens(format!("secret scanner: {e}")))?;
        // Audit records are scanned with the same rules before they are
        // written: nothing a guest or upstream sent can plant a secret there.
        tokens.set_audit_scanner(scanner.clone());
        // Fail closed: without its sequence state, policy would forget
        // triggers and limits.
        let policy = crate::policy::PolicyEngine::restore(&tokens)
            .map_err(|e| BackendError::Tokens(format!("cannot rebuild the policy state: {e}")))?;
        Ok(Backend {
            inner: Arc::new(Inner {
                grants,
                redactor,
                name_redactor,
                scanner,
                tokens,
                policy,
            }),
        })
    }

    /// The redactor over every credential held (for callers that must scan
    /// other output, e.g. the CLI's own messages).
    pub fn redactor(&self) -> &Redactor {
        &self.inner.redactor
    }

    /// Forward a call whose token the caller already checked (split mode
    /// checks it before reading the body, to cap the body by the agent's
    /// limit): the same path as [`Egress::forward`], without checking the
    /// token a second time.
    pub async fn forward_checked(
        &self,
        access: crate::exchange::Access,
        call: EgressCall,
    ) -> Result<http::Response<Bytes>, Refusal> {
        self.inner.forward_call(Ok(access), call).await
    }

    /// The token service.
    pub fn tokens(&self) -> &Arc<TokenService> {
        &self.inner.tokens
    }
}

/// Embedded mode: the runtime's exchange is a function call into the same
/// [`TokenService`] the HTTP route uses.
impl TokenExchange for Backend {
    fn challenge(&self) -> BoxFuture<Result<String, ExchangeFailure>> {
        let nonce = self.inner.tokens.challenge();
        Box::pin(async move { Ok(nonce) })
    }

    fn exchange(&self, request: TokenRequest) -> BoxFuture<Result<TokenGrant, ExchangeFailure>> {
        let form = crate::service::exchange_form(&request);
        let result = self.inner.tokens.exchange(&form);
        Box::pin(async move {
            let minted = result.map_err(|e| ExchangeFailure::Refused {
                error: e.error.to_owned(),
                description: e.public_description().to_owned(),
            })?;
            Ok(TokenGrant {
                access_token: edgeward_core::egress::BearerToken::new(minted.token),
                expires_in: minted.expires_in,
                instance_id: minted.instance_id,
                scope: minted.scope.iter().map(|g| g.to_string()).collect(),
                profile: minted.profile,
                chain_key: Some(minted.chain_key),
                on_behalf_of: minted.on_behalf_of,
            })
        })
    }
}

/// Embedded mode's stop channel: the same long poll as the HTTP route.
impl StopChannel for Backend {
    fn poll_stop(&self, token: BearerToken) -> BoxFuture<Result<StopPoll, ExchangeFailure>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            inner
                .tokens
                .poll_stop(token.expose())
                .await
                .map_err(|e| ExchangeFailure::Unreachable(e.to_string()))
        })
    }
}

/// Embedded mode's approval waits: the same call as the HTTP route.
impl edgeward_core::egress::ApprovalChannel for Backend {
    fn wait_ticket(
        &self,
        token: BearerToken,
        ticket: String,
        timeout: std::time::Duration,
    ) -> BoxFuture<Result<edgeward_core::egress::TicketState, ExchangeFailure>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            inner
                .tokens
                .wait_ticket(token.expose(), &ticket, timeout)
                .await
                .map_err(|e| ExchangeFailure::Unreachable(e.to_string()))
        })
    }
}

pub(crate) fn tls_config() -> Result<rustls::ClientConfig, BackendError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BackendError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Egress for Backend {
    fn forward(&self, call: EgressCall) -> EgressFuture {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            // Stage spans (target `edgeward::stage`) time the hot path for
            // the benchmarks; disabled, each costs one relaxed load.
            let verify = tracing::trace_span!(target: "edgeward::stage", "token.verify");
            let access = inner.tokens.check_access(call.token.expose());
            drop(verify);
            inner.forward_call(access, call).await
        })
    }
}

impl Inner {
    /// A call whose token was checked (`access`): proof, rules, policy,
    /// credential, upstream, redaction, and its audit record.
    async fn forward_call(
        &self,
        access: Result<crate::exchange::Access, crate::exchange::AccessError>,
        call: EgressCall,
    ) -> Result<http::Response<Bytes>, Refusal> {
        let inner = self;
        let grant = call.grant.clone();
        let method = call.request.method().clone();
        // Captured before injection: a query credential must never be logged.
        let path = call.request.uri().path().to_owned();
        let origin =
            edgeward_core::grant::Origin::of_uri(call.request.uri()).map(|o| o.to_string());
        let mut entry = AuditEntry {
            kind: "egress".into(),
            grant: Some(grant.to_string()),
            method: Some(method.to_string()),
            origin,
            path: Some(path.clone()),
            ..AuditEntry::default()
        };
        // A delegated call says so in the audit log: how many caveats and
        // which key held the chain.
        let mut delegated = None;
        // What policy said, for the audit record.
        let mut verdict_note: Option<(crate::policy::CallContext, crate::policy::Verdict)> = None;
        let (agent, instance, result) = match access {
            Ok(access) => {
                if !access.caveats.is_empty() || !access.token.ancestors().is_empty() {
                    // The whole chain as narrowed: effective rights, not
                    // secrets (the tag never leaves the chain).
                    let r = &access.rights;
                    // The whole chain: the token's agent, then every
                    // sub-agent it was handed to, in order.
                    let path = std::iter::once(access.token.agent())
                        .chain(r.agents.iter().map(String::as_str))
                        .collect::<Vec<_>>()
                        .join(" > ");
                    let mut text = format!(
                        "delegated: chain {path}, {} caveat(s), holder key {}, grants [{}]",
                        access.caveats.len() + access.token.inherited_caveats().len(),
                        r.holder,
                        r.grants
                            .iter()
                            .map(GrantName::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                    if let Some(m) = &r.methods {
                        text.push_str(&format!(", methods [{}]", m.join(",")));
                    }
                    for set in &r.path_prefixes {
                        text.push_str(&format!(", paths [{}]", set.join(",")));
                    }
                    if r.expires_at != u64::MAX {
                        text.push_str(&format!(", until {}", r.expires_at));
                    }
                    text.truncate(1500);
                    delegated = Some(text);
                }
                let token = &access.token;
                let agent = token.agent().to_owned();
                let instance = token.instance().to_owned();
                let verify = tracing::trace_span!(target: "edgeward::stage", "proof.verify");
                let proof = inner.tokens.check_proof(
                    &call.proof,
                    call.request.method(),
                    call.request.uri(),
                    call.token.expose(),
                    // An attenuated token's proofs come from the key its
                    // last holder caveat names (the child's).
                    &access.rights.holder,
                );
                drop(verify);
                entry.agent = Some(agent.clone());
                entry.instance =
                    crate::revocation::spiffe_segment(&instance, "/instance/").map(str::to_owned);
                entry.device = crate::revocation::spiffe_segment(token.device(), "/device/")
                    .map(str::to_owned);
                entry.jti = Some(token.jti().to_owned());
                // Who the call was for, when not the instance itself.
                entry.user = token.on_behalf_of().map(str::to_owned);
                // Whom policy keys this call by: the acting (sub-)agent,
                // the user, and the agent at the top of the delegation.
                let ctx = crate::policy::CallContext {
                    agent: access
                        .rights
                        .agents
                        .last()
                        .cloned()
                        .unwrap_or_else(|| agent.clone()),
                    instance: entry.instance.clone().unwrap_or_default(),
                    user: entry.user.clone(),
                    root: token
                        .ancestors()
                        .last()
                        .map_or_else(|| agent.clone(), |a| a.agent.clone()),
                    // The acting agent's: an approval dies with its
                    // re-registration, a sub-agent's included.
                    generation: access.acting_generation,
                };
                let result = match proof {
                    Ok(()) => match inner
                        .forward(&access.agent, &access.rights, &ctx, call)
                        .await
                    {
                        Ok((response, verdict)) => {
                            verdict_note = Some((ctx, verdict));
                            Ok(response)
                        }
                        Err(r) => Err(r),
                    },
                    Err(e) => {
                        tracing::warn!(%grant, "DPoP proof refused: {e}");
                        Err(Refusal::denied(format!("proof of possession refused: {e}"))
                            .with_status(StatusCode::UNAUTHORIZED))
                    }
                };
                (agent, instance, result)
            }
            Err(e) => {
                tracing::warn!(%grant, "access token refused: {e}");
                ("-".to_owned(), "-".to_owned(), Err(e.refusal()))
            }
        };
        // The path is the guest's text: scanned before it is logged.
        let logged_path =
            String::from_utf8_lossy(&inner.scanner.apply(path.as_bytes()).bytes).into_owned();
        match &result {
            Ok(resp) => {
                tracing::info!(%agent, %instance, %grant, %method, path = %logged_path, status = resp.status().as_u16(), "egress forwarded")
            }
            Err(r) => {
                let detail =
                    String::from_utf8_lossy(&inner.scanner.apply(r.detail.as_bytes()).bytes)
                        .into_owned();
                tracing::warn!(%agent, %instance, %grant, %method, path = %logged_path, class = %r.class, %detail, "egress refused")
            }
        }
        // Defence in depth: whatever produced a refusal's detail, it
        // leaves without any credential in it.
        let result = result.map_err(|mut r| {
            r.detail = inner.redactor.redact_str(&r.detail).0;
            r
        });
        match &result {
            Ok(resp) => {
                entry.decision = "allow".into();
                let answered = format!("upstream answered {}", resp.status().as_u16());
                // Stored with the record: policy state is rebuilt from it.
                entry.policy_event = verdict_note.as_ref().and_then(|(_, v)| v.event().cloned());
                use crate::policy::Verdict;
                entry.reason = Some(match verdict_note.take() {
                    Some((ctx, Verdict::Approved { ticket, by, at, .. })) => {
                        let user = ctx
                            .user
                            .as_deref()
                            .map(|u| format!(" on behalf of {u}"))
                            .unwrap_or_default();
                        format!(
                            "agent {} (instance {}){user} did {method} {}{}, approved by {by} at {at} (ticket {ticket}); {answered}",
                            ctx.agent,
                            ctx.instance,
                            entry.origin.as_deref().unwrap_or(""),
                            entry.path.as_deref().unwrap_or("")
                        )
                    }
                    Some((_, Verdict::Allowed { rule, .. })) => {
                        format!("{answered} (policy: allowed by {rule})")
                    }
                    _ => answered,
                });
            }
            Err(r) => {
                entry.decision = "deny".into();
                let mut reason = format!("{}: {}", r.class, r.detail);
                if let Some(rule) = &r.rule {
                    reason.push_str(&format!(" (rule {rule})"));
                }
                entry.reason = Some(reason);
            }
        }
        if let (Some(d), Some(reason)) = (&delegated, entry.reason.as_mut()) {
            reason.push_str(" (");
            reason.push_str(d);
            reason.push(')');
        }
        // No decision without its record: if the audit log cannot take
        // it, the guest gets no upstream bytes either.
        let audit = tracing::trace_span!(target: "edgeward::stage", "audit");
        let written = inner.tokens.audit_async(entry).await;
        drop(audit);
        if let Err(e) = written {
            tracing::error!("cannot write the audit log: {e}");
            return Err(Refusal::upstream("the audit log is unavailable")
                .with_status(StatusCode::SERVICE_UNAVAILABLE));
        }
        result
    }

    /// The rest of the egress path, for a caller whose token verified.
    async fn forward(
        &self,
        agent: &crate::store::AgentRecord,
        rights: &Rights,
        ctx: &crate::policy::CallContext,
        call: EgressCall,
    ) -> Result<(http::Response<Bytes>, crate::policy::Verdict), Refusal> {
        let user = ctx.user.as_deref();
        let policy = tracing::trace_span!(target: "edgeward::stage", "policy");
        let agent_name = agent.name.as_str();
        // The token's scope, narrowed by its caveats if it was delegated;
        // the registry (read once by `check_access`), not the token, says
        // what the agent holds now.
        edgeward_core::crossing::check_rights(
            rights,
            agent_name,
            &agent.grants,
            &call.grant,
            call.request.method(),
            call.request.uri().path(),
            self.tokens.clock().now(),
        )?;
        // The runtime caps bodies too; in split mode the backend is the judge.
        if call.request.body().len() > agent.limits.max_request_bytes {
            return Err(edgeward_core::crossing::request_too_large(
                agent.limits.max_request_bytes,
            ));
        }
        let grant = self
            .grants
            .get(&call.grant)
            .ok_or_else(|| Refusal::denied(format!("grant {} does not exist", call.grant)))?;
        let max_response = agent.limits.max_response_bytes;

        let (mut parts, body) = call.request.into_parts();
        grant.rules.check(&parts.uri, &parts.method)?;
        let own_header = match &grant.credential {
            CredentialKind::Header { name, .. } => Some(name),
            _ => None,
        };
        sanitize_request(&mut parts.headers, own_header)?;
        drop(policy);
        let scan = tracing::trace_span!(target: "edgeward::stage", "scan.outbound");
        let body = self.scan_outbound(grant, &mut parts, body)?;
        drop(scan);
        let inject = tracing::trace_span!(target: "edgeward::stage", "inject");
        // A user's call carries that user's credential on a per-user grant,
        // and is refused if the user has none: never the grant's own
        // credential, never another user's.
        // A per-user grant serves only calls made for one of its users: an
        // agent cannot skip the user's assertion to reach a shared secret.
        let secret = edgeward_core::crossing::select_secret(
            &grant.rules.name,
            &grant.secret,
            &grant.user_secrets,
            user,
        )?;
        // Policy decides on the call as it would leave (headers cleaned,
        // body scanned) but without its credential; every refusal that does
        // not depend on policy comes first, so a call that can never be
        // sent uses up no approval, count or trigger.
        // The call as shown to policy is kept only when a policy applies:
        // with none, nothing is copied.
        let decide = tracing::trace_span!(target: "edgeward::stage", "policy.decide");
        let held = self.policy.policies_for(&self.tokens, ctx)?;
        let shown = (!held.is_empty()).then(|| (parts.uri.clone(), parts.headers.clone()));
        drop(decide);
        inject_credential(&mut parts, &grant.credential, secret)?;
        drop(inject);
        let decide = tracing::trace_span!(target: "edgeward::stage", "policy.decide");
        let verdict = match &shown {
            None => crate::policy::Verdict::Unbound,
            Some((uri, headers)) => {
                let scrub = |text: &str| {
                    let scanned = self.scanner.apply(text.as_bytes());
                    self.redactor
                        .redact_str(&String::from_utf8_lossy(&scanned.bytes))
                        .0
                };
                self.policy.decide(
                    &self.tokens,
                    &scrub,
                    ctx,
                    &held,
                    &crate::policy::Action {
                        grant: grant.rules.name.as_str(),
                        method: &parts.method,
                        uri,
                        headers,
                        body: &body,
                    },
                )?
            }
        };
        drop(decide);
        parts.headers.insert(
            http::header::ACCEPT_ENCODING,
            HeaderValue::from_static(codec::SUPPORTED_CODINGS),
        );
        parts.version = http::Version::HTTP_11;
        let request = http::Request::from_parts(parts, Full::new(body));

        let timeout = grant.timeout;
        let upstream = tracing::trace_span!(target: "edgeward::stage", "upstream");
        let exchange = async {
            let response = grant.client.request(request).await.map_err(|e| {
                // hyper's errors are summarised, never printed: some embed the
                // URI, which may carry a query credential.
                if is_private_only(&e) {
                    Refusal::denied(
                        crate::resolve::PRIVATE_ONLY.to_owned()
                            + "; only a grant naming such an address literally may reach it",
                    )
                } else if e.is_connect() {
                    Refusal::upstream("could not connect to the upstream")
                } else {
                    Refusal::upstream("the upstream connection failed")
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max_response)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        edgeward_core::crossing::response_too_large(max_response)
                    } else {
                        Refusal::upstream("the upstream response body could not be read")
                    }
                })?
                .to_bytes();
            Ok::<_, Refusal>((parts, body))
        };
        let (parts, raw) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| {
                Refusal::upstream(format!(
                    "the upstream did not answer within {} ms",
                    timeout.as_millis()
                ))
                .with_status(StatusCode::GATEWAY_TIMEOUT)
            })??;
        drop(upstream);
        let scan = tracing::trace_span!(target: "edgeward::stage", "scan.response");

        let (response, findings) = edgeward_core::crossing::finish_response(
            parts,
            &raw,
            max_response,
            &self.scanner,
            &self.redactor,
            &self.name_redactor,
        )
        .map_err(|u| {
            if let Some(log) = &u.log {
                // Upstream bytes: the log gets them, the guest does not.
                tracing::warn!(grant = %grant.rules.name, "{log}");
            }
            u.refusal
        })?;
        if !findings.is_empty() {
            // Rule names only: the log never gets the matched bytes.
            tracing::warn!(
                grant = %grant.rules.name,
                findings = %findings,
                "credential material redacted from an upstream response"
            );
        }
        drop(scan);
        Ok((response, verdict))
    }

    /// Scan what the guest sends (see [`edgeward_core::crossing::scan_outbound`]).
    fn scan_outbound(
        &self,
        grant: &LiveGrant,
        parts: &mut http::request::Parts,
        body: Bytes,
    ) -> Result<Bytes, Refusal> {
        use edgeward_core::crossing::{OutboundScan, scan_outbound};
        let name = &grant.rules.name;
        match scan_outbound(&self.scanner, grant.outbound_secrets, parts, body) {
            Ok((body, scan)) => {
                match scan {
                    OutboundScan::Clean { audit_only } if audit_only.is_empty() => {}
                    OutboundScan::Clean { audit_only } => {
                        tracing::info!(grant = %name, findings = %audit_only, "outbound request scanned (audit only)")
                    }
                    OutboundScan::Audited { rules } => {
                        tracing::warn!(grant = %name, findings = %rules, "outbound request carries secret-like data (audit only)")
                    }
                    OutboundScan::Redacted { rules } => {
                        tracing::warn!(grant = %name, findings = %rules, "secret-like data redacted from an outbound request")
                    }
                }
                Ok(body)
            }
            Err((refusal, rules)) => {
                tracing::warn!(grant = %name, findings = %rules, "outbound request blocked by secret scanning");
                Err(refusal)
            }
        }
    }
}

/// Whether a client error comes from [`PublicResolver`] refusing a name.
fn is_private_only(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::PermissionDenied
            && io.to_string().contains(crate::resolve::PRIVATE_ONLY)
        {
            return true;
        }
        source = err.source();
    }
    false
}
