//! Policy on the egress path: the decision (pure, `edgeward_core::policy`)
//! with its sequence state, and approval tickets bound to the exact action.
//!
//! 1. The agent's policy and the global one are read from the registry
//!    (cached until the next registry write), so a change applies to the
//!    next call. With neither, the agent's grants are its whole policy.
//! 2. Sequence state is kept per user × delegation root (limits per acting
//!    agent inside it), in memory: a new instance (or a delegated child
//!    under the same root) does not start from a clean slate. Each call a
//!    policy let through is stored with its audit record and replayed at
//!    start-up ([`PolicyEngine::restore`]), so a restart does not either.
//! 3. An `approve` decision looks for a ticket for this exact action — its
//!    fingerprint covers agent, user, grant, method, URL, the forwarded
//!    headers and the body hash. An approved, unexpired, unused one is used
//!    up (atomically, once) and the call goes through; a pending one is named
//!    again; otherwise a new ticket opens (rate-limited per agent) and the
//!    guest gets `needs-approval` with its id.

use crate::exchange::TokenService;
use crate::store::{ApprovalRecord, ApprovalStatus, PolicyEvent, StoreError};
use edgeward_core::policy::{self, Call, KeyState, Outcome, Policy};
use edgeward_core::problem::{ProblemClass, Refusal};
use http::StatusCode;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most body bytes shown on a ticket.
const PREVIEW_BYTES: usize = 2048;
/// Most sequence states kept (users × delegation roots); past it, states
/// idle for [`IDLE_SECS`] are dropped, and if none are, new keys are
/// refused (a limit is never reset to make room).
const MAX_KEYS: usize = 100_000;
/// Longer than any rule's window (31 days) or trigger.
const IDLE_SECS: u64 = 32 * 86_400;

/// Who a call is for, as policy keys it.
#[derive(Debug, Clone)]
pub(crate) struct CallContext {
    /// The acting agent (the sub-agent, for a delegated call).
    pub(crate) agent: String,
    /// The instance that made the call.
    pub(crate) instance: String,
    /// The user it is made for.
    pub(crate) user: Option<String>,
    /// The delegation root: the agent at the top of the chain.
    pub(crate) root: String,
    /// The acting agent's generation: an approval never outlives a
    /// re-registration.
    pub(crate) generation: u64,
}

/// The exact action, as it would be forwarded (before the credential is
/// attached).
pub(crate) struct Action<'a> {
    pub(crate) grant: &'a str,
    pub(crate) method: &'a http::Method,
    pub(crate) uri: &'a http::Uri,
    pub(crate) headers: &'a http::HeaderMap,
    pub(crate) body: &'a [u8],
}

/// What policy let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No policy applies: the grants alone decided.
    Unbound,
    /// No rule of the acting agent's applies, but its delegation tree's
    /// root has sequence rules: the call counts towards them.
    Sequenced { event: PolicyEvent },
    /// A rule allowed it.
    Allowed { rule: String, event: PolicyEvent },
    /// A person approved this exact call.
    Approved {
        ticket: String,
        by: String,
        at: u64,
        event: PolicyEvent,
    },
}

impl Verdict {
    /// What policy state must remember of the call, if a policy applied.
    pub(crate) fn event(&self) -> Option<&PolicyEvent> {
        match self {
            Verdict::Unbound => None,
            Verdict::Allowed { event, .. }
            | Verdict::Approved { event, .. }
            | Verdict::Sequenced { event } => Some(event),
        }
    }
}

/// User × delegation root: one delegation tree's state (per-agent limits
/// are kept inside it, see `KeyState`).
type StateKey = (Option<String>, String);

/// The store failed: no decision without it.
fn unavailable(e: StoreError) -> Refusal {
    tracing::error!("policy: store failure: {e}");
    Refusal::upstream("the policy cannot be read right now")
        .with_status(StatusCode::SERVICE_UNAVAILABLE)
}

/// Sequence state and the approval logic.
#[derive(Default)]
pub(crate) struct PolicyEngine {
    states: Mutex<HashMap<StateKey, KeyState>>,
}

/// The policies a call is held to: the acting agent's own and the global
/// one decide it; the delegation root's own (when another agent acts in
/// its tree) only sees it, for its sequence triggers, so a parent cannot
/// launder a sequence through a child.
pub(crate) struct Held {
    own: Vec<Arc<Policy>>,
    root: Option<Arc<Policy>>,
}

