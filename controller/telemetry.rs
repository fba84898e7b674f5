//! What rollwatch tells the outside world: logs (human-readable by default, JSON with
//! `--log-format json`) and the Prometheus metrics served on `/metrics`. Label values are bounded:
//! env, role, trigger, result, state, probe failure class — and tags only in the two info gauges,
//! whose old series are removed when the tag changes. Never a raw error string.

use std::io::IsTerminal;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tracing_subscriber::EnvFilter;

use crate::probe::ProbeFailure;
use crate::target::TargetId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber; logs go to stderr so command output on stdout stays clean.
/// `default_level` applies when `RUST_LOG` is unset.
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Colour codes only for a person at a terminal. tracing-subscriber colours whenever `NO_COLOR`
/// is unset, terminal or not, so log files, pipes and journald got escape sequences; here a
/// non-terminal or a non-empty `NO_COLOR` (no-color.org) means plain text.
pub fn colour(is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// `reason` values of `rollwatch_probe_failures_total`, in [`ProbeFailure`] order.
const PROBE_FAILURE_CLASSES: [&str; 4] = ["unreachable", "timeout", "status", "not_ok"];

/// One target's per-round series, resolved once. At 1,000 targets a round each second, looking
/// every series up by its labels (hashing env and role) was a visible share of rollwatch's CPU.
pub struct TargetSeries {
    state: [IntGauge; 5],
    paused: IntGauge,
    given_up: IntGauge,
    unhealthy: IntGauge,
    probe_duration: Histogram,
    probe_failures: [IntCounter; 4],
}

impl TargetSeries {
    /// 1 for `state`, 0 for the others.
    pub fn set_state(&self, state: &str) {
        for (name, gauge) in STATES.iter().zip(&self.state) {
            gauge.set(i64::from(*name == state));
        }
    }

    pub fn set_flags(&self, paused: bool, given_up: bool, unhealthy: bool) {
        self.paused.set(i64::from(paused));
        self.given_up.set(i64::from(given_up));
        self.unhealthy.set(i64::from(unhealthy));
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
            self.probe_failures[i].inc();
        }
    }
}

/// Every state a target can be in, so the state gauge always has all series (0 or 1).
pub const STATES: [&str; 5] = [
    "unknown",
    "watching",
    "stable",
    "regressed",
    "rollback_failed",
];

/// The controller's metrics. Names and meaning are listed in the README.
pub struct Metrics {
    registry: Registry,
    pub rollbacks: IntCounterVec,
    pub verdicts: IntCounterVec,
    pub deploys: IntCounterVec,
    pub state: IntGaugeVec,
    pub paused: IntGaugeVec,
    pub unhealthy: IntGaugeVec,
    pub running_tag: IntGaugeVec,
    pub known_good_tag: IntGaugeVec,
    pub detection: HistogramVec,
    pub rollback_duration: HistogramVec,
    pub probe_duration: HistogramVec,
    pub probe_failures: IntCounterVec,
    pub source_up: IntGaugeVec,
    pub last_rollback: GaugeVec,
    pub given_up: IntGaugeVec,
    pub task_restarts: IntCounterVec,
    pub build_info: IntGaugeVec,
}

