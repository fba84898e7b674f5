//! The error-ratio test on blocks of traffic: per-round intervals are grouped into blocks, the
//! baseline's rate gets an upper confidence bound that includes its own between-block dispersion,
//! and the candidate's block error ratios feed a betting e-process against the null boundary
//! `theta0 = max(factor * p_b, p_b + increase)`. Pure functions of counts; no clock.
//!
//! Why this construction: requests are not independent coin flips (error rates drift and burst
//! between intervals), so the unit of evidence is a block, and each block contributes a bounded
//! ratio `y_i` in [0, 1]. Following Waudby-Smith & Ramdas (2024), "Estimating means of bounded
//! random variables by betting", JRSS-B, the wealth `K_t = prod (1 + lambda_i (y_i - theta0))` with
//! predictable bets `0 <= lambda_i < 1/theta0` is a nonnegative supermartingale whenever
//! `E[y_i | past] <= theta0`, whatever the variance of `y_i` (overdispersion costs power, never
//! validity). Ville's inequality, `P(sup_t K_t >= 1/alpha) <= alpha`, makes the rollback rule
//! always-valid under continuous monitoring. Consecutive blocks are positively correlated in real
//! traffic (a 30 s disturbance spans several blocks), which breaks the conditional-mean premise for
//! a few blocks at a time: bets are therefore capped at `BET_CAP / theta0` and follow a shrunk
//! plug-in mean of all past blocks (aGRAPA-style), so a short burst moves the wealth by a bounded
//! factor and only a sustained excess carries it to `1/alpha`.

use statrs::distribution::{ContinuousCDF, StudentsT};

use super::Interval;

/// Intervals per block: 2 s of traffic at the default 1 s round.
pub const BLOCK_INTERVALS: usize = 2;
/// Blocks of baseline history needed before any judgement (fewer: Waiting, never a rollback).
pub const MIN_BASELINE_BLOCKS: usize = 2;
/// A bet never stakes more than this share of the wealth on a block at the null boundary's floor.
pub const BET_CAP: f64 = 0.5;
/// Floor on the baseline rate used for the null boundary: below 0.1% a handful of errors would be
/// a "large" relative effect.
const RATE_FLOOR: f64 = 0.001;

/// One block: requests and errors summed over `BLOCK_INTERVALS` intervals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Block {
    pub requests: f64,
    pub errors: f64,
}

impl Block {
    pub fn ratio(&self) -> f64 {
        (self.errors / self.requests).clamp(0.0, 1.0)
    }
}

/// Complete blocks of `size` consecutive intervals that saw traffic; an incomplete last block is
/// left for later, so a block's content never changes once it is used.
pub fn blocks<'a>(intervals: impl Iterator<Item = &'a Interval>, size: usize) -> Vec<Block> {
    let mut out = Vec::new();
    let (mut n, mut x, mut k) = (0.0, 0.0, 0);
    for i in intervals {
        if i.requests <= 0.0 {
            continue;
        }
        n += i.requests;
        x += i.errors.min(i.requests);
        k += 1;
        if k == size.max(1) {
            out.push(Block {
                requests: n,
                errors: x,
            });
            (n, x, k) = (0.0, 0.0, 0);
        }
    }
    out
}

/// Time scales of the baseline's dispersion, in blocks: 2 s, 10 s, 30 s and 60 s at a 1 s round.
const SCALES: [usize; 2] = [1, 15];
/// Clusters needed before a coarser scale's dispersion is estimated (with fewer, its variance
/// estimate is too noisy to use; the finer scales still count).
const MIN_CLUSTERS: usize = 8;

