//! Error-metric analysis: counters become per-interval evidence (deltas, with counter resets
//! handled per endpoint), evidence accumulates into a baseline (the known-good version, measured on
//! the same target before the deploy) and a candidate (the new version since its deploy), and
//! [`judge`] compares the two. Pure: no I/O, no clock; the watcher feeds it readings.

pub mod eprocess;
pub mod simulate;
pub mod stats;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::metrics::Reading;
use crate::store::Trigger;

/// How strict the judgement is (from the target's `metrics` config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricPolicy {
    pub alpha: f64,
    pub min_requests: f64,
    pub error_ratio_factor: f64,
    pub error_ratio_increase: f64,
    pub latency_factor: f64,
    pub latency_increase_s: f64,
}

impl Default for MetricPolicy {
    fn default() -> Self {
        MetricPolicy {
            alpha: 0.01,
            min_requests: 100.0,
            error_ratio_factor: 1.5,
            error_ratio_increase: 0.005,
            latency_factor: 1.5,
            latency_increase_s: 0.1,
        }
    }
}

/// What one interval added: requests, errors, and the mean latency of its requests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub requests: f64,
    pub errors: f64,
    pub latency_mean: Option<f64>,
}

/// Increase of a counter; a smaller value means the process restarted and counts from zero.
pub fn counter_delta(prev: f64, cur: f64) -> f64 {
    if cur >= prev {
        cur - prev
    } else {
        cur
    }
}

/// The interval between two readings of one endpoint.
fn endpoint_interval(p: &Reading, c: &Reading) -> (Interval, Option<(f64, f64)>) {
    let requests = counter_delta(p.requests, c.requests);
    // A process restart resets both counters; errors can never exceed requests.
    let errors = counter_delta(p.errors, c.errors).min(requests);
    let latency = match (p.latency, c.latency) {
        (Some((ps, pc)), Some((cs, cc))) => Some((counter_delta(ps, cs), counter_delta(pc, cc))),
        _ => None,
    };
    (
        Interval {
            requests,
            errors,
            latency_mean: None,
        },
        latency,
    )
}

/// The interval between two readings of the same endpoints, summed over the endpoints that
/// `include` accepts. `None` when the endpoints changed or none is included.
pub fn interval_where(
    prev: &[Reading],
    cur: &[Reading],
    include: impl Fn(&Reading) -> bool,
) -> Option<Interval> {
    if prev.len() != cur.len() || cur.is_empty() {
        return None;
    }
    let mut out = Interval {
        requests: 0.0,
        errors: 0.0,
        latency_mean: None,
    };
    let (mut lat_sum, mut lat_count, mut any) = (0.0, 0.0, false);
    for (p, c) in prev.iter().zip(cur).filter(|(_, c)| include(c)) {
        any = true;
        let (i, latency) = endpoint_interval(p, c);
        out.requests += i.requests;
        out.errors += i.errors;
        if let Some((sum, count)) = latency {
            lat_sum += sum;
            lat_count += count;
        }
    }
    if lat_count > 0.0 {
        out.latency_mean = Some(lat_sum / lat_count);
    }
    any.then_some(out)
}

/// The interval over all endpoints.
pub fn interval(prev: &[Reading], cur: &[Reading]) -> Option<Interval> {
    interval_where(prev, cur, |_| true)
}

/// Accumulated evidence of one population (baseline or candidate), the last `cap` intervals.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Evidence {
    intervals: VecDeque<Interval>,
    cap: usize,
}

impl Evidence {
    pub fn with_cap(cap: usize) -> Evidence {
        Evidence {
            intervals: VecDeque::new(),
            cap,
        }
    }

    pub fn extend(&mut self, i: Option<Interval>) {
        if let Some(i) = i {
            self.add(i);
        }
    }

    pub fn add(&mut self, i: Interval) {
        self.intervals.push_back(i);
        while self.cap > 0 && self.intervals.len() > self.cap {
            self.intervals.pop_front();
        }
    }

    pub fn requests(&self) -> f64 {
        total(self.intervals.iter().map(|i| i.requests))
    }

    pub fn errors(&self) -> f64 {
        total(self.intervals.iter().map(|i| i.errors))
    }

    pub fn latency_means(&self) -> Vec<f64> {
        self.intervals
            .iter()
            .filter_map(|i| i.latency_mean)
            .collect()
    }

    pub fn clear(&mut self) {
        self.intervals.clear();
    }

    /// Complete blocks of traffic (see [`eprocess::blocks`]).
    pub fn blocks(&self) -> Vec<eprocess::Block> {
        eprocess::blocks(self.intervals.iter(), eprocess::BLOCK_INTERVALS)
    }
}

