//! The example edgeward agent: fetch the URL given as the task.
//!
//! It shows the whole SDK surface a typical agent needs: identity, logging,
//! an HTTP request through a grant, and telling an upstream's own error apart
//! from a refusal by edgeward. It holds no credential and never asks for one:
//! edgeward attaches it outside the sandbox.

use edgeward_sdk::http::{self, Error};
use edgeward_sdk::{Agent, export_agent, identity, log};

struct Hello;

impl Agent for Hello {
    fn run(url: String) -> Result<String, String> {
        log::info(&format!(
            "agent {} (instance {}) with grants [{}] fetching {url}",
            identity::agent_name(),
            identity::instance_id(),
            identity::grants().join(", "),
        ));

        match http::get(url) {
            Ok(response) if response.is_success() => Ok(response.text().into_owned()),
            Ok(response) => Err(format!(
                "upstream answered {}: {}",
                response.status,
                response.text()
            )),
            Err(Error::Refused(problem)) => Err(format!(
                "refused ({}): {}",
                problem.class,
                problem.detail.as_deref().unwrap_or(&problem.title)
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

export_agent!(Hello);
