//! The results as a Markdown report and an SVG plot of P1's latency
//! distributions. Every figure that has a baseline is shown as a ratio to
//! it; the goals are checked and a missed one is said by how much.

use crate::p1::{Level, Mode};
use crate::p2::TaskStart;
use crate::p3::Exchange;
use crate::p4::Revocation;
use crate::p5::Memory;
use crate::stats::Samples;
use std::collections::BTreeMap;
use std::fmt::Write as _;

pub struct Results {
    pub full: bool,
    pub c1: Level,
    pub c32: Level,
    pub breakdown: Vec<(Mode, Samples, BTreeMap<&'static str, Samples>)>,
    pub p2: TaskStart,
    pub p3: Vec<(&'static str, Exchange)>,
    pub p4: Vec<(&'static str, Revocation, f64)>,
    pub p5: Memory,
}

/// Stages in the order a call meets them, with what each covers.
const STAGES: [(&str, &str); 11] = [
    (
        "intercept",
        "interception: routing, body buffering (runtime)",
    ),
    ("proof.sign", "DPoP proof signing (runtime)"),
    ("token.verify", "token verification + registry read"),
    ("proof.verify", "DPoP proof verification"),
    ("policy", "policy: scope, grant, method/path, headers"),
    ("scan.outbound", "outbound secret scan"),
    ("inject", "credential injection"),
    ("policy.decide", "policy envelope: lookup, decision"),
    ("upstream", "upstream round trip (pooled)"),
    ("scan.response", "response decode, redaction, scan"),
    ("audit", "audit write"),
];

fn goal(ok: bool, missed: impl FnOnce() -> String) -> String {
    if ok {
        "met".to_owned()
    } else {
        format!("**missed**: {}", missed())
    }
}

pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# edgeward benchmark results\n");
    let _ = writeln!(s, "{}\n", machine());
    if !r.full {
        let _ = writeln!(
            s,
            "_Smoke run (tiny iteration counts, test profile): the numbers only show the suite works._\n"
        );
    }
    for (name, level, conc) in [("concurrency 1", &r.c1, 1), ("concurrency 32", &r.c32, 32)] {
        let _ = writeln!(s, "## P1 proxied call, {name}\n");
        let _ = writeln!(
            s,
            "Latency is measured inside the guest around each call. Ratios are against the status quo (same guest, same engine, the key in the guest, a new connection per call).\n"
        );
        let _ = writeln!(
            s,
            "| path | calls | p50 µs | p99 µs | calls/s | p50 × status quo | p99 × status quo | calls/s × status quo |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
        let base = level
            .latency
            .get(&Mode::StatusQuo)
            .cloned()
            .unwrap_or_default();
        let base_tp = level.throughput(Mode::StatusQuo);
        for mode in Mode::ALL {
            let Some(l) = level.latency.get(&mode) else {
                continue;
            };
            let tp = level.throughput(mode);
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} |",
                mode.label(),
                l.len(),
                l.p50(),
                l.p99(),
                tp,
                l.p50() / base.p50(),
                l.p99() / base.p99(),
                tp / base_tp
            );
        }
        let ratio = |m: Mode| {
            level
                .latency
                .get(&m)
                .map_or(f64::NAN, |l| l.p50() / base.p50())
        };
        let (e, sp) = (ratio(Mode::Embedded), ratio(Mode::Split));
        let _ = writeln!(
            s,
            "\nGoals at p50 (c={conc}): embedded ≤ 1.0× status quo: {:.2}× — {}; split ≤ 1.5× status quo: {:.2}× — {}.\n",
            e,
            goal(e <= 1.0, || format!("{:.0}% over", (e - 1.0) * 100.0)),
            sp,
            goal(sp <= 1.5, || format!(
                "{:.0}% over the 1.5× goal",
                (sp / 1.5 - 1.0) * 100.0
            )),
        );
    }

    let _ = writeln!(
        s,
        "## P1 breakdown per stage (concurrency 1, median µs per call)\n"
    );
    let _ = writeln!(
        s,
        "Each stage is timed in the real path by a `tracing` span (target `edgeward::stage`) during a separate run; the rest is the guest ↔ host boundary, wasi:http resources, and in split mode the TLS hop and the backend's HTTP server.\n"
    );
    let _ = write!(s, "| stage |");
    for (mode, _, _) in &r.breakdown {
        let _ = write!(s, " {} |", mode.short());
    }
    let _ = writeln!(s);
    let _ = write!(s, "|---|");
    for _ in &r.breakdown {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s);
    for (stage, what) in STAGES {
        let _ = write!(s, "| {what} |");
        for (_, _, stages) in &r.breakdown {
            match stages.get(stage) {
                Some(v) => {
                    let _ = write!(s, " {:.1} |", v.p50());
                }
                None => {
                    let _ = write!(s, " – |");
                }
            }
        }
        let _ = writeln!(s);
    }
    let _ = write!(s, "| rest (boundary, transport) |");
    for (_, total, stages) in &r.breakdown {
        let sum: f64 = STAGES
            .iter()
            .filter_map(|(k, _)| stages.get(k).map(Samples::p50))
            .sum();
        let _ = write!(s, " {:.1} |", total.p50() - sum);
    }
    let _ = writeln!(s);
    let _ = write!(s, "| **guest-observed call** |");
    for (_, total, _) in &r.breakdown {
        let _ = write!(s, " **{:.1}** |", total.p50());
    }
    let _ = writeln!(s, "\n");

    let p2 = &r.p2;
    let ratio = p2.edgeward.p50() / p2.bare.p50();
    let _ = writeln!(s, "## P2 task start\n");
    let _ = writeln!(
        s,
        "A fresh `Store` and one `run` of a trivial agent in an attested instance, against bare wasmtime `InstancePre` instantiate + call of the same component in the same engine.\n"
    );
    let _ = writeln!(s, "| path | tasks | p50 µs | p99 µs | p50 × bare |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| bare wasmtime | {} | {:.1} | {:.1} | 1.00 |",
        p2.bare.len(),
        p2.bare.p50(),
        p2.bare.p99()
    );
    let _ = writeln!(
        s,
        "| edgeward | {} | {:.1} | {:.1} | {:.2} |",
        p2.edgeward.len(),
        p2.edgeward.p50(),
        p2.edgeward.p99(),
        ratio
    );
    let _ = writeln!(
        s,
        "\nGoal ≤ 1.3×: {:.2}× — {}.\n",
        ratio,
        goal(ratio <= 1.3, || format!(
            "{:.0}% over the goal",
            (ratio / 1.3 - 1.0) * 100.0
        ))
    );

    let _ = writeln!(s, "## P3 token exchange\n");
    let _ = writeln!(
        s,
        "Challenge + exchange (attestation parse and verify, registry reads, mint, audit record), one at a time, against the pure crypto of the same work (device-signature verify + token sign) in the same run.\n"
    );
    let _ = writeln!(
        s,
        "| registry | exchanges | exchanges/s | crypto bound/s | share of bound | goal ≥ 50% |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---|");
    for (name, x) in &r.p3 {
        let rate = 1e6 / x.exchange.mean_us();
        let bound = 1e6 / x.crypto.mean_us();
        let share = rate / bound;
        let _ = writeln!(
            s,
            "| {name} | {} | {:.0} | {:.0} | {:.1}% | {} |",
            x.exchange.len(),
            rate,
            bound,
            share * 100.0,
            goal(share >= 0.5, || format!(
                "{:.1} points short",
                (0.5 - share) * 100.0
            ))
        );
    }

    let _ = writeln!(s, "\nWhere an exchange's time goes (median µs):\n");
    let _ = writeln!(
        s,
        "| registry | verify attestation | authorize (nonce, registry, limit) | mint | record token | audit |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for (name, x) in &r.p3 {
        let _ = write!(s, "| {name} |");
        for stage in [
            "exchange.verify",
            "exchange.authorize",
            "exchange.mint",
            "exchange.record",
            "exchange.audit",
        ] {
            let _ = write!(
                s,
                " {:.1} |",
                x.stages.get(stage).map_or(f64::NAN, Samples::p50)
            );
        }
        let _ = writeln!(s);
    }

    let _ = writeln!(s, "\n## P4 revocation\n");
    let _ = writeln!(
        s,
        "An instance calling in a loop is revoked. Accepted after = calls that started after `revoke` returned and were let through. Stop = `revoke` returned → the running task ended.\n"
    );
    let _ = writeln!(
        s,
        "| mode | trials | accepted before | accepted after (goal 0) | revoke call p50 µs | stop p50 ms | stop max ms | goal |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---|");
    for (name, x, goal_ms) in &r.p4 {
        let max = x.stop.quantile_us(1.0) / 1000.0;
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {:.0} | {:.2} | {:.2} | < {goal_ms} ms: {} |",
            x.stop.len(),
            x.accepted_before,
            x.accepted_after,
            x.revoke_call.p50(),
            x.stop.p50() / 1000.0,
            max,
            goal(max < *goal_ms && x.accepted_after == 0, || format!(
                "max {max:.1} ms, {} accepted after",
                x.accepted_after
            ))
        );
    }

