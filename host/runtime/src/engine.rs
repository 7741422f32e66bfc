//! The wasmtime `Engine` and `Linker`, built once per runtime.

use crate::bindings;
use crate::error::RuntimeError;
use crate::task::TaskState;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. Task deadlines are counted in these ticks,
/// so this is the granularity of the time limit.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Engine-wide settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Use the pooling allocator: instantiation in microseconds, at the cost
    /// of reserving virtual memory for every slot up front. Turn it off on
    /// small devices.
    pub pooling: bool,
    /// Most tasks (stores) alive at once; sizes the pool.
    pub max_concurrent_tasks: u32,
    /// Upper bound of any agent's memory limit (sizes pool slots).
    pub max_memory_bytes: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let settings = edgeward_core::config::RuntimeSettings::default();
        RuntimeConfig {
            pooling: settings.pooling,
            max_concurrent_tasks: settings.max_concurrent_tasks,
            max_memory_bytes: edgeward_core::config::Limits::default().memory_bytes,
        }
    }
}

/// Advances the engine's epoch on a background thread; stops on drop.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("edgeward-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .ok();
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub(crate) fn build_engine(cfg: &RuntimeConfig) -> Result<(Engine, EpochTicker), RuntimeError> {
    let mut config = Config::new();
    // Epoch interruption bounds guest time at a fraction of fuel's cost.
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    if cfg.pooling {
        let n = cfg.max_concurrent_tasks;
        let mut pool = PoolingAllocationConfig::default();
        // A Rust std component has a few core instances, one or two memories
        // and tables: size the pool for that with room to spare.
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(16))
            .total_memories(n.saturating_mul(4))
            .total_tables(n.saturating_mul(16))
            .total_stacks(n)
            .max_memory_size(usize::try_from(cfg.max_memory_bytes).unwrap_or(usize::MAX));
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    let engine = Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
    let ticker = EpochTicker::start(engine.clone());
    Ok((engine, ticker))
}

pub(crate) fn build_linker(engine: &Engine) -> Result<Linker<TaskState>, RuntimeError> {
    let mut linker = Linker::<TaskState>::new(engine);
    let link = |e: wasmtime::Error| RuntimeError::Engine(format!("{e:#}"));
    // Full WASI p2 is linked because a Rust std guest imports wasi:cli, io,
    // clocks, random, filesystem and sockets even when it never uses them;
    // the context grants none of them any authority (see `task_wasi_ctx`).
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(link)?;
    bindings::identity::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |s| s)
        .map_err(link)?;
    bindings::log::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |s| s)
        .map_err(link)?;
    // edgeward:agent@0.2.0 adds `delegation`; 0.1.0 components never import it.
    bindings::delegation::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |s| s)
        .map_err(link)?;
    // edgeward:agent@0.3.0 adds `approval`.
    bindings::approval::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |s| s)
        .map_err(link)?;
    Ok(linker)
}