impl Held {
    /// No policy sees the call: the grants alone decide.
    pub(crate) fn is_empty(&self) -> bool {
        self.own.is_empty() && self.root.is_none()
    }
}

impl PolicyEngine {
    /// The policies holding a call by `ctx.agent` in `ctx.root`'s tree.
    pub(crate) fn policies_for(
        &self,
        tokens: &TokenService,
        ctx: &CallContext,
    ) -> Result<Held, Refusal> {
        let store = tokens.store();
        let own = store.policies_for(&ctx.agent).map_err(unavailable)?;
        let root = if ctx.root != ctx.agent {
            store.policy(&ctx.root).map_err(unavailable)?
        } else {
            None
        };
        Ok(Held { own, root })
    }

    /// Decide one call under `held` (from [`Self::policies_for`]). `scrub`
    /// makes guest-sent text safe to store on a ticket (known secret
    /// formats and every credential held, redacted).
    pub(crate) fn decide(
        &self,
        tokens: &TokenService,
        scrub: &dyn Fn(&str) -> String,
        ctx: &CallContext,
        held: &Held,
        action: &Action<'_>,
    ) -> Result<Verdict, Refusal> {
        let store = tokens.store();
        let policies: Vec<&Policy> = held.own.iter().map(Arc::as_ref).collect();
        let root: Vec<&Policy> = held.root.iter().map(Arc::as_ref).collect();
        if policies.is_empty() && root.is_empty() {
            return Ok(Verdict::Unbound);
        }
        let now = tokens.clock().now();
        // What a byte budget counts: everything the call sends.
        let header_bytes: usize = action
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum();
        let sent = action.body.len() + action.uri.to_string().len() + header_bytes;
        let call = Call {
            agent: &ctx.agent,
            grant: action.grant,
            method: action.method.as_str(),
            path: action.uri.path(),
            user: ctx.user.as_deref(),
            bytes: sent as u64,
        };
        let key: StateKey = (ctx.user.clone(), ctx.root.clone());
        if policies.is_empty() {
            // No rule of its own: the call goes through, and the root's
            // sequences see it.
            let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
            policy::record_triggers(&root, states.entry(key).or_default(), &call, now);
            return Ok(Verdict::Sequenced {
                event: event_of(ctx, &call),
            });
        }
        let decision = {
            let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
            if states.len() >= MAX_KEYS && !states.contains_key(&key) {
                // Forget only states idle longer than any window can be;
                // if that frees nothing, refuse rather than reset a limit.
                states.retain(|_, s| now.saturating_sub(s.last_seen()) < IDLE_SECS);
                if states.len() >= MAX_KEYS {
                    tracing::error!("policy: {MAX_KEYS} active sequence states; refusing new ones");
                    return Err(Refusal::limit(
                        "policy: the backend tracks too many users and delegation trees right now",
                    )
                    .with_status(StatusCode::SERVICE_UNAVAILABLE));
                }
            }
            let state = states.entry(key.clone()).or_default();
            let decision = policy::evaluate(&policies, state, &call, now);
            if decision.outcome == Outcome::Allow {
                policy::record_triggers(&root, state, &call, now);
            }
            decision
        };
        match decision.outcome {
            Outcome::Allow => Ok(Verdict::Allowed {
                rule: decision.rule,
                event: event_of(ctx, &call),
            }),
            Outcome::Deny => {
                Err(Refusal::denied(format!("policy: {}", decision.detail))
                    .with_rule(decision.rule))
            }
            Outcome::LimitExceeded => Err(Refusal::limit(format!("policy: {}", decision.detail))
                .with_rule(decision.rule)
                .with_status(StatusCode::TOO_MANY_REQUESTS)),
            Outcome::Approve => {
                let fp = fingerprint(ctx, action);
                match store.live_approval(&fp, now).map_err(unavailable)? {
                    Some(t) if t.status == ApprovalStatus::Approved => {
                        // Used once, atomically: a second call with the same
                        // approval finds it used.
                        if store.use_approval(&t.id, now).map_err(unavailable)? {
                            let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
                            let state = states.entry(key).or_default();
                            policy::record(&policies, state, &call, now);
                            policy::record_triggers(&root, state, &call, now);
                            let verdict = Verdict::Approved {
                                ticket: t.id.clone(),
                                by: t.decided_by.clone().unwrap_or_default(),
                                at: t.decided_at.unwrap_or(now),
                                event: event_of(ctx, &call),
                            };
                            return Ok(verdict);
                        }
                        Err(needs_approval(
                            &t.id,
                            &decision.rule,
                            "its approval was just used",
                        ))
                    }
                    Some(t) if t.status == ApprovalStatus::Denied => Err(Refusal::denied(format!(
                        "policy: a person denied this exact call (ticket {})",
                        t.id
                    ))
                    .with_rule(decision.rule)
                    .with_ticket(t.id)),
                    Some(t) => Err(needs_approval(
                        &t.id,
                        &decision.rule,
                        "it waits for a person",
                    )),
                    None => {
                        let t = self.open_ticket(tokens, scrub, ctx, action, &decision.rule, fp)?;
                        Err(needs_approval(&t.id, &decision.rule, "a ticket was opened"))
                    }
                }
            }
        }
    }

