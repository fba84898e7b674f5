//! How a watcher reports: the events it records and broadcasts, the status board behind
//! `GET /api/v1/targets`, the metric gauges, and the known-good bookkeeping they show.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use super::*;

/// What `GET /api/v1/targets` and `rollwatch status` show for a target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    pub target: TargetId,
    pub state: String,
    pub running_tag: Option<String>,
    pub known_good_tag: Option<String>,
    pub since_ms: i64,
    /// When the running tag was first seen (the last deploy), for the alert window.
    pub last_deploy_ms: Option<i64>,
    pub paused: bool,
    pub dry_run: bool,
    pub docker_reachable: bool,
    pub last_probe: Option<String>,
    pub detail: Option<String>,
    /// Automatic rollbacks of the running deploy were refused until rollwatch gave up on it.
    pub halted: bool,
    /// The watch window in progress.
    pub window: Option<WindowProgress>,
    /// Whether the error-metrics source answered its last read; `None` without one.
    pub metrics_up: Option<bool>,
    /// A canary target's deploy in flight or on hold, in words.
    pub canary: Option<String>,
}

impl TargetStatus {
    /// A target nothing is known of yet.
    pub fn new(target: TargetId, dry_run: bool) -> TargetStatus {
        TargetStatus {
            target,
            state: "unknown".into(),
            running_tag: None,
            known_good_tag: None,
            since_ms: 0,
            last_deploy_ms: None,
            paused: false,
            dry_run,
            docker_reachable: true,
            last_probe: None,
            detail: None,
            halted: false,
            window: None,
            metrics_up: None,
            canary: None,
        }
    }
}

/// How far a watch window has come, for the status page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowProgress {
    pub since_ms: i64,
    pub bake_ms: i64,
    pub failures: u32,
    pub failures_limit: u32,
    /// The metric evidence so far, in words; `None` without a metrics source.
    pub metrics: Option<String>,
}

/// Every target's status for the API. Each watcher owns its slot and writes it every round
/// without a lookup in the map (at 1,000 targets a second, the key comparisons showed in
/// profiles); readers copy all slots.
#[derive(Clone, Default)]
pub struct StatusBoard {
    slots: Arc<RwLock<BTreeMap<String, Arc<Mutex<TargetStatus>>>>>,
}

impl StatusBoard {
    /// The target's slot, created with `fresh` on first use; a restarted watcher gets its old one.
    pub fn slot(&self, id: &TargetId, fresh: impl FnOnce() -> TargetStatus) -> StatusSlot {
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        slots
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(fresh())))
            .clone()
    }

    /// Every target's status, ordered by `env/role`.
    pub fn all(&self) -> Vec<TargetStatus> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        slots
            .values()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }
}

/// One target's entry on the [`StatusBoard`].
pub type StatusSlot = Arc<Mutex<TargetStatus>>;

impl Watcher {
    /// Feeds this round to the window's sampler and queues a sample when one is due (see
    /// [`super::sampler`]); after the round's transition, closes the window it left.
    pub(super) fn record_sample(&mut self, probe: Option<(i64, bool)>) {
        let span = match &self.state.phase {
            Phase::Watching { since_ms, tag, .. } => self.sampler.round(*since_ms, tag, probe),
            _ => self.sampler.close(),
        };
        let Some((span, tag)) = span else {
            return;
        };
        let counts = |e: &Evidence| (e.requests(), e.errors());
        let (candidate, baseline) = match &self.feed {
            Some(f) => (
                Some(counts(&f.watch.candidate)),
                Some(counts(&f.watch.baseline)),
            ),
            None => (None, None),
        };
        self.writer.sample(Sample {
            target: self.id.clone(),
            window_ms: span.window_ms,
            tag,
            at_ms: now_ms(),
            latency_ms: span.latency_ms,
            probes: span.probes,
            failures: span.failures,
            candidate,
            baseline,
        });
    }

    /// What the metrics said about the candidate, for promotion and status messages.
    pub(super) fn metric_note(&self) -> String {
        match self.feed.as_ref().and_then(|f| f.last.as_ref()) {
            Some(MetricVerdict::Healthy(e)) => format!("; metrics healthy: {e}"),
            Some(MetricVerdict::Waiting(e)) => {
                format!("; metrics inconclusive (too little traffic: {e})")
            }
            Some(MetricVerdict::Inconclusive(e)) => {
                format!("; metrics inconclusive (source down: {e})")
            }
            Some(MetricVerdict::Regressed { evidence, .. }) => format!("; metrics: {evidence}"),
            None if self.feed.is_some() => "; metrics inconclusive (no reading yet)".into(),
            None => String::new(),
        }
    }

    /// After a restart, a target already running a known-good tag is stable, not on probation:
    /// probation is for tags nobody has vouched for yet.
    pub(super) async fn adopt_known_good(&mut self) {
        if self.state.phase != Phase::Unknown || self.observe().await.is_err() {
            return;
        }
        let Some(running) = self.running_tag.clone() else {
            return;
        };
        let known = self
            .store
            .known_good_tags(self.id.clone())
            .await
            .unwrap_or_default();
        let bad = self
            .store
            .is_bad(self.id.clone(), running.clone())
            .await
            .unwrap_or(true);
        let known_good = !bad && known.iter().any(|(t, _, _)| *t == running);
        for d in self.transition(Input::Adopt {
            running,
            known_good,
        }) {
            self.act(d).await;
        }
    }

