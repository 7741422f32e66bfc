//! The route handlers. Each one validates all of its input before it
//! changes anything, so a refused request changes nothing but the audit log.

use super::api::{
    AgentChange, AgentView, AuditPage, AuditView, CredentialView, DeviceView, HeadView,
    InstanceView, Inventory, InventoryAgent, InviteView, NewPrincipal, PrincipalView, ReviewView,
    RevocabilityView, RevocationView, SystemView, TombstoneView, VerifyView,
};
use super::input::{Body, Query, shown};
use super::{AdminContext, AdminError, Incoming, Note, Principal, Route};
use crate::import::{ImportError, import};
use crate::revocation::RevocationKind as LiveRevocation;
use crate::store::{
    self, AdminRecord, AgentUpdate, DeviceRecord, InviteRecord, NewAgent, RevocationKind, Role,
    Store, StoreError, VerifyError,
};
use edgeward_core::config::{Config, EMBEDDED_DEVICE, Limits};
use edgeward_core::digest::ComponentDigest;
use edgeward_core::grant::{CredentialKind, GrantName, validate_name};
use edgeward_core::keys::PublicKey;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;

/// Default lifetime of an enrolment code, seconds (a day).
const INVITE_TTL_DEFAULT: u64 = 86_400;
/// Enrolment codes live between a minute and 30 days.
const INVITE_TTL_RANGE: (u64, u64) = (60, 30 * 86_400);
/// Token lifetimes an agent may allow, seconds (as in the config file).
const LIFETIME_RANGE: (u64, u64) = (1, 86_400);
/// Live instances per device an agent may allow (as in the config file).
const INSTANCES_RANGE: (u32, u32) = (1, 10_000);
const INSTANCES_DEFAULT: u32 = 4;
/// Default and range of the inventory's review age, days.
const REVIEW_MAX_AGE_DEFAULT: u64 = 90;
const REVIEW_MAX_AGE_RANGE: (u64, u64) = (1, 36_500);
/// Audit records per page: default and most.
const AUDIT_PAGE_DEFAULT: u64 = 100;
const AUDIT_PAGE_MAX: u64 = 1000;

const AGENT_FIELDS: &[&str] = &[
    "name",
    "owner",
    "description",
    "digests",
    "devices",
    "grants",
    "max_token_lifetime_s",
    "max_instances_per_device",
];

