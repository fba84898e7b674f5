//! The controller's metrics: one [`TargetSeries`] per target, rendered on `/metrics`. Label
//! values are bounded (env, role, trigger, result, state, probe failure class, evidence source)
//! and tags appear only in the two info gauges, whose old series vanish when the tag changes.
//! Never a raw error string.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use super::exposition::{header, histogram, label_pairs, sample, Kind};
use super::series::{
    CanarySeries, RollbackResult, TargetSeries, PROBE_FAILURE_CLASSES, STATES, TRIGGERS, VERDICTS,
};
use crate::target::TargetId;

/// Names and meaning are listed in the README.
pub struct Metrics {
    targets: RwLock<BTreeMap<TargetId, Arc<TargetSeries>>>,
    /// Leadership and store reachability, controller-wide.
    pub lease: Arc<super::LeaseSeries>,
    /// Size of the last render, to allocate the next one at once.
    last_len: AtomicUsize,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A sole instance's metrics (SQLite store): it leads from the start.
    pub fn new() -> Metrics {
        Metrics::with_lease(super::LeaseSeries::new("sqlite", true))
    }

    pub fn with_lease(lease: super::LeaseSeries) -> Metrics {
        Metrics {
            targets: RwLock::default(),
            lease: Arc::new(lease),
            last_len: AtomicUsize::new(0),
        }
    }

    /// The target's series, created at their zero values on first use so that dashboards and
    /// `absent()` see the target before anything happened. A restarted watcher gets the same
    /// series back (its counters go on).
    pub fn target(&self, id: &TargetId) -> Arc<TargetSeries> {
        let read = self.targets.read().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = read.get(id) {
            return s.clone();
        }
        drop(read);
        let mut write = self.targets.write().unwrap_or_else(|p| p.into_inner());
        write
            .entry(id.clone())
            .or_insert_with(|| {
                let labels = label_pairs(&[("env", id.env.as_str()), ("role", &id.role)]);
                Arc::new(TargetSeries::new(labels))
            })
            .clone()
    }

    /// The whole exposition. Synchronous and proportional to the number of targets (about 2 KB
    /// each): call it off the async workers.
    pub fn render(&self) -> String {
        let targets: Vec<Arc<TargetSeries>> = {
            let map = self.targets.read().unwrap_or_else(|p| p.into_inner());
            map.values().cloned().collect()
        };
        let mut out = String::with_capacity(self.last_len.load(Relaxed) + 4096);
        render_targets(&mut out, &targets);
        header(
            &mut out,
            "rollwatch_build_info",
            "rollwatch version and git commit (value 1).",
            Kind::Gauge,
        );
        let labels = label_pairs(&[
            ("commit", crate::build_info::GIT_COMMIT),
            ("version", crate::build_info::VERSION),
        ]);
        sample(&mut out, "rollwatch_build_info", &labels, &[], 1u64);
        self.lease.render(&mut out);
        self.last_len.store(out.len(), Relaxed);
        out
    }
}

/// Writes one family: its header, then `each` for every target.
fn family(
    out: &mut String,
    targets: &[Arc<TargetSeries>],
    (name, help, kind): (&str, &str, Kind),
    mut each: impl FnMut(&mut String, &str, &TargetSeries),
) {
    header(out, name, help, kind);
    for t in targets {
        each(out, name, t);
    }
}

