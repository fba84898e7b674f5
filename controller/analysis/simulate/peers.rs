//! The peers, with their real defaults, judging the same traces as rollwatch.
//!
//! Flagger (fluxcd/flagger, canary analysis): every `interval` (1 m) the builtin
//! `request-success-rate` (share of non-5xx requests over the last interval) is checked against
//! the threshold (>= 99%); a failed check, or a query with no data, increments `failedChecks`, and
//! the canary is rolled back once `failedChecks` reaches `threshold` (5). The counter is reset only
//! when a new revision starts (pkg/controller/scheduler.go), not by a passing check. The first
//! tick after a deploy starts the analysis (pre-rollout hooks, first weight step) without a metric
//! check, so checks run at 2, 3, ... intervals after the deploy.
//!
//! Kayenta (spinnaker/kayenta, `NetflixACAJudge` and `MannWhitneyClassifier`): the canary's and
//! the concurrently running baseline's series are compared by a Mann-Whitney confidence interval
//! for the location shift at `confLevel = 0.98` (R's `wilcox.test(conf.int = TRUE)`: the
//! tie-corrected Wilcoxon statistic inverted, Hodges-Lehmann estimate). The metric is High when
//! the interval's lower end exceeds `tolerance = 0.25` times the estimate and the mean ratio
//! canary/baseline is at least `allowedIncrease = 1.0`. With `nanStrategy = remove` (steps without
//! traffic have no error ratio) an empty side is NoData, its own class; with one critical metric,
//! High fails the canary. Here: direction `increase`, one data point per 10 s step, an analysis
//! every minute over the data since the deploy.

use super::traffic::Second;
use super::Outcome;
use crate::analysis::stats;

pub const FLAGGER_INTERVAL_S: usize = 60;
pub const FLAGGER_THRESHOLD: usize = 5;
pub const FLAGGER_MIN_SUCCESS: f64 = 0.99;

/// Flagger's analysis of the candidate's traffic.
pub fn flagger(candidate: &[Second]) -> Outcome {
    let mut failed = 0;
    let windows = candidate.chunks_exact(FLAGGER_INTERVAL_S).enumerate();
    for (k, window) in windows.skip(1) {
        let (n, x) = totals(window);
        // No traffic in the window: the query returns no value, which fails the check.
        let passed = n > 0 && 1.0 - x as f64 / n as f64 >= FLAGGER_MIN_SUCCESS;
        if !passed {
            failed += 1;
        }
        if failed >= FLAGGER_THRESHOLD {
            return Outcome {
                rolled_back_s: Some(((k + 1) * FLAGGER_INTERVAL_S) as f64),
                no_data: false,
            };
        }
    }
    Outcome::default()
}

pub const KAYENTA_STEP_S: usize = 10;
pub const KAYENTA_ANALYSIS_S: usize = 60;
pub const KAYENTA_CONFIDENCE: f64 = 0.98;

/// Kayenta's canary analysis of the candidate against the old version running beside it.
pub fn kayenta(candidate: &[Second], beside: &[Second]) -> Outcome {
    let mut no_data = false;
    for end in (KAYENTA_ANALYSIS_S..=candidate.len()).step_by(KAYENTA_ANALYSIS_S) {
        let (exp, ctl) = (ratios(&candidate[..end]), ratios(&beside[..end]));
        // NaN (no traffic in a step) is removed; an empty side is NoData.
        if exp.is_empty() || ctl.is_empty() {
            no_data = true;
            continue;
        }
        no_data = false;
        if high(&exp, &ctl) {
            return Outcome {
                rolled_back_s: Some(end as f64),
                no_data: false,
            };
        }
    }
    Outcome {
        rolled_back_s: None,
        no_data,
    }
}

/// `MannWhitneyClassifier::classify`'s High, for direction `increase`.
fn high(exp: &[f64], ctl: &[f64]) -> bool {
    let sorted = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v
    };
    let (xs, ys) = (sorted(exp), sorted(ctl));
    if xs == ys || (xs[0] == xs[xs.len() - 1] && ys[0] == ys[ys.len() - 1] && xs[0] == ys[0]) {
        return false;
    }
    // One distinct value on each side: Kayenta adds tiny Gaussian noise, which makes the shift
    // plain; its sign decides.
    if xs[0] == xs[xs.len() - 1] && ys[0] == ys[ys.len() - 1] {
        return xs[0] > ys[0];
    }
    let z = normal_quantile(1.0 - (1.0 - KAYENTA_CONFIDENCE) / 2.0);
    let (lower, estimate) = (shift_root(&xs, &ys, z), shift_root(&xs, &ys, 0.0));
    let (mx, my) = (mean(&xs), mean(&ys));
    let ratio_ok = my == 0.0 || mx / my >= KAYENTA_ALLOWED_INCREASE;
    lower > KAYENTA_TOLERANCE * estimate.abs() && ratio_ok
}

pub const KAYENTA_TOLERANCE: f64 = 0.25;
pub const KAYENTA_ALLOWED_INCREASE: f64 = 1.0;

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn normal_quantile(p: f64) -> f64 {
    use statrs::distribution::{ContinuousCDF, Normal};
    Normal::new(0.0, 1.0).map_or(2.326, |n| n.inverse_cdf(p))
}

