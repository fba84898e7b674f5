//! The canary deploy's record as it happens: a traffic driver that writes every weight change
//! to the store as an intent before asking the balancer (and marks it applied after), and the
//! steering that records each step and hands the flow people's orders. A `kill -9` anywhere
//! leaves the store saying which weights were meant; the restart finishes from there.

use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc};

use super::flow::{Manual, Steering};
use crate::store::{now_ms, EventRecord, Store, Weights};
use crate::target::TargetId;
use crate::telemetry::TargetSeries;
use crate::traffic::{Slot, SlotReading, SlotState, TrafficDriver, TrafficError};

/// Where a deploy's events go: the store (history, `rollwatch wait`) and the live channel
/// (status page, demo).
#[derive(Clone)]
pub struct Journal {
    pub store: Store,
    pub events: broadcast::Sender<EventRecord>,
    pub series: Arc<TargetSeries>,
    pub target: TargetId,
}

impl Journal {
    pub async fn event(&self, kind: &str, tag: &str, message: String) {
        let at_ms = now_ms();
        let id = match self
            .store
            .record_event(
                self.target.clone(),
                kind,
                Some(tag.to_string()),
                message.clone(),
            )
            .await
        {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(target_id = %self.target, error = %e, "cannot record a canary event");
                0
            }
        };
        tracing::info!(target_id = %self.target, kind, tag, "{message}");
        let _ = self.events.send(EventRecord {
            id,
            at_ms,
            target: self.target.clone(),
            kind: kind.to_string(),
            tag: Some(tag.to_string()),
            message,
        });
    }
}

/// `D` with every weight change recorded against canary deploy `id`.
pub struct Recorded<'a, D> {
    pub inner: &'a D,
    pub journal: Journal,
    pub id: i64,
    /// The weights as last meant (the store's copy).
    weights: Mutex<Weights>,
}

impl<'a, D: TrafficDriver> Recorded<'a, D> {
    pub fn new(inner: &'a D, journal: Journal, id: i64, weights: Weights) -> Self {
        journal.series.canary_weights(weights);
        Recorded {
            inner,
            journal,
            id,
            weights: Mutex::new(weights),
        }
    }

    pub fn weights(&self) -> Weights {
        *self.weights.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<D: TrafficDriver> TrafficDriver for Recorded<'_, D> {
    async fn set_weights(&self, weights: &[(Slot, u32)]) -> Result<(), TrafficError> {
        let meant = self.weights().with(weights);
        let store = &self.journal.store;
        store
            .canary_weights_meant(self.id, meant)
            .await
            .map_err(|e| TrafficError::Record(e.to_string()))?;
        *self.weights.lock().unwrap_or_else(|p| p.into_inner()) = meant;
        self.inner.set_weights(weights).await?;
        self.journal.series.canary_weights(meant);
        store
            .canary_weights_applied(self.id)
            .await
            .map_err(|e| TrafficError::Record(e.to_string()))
    }

    async fn set_state(&self, slot: Slot, state: SlotState) -> Result<(), TrafficError> {
        self.inner.set_state(slot, state).await
    }

    async fn read(&self) -> Result<[SlotReading; 2], TrafficError> {
        self.inner.read().await
    }
}

/// Records each step and passes on people's orders.
pub struct Steer<'a> {
    pub journal: &'a Journal,
    pub id: i64,
    pub tag: &'a str,
    pub orders: &'a Mutex<mpsc::Receiver<Manual>>,
}

impl Steering for Steer<'_> {
    async fn stepped(&self, percent: u32, at_ms: i64) {
        if let Err(e) = self
            .journal
            .store
            .canary_step(self.id, percent, at_ms)
            .await
        {
            tracing::error!(error = %e, "cannot record a canary step");
        }
        self.journal.series.canary_stepped();
        self.journal
            .event(
                "canary_step",
                self.tag,
                format!("{} takes {percent}% of the traffic", self.tag),
            )
            .await;
        // Crash-safety tests stop the controller here, mid-deploy.
        if percent < 100 && percent > 10 {
            crate::rollback::fault_point("canary-mid-step").await;
        }
    }

    fn order(&self) -> Option<Manual> {
        self.orders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_recv()
            .ok()
    }
}
