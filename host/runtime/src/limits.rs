//! Memory and table bounds for one task, enforced through wasmtime's
//! `ResourceLimiter`.
//!
//! Growth beyond the bound is turned into a trap carrying [`LimitExceeded`]
//! rather than a failed `memory.grow`: a Rust guest would otherwise abort with
//! a generic "memory allocation failed", and the host could not say which
//! bound was hit.

use std::fmt;

/// A sandbox bound that a task hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitExceeded {
    /// Linear memory would grow beyond `limit` bytes.
    Memory {
        /// The bound, bytes.
        limit: u64,
    },
    /// A table would grow beyond `limit` elements.
    Table {
        /// The bound, elements.
        limit: u64,
    },
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitExceeded::Memory { limit } => {
                write!(f, "memory limit of {} MiB exceeded", limit >> 20)
            }
            LimitExceeded::Table { limit } => {
                write!(f, "table limit of {limit} elements exceeded")
            }
        }
    }
}

impl std::error::Error for LimitExceeded {}

/// Per-store limiter. The memory bound is for the whole task: a component
/// may have several linear memories, and their sizes are added up.
pub(crate) struct TaskLimiter {
    pub(crate) memory_bytes: u64,
    pub(crate) table_elements: u64,
    /// Bytes of linear memory granted so far, across all memories.
    pub(crate) memory_used: u64,
}

/// Core instances, tables and memories a component may create. A Rust std
/// component needs a handful of each; the bound only stops a component built
/// to exhaust host structures.
const MAX_INSTANCES: usize = 64;
const MAX_TABLES: usize = 64;
const MAX_MEMORIES: usize = 4;

impl wasmtime::ResourceLimiter for TaskLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = (desired as u64).saturating_sub(current as u64);
        let total = self.memory_used.saturating_add(growth);
        if total > self.memory_bytes {
            return Err(wasmtime::Error::new(LimitExceeded::Memory {
                limit: self.memory_bytes,
            }));
        }
        // Counted when granted; a growth that then fails (rare) stays
        // counted, which errs on the side of the bound.
        self.memory_used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.table_elements {
            return Err(wasmtime::Error::new(LimitExceeded::Table {
                limit: self.table_elements,
            }));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}