    fn open_ticket(
        &self,
        tokens: &TokenService,
        scrub: &dyn Fn(&str) -> String,
        ctx: &CallContext,
        action: &Action<'_>,
        rule: &str,
        fingerprint: String,
    ) -> Result<ApprovalRecord, Refusal> {
        let settings = &tokens.settings().approvals;
        let store = tokens.store();
        let now = tokens.clock().now();
        let unavailable = |e: StoreError| {
            tracing::error!("approvals: store failure: {e}");
            Refusal::upstream("approvals cannot be opened right now")
                .with_status(StatusCode::SERVICE_UNAVAILABLE)
        };
        let opened = store
            .approvals_opened_since(&ctx.agent, now.saturating_sub(3600))
            .map_err(unavailable)?;
        if opened >= settings.per_agent_per_hour {
            return Err(Refusal::limit(format!(
                "policy: this call needs approval, but agent {} opened {opened} tickets in the last hour (the most allowed)",
                ctx.agent
            ))
            .with_rule(rule.to_owned())
            .with_status(StatusCode::TOO_MANY_REQUESTS));
        }
        // Scrubbed whole, then cut: a secret across the cut is still found.
        let mut preview = scrub(&String::from_utf8_lossy(action.body));
        if preview.len() > PREVIEW_BYTES {
            let mut cut = PREVIEW_BYTES;
            while !preview.is_char_boundary(cut) {
                cut -= 1;
            }
            preview.truncate(cut);
            preview.push_str(&format!(" [… {} bytes in all]", action.body.len()));
        }
        let ticket = ApprovalRecord {
            id: tokens.random_id(),
            agent: ctx.agent.clone(),
            instance: ctx.instance.clone(),
            user: ctx.user.clone(),
            root: ctx.root.clone(),
            grant: action.grant.to_owned(),
            method: action.method.to_string(),
            url: scrub(&action.uri.to_string()),
            headers: action
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), scrub(&String::from_utf8_lossy(v.as_bytes()))))
                .collect(),
            body_sha256: hex::encode(Sha256::digest(action.body)),
            body_preview: preview,
            rule: rule.to_owned(),
            fingerprint,
            status: ApprovalStatus::Pending,
            created_at: now,
            expires_at: now.saturating_add(settings.pending_secs),
            decided_by: None,
            decided_at: None,
            used_at: None,
        };
        // Two identical first calls at once share one ticket.
        let (ticket, opened) = store.open_approval(&ticket, now).map_err(unavailable)?;
        if opened {
            tracing::info!(ticket = %ticket.id, agent = %ticket.agent, rule, "approval ticket opened");
            if let Some(url) = &settings.webhook {
                webhook(url.clone(), &ticket);
            }
        }
        Ok(ticket)
    }
}

fn event_of(ctx: &CallContext, call: &Call<'_>) -> PolicyEvent {
    PolicyEvent {
        user: ctx.user.clone(),
        root: ctx.root.clone(),
        agent: ctx.agent.clone(),
        grant: call.grant.to_owned(),
        method: call.method.to_owned(),
        path: call.path.to_owned(),
        bytes: call.bytes,
    }
}