fn label(id: &TargetId) -> [&str; 2] {
    [id.env.as_str(), id.role.as_str()]
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let tr = &["env", "role"];
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m;
                registry.register(Box::new(m.clone()))?;
                m
            }};
        }
        let seconds = vec![
            0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 60.0, 120.0, 300.0,
        ];
        let m = Metrics {
            rollbacks: reg!(IntCounterVec::new(
                Opts::new("rollwatch_rollbacks_total", "Rollbacks by trigger (health, error_ratio, latency, alert, manual) and result (succeeded, failed, dry_run)."),
                &["env", "role", "trigger", "result"]
            )?),
            verdicts: reg!(IntCounterVec::new(
                Opts::new("rollwatch_verdicts_total", "Verdicts on deploys: healthy (promoted), regressed, inconclusive."),
                &["env", "role", "verdict"]
            )?),
            deploys: reg!(IntCounterVec::new(Opts::new("rollwatch_deploys_total", "Deploys seen (a new running tag)."), tr)?),
            state: reg!(IntGaugeVec::new(
                Opts::new("rollwatch_target_state", "1 for the state the target is in: unknown, watching, stable, regressed, rollback_failed."),
                &["env", "role", "state"]
            )?),
            paused: reg!(IntGaugeVec::new(Opts::new("rollwatch_target_paused", "1 while automatic rollbacks of the target are paused."), tr)?),
            unhealthy: reg!(IntGaugeVec::new(
                Opts::new("rollwatch_target_unhealthy", "1 while a target that is not on probation fails its checks (no automatic action)."),
                tr
            )?),
            running_tag: reg!(IntGaugeVec::new(Opts::new("rollwatch_running_tag_info", "The tag the target runs (value 1)."), &["env", "role", "tag"])?),
            known_good_tag: reg!(IntGaugeVec::new(
                Opts::new("rollwatch_known_good_tag_info", "The known-good tag a rollback would go to (value 1)."),
                &["env", "role", "tag"]
            )?),
            detection: reg!(HistogramVec::new(
                HistogramOpts::new("rollwatch_detection_seconds", "Deploy seen to verdict regressed.").buckets(seconds.clone()),
                tr
            )?),
            rollback_duration: reg!(HistogramVec::new(
                HistogramOpts::new("rollwatch_rollback_duration_seconds", "Rollback start to /health validated (or failed).").buckets(seconds),
                &["env", "role", "trigger"]
            )?),
            probe_duration: reg!(HistogramVec::new(
                HistogramOpts::new("rollwatch_probe_duration_seconds", "Health probe latency.")
                    .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
                tr
            )?),
            probe_failures: reg!(IntCounterVec::new(
                Opts::new("rollwatch_probe_failures_total", "Failed health probes by class: unreachable, timeout, status, not_ok."),
                &["env", "role", "reason"]
            )?),
            source_up: reg!(IntGaugeVec::new(
                Opts::new("rollwatch_metrics_source_up", "1 when the target's evidence source (Docker, error metrics) answered last time."),
                &["env", "role", "source"]
            )?),
            last_rollback: reg!(GaugeVec::new(
                Opts::new("rollwatch_last_rollback_timestamp_seconds", "Unix time of the target's last finished rollback."),
                tr
            )?),
            given_up: reg!(IntGaugeVec::new(
                Opts::new("rollwatch_rollback_given_up", "1 while automatic rollbacks of the current deploy were refused too often (nothing changed) and are no longer tried."),
                tr
            )?),
            task_restarts: reg!(IntCounterVec::new(
                Opts::new("rollwatch_watcher_restarts_total", "Watcher tasks that panicked and were restarted by the supervisor."),
                tr
            )?),
            build_info: reg!(IntGaugeVec::new(Opts::new("rollwatch_build_info", "rollwatch version and git commit (value 1)."), &["version", "commit"])?),
            registry,
        };
        m.build_info
            .with_label_values(&[crate::build_info::VERSION, crate::build_info::GIT_COMMIT])
            .set(1);
        Ok(m)
    }

    /// Creates every series of a target at its zero value, so dashboards and `absent()` see it
    /// before anything happened.
    /// Returns the target's per-round series, which it created.
    pub fn init_target(&self, id: &TargetId) -> TargetSeries {
        let [env, role] = label(id);
        let series = self.target_series(id);
        series.set_state("unknown");
        series.set_flags(false, false, false);
        self.task_restarts.with_label_values(&[env, role]);
        self.deploys.with_label_values(&[env, role]);
        for v in ["healthy", "regressed", "inconclusive"] {
            self.verdicts.with_label_values(&[env, role, v]);
        }
        self.source_up
            .with_label_values(&[env, role, "docker"])
            .set(1);
        // Counters must exist at 0 before their first increment, or increase() and rate() miss it.
        for trigger in ["health", "error_ratio", "latency", "alert", "manual"] {
            for result in ["succeeded", "failed", "dry_run", "refused"] {
                self.rollbacks
                    .with_label_values(&[env, role, trigger, result]);
            }
        }
        series
    }

    /// Replaces the target's info-gauge series for `gauge` with one for `tag`.
    pub fn set_tag(
        &self,
        gauge: &IntGaugeVec,
        id: &TargetId,
        tag: Option<&str>,
        previous: Option<&str>,
    ) {
        let [env, role] = label(id);
        if previous == tag {
            // Already exported at 1 (or nothing to export): nothing to look up.
            return;
        }
        if let Some(p) = previous {
            let _ = gauge.remove_label_values(&[env, role, p]);
        }
        if let Some(t) = tag {
            gauge.with_label_values(&[env, role, t]).set(1);
        }
    }

    /// The target's series a watcher updates every round, looked up once.
    fn target_series(&self, id: &TargetId) -> TargetSeries {
        let [env, role] = label(id);
        TargetSeries {
            state: STATES.map(|s| self.state.with_label_values(&[env, role, s])),
            paused: self.paused.with_label_values(&[env, role]),
            given_up: self.given_up.with_label_values(&[env, role]),
            unhealthy: self.unhealthy.with_label_values(&[env, role]),
            probe_duration: self.probe_duration.with_label_values(&[env, role]),
            probe_failures: PROBE_FAILURE_CLASSES
                .map(|c| self.probe_failures.with_label_values(&[env, role, c])),
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Env;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(
            colour(true, Some("".into())),
            "an empty NO_COLOR does not count"
        );
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None), "a pipe or a file gets plain text");
    }

    #[test]
    fn state_gauge_has_exactly_one_active_state_and_tags_are_replaced() {
        let m = Metrics::new().unwrap();
        let id = TargetId {
            env: Env::Staging,
            role: "backend".into(),
        };
        m.init_target(&id).set_state("watching");
        m.set_tag(&m.running_tag, &id, Some("v1.1.0"), None);
        m.set_tag(&m.running_tag, &id, Some("v1.0.0"), Some("v1.1.0"));
        let text = m.render();
        assert!(
            text.contains(
                r#"rollwatch_target_state{env="staging",role="backend",state="watching"} 1"#
            ),
            "{text}"
        );
        assert!(text
            .contains(r#"rollwatch_target_state{env="staging",role="backend",state="stable"} 0"#));
        assert!(text.contains(
            r#"rollwatch_running_tag_info{env="staging",role="backend",tag="v1.0.0"} 1"#
        ));
        assert!(!text.contains(r#"tag="v1.1.0""#), "old tag series removed");
        let build_info = format!(
            r#"rollwatch_build_info{{commit="{}",version="{}"}} 1"#,
            crate::build_info::GIT_COMMIT,
            crate::build_info::VERSION
        );
        assert!(
            text.contains(&build_info),
            "{build_info} missing from {text}"
        );
    }
}