fn render_targets(out: &mut String, targets: &[Arc<TargetSeries>]) {
    use std::sync::atomic::Ordering::Relaxed as R;
    let flag = |b: &std::sync::atomic::AtomicBool| u64::from(b.load(R));
    family(out, targets, ROLLBACKS, |out, name, t| {
        for (trigger, row) in TRIGGERS.iter().zip(&t.rollbacks) {
            for (result, n) in RollbackResult::ALL.iter().zip(row) {
                let extra = [("trigger", *trigger), ("result", result.as_str())];
                sample(out, name, &t.labels, &extra, n.load(R));
            }
        }
    });
    family(out, targets, VERDICTS_TOTAL, |out, name, t| {
        for (verdict, n) in VERDICTS.iter().zip(&t.verdicts) {
            sample(out, name, &t.labels, &[("verdict", verdict)], n.load(R));
        }
    });
    family(out, targets, DEPLOYS, |out, name, t| {
        sample(out, name, &t.labels, &[], t.deploys.load(R));
    });
    family(out, targets, STATE, |out, name, t| {
        let current = usize::from(t.state.load(R));
        for (i, state) in STATES.iter().enumerate() {
            sample(
                out,
                name,
                &t.labels,
                &[("state", state)],
                u64::from(i == current),
            );
        }
    });
    family(out, targets, PAUSED, |out, name, t| {
        sample(out, name, &t.labels, &[], flag(&t.paused));
    });
    family(out, targets, UNHEALTHY, |out, name, t| {
        sample(out, name, &t.labels, &[], flag(&t.unhealthy));
    });
    family(out, targets, GIVEN_UP, |out, name, t| {
        sample(out, name, &t.labels, &[], flag(&t.given_up));
    });
    family(out, targets, RUNNING_TAG, |out, name, t| {
        tag_sample(out, name, &t.labels, &t.running_tag);
    });
    family(out, targets, KNOWN_GOOD_TAG, |out, name, t| {
        tag_sample(out, name, &t.labels, &t.known_good_tag);
    });
    family(out, targets, DETECTION, |out, name, t| {
        if let Some(h) = t.detection.get() {
            histogram(out, name, &t.labels, &[], h);
        }
    });
    family(out, targets, ROLLBACK_DURATION, |out, name, t| {
        for (trigger, h) in TRIGGERS.iter().zip(&t.rollback_duration) {
            if let Some(h) = h.get() {
                histogram(out, name, &t.labels, &[("trigger", trigger)], h);
            }
        }
    });
    family(out, targets, PROBE_DURATION, |out, name, t| {
        histogram(out, name, &t.labels, &[], &t.probe_duration);
    });
    family(out, targets, PROBE_FAILURES, |out, name, t| {
        for (class, n) in PROBE_FAILURE_CLASSES.iter().zip(&t.probe_failures) {
            sample(out, name, &t.labels, &[("reason", class)], n.load(R));
        }
    });
    family(out, targets, SOURCE_UP, |out, name, t| {
        sample(
            out,
            name,
            &t.labels,
            &[("source", "docker")],
            flag(&t.docker_up),
        );
        if let Ok(up) = u64::try_from(t.metrics_up.load(R)) {
            sample(out, name, &t.labels, &[("source", "metrics")], up);
        }
    });
    family(out, targets, LAST_ROLLBACK, |out, name, t| {
        let bits = t.last_rollback_bits.load(R);
        if bits != 0 {
            sample(out, name, &t.labels, &[], f64::from_bits(bits));
        }
    });
    family(out, targets, RESTARTS, |out, name, t| {
        sample(out, name, &t.labels, &[], t.restarts.load(R));
    });
    render_canaries(out, targets);
}

/// Only canary targets have these series.
fn render_canaries(out: &mut String, targets: &[Arc<TargetSeries>]) {
    use std::sync::atomic::Ordering::Relaxed as R;
    family(out, targets, CANARY_WEIGHT, |out, name, t| {
        let Some(c) = t.canary.get() else { return };
        for (slot, w) in ["blue", "green"].iter().zip(&c.weights) {
            if let Ok(w) = u64::try_from(w.load(R)) {
                sample(out, name, &t.labels, &[("slot", slot)], w);
            }
        }
    });
    type Read = fn(&CanarySeries) -> u64;
    let counters: [(FamilyDoc, Read); 4] = [
        (CANARY_STEPS, |c: &CanarySeries| c.steps.load(R)),
        (CANARY_PROMOTIONS, |c: &CanarySeries| c.promotions.load(R)),
        (CANARY_ABORTS, |c: &CanarySeries| c.aborts.load(R)),
        (CANARY_FLIP_BACKS, |c: &CanarySeries| c.flip_backs.load(R)),
    ];
    for (doc, value) in counters {
        family(out, targets, doc, |out, name, t| {
            if let Some(c) = t.canary.get() {
                sample(out, name, &t.labels, &[], value(c));
            }
        });
    }
}

fn tag_sample(
    out: &mut String,
    name: &str,
    labels: &str,
    slot: &std::sync::Mutex<Option<Box<str>>>,
) {
    let tag = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(tag) = tag.as_deref() {
        sample(out, name, labels, &[("tag", tag)], 1u64);
    }
}

