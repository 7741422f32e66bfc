//! Wait for a person's approval (`edgeward:agent/approval@0.3.0`).
//!
//! When policy says a call needs approval, edgeward refuses it with a
//! [`Problem`](crate::http::Problem) of class `needs-approval` carrying a
//! ticket id. A person with the approver role sees the call exactly as it
//! would be forwarded and decides; the approval is bound to that exact call
//! (grant, method, URL, headers, body, user) and is used once. The agent
//! cannot open, widen or decide a ticket: it can only wait, then send the
//! same call again.
//!
//! ```no_run
//! use edgeward_sdk::approval;
//! use edgeward_sdk::http::Request;
//! use std::time::Duration;
//!
//! let request = Request::post("https://api.example/v1/payments", b"{\"eur\": 40}".to_vec());
//! match approval::send_with_approval(request, Duration::from_secs(60)) {
//!     Ok(response) => edgeward_sdk::log::info(&format!("paid: {}", response.status)),
//!     Err(e) => edgeward_sdk::log::warn(&e.to_string()),
//! }
//! ```
//!
//! Using this module makes the component an `edgeward:agent@0.3.0` agent.

use crate::bindings::v0_3::edgeward::agent0_3_0::approval as wit;
use crate::http::{Error, ProblemClass, Request, Response};
use std::time::Duration;

/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Nobody decided yet (the wait timed out).
    Pending,
    /// Approved: send the same call again, unchanged, to use it (once).
    Approved,
    /// A person denied it.
    Denied,
    /// It expired undecided, or its approval was used or ran out.
    Expired,
    /// No ticket of this agent and user has this id.
    Unknown,
    /// The backend could not be asked.
    Unavailable,
}

/// Wait up to `timeout` (at most a minute per call) for a decision on
/// `ticket`.
pub fn wait(ticket: &str, timeout: Duration) -> State {
    let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    match wit::wait(ticket, ms) {
        wit::State::Pending => State::Pending,
        wit::State::Approved => State::Approved,
        wit::State::Denied => State::Denied,
        wit::State::Expired => State::Expired,
        wit::State::Unknown => State::Unknown,
        wit::State::Unavailable => State::Unavailable,
    }
}

/// Send `request`; if policy sends it for approval, wait up to `timeout`
/// for the decision and, once approved, send the same request again. A
/// refusal other than `needs-approval`, a denial or a timeout comes back as
/// the [`Error::Refused`] of the last attempt.
pub fn send_with_approval(request: Request, timeout: Duration) -> Result<Response, Error> {
    match request.clone().send() {
        Err(Error::Refused(problem)) if problem.class == ProblemClass::NeedsApproval => {
            let Some(ticket) = problem.ticket.clone() else {
                return Err(Error::Refused(problem));
            };
            match wait(&ticket, timeout) {
                State::Approved => request.send(),
                _ => Err(Error::Refused(problem)),
            }
        }
        other => other,
    }
}