/// The baseline's error ratio and a one-sided upper confidence bound at level `alpha`: pooled
/// rate plus a Student-t quantile times a cluster-robust standard error, never below the binomial
/// one. Real error rates stay high or low for tens of seconds, so blocks next to each other are
/// not independent; the bound is the highest over clusters of 1, 5, 15 and 30 blocks (each with
/// at least `MIN_CLUSTERS` clusters), so a dispersion at any of those time scales widens it. A
/// noisy or short baseline makes a rollback harder, never easier. `None` with fewer than
/// `MIN_BASELINE_BLOCKS` blocks.
pub fn baseline_ucb(blocks: &[Block], alpha: f64) -> Option<(f64, f64)> {
    if blocks.len() < MIN_BASELINE_BLOCKS {
        return None;
    }
    let n: f64 = blocks.iter().map(|b| b.requests).sum();
    let x: f64 = blocks.iter().map(|b| b.errors).sum();
    if n <= 0.0 {
        return None;
    }
    let p = x / n;
    // Binomial floor with a continuity-style rate, so zero observed errors still has a spread.
    let pb = (x + 0.5) / (n + 1.0);
    let binom_var = pb * (1.0 - pb) / n;
    let bound = SCALES
        .iter()
        .filter(|s| **s == 1 || blocks.len() / **s >= MIN_CLUSTERS)
        .map(|s| {
            let clusters: Vec<Block> = blocks
                .chunks(*s)
                .map(|c| Block {
                    requests: c.iter().map(|b| b.requests).sum(),
                    errors: c.iter().map(|b| b.errors).sum(),
                })
                .collect();
            let m = clusters.len() as f64;
            let robust_var = clusters
                .iter()
                .map(|b| (b.errors - p * b.requests).powi(2))
                .sum::<f64>()
                / (n * n)
                * m
                / (m - 1.0);
            p + t_quantile(m - 1.0, alpha) * robust_var.max(binom_var).sqrt()
        })
        .fold(p, f64::max);
    Some((p, bound.min(1.0)))
}

/// The one-sided Student-t quantile `t_{1-alpha, df}` (10 if statrs refuses the parameters).
fn t_quantile(df: f64, alpha: f64) -> f64 {
    StudentsT::new(0.0, 1.0, df)
        .map(|d| d.inverse_cdf(1.0 - alpha))
        .unwrap_or(10.0)
}

/// The null boundary: the candidate is healthy while its rate is at most this.
pub fn null_boundary(baseline_ucb: f64, factor: f64, increase: f64) -> f64 {
    let p = baseline_ucb.max(RATE_FLOOR);
    (p * factor).max(p + increase).min(0.999)
}

