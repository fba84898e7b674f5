//! The steps of a canary deploy, decided purely: given where the deploy stands and what the
//! judge said, what to do next. The flow that calls the traffic driver and the store acts on
//! these decisions and nothing else, so every transition is here and tested without a balancer.

use crate::analysis::MetricVerdict;
use crate::config::CanaryConfig;

/// Where a canary deploy stands.
#[derive(Debug, Clone, PartialEq)]
pub struct StepState {
    /// Index into the steps; the canary has `steps[step]` percent of the traffic.
    pub step: usize,
    /// When this step's weight took effect (ms).
    pub since_ms: i64,
    /// Requests the canary served since then.
    pub requests: u64,
}

/// What to do after a reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Keep this step: it is too young, has too little traffic, or the judge is not done.
    Stay,
    /// Give the canary the next step's percent.
    Step { percent: u32 },
    /// The last step (100 %) held: the canary is the live version now.
    Promote,
    /// Take all traffic back to the live slot, in one weight change.
    Abort { reason: String },
}

/// The split of the balancer's weights for a step: (live, canary), out of 100.
pub fn weights(percent: u32) -> (u32, u32) {
    let p = percent.min(100);
    (100 - p, p)
}

/// The decision after one reading at `now_ms` with the judge's latest verdict.
pub fn next(c: &CanaryConfig, s: &StepState, now_ms: i64, verdict: Option<&MetricVerdict>) -> Next {
    match verdict {
        Some(MetricVerdict::Regressed { trigger, evidence }) => {
            return Next::Abort {
                reason: format!(
                    "at {}% of the traffic the canary regressed ({}): {evidence}",
                    c.steps.get(s.step).copied().unwrap_or(0),
                    trigger.as_str()
                ),
            };
        }
        // A source that cannot be read says nothing either way: the step waits for evidence.
        Some(MetricVerdict::Inconclusive(_)) | Some(MetricVerdict::Waiting(_)) | None => {
            return Next::Stay
        }
        Some(MetricVerdict::Healthy(_)) => {}
    }
    let old_enough =
        now_ms - s.since_ms >= i64::try_from(c.step_min.as_millis()).unwrap_or(i64::MAX);
    if !old_enough || s.requests < c.step_min_requests {
        return Next::Stay;
    }
    match c.steps.get(s.step + 1) {
        Some(&percent) => Next::Step { percent },
        None => Next::Promote,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::TrafficConfig;
    use crate::store::Trigger;

    fn config() -> CanaryConfig {
        CanaryConfig {
            traffic: TrafficConfig::Haproxy {
                socket: "/run/haproxy.sock".into(),
                backend: "be".into(),
                servers: ["blue".into(), "green".into()],
            },
            steps: vec![10, 50, 100],
            step_min: Duration::from_secs(30),
            step_min_requests: 100,
            hold: Duration::from_secs(600),
            ports: [18081, 18082],
            port_var: "APP_PORT".into(),
        }
    }

    fn at(step: usize, requests: u64) -> StepState {
        StepState {
            step,
            since_ms: 0,
            requests,
        }
    }

    fn healthy() -> Option<MetricVerdict> {
        Some(MetricVerdict::Healthy("0/120 errors".into()))
    }

    #[test]
    fn a_healthy_step_moves_on_only_when_old_enough_and_served_enough() {
        let c = config();
        assert_eq!(
            next(&c, &at(0, 500), 29_999, healthy().as_ref()),
            Next::Stay
        );
        assert_eq!(next(&c, &at(0, 99), 60_000, healthy().as_ref()), Next::Stay);
        assert_eq!(
            next(&c, &at(0, 100), 30_000, healthy().as_ref()),
            Next::Step { percent: 50 }
        );
        assert_eq!(
            next(&c, &at(2, 100), 30_000, healthy().as_ref()),
            Next::Promote
        );
    }

    #[test]
    fn waiting_or_an_unreadable_source_never_moves_a_step() {
        let c = config();
        for v in [
            None,
            Some(MetricVerdict::Waiting("too little traffic".into())),
            Some(MetricVerdict::Inconclusive("source down".into())),
        ] {
            assert_eq!(
                next(&c, &at(1, 10_000), 600_000, v.as_ref()),
                Next::Stay,
                "{v:?}"
            );
        }
    }

    #[test]
    fn a_regression_at_any_step_aborts_with_its_evidence() {
        let v = MetricVerdict::Regressed {
            trigger: Trigger::ErrorRatio,
            evidence: "errors 10/41".into(),
        };
        match next(&config(), &at(1, 3), 1, Some(&v)) {
            Next::Abort { reason } => {
                assert!(
                    reason.contains("at 50%") && reason.contains("errors 10/41"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn weights_split_a_hundred() {
        assert_eq!(weights(10), (90, 10));
        assert_eq!(weights(100), (0, 100));
        assert_eq!(weights(250), (0, 100));
    }
}
