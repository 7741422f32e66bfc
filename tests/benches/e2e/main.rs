//! edgeward's end-to-end benchmarks (P1–P5 of issue 6), each against a
//! baseline measured in the same run.
//!
//! - `cargo bench -p edgeward-tests --bench e2e [-- --out DIR]`: the full
//!   run (release profile); writes `results.md` and `p1-latency.svg` to DIR
//!   (relative to the workspace root; default `target/edgeward-bench`).
//! - `... -- --profile embedded|split|status-quo`: only that path's P1 calls
//!   for about 10 s, to run under `perf record`.
//! - `cargo test --benches`: a smoke run with tiny iteration counts, so the
//!   suite cannot rot; it checks the scenarios work, never their timings.

mod bare;
mod p1;
mod p2;
mod p3;
mod p4;
mod p5;
mod report;
mod setup;
mod stages;
mod stats;

use anyhow::Context as _;
use std::path::PathBuf;

/// Iteration counts.
struct Plan {
    full: bool,
    /// (calls per task, rounds) at concurrency 1 and 32.
    c1: (usize, usize),
    c32: (usize, usize),
    breakdown_calls: usize,
    p2_tasks: usize,
    p3_exchanges: usize,
    p4_trials: usize,
    p5_instances: usize,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            full: true,
            c1: (250, 16),
            c32: (40, 8),
            breakdown_calls: 2000,
            p2_tasks: 3000,
            p3_exchanges: 2000,
            p4_trials: 20,
            p5_instances: 100,
        }
    }

    fn smoke() -> Plan {
        Plan {
            full: false,
            c1: (5, 2),
            c32: (2, 1),
            breakdown_calls: 5,
            p2_tasks: 5,
            p3_exchanges: 5,
            p4_trials: 1,
            p5_instances: 3,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let plan = if args.iter().any(|a| a == "--bench") {
        Plan::full()
    } else {
        Plan::smoke()
    };
    // cargo runs benchmarks in the package directory: a relative --out is
    // taken from the workspace root, where the README's commands run.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = match args.iter().position(|a| a == "--out") {
        Some(i) => root.join(args.get(i + 1).context("--out needs a directory")?),
        None => root.join("target").join(if plan.full {
            "edgeward-bench"
        } else {
            "edgeward-bench-smoke"
        }),
    };
    stages::install();
    // `--profile MODE` (status-quo | embedded | split): only that path's
    // P1 calls for about 10 s, for `perf record` / callgrind.
    if let Some(i) = args.iter().position(|a| a == "--profile") {
        let mode = match args.get(i + 1).map(String::as_str) {
            Some("status-quo") => p1::Mode::StatusQuo,
            Some("embedded") => p1::Mode::Embedded,
            Some("split") => p1::Mode::Split,
            other => anyhow::bail!("--profile takes status-quo, embedded or split, not {other:?}"),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return rt.block_on(profile(mode));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let results = rt.block_on(run(&plan))?;
    std::fs::create_dir_all(&out)?;
    let md = report::markdown(&results);
    std::fs::write(out.join("results.md"), &md)?;
    std::fs::write(out.join("p1-latency.svg"), report::svg(&results))?;
    println!("{md}");
    println!("written to {}", out.display());
    Ok(())
}

async fn run(plan: &Plan) -> anyhow::Result<report::Results> {
    let progress = |what: &str| eprintln!("[bench] {what}");
    let targets = p1::Targets::start().await?;

    progress("P1 proxied call, concurrency 1");
    let c1 = p1::run(&targets, 1, plan.c1.0, plan.c1.1).await?;
    progress("P1 proxied call, concurrency 32");
    let c32 = p1::run(&targets, 32, plan.c32.0, plan.c32.1).await?;
    for (level, n) in [
        (&c1, plan.c1.0 * plan.c1.1),
        (&c32, 32 * plan.c32.0 * plan.c32.1),
    ] {
        for (mode, samples) in &level.latency {
            anyhow::ensure!(
                samples.len() == n,
                "{mode:?}: {} of {n} calls",
                samples.len()
            );
        }
    }

    progress("P1 breakdown per stage");
    let mut breakdown = Vec::new();
    for mode in [p1::Mode::Embedded, p1::Mode::Split] {
        let (total, stages) = p1::breakdown(&targets, mode, plan.breakdown_calls).await?;
        anyhow::ensure!(
            stages.get("upstream").map(stats::Samples::len) == Some(plan.breakdown_calls),
            "{mode:?}: the stage spans did not record every call"
        );
        breakdown.push((mode, total, stages));
    }

    progress("P2 task start");
    let p2 = p2::run(&targets.embedded, &targets.bare, plan.p2_tasks).await?;

    progress("P3 token exchange");
    let digest = edgeward_tests::digest(edgeward_tests::BENCH_WASM);
    let config = setup::config(&targets.upstream.origin(), &setup::device_key());
    let clock = edgeward_tests::TestClock::at(p3::NOW);
    let in_memory = setup::Embedded::with_clock(&config, clock.clone())?;
    let in_memory = p3::run(
        in_memory.backend.tokens(),
        &clock,
        edgeward_core::config::EMBEDDED_DEVICE,
        in_memory.device.as_ref(),
        digest,
        plan.p3_exchanges,
        31,
    )?;
    let clock = edgeward_tests::TestClock::at(p3::NOW);
    let on_disk = setup::service_with_clock(&config, clock.clone()).await?;
    let on_disk = p3::run(
        &on_disk.tokens,
        &clock,
        "dev-bench",
        &setup::device_key(),
        digest,
        plan.p3_exchanges,
        32,
    )?;
    let p3 = vec![
        ("in memory (embedded)", in_memory),
        ("SQLite file, fsync per commit (split)", on_disk),
    ];

    progress("P4 revocation");
    let p4_embedded = p4::embedded(&targets.embedded_backend, &targets.url, plan.p4_trials).await?;
    let p4_split = p4::split(&targets.service, &targets.url, plan.p4_trials).await?;
    let p4 = vec![
        ("embedded", p4_embedded, 10.0),
        ("split (TLS stop channel)", p4_split, 100.0),
    ];

    progress("P5 memory");
    let memory_backend = setup::Embedded::new(&setup::config(
        &targets.upstream.origin(),
        &setup::device_key(),
    ))?;
    let p5 = p5::run(&memory_backend, plan.p5_instances).await?;

    Ok(report::Results {
        full: plan.full,
        c1,
        c32,
        breakdown,
        p2,
        p3,
        p4,
        p5,
    })
}

async fn profile(mode: p1::Mode) -> anyhow::Result<()> {
    let targets = p1::Targets::start().await?;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut calls = 0;
    while std::time::Instant::now() < until {
        calls += targets.batch(mode, 1, 500).await?.0.len();
    }
    eprintln!("[bench] profiled {calls} calls ({mode:?})");
    Ok(())
}
