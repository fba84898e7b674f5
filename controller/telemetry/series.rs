//! One target's exported series, in one allocation of atomics (about half a kilobyte), written by
//! its watcher and read by the `/metrics` renderer without a lock. Series that exist from the start
//! (counters at 0, so `increase()` sees their first step) are plain fields; the two rare
//! histograms are allocated on their first observation and absent until then.

use std::sync::atomic::{AtomicBool, AtomicI8, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

use crate::probe::ProbeFailure;
use crate::store::Trigger;

/// Every state a target can be in, so the state gauge always has all series (0 or 1).
pub const STATES: [&str; 5] = [
    "unknown",
    "watching",
    "stable",
    "regressed",
    "rollback_failed",
];

/// `reason` values of `rollwatch_probe_failures_total`, in [`ProbeFailure`] order.
pub(super) const PROBE_FAILURE_CLASSES: [&str; 4] = ["unreachable", "timeout", "status", "not_ok"];

/// `trigger` values of the rollback series, in [`trigger_index`] order.
pub(super) const TRIGGERS: [&str; 5] = ["health", "error_ratio", "latency", "alert", "manual"];

/// `verdict` values of `rollwatch_verdicts_total`.
pub(super) const VERDICTS: [&str; 3] = ["healthy", "regressed", "inconclusive"];

/// Probe latency buckets: enough for the dashboard's p95 (a probe slower than 2.5 s is near any
/// sane timeout); each bucket is a series per target, so there are 6 and not the usual 11.
pub(super) static PROBE_BOUNDS: [f64; 6] = [0.005, 0.025, 0.1, 0.25, 1.0, 2.5];

/// Detection and rollback durations, in seconds.
pub(super) static SECONDS_BOUNDS: [f64; 13] = [
    0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 60.0, 120.0, 300.0,
];

/// How a rollback ended, the `result` label of `rollwatch_rollbacks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackResult {
    Succeeded,
    Failed,
    DryRun,
    /// Nothing was changed (a guard rail or a failed precondition said no).
    Refused,
}

impl RollbackResult {
    pub const ALL: [RollbackResult; 4] = [
        RollbackResult::Succeeded,
        RollbackResult::Failed,
        RollbackResult::DryRun,
        RollbackResult::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RollbackResult::Succeeded => "succeeded",
            RollbackResult::Failed => "failed",
            RollbackResult::DryRun => "dry_run",
            RollbackResult::Refused => "refused",
        }
    }
}

/// Where a target's evidence comes from, the `source` label of `rollwatch_metrics_source_up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Docker,
    Metrics,
}

pub(super) fn trigger_index(t: Trigger) -> usize {
    match t {
        Trigger::Health => 0,
        Trigger::ErrorRatio => 1,
        Trigger::Latency => 2,
        Trigger::Alert => 3,
        Trigger::Manual => 4,
    }
}

/// A histogram with fixed bounds; bucket counts are kept per bucket (not cumulative) so an
/// observation touches one counter, and made cumulative when rendered.
pub struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    buckets: [AtomicU64; N],
    above: AtomicU64,
    sum_bits: AtomicU64,
}

pub(super) struct HistogramSnapshot<const N: usize> {
    pub buckets: [u64; N],
    pub count: u64,
    pub sum: f64,
}

impl<const N: usize> Histogram<N> {
    pub(super) fn new(bounds: &'static [f64; N]) -> Histogram<N> {
        Histogram {
            bounds,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            above: AtomicU64::new(0),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub(super) fn observe(&self, v: f64) {
        match self.bounds.iter().position(|b| v <= *b) {
            Some(i) => self.buckets[i].fetch_add(1, Relaxed),
            None => self.above.fetch_add(1, Relaxed),
        };
        let _ = self.sum_bits.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + v).to_bits())
        });
    }

    pub(super) fn bounds(&self) -> &'static [f64; N] {
        self.bounds
    }

    pub(super) fn snapshot(&self) -> HistogramSnapshot<N> {
        let buckets = self.buckets.each_ref().map(|b| b.load(Relaxed));
        HistogramSnapshot {
            count: buckets.iter().sum::<u64>() + self.above.load(Relaxed),
            buckets,
            sum: f64::from_bits(self.sum_bits.load(Relaxed)),
        }
    }
}

