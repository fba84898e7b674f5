//! The fencing of a rollback's steps on a shared store: before each step the store checks, in
//! one transaction, that this instance's epoch still holds the lease and the record; a step
//! already running is stopped once the store refuses it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::StepFence;
use crate::lease::{Fence, Lease};
use crate::store::{Store, StoreError};
use crate::telemetry::LeaseSeries;

/// The store's fencing check of one recorded rollback: before each step, the lease row and the
/// record's epoch are read in one transaction; a stale epoch is refused and the refusal stored.
pub struct RecordFence {
    store: Store,
    rollback_id: i64,
    fence: Fence,
    lease: Arc<dyn Lease>,
    series: Option<Arc<LeaseSeries>>,
}

/// How often a store write that failed (the store briefly away) is tried again while this
/// instance's lease still holds.
const STORE_RETRY: Duration = Duration::from_millis(500);

/// How often a running step looks whether this instance's lease still holds.
const LEASE_WATCH: Duration = Duration::from_millis(200);

/// Runs a fenced store write, trying again while the store fails and `fence` is still this
/// instance's lease (locally: it lapses within the ttl). A blip of the store then costs a
/// moment, not an intent left behind beside a second rollback; a longer outage ends in a new
/// epoch, whose takeover resumes the record.
pub(super) async fn while_held<T, F, Fut>(
    lease: &dyn Lease,
    fence: &Fence,
    mut write: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    loop {
        match write().await {
            Err(e @ StoreError::Fenced { .. }) => return Err(e),
            Err(e) if lease.fence().as_ref() == Some(fence) => {
                tracing::warn!(error = %e, "a fenced store write failed; trying again while the lease holds");
                tokio::time::sleep(STORE_RETRY).await;
            }
            other => return other,
        }
    }
}

impl StepFence for RecordFence {
    fn check<'a>(&'a self, step: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let checked = while_held(self.lease.as_ref(), &self.fence, || {
                self.store
                    .fence_step(self.rollback_id, self.fence.clone(), step.to_string())
            })
            .await;
            match checked {
                Ok(()) => Ok(()),
                Err(e @ StoreError::Fenced { .. }) => {
                    if let Some(s) = &self.series {
                        s.fenced();
                    }
                    tracing::error!(rollback = self.rollback_id, step, error = %e, "step refused by the fencing check");
                    Err(e.to_string())
                }
                // Never act without a record: a store that stayed away past the lease stops
                // the rollback; the next leader resumes it.
                Err(e) => Err(format!(
                    "cannot check the lease ({e}) and it ran out meanwhile; not acting without a record"
                )),
            }
        })
    }
}

impl RecordFence {
    pub(super) fn new(
        store: Store,
        rollback_id: i64,
        fence: Fence,
        lease: Arc<dyn Lease>,
        series: Option<Arc<LeaseSeries>>,
    ) -> RecordFence {
        RecordFence {
            store,
            rollback_id,
            fence,
            lease,
            series,
        }
    }

    /// Resolves once this instance's lease ran out *and* the store refuses the record to it
    /// (the refusal recorded): the running step is then stopped. While the store still says
    /// the lease is ours, it goes on.
    pub(super) async fn lost(&self) -> StoreError {
        loop {
            tokio::time::sleep(LEASE_WATCH).await;
            if self.lease.fence().as_ref() == Some(&self.fence) {
                continue;
            }
            let check =
                self.store
                    .fence_step(self.rollback_id, self.fence.clone(), "running step".into());
            match check.await {
                Ok(()) => continue,
                Err(e) => {
                    if let (StoreError::Fenced { .. }, Some(s)) = (&e, &self.series) {
                        s.fenced();
                    }
                    return e;
                }
            }
        }
    }
}
