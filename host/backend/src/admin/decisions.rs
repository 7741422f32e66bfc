//! Admin routes for the policy envelope and approval tickets.

use super::input::{Body, Query};
use super::routes::check_agent_name;
use super::{AdminContext, AdminError, Note, Principal};
use crate::store::{ApprovalRecord, ApprovalStatus, Role};
use edgeward_core::grant::{GrantName, Origin, select_grant};
use edgeward_core::policy::{self, Call, Policy};
use serde_json::{Value, json};

/// Tickets listed per request: default and most.
const LIST_DEFAULT: u64 = 50;
const LIST_MAX: u64 = 1000;

impl AdminContext {
    pub(super) fn policy_list(&self) -> Result<Value, AdminError> {
        let policies: Vec<Value> = self
            .store()
            .policies()?
            .iter()
            .map(|p| json!({ "agent": p.agent(), "toml": p.to_toml() }))
            .collect();
        Ok(json!({ "policies": policies }))
    }

    pub(super) fn policy_show(
        &self,
        agent: Option<&str>,
        note: &mut Note,
    ) -> Result<Value, AdminError> {
        let agent = policy_agent(agent)?;
        note.detail = Some(format!(" {agent}"));
        let p = self
            .store()
            .policy(&agent)?
            .ok_or_else(|| AdminError::NotFound(format!("no policy for {agent}")))?;
        Ok(json!({ "agent": p.agent(), "toml": p.to_toml() }))
    }

    pub(super) fn policy_set(
        &self,
        text: &str,
        who: &Principal,
        note: &mut Note,
    ) -> Result<Value, AdminError> {
        let policy = Policy::from_toml(text).map_err(|e| match e {
            edgeward_core::config::ConfigError::Invalid { field, reason } => {
                AdminError::Invalid { field, reason }
            }
            other => AdminError::invalid("toml", other.to_string()),
        })?;
        note.detail = Some(format!(" {}", policy.agent()));
        // Every grant a rule names must exist now: a typo would otherwise
        // make a rule that never matches.
        for (field, grant) in policy.grants_named() {
            if self.store().grant(grant)?.is_none() {
                return Err(AdminError::Invalid {
                    field,
                    reason: format!("no grant named {grant} is registered"),
                });
            }
        }
        if policy.agent() != policy::GLOBAL {
            self.live_agent(policy.agent())?;
            note.agent = Some(policy.agent().to_owned());
        }
        self.store().put_policy(&policy, self.now(), &who.name)?;
        Ok(json!({ "agent": policy.agent(), "toml": policy.to_toml() }))
    }

    pub(super) fn policy_remove(&self, agent: &str, note: &mut Note) -> Result<Value, AdminError> {
        let agent = policy_agent(Some(agent))?;
        note.detail = Some(format!(" {agent}"));
        if !self.store().remove_policy(&agent)? {
            return Err(AdminError::NotFound(format!("no policy for {agent}")));
        }
        Ok(json!({ "removed": agent }))
    }

