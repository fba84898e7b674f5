//! The two statistical tests, as pure functions of counts and samples.
//!
//! Error ratio: the decision now lives in `eprocess` (blocks, baseline bound, betting e-process).
//! The Bernoulli SPRT helpers below remain for the threshold `ln(1/alpha)` and its tests; the SPRT
//! itself treated requests as independent coin flips and is no longer used to decide.
//!
//! Latency: Mann-Whitney U on per-interval mean latencies, asymptotic normal approximation with tie
//! and continuity correction (statrs' exact p-values are wrong, so only its normal CDF is used).
//! Repeated looks spend `alpha * 6 / (pi^2 k^2)` at look `k`, which sums to `alpha`.

use statrs::distribution::{ContinuousCDF, Normal};

/// Log likelihood ratio of H1 (`p1`) over H0 (`p0`) after `errors` out of `requests`.
pub fn sprt_llr(requests: f64, errors: f64, p0: f64, p1: f64) -> f64 {
    errors * (p1 / p0).ln() + (requests - errors) * ((1.0 - p1) / (1.0 - p0)).ln()
}

/// The threshold the log likelihood ratio must reach to reject H0 at level `alpha`.
pub fn sprt_threshold(alpha: f64) -> f64 {
    (1.0 / alpha).ln()
}

/// A conservative (upper) estimate of a baseline error ratio: the point estimate plus one
/// standard error, floored at 0.1%. Erring high only makes a rollback harder.
pub fn conservative_rate(requests: f64, errors: f64) -> f64 {
    let p = (errors + 0.5) / (requests + 1.0);
    let se = (p * (1.0 - p) / (requests + 1.0)).sqrt();
    (p + se).clamp(0.001, 0.5)
}

/// Level spent on the `look`-th (1-based) latency comparison.
pub fn alpha_at_look(alpha: f64, look: u32) -> f64 {
    let k = f64::from(look.max(1));
    alpha * 6.0 / (std::f64::consts::PI.powi(2) * k * k)
}

/// One-sided p-value that `candidate` tends to be larger than `baseline` (Mann-Whitney U,
/// normal approximation with tie and continuity correction). `None` for empty samples.
pub fn mann_whitney_greater(candidate: &[f64], baseline: &[f64]) -> Option<f64> {
    if candidate.is_empty()
        || baseline.is_empty()
        || candidate.iter().chain(baseline).any(|v| !v.is_finite())
    {
        return None;
    }
    let (du, var) = centred_u(candidate, baseline, 0.0);
    if var <= 0.0 {
        return Some(1.0);
    }
    let z = (du - 0.5) / var.sqrt();
    let normal = Normal::new(0.0, 1.0).ok()?;
    Some(1.0 - normal.cdf(z))
}

/// The Mann-Whitney statistic of `x - shift` against `y`, centred (`U - n_x n_y / 2`), and its
/// variance under H0 with the tie correction: average ranks over the pooled, sorted values.
/// Shared by the latency test and the simulated Kayenta judge, which inverts it over `shift`.
pub fn centred_u(x: &[f64], y: &[f64], shift: f64) -> (f64, f64) {
    let mut all: Vec<(f64, bool)> = x
        .iter()
        .map(|v| (v - shift, true))
        .chain(y.iter().map(|v| (*v, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_x, mut ties, mut i) = (0.0, 0.0, 0);
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_x += avg_rank * all[i..=j].iter().filter(|e| e.1).count() as f64;
        i = j + 1;
    }
    let (nx, ny) = (x.len() as f64, y.len() as f64);
    let n = nx + ny;
    let du = rank_x - nx * (nx + 1.0) / 2.0 - nx * ny / 2.0;
    let var = nx * ny / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    (du, var)
}

pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sprt_moves_toward_the_true_hypothesis() {
        // 10% errors when H0 says 1% and H1 says 2%: strong evidence for H1.
        assert!(sprt_llr(1000.0, 100.0, 0.01, 0.02) > sprt_threshold(0.01));
        // 1% errors: evidence for H0.
        assert!(sprt_llr(1000.0, 10.0, 0.01, 0.02) < 0.0);
    }

    #[test]
    fn mann_whitney_matches_a_hand_computed_case() {
        // Candidate all larger than baseline: U = n1*n2 = 9, mean 4.5, var = 9/12*7 = 5.25.
        let p = mann_whitney_greater(&[10.0, 11.0, 12.0], &[1.0, 2.0, 3.0]).unwrap();
        let z: f64 = (9.0 - 4.5 - 0.5) / 5.25f64.sqrt();
        let expected = 1.0 - Normal::new(0.0, 1.0).unwrap().cdf(z);
        assert!((p - expected).abs() < 1e-12, "{p} vs {expected}");
        // Identical samples: no evidence at all.
        let same = mann_whitney_greater(&[1.0, 1.0, 1.0], &[1.0, 1.0, 1.0]).unwrap();
        assert_eq!(same, 1.0);
        // Smaller candidate: p close to 1.
        assert!(mann_whitney_greater(&[1.0, 2.0, 3.0], &[10.0, 11.0, 12.0]).unwrap() > 0.9);
    }

    #[test]
    fn look_spending_sums_to_alpha() {
        let total: f64 = (1..100_000).map(|k| alpha_at_look(0.01, k)).sum();
        assert!(total <= 0.01 && total > 0.0099, "{total}");
    }

    #[test]
    fn conservative_rate_is_above_the_estimate_and_floored() {
        assert!(conservative_rate(10_000.0, 100.0) > 0.01);
        assert!(conservative_rate(10_000.0, 100.0) < 0.0115);
        assert_eq!(conservative_rate(1e9, 0.0), 0.001);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
