//! Loading a component as an agent, creating instances, running tasks.

use crate::bindings::{Agent, AgentPre};
use crate::credentials::{DeviceIdentity, InstanceToken};
use crate::delegation::{ChildRights, DelegationError, Delegator, TaskDelegation, narrowed_chain};
use crate::egress_hook::{EgressHooks, InstanceEgress};
use crate::engine::{EpochTicker, RuntimeConfig, build_engine, build_linker};
use crate::error::{RuntimeError, TaskError};
use crate::limits::{LimitExceeded, TaskLimiter};
use crate::stop::{StopSignal, spawn_watcher};
use crate::task::{Captured, InstanceIdentity, LogRecord, TaskState};
use edgeward_core::clock::Clock;
use edgeward_core::config::Limits;
use edgeward_core::digest::ComponentDigest;
use edgeward_core::egress::{
    AgentProfile, BearerToken, Egress, ExchangeFailure, StopChannel, Subject, TokenExchange,
};
use edgeward_core::entropy::Entropy;
use edgeward_core::grant::GrantName;
use edgeward_core::keys::Ed25519Signer;
use edgeward_core::redact::Redactor;
use edgeward_core::scan::{Action, Scanner, ScannerConfig};
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
    /// Shared by every agent and instance made from this runtime: the epoch
    /// keeps advancing (and deadlines keep firing) while any of them lives.
    ticker: Arc<EpochTicker>,
}

/// Which agent a component is loaded as. What the agent may do (grants,
/// limits) comes from the backend with each instance's token.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// Registered agent name.
    pub name: String,
    /// Component digests this device accepts for the agent. The backend
    /// checks the attested digest again; this list only saves a round trip
    /// (and compiling) for a component that would be refused anyway.
    pub allowed_digests: Vec<ComponentDigest>,
}

/// A compiled, linked, digest-checked component, ready to instantiate fast.
pub struct LoadedAgent {
    engine: Engine,
    pre: AgentPre<TaskState>,
    spec: Arc<AgentSpec>,
    digest: ComponentDigest,
    max_concurrent_tasks: u32,
    pool_memory_bytes: Option<u64>,
    ticker: Arc<EpochTicker>,
}

/// One identity of an agent: runs many tasks, each in a fresh store.
pub struct AgentInstance {
    engine: Engine,
    pre: AgentPre<TaskState>,
    limits: Limits,
    identity: Arc<InstanceIdentity>,
    egress: Arc<InstanceEgress>,
    max_concurrent_tasks: u32,
    _ticker: Arc<EpochTicker>,
    stop: Arc<StopSignal>,
    /// See [`AgentInstance::output_scanner`].
    output_scanner: Mutex<Option<OutputScanner>>,
    /// The sub-agents it may start (see [`AgentInstance::with_sub_agents`]).
    delegator: Option<Arc<Delegator>>,
    /// Where its guests wait for approvals (see
    /// [`AgentInstance::with_approvals`]).
    approvals: Option<Arc<dyn edgeward_core::egress::ApprovalChannel>>,
}