    /// Which rule decides a call, and which sequence and limit rules cover
    /// it (their state is not consulted: this is the policy as written).
    pub(super) fn policy_check(&self, mut b: Body, note: &mut Note) -> Result<Value, AdminError> {
        let agent: String = b.req("agent")?;
        let method: String = b.req("method")?;
        let url: String = b.req("url")?;
        let user: Option<String> = b.opt("user")?;
        let grant: Option<String> = b.opt("grant")?;
        check_agent_name(&agent, "agent")?;
        note.agent = Some(agent.clone());
        if !edgeward_core::grant::is_method_name(&method) {
            return Err(AdminError::invalid(
                "method",
                "an upper-case method, e.g. GET",
            ));
        }
        let uri: http::Uri = url
            .parse()
            .map_err(|_| AdminError::invalid("url", "not a URL"))?;
        let origin = Origin::of_uri(&uri)
            .ok_or_else(|| AdminError::invalid("url", "needs an http or https origin"))?;
        if let Some(u) = &user {
            edgeward_core::user::check_principal(u).map_err(|e| {
                AdminError::invalid("user", format!("a principal user:<issuer>/<sub>: {e}"))
            })?;
        }
        let record = self.live_agent(&agent)?;
        // The grant the runtime would route the call to.
        let mut rules = Vec::new();
        for g in &record.grants {
            if let Some(config) = self.store().grant(g)? {
                rules.push(config.rules);
            }
        }
        let chosen = select_grant(&rules, &origin, grant.as_deref())
            .map_err(|r| AdminError::invalid("url", r.detail))?;
        let grant_name: &GrantName = &chosen.name;
        let parsed: http::Method = method
            .parse()
            .map_err(|_| AdminError::invalid("method", "not an HTTP method"))?;
        let within_grant = chosen.check(&uri, &parsed);
        let held = self.store().policies_for(&agent)?;
        let policies: Vec<&Policy> = held.iter().map(|p| p.as_ref()).collect();
        let call = Call {
            agent: &agent,
            grant: grant_name.as_str(),
            method: &method,
            path: uri.path(),
            user: user.as_deref(),
            bytes: 0,
        };
        let (decision, rule, detail) = if let Err(r) = within_grant {
            ("deny".to_owned(), format!("grant {grant_name}"), r.detail)
        } else if policies.is_empty() {
            (
                "allow".to_owned(),
                "no policy".to_owned(),
                format!(
                    "agent {agent} has no policy and there is no global one: its grants alone decide"
                ),
            )
        } else {
            let d = policy::static_decision(&policies, &call);
            let word = match d.outcome {
                policy::Outcome::Allow => "allow",
                policy::Outcome::Approve => "approve",
                policy::Outcome::Deny => "deny",
                policy::Outcome::LimitExceeded => "limit-exceeded",
            };
            (word.to_owned(), d.rule, d.detail)
        };
        note.detail = Some(format!(" {agent} {method} {}: {decision}", uri.path()));
        Ok(json!({
            "agent": agent,
            "grant": grant_name.as_str(),
            "decision": decision,
            "rule": rule,
            "detail": detail,
            "also_applies": policy::applicable(&policies, &call),
        }))
    }

    pub(super) fn approval_list(&self, q: &Query, who: &Principal) -> Result<Value, AdminError> {
        let status = match q.text("status") {
            None => None,
            Some(s) => Some(parse_status(s)?),
        };
        let limit = q.number("limit")?.unwrap_or(LIST_DEFAULT);
        if !(1..=LIST_MAX).contains(&limit) {
            return Err(AdminError::invalid("limit", format!("1 to {LIST_MAX}")));
        }
        let agents = visible_agents(who);
        let tickets: Vec<Value> = self
            .store()
            .approvals(status, agents.as_deref(), limit as u32, self.now())?
            .iter()
            .map(ticket_view)
            .collect();
        Ok(json!({ "approvals": tickets }))
    }

    pub(super) fn approval_show(
        &self,
        id: Option<&str>,
        who: &Principal,
        note: &mut Note,
    ) -> Result<Value, AdminError> {
        let t = self.ticket(id.unwrap_or(""), who, note)?;
        Ok(ticket_view(&t))
    }

    pub(super) fn approval_decide(
        &self,
        id: &str,
        approve: bool,
        who: &Principal,
        note: &mut Note,
    ) -> Result<Value, AdminError> {
        let t = self.ticket(id, who, note)?;
        if !may_decide(who, &t.agent) {
            return Err(AdminError::Forbidden(format!(
                "{} may not decide approvals for agent {}",
                who.name, t.agent
            )));
        }
        let now = self.now();
        let settings = &self.tokens.settings().approvals;
        let use_until = now.saturating_add(if approve {
            settings.use_within_secs
        } else {
            settings.pending_secs
        });
        let decided = self
            .store()
            .decide_approval(&t.id, approve, &who.name, now, use_until)
            .map_err(|e| match e {
                crate::store::StoreError::Invalid { reason, .. } => AdminError::Conflict(reason),
                other => other.into(),
            })?;
        self.tokens.note_ticket_decided();
        note.detail = Some(format!(
            " {}: {} {} {} {} ({})",
            decided.id,
            if approve { "approved" } else { "denied" },
            decided.method,
            decided.url,
            decided.agent,
            decided.rule
        ));
        Ok(ticket_view(&decided))
    }