impl AdminContext {
    pub(super) fn run(
        &self,
        route: Route,
        who: &Principal,
        req: &Incoming,
        note: &mut Note,
    ) -> Result<Value, AdminError> {
        // GET routes read the query string, POST routes the body; each
        // refuses the other kind of input.
        let body = || match &req.body {
            Ok(b) => Ok(b.as_ref()),
            Err(e) => Err(AdminError::invalid("body", e.to_string())),
        };
        let query = |allowed| Query::parse(req.query.as_deref(), allowed);
        if route.is_post() && req.query.as_deref().is_some_and(|q| !q.is_empty()) {
            return Err(AdminError::invalid(
                "query",
                "this route takes its parameters in the JSON body, not the query string",
            ));
        }
        match route {
            Route::WhoAmI => {
                query(&[])?;
                to_json(&PrincipalView {
                    name: who.name.clone(),
                    roles: who.roles.clone(),
                    created_at: None,
                })
            }
            Route::AdminList => {
                query(&[])?;
                let admins: Vec<PrincipalView> = self
                    .store()
                    .admins()?
                    .iter()
                    .map(PrincipalView::of)
                    .collect();
                Ok(json!({ "admins": admins }))
            }
            Route::AdminAdd => {
                self.admin_add(Body::parse(body()?, &["name", "role", "agents"])?, note)
            }
            Route::DeviceList => {
                query(&[])?;
                let devices: Vec<DeviceView> =
                    self.store().devices()?.iter().map(DeviceView::of).collect();
                Ok(json!({ "devices": devices }))
            }
            Route::DeviceEnroll => {
                self.device_enroll(Body::parse(body()?, &["id", "owner", "public_key"])?, note)
            }
            Route::DeviceRevoke => {
                let mut b = Body::parse(body()?, &["id", "reason"])?;
                let id: String = b.req("id")?;
                let reason: Option<String> = b.opt("reason")?;
                check_device_id(&id, "id")?;
                note.device = Some(id.clone());
                self.revoke_device(&id, reason.as_deref(), who, note)
            }
            Route::DeviceInvite => {
                self.device_invite(Body::parse(body()?, &["owner", "ttl_s"])?, who, note)
            }
            Route::AgentList => {
                query(&[])?;
                let agents: Vec<AgentView> =
                    self.store().agents()?.iter().map(AgentView::of).collect();
                Ok(json!({ "agents": agents }))
            }
            Route::AgentShow => {
                let q = query(&["name"])?;
                let name = q.text("name").ok_or_else(|| {
                    AdminError::invalid("name", "missing: this parameter is required")
                })?;
                check_agent_name(name, "name")?;
                note.agent = Some(name.to_owned());
                to_json(&AgentView::of(&self.live_agent(name)?))
            }
            Route::AgentRegister => self.agent_register(Body::parse(body()?, AGENT_FIELDS)?, note),
            Route::AgentUpdate => self.agent_update(Body::parse(body()?, AGENT_FIELDS)?, note),
            Route::AgentReview => {
                let name = agent_name_only(body()?)?;
                note.agent = Some(name.clone());
                let agent = self.store().review_agent(&name, self.now(), &who.name)?;
                note.detail = Some(format!(" {name}"));
                to_json(&AgentView::of(&agent))
            }
            Route::AgentDeprovision => {
                let name = agent_name_only(body()?)?;
                note.agent = Some(name.clone());
                self.live_agent(&name)?;
                let tomb = self.store().deprovision_agent(&name, self.now())?;
                // Wakes the stop channel, so running instances stop now
                // rather than at their next poll. Only generations up to the
                // tombstone's are covered: a re-registration starts above
                // them and is not affected. (The token service refuses
                // tokens of a gone agent anyway; this is for speed.)
                self.tokens.note_revoked(&LiveRevocation::Agent {
                    name: name.clone(),
                    before_generation: Some(tomb.last_generation.saturating_add(1)),
                });
                note.detail = Some(format!(
                    " {name} (last generation {})",
                    tomb.last_generation
                ));
                to_json(&TombstoneView {
                    name: tomb.name,
                    agent_id: tomb.agent_id,
                    last_generation: tomb.last_generation,
                    deprovisioned_at: tomb.deprovisioned_at,
                })
            }
            Route::Revoke => self.revoke(
                Body::parse(
                    body()?,
                    &["token", "instance", "agent", "device", "all", "reason"],
                )?,
                who,
                note,
            ),
            Route::KeysRotate => {
                Body::parse(body()?, &[])?;
                let kid = self.tokens.rotate_signing_key()?;
                note.detail = Some(format!(": new signing key {kid}"));
                Ok(serde_json::json!({
                    "kid": kid,
                    "note": "the old key stays in the JWKS and is accepted until its tokens expire",
                }))
            }
            Route::Import => {
                let mut b = Body::parse(body()?, &["toml"])?;
                let text: String = b.req("toml")?;
                self.import(&text, note)
            }
            Route::Inventory => {
                let q = query(&["review_max_age_days"])?;
                let days = in_range(
                    "review_max_age_days",
                    q.number("review_max_age_days")?,
                    REVIEW_MAX_AGE_DEFAULT,
                    REVIEW_MAX_AGE_RANGE,
                )?;
                to_json(&self.inventory(days)?)
            }
            Route::AuditRange => {
                let q = query(&["from", "tail", "limit"])?;
                self.audit_range(&q, note)
            }
            Route::AuditVerify => {
                let q = query(&["expected_head"])?;
                self.audit_verify(q.text("expected_head"), note)
            }
            Route::PolicyList => {
                query(&[])?;
                self.policy_list()
            }
            Route::PolicyShow => {
                let q = query(&["agent"])?;
                self.policy_show(q.text("agent"), note)
            }
            Route::PolicySet => {
                let mut b = Body::parse(body()?, &["toml"])?;
                let text: String = b.req("toml")?;
                self.policy_set(&text, who, note)
            }
            Route::PolicyRemove => {
                let mut b = Body::parse(body()?, &["agent"])?;
                let agent: String = b.req("agent")?;
                self.policy_remove(&agent, note)
            }
            Route::PolicyCheck => self.policy_check(
                Body::parse(body()?, &["agent", "method", "url", "user", "grant"])?,
                note,
            ),
            Route::ApprovalList => {
                let q = query(&["status", "limit"])?;
                self.approval_list(&q, who)
            }
            Route::ApprovalShow => {
                let q = query(&["id"])?;
                self.approval_show(q.text("id"), who, note)
            }
            Route::ApprovalApprove | Route::ApprovalDeny => {
                let mut b = Body::parse(body()?, &["id"])?;
                let id: String = b.req("id")?;
                self.approval_decide(&id, route == Route::ApprovalApprove, who, note)
            }
            Route::ApprovalStats => {
                query(&[])?;
                self.approval_stats(who)
            }
        }
    }