/// The metric side of a verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricVerdict {
    /// Not enough traffic yet (candidate or baseline): keep watching.
    Waiting(String),
    /// No regression shown so far, with the numbers.
    Healthy(String),
    Regressed {
        trigger: Trigger,
        evidence: String,
    },
    /// The source is broken: nothing can be concluded from metrics.
    Inconclusive(String),
}

/// A sum that is `0.0` when empty. `Iterator::sum` of no floats is `-0.0` since Rust 1.81
/// (IEEE's additive identity), which formats as "-0": "candidate served -0 of the 100
/// requests needed" was seen in notes and logs.
fn total(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, |sum, x| sum + x)
}

/// A request or error count for people: whole, and never "-0" (a negative zero or a rounding
/// of a tiny negative is shown as 0).
fn count(x: f64) -> String {
    let rounded = x.round();
    if rounded == 0.0 {
        "0".into()
    } else {
        format!("{rounded:.0}")
    }
}

/// How many times `base` `x` is, for people: a baseline without errors has no finite ratio
/// ("208191126.3x" was printed for one).
fn times(x: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{:.1}x", x / base)
    } else {
        "any factor (the baseline was zero)".into()
    }
}

fn pct(x: f64) -> String {
    // `+ 0.0` turns a negative zero into a positive one: never "-0.00%".
    format!("{:.2}%", x * 100.0 + 0.0)
}

/// One test's outcome: not enough data (with why), no regression (with the numbers), or one.
enum Test {
    Waiting(String),
    Clear(String),
    Regressed(Trigger, String),
}

/// Error ratio: H0 "the candidate is not worse than the baseline by the configured effect", i.e.
/// its rate is at most `theta0 = max(factor * UCB(p_b), UCB(p_b) + increase)`, tested with the
/// betting e-process of [`eprocess`] on blocks of traffic. The practical effect is the null
/// boundary itself, so drift below it is healthy; the observed effect is still checked against the
/// point estimates so that a verdict never reports an effect smaller than configured.
fn error_ratio_test(baseline: &Evidence, candidate: &Evidence, policy: &MetricPolicy) -> Test {
    let (n, x) = (candidate.requests(), candidate.errors());
    if n < policy.min_requests {
        return Test::Waiting(format!(
            "candidate served {} of the {} requests needed",
            count(n),
            count(policy.min_requests)
        ));
    }
    let (bn, bx) = (baseline.requests(), baseline.errors());
    if bn < policy.min_requests {
        return Test::Waiting(format!(
            "baseline has {} of the {} requests needed",
            count(bn),
            count(policy.min_requests)
        ));
    }
    let base_blocks = baseline.blocks();
    let Some((base, ucb)) = eprocess::baseline_ucb(&base_blocks, policy.alpha) else {
        return Test::Waiting(format!(
            "baseline has {} of the {} blocks of {} intervals needed",
            base_blocks.len(),
            eprocess::MIN_BASELINE_BLOCKS,
            eprocess::BLOCK_INTERVALS
        ));
    };
    let theta0 =
        eprocess::null_boundary(ucb, policy.error_ratio_factor, policy.error_ratio_increase);
    let cand_blocks = candidate.blocks();
    let log_k = eprocess::log_wealth(&cand_blocks, theta0);
    let threshold = stats::sprt_threshold(policy.alpha);
    let observed = x / n;
    let big_enough = observed >= base * policy.error_ratio_factor
        && observed - base >= policy.error_ratio_increase;
    let summary = format!(
        "errors {}/{} = {} vs baseline {} ({}/{}, upper bound {}); e-process log-wealth {log_k:.2} vs {threshold:.2} over {} blocks (alpha {}, H0 rate <= {})",
        count(x),
        count(n),
        pct(observed),
        pct(base),
        count(bx),
        count(bn),
        pct(ucb),
        cand_blocks.len(),
        policy.alpha,
        pct(theta0),
    );
    if log_k >= threshold && big_enough {
        return Test::Regressed(
            Trigger::ErrorRatio,
            format!(
                "{summary}; effect {} and +{:.2} pp (needs {}x and +{:.2} pp)",
                times(observed, base),
                (observed - base) * 100.0,
                policy.error_ratio_factor,
                policy.error_ratio_increase * 100.0
            ),
        );
    }
    Test::Clear(summary)
}

