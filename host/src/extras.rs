//! What `edgeward run` may add to an instance beyond its agent: a user to
//! act for, and sub-agents it may start (both modes).

use anyhow::{Context as _, bail};
use edgeward_core::digest::ComponentDigest;
use edgeward_core::egress::BearerToken;
use edgeward_runtime::{AgentInstance, AgentSpec, Runtime};
use std::path::Path;
use std::sync::Arc;

/// Largest component read (agent or sub-agent).
const MAX_COMPONENT_BYTES: u64 = 256 << 20;

/// A component file, refused over [`MAX_COMPONENT_BYTES`] before it is read.
pub fn read_component(path: &Path) -> anyhow::Result<Vec<u8>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read component {}", path.display()))?
        .len();
    if size > MAX_COMPONENT_BYTES {
        bail!(
            "component {} is over {} MiB",
            path.display(),
            MAX_COMPONENT_BYTES >> 20
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read component {}", path.display()))
}
/// Longest user assertion file read (a JWT is a few KiB at most).
const MAX_ASSERTION_BYTES: u64 = 16 * 1024;

/// The optional parts of a run.
#[derive(Default)]
pub struct Extras {
    /// The user's assertion (a JWT from an issuer the backend trusts).
    pub user_assertion: Option<BearerToken>,
    /// Sub-agents by registered name, with their component bytes.
    pub sub_agents: Vec<(String, Vec<u8>)>,
}

impl Extras {
    /// Read `--user-assertion FILE` and every `--sub-agent NAME=COMPONENT`.
    pub fn read(user_assertion: Option<&Path>, sub_agents: &[String]) -> anyhow::Result<Extras> {
        let user_assertion = match user_assertion {
            None => None,
            Some(path) => Some(read_assertion(path)?),
        };
        let sub_agents = sub_agents
            .iter()
            .map(|spec| {
                let (name, file) = spec
                    .split_once('=')
                    .with_context(|| format!("--sub-agent {spec:?} is not NAME=COMPONENT"))?;
                edgeward_core::grant::validate_name(name, "agent").map_err(|_| {
                    anyhow::anyhow!("--sub-agent: {name:?} is not a valid agent name")
                })?;
                Ok((name.to_owned(), read_component(Path::new(file))?))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Extras {
            user_assertion,
            sub_agents,
        })
    }

    /// Give `instance` its sub-agents, compiled in `runtime`. The device
    /// accepts each component as given; the backend judges: a sub-agent it
    /// does not know holds nothing.
    pub fn attach(
        &self,
        runtime: &Runtime,
        instance: AgentInstance,
    ) -> anyhow::Result<AgentInstance> {
        if self.sub_agents.is_empty() {
            return Ok(instance);
        }
        let loaded = self
            .sub_agents
            .iter()
            .map(|(name, bytes)| {
                let spec = AgentSpec {
                    name: name.clone(),
                    allowed_digests: vec![ComponentDigest::of(bytes)],
                };
                runtime
                    .load(bytes, spec)
                    .map(Arc::new)
                    .with_context(|| format!("cannot load sub-agent {name}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(instance.with_sub_agents(loaded, Box::new(crate::embedded::os_entropy)))
    }
}

fn read_assertion(path: &Path) -> anyhow::Result<BearerToken> {
    let jwt = crate::admin_cli::read_secret_file(path, "a user assertion", MAX_ASSERTION_BYTES)?;
    // Only the shape is checked here (never echoing the content): the
    // backend verifies the assertion itself.
    if jwt.split('.').count() != 3 || jwt.chars().any(char::is_whitespace) {
        bail!(
            "the user assertion {} does not hold one compact JWT (three dot-separated parts)",
            path.display()
        );
    }
    Ok(BearerToken::new(jwt.as_str().to_owned()))
}
