//! Loading a component as an agent, creating instances, running tasks.

use crate::bindings::{Agent, AgentPre};
use crate::egress_hook::{EgressHooks, InstanceEgress};
use crate::engine::{EPOCH_TICK, EpochTicker, RuntimeConfig, build_engine, build_linker};
use crate::error::{RuntimeError, TaskError};
use crate::limits::{LimitExceeded, TaskLimiter};
use crate::task::{Captured, InstanceIdentity, LogRecord, TaskState};
use edgeward_core::config::Limits;
use edgeward_core::digest::ComponentDigest;
use edgeward_core::egress::{Caller, Egress};
use edgeward_core::grant::GrantRules;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::WasiHttpCtx;

/// Table elements a task may grow its tables to. Rust guests use a few
/// hundred; this stops a guest that tries to exhaust host memory via tables.
const MAX_TABLE_ELEMENTS: u64 = 100_000;

/// Extra wall-clock time past the epoch deadline before the host gives up on
/// a task stuck in a host call (the epoch only interrupts running wasm).
const HOST_CALL_GRACE: Duration = Duration::from_millis(250);

/// The edge runtime: one engine and linker, many agents.
pub struct Runtime {
    engine: Engine,
    linker: Linker<TaskState>,
    config: RuntimeConfig,
    /// Compiled and pre-linked components by digest: compiling is the slow
    /// part, and several agents or reloads may share one component.
    compiled: Mutex<HashMap<ComponentDigest, AgentPre<TaskState>>>,
    _ticker: EpochTicker,
}

/// What an agent is allowed to be and do, from the config or registry.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// Registered agent name.
    pub name: String,
    /// Component digests allowed to run as this agent.
    pub allowed_digests: Vec<ComponentDigest>,
    /// The grants it holds (public part only).
    pub grants: Vec<GrantRules>,
    /// Sandbox and egress limits.
    pub limits: Limits,
}

/// A compiled, linked, digest-checked component, ready to instantiate fast.
pub struct LoadedAgent {
    engine: Engine,
    pre: AgentPre<TaskState>,
    spec: Arc<AgentSpec>,
    digest: ComponentDigest,
    max_concurrent_tasks: u32,
}

/// One identity of an agent: runs many tasks, each in a fresh store.
pub struct AgentInstance {
    engine: Engine,
    pre: AgentPre<TaskState>,
    spec: Arc<AgentSpec>,
    identity: Arc<InstanceIdentity>,
    egress: Arc<InstanceEgress>,
    max_concurrent_tasks: u32,
}

/// How a task ended, with everything the agent logged.
#[derive(Debug, Clone)]
pub struct TaskReport {
    /// `Ok(guest result)` if `run` returned; `Err` if the sandbox stopped it.
    pub outcome: Result<Result<String, String>, TaskError>,
    /// `log` records, then stdout lines, then stderr lines.
    pub logs: Vec<LogRecord>,
    /// Log records dropped because the task hit its record limit.
    pub logs_dropped: usize,
}

impl Runtime {
    /// Build the engine (and its epoch ticker) and the linker.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let (engine, ticker) = build_engine(&config)?;
        let linker = build_linker(&engine)?;
        Ok(Runtime {
            engine,
            linker,
            config,
            compiled: Mutex::new(HashMap::new()),
            _ticker: ticker,
        })
    }

    /// Measure, check and compile a component for an agent.
    ///
    /// The digest is checked before compiling, so a component that is not
    /// allowed costs only a hash.
    pub fn load(&self, component: &[u8], spec: AgentSpec) -> Result<LoadedAgent, RuntimeError> {
        let digest = ComponentDigest::of(component);
        if !spec.allowed_digests.contains(&digest) {
            return Err(RuntimeError::DigestNotAllowed {
                digest,
                agent: spec.name.clone(),
            });
        }
        if spec.limits.memory_bytes > self.config.max_memory_bytes && self.config.pooling {
            return Err(RuntimeError::Engine(format!(
                "agent {} needs {} MiB of memory but the runtime's pool slots hold {} MiB",
                spec.name,
                spec.limits.memory_bytes >> 20,
                self.config.max_memory_bytes >> 20
            )));
        }
        let pre = self.compile(component, digest)?;
        Ok(LoadedAgent {
            engine: self.engine.clone(),
            pre,
            spec: Arc::new(spec),
            digest,
            max_concurrent_tasks: self.config.max_concurrent_tasks,
        })
    }
}

impl Runtime {
    fn compile(
        &self,
        component: &[u8],
        digest: ComponentDigest,
    ) -> Result<AgentPre<TaskState>, RuntimeError> {
        if let Some(pre) = self.cached(&digest) {
            return Ok(pre);
        }
        let component = Component::new(&self.engine, component)
            .map_err(|e| RuntimeError::InvalidComponent(format!("{e:#}")))?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| RuntimeError::Link(format!("{e:#}")))?;
        let pre = AgentPre::new(instance_pre).map_err(|e| RuntimeError::Link(format!("{e:#}")))?;
        if let Ok(mut cache) = self.compiled.lock() {
            cache.insert(digest, pre.clone());
        }
        Ok(pre)
    }

    fn cached(&self, digest: &ComponentDigest) -> Option<AgentPre<TaskState>> {
        // A poisoned lock only means another load panicked; compiling again is safe.
        self.compiled.lock().ok()?.get(digest).cloned()
    }
}