/// Latency: Mann-Whitney on per-interval means, with look spending and practical thresholds.
/// Needs five intervals with traffic on each side, not a request count: a slow version serves
/// few requests, which must not hide its slowness.
fn latency_test(
    baseline: &Evidence,
    candidate: &Evidence,
    look: u32,
    policy: &MetricPolicy,
) -> Test {
    let (cand, base) = (candidate.latency_means(), baseline.latency_means());
    if cand.len() < 5 || base.len() < 5 {
        return Test::Waiting(format!(
            "latency needs 5 intervals with traffic (candidate {}, baseline {})",
            cand.len(),
            base.len()
        ));
    }
    let p = stats::mann_whitney_greater(&cand, &base).unwrap_or(1.0);
    let level = stats::alpha_at_look(policy.alpha, look);
    let (mc, mb) = (
        stats::median(&cand).unwrap_or(0.0),
        stats::median(&base).unwrap_or(0.0),
    );
    if p < level && mc >= mb * policy.latency_factor && mc - mb >= policy.latency_increase_s {
        return Test::Regressed(
            Trigger::Latency,
            format!(
                "latency median {:.0} ms vs baseline {:.0} ms over {} and {} intervals; Mann-Whitney one-sided p {p:.2e} < {level:.2e}; effect {} and +{:.0} ms (needs {}x and +{:.0} ms)",
                mc * 1000.0,
                mb * 1000.0,
                cand.len(),
                base.len(),
                times(mc, mb),
                (mc - mb) * 1000.0,
                policy.latency_factor,
                policy.latency_increase_s * 1000.0
            ),
        );
    }
    Test::Clear(format!(
        "latency median {:.0} ms vs {:.0} ms, Mann-Whitney p {p:.2e} vs {level:.2e} (look {look})",
        mc * 1000.0,
        mb * 1000.0
    ))
}

/// Compares the candidate with the baseline. `latency_look` counts latency comparisons made so
/// far for this candidate (1-based), for the alpha spending of repeated looks. Only the latency
/// test runs on histogram data; a target without latency data is judged on errors alone.
pub fn judge(
    baseline: &Evidence,
    candidate: &Evidence,
    latency_look: u32,
    policy: &MetricPolicy,
) -> MetricVerdict {
    let errors = error_ratio_test(baseline, candidate, policy);
    let latency = latency_test(baseline, candidate, latency_look, policy);
    let mut clear = Vec::new();
    let mut waiting = Vec::new();
    for t in [errors, latency] {
        match t {
            Test::Regressed(trigger, evidence) => {
                return MetricVerdict::Regressed { trigger, evidence }
            }
            Test::Clear(s) => clear.push(s),
            Test::Waiting(s) => waiting.push(s),
        }
    }
    if clear.is_empty() {
        MetricVerdict::Waiting(waiting.join("; "))
    } else {
        clear.extend(waiting.into_iter().map(|w| format!("still waiting: {w}")));
        MetricVerdict::Healthy(clear.join("; "))
    }
}

/// The metric state of one target: last readings, baseline and candidate evidence.
#[derive(Debug, Clone)]
pub struct MetricWatch {
    prev: Option<Vec<Reading>>,
    pub baseline: Evidence,
    pub candidate: Evidence,
    /// Endpoints still serving another version while the candidate runs (canary, host-by-host
    /// rollout): compared side by side, they are a better baseline than the past.
    pub stable_replicas: Evidence,
    latency_looks: u32,
}

/// Which population the next intervals belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Population {
    /// A known-good version runs: its intervals are the baseline.
    Baseline,
    /// A deploy is on probation: its intervals are the candidate.
    Candidate,
    /// Neither (a regressed or unjudged version runs): readings only keep the delta chain.
    Neither,
}

/// Intervals kept: ten minutes at a 1 s interval.
const WINDOW: usize = 600;

impl Default for MetricWatch {
    fn default() -> Self {
        MetricWatch {
            prev: None,
            baseline: Evidence::with_cap(WINDOW),
            candidate: Evidence::with_cap(0),
            stable_replicas: Evidence::with_cap(0),
            latency_looks: 0,
        }
    }
}

impl MetricWatch {
    /// A new deploy: the candidate starts empty; the baseline is frozen as it is.
    pub fn start_candidate(&mut self) {
        self.candidate.clear();
        self.stable_replicas.clear();
        self.latency_looks = 0;
    }

    /// A new known-good version runs (promotion or rollback): its baseline starts from scratch.
    pub fn restart_baseline(&mut self) {
        self.baseline.clear();
        self.candidate.clear();
        self.stable_replicas.clear();
        self.latency_looks = 0;
    }