    let m = &r.p5;
    let _ = writeln!(s, "\n## P5 memory\n");
    let _ = writeln!(
        s,
        "Resident memory of the process before and after attesting {} more idle instances (embedded mode): {:.1} MiB → {:.1} MiB, **{:.0} KiB per idle instance**.\n",
        m.instances,
        m.before as f64 / 1048576.0,
        m.after as f64 / 1048576.0,
        m.per_instance_kib()
    );
    s
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let profile = if cfg!(debug_assertions) {
        "test profile (edgeward unoptimised, dependencies at opt-level 2)"
    } else {
        "release profile"
    };
    format!(
        "Machine: {cpu}, {cores} cores; {profile}; tokio with {cores} worker threads; upstream, backend and runtime in one process on 127.0.0.1."
    )
}

/// P1 latency distributions: one panel per concurrency, the empirical CDF of
/// each path on a log time axis.
pub fn svg(r: &Results) -> String {
    const W: f64 = 960.0;
    const H: f64 = 420.0;
    let colors = [
        (Mode::StatusQuo, "#d62728"),
        (Mode::Embedded, "#1f77b4"),
        (Mode::Split, "#2ca02c"),
        (Mode::Floor, "#7f7f7f"),
    ];
    let mut all = Vec::new();
    for level in [&r.c1, &r.c32] {
        for l in level.latency.values() {
            all.extend(l.0.iter().map(|&n| n as f64 / 1000.0));
        }
    }
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).max(1.0);
    let hi = all.iter().copied().fold(0.0, f64::max).max(lo * 10.0);
    let (llo, lhi) = (lo.log10().floor(), hi.log10().ceil());
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="15">P1: latency of one proxied call, seen from inside the guest (CDF)</text>"#,
        W / 2.0
    );
    for (panel, (title, level)) in [("concurrency 1", &r.c1), ("concurrency 32", &r.c32)]
        .into_iter()
        .enumerate()
    {
        let (x0, y0, pw, ph) = (60.0 + panel as f64 * 460.0, 50.0, 400.0, 300.0);
        let x = |us: f64| x0 + (us.max(1e-3).log10() - llo) / (lhi - llo) * pw;
        let y = |f: f64| y0 + ph - f * ph;
        let _ = writeln!(
            s,
            r##"<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{title}</text>"#,
            x0 + pw / 2.0,
            y0 - 8.0
        );
        let mut decade = llo;
        while decade <= lhi {
            let us = 10f64.powf(decade);
            let gx = x(us);
            let _ = writeln!(
                s,
                r##"<line x1="{gx:.1}" y1="{y0}" x2="{gx:.1}" y2="{}" stroke="#ddd"/><text x="{gx:.1}" y="{}" text-anchor="middle">{}</text>"##,
                y0 + ph,
                y0 + ph + 16.0,
                label_us(us)
            );
            decade += 1.0;
        }
        for f in [0.0, 0.5, 0.99, 1.0] {
            let gy = y(f);
            let _ = writeln!(
                s,
                r##"<line x1="{x0}" y1="{gy:.1}" x2="{}" y2="{gy:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{f}</text>"##,
                x0 + pw,
                x0 - 4.0,
                gy + 4.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">latency per call (log scale)</text>"#,
            x0 + pw / 2.0,
            y0 + ph + 34.0
        );
        for (mode, color) in colors {
            let Some(l) = level.latency.get(&mode) else {
                continue;
            };
            let points: Vec<String> = l
                .cdf(400)
                .into_iter()
                .map(|(us, f)| format!("{:.1},{:.1}", x(us), y(f)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
        }
    }
    for (i, (mode, color)) in colors.into_iter().enumerate() {
        let lx = 60.0 + (i % 2) as f64 * 460.0;
        let ly = H - 28.0 + (i / 2) as f64 * 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            mode.label()
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}

fn label_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{} ms", us / 1000.0)
    } else {
        format!("{us} µs")
    }
}