impl LoadedAgent {
    /// The component's sha256.
    pub fn digest(&self) -> ComponentDigest {
        self.digest
    }

    /// The agent's spec.
    pub fn spec(&self) -> &AgentSpec {
        &self.spec
    }

    /// Create an instance that sends its egress through `egress`.
    pub fn instance(
        &self,
        instance_id: String,
        user: Option<String>,
        token_expires_at: Option<u64>,
        egress: Arc<dyn Egress>,
    ) -> AgentInstance {
        let identity = Arc::new(InstanceIdentity {
            agent: self.spec.name.clone(),
            instance_id: instance_id.clone(),
            user: user.clone(),
            grants: self
                .spec
                .grants
                .iter()
                .map(|g| g.name.to_string())
                .collect(),
            token_expires_at,
        });
        let egress = Arc::new(InstanceEgress {
            caller: Caller {
                agent: self.spec.name.clone(),
                instance: instance_id,
                user,
            },
            grants: self.spec.grants.clone(),
            egress,
            max_request_bytes: self.spec.limits.max_request_bytes,
        });
        AgentInstance {
            engine: self.engine.clone(),
            pre: self.pre.clone(),
            spec: Arc::clone(&self.spec),
            identity,
            egress,
            max_concurrent_tasks: self.max_concurrent_tasks,
        }
    }
}

impl AgentInstance {
    /// The instance's public identity.
    pub fn identity(&self) -> &InstanceIdentity {
        &self.identity
    }

    /// Run one task in a fresh store. Never panics on guest behaviour: every
    /// way a guest can fail ends up in [`TaskReport::outcome`].
    pub async fn run(&self, task: &str) -> TaskReport {
        let limits = self.spec.limits;
        let captured = Captured::new(limits.max_output_bytes);
        // No preopens, no environment, no arguments, no network: the only way
        // out is wasi:http, which ends in the egress hook.
        let wasi = WasiCtxBuilder::new()
            .stdout(captured.stdout.clone())
            .stderr(captured.stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = TaskState {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            hooks: EgressHooks {
                shared: Arc::clone(&self.egress),
            },
            identity: Arc::clone(&self.identity),
            logs: Vec::new(),
            logs_dropped: 0,
            max_log_records: limits.max_log_records,
            limiter: TaskLimiter {
                memory_bytes: limits.memory_bytes,
                table_elements: MAX_TABLE_ELEMENTS,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let ticks = limits.task_timeout.as_nanos() / EPOCH_TICK.as_nanos();
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX).max(1));
        store.epoch_deadline_trap();

        let pre = self.pre.clone();
        let call = async {
            let agent: Agent = pre
                .instantiate_async(&mut store)
                .await
                .map_err(Stage::Start)?;
            agent.call_run(&mut store, task).await.map_err(Stage::Run)
        };
        let outcome = match tokio::time::timeout(limits.task_timeout + HOST_CALL_GRACE, call).await
        {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(stage)) => Err(self.classify(stage, &captured)),
            Err(_elapsed) => Err(TaskError::Timeout {
                limit: limits.task_timeout,
            }),
        };
        let state = store.into_data();
        let mut logs = state.logs;
        logs.extend(captured.into_records());
        if let Err(e) = &outcome {
            tracing::warn!(agent = %self.identity.agent, instance = %self.identity.instance_id, "task stopped: {e}");
        }
        TaskReport {
            outcome,
            logs,
            logs_dropped: state.logs_dropped,
        }
    }

    /// Name the bound behind a failure, if one was hit.
    fn classify(&self, stage: Stage, captured: &Captured) -> TaskError {
        let limits = self.spec.limits;
        let (err, starting) = match stage {
            Stage::Start(e) => (e, true),
            Stage::Run(e) => (e, false),
        };
        if let Some(limit) = err.downcast_ref::<LimitExceeded>() {
            return TaskError::Limit(*limit);
        }
        if err
            .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
            .is_some()
        {
            return TaskError::Busy {
                limit: self.max_concurrent_tasks,
            };
        }
        if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
            if *trap == wasmtime::Trap::Interrupt {
                return TaskError::Timeout {
                    limit: limits.task_timeout,
                };
            }
            if let Some(stream) = captured.full_stream() {
                return TaskError::Output {
                    stream,
                    limit: limits.max_output_bytes,
                };
            }
            return TaskError::Trap {
                reason: trap.to_string(),
            };
        }
        if starting {
            return TaskError::Instantiate {
                reason: format!("{err:#}"),
            };
        }
        if let Some(stream) = captured.full_stream() {
            return TaskError::Output {
                stream,
                limit: limits.max_output_bytes,
            };
        }
        TaskError::Trap {
            reason: first_line(&format!("{err:#}")),
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_owned()
}

enum Stage {
    Start(wasmtime::Error),
    Run(wasmtime::Error),
}