    /// Feeds one read of the source and returns the verdict for a candidate (`None` while
    /// collecting the baseline). `candidate_tag` splits endpoints that report the version they
    /// serve: those serving another version are the stable replicas, compared side by side.
    pub fn observe(
        &mut self,
        read: Result<Vec<Reading>, String>,
        into: Population,
        candidate_tag: Option<&str>,
        policy: &MetricPolicy,
    ) -> Option<MetricVerdict> {
        let readings = match read {
            Ok(r) => r,
            Err(e) => {
                // The next good read must not be compared with one from before the outage.
                self.prev = None;
                return (into == Population::Candidate).then_some(MetricVerdict::Inconclusive(e));
            }
        };
        let is_stable_replica = |r: &Reading| match (&r.version, candidate_tag) {
            (Some(v), Some(c)) => v != c,
            _ => false,
        };
        if let Some(prev) = self.prev.as_deref() {
            match into {
                Population::Baseline => self.baseline.extend(interval(prev, &readings)),
                Population::Candidate => {
                    self.candidate
                        .extend(interval_where(prev, &readings, |r| !is_stable_replica(r)));
                    self.stable_replicas
                        .extend(interval_where(prev, &readings, is_stable_replica));
                }
                Population::Neither => {}
            }
        }
        self.prev = Some(readings);
        if into != Population::Candidate {
            return None;
        }
        if self.candidate.latency_means().len() >= 5 {
            self.latency_looks += 1;
        }
        let side_by_side = self.stable_replicas.requests() >= policy.min_requests;
        let baseline = if side_by_side {
            &self.stable_replicas
        } else {
            &self.baseline
        };
        let verdict = judge(baseline, &self.candidate, self.latency_looks.max(1), policy);
        let against = if side_by_side {
            " [baseline: stable replicas running side by side]"
        } else {
            " [baseline: the known-good version before the deploy]"
        };
        Some(match verdict {
            MetricVerdict::Regressed { trigger, evidence } => MetricVerdict::Regressed {
                trigger,
                evidence: format!("{evidence}{against}"),
            },
            MetricVerdict::Healthy(e) => MetricVerdict::Healthy(format!("{e}{against}")),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(requests: f64, errors: f64) -> Reading {
        Reading {
            requests,
            errors,
            latency: Some((requests * 0.01, requests)),
            version: None,
        }
    }

    #[test]
    fn deltas_handle_counter_resets_per_endpoint() {
        let prev = [reading(1000.0, 10.0), reading(500.0, 5.0)];
        // The second endpoint restarted and has served 20 requests since.
        let cur = [reading(1100.0, 11.0), reading(20.0, 4.0)];
        let i = interval(&prev, &cur).unwrap();
        assert_eq!((i.requests, i.errors), (120.0, 5.0));
        assert!(interval(&prev, &cur[..1]).is_none(), "endpoints changed");
    }

    fn evidence(intervals: usize, requests: f64, errors: f64, latency: f64) -> Evidence {
        let mut e = Evidence::with_cap(0);
        for _ in 0..intervals {
            e.add(Interval {
                requests,
                errors,
                latency_mean: Some(latency),
            });
        }
        e
    }

    #[test]
    fn twenty_percent_errors_regress_with_evidence() {
        let base = evidence(60, 20.0, 0.2, 0.01);
        let cand = evidence(20, 20.0, 4.0, 0.01);
        match judge(&base, &cand, 1, &MetricPolicy::default()) {
            MetricVerdict::Regressed {
                trigger: Trigger::ErrorRatio,
                evidence,
            } => {
                assert!(
                    evidence.contains("errors 80/400 = 20.00%") && evidence.contains("e-process"),
                    "{evidence}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_baseline_without_errors_has_no_absurd_effect_factor() {
        let base = evidence(60, 20.0, 0.0, 0.01);
        let cand = evidence(20, 20.0, 4.0, 0.01);
        match judge(&base, &cand, 1, &MetricPolicy::default()) {
            MetricVerdict::Regressed { evidence, .. } => assert!(
                evidence.contains("effect any factor (the baseline was zero) and +20.00 pp"),
                "{evidence}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn same_error_ratio_is_healthy_and_low_traffic_waits() {
        let base = evidence(60, 20.0, 0.2, 0.01);
        assert!(matches!(
            judge(
                &base,
                &evidence(30, 20.0, 0.2, 0.01),
                1,
                &MetricPolicy::default()
            ),
            MetricVerdict::Healthy(_)
        ));
        assert!(matches!(
            judge(
                &base,
                &evidence(3, 20.0, 10.0, 0.01),
                1,
                &MetricPolicy::default()
            ),
            MetricVerdict::Waiting(_)
        ));
        assert!(matches!(
            judge(
                &evidence(2, 20.0, 0.0, 0.01),
                &evidence(30, 20.0, 10.0, 0.01),
                1,
                &MetricPolicy::default()
            ),
            MetricVerdict::Waiting(_)
        ));
    }

    #[test]
    fn statistically_clear_but_tiny_increase_is_not_a_regression() {
        // 1.0% -> 1.3% on huge traffic: significant, but below the practical thresholds.
        let base = evidence(600, 10_000.0, 100.0, 0.01);
        let cand = evidence(600, 10_000.0, 130.0, 0.01);
        assert!(matches!(
            judge(&base, &cand, 1, &MetricPolicy::default()),
            MetricVerdict::Healthy(_)
        ));
    }

    #[test]
    fn slower_candidate_regresses_on_latency() {
        let mut base = Evidence::with_cap(0);
        for k in 0..60 {
            base.add(Interval {
                requests: 20.0,
                errors: 0.0,
                latency_mean: Some(0.010 + (k % 5) as f64 * 0.001),
            });
        }
        let cand = evidence(8, 20.0, 0.0, 0.31);
        match judge(&base, &cand, 1, &MetricPolicy::default()) {
            MetricVerdict::Regressed {
                trigger: Trigger::Latency,
                evidence,
            } => assert!(evidence.contains("Mann-Whitney"), "{evidence}"),
            other => panic!("{other:?}"),
        }
        // +20 ms is below the practical threshold.
        assert!(matches!(
            judge(
                &base,
                &evidence(8, 20.0, 0.0, 0.032),
                1,
                &MetricPolicy::default()
            ),
            MetricVerdict::Healthy(_)
        ));
    }

    #[test]
    fn stable_replicas_serving_the_old_version_are_the_side_by_side_baseline() {
        let at = |requests: f64, errors: f64, version: &str| Reading {
            version: Some(version.into()),
            ..reading(requests, errors)
        };
        let mut w = MetricWatch::default();
        let p = MetricPolicy::default();
        let mut verdict = None;
        for k in 0..=20 {
            let k = f64::from(k);
            // Endpoint 1 still serves v1.0.0 with 1% errors; endpoint 2 is the v1.3.0 canary at 20%.
            let read = vec![
                at(100.0 * k, k, "v1.0.0"),
                at(100.0 * k, 20.0 * k, "v1.3.0"),
            ];
            verdict = w.observe(Ok(read), Population::Candidate, Some("v1.3.0"), &p);
        }
        assert!(
            w.baseline.requests() == 0.0,
            "no historical baseline at all"
        );
        assert_eq!(w.stable_replicas.requests(), 2000.0);
        match verdict {
            Some(MetricVerdict::Regressed {
                trigger: Trigger::ErrorRatio,
                evidence,
            }) => {
                assert!(
                    evidence.contains("stable replicas running side by side"),
                    "{evidence}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_broken_source_is_inconclusive_and_breaks_the_delta_chain() {
        let mut w = MetricWatch::default();
        let p = MetricPolicy::default();
        assert_eq!(
            w.observe(
                Ok(vec![reading(100.0, 1.0)]),
                Population::Baseline,
                None,
                &p
            ),
            None
        );
        assert!(matches!(
            w.observe(Err("down".into()), Population::Candidate, None, &p),
            Some(MetricVerdict::Inconclusive(_))
        ));
        // The first read after the outage only re-anchors.
        w.observe(
            Ok(vec![reading(5000.0, 4000.0)]),
            Population::Candidate,
            None,
            &p,
        );
        assert_eq!(w.candidate.requests(), 0.0);
    }

    #[test]
    fn no_traffic_yet_reads_zero_requests_never_minus_zero() {
        let empty = Evidence::with_cap(10);
        assert!(empty.requests().is_sign_positive() && empty.errors().is_sign_positive());
        match judge(&empty, &empty, 1, &MetricPolicy::default()) {
            MetricVerdict::Waiting(note) => {
                assert!(
                    note.contains("candidate served 0 of the 100 requests needed"),
                    "{note}"
                );
                assert!(!note.contains("-0"), "{note}");
            }
            other => panic!("expected waiting, got {other:?}"),
        }
    }

    #[test]
    fn counts_and_percentages_never_show_a_minus_zero() {
        assert_eq!(count(-0.0), "0");
        assert_eq!(count(-0.4), "0");
        assert_eq!(count(12.0), "12");
        assert_eq!(pct(-0.0), "0.00%");
    }
}