    pub(super) fn store(&self) -> &dyn Store {
        self.tokens.store().as_ref()
    }

    pub(super) fn now(&self) -> u64 {
        self.tokens.clock().now()
    }

    /// `n` random bytes, hex.
    fn random_hex(&self, n: usize) -> Result<String, AdminError> {
        let mut buf = vec![0u8; n];
        self.entropy
            .lock()
            .map_err(|_| AdminError::Internal("the random source's lock is poisoned".into()))?
            .fill(&mut buf);
        let out = hex::encode(&buf);
        zeroize::Zeroize::zeroize(&mut buf);
        Ok(out)
    }

    /// A live agent, or why there is none (naming a tombstone if there is).
    pub(super) fn live_agent(&self, name: &str) -> Result<store::AgentRecord, AdminError> {
        if let Some(agent) = self.store().agent(name)? {
            return Ok(agent);
        }
        Err(match self.store().tombstone(name)? {
            Some(t) => AdminError::NotFound(format!(
                "no agent {name}: it was deprovisioned at {} (last generation {})",
                t.deprovisioned_at, t.last_generation
            )),
            None => AdminError::NotFound(format!("no agent {name}")),
        })
    }

    fn admin_add(&self, mut b: Body, note: &mut Note) -> Result<Value, AdminError> {
        let name: String = b.req("name")?;
        let role: String = b.req("role")?;
        let agents: Option<Vec<String>> = b.opt("agents")?;
        check_line(&name, "name")?;
        let role = match (role.as_str(), agents) {
            ("admin", None) => Role::Admin,
            ("auditor", None) => Role::Auditor,
            ("approver", Some(agents)) if !agents.is_empty() => {
                for a in &agents {
                    check_agent_name(a, "agents")?;
                }
                Role::Approver { agents }
            }
            ("approver", _) => {
                return Err(AdminError::invalid(
                    "agents",
                    "an approver needs the names of the agents it decides for",
                ));
            }
            ("admin" | "auditor", Some(_)) => {
                return Err(AdminError::invalid(
                    "agents",
                    "only the approver role takes agents",
                ));
            }
            _ => {
                return Err(AdminError::invalid(
                    "role",
                    "must be admin, auditor or approver",
                ));
            }
        };
        let credential = zeroize::Zeroizing::new(self.random_hex(32)?);
        let record = AdminRecord {
            name: name.clone(),
            roles: vec![role.clone()],
            credential_hash: Sha256::digest(credential.as_bytes()).into(),
            created_at: self.now(),
        };
        self.store().add_admin(&record)?;
        note.detail = Some(format!(" {} as {}", shown(&name), super::role_name(&role)));
        to_json(&NewPrincipal {
            principal: PrincipalView::of(&record),
            credential: credential.to_string(),
        })
    }

    fn device_enroll(&self, mut b: Body, note: &mut Note) -> Result<Value, AdminError> {
        let id: String = b.req("id")?;
        let owner: String = b.req("owner")?;
        let key: String = b.req("public_key")?;
        check_device_id(&id, "id")?;
        check_line(&owner, "owner")?;
        let public_key: PublicKey = key
            .parse()
            .map_err(|e| AdminError::invalid("public_key", format!("{e}")))?;
        note.device = Some(id.clone());
        note.detail = Some(format!(" {id} (owner {})", shown(&owner)));
        let device = DeviceRecord {
            id,
            owner,
            public_key,
            enrolled_at: self.now(),
            revoked_at: None,
        };
        self.store().enroll_device(&device)?;
        to_json(&DeviceView::of(&device))
    }

    fn revoke_device(
        &self,
        id: &str,
        reason: Option<&str>,
        who: &Principal,
        note: &mut Note,
    ) -> Result<Value, AdminError> {
        let device = self
            .store()
            .device(id)?
            .ok_or_else(|| AdminError::NotFound(format!("no device {id} is enrolled")))?;
        if let Some(at) = device.revoked_at {
            return Err(AdminError::Conflict(format!(
                "device {id} was already revoked at {at}"
            )));
        }
        self.revoke_kind(
            &LiveRevocation::Device { id: id.to_owned() },
            reason,
            who,
            note,
        )
    }

