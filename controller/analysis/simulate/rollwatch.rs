//! rollwatch's side of the simulation: a simulated deploy is turned into the cumulative counters
//! the watcher would have scraped once per second and judged by [`crate::replay::replay`], which
//! drives the production [`crate::analysis::MetricWatch::observe`] with the watcher's start-up
//! grace, deploy round and bake. Nothing of the judgement is re-implemented here.

use std::time::Duration;

use super::traffic::{Second, Trace};
use crate::analysis::MetricPolicy;
use crate::replay::{self, Outcome, Row, Settings};

const GOOD: &str = "good";
const NEW: &str = "new";

/// Which baseline rollwatch gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// The known-good version measured on the same target before the deploy (one replica,
    /// replaced by the deploy: the default set-up).
    Before,
    /// The old version keeps serving beside the candidate (`version_metric` on two replicas, a
    /// canary): judged side by side once it has `min_requests`.
    Beside,
}

/// Seconds after the deploy at which the watcher rolls back, or `None` (promoted at the bake).
pub fn judge(
    trace: &Trace,
    baseline: Baseline,
    policy: &MetricPolicy,
    bake_s: usize,
) -> Option<f64> {
    let settings = Settings {
        policy: *policy,
        bake: Duration::from_secs(bake_s as u64),
        grace: Duration::from_secs(5),
    };
    match replay::replay(&rows(trace, baseline), &settings).outcome {
        Outcome::Regressed { after_deploy, .. } => Some(after_deploy),
        _ => None,
    }
}

/// The trace as `rollwatch replay` reads it: one row per version and second, counters cumulative.
fn rows(trace: &Trace, baseline: Baseline) -> replay::Trace {
    let mut rows = Vec::with_capacity(trace.before.len() + 2 * trace.candidate.len());
    let mut good = Counter::default();
    let mut new = Counter::default();
    for (t, s) in trace.before.iter().enumerate() {
        rows.push(good.row(t + 1, GOOD, s));
    }
    let deploy = trace.before.len();
    for (t, (c, b)) in trace.candidate.iter().zip(&trace.beside).enumerate() {
        if baseline == Baseline::Beside {
            rows.push(good.row(deploy + t + 1, GOOD, b));
        }
        rows.push(new.row(deploy + t + 1, NEW, c));
    }
    replay::Trace {
        rows,
        baseline: GOOD.into(),
        candidate: Some(NEW.into()),
        has_latency: false,
    }
}

#[derive(Default)]
struct Counter {
    requests: u64,
    errors: u64,
}

impl Counter {
    fn row(&mut self, t: usize, version: &str, s: &Second) -> Row {
        self.requests += s.requests;
        self.errors += s.errors;
        Row {
            line: t,
            t: t as f64,
            failed: false,
            version: version.into(),
            requests: self.requests as f64,
            errors: self.errors as f64,
            latency: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::traffic::{Scenario, Traffic};
    use super::*;

    fn scenario(candidate_error: f64) -> Scenario {
        Scenario {
            traffic: Traffic::Iid,
            rate: 50.0,
            baseline_error: 0.01,
            candidate_error,
            before_s: 300,
            watch_s: 120,
        }
    }

    #[test]
    fn a_bad_deploy_is_rolled_back_by_either_baseline_and_a_good_one_is_not() {
        let policy = MetricPolicy::default();
        let bad = scenario(0.2).trace(1, 1);
        for b in [Baseline::Before, Baseline::Beside] {
            let at = judge(&bad, b, &policy, 120).expect("rolled back");
            // Grace 5 s, then blocks of 2 s: caught within a few blocks.
            assert!((6.0..30.0).contains(&at), "{b:?} {at}");
            assert_eq!(judge(&scenario(0.01).trace(1, 1), b, &policy, 120), None);
        }
    }
}
