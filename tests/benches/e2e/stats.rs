//! Latency samples and the few statistics the report needs.

use std::time::Duration;

/// Latencies in nanoseconds.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<u64>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn extend(&mut self, ns: impl IntoIterator<Item = u64>) {
        self.0.extend(ns);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    fn sorted(&self) -> Vec<u64> {
        let mut v = self.0.clone();
        v.sort_unstable();
        v
    }

    /// The `q` quantile (nearest rank), microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1] as f64 / 1000.0
    }

    pub fn p50(&self) -> f64 {
        self.quantile_us(0.50)
    }

    pub fn p99(&self) -> f64 {
        self.quantile_us(0.99)
    }

    pub fn mean_us(&self) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.iter().map(|&n| n as f64).sum::<f64>() / self.0.len() as f64 / 1000.0
    }

    /// Points of the empirical CDF, thinned to at most `n`: (µs, fraction).
    pub fn cdf(&self, n: usize) -> Vec<(f64, f64)> {
        let v = self.sorted();
        if v.is_empty() {
            return Vec::new();
        }
        let step = (v.len() / n.max(1)).max(1);
        let mut out: Vec<(f64, f64)> = v
            .iter()
            .enumerate()
            .step_by(step)
            .map(|(i, &ns)| (ns as f64 / 1000.0, (i + 1) as f64 / v.len() as f64))
            .collect();
        if let Some(&last) = v.last() {
            out.push((last as f64 / 1000.0, 1.0));
        }
        out
    }
}

/// Parse the benchmark agent's answer: nanoseconds per call, comma-separated.
pub fn parse_calls(text: &str) -> anyhow::Result<Vec<u64>> {
    text.split(',')
        .map(|n| {
            n.parse::<u64>()
                .map_err(|_| anyhow::anyhow!("the bench agent answered {text:?}"))
        })
        .collect()
}
