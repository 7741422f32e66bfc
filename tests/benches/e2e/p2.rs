//! P2: starting a task in an already attested instance (fresh `Store`,
//! instantiate, one `run` of a trivial agent) against bare wasmtime
//! `InstancePre` instantiate + call of the same component in the same
//! engine.

use crate::bare::Bare;
use crate::stats::Samples;
use edgeward_runtime::AgentInstance;
use std::time::Instant;

pub struct TaskStart {
    pub edgeward: Samples,
    pub bare: Samples,
}

pub async fn run(instance: &AgentInstance, bare: &Bare, n: usize) -> anyhow::Result<TaskStart> {
    // Warm both (pool slots, lazy init) before measuring.
    for _ in 0..n.min(50) {
        instance.run("noop").await;
        bare.run("noop")
            .await?
            .map_err(|e| anyhow::anyhow!("bare noop task: {e}"))?;
    }
    let mut out = TaskStart {
        edgeward: Samples::default(),
        bare: Samples::default(),
    };
    for _ in 0..n {
        let t = Instant::now();
        let report = instance.run("noop").await;
        out.edgeward.push(t.elapsed());
        match report.outcome {
            Ok(Ok(s)) if s == "ok" => {}
            other => anyhow::bail!("edgeward noop task: {other:?}"),
        }
        let t = Instant::now();
        let result = bare.run("noop").await?;
        out.bare.push(t.elapsed());
        anyhow::ensure!(result.as_deref() == Ok("ok"), "bare noop task: {result:?}");
    }
    Ok(out)
}