/// The smallest shift `mu` at which the standardized Wilcoxon statistic of `x - mu` against `y`
/// drops to `q` (it falls as `mu` grows, in steps at the pairwise differences): R's and
/// Kayenta's root, found among the pairwise differences by bisection instead of Brent's method.
fn shift_root(x: &[f64], y: &[f64], q: f64) -> f64 {
    let mut d: Vec<f64> = x
        .iter()
        .flat_map(|a| y.iter().map(move |b| a - b))
        .collect();
    d.sort_by(f64::total_cmp);
    let f = |mu: f64| wilcoxon_z(x, y, mu).map_or(0.0, |z| z - q);
    let (lo, hi) = (d[0], d[d.len() - 1]);
    if f(lo) <= 0.0 {
        return lo;
    }
    if f(hi) >= 0.0 {
        return hi;
    }
    let (mut a, mut b) = (0, d.len() - 1);
    while b - a > 1 {
        let m = (a + b) / 2;
        if f(d[m]) > 0.0 {
            a = m;
        } else {
            b = m;
        }
    }
    d[b]
}

/// `(W - E[W] - 0.5 sign) / sd` of `x - mu` against `y`, tie-corrected (`None`: all tied).
fn wilcoxon_z(x: &[f64], y: &[f64], mu: f64) -> Option<f64> {
    let (dz, var) = stats::centred_u(x, y, mu);
    // R's `sign(0)` is 0, Rust's `signum` of +0.0 is 1.
    let correction = if dz == 0.0 { 0.0 } else { dz.signum() * 0.5 };
    (var > 0.0).then(|| (dz - correction) / var.sqrt())
}

fn totals(window: &[Second]) -> (u64, u64) {
    window
        .iter()
        .fold((0, 0), |(n, x), s| (n + s.requests, x + s.errors))
}

/// Error ratios of consecutive steps; steps without traffic are NaN in Prometheus and removed.
fn ratios(seconds: &[Second]) -> Vec<f64> {
    seconds
        .chunks_exact(KAYENTA_STEP_S)
        .filter_map(|c| {
            let (n, x) = totals(c);
            (n > 0).then(|| x as f64 / n as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(n: usize, requests: u64, errors: u64) -> Vec<Second> {
        vec![Second { requests, errors }; n]
    }

    #[test]
    fn flagger_rolls_back_at_the_fifth_failed_check_not_necessarily_consecutive() {
        // 2% errors fail every check from the 2nd minute on: rolled back at the 6th.
        let bad = flagger(&seconds(600, 100, 2));
        assert_eq!(bad.rolled_back_s, Some(360.0));
        // Failing minutes 2, 4, 6, 8, 10 with passing ones between: the 5th failure is at 600 s.
        let mut mixed = Vec::new();
        for k in 0..10 {
            mixed.extend(seconds(60, 100, if k % 2 == 1 { 2 } else { 0 }));
        }
        assert_eq!(flagger(&mixed).rolled_back_s, Some(600.0));
        // No traffic at all fails too.
        assert_eq!(flagger(&seconds(600, 0, 0)).rolled_back_s, Some(360.0));
        assert_eq!(flagger(&seconds(600, 100, 1)).rolled_back_s, None);
    }

    #[test]
    fn the_shift_estimate_and_interval_move_with_the_data() {
        let y: Vec<f64> = (0..30).map(|k| f64::from(k % 7) * 0.01).collect();
        let x: Vec<f64> = y.iter().map(|v| v + 0.02).collect();
        let sorted = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v
        };
        let (xs, ys) = (sorted(&x), sorted(&y));
        // Hodges-Lehmann: the median pairwise difference of a pure shift is the shift.
        let estimate = shift_root(&xs, &ys, 0.0);
        assert!((estimate - 0.02).abs() < 1e-9, "{estimate}");
        let z = normal_quantile(0.99);
        let (lower, upper) = (shift_root(&xs, &ys, z), shift_root(&xs, &ys, -z));
        assert!(lower < 0.02 && upper > 0.02, "{lower} {upper}");
        // A third of a step against this spread is not High; two steps over 30 points are.
        let near: Vec<f64> = y.iter().map(|v| v + 0.003).collect();
        assert!(!high(&near, &y));
        assert!(high(&x, &y));
        assert!(!high(&y, &x), "direction increase only");
    }

    #[test]
    fn kayenta_flags_a_higher_candidate_and_reports_no_data() {
        let ctl = seconds(600, 100, 1);
        let mut exp = seconds(600, 100, 5);
        // Some variation, or every value ties.
        exp.iter_mut().step_by(7).for_each(|s| s.errors = 6);
        assert!(kayenta(&exp, &ctl).rolled_back_s.is_some());
        assert_eq!(kayenta(&ctl, &ctl).rolled_back_s, None);
        let none = kayenta(&seconds(600, 0, 0), &ctl);
        assert!(none.no_data && none.rolled_back_s.is_none());
    }
}