type Seconds = Histogram<13>;

/// The target's series. The fields are read by [`super::render`]; the watcher (and its
/// supervisor) write them through the methods.
pub struct TargetSeries {
    /// `env="…",role="…"`, escaped once.
    pub(super) labels: Box<str>,
    pub(super) state: AtomicU8,
    pub(super) paused: AtomicBool,
    pub(super) given_up: AtomicBool,
    pub(super) unhealthy: AtomicBool,
    pub(super) deploys: AtomicU64,
    pub(super) restarts: AtomicU64,
    pub(super) verdicts: [AtomicU64; 3],
    pub(super) rollbacks: [[AtomicU64; 4]; 5],
    pub(super) probe_failures: [AtomicU64; 4],
    pub(super) probe_duration: Histogram<6>,
    pub(super) detection: OnceLock<Box<Seconds>>,
    pub(super) rollback_duration: [OnceLock<Box<Seconds>>; 5],
    pub(super) docker_up: AtomicBool,
    /// -1 until the metrics source first changed state, then 0 or 1.
    pub(super) metrics_up: AtomicI8,
    /// Unix seconds as f64 bits; 0 until the first finished rollback.
    pub(super) last_rollback_bits: AtomicU64,
    pub(super) running_tag: Mutex<Option<Box<str>>>,
    pub(super) known_good_tag: Mutex<Option<Box<str>>>,
    /// Set for canary targets only: their weights and step, promotion and abort counts.
    pub(super) canary: OnceLock<Box<CanarySeries>>,
}

/// A canary target's series.
#[derive(Default)]
pub(super) struct CanarySeries {
    /// The weights of the blue and the green slot as last applied; -1 until known.
    pub(super) weights: [std::sync::atomic::AtomicI64; 2],
    pub(super) steps: AtomicU64,
    pub(super) promotions: AtomicU64,
    pub(super) aborts: AtomicU64,
    pub(super) flip_backs: AtomicU64,
}

impl TargetSeries {
    pub(super) fn new(labels: String) -> TargetSeries {
        TargetSeries {
            labels: labels.into_boxed_str(),
            state: AtomicU8::new(0),
            paused: AtomicBool::new(false),
            given_up: AtomicBool::new(false),
            unhealthy: AtomicBool::new(false),
            deploys: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            verdicts: Default::default(),
            rollbacks: Default::default(),
            probe_failures: Default::default(),
            probe_duration: Histogram::new(&PROBE_BOUNDS),
            detection: OnceLock::new(),
            rollback_duration: Default::default(),
            docker_up: AtomicBool::new(true),
            metrics_up: AtomicI8::new(-1),
            last_rollback_bits: AtomicU64::new(0),
            running_tag: Mutex::new(None),
            known_good_tag: Mutex::new(None),
            canary: OnceLock::new(),
        }
    }

    fn canary(&self) -> &CanarySeries {
        self.canary.get_or_init(|| {
            let s = CanarySeries::default();
            for w in &s.weights {
                w.store(-1, Relaxed);
            }
            Box::new(s)
        })
    }

    /// Makes the canary series exist at their zero values (a canary target, before its first deploy).
    pub fn canary_target(&self) {
        self.canary();
    }

    pub fn canary_weights(&self, w: crate::store::Weights) {
        let c = self.canary();
        c.weights[0].store(i64::from(w.blue), Relaxed);
        c.weights[1].store(i64::from(w.green), Relaxed);
    }

    pub fn canary_stepped(&self) {
        self.canary().steps.fetch_add(1, Relaxed);
    }