    fn device_invite(
        &self,
        mut b: Body,
        who: &Principal,
        note: &mut Note,
    ) -> Result<Value, AdminError> {
        let owner: String = b.req("owner")?;
        let ttl = in_range(
            "ttl_s",
            b.opt("ttl_s")?,
            INVITE_TTL_DEFAULT,
            INVITE_TTL_RANGE,
        )?;
        check_line(&owner, "owner")?;
        let code = zeroize::Zeroizing::new(self.random_hex(32)?);
        let now = self.now();
        let invite = InviteRecord {
            code_hash: Sha256::digest(code.as_bytes()).into(),
            owner: owner.clone(),
            created_by: who.name.clone(),
            created_at: now,
            expires_at: now.saturating_add(ttl),
        };
        self.store().create_invite(&invite)?;
        // The code itself never reaches the audit log, only that one exists.
        note.detail = Some(format!(
            " for {} until {}",
            shown(&owner),
            invite.expires_at
        ));
        to_json(&InviteView {
            code: code.to_string(),
            owner,
            expires_at: invite.expires_at,
            note: "a one-time code: only its hash is kept. On the device: edgeward enroll --backend URL --ca ca.pem --code CODE --device ID --device-key KEY".into(),
        })
    }

    fn agent_register(&self, mut b: Body, note: &mut Note) -> Result<Value, AdminError> {
        let name: String = b.req("name")?;
        check_agent_name(&name, "name")?;
        let owner: String = b.req("owner")?;
        check_line(&owner, "owner")?;
        let description: String = b.opt("description")?.unwrap_or_default();
        let digests = parse_digests(b.req("digests")?)?;
        let devices = parse_devices(b.opt("devices")?.unwrap_or_default())?;
        let grants = parse_grants(b.opt("grants")?.unwrap_or_default())?;
        let default_lifetime = self.tokens.settings().default_token_lifetime;
        let max_token_lifetime = in_range(
            "max_token_lifetime_s",
            b.opt("max_token_lifetime_s")?,
            default_lifetime.clamp(LIFETIME_RANGE.0, LIFETIME_RANGE.1),
            LIFETIME_RANGE,
        )?;
        let max_instances_per_device = in_range(
            "max_instances_per_device",
            b.opt("max_instances_per_device")?,
            INSTANCES_DEFAULT,
            INSTANCES_RANGE,
        )?;
        note.agent = Some(name.clone());
        let agent = NewAgent {
            id: self.random_hex(16)?,
            name: name.clone(),
            owner,
            description,
            digests,
            devices,
            grants,
            limits: Limits::default(),
            max_token_lifetime,
            max_instances_per_device,
        };
        let record = self
            .store()
            .register_agent(&agent, self.now())
            .map_err(refs_as_fields)?;
        let mut warnings = Vec::new();
        // An agent-wide revocation is kept by name and still refuses the
        // new agent's exchanges and tokens: say so rather than leave the
        // admin puzzled.
        for r in self.store().revocations()? {
            if let RevocationKind::Agent {
                name: n,
                before_generation: None,
            } = &r.kind
                && *n == name
            {
                warnings.push(format!(
                    "revocation {} (agent {name}, at {}) still covers this name: its tokens and exchanges are refused",
                    r.seq, r.at
                ));
            }
        }
        note.detail = Some(format!(" {name} at generation {}", record.generation));
        to_json(&AgentChange {
            agent: AgentView::of(&record),
            previous_generation: None,
            warnings,
        })
    }

