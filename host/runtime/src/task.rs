//! One task: a fresh `Store`, one call of the guest's `run`, and the report.

use crate::bindings::{approval, identity, log};
use crate::egress_hook::EgressHooks;
use crate::limits::TaskLimiter;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Longest single log message kept; longer ones are truncated.
const MAX_LOG_MESSAGE_BYTES: usize = 4096;

/// The public identity a guest may read through the `identity` interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceIdentity {
    /// Registered agent name.
    pub agent: String,
    /// Instance id.
    pub instance_id: String,
    /// User the instance acts for, if any.
    pub user: Option<String>,
    /// Names of the grants the instance holds.
    pub grants: Vec<String>,
}

/// Severity of an agent log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Trace.
    Trace,
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warn.
    Warn,
    /// Error.
    Error,
}

/// Where an agent log record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// The `log` interface.
    Log,
    /// A line the guest wrote to stdout.
    Stdout,
    /// A line the guest wrote to stderr.
    Stderr,
}

/// One record of the agent log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Severity (stdout is `Info`, stderr is `Warn`).
    pub level: LogLevel,
    /// Origin of the record.
    pub source: LogSource,
    /// The text.
    pub message: String,
}

/// Cut a log message to [`MAX_LOG_MESSAGE_BYTES`], marked as cut.
pub(crate) fn truncate_message(message: &mut String) {
    if message.len() > MAX_LOG_MESSAGE_BYTES {
        let mut cut = MAX_LOG_MESSAGE_BYTES;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(" [truncated]");
    }
}

/// Store data for one task.
pub(crate) struct TaskState {
    pub(crate) table: ResourceTable,
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) hooks: EgressHooks,
    pub(crate) identity: Arc<InstanceIdentity>,
    pub(crate) logs: Vec<LogRecord>,
    pub(crate) logs_dropped: usize,
    pub(crate) max_log_records: usize,
    pub(crate) limiter: TaskLimiter,
    /// Set when the instance may start sub-agents.
    pub(crate) delegation: Option<crate::delegation::TaskDelegation>,
    /// Where the guest waits for approvals, when the embedder set one.
    pub(crate) approvals: Option<Arc<dyn edgeward_core::egress::ApprovalChannel>>,
}

/// The captured stdout and stderr of a task.
pub(crate) struct Captured {
    pub(crate) stdout: MemoryOutputPipe,
    pub(crate) stderr: MemoryOutputPipe,
    pub(crate) capacity: usize,
}

impl Captured {
    pub(crate) fn new(capacity: usize) -> Captured {
        Captured {
            stdout: MemoryOutputPipe::new(capacity),
            stderr: MemoryOutputPipe::new(capacity),
            capacity,
        }
    }

    /// Which stream, if any, is full: a full pipe refuses writes, which a
    /// Rust guest turns into a panic, so a trap with a full pipe is the
    /// output bound.
    pub(crate) fn full_stream(&self) -> Option<&'static str> {
        if self.stdout.contents().len() >= self.capacity {
            Some("stdout")
        } else if self.stderr.contents().len() >= self.capacity {
            Some("stderr")
        } else {
            None
        }
    }

    /// Split the captured bytes into log records.
    pub(crate) fn into_records(self) -> Vec<LogRecord> {
        let mut out = Vec::new();
        for (pipe, source, level) in [
            (&self.stdout, LogSource::Stdout, LogLevel::Info),
            (&self.stderr, LogSource::Stderr, LogLevel::Warn),
        ] {
            let bytes = pipe.contents();
            for line in String::from_utf8_lossy(&bytes).lines() {
                out.push(LogRecord {
                    level,
                    source,
                    message: line.to_owned(),
                });
            }
        }
        out
    }
}

impl WasiView for TaskState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for TaskState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl identity::Host for TaskState {
    fn agent_name(&mut self) -> String {
        self.identity.agent.clone()
    }

    fn instance_id(&mut self) -> String {
        self.identity.instance_id.clone()
    }

    fn on_behalf_of(&mut self) -> Option<String> {
        self.identity.user.clone()
    }

    fn grants(&mut self) -> Vec<String> {
        self.identity.grants.clone()
    }

    fn token_expires_at(&mut self) -> Option<u64> {
        Some(self.hooks.shared.token.expires_at()).filter(|t| *t != 0)
    }
}

impl log::Host for TaskState {
    fn log(&mut self, level: log::Level, mut message: String) {
        if self.logs.len() >= self.max_log_records {
            self.logs_dropped += 1;
            return;
        }
        truncate_message(&mut message);
        let level = match level {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        tracing::debug!(
            target: "edgeward::agent",
            agent = %self.identity.agent,
            instance = %self.identity.instance_id,
            ?level,
            // Debug-formatted: guest text must not forge log lines
            // (newlines) or drive a terminal (escape sequences); scanned:
            // nothing secret-shaped reaches the host log.
            message = ?self.hooks.shared.scrub(&message),
            "agent log"
        );
        self.logs.push(LogRecord {
            level,
            source: LogSource::Log,
            message,
        });
    }
}

impl approval::Host for TaskState {
    fn wait(
        &mut self,
        ticket: String,
        timeout_ms: u32,
    ) -> impl std::future::Future<Output = approval::State> + Send {
        let channel = self.approvals.clone();
        let token = Arc::clone(&self.hooks.shared.token);
        async move {
            use edgeward_core::egress::TicketState;
            let Some(channel) = channel else {
                return approval::State::Unavailable;
            };
            // The ticket id is guest text: only its shape goes further.
            if !edgeward_core::egress::is_ticket_id(&ticket) {
                return approval::State::Unknown;
            }
            let Ok(token) = token.token().await else {
                return approval::State::Unavailable;
            };
            let timeout = std::time::Duration::from_millis(u64::from(timeout_ms));
            match channel.wait_ticket(token, ticket, timeout).await {
                Ok(TicketState::Pending) => approval::State::Pending,
                Ok(TicketState::Approved) => approval::State::Approved,
                Ok(TicketState::Denied) => approval::State::Denied,
                Ok(TicketState::Expired) => approval::State::Expired,
                Ok(TicketState::Unknown) => approval::State::Unknown,
                Ok(_) | Err(_) => approval::State::Unavailable,
            }
        }
    }
}