    /// A restart keeps the metric baseline measured on the tag that still runs.
    pub(super) async fn load_baseline(&mut self) {
        let (Some(feed), Phase::Stable { tag }) = (self.feed.as_mut(), &self.state.phase) else {
            return;
        };
        if let Ok(Some(json)) = self.store.baseline(self.id.clone(), tag.clone()).await {
            match serde_json::from_str::<Evidence>(&json) {
                Ok(e) => {
                    tracing::info!(target_id = %self.id, requests = e.requests(), "metric baseline restored");
                    feed.watch.baseline = e;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "saved metric baseline unreadable; measuring anew")
                }
            }
        }
    }

    /// The tag a rollback would pick (newest known-good that is neither running nor marked
    /// bad), else the newest known-good that is not bad: never a tag marked bad, because the
    /// rollback itself skips those and status must not promise what rollwatch will not do.
    pub(super) async fn refresh_known_good(&mut self) {
        let id = self.id.clone();
        let pick = match self
            .store
            .last_known_good(id.clone(), self.running_tag.clone())
            .await
        {
            Ok(None) => self.store.last_known_good(id, None).await,
            other => other,
        };
        match pick {
            Ok(tag) => {
                self.known_good = tag.map(|t| t.to_string());
                self.store_unread = false;
            }
            // Said once per outage: while the store is away this runs every round.
            Err(e) if !self.store_unread => {
                self.store_unread = true;
                tracing::warn!(target_id = %self.id, error = %e, "cannot read known-good tags (said once until the store answers)")
            }
            Err(e) => {
                tracing::debug!(target_id = %self.id, error = %e, "cannot read known-good tags")
            }
        }
    }

    /// Records and broadcasts an event. The guard rails, when they changed since last written,
    /// go into the store in the same transaction.
    pub(super) async fn emit(&mut self, kind: &str, tag: Option<String>, message: String) {
        let id = self.id.clone();
        // Everything a person should look at: a rollback that did not happen is one.
        let loud = matches!(
            kind,
            "rollback_failed"
                | "regressed"
                | "rollback"
                | "unhealthy"
                | "rollback_refused"
                | "rollback_retry"
                | "rollback_given_up"
        );
        if loud {
            tracing::warn!(target_id = %id, kind, tag = tag.as_deref().unwrap_or(""), "{message}");
        } else {
            tracing::info!(target_id = %id, kind, tag = tag.as_deref().unwrap_or(""), "{message}");
        }
        let control = self.state.control();
        let changed = (control != self.saved_control).then(|| control.clone());
        let stored = self
            .store
            .record_event_with_control(id.clone(), kind, tag.clone(), message.clone(), changed)
            .await;
        let event_id = match stored {
            Ok(event_id) => {
                self.saved_control = control;
                event_id
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record event");
                0
            }
        };
        let _ = self.events.send(EventRecord {
            id: event_id,
            at_ms: now_ms(),
            target: id,
            kind: kind.into(),
            tag,
            message,
        });
    }

    pub(super) fn publish(&mut self) {
        self.series.set_state(self.state.phase.name());
        let unhealthy = matches!(self.state.phase, Phase::Stable { .. })
            && self.state.stable_failures >= self.policy.failures;
        self.series.set_flags(
            self.state.paused,
            self.state.refusals >= crate::verdict::REFUSAL_LIMIT,
            unhealthy,
        );
        self.series.set_running_tag(self.running_tag.as_deref());
        self.series.set_known_good_tag(self.known_good.as_deref());
        let detail = match &self.state.phase {
            Phase::Watching {
                since_ms,
                failures,
                last_failure,
                ..
            } => Some(format!(
                "{}s of {} watched, {failures} consecutive failures{}{}",
                (steady_ms() - since_ms) / 1000,
                humantime::format_duration(self.target.watch.bake),
                last_failure
                    .as_ref()
                    .map(|f| format!(", last: {f}"))
                    .unwrap_or_default(),
                self.metric_note()
            )),
            Phase::Regressed { reason, .. } | Phase::RollbackFailed { reason, .. } => {
                Some(reason.clone())
            }
            _ => None,
        };
        let canary = self.canary.as_ref().and_then(|c| c.phase().describe());
        let detail = match (&canary, detail) {
            (Some(c), Some(d)) => Some(format!("{c}; {d}")),
            (c, d) => c.clone().or(d),
        };
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        // Field by field into the entry, reusing its strings' buffers: this runs every round.
        status.state.clear();
        status.state.push_str(self.state.phase.name());
        status.running_tag.clone_from(&self.running_tag);
        status.known_good_tag.clone_from(&self.known_good);
        status.since_ms = self.since_ms;
        status.last_deploy_ms = self.last_deploy_ms;
        status.paused = self.state.paused;
        status.docker_reachable = self.docker_reachable;
        status.last_probe.clone_from(&self.last_probe);
        status.detail = detail;
        status.canary = canary;
        status.halted = self.state.refusals >= crate::verdict::REFUSAL_LIMIT;
        status.metrics_up = self.feed.as_ref().map(|f| f.is_up());
        status.window = match &self.state.phase {
            Phase::Watching {
                since_ms, failures, ..
            } => Some(WindowProgress {
                since_ms: *since_ms,
                bake_ms: i64::try_from(self.target.watch.bake.as_millis()).unwrap_or(i64::MAX),
                failures: *failures,
                failures_limit: self.policy.failures,
                metrics: self.feed.as_ref().map(|_| {
                    let note = self.metric_note();
                    note.trim_start_matches("; ").to_string()
                }),
            }),
            _ => None,
        };
    }
}
