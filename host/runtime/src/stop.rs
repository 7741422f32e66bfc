//! Stopping a running instance from outside: revocation and the kill switch.
//!
//! A stop order reaches a task two ways, because neither alone is enough:
//! the epoch callback traps running wasm within one epoch tick, and the
//! task's future is dropped (with every in-flight request future) for a guest
//! that is parked in a host call, which epochs never interrupt.
//!
//! The orders come from a [`StopChannel`] watcher per instance: a long poll
//! to the backend, with a lease — cut off from the backend for longer than
//! the lease, the instance stops itself (fail closed).

use crate::credentials::InstanceToken;
use edgeward_core::egress::{ExchangeFailure, StopChannel, StopPoll};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Lease assumed before the backend has said otherwise.
const INITIAL_LEASE: Duration = Duration::from_secs(30);
/// Pause after a failed poll before the next try.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// A one-way switch: once stopped, an instance runs nothing again.
#[derive(Default)]
pub(crate) struct StopSignal {
    stopped: AtomicBool,
    reason: Mutex<Option<String>>,
    notify: tokio::sync::Notify,
}

impl StopSignal {
    pub(crate) fn stop(&self, reason: impl Into<String>) {
        if let Ok(mut r) = self.reason.lock()
            && r.is_none()
        {
            *r = Some(reason.into());
        }
        self.stopped.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    pub(crate) fn reason(&self) -> String {
        self.reason
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_else(|| "stopped".into())
    }

    /// Resolves once stopped (at once if already stopped).
    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }
}

/// Watch the stop channel for one instance until it stops or is dropped.
pub(crate) fn spawn_watcher(
    signal: Arc<StopSignal>,
    token: Arc<InstanceToken>,
    channel: Arc<dyn StopChannel>,
    instance: String,
) {
    tokio::spawn(async move {
        let mut lease = INITIAL_LEASE;
        let mut last_contact = Instant::now();
        loop {
            if signal.is_stopped() {
                return;
            }
            let polled = tokio::select! {
                _ = signal.wait() => return,
                polled = poll_once(&token, channel.as_ref()) => polled,
            };
            match polled {
                Ok(StopPoll::Stop { reason }) => {
                    tracing::warn!(%instance, "stop order: {reason}");
                    signal.stop(format!("stopped by the backend: {reason}"));
                    return;
                }
                Ok(StopPoll::Continue { lease_secs }) => {
                    lease = Duration::from_secs(lease_secs.max(1));
                    last_contact = Instant::now();
                }
                Err(ExchangeFailure::Refused { error, description }) => {
                    // The backend refused to renew: revoked or deprovisioned.
                    tracing::warn!(%instance, "token renewal refused: {error}: {description}");
                    signal.stop(format!(
                        "the backend refused this instance ({error}: {description})"
                    ));
                    return;
                }
                Err(e) => {
                    if last_contact.elapsed() > lease {
                        tracing::warn!(%instance, "no contact with the backend for longer than the lease: {e}");
                        signal.stop(format!(
                            "lost contact with the backend for longer than the {} s lease",
                            lease.as_secs()
                        ));
                        return;
                    }
                    tokio::select! {
                        _ = signal.wait() => return,
                        _ = tokio::time::sleep(RETRY_PAUSE) => {}
                    }
                }
            }
        }
    });
}

async fn poll_once(
    token: &InstanceToken,
    channel: &dyn StopChannel,
) -> Result<StopPoll, ExchangeFailure> {
    let current = token.token().await?;
    channel.poll_stop(current).await
}
