//! Who receives which version: the traffic driver a canary deploy steers. A target has two
//! server slots in one load-balancer backend; rollwatch moves weight between them and reads
//! each slot's counters, so a canary is judged on its own traffic even when the application
//! exports no metrics. HAProxy through its Runtime API is the first driver ([`haproxy`]).

pub mod haproxy;
pub mod stat;

use std::future::Future;

/// One of a target's two server slots (compose projects `<project>-blue` and `-green`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    Blue,
    Green,
}

impl Slot {
    pub fn name(self) -> &'static str {
        match self {
            Slot::Blue => "blue",
            Slot::Green => "green",
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::Blue => Slot::Green,
            Slot::Green => Slot::Blue,
        }
    }
}

/// The administrative state asked of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Takes traffic by its weight.
    Ready,
    /// Finishes what it has, takes no new sessions.
    Drain,
    /// Out of the pool, health checks stopped.
    Maint,
}

impl SlotState {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Ready => "ready",
            SlotState::Drain => "drain",
            SlotState::Maint => "maint",
        }
    }
}

/// One slot as the load balancer reports it; counters are cumulative since it started (or
/// since its counters were cleared), so a judge works on differences between two readings.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotReading {
    pub slot: Slot,
    /// The weight in effect (not the configured one).
    pub weight: u32,
    /// The health the balancer sees: `UP`, `DOWN`, `MAINT`, `DRAIN`, `no check`, ...
    pub status: String,
    pub responses_2xx: u64,
    pub responses_5xx: u64,
    /// Responses of any class: 1xx to 5xx and other.
    pub responses: u64,
    /// Requests that failed on the server side without an HTTP answer: aborted responses and
    /// failed connections.
    pub errors: u64,
    /// Average response time over the last requests, in ms (0 without traffic).
    pub avg_response_ms: u64,
}

impl SlotReading {
    /// The balancer's health checks say the slot is down: a canary there is regressed.
    pub fn is_down(&self) -> bool {
        self.status.starts_with("DOWN")
    }
}

/// What can go wrong talking to the balancer, each saying where and what to check.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    #[error("cannot reach the load balancer's runtime socket {socket}: {source}; is it running with `stats socket {socket} level admin`?")]
    Connect {
        socket: String,
        source: std::io::Error,
    },
    #[error("the load balancer's runtime socket {socket} did not answer {command:?} within {} ms", .within.as_millis())]
    Timeout {
        socket: String,
        command: String,
        within: std::time::Duration,
    },
    #[error("the load balancer refused {command:?}: {answer}")]
    Refused { command: String, answer: String },
    #[error("the load balancer has no backend {backend} (it has: {known}); name the target's backend in traffic.backend")]
    UnknownBackend { backend: String, known: String },
    #[error("backend {backend} has no server {server}: add `server {server} ...` to it (see the README's canary section)")]
    UnknownServer { backend: String, server: String },
    #[error("cannot read the load balancer's statistics: {0}")]
    Stats(String),
    #[error("cannot record the weight change in the store, so it was not made: {0}")]
    Record(String),
}

/// Steers one target's traffic. Implementations must apply a whole weight change at once: an
/// abort moves all traffic back in one step, never through a moment with both slots at 0 or
/// the bad one alone.
pub trait TrafficDriver: Send + Sync {
    fn set_weights(
        &self,
        weights: &[(Slot, u32)],
    ) -> impl Future<Output = Result<(), TrafficError>> + Send;

    fn set_state(
        &self,
        slot: Slot,
        state: SlotState,
    ) -> impl Future<Output = Result<(), TrafficError>> + Send;

    /// Both slots, as the balancer sees them now.
    fn read(&self) -> impl Future<Output = Result<[SlotReading; 2], TrafficError>> + Send;
}
