//! Per-stage timing of the hot path. edgeward opens a span with target
//! `edgeward::stage` around each stage (interception, proof signing, token
//! and proof verification, policy, scanning, injection, the upstream round
//! trip, the audit write); this layer records each span's life time while
//! recording is switched on, and costs nothing measurable while it is off.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tracing::Subscriber;
use tracing::span::{Attributes, Id};
use tracing::subscriber::Interest;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::dynamic_filter_fn;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::stats::Samples;

const STAGE_TARGET: &str = "edgeward::stage";
static RECORDING: AtomicBool = AtomicBool::new(false);
static TIMES: Mutex<BTreeMap<&'static str, Samples>> = Mutex::new(BTreeMap::new());

struct Opened(Instant);

struct StageLayer;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for StageLayer {
    fn on_new_span(&self, _attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Opened(Instant::now()));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(opened) = span.extensions().get::<Opened>().map(|o| o.0) else {
            return;
        };
        if let Ok(mut times) = TIMES.lock() {
            times
                .entry(span.metadata().name())
                .or_default()
                .push(opened.elapsed());
        }
    }
}

/// Install the global subscriber: stage spans (while recording) and
/// errors on stderr. Must run before anything else installs one.
pub fn install() {
    // Stage callsites stay "sometimes" so the switch is read per span;
    // every other callsite is never of interest to this layer.
    let stages = StageLayer.with_filter(
        dynamic_filter_fn(|meta, _| {
            meta.target() == STAGE_TARGET && RECORDING.load(Ordering::Relaxed)
        })
        .with_callsite_filter(|meta| {
            if meta.target() == STAGE_TARGET {
                Interest::sometimes()
            } else {
                Interest::never()
            }
        }),
    );
    let errors = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(tracing_subscriber::filter::LevelFilter::ERROR);
    tracing_subscriber::registry()
        .with(stages)
        .with(errors)
        .init();
}

/// Record stage times while `f` runs; returns them by stage name.
pub async fn record<T>(f: impl Future<Output = T>) -> (T, BTreeMap<&'static str, Samples>) {
    start();
    let out = f.await;
    (out, stop())
}

/// As [`record`], for synchronous work.
pub fn record_sync<T>(f: impl FnOnce() -> T) -> (T, BTreeMap<&'static str, Samples>) {
    start();
    let out = f();
    (out, stop())
}

fn start() {
    if let Ok(mut t) = TIMES.lock() {
        t.clear();
    }
    RECORDING.store(true, Ordering::Relaxed);
}

fn stop() -> BTreeMap<&'static str, Samples> {
    RECORDING.store(false, Ordering::Relaxed);
    TIMES
        .lock()
        .map(|mut t| std::mem::take(&mut *t))
        .unwrap_or_default()
}
