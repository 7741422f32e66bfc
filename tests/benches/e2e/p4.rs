//! P4: revocation. A running instance calls in a loop; the instance is
//! revoked. Counted: calls that started after `revoke` returned and were
//! let through (goal 0), and the time from `revoke` returning to the
//! running task having ended.

use crate::setup::{self, Recording};
use crate::stats::Samples;
use edgeward_backend::TokenService;
use edgeward_backend::revocation::RevocationKind;
use edgeward_runtime::{AgentInstance, TaskError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Revocation {
    /// Calls let through after the revoke returned, over all trials.
    pub accepted_after: usize,
    /// Calls let through before it (the instance really was busy).
    pub accepted_before: usize,
    /// Revoke returned -> running task ended.
    pub stop: Samples,
    /// How long `revoke` itself took (the store write).
    pub revoke_call: Samples,
}

pub type Calls = Arc<Mutex<Vec<(Instant, bool)>>>;

/// One trial: `instance` (whose calls are recorded in `calls`) is running
/// a long loop of calls to `url` when it is revoked through `tokens`.
pub async fn trial(
    out: &mut Revocation,
    tokens: &TokenService,
    instance: AgentInstance,
    calls: Calls,
    url: &str,
) -> anyhow::Result<()> {
    let instance = Arc::new(instance);
    let task = {
        let instance = Arc::clone(&instance);
        let task = format!("until-stopped {url}");
        tokio::spawn(async move {
            let report = instance.run(&task).await;
            (Instant::now(), report)
        })
    };
    // Busy: wait until it has made a few calls.
    let deadline = Instant::now() + Duration::from_secs(10);
    while calls.lock().map(|c| c.len()).unwrap_or(0) < 20 {
        anyhow::ensure!(Instant::now() < deadline, "the instance never got going");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let kind = RevocationKind::Instance {
        id: instance.identity().instance_id.clone(),
    };
    let t = Instant::now();
    tokens.revoke(&kind, "bench", "revocation benchmark")?;
    let returned = Instant::now();
    out.revoke_call.push(returned - t);
    let (ended, report) = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .map_err(|_| anyhow::anyhow!("the revoked instance did not stop within 10 s"))??;
    match report.outcome {
        Err(TaskError::Stopped { .. }) => {}
        other => anyhow::bail!("the revoked task ended with {other:?}"),
    }
    out.stop.push(ended.saturating_duration_since(returned));
    let calls = calls.lock().map_err(|_| anyhow::anyhow!("calls lock"))?;
    for (started, through) in calls.iter() {
        if *through {
            if *started > returned {
                out.accepted_after += 1;
            } else {
                out.accepted_before += 1;
            }
        }
    }
    Ok(())
}

/// `trials` revocations in embedded mode, each of a fresh instance.
pub async fn embedded(
    backend: &setup::Embedded,
    url: &str,
    trials: usize,
) -> anyhow::Result<Revocation> {
    let mut out = Revocation::default();
    for _ in 0..trials {
        let calls: Calls = Arc::default();
        let instance = backend
            .instance(Recording::wrap(Arc::clone(&calls)))
            .await?;
        trial(&mut out, backend.backend.tokens(), instance, calls, url).await?;
    }
    Ok(out)
}

/// `trials` revocations in split mode, through the TLS stop channel.
pub async fn split(
    svc: &edgeward_tests::Service,
    url: &str,
    trials: usize,
) -> anyhow::Result<Revocation> {
    let mut out = Revocation::default();
    for i in 0..trials {
        let calls: Calls = Arc::default();
        let instance =
            setup::split_instance(svc, 1000 + i as u64, Recording::wrap(Arc::clone(&calls)))
                .await?;
        trial(&mut out, &svc.tokens, instance, calls, url).await?;
    }
    Ok(out)
}