impl PolicyEngine {
    /// Rebuild the sequence state from the calls policy let through within
    /// the longest window (the store keeps them beside their audit
    /// records), under the policies in force now; older ones are pruned. A
    /// restart of the backend then resets no trigger, count, budget or rate.
    pub(crate) fn restore(tokens: &TokenService) -> Result<PolicyEngine, StoreError> {
        let store = tokens.store();
        let now = tokens.clock().now();
        let since = now.saturating_sub(IDLE_SECS);
        store.prune_policy_events(since)?;
        let engine = PolicyEngine::default();
        let mut states = engine.states.lock().unwrap_or_else(|p| p.into_inner());
        let mut replayed = 0usize;
        for (at, ev) in store.policy_events_since(since)? {
            let held = store.policies_for(&ev.agent)?;
            let root = if ev.root != ev.agent {
                store.policy(&ev.root)?
            } else {
                None
            };
            if held.is_empty() && root.is_none() {
                continue;
            }
            let policies: Vec<&Policy> = held.iter().map(Arc::as_ref).collect();
            let root: Vec<&Policy> = root.iter().map(Arc::as_ref).collect();
            let call = Call {
                agent: &ev.agent,
                grant: &ev.grant,
                method: &ev.method,
                path: &ev.path,
                user: ev.user.as_deref(),
                bytes: ev.bytes,
            };
            let state = states
                .entry((ev.user.clone(), ev.root.clone()))
                .or_default();
            policy::record(&policies, state, &call, at);
            policy::record_triggers(&root, state, &call, at);
            replayed += 1;
        }
        drop(states);
        if replayed > 0 {
            tracing::info!(replayed, "policy state rebuilt from the stored calls");
        }
        Ok(engine)
    }
}

fn needs_approval(ticket: &str, rule: &str, state: &str) -> Refusal {
    Refusal::new(
        ProblemClass::NeedsApproval,
        format!("policy: a person must approve this exact call ({state}); wait for ticket {ticket}, then send the same call again"),
    )
    .with_rule(rule.to_owned())
    .with_ticket(ticket.to_owned())
}

/// sha256 over the exact action: every part length-prefixed, headers sorted.
pub(crate) fn fingerprint(ctx: &CallContext, action: &Action<'_>) -> String {
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    part(b"edgeward approval v1");
    part(ctx.agent.as_bytes());
    part(&ctx.generation.to_be_bytes());
    part(ctx.root.as_bytes());
    part(ctx.user.as_deref().unwrap_or("").as_bytes());
    part(action.grant.as_bytes());
    part(action.method.as_str().as_bytes());
    part(action.uri.to_string().as_bytes());
    let mut headers: Vec<(&str, &[u8])> = action
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    // By name only, keeping the order of repeated headers (which the
    // upstream sees).
    headers.sort_by(|a, b| a.0.cmp(b.0));
    part(&(headers.len() as u64).to_be_bytes());
    for (n, v) in headers {
        part(n.as_bytes());
        part(v);
    }
    part(&Sha256::digest(action.body));
    hex::encode(h.finalize())
}

/// Tell the webhook a ticket opened: who, what, which rule — never the
/// body. Fire and forget; a failure is logged.
fn webhook(url: String, t: &ApprovalRecord) {
    let doc = serde_json::json!({
        "event": "approval.opened",
        "ticket": t.id,
        "agent": t.agent,
        "instance": t.instance,
        "user": t.user,
        "grant": t.grant,
        "method": t.method,
        "url": t.url,
        "rule": t.rule,
        "expires_at": t.expires_at,
    });
    tokio::spawn(async move {
        let Ok(tls) = crate::forward::tls_config() else {
            return;
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https);
        let Ok(request) = http::Request::post(&url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                doc.to_string(),
            )))
        else {
            tracing::warn!("approval webhook: bad URL");
            return;
        };
        match tokio::time::timeout(std::time::Duration::from_secs(10), client.request(request))
            .await
        {
            Ok(Ok(r)) if r.status().is_success() => {}
            Ok(Ok(r)) => tracing::warn!("approval webhook answered {}", r.status().as_u16()),
            _ => tracing::warn!("approval webhook could not be reached"),
        }
    });
}
