//! Seeding the registry from a TOML config (`edgeward import`, embedded mode,
//! and a `serve` whose store is still empty).

use crate::store::{AgentUpdate, DeviceRecord, NewAgent, Store, StoreError};
use edgeward_core::config::Config;

/// What an import changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportSummary {
    /// Grants written (new or changed).
    pub grants: usize,
    /// Devices enrolled.
    pub devices_enrolled: usize,
    /// Agents registered.
    pub agents_registered: usize,
    /// Agents updated (a changed grant, digest or device list bumps the generation).
    pub agents_updated: usize,
    /// Policies written (new or changed).
    pub policies: usize,
}

/// Why an import stopped. Everything before the failing entry was applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The store refused an entry.
    #[error("{entry}: {source}")]
    Store {
        /// Which entry.
        entry: String,
        /// Why.
        source: StoreError,
    },
    /// A device id exists with another public key: re-keying is an explicit
    /// act, never a side effect of an import.
    #[error("device {0} is already enrolled with another public key")]
    DeviceKeyChanged(String),
    /// A policy names an agent neither the config nor the registry has: a
    /// misspelt name would leave the intended agent with no policy at all.
    #[error("policy for agent {0}: no such agent in the config or the registry")]
    PolicyForUnknownAgent(String),
}

/// Apply a config to the store. `new_id` makes the random, immutable id of a
/// newly registered agent.
pub fn import(
    store: &dyn Store,
    config: &Config,
    now: u64,
    mut new_id: impl FnMut() -> String,
) -> Result<ImportSummary, ImportError> {
    let mut summary = ImportSummary::default();
    let at = |entry: String| move |source| ImportError::Store { entry, source };
    // Checked before anything is applied: this refusal changes nothing.
    for p in &config.policies {
        let name = p.agent();
        let known = name == edgeward_core::policy::GLOBAL
            || config.agent(name).is_some()
            || store
                .agent(name)
                .map_err(at(format!("policy {name}")))?
                .is_some();
        if !known {
            return Err(ImportError::PolicyForUnknownAgent(name.to_owned()));
        }
    }
    for g in &config.grants {
        store
            .put_grant(g, now)
            .map_err(at(format!("grant {}", g.rules.name)))?;
        summary.grants += 1;
    }
    for d in &config.devices {
        match store
            .device(&d.id)
            .map_err(at(format!("device {}", d.id)))?
        {
            Some(existing) if existing.public_key != d.public_key => {
                return Err(ImportError::DeviceKeyChanged(d.id.clone()));
            }
            Some(_) => {}
            None => {
                store
                    .enroll_device(&DeviceRecord {
                        id: d.id.clone(),
                        owner: d.owner.clone(),
                        public_key: d.public_key,
                        enrolled_at: now,
                        revoked_at: None,
                    })
                    .map_err(at(format!("device {}", d.id)))?;
                summary.devices_enrolled += 1;
            }
        }
    }
    for a in &config.agents {
        let entry = format!("agent {}", a.name);
        match store.agent(&a.name).map_err(at(entry.clone()))? {
            None => {
                store
                    .register_agent(&NewAgent::from_config(a, new_id(), String::new()), now)
                    .map_err(at(entry))?;
                summary.agents_registered += 1;
            }
            Some(existing) => {
                let update = AgentUpdate {
                    owner: (existing.owner != a.owner).then(|| a.owner.clone()),
                    description: None,
                    digests: (existing.digests != a.digests).then(|| a.digests.clone()),
                    devices: (existing.devices != a.devices).then(|| a.devices.clone()),
                    grants: (existing.grants != a.grants).then(|| a.grants.clone()),
                    limits: (existing.limits != a.limits).then_some(a.limits),
                    max_token_lifetime: (existing.max_token_lifetime != a.max_token_lifetime)
                        .then_some(a.max_token_lifetime),
                    max_instances_per_device: (existing.max_instances_per_device
                        != a.max_instances_per_device)
                        .then_some(a.max_instances_per_device),
                };
                if update != AgentUpdate::default() {
                    store
                        .update_agent(&a.name, &update, now)
                        .map_err(at(entry))?;
                    summary.agents_updated += 1;
                }
            }
        }
    }
    // Policies last: they may name the agents just registered. An
    // unchanged one is not written again.
    for p in &config.policies {
        let entry = format!("policy {}", p.agent());
        let current = store.policy(p.agent()).map_err(at(entry.clone()))?;
        if current.as_deref() != Some(p) {
            store.put_policy(p, now, "import").map_err(at(entry))?;
            summary.policies += 1;
        }
    }
    Ok(summary)
}