    fn agent_update(&self, mut b: Body, note: &mut Note) -> Result<Value, AdminError> {
        let name: String = b.req("name")?;
        check_agent_name(&name, "name")?;
        let owner: Option<String> = b.opt("owner")?;
        if let Some(o) = &owner {
            check_line(o, "owner")?;
        }
        let update = AgentUpdate {
            owner,
            description: b.opt("description")?,
            digests: b.opt("digests")?.map(parse_digests).transpose()?,
            devices: b.opt("devices")?.map(parse_devices).transpose()?,
            grants: b.opt("grants")?.map(parse_grants).transpose()?,
            limits: None,
            max_token_lifetime: b
                .opt("max_token_lifetime_s")?
                .map(|v| in_range("max_token_lifetime_s", Some(v), v, LIFETIME_RANGE))
                .transpose()?,
            max_instances_per_device: b
                .opt("max_instances_per_device")?
                .map(|v| in_range("max_instances_per_device", Some(v), v, INSTANCES_RANGE))
                .transpose()?,
        };
        if update == AgentUpdate::default() {
            return Err(AdminError::invalid(
                "body",
                "nothing to change: give at least one of owner, description, digests, devices, grants, max_token_lifetime_s, max_instances_per_device",
            ));
        }
        note.agent = Some(name.clone());
        let before = self.live_agent(&name)?;
        let after = self
            .store()
            .update_agent(&name, &update, self.now())
            .map_err(refs_as_fields)?;
        if after.generation > before.generation {
            // Tokens of the old generation are refused on their next call
            // (the token service compares generations); this also wakes the
            // stop channel so running instances stop now.
            self.tokens.note_revoked(&LiveRevocation::Agent {
                name: name.clone(),
                before_generation: Some(after.generation),
            });
        }
        note.detail = Some(format!(
            " {name}: generation {} -> {}",
            before.generation, after.generation
        ));
        to_json(&AgentChange {
            agent: AgentView::of(&after),
            previous_generation: Some(before.generation),
            warnings: Vec::new(),
        })
    }

    fn revoke(&self, mut b: Body, who: &Principal, note: &mut Note) -> Result<Value, AdminError> {
        let token: Option<String> = b.opt("token")?;
        let instance: Option<String> = b.opt("instance")?;
        let agent: Option<String> = b.opt("agent")?;
        let device: Option<String> = b.opt("device")?;
        let all: Option<bool> = b.opt("all")?;
        let reason: Option<String> = b.opt("reason")?;
        if all == Some(false) {
            return Err(AdminError::invalid(
                "all",
                "must be true (revoke everything) or left out",
            ));
        }
        let given: Vec<&str> = [
            ("token", token.is_some()),
            ("instance", instance.is_some()),
            ("agent", agent.is_some()),
            ("device", device.is_some()),
            ("all", all.is_some()),
        ]
        .into_iter()
        .filter(|(_, present)| *present)
        .map(|(name, _)| name)
        .collect();
        if given.len() != 1 {
            let got = if given.is_empty() {
                "none was".to_owned()
            } else {
                format!("{} were", given.join(" and "))
            };
            return Err(AdminError::invalid(
                "body",
                format!("give exactly one of token, instance, agent, device or all; {got} given"),
            ));
        }
        let kind = if let Some(jti) = token {
            check_token_id(&jti, "token")?;
            note.jti = Some(jti.clone());
            LiveRevocation::Token { jti }
        } else if let Some(id) = instance {
            check_token_id(&id, "instance")?;
            note.instance = Some(id.clone());
            LiveRevocation::Instance { id }
        } else if let Some(name) = agent {
            check_agent_name(&name, "agent")?;
            note.agent = Some(name.clone());
            // Every generation up to the current one: the agent stays
            // revoked until it is re-issued (an update that bumps its
            // generation, or deprovision and register), and a name is never
            // blocked for good.
            let current = self.live_agent(&name)?;
            LiveRevocation::Agent {
                name,
                before_generation: Some(current.generation.saturating_add(1)),
            }
        } else if let Some(id) = device {
            check_device_id(&id, "device")?;
            note.device = Some(id.clone());
            return self.revoke_device(&id, reason.as_deref(), who, note);
        } else {
            LiveRevocation::All { at: self.now() }
        };
        self.revoke_kind(&kind, reason.as_deref(), who, note)
    }

    /// Store and apply a revocation (the token service writes it to the
    /// store before it takes effect in memory).
    fn revoke_kind(
        &self,
        kind: &LiveRevocation,
        reason: Option<&str>,
        who: &Principal,
        note: &mut Note,
    ) -> Result<Value, AdminError> {
        let reason = reason.unwrap_or("no reason given");
        check_reason(reason)?;
        let (kind_name, target) = match kind {
            LiveRevocation::Token { jti } => ("token", Some(jti.clone())),
            LiveRevocation::Instance { id } => ("instance", Some(id.clone())),
            LiveRevocation::Agent { name, .. } => ("agent", Some(name.clone())),
            LiveRevocation::Device { id } => ("device", Some(id.clone())),
            LiveRevocation::All { .. } => ("all", None),
        };
        self.tokens.revoke(kind, &who.name, reason)?;
        note.detail = Some(format!(
            " {kind_name}{}: {}",
            target
                .as_deref()
                .map(|t| format!(" {t}"))
                .unwrap_or_default(),
            reason
        ));
        Ok(json!({
            "revoked": { "kind": kind_name, "target": target },
            "at": self.now(),
            "reason": reason,
        }))
    }

