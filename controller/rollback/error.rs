//! What can stop a rollback, and whether anything had changed by then.

use std::time::Duration;

use super::{ExecError, SiteError};
use crate::docker::DockerError;
use crate::probe::ProbeFailure;
use crate::registry::RegistryError;
use crate::store::StoreError;
use crate::tag::Tag;
use crate::target::TargetId;

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("rollback of {target} interrupted by shutdown; its intent stays on record and is resumed at the next start")]
    Interrupted { target: TargetId },
    /// This instance does not hold the lease (or cannot reach the store to check): nothing was
    /// written and nothing run.
    #[error("{target} not rolled back by this instance: {why}; nothing was changed")]
    NotLeader { target: TargetId, why: String },
    /// The lease changed hands while this rollback ran: the step was refused, the record left
    /// to the instance that leads now, which resumes it.
    #[error("rollback #{id} of {target} stopped: {why}; the leader resumes the record")]
    Fenced {
        id: i64,
        target: TargetId,
        why: String,
    },
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The compose executor cannot tell where or as which project to run; nothing was changed.
    #[error(transparent)]
    Site(#[from] SiteError),
    #[error("unknown tag {tag} for {target}: {image} is neither in registry {registry} nor present locally; nothing was changed")]
    UnknownTag {
        target: TargetId,
        tag: Tag,
        image: String,
        registry: String,
    },
    #[error("cannot check tag {tag} for {target}: {source}; {image} is not present locally either, so nothing was changed")]
    Registry {
        target: TargetId,
        tag: Tag,
        image: String,
        source: RegistryError,
    },
    #[error(
        "{target} already runs {tag}; nothing to roll back (name another tag to force a redeploy)"
    )]
    AlreadyRunning { target: TargetId, tag: Tag },
    /// A resumed record whose target was deployed again since: finished without acting.
    #[error("{why}")]
    Superseded {
        id: i64,
        target: TargetId,
        why: String,
    },
    /// The version judged bad is gone already (another instance, or a takeover's resume,
    /// rolled it back between the verdict and this order).
    #[error("{target} no longer runs {failing} (it runs {running}); nothing to roll back")]
    Gone {
        target: TargetId,
        failing: String,
        running: String,
    },
    #[error("rollback #{id} of {target} to {tag} failed: {source}")]
    Execution {
        id: i64,
        target: TargetId,
        tag: Tag,
        source: ExecError,
    },
    /// A canary target's rollback could not be done by weight; nothing was changed.
    #[error("{target}: not rolled back: {why}")]
    Canary { target: TargetId, why: String },
    /// A canary target's flip back ran and failed; the record says how far it got.
    #[error("flip back #{id} of {target} failed: {why}")]
    CanaryFailed {
        id: i64,
        target: TargetId,
        why: String,
    },
    #[error("rollback #{id} of {target} to {tag} ran, but /health did not answer ok within {within:?}: last probe {failure}")]
    Validation {
        id: i64,
        target: TargetId,
        tag: Tag,
        within: Duration,
        failure: ProbeFailure,
    },
}

impl RollbackError {
    /// The executor ran: something on the host may have changed, and the outcome is on record.
    /// Every other error is a refusal that changed nothing.
    pub fn changed_something(&self) -> bool {
        matches!(
            self,
            RollbackError::Execution { .. }
                | RollbackError::Validation { .. }
                | RollbackError::CanaryFailed { .. }
        )
    }

    /// The record was finished with this error (or, interrupted, deliberately left as intent).
    /// Fenced and not-leader errors leave the record alone too: it belongs to the leader.
    pub(super) fn is_recorded(&self) -> bool {
        self.changed_something()
            || matches!(
                self,
                RollbackError::Interrupted { .. }
                    | RollbackError::Fenced { .. }
                    | RollbackError::NotLeader { .. }
                    | RollbackError::Superseded { .. }
            )
    }
}
