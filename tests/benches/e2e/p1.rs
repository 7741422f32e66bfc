//! P1: one proxied call, seen from inside the guest. edgeward (embedded and
//! split) against the status quo (the same guest holding the key, a new
//! connection per request) and the floor (a native client on a kept-alive
//! connection), in interleaved rounds.

use crate::bare::{Bare, Native};
use crate::setup::{self, KEY};
use crate::stats::{Samples, parse_calls};
use edgeward_runtime::AgentInstance;
use edgeward_tests::{BENCH_WASM, Service, Upstream, component, runtime};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    StatusQuo,
    Embedded,
    Split,
    Floor,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::StatusQuo, Mode::Embedded, Mode::Split, Mode::Floor];

    pub fn label(self) -> &'static str {
        match self {
            Mode::StatusQuo => "status quo (guest holds the key, new connection per call)",
            Mode::Embedded => "edgeward embedded",
            Mode::Split => "edgeward split (TLS backend)",
            Mode::Floor => "floor (native client, kept-alive connection)",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Mode::StatusQuo => "status quo",
            Mode::Embedded => "embedded",
            Mode::Split => "split",
            Mode::Floor => "floor",
        }
    }
}

/// Everything P1 (and the breakdown) calls through.
pub struct Targets {
    pub upstream: Upstream,
    pub url: String,
    pub bare: Arc<Bare>,
    pub embedded: Arc<AgentInstance>,
    pub split: Arc<AgentInstance>,
    pub embedded_backend: setup::Embedded,
    pub service: Service,
}

impl Targets {
    pub async fn start() -> anyhow::Result<Targets> {
        let upstream = setup::upstream().await;
        let config = setup::config(&upstream.origin(), &setup::device_key());
        let embedded_backend = setup::Embedded::new(&config)?;
        let embedded = Arc::new(embedded_backend.instance(setup::direct).await?);
        let service = setup::service(&config).await?;
        let split = Arc::new(setup::split_instance(&service, 1, setup::direct).await?);
        let bare = Arc::new(Bare::new(runtime().engine(), component(BENCH_WASM))?);
        let url = format!("{}/v1/items/42", upstream.origin());
        Ok(Targets {
            upstream,
            url,
            bare,
            embedded,
            split,
            embedded_backend,
            service,
        })
    }

    /// `concurrency` tasks of `calls` sequential calls each: every call's
    /// latency, and the wall time of the batch.
    pub async fn batch(
        &self,
        mode: Mode,
        concurrency: usize,
        calls: usize,
    ) -> anyhow::Result<(Vec<u64>, Duration)> {
        let started = Instant::now();
        let mut handles = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            let url = self.url.clone();
            handles.push(match mode {
                Mode::StatusQuo => {
                    let bare = Arc::clone(&self.bare);
                    tokio::spawn(async move {
                        let task = format!("calls {calls} {url} x-api-key:{KEY}");
                        match bare.run(&task).await? {
                            Ok(text) => parse_calls(&text),
                            Err(e) => anyhow::bail!("status-quo task failed: {e}"),
                        }
                    })
                }
                Mode::Embedded | Mode::Split => {
                    let instance = Arc::clone(if mode == Mode::Embedded {
                        &self.embedded
                    } else {
                        &self.split
                    });
                    tokio::spawn(async move {
                        let report = instance.run(&format!("calls {calls} {url}")).await;
                        match report.outcome {
                            Ok(Ok(text)) => parse_calls(&text),
                            other => anyhow::bail!("{mode:?} task failed: {other:?}"),
                        }
                    })
                }
                Mode::Floor => {
                    let authority = self.upstream.addr.to_string();
                    tokio::spawn(async move {
                        let mut native = Native::connect(&authority).await?;
                        // Connected and warm before the clock starts: the
                        // floor is the kept-alive case.
                        native.get("/v1/items/42", ("x-api-key", KEY)).await?;
                        let mut out = Vec::with_capacity(calls);
                        for _ in 0..calls {
                            let t = Instant::now();
                            let status = native.get("/v1/items/42", ("x-api-key", KEY)).await?;
                            out.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                            anyhow::ensure!(status == 200, "floor call answered {status}");
                        }
                        Ok(out)
                    })
                }
            });
        }
        let mut latencies = Vec::with_capacity(concurrency * calls);
        for h in handles {
            latencies.extend(h.await??);
        }
        Ok((latencies, started.elapsed()))
    }
}

/// One concurrency level of P1.
#[derive(Debug, Clone, Default)]
pub struct Level {
    pub latency: BTreeMap<Mode, Samples>,
    /// Calls per second, summed over the rounds.
    pub calls: BTreeMap<Mode, (usize, Duration)>,
}

impl Level {
    pub fn throughput(&self, mode: Mode) -> f64 {
        self.calls
            .get(&mode)
            .map_or(f64::NAN, |(n, d)| *n as f64 / d.as_secs_f64())
    }
}

/// `rounds` interleaved rounds (the order rotates each round, so no mode
/// always runs first or right after another), after one warm-up round.
pub async fn run(
    t: &Targets,
    concurrency: usize,
    calls: usize,
    rounds: usize,
) -> anyhow::Result<Level> {
    for mode in Mode::ALL {
        t.batch(mode, concurrency, calls.min(20)).await?;
    }
    let mut level = Level::default();
    for round in 0..rounds {
        for i in 0..Mode::ALL.len() {
            let mode = Mode::ALL[(round + i) % Mode::ALL.len()];
            let (lat, wall) = t.batch(mode, concurrency, calls).await?;
            let n = lat.len();
            level.latency.entry(mode).or_default().extend(lat);
            let c = level.calls.entry(mode).or_default();
            c.0 += n;
            c.1 += wall;
        }
    }
    Ok(level)
}

/// Per-stage times of `calls` sequential calls in `mode`, with the guest's
/// own per-call latency over the same calls.
pub async fn breakdown(
    t: &Targets,
    mode: Mode,
    calls: usize,
) -> anyhow::Result<(Samples, BTreeMap<&'static str, Samples>)> {
    let (lat, stages) = crate::stages::record(t.batch(mode, 1, calls)).await;
    Ok((Samples(lat?.0), stages))
}