    fn import(&self, text: &str, note: &mut Note) -> Result<Value, AdminError> {
        // The config parser never echoes values, so a secret pasted into the
        // file does not reach the answer or the audit log.
        let config = Config::parse(text).map_err(|e| AdminError::invalid("toml", e.to_string()))?;
        // Checked before anything is written: the import applies entries in
        // order and stops at the first failure.
        for d in &config.devices {
            if let Some(existing) = self.store().device(&d.id)?
                && existing.public_key != d.public_key
            {
                return Err(AdminError::Conflict(format!(
                    "device {} is already enrolled with another public key; re-keying a device is not done by import",
                    d.id
                )));
            }
        }
        let before: HashMap<String, u64> = self
            .store()
            .agents()?
            .into_iter()
            .map(|a| (a.name, a.generation))
            .collect();
        let mut id_error = None;
        let summary = import(self.store(), &config, self.now(), || {
            self.random_hex(16).unwrap_or_else(|e| {
                // An empty id is refused by the store, so the import stops
                // at this agent.
                id_error = Some(e);
                String::new()
            })
        });
        if let Some(e) = id_error {
            return Err(e);
        }
        let summary = summary.map_err(|e| match e {
            ImportError::Store { entry, source } => match AdminError::from(source) {
                AdminError::Internal(inner) => AdminError::Internal(format!("{entry}: {inner}")),
                other => AdminError::invalid(
                    "toml",
                    format!("{entry}: {other} (the entries before it were applied)"),
                ),
            },
            ImportError::DeviceKeyChanged(id) => AdminError::Conflict(format!(
                "device {id} is already enrolled with another public key"
            )),
            e @ ImportError::PolicyForUnknownAgent(_) => {
                AdminError::invalid("toml", format!("{e} (nothing was applied)"))
            }
        })?;
        for agent in self.store().agents()? {
            if before
                .get(&agent.name)
                .is_some_and(|g| agent.generation > *g)
            {
                self.tokens.note_revoked(&LiveRevocation::Agent {
                    name: agent.name.clone(),
                    before_generation: Some(agent.generation),
                });
            }
        }
        note.detail = Some(format!(
            ": {} grant(s), {} device(s) enrolled, {} agent(s) registered, {} updated",
            summary.grants,
            summary.devices_enrolled,
            summary.agents_registered,
            summary.agents_updated
        ));
        let mut notes = Vec::new();
        if summary.grants > 0 {
            notes.push(
                "the egress proxy loads grant secrets when the backend starts: restart it for new or changed grants to take effect"
                    .to_owned(),
            );
        }
        Ok(json!({ "summary": summary, "notes": notes }))
    }

