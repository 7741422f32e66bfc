//! Write to the agent log kept by the host.
//!
//! Records go to edgeward's agent log, not to stdout. The host bounds their
//! size and number per task (it may truncate or drop the rest) and scans them
//! for secrets before storing them.
//!
//! ```no_run
//! edgeward_sdk::log::info("starting");
//! edgeward_sdk::log::warn(&format!("retrying after {} ms", 250));
//! ```

use crate::bindings::edgeward::agent::log as wit;

/// How important a log record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing output.
    Trace,
    /// Information useful when debugging the agent.
    Debug,
    /// Normal operational messages.
    Info,
    /// Something unexpected that the agent recovered from.
    Warn,
    /// Something failed.
    Error,
}

impl From<Level> for wit::Level {
    fn from(level: Level) -> wit::Level {
        match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        }
    }
}

/// Append one record at `level`.
pub fn log(level: Level, message: &str) {
    wit::log(level.into(), message);
}

/// Append one record at [`Level::Trace`].
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Append one record at [`Level::Debug`].
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Append one record at [`Level::Info`].
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Append one record at [`Level::Warn`].
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Append one record at [`Level::Error`].
pub fn error(message: &str) {
    log(Level::Error, message);
}
