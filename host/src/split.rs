//! Split mode: this process is the edge runtime; the backend is remote.

use anyhow::Context as _;
use edgeward_core::clock::SystemClock;
use edgeward_core::digest::ComponentDigest;
use edgeward_runtime::remote::{RemoteBackend, danger};
use edgeward_runtime::{
    AgentSpec, AttestOptions, DeviceIdentity, Runtime, RuntimeConfig, TaskReport,
};
use std::path::PathBuf;
use std::sync::Arc;

pub struct Split {
    pub url: String,
    pub ca: Option<PathBuf>,
    pub device: String,
    pub device_key: PathBuf,
    pub agent: String,
    pub danger_plaintext_http: bool,
    pub token_lifetime: Option<u64>,
}

impl Split {
    pub async fn run_once(
        &self,
        component: &[u8],
        task: &str,
        extras: &crate::extras::Extras,
    ) -> anyhow::Result<TaskReport> {
        let backend = if self.danger_plaintext_http {
            danger::plaintext_backend(&self.url)?
        } else {
            let ca = self
                .ca
                .as_ref()
                .context("--ca is required: the backend's CA certificate (from `edgeward init`)")?;
            let certs = edgeward_runtime::remote::load_ca(ca)?;
            RemoteBackend::new(&self.url, certs)?
        };
        let signer = crate::keys::load(&self.device_key)?;
        let runtime = Runtime::new(RuntimeConfig::default())?;
        let loaded = runtime.load(
            component,
            AgentSpec {
                name: self.agent.clone(),
                // The backend is the judge of the digest; the device accepts
                // what it was asked to run.
                allowed_digests: vec![ComponentDigest::of(component)],
            },
        )?;
        let backend = Arc::new(backend);
        let instance = loaded
            .attest(AttestOptions {
                device: DeviceIdentity {
                    id: self.device.clone(),
                    signer: Arc::from(signer),
                },
                exchange: backend.clone(),
                egress: backend.clone(),
                stop_channel: Some(backend.clone()),
                clock: Arc::new(SystemClock),
                entropy: &mut crate::embedded::os_entropy,
                grants: Vec::new(),
                lifetime: self.token_lifetime,
                user_assertion: extras.user_assertion.clone(),
            })
            .await
            .context("the instance could not attest")?;
        // Guests may wait for approval tickets through the same backend.
        let instance = extras.attach(&runtime, instance.with_approvals(backend))?;
        Ok(instance.run(task).await)
    }
}
