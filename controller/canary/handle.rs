//! How the API, the CLI and the watcher reach a canary target's runner: its orders and what
//! it is doing now ([`Phase`]). A second deploy is refused at once, never queued behind the
//! first; a person's promote or abort during a deploy goes straight to the flow.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::flow::Manual;
use crate::config::TargetConfig;
use crate::rollback::{RollbackError, RollbackRequest};
use crate::store::{CanaryRecord, RollbackRecord};
use crate::tag::Tag;

/// What a canary target is doing now, for the API and the watcher.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Phase {
    #[default]
    Idle,
    /// A deploy is under way (starting the slot, or stepping).
    Deploying { id: i64, tag: String },
    /// Promoted; the old slot runs at weight 0 until `until_ms`.
    Holding { id: i64, tag: String, until_ms: i64 },
}

impl Phase {
    /// For status: `None` when idle.
    pub fn describe(&self) -> Option<String> {
        match self {
            Phase::Idle => None,
            Phase::Deploying { id, tag } => Some(format!("canary #{id} of {tag} in flight")),
            Phase::Holding { id, tag, until_ms } => {
                let until = std::time::UNIX_EPOCH
                    + Duration::from_millis(u64::try_from(*until_ms).unwrap_or(0));
                Some(format!(
                    "canary #{id} of {tag} promoted; the old slot is held until {}",
                    humantime::format_rfc3339_seconds(until)
                ))
            }
        }
    }
}

/// A new version to deploy.
#[derive(Debug, Clone)]
pub struct DeployOrder {
    pub tag: Tag,
    pub commit_sha: Option<String>,
    pub pipeline_url: Option<String>,
}

pub(super) enum Order {
    Deploy {
        order: DeployOrder,
        /// The deploy's record id once written, or why it was refused (nothing changed).
        accepted: oneshot::Sender<Result<i64, String>>,
        done: oneshot::Sender<CanaryRecord>,
    },
    Manual {
        what: Manual,
        reply: oneshot::Sender<Result<String, String>>,
    },
    RollBack {
        request: RollbackRequest,
        reply: oneshot::Sender<Result<RollbackRecord, RollbackError>>,
    },
}

/// What a deploy order answers: its record id once accepted (or why it was refused), then
/// the finished record.
pub type DeployAnswers = (
    oneshot::Receiver<Result<i64, String>>,
    oneshot::Receiver<CanaryRecord>,
);

/// How the API, the CLI and the watcher reach a canary target's runner.
#[derive(Clone)]
pub struct CanaryHandle {
    pub(super) orders: mpsc::Sender<Order>,
    pub(super) manual: mpsc::Sender<Manual>,
    pub(super) phase: Arc<Mutex<Phase>>,
    /// A deploy is queued or running: another is refused at once, not queued behind it.
    pub(super) deploying: Arc<AtomicBool>,
}

/// Why an order did not reach the runner.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("the canary runner of this target is busy with earlier orders; try again in a moment")]
    Busy,
    #[error("the controller is shutting down")]
    Closed,
    #[error("a canary deploy is already queued or in flight on this target; wait for it to end, or abort it")]
    Deploying,
}

impl CanaryHandle {
    pub fn phase(&self) -> Phase {
        self.phase.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn send(&self, order: Order) -> Result<(), OrderError> {
        self.orders.try_send(order).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => OrderError::Busy,
            mpsc::error::TrySendError::Closed(_) => OrderError::Closed,
        })
    }

    /// Queues a deploy; returns (accepted: its record id or why not, done: the finished record).
    pub fn deploy(&self, order: DeployOrder) -> Result<DeployAnswers, OrderError> {
        if self.deploying.swap(true, Ordering::SeqCst) {
            return Err(OrderError::Deploying);
        }
        let (accepted, accepted_rx) = oneshot::channel();
        let (done, done_rx) = oneshot::channel();
        let sent = self.send(Order::Deploy {
            order,
            accepted,
            done,
        });
        if sent.is_err() {
            self.deploying.store(false, Ordering::SeqCst);
        }
        sent.map(|()| (accepted_rx, done_rx))
    }

    /// A person's promote or abort: to the deploy in flight (taken at its next reading), or
    /// to the runner (during a hold: promote ends the hold now, abort flips back).
    pub fn manual(
        &self,
        what: Manual,
    ) -> Result<oneshot::Receiver<Result<String, String>>, OrderError> {
        let (reply, answer) = oneshot::channel();
        if let Phase::Deploying { tag, .. } = self.phase() {
            let word = match what {
                Manual::Promote => "promotes",
                Manual::Abort(_) => "aborts",
            };
            self.manual.try_send(what).map_err(|_| OrderError::Busy)?;
            let _ = reply.send(Ok(format!(
                "the canary of {tag} {word} at its next reading"
            )));
            return Ok(answer);
        }
        self.send(Order::Manual { what, reply })?;
        Ok(answer)
    }

    /// The watcher found `tag` regressed while its canary deploy is in flight (a container
    /// that exited, failed probes: evidence the balancer's counters may miss while the
    /// container restarts): the deploy aborts at its next reading. `false` when no deploy of
    /// `tag` is in flight.
    pub fn regressed(&self, tag: &str, why: &str) -> bool {
        match self.phase() {
            Phase::Deploying { tag: t, .. } if t == tag => self
                .manual
                .try_send(Manual::Abort(Some(format!(
                    "the watcher found it regressed: {why}"
                ))))
                .is_ok(),
            _ => false,
        }
    }

    /// The watcher's rollback on a canary target: a flip back to the held slot.
    pub async fn roll_back(
        &self,
        target: &TargetConfig,
        request: RollbackRequest,
    ) -> Result<RollbackRecord, RollbackError> {
        let refused = |why: String| RollbackError::Canary {
            target: target.id(),
            why,
        };
        if let Phase::Deploying { tag, .. } = self.phase() {
            return Err(refused(format!(
                "a canary deploy of {tag} is in flight and its own judge decides; abort it with `rollwatch abort {} {}`",
                target.env, target.role
            )));
        }
        let (reply, answer) = oneshot::channel();
        self.send(Order::RollBack { request, reply })
            .map_err(|e| refused(e.to_string()))?;
        answer
            .await
            .map_err(|_| refused("the canary runner stopped".into()))?
    }
}