    pub(super) fn approval_stats(&self, who: &Principal) -> Result<Value, AdminError> {
        let stats: Vec<Value> = self
            .store()
            .approval_stats(self.now())?
            .into_iter()
            .filter(|s| may_see(who, &s.agent))
            .map(|s| {
                let decided = s.approved + s.denied;
                json!({
                    "agent": s.agent,
                    "allowed_by_policy": s.allowed,
                    "sent_for_approval": s.sent_for_approval,
                    "approved": s.approved,
                    "denied": s.denied,
                    "expired": s.expired,
                    "approve_ratio": (decided > 0).then(|| s.approved as f64 / decided as f64),
                    "mean_latency_s": s.mean_latency_s,
                    "max_latency_s": s.max_latency_s,
                })
            })
            .collect();
        Ok(json!({ "agents": stats }))
    }

    fn ticket(
        &self,
        id: &str,
        who: &Principal,
        note: &mut Note,
    ) -> Result<ApprovalRecord, AdminError> {
        if !edgeward_core::egress::is_ticket_id(id) {
            return Err(AdminError::invalid("id", "a ticket id: 32 hex digits"));
        }
        let t = self
            .store()
            .approval(id, self.now())?
            .ok_or_else(|| AdminError::NotFound(format!("no approval ticket {id}")))?;
        note.agent = Some(t.agent.clone());
        note.instance = Some(t.instance.clone());
        if !may_see(who, &t.agent) {
            // Same answer as a missing ticket: an approver learns nothing of
            // other agents' tickets.
            return Err(AdminError::NotFound(format!("no approval ticket {id}")));
        }
        Ok(t)
    }
}

fn policy_agent(agent: Option<&str>) -> Result<String, AdminError> {
    let agent =
        agent.ok_or_else(|| AdminError::invalid("agent", "missing: this parameter is required"))?;
    if agent != policy::GLOBAL {
        check_agent_name(agent, "agent")?;
    }
    Ok(agent.to_owned())
}

fn parse_status(s: &str) -> Result<ApprovalStatus, AdminError> {
    ApprovalStatus::from_name(s).ok_or_else(|| {
        AdminError::invalid("status", "one of pending, approved, denied, used, expired")
    })
}

/// The agents whose tickets `who` may see: `None` for all of them.
fn visible_agents(who: &Principal) -> Option<Vec<String>> {
    let mut agents = Vec::new();
    for r in &who.roles {
        match r {
            Role::Admin | Role::Auditor => return None,
            Role::Approver { agents: a } => agents.extend(a.iter().cloned()),
        }
    }
    Some(agents)
}

/// Whether `who` may see an agent's tickets.
fn may_see(who: &Principal, agent: &str) -> bool {
    who.roles.iter().any(|r| match r {
        Role::Admin | Role::Auditor => true,
        Role::Approver { agents } => agents.iter().any(|a| a == agent),
    })
}

/// Whether `who` may decide an agent's tickets.
fn may_decide(who: &Principal, agent: &str) -> bool {
    who.roles.iter().any(|r| match r {
        Role::Admin => true,
        Role::Approver { agents } => agents.iter().any(|a| a == agent),
        Role::Auditor => false,
    })
}

fn ticket_view(t: &ApprovalRecord) -> Value {
    json!({
        "id": t.id,
        "status": t.status.as_str(),
        "agent": t.agent,
        "instance": t.instance,
        "user": t.user,
        "root": t.root,
        "grant": t.grant,
        "method": t.method,
        "url": t.url,
        "headers": t.headers,
        "body_sha256": t.body_sha256,
        "body_preview": t.body_preview,
        "rule": t.rule,
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "decided_by": t.decided_by,
        "decided_at": t.decided_at,
        "used_at": t.used_at,
    })
}