/// Log wealth of the betting e-process for H0: `E[y_i | past] <= theta0`, after each block.
pub fn log_wealth(blocks: &[Block], theta0: f64) -> f64 {
    let cap = BET_CAP / theta0;
    // Prior pseudo-observation at twice the boundary: the first bet is predictable (fixed before
    // the block is seen) yet not zero, so a clear regression is caught within a few blocks.
    let (mut sum, mut count) = (2.0 * theta0, 1.0);
    // The spread is estimated from the observed blocks only, floored by the binomial spread of a
    // block at the current mean.
    let (mut obs_sum, mut obs_sq, mut obs_n) = (0.0f64, 0.0f64, 0.0f64);
    let mut log_k = 0.0f64;
    let mut best = 0.0f64;
    for b in blocks {
        let mean = sum / count;
        let obs_var: f64 = if obs_n > 1.0 {
            (obs_sq - obs_sum * obs_sum / obs_n) / (obs_n - 1.0)
        } else {
            0.0
        };
        let m = mean.clamp(theta0, 1.0);
        let var = obs_var.max(m * (1.0 - m) / b.requests.max(1.0));
        let edge = mean - theta0;
        let lambda = if edge > 0.0 {
            (edge / var).min(cap)
        } else {
            0.0
        };
        let y = b.ratio();
        log_k += (1.0 + lambda * (y - theta0)).max(1e-12).ln();
        best = best.max(log_k);
        sum += y;
        count += 1.0;
        obs_sum += y;
        obs_sq += y * y;
        obs_n += 1.0;
    }
    // The decision is "ever crossed": Ville bounds the supremum, so the running max is valid.
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(requests: f64, errors: f64) -> Interval {
        Interval {
            requests,
            errors,
            latency_mean: None,
        }
    }

    #[test]
    fn blocks_skip_idle_intervals_and_keep_the_partial_block_back() {
        let ivs: Vec<Interval> = (0..12)
            .map(|k| if k == 3 { iv(0.0, 0.0) } else { iv(10.0, 1.0) })
            .collect();
        let b = blocks(ivs.iter(), 5);
        assert_eq!(b.len(), 2);
        assert_eq!(
            b[0],
            Block {
                requests: 50.0,
                errors: 5.0
            }
        );
    }

    #[test]
    fn a_noisy_baseline_has_a_higher_bound_than_a_steady_one() {
        let steady: Vec<Block> = (0..20)
            .map(|_| Block {
                requests: 1000.0,
                errors: 10.0,
            })
            .collect();
        let noisy: Vec<Block> = (0..20)
            .map(|k| Block {
                requests: 1000.0,
                errors: if k % 2 == 0 { 2.0 } else { 18.0 },
            })
            .collect();
        let (p1, u1) = baseline_ucb(&steady, 0.01).unwrap();
        let (p2, u2) = baseline_ucb(&noisy, 0.01).unwrap();
        assert!((p1 - 0.01).abs() < 1e-12 && (p2 - 0.01).abs() < 1e-12);
        assert!(u1 > 0.01 && u2 > u1 + 0.001, "{u1} {u2}");
        assert!(baseline_ucb(&steady[..1], 0.01).is_none());
    }

    #[test]
    fn null_boundary_is_the_larger_effect() {
        assert!((null_boundary(0.01, 1.5, 0.005) - 0.015).abs() < 1e-12);
        assert!((null_boundary(0.002, 1.5, 0.005) - 0.007).abs() < 1e-12);
        assert!((null_boundary(0.0, 1.5, 0.005) - 0.006).abs() < 1e-12);
    }

    #[test]
    fn wealth_grows_on_a_clear_excess_and_stays_bounded_at_the_boundary() {
        let bad: Vec<Block> = (0..6)
            .map(|_| Block {
                requests: 100.0,
                errors: 10.0,
            })
            .collect();
        assert!(log_wealth(&bad, 0.015) > (100.0f64).ln());
        let at_boundary: Vec<Block> = (0..500)
            .map(|k| Block {
                requests: 100.0,
                errors: if k % 2 == 0 { 1.0 } else { 2.0 },
            })
            .collect();
        assert!(log_wealth(&at_boundary, 0.015) < (100.0f64).ln());
        // A burst of two blocks at 5x cannot carry the wealth to 1/alpha on its own.
        let mut burst: Vec<Block> = (0..40)
            .map(|_| Block {
                requests: 100.0,
                errors: 1.0,
            })
            .collect();
        burst[20] = Block {
            requests: 100.0,
            errors: 5.0,
        };
        burst[21] = Block {
            requests: 100.0,
            errors: 5.0,
        };
        assert!(log_wealth(&burst, 0.015) < (100.0f64).ln());
    }

    #[test]
    fn ville_bound_holds_for_bounded_blocks_under_the_null() {
        // Blocks whose ratio is theta0 on average (mixture of 0 and 2*theta0): the wealth must
        // cross 1/alpha in at most ~alpha of runs. A small deterministic LCG keeps it reproducible.
        let theta0 = 0.02;
        let mut state = 12345u64;
        let mut crossed = 0;
        for _ in 0..400 {
            let bl: Vec<Block> = (0..120)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let hi = (state >> 33).is_multiple_of(2);
                    Block {
                        requests: 100.0,
                        errors: if hi { 4.0 } else { 0.0 },
                    }
                })
                .collect();
            if log_wealth(&bl, theta0) >= (100.0f64).ln() {
                crossed += 1;
            }
        }
        assert!(crossed <= 8, "{crossed} of 400");
    }
}