    fn inventory(&self, review_max_age_days: u64) -> Result<Inventory, AdminError> {
        let now = self.now();
        let store = self.store();
        let grants: HashMap<GrantName, _> = store
            .grants()?
            .into_iter()
            .map(|g| (g.rules.name.clone(), g))
            .collect();
        let mut instances: HashMap<String, Vec<InstanceView>> = HashMap::new();
        for i in store.live_instances(None, now)? {
            instances
                .entry(i.agent.clone())
                .or_default()
                .push(InstanceView {
                    instance_id: i.instance_id,
                    device: i.device,
                    first_seen: i.first_seen,
                    expires_at: i.expires_at,
                });
        }
        let revocations = store.revocations()?;
        let mut agents = Vec::new();
        for a in store.agents()? {
            let mut credentials = Vec::new();
            let mut systems = Vec::new();
            for name in &a.grants {
                match grants.get(name) {
                    Some(g) => {
                        credentials.push(CredentialView {
                            grant: name.to_string(),
                            attached_as: Some(match &g.credential {
                                CredentialKind::Header { name, .. } => format!("header {name}"),
                                CredentialKind::Query { param } => format!("query {param}"),
                                CredentialKind::Basic { .. } => "basic".to_owned(),
                            }),
                            secret_source: Some(g.secret.to_string()),
                            defined: true,
                        });
                        systems.push(SystemView {
                            origin: g.rules.origin.to_string(),
                            grant: name.to_string(),
                            methods: g.rules.methods.iter().map(ToString::to_string).collect(),
                            path_prefixes: g.rules.path_prefixes.clone(),
                        });
                    }
                    None => credentials.push(CredentialView {
                        grant: name.to_string(),
                        attached_as: None,
                        secret_source: None,
                        defined: false,
                    }),
                }
            }
            let age_days = a.last_reviewed_at.map(|t| now.saturating_sub(t) / 86_400);
            let review = ReviewView {
                last_reviewed_at: a.last_reviewed_at,
                last_reviewed_by: a.last_reviewed_by.clone(),
                age_days,
                overdue: age_days.is_none_or(|d| d > review_max_age_days),
            };
            // Revocations that covered this agent: its own, one of its
            // devices', or everything. (Token and instance revocations are
            // not tied to an agent once their records are gone.)
            let last_revocation = revocations
                .iter()
                .rev()
                .find(|r| match &r.kind {
                    RevocationKind::Agent { name, .. } => *name == a.name,
                    RevocationKind::Device { id } => a.devices.contains(id),
                    RevocationKind::All => true,
                    _ => false,
                })
                .map(RevocationView::of);
            agents.push(InventoryAgent {
                revocation: RevocabilityView {
                    live_instances: instances.remove(&a.name).unwrap_or_default(),
                    outstanding_tokens: store.outstanding_tokens(Some(&a.name), now)?,
                    last_revocation,
                    last_stop_seconds: self
                        .tokens
                        .last_stop(&a.name)
                        .and_then(|s| s.after_revoke_ms)
                        .map(|ms| ms as f64 / 1000.0),
                    revoke_with: format!("edgeward revoke --agent {}", a.name),
                },
                name: a.name,
                id: a.id,
                owner: a.owner,
                generation: a.generation,
                credentials,
                systems,
                review,
            });
        }
        Ok(Inventory {
            generated_at: now,
            review_max_age_days,
            agents,
        })
    }

    fn audit_range(&self, q: &Query, note: &mut Note) -> Result<Value, AdminError> {
        let from = q.number("from")?;
        let tail = q.number("tail")?;
        let limit = in_range(
            "limit",
            q.number("limit")?,
            AUDIT_PAGE_DEFAULT,
            (1, AUDIT_PAGE_MAX),
        )?;
        let head = self.store().audit_head()?;
        let start = match (from, tail) {
            (Some(_), Some(_)) => {
                return Err(AdminError::invalid("tail", "give from or tail, not both"));
            }
            (Some(from), None) => from.max(1),
            (None, Some(tail)) => {
                let tail = in_range("tail", Some(tail), tail, (1, AUDIT_PAGE_MAX))?;
                head.map_or(1, |(seq, _)| seq.saturating_sub(tail - 1).max(1))
            }
            (None, None) => 1,
        };
        // u64 → u32: `limit` is at most AUDIT_PAGE_MAX.
        let records = self.store().audit_range(start, limit as u32)?;
        note.detail = Some(format!(" from {start}, {} record(s)", records.len()));
        to_json(&AuditPage {
            records: records.iter().map(AuditView::of).collect(),
            head: head.map(|(seq, hash)| HeadView {
                seq,
                hash: hex::encode(hash),
            }),
        })
    }

