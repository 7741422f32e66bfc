//! Time, injected: core never reads the system clock itself, so every
//! decision that depends on time can be replayed in a test.

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// A clock that always says the same time (tests, vectors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedClock(pub u64);

impl Clock for FixedClock {
    fn now(&self) -> u64 {
        self.0
    }
}

/// The system's wall clock. Core never calls it on its own; the binary and
/// the service crates pass it in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            // A clock before 1970 is broken; 0 makes every token look expired,
            // which fails closed.
            .unwrap_or(0)
    }
}