/// The output scanner and the token it was built for.
struct OutputScanner {
    token: BearerToken,
    scanner: Arc<Scanner>,
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
            ticker: Arc::new(ticker),
        })
    }

    /// The engine every agent of this runtime runs in. Embedders that run
    /// other components beside edgeward's (and the benchmarks, which compare
    /// against bare wasmtime) share it rather than build a second one.
    pub fn engine(&self) -> &Engine {
        &self.engine
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
        let pre = self.compile(component, digest)?;
        Ok(LoadedAgent {
            engine: self.engine.clone(),
            pre,
            spec: Arc::new(spec),
            digest,
            max_concurrent_tasks: self.config.max_concurrent_tasks,
            pool_memory_bytes: self.config.pooling.then_some(self.config.max_memory_bytes),
            ticker: Arc::clone(&self.ticker),
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

    /// Attest a new instance: a fresh instance key pair, a device-signed
    /// attestation exchanged for the instance's first token. The instance id
    /// is the one the backend assigns.
    pub async fn attest(
        &self,
        options: AttestOptions<'_>,
    ) -> Result<AgentInstance, ExchangeFailure> {
        let instance_key = Ed25519Signer::generate(options.entropy)
            .map_err(|e| ExchangeFailure::Local(format!("cannot make the instance key: {e}")))?;
        let subject = options
            .user_assertion
            .clone()
            .map_or(Subject::Instance, Subject::User);
        self.attest_as(options, instance_key, subject).await
    }

    /// Attest an instance of this (sub-)agent as a delegated child with a
    /// standalone token: `chain` is a parent's token narrowed for
    /// `child_key` (from [`AgentInstance::delegate`], possibly on another
    /// device). The backend exchanges it (RFC 8693) for a token of this
    /// agent whose rights are the chain's, intersected with this agent's
    /// registered grants, whose `act` nests the parent, and which is refused
    /// as soon as any ancestor is revoked. The child acts for its parent's
    /// user, if any: `options.user_assertion` must be `None`.
    pub async fn attest_delegated(
        &self,
        options: AttestOptions<'_>,
        chain: BearerToken,
        child_key: Ed25519Signer,
    ) -> Result<AgentInstance, ExchangeFailure> {
        if options.user_assertion.is_some() {
            return Err(ExchangeFailure::Local(
                "a delegated child acts for its parent's user: give no user assertion".into(),
            ));
        }
        self.attest_as(options, child_key, Subject::Delegation(chain))
            .await
    }

    async fn attest_as(
        &self,
        options: AttestOptions<'_>,
        instance_key: Ed25519Signer,
        subject: Subject,
    ) -> Result<AgentInstance, ExchangeFailure> {
        let mut jti_prefix = [0u8; 8];
        options.entropy.fill(&mut jti_prefix);
        let token = Arc::new(InstanceToken::new(
            options.device,
            Box::new(instance_key),
            self.spec.name.clone(),
            self.digest,
            options.grants,
            options.lifetime.unwrap_or(0),
            options.exchange,
            options.clock,
            jti_prefix,
            subject,
        ));
        // The first token proves the attestation was accepted.
        token.token().await?;
        let instance_id = token
            .instance_id()
            .ok_or_else(|| ExchangeFailure::Unreachable("no instance id assigned".into()))?
            .to_owned();
        let profile = token
            .profile()
            .cloned()
            .ok_or_else(|| ExchangeFailure::Unreachable("no agent profile received".into()))?;
        if let Some(pool) = self.pool_memory_bytes
            && profile.limits.memory_bytes > pool
        {
            return Err(ExchangeFailure::Local(format!(
                "agent {} may use {} MiB of memory but this runtime's pool slots hold {} MiB",
                self.spec.name,
                profile.limits.memory_bytes >> 20,
                pool >> 20
            )));
        }
        let identity = InstanceIdentity {
            agent: self.spec.name.clone(),
            instance_id: instance_id.clone(),
            user: token.on_behalf_of().map(str::to_owned),
            grants: profile.grants.iter().map(|g| g.name.to_string()).collect(),
        };
        let stop = Arc::new(StopSignal::default());
        if let Some(channel) = options.stop_channel {
            spawn_watcher(Arc::clone(&stop), Arc::clone(&token), channel, instance_id);
        }
        self.instance(token, profile, identity, options.egress, stop)
    }

    /// An instance of this agent around a token (attested, or a child's
    /// chain): the egress path, limits and identity it runs tasks with.
    pub(crate) fn instance(
        &self,
        token: Arc<InstanceToken>,
        profile: AgentProfile,
        identity: InstanceIdentity,
        egress: Arc<dyn Egress>,
        stop: Arc<StopSignal>,
    ) -> Result<AgentInstance, ExchangeFailure> {
        let scanner = Scanner::new(ScannerConfig::default(), Redactor::empty())
            .map_err(|e| ExchangeFailure::Local(format!("secret scanner: {e}")))?;
        let egress = Arc::new(InstanceEgress {
            scanner,
            agent: identity.agent.clone(),
            instance: identity.instance_id.clone(),
            token,
            grants: profile.grants,
            egress,
            max_request_bytes: profile.limits.max_request_bytes,
        });
        Ok(AgentInstance {
            engine: self.engine.clone(),
            pre: self.pre.clone(),
            limits: profile.limits,
            identity: Arc::new(identity),
            egress,
            max_concurrent_tasks: self.max_concurrent_tasks,
            _ticker: Arc::clone(&self.ticker),
            stop,
            output_scanner: Mutex::new(None),
            delegator: None,
            approvals: None,
        })
    }
}

/// What [`LoadedAgent::attest`] needs.
pub struct AttestOptions<'a> {
    /// The device this runtime runs on.
    pub device: DeviceIdentity,
    /// The token service (in process, or the backend over TLS).
    pub exchange: Arc<dyn TokenExchange>,
    /// Where guest requests go (the same backend).
    pub egress: Arc<dyn Egress>,
    /// Time source for token renewal.
    pub clock: Arc<dyn Clock>,
    /// Randomness for the instance key.
    pub entropy: &'a mut dyn Entropy,
    /// The backend's stop channel: revocation stops running tasks, and losing
    /// the backend for longer than the lease stops the instance. `None`
    /// only where nothing can revoke (tests of the sandbox alone).
    pub stop_channel: Option<Arc<dyn StopChannel>>,
    /// Grants to request; empty for all of the agent's grants.
    pub grants: Vec<GrantName>,
    /// Requested token lifetime, seconds (`None`: the backend's default;
    /// the backend caps it at the agent's maximum).
    pub lifetime: Option<u64>,
    /// Act for a user: that user's assertion (a JWT from an issuer the
    /// backend trusts). One instance per user: tokens, stores and the
    /// instance key are never shared between users.
    pub user_assertion: Option<BearerToken>,
}

impl AgentInstance {
    /// Let this instance's tasks start these sub-agents through the WIT
    /// `delegation` interface (components built against
    /// `edgeward:agent@0.2.0`). Each child runs in an instance of its own,
    /// with a fresh key from `entropy`, on this instance's token narrowed
    /// offline; its children may start the same sub-agents, as far as the
    /// delegation depth allows. Sub-agents are named by their spec; each
    /// must be registered with the backend under that name, or the
    /// backend refuses the child's calls.
    pub fn with_sub_agents(
        mut self,
        sub_agents: Vec<Arc<LoadedAgent>>,
        entropy: Box<dyn Entropy + Send>,
    ) -> AgentInstance {
        self.delegator = Some(Arc::new(Delegator::new(sub_agents, entropy)));
        self
    }

    /// This instance's token narrowed for a child that runs elsewhere (on
    /// another device, say): sub-agent `sub_agent`, holding the key whose
    /// public half is `child_key`, with `rights`. The child's runtime hands
    /// the result to [`LoadedAgent::attest_delegated`], which exchanges it
    /// for a standalone token. Made offline, checked with the same rules as
    /// a child started through WIT.
    ///
    /// The result is a bearer secret (only the holder of `child_key` can use
    /// it, but it carries this instance's token): move it only over an
    /// authenticated, encrypted channel.
    pub async fn delegate(
        &self,
        sub_agent: &str,
        rights: &ChildRights,
        child_key: &edgeward_core::keys::PublicKey,
    ) -> Result<BearerToken, DelegationError> {
        let jkt = child_key.jwk_thumbprint();
        // The chain should outlive at least one task of the child.
        let min_left = self.limits.task_timeout.as_secs().saturating_add(1);
        let (chain, _) =
            narrowed_chain(&self.egress.token, sub_agent, rights, &jkt, min_left).await?;
        Ok(BearerToken::new(chain.encode()))
    }

    /// Let this instance's guests wait for approval tickets through the WIT
    /// `approval` interface (`edgeward:agent@0.3.0`), asking `channel`
    /// (the backend). Without it, `wait` answers `unavailable`. Children
    /// it starts wait through the same channel.
    pub fn with_approvals(
        mut self,
        channel: Arc<dyn edgeward_core::egress::ApprovalChannel>,
    ) -> AgentInstance {
        self.approvals = Some(channel);
        self
    }

    /// The same instance, starting children from `delegator`.
    pub(crate) fn with_delegator(mut self, delegator: Arc<Delegator>) -> AgentInstance {
        self.delegator = Some(delegator);
        self
    }

    /// The instance's public identity.
    pub fn identity(&self) -> &InstanceIdentity {
        &self.identity
    }

    /// Stop the instance: running tasks end at once, later tasks are refused.
    pub fn stop(&self, reason: impl Into<String>) {
        self.stop.stop(reason);
    }

    /// Whether the instance was stopped, and why.
    pub fn stopped(&self) -> Option<String> {
        self.stop.is_stopped().then(|| self.stop.reason())
    }

    /// Run one task in a fresh store. Never panics on guest behaviour: every
    /// way a guest can fail ends up in [`TaskReport::outcome`].
    pub async fn run(&self, task: &str) -> TaskReport {
        let limits = self.limits;
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
                memory_used: 0,
            },
            delegation: self.delegator.as_ref().map(|d| TaskDelegation {
                delegator: Arc::clone(d),
                parent: Arc::clone(&self.egress),
                limits,
                identity: Arc::clone(&self.identity),
                deadline: std::time::Instant::now() + limits.task_timeout,
                approvals: self.approvals.clone(),
            }),
            approvals: self.approvals.clone(),
        };
        if self.stop.is_stopped() {
            return TaskReport {
                outcome: Err(TaskError::Stopped {
                    reason: self.stop.reason(),
                }),
                logs: Vec::new(),
                logs_dropped: 0,
            };
        }
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Every epoch tick (EPOCH_TICK) running wasm comes here: a stop order
        // traps at once, the deadline interrupts, and otherwise the task
        // yields to the executor, so a guest spinning in a loop never holds a
        // worker thread for more than a tick.
        let deadline = std::time::Instant::now() + limits.task_timeout;
        let stop = Arc::clone(&self.stop);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if stop.is_stopped() {
                return Err(wasmtime::Error::new(StopTrap));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(wasmtime::UpdateDeadline::Interrupt);
            }
            Ok(wasmtime::UpdateDeadline::Yield(1))
        });

        let pre = self.pre.clone();
        let call = async {
            let agent: Agent = pre
                .instantiate_async(&mut store)
                .await
                .map_err(Stage::Start)?;
            agent.call_run(&mut store, task).await.map_err(Stage::Run)
        };
        let timed = tokio::time::timeout(limits.task_timeout + HOST_CALL_GRACE, call);
        // Dropping the call on a stop order also drops the guest's in-flight
        // request futures: epochs do not interrupt a guest parked in a host call.
        let outcome = tokio::select! {
            timed = timed => match timed {
                Ok(Ok(result)) => Ok(result),
                Ok(Err(stage)) => Err(self.classify(stage, &captured)),
                Err(_elapsed) => Err(TaskError::Timeout {
                    limit: limits.task_timeout,
                }),
            },
            _ = self.stop.wait() => Err(TaskError::Stopped { reason: self.stop.reason() }),
        };
        let state = store.into_data();
        let mut logs = state.logs;
        logs.extend(captured.into_records());
        // Guest output leaves the sandbox only after a scan: known secret
        // formats and this instance's own live token become a marker, and
        // the log says which rule matched (never what).
        let (outcome, logs) = self.scrub_output(outcome, logs);
        if let Err(e) = &outcome {
            tracing::warn!(agent = %self.identity.agent, instance = %self.identity.instance_id, "task stopped: {e}");
        }

        TaskReport {
            outcome,
            logs,
            logs_dropped: state.logs_dropped,
        }
    }

    /// The scanner for guest output: known formats plus this instance's
    /// live token and the one before it (output made just before a renewal
    /// may carry the old one). Rebuilt only when the token changed; while
    /// the token is busy (a renewal in flight) the cached one serves.
    fn output_scanner(&self) -> Option<Arc<Scanner>> {
        let token = self.egress.token.peek();
        let mut cache = self
            .output_scanner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (cache.as_ref(), token.as_ref()) {
            (Some(c), Some(t)) if c.token.expose() == t.expose() => {
                return Some(Arc::clone(&c.scanner));
            }
            (Some(c), None) => return Some(Arc::clone(&c.scanner)),
            _ => {}
        }
        let previous = cache.as_ref().map(|c| c.token.clone());
        // A child's token is a chain: its parent's JWT comes first, and is
        // a secret of its own.
        let secrets = token.iter().chain(previous.iter()).flat_map(|t| {
            let whole = t.expose();
            let jwt = whole.split(edgeward_core::caveat::SEPARATOR).next();
            std::iter::once(whole).chain(jwt.filter(|j| j.len() < whole.len()))
        });
        let live = Redactor::new(secrets.map(str::as_bytes)).ok()?;
        let scanner = Arc::new(Scanner::new(ScannerConfig::default(), live).ok()?);
        if let Some(token) = token {
            *cache = Some(OutputScanner {
                token,
                scanner: Arc::clone(&scanner),
            });
        }
        Some(scanner)
    }

    fn scrub_output(
        &self,
        outcome: Result<Result<String, String>, TaskError>,
        mut logs: Vec<LogRecord>,
    ) -> (Result<Result<String, String>, TaskError>, Vec<LogRecord>) {
        let Some(scanner) = self.output_scanner() else {
            // Fail closed: without a scanner nothing the guest wrote leaves.
            const WITHHELD: &str = "[output withheld: the secret scanner is unavailable]";
            tracing::error!(agent = %self.identity.agent, "no output scanner; guest output withheld");
            let outcome = match outcome {
                Ok(r) => Ok(r
                    .map(|_| WITHHELD.to_owned())
                    .map_err(|_| WITHHELD.to_owned())),
                Err(TaskError::Trap { .. }) => Err(TaskError::Trap {
                    reason: WITHHELD.to_owned(),
                }),
                other => other,
            };
            for record in &mut logs {
                record.message = WITHHELD.to_owned();
            }
            return (outcome, logs);
        };
        let mut rules: Vec<&'static str> = Vec::new();
        let mut scrub = |text: &mut String| {
            let scanned = scanner.apply(text.as_bytes());
            let acting: Vec<&'static str> = scanned
                .findings
                .iter()
                .filter(|f| f.action != Action::AuditOnly)
                .map(|f| f.rule.name())
                .collect();
            if !acting.is_empty() {
                rules.extend(acting);
                *text = String::from_utf8_lossy(&scanned.bytes).into_owned();
            }
        };
        let outcome = match outcome {
            Ok(Ok(mut s)) => {
                scrub(&mut s);
                Ok(Ok(s))
            }
            Ok(Err(mut s)) => {
                scrub(&mut s);
                Ok(Err(s))
            }
            Err(TaskError::Trap { mut reason }) => {
                scrub(&mut reason);
                Err(TaskError::Trap { reason })
            }
            other => other,
        };
        for record in &mut logs {
            scrub(&mut record.message);
        }
        if !rules.is_empty() {
            rules.dedup();
            tracing::warn!(
                agent = %self.identity.agent,
                instance = %self.identity.instance_id,
                rules = %rules.join(","),
                "secrets removed from the agent's output"
            );
        }
        (outcome, logs)
    }

    /// Name the bound behind a failure, if one was hit.
    fn classify(&self, stage: Stage, captured: &Captured) -> TaskError {
        let limits = self.limits;
        let (err, starting) = match stage {
            Stage::Start(e) => (e, true),
            Stage::Run(e) => (e, false),
        };
        // The full chain for the operator; the task error keeps one line.
        tracing::debug!(error = ?err, "task failed");
        if err.downcast_ref::<StopTrap>().is_some() {
            return TaskError::Stopped {
                reason: self.stop.reason(),
            };
        }
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
            // Debug carries the cause chain ("Caused by:"); Display does not.
            reason: first_line(&format!("{err:?}")),
        }
    }
}

/// The useful line of a wasmtime error: the root cause after the backtrace
/// ("Caused by:"), else the first line.
fn first_line(s: &str) -> String {
    let cause = s
        .rsplit_once("Caused by:")
        .map(|(_, c)| c)
        .unwrap_or(s)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    // Causes are numbered ("0: ...") when there are several.
    cause
        .split_once(": ")
        .filter(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
        .map_or(cause, |(_, rest)| rest)
        .to_owned()
}

/// The trap raised in running wasm when the instance is stopped.
#[derive(Debug)]
struct StopTrap;

impl std::fmt::Display for StopTrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the instance was stopped")
    }
}

impl std::error::Error for StopTrap {}

enum Stage {
    Start(wasmtime::Error),
    Run(wasmtime::Error),
}

impl Drop for AgentInstance {
    fn drop(&mut self) {
        // Ends the stop-channel watcher; nothing can run any more anyway.
        self.stop.stop("the instance was dropped");
    }
}
