//! The peers, with their real defaults, judging the same traces as rollwatch.
//!
//! Flagger (fluxcd/flagger, canary analysis): every `interval` (1 m) the builtin
//! `request-success-rate` (share of non-5xx requests over the last interval) is checked against
//! the threshold (>= 99%); a failed check, or a query with no data, increments `failedChecks`, and
//! the canary is rolled back once `failedChecks` reaches `threshold` (5). The counter is not reset
//! by a passing check during one analysis.
//!
//! Kayenta (spinnaker/kayenta, NetflixACAJudge): the canary's and the concurrently running
//! baseline's metric series are compared with a two-sided Mann-Whitney test at 98% confidence;
//! the metric is High when the confidence interval of the location shift lies above zero, and an
//! empty series on either side is classified NoData (its own class, never a failure). With one
//! (critical) metric, High fails the analysis. Here: data points are 10 s error ratios (a
//! Prometheus step of 10 s), an analysis runs every minute over the data since the deploy.

use super::traffic::Second;
use super::Outcome;
use crate::analysis::stats;

pub const FLAGGER_INTERVAL_S: usize = 60;
pub const FLAGGER_THRESHOLD: usize = 5;
pub const FLAGGER_MIN_SUCCESS: f64 = 0.99;

/// Flagger's analysis of the candidate's traffic.
pub fn flagger(candidate: &[Second]) -> Outcome {
    let mut failed = 0;
    for (k, window) in candidate.chunks_exact(FLAGGER_INTERVAL_S).enumerate() {
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

/// The two-sided test at `KAYENTA_CONFIDENCE` rejects equality and the candidate is the higher.
fn high(exp: &[f64], ctl: &[f64]) -> bool {
    if exp == ctl {
        return false;
    }
    let greater = stats::mann_whitney_greater(exp, ctl).unwrap_or(1.0);
    let less = stats::mann_whitney_greater(ctl, exp).unwrap_or(1.0);
    let two_sided = (2.0 * greater.min(less)).min(1.0);
    two_sided < 1.0 - KAYENTA_CONFIDENCE && greater < less
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
        // 2% errors fail every check: rolled back at the 5th minute.
        let bad = flagger(&seconds(600, 100, 2));
        assert_eq!(bad.rolled_back_s, Some(300.0));
        // Alternating failing and passing minutes: the 5th failure is the 9th check.
        let mut mixed = Vec::new();
        for k in 0..10 {
            mixed.extend(seconds(60, 100, if k % 2 == 0 { 2 } else { 0 }));
        }
        assert_eq!(flagger(&mixed).rolled_back_s, Some(540.0));
        // No traffic at all fails too.
        assert_eq!(flagger(&seconds(600, 0, 0)).rolled_back_s, Some(300.0));
        assert_eq!(flagger(&seconds(600, 100, 1)).rolled_back_s, None);
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