    pub fn canary_ended(&self, promoted: bool) {
        let c = self.canary();
        if promoted { &c.promotions } else { &c.aborts }.fetch_add(1, Relaxed);
    }

    pub fn canary_flipped_back(&self) {
        self.canary().flip_backs.fetch_add(1, Relaxed);
    }

    /// 1 for `state` (one of [`STATES`]), 0 for the others.
    pub fn set_state(&self, state: &str) {
        let i = STATES.iter().position(|s| *s == state);
        debug_assert!(i.is_some(), "unknown state {state}");
        self.state.store(i.unwrap_or(0) as u8, Relaxed);
    }

    pub fn set_flags(&self, paused: bool, given_up: bool, unhealthy: bool) {
        self.paused.store(paused, Relaxed);
        self.given_up.store(given_up, Relaxed);
        self.unhealthy.store(unhealthy, Relaxed);
    }

    pub fn probe(&self, seconds: f64, failure: Option<&ProbeFailure>) {
        self.probe_duration.observe(seconds);
        if let Some(f) = failure {
            let i = match f {
                ProbeFailure::Unreachable(_) => 0,
                ProbeFailure::Timeout => 1,
                ProbeFailure::Status(_) => 2,
                ProbeFailure::NotOk(_) => 3,
            };
            self.probe_failures[i].fetch_add(1, Relaxed);
        }
    }

    pub fn deployed(&self) {
        self.deploys.fetch_add(1, Relaxed);
    }

    pub fn healthy(&self) {
        self.verdicts[0].fetch_add(1, Relaxed);
    }

    /// A regressed verdict; `detection` is the time from the deploy seen to this verdict.
    pub fn regressed(&self, detection: Option<f64>) {
        self.verdicts[1].fetch_add(1, Relaxed);
        if let Some(s) = detection {
            self.detection
                .get_or_init(|| Box::new(Histogram::new(&SECONDS_BOUNDS)))
                .observe(s);
        }
    }

    pub fn inconclusive(&self) {
        self.verdicts[2].fetch_add(1, Relaxed);
    }

    /// A rollback ended. `took` (seconds) feeds the duration histogram; `finished_at` (Unix
    /// seconds) the last-rollback gauge, for rollbacks that ran.
    pub fn rollback(
        &self,
        trigger: Trigger,
        result: RollbackResult,
        took: Option<f64>,
        finished_at: Option<f64>,
    ) {
        let t = trigger_index(trigger);
        let r = RollbackResult::ALL
            .iter()
            .position(|x| *x == result)
            .unwrap_or(0);
        self.rollbacks[t][r].fetch_add(1, Relaxed);
        if let Some(s) = took {
            self.rollback_duration[t]
                .get_or_init(|| Box::new(Histogram::new(&SECONDS_BOUNDS)))
                .observe(s);
        }
        if let Some(at) = finished_at {
            self.last_rollback_bits.store(at.to_bits(), Relaxed);
        }
    }

    pub fn source_up(&self, source: Source, up: bool) {
        match source {
            Source::Docker => self.docker_up.store(up, Relaxed),
            Source::Metrics => self.metrics_up.store(i8::from(up), Relaxed),
        }
    }

    /// The watcher task panicked and was restarted.
    pub fn restarted(&self) {
        self.restarts.fetch_add(1, Relaxed);
    }

    pub fn set_running_tag(&self, tag: Option<&str>) {
        replace_tag(&self.running_tag, tag);
    }

    pub fn set_known_good_tag(&self, tag: Option<&str>) {
        replace_tag(&self.known_good_tag, tag);
    }
}

/// Replaces the exported tag; allocates only when it changed (it is set every round).
fn replace_tag(slot: &Mutex<Option<Box<str>>>, tag: Option<&str>) {
    let mut current = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if current.as_deref() != tag {
        *current = tag.map(Box::from);
    }
}