    fn audit_verify(&self, expected: Option<&str>, note: &mut Note) -> Result<Value, AdminError> {
        let expected = expected.map(parse_head).transpose()?;
        let tokens = &self.tokens;
        let view = match store::verify_store(
            self.store(),
            |cp| tokens.checkpoint_is_authentic(cp),
            expected,
        ) {
            Ok(v) => VerifyView {
                ok: true,
                problem: None,
                records: v.records,
                checkpoints: v.checkpoints,
                head: v.head.map(|(seq, hash)| HeadView {
                    seq,
                    hash: hex::encode(hash),
                }),
            },
            Err(VerifyError::Chain(e)) => VerifyView {
                ok: false,
                problem: Some(e.to_string()),
                records: 0,
                checkpoints: 0,
                head: None,
            },
            Err(VerifyError::Store(e)) => return Err(e.into()),
        };
        note.detail = Some(match &view.problem {
            None => format!(": intact, {} record(s)", view.records),
            Some(p) => format!(": NOT intact: {p}"),
        });
        to_json(&view)
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, AdminError> {
    serde_json::to_value(v)
        .map_err(|e| AdminError::Internal(format!("cannot encode the answer: {e}")))
}

/// A body that is `{name}` and nothing else.
fn agent_name_only(body: &[u8]) -> Result<String, AdminError> {
    let mut b = Body::parse(body, &["name"])?;
    let name: String = b.req("name")?;
    check_agent_name(&name, "name")?;
    Ok(name)
}

pub(super) fn check_agent_name(name: &str, field: &'static str) -> Result<(), AdminError> {
    validate_name(name, "agent").map_err(|e| AdminError::invalid(field, e.to_string()))
}

fn check_device_id(id: &str, field: &'static str) -> Result<(), AdminError> {
    validate_name(id, "device").map_err(|e| AdminError::invalid(field, e.to_string()))?;
    if id == EMBEDDED_DEVICE {
        return Err(AdminError::invalid(
            field,
            "\"embedded\" is reserved for the in-process device of embedded mode",
        ));
    }
    Ok(())
}

/// Token and instance ids as edgeward makes them: hex, or at least
/// URL-safe characters.
fn check_token_id(id: &str, field: &'static str) -> Result<(), AdminError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(AdminError::invalid(
            field,
            "must be 1 to 128 characters of a-z, A-Z, 0-9, '-' or '_'",
        ));
    }
    Ok(())
}

/// A line of text: a person's or team's name.
fn check_line(value: &str, field: &'static str) -> Result<(), AdminError> {
    if value.trim().is_empty() || value.len() > 200 || value.chars().any(char::is_control) {
        return Err(AdminError::invalid(
            field,
            "must be 1 to 200 bytes of text without control characters",
        ));
    }
    Ok(())
}

fn check_reason(value: &str) -> Result<(), AdminError> {
    if value.len() > 500 || value.chars().any(char::is_control) {
        return Err(AdminError::invalid(
            "reason",
            "must be at most 500 bytes of text without control characters",
        ));
    }
    Ok(())
}

fn in_range<T: PartialOrd + Copy + std::fmt::Display>(
    field: &'static str,
    value: Option<T>,
    default: T,
    (min, max): (T, T),
) -> Result<T, AdminError> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(AdminError::invalid(
            field,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(v)
}

fn parse_digests(list: Vec<String>) -> Result<Vec<ComponentDigest>, AdminError> {
    if list.is_empty() {
        return Err(AdminError::invalid(
            "digests",
            "list at least one component digest (sha256:…)",
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, d)| {
            d.parse()
                .map_err(|e| AdminError::invalid("digests", format!("entry {}: {e}", i + 1)))
        })
        .collect()
}

fn parse_devices(list: Vec<String>) -> Result<Vec<String>, AdminError> {
    for (i, d) in list.iter().enumerate() {
        check_device_id(d, "devices").map_err(|e| match e {
            AdminError::Invalid { field, reason } => AdminError::Invalid {
                field,
                reason: format!("entry {}: {reason}", i + 1),
            },
            other => other,
        })?;
    }
    Ok(list)
}

fn parse_grants(list: Vec<String>) -> Result<Vec<GrantName>, AdminError> {
    list.iter()
        .enumerate()
        .map(|(i, g)| {
            GrantName::new(g)
                .map_err(|e| AdminError::invalid("grants", format!("entry {}: {e}", i + 1)))
        })
        .collect()
}

/// A device or grant an agent names that does not exist is a fault of the
/// request's list, not a missing route target.
fn refs_as_fields(e: StoreError) -> AdminError {
    match e {
        StoreError::NotFound {
            what: "device",
            key,
        } => AdminError::invalid("devices", format!("no device {key} is enrolled")),
        StoreError::NotFound { what: "grant", key } => AdminError::invalid(
            "grants",
            format!("no grant {key} exists (grants come from `edgeward import`)"),
        ),
        other => other.into(),
    }
}

/// `SEQ:HASH` as printed by `audit export` and `audit verify`.
fn parse_head(text: &str) -> Result<(u64, [u8; 32]), AdminError> {
    let bad = || {
        AdminError::invalid(
            "expected_head",
            "must be SEQ:HASH, with the hash as 64 hex digits",
        )
    };
    let (seq, hash) = text.split_once(':').ok_or_else(bad)?;
    let seq: u64 = seq.parse().map_err(|_| bad())?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hash, &mut out).map_err(|_| bad())?;
    Ok((seq, out))
}
