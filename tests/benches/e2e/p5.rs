//! P5: resident memory per idle attested instance, with 100 of them.

use crate::setup;

pub struct Memory {
    pub instances: usize,
    pub before: u64,
    pub after: u64,
}

impl Memory {
    pub fn per_instance_kib(&self) -> f64 {
        self.after.saturating_sub(self.before) as f64 / self.instances as f64 / 1024.0
    }
}

/// Resident set size of this process, bytes (Linux).
pub fn rss() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("/proc/self/statm has no resident field"))?
        .parse()?;
    Ok(pages * 4096)
}

pub async fn run(backend: &setup::Embedded, n: usize) -> anyhow::Result<Memory> {
    // One instance first, so one-time costs (the compiled component, lazy
    // statics, the first registry pages) are not charged to the hundred.
    let warm = backend.instance(setup::direct).await?;
    let before = rss()?;
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(backend.instance(setup::direct).await?);
    }
    let after = rss()?;
    drop(held);
    drop(warm);
    Ok(Memory {
        instances: n,
        before,
        after,
    })
}