type FamilyDoc = (&'static str, &'static str, Kind);

const CANARY_WEIGHT: FamilyDoc = (
    "rollwatch_canary_weight",
    "A canary target's load-balancer weight per slot (blue, green), as last applied.",
    Kind::Gauge,
);
const CANARY_STEPS: FamilyDoc = (
    "rollwatch_canary_steps_total",
    "Canary steps begun (each a weight change towards the new version).",
    Kind::Counter,
);
const CANARY_PROMOTIONS: FamilyDoc = (
    "rollwatch_canary_promotions_total",
    "Canary deploys promoted to all of the traffic.",
    Kind::Counter,
);
const CANARY_ABORTS: FamilyDoc = (
    "rollwatch_canary_aborts_total",
    "Canary deploys aborted: all traffic back on the live version, the new one removed.",
    Kind::Counter,
);
const CANARY_FLIP_BACKS: FamilyDoc = (
    "rollwatch_canary_flip_backs_total",
    "Regressions after a promotion that moved all traffic back to the held slot.",
    Kind::Counter,
);

const ROLLBACKS: FamilyDoc = ("rollwatch_rollbacks_total", "Rollbacks by trigger (health, error_ratio, latency, alert, manual) and result (succeeded, failed, dry_run, refused).", Kind::Counter);
const VERDICTS_TOTAL: FamilyDoc = (
    "rollwatch_verdicts_total",
    "Verdicts on deploys: healthy (promoted), regressed, inconclusive.",
    Kind::Counter,
);
const DEPLOYS: FamilyDoc = (
    "rollwatch_deploys_total",
    "Deploys seen (a new running tag).",
    Kind::Counter,
);
const STATE: FamilyDoc = (
    "rollwatch_target_state",
    "1 for the state the target is in: unknown, watching, stable, regressed, rollback_failed.",
    Kind::Gauge,
);
const PAUSED: FamilyDoc = (
    "rollwatch_target_paused",
    "1 while automatic rollbacks of the target are paused.",
    Kind::Gauge,
);
const UNHEALTHY: FamilyDoc = (
    "rollwatch_target_unhealthy",
    "1 while a target that is not on probation fails its checks (no automatic action).",
    Kind::Gauge,
);
const GIVEN_UP: FamilyDoc = ("rollwatch_rollback_given_up", "1 while automatic rollbacks of the current deploy were refused too often (nothing changed) and are no longer tried.", Kind::Gauge);
const RUNNING_TAG: FamilyDoc = (
    "rollwatch_running_tag_info",
    "The tag the target runs (value 1).",
    Kind::Gauge,
);
const KNOWN_GOOD_TAG: FamilyDoc = (
    "rollwatch_known_good_tag_info",
    "The known-good tag a rollback would go to (value 1).",
    Kind::Gauge,
);
const DETECTION: FamilyDoc = (
    "rollwatch_detection_seconds",
    "Deploy seen to verdict regressed.",
    Kind::Histogram,
);
const ROLLBACK_DURATION: FamilyDoc = (
    "rollwatch_rollback_duration_seconds",
    "Rollback start to /health validated (or failed).",
    Kind::Histogram,
);
const PROBE_DURATION: FamilyDoc = (
    "rollwatch_probe_duration_seconds",
    "Health probe latency.",
    Kind::Histogram,
);
const PROBE_FAILURES: FamilyDoc = (
    "rollwatch_probe_failures_total",
    "Failed health probes by class: unreachable, timeout, status, not_ok.",
    Kind::Counter,
);
const SOURCE_UP: FamilyDoc = (
    "rollwatch_metrics_source_up",
    "1 when the target's evidence source (Docker, error metrics) answered last time.",
    Kind::Gauge,
);
const LAST_ROLLBACK: FamilyDoc = (
    "rollwatch_last_rollback_timestamp_seconds",
    "Unix time of the target's last finished rollback.",
    Kind::Gauge,
);
const RESTARTS: FamilyDoc = (
    "rollwatch_watcher_restarts_total",
    "Watcher tasks that panicked and were restarted by the supervisor.",
    Kind::Counter,
);

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::probe::ProbeFailure;
    use crate::store::Trigger;
    use crate::target::Env;

    fn id(env: Env, role: &str) -> TargetId {
        TargetId {
            env,
            role: role.into(),
        }
    }

    fn value(
        samples: &[crate::metrics::parse::Sample],
        name: &str,
        labels: &[(&str, &str)],
    ) -> f64 {
        let found: Vec<_> = samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v)))
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        found[0].value
    }

    #[test]
    fn every_series_parses_back_once_with_its_value() {
        let m = Metrics::new();
        let a = m.target(&id(Env::Staging, "backend"));
        let b = m.target(&id(Env::Production, "we\"ird"));
        assert!(
            Arc::ptr_eq(&a, &m.target(&id(Env::Staging, "backend"))),
            "one series per target"
        );
        a.probe(0.003, None);
        a.probe(0.2, Some(&ProbeFailure::Timeout));
        a.rollback(
            Trigger::Alert,
            RollbackResult::Succeeded,
            Some(4.0),
            Some(1_700_000_000.5),
        );
        a.regressed(Some(2.5));
        a.source_up(crate::telemetry::Source::Metrics, false);
        b.set_known_good_tag(Some("v1.0.0"));
        b.restarted();

        let text = m.render();
        let samples = crate::metrics::parse::parse(&text).expect("our renderer writes the format");
        let identities: HashSet<String> = samples
            .iter()
            .map(|s| format!("{}{:?}", s.name, s.labels))
            .collect();
        assert_eq!(identities.len(), samples.len(), "no series written twice");

        let sb = [("env", "staging"), ("role", "backend")];
        assert_eq!(
            value(&samples, "rollwatch_probe_duration_seconds_count", &sb),
            2.0
        );
        let le = [sb[0], sb[1], ("le", "0.005")];
        assert_eq!(
            value(&samples, "rollwatch_probe_duration_seconds_bucket", &le),
            1.0
        );
        let timeout = [sb[0], sb[1], ("reason", "timeout")];
        assert_eq!(
            value(&samples, "rollwatch_probe_failures_total", &timeout),
            1.0
        );
        let alert_ok = [sb[0], sb[1], ("trigger", "alert"), ("result", "succeeded")];
        assert_eq!(value(&samples, "rollwatch_rollbacks_total", &alert_ok), 1.0);
        let manual_failed = [sb[0], sb[1], ("trigger", "manual"), ("result", "failed")];
        assert_eq!(
            value(&samples, "rollwatch_rollbacks_total", &manual_failed),
            0.0
        );
        let alert = [sb[0], sb[1], ("trigger", "alert")];
        assert_eq!(
            value(&samples, "rollwatch_rollback_duration_seconds_sum", &alert),
            4.0
        );
        assert_eq!(
            value(&samples, "rollwatch_detection_seconds_count", &sb),
            1.0
        );
        let last = value(&samples, "rollwatch_last_rollback_timestamp_seconds", &sb);
        assert_eq!(last, 1_700_000_000.5);
        let metrics_src = [sb[0], sb[1], ("source", "metrics")];
        assert_eq!(
            value(&samples, "rollwatch_metrics_source_up", &metrics_src),
            0.0
        );

        let pb = [("env", "production"), ("role", "we\"ird")];
        assert_eq!(
            value(&samples, "rollwatch_watcher_restarts_total", &pb),
            1.0
        );
        let good = [pb[0], pb[1], ("tag", "v1.0.0")];
        assert_eq!(value(&samples, "rollwatch_known_good_tag_info", &good), 1.0);
        let pb_metrics = [pb[0], pb[1], ("source", "metrics")];
        assert!(
            !samples
                .iter()
                .any(|s| s.name == "rollwatch_metrics_source_up"
                    && pb_metrics.iter().all(|(k, v)| s.label(k) == Some(v))),
            "no metrics-source series before the source first changed state"
        );
        assert!(
            !text.contains("rollwatch_detection_seconds_count{env=\"production\""),
            "rare histograms are absent until observed"
        );
        // 20 rollback + 3 verdict + 5 state + 4 failure + 9 probe histogram series, and 7 single
        // ones: deploys, paused, unhealthy, given up, docker up, restarts, known-good tag.
        let per_target = samples
            .iter()
            .filter(|s| s.label("env") == Some("production"))
            .count();
        assert_eq!(per_target, 20 + 3 + 5 + 4 + 9 + 7);
    }
}
