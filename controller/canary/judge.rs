//! Judging a canary against the live slot at the same time, from the load balancer's own
//! per-slot counters: the application need export nothing. The comparison is the one the
//! watcher makes between a candidate and stable replicas running side by side
//! ([`MetricWatch`] with a `Candidate` population): same error-ratio test, same e-process,
//! same thresholds. A slot the balancer's health checks mark DOWN is regressed at once.

use crate::analysis::{MetricPolicy, MetricVerdict, MetricWatch, Population};
use crate::metrics::Reading;
use crate::store::Trigger;
use crate::traffic::{Slot, SlotReading};

pub struct CanaryJudge {
    watch: MetricWatch,
    policy: MetricPolicy,
    live_tag: String,
    canary_tag: String,
    canary: Slot,
}

impl CanaryJudge {
    pub fn new(
        policy: MetricPolicy,
        live_tag: &str,
        canary_tag: &str,
        canary: Slot,
    ) -> CanaryJudge {
        let mut watch = MetricWatch::default();
        watch.start_candidate();
        CanaryJudge {
            watch,
            policy,
            live_tag: live_tag.to_string(),
            canary_tag: canary_tag.to_string(),
            canary,
        }
    }

    /// The canary's error ratio so far already looks like a regression (over the policy's
    /// factor and increase against the live slot) though the test has not decided yet: then
    /// no more traffic goes to it until it has. "No regression shown yet" is not "healthy".
    pub fn suspect(&self) -> Option<String> {
        let (c, l) = (&self.watch.candidate, &self.watch.stable_replicas);
        if c.requests() <= 0.0 || l.requests() <= 0.0 {
            return None;
        }
        let (cr, lr) = (c.errors() / c.requests(), l.errors() / l.requests());
        let p = &self.policy;
        (cr >= lr * p.error_ratio_factor && cr - lr >= p.error_ratio_increase).then(|| {
            format!(
                "canary errors {:.0}/{:.0} = {:.2}% against the live slot's {:.2}%",
                c.errors(),
                c.requests(),
                cr * 100.0,
                lr * 100.0
            )
        })
    }

    /// One reading of both slots; `None` while nothing can be said yet (the first reading
    /// only anchors the counters). Failed requests without an HTTP answer (aborted responses,
    /// refused connections) count as errors of the slot, as a user saw them.
    pub fn observe(&mut self, slots: &[SlotReading; 2]) -> Option<MetricVerdict> {
        let canary = slots.iter().find(|s| s.slot == self.canary)?;
        if canary.is_down() {
            return Some(MetricVerdict::Regressed {
                trigger: Trigger::Health,
                evidence: format!(
                    "the load balancer's health checks mark the canary slot {} {}",
                    self.canary.name(),
                    canary.status
                ),
            });
        }
        let readings = slots
            .iter()
            .map(|s| Reading {
                requests: (s.responses + s.errors) as f64,
                errors: (s.responses_5xx + s.errors) as f64,
                latency: None,
                version: Some(if s.slot == self.canary {
                    self.canary_tag.clone()
                } else {
                    self.live_tag.clone()
                }),
            })
            .collect();
        self.watch.observe(
            Ok(readings),
            Population::Candidate,
            Some(&self.canary_tag),
            &self.policy,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(slot: Slot, ok: u64, bad: u64, status: &str) -> SlotReading {
        SlotReading {
            slot,
            weight: 1,
            status: status.into(),
            responses_2xx: ok,
            responses_5xx: bad,
            responses: ok + bad,
            errors: 0,
            avg_response_ms: 2,
        }
    }

    fn policy() -> MetricPolicy {
        MetricPolicy {
            min_requests: 40.0,
            ..MetricPolicy::default()
        }
    }

    /// `rounds` readings of a live slot at 45 req/s without errors beside a canary at 5 req/s
    /// failing `share` of them; the verdict of the last.
    fn run(share: f64, rounds: u64) -> Option<MetricVerdict> {
        let mut judge = CanaryJudge::new(policy(), "v1", "v2", Slot::Green);
        let mut last = None;
        for i in 0..=rounds {
            let canary_total = 5 * i;
            let bad = (canary_total as f64 * share).round() as u64;
            let slots = [
                reading(Slot::Blue, 45 * i, 0, "UP"),
                reading(Slot::Green, canary_total - bad, bad, "UP"),
            ];
            last = judge.observe(&slots);
        }
        last
    }

    #[test]
    fn a_canary_failing_a_quarter_of_its_requests_is_regressed_on_error_ratio() {
        match run(0.25, 60) {
            Some(MetricVerdict::Regressed { trigger, evidence }) => {
                assert_eq!(trigger, Trigger::ErrorRatio);
                assert!(evidence.contains("side by side"), "{evidence}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_canary_as_good_as_the_live_slot_is_not_regressed() {
        assert!(matches!(
            run(0.0, 60),
            Some(MetricVerdict::Healthy(_) | MetricVerdict::Waiting(_))
        ));
    }

    /// A judge after an anchoring reading and one of the live slot's `live` and the canary's
    /// `canary` (ok, failed) requests.
    fn judged(live: (u64, u64), canary: (u64, u64)) -> CanaryJudge {
        let mut judge = CanaryJudge::new(policy(), "v1", "v2", Slot::Green);
        judge.observe(&[
            reading(Slot::Blue, 0, 0, "UP"),
            reading(Slot::Green, 0, 0, "UP"),
        ]);
        judge.observe(&[
            reading(Slot::Blue, live.0, live.1, "UP"),
            reading(Slot::Green, canary.0, canary.1, "UP"),
        ]);
        judge
    }

    #[test]
    fn a_canary_worse_than_live_is_suspect_before_the_test_decides() {
        let why = judged((90, 0), (8, 2))
            .suspect()
            .expect("2/10 against 0/90");
        assert!(why.contains("2/10 = 20.00%"), "{why}");
        assert_eq!(judged((90, 1), (10, 0)).suspect(), None);
    }

    #[test]
    fn a_slot_the_balancer_marks_down_is_regressed_at_once() {
        let mut judge = CanaryJudge::new(policy(), "v1", "v2", Slot::Green);
        let slots = [
            reading(Slot::Blue, 10, 0, "UP"),
            reading(Slot::Green, 0, 0, "DOWN 1/2"),
        ];
        match judge.observe(&slots) {
            Some(MetricVerdict::Regressed { trigger, evidence }) => {
                assert_eq!(trigger, Trigger::Health);
                assert!(evidence.contains("green DOWN 1/2"), "{evidence}");
            }
            other => panic!("{other:?}"),
        }
    }
}
