//! A seeded simulation of healthy and regressed deploys, judged side by side by rollwatch's
//! sequential test and by two baselines built the way the anchors do it: a fixed threshold on N
//! consecutive analysis intervals (Flagger style) and a Mann-Whitney judge over interval samples
//! at every analysis (Kayenta style). Every method sees the very same simulated traffic.

use super::{judge, stats, Evidence, Interval, MetricPolicy, MetricVerdict};

/// SplitMix64: small, fast, and good enough for traffic simulation; seeded for repeatability.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Poisson by Knuth's product method (rates here are at most a few hundred).
    fn poisson(&mut self, lambda: f64) -> u64 {
        let limit = (-lambda).exp();
        let (mut k, mut p) = (0u64, 1.0);
        loop {
            p *= self.unit();
            if p <= limit {
                return k;
            }
            k += 1;
        }
    }

    fn binomial(&mut self, n: u64, p: f64) -> u64 {
        (0..n).filter(|_| self.unit() < p).count() as u64
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Requests per second, Poisson.
    pub rate: f64,
    pub baseline_error: f64,
    pub candidate_error: f64,
    /// Seconds of baseline before the deploy, and of watch window after it.
    pub baseline_s: usize,
    pub watch_s: usize,
    /// Between-interval variation: the error rate of each 30 s block is multiplied by a
    /// lognormal factor with mean one and this log-scale sigma (0 = independent requests).
    pub sigma: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Sprt,
    Threshold,
    MannWhitney,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Sprt => "rollwatch (e-process on blocks, effect as H0)",
            Method::Threshold => "threshold, 3 x 10 s (Flagger style)",
            Method::MannWhitney => "Mann-Whitney per 60 s (Kayenta style)",
        }
    }
}

fn seconds(rng: &mut Rng, rate: f64, p: f64, n: usize, sigma: f64) -> Vec<Interval> {
    let mut multiplier = 1.0;
    (0..n)
        .map(|t| {
            if sigma > 0.0 && t % 30 == 0 {
                // Box-Muller normal; exp(sigma z - sigma^2/2) has mean one.
                let (u1, u2) = (rng.unit().max(1e-300), rng.unit());
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                multiplier = (sigma * z - sigma * sigma / 2.0).exp();
            }
            let requests = rng.poisson(rate);
            let errors = rng.binomial(requests, (p * multiplier).min(1.0));
            Interval {
                requests: requests as f64,
                errors: errors as f64,
                latency_mean: None,
            }
        })
        .collect()
}

/// Error ratios of consecutive 10 s windows (windows without traffic are skipped).
fn ten_second_ratios(intervals: &[Interval]) -> Vec<f64> {
    intervals
        .chunks(10)
        .filter_map(|c| {
            let n: f64 = c.iter().map(|i| i.requests).sum();
            (n > 0.0).then(|| c.iter().map(|i| i.errors).sum::<f64>() / n)
        })
        .collect()
}

/// Seconds after the deploy at which each method rolls back (`None`: never, in the window).
pub fn run_once(s: &Scenario, seed: u64) -> [Option<usize>; 3] {
    let mut rng = Rng::new(seed);
    let base = seconds(&mut rng, s.rate, s.baseline_error, s.baseline_s, s.sigma);
    let cand = seconds(&mut rng, s.rate, s.candidate_error, s.watch_s, s.sigma);
    let policy = MetricPolicy::default();
    let (bn, bx) = (
        base.iter().map(|i| i.requests).sum::<f64>(),
        base.iter().map(|i| i.errors).sum::<f64>(),
    );
    let base_ratio = if bn > 0.0 { bx / bn } else { 0.0 };

    // rollwatch: every second, on everything since the deploy.
    let mut baseline = Evidence::with_cap(0);
    base.iter().for_each(|i| baseline.add(*i));
    let mut candidate = Evidence::with_cap(0);
    let mut sprt = None;
    for (t, i) in cand.iter().enumerate() {
        candidate.add(*i);
        if let MetricVerdict::Regressed { .. } = judge(&baseline, &candidate, 1, &policy) {
            sprt = Some(t + 1);
            break;
        }
    }

    // Flagger style: each 10 s check fails above the same practical threshold; 3 in a row roll back.
    let threshold = (base_ratio * 2.0).max(base_ratio + 0.01);
    let mut failed = 0;
    let mut flagger = None;
    for (k, chunk) in cand.chunks(10).enumerate() {
        let n: f64 = chunk.iter().map(|i| i.requests).sum();
        let x: f64 = chunk.iter().map(|i| i.errors).sum();
        failed = if n > 0.0 && x / n > threshold {
            failed + 1
        } else {
            0
        };
        if failed >= 3 {
            flagger = Some((k + 1) * 10);
            break;
        }
    }

    // Kayenta style: every 60 s, candidate 10 s ratios against baseline 10 s ratios.
    let base_samples = ten_second_ratios(&base);
    let base_mean = base_samples.iter().sum::<f64>() / base_samples.len().max(1) as f64;
    let mut kayenta = None;
    for end in (60..=s.watch_s).step_by(60) {
        let samples = ten_second_ratios(&cand[..end]);
        let mean = samples.iter().sum::<f64>() / samples.len().max(1) as f64;
        let p = stats::mann_whitney_greater(&samples, &base_samples).unwrap_or(1.0);
        if p < policy.alpha && mean >= base_mean * policy.error_ratio_factor {
            kayenta = Some(end);
            break;
        }
    }
    [sprt, flagger, kayenta]
}

fn quantile(sorted: &[usize], q: f64) -> Option<usize> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// One row of results: a method on a scenario.
#[derive(Debug, Clone)]
pub struct Row {
    pub sigma: f64,
    pub rate: f64,
    pub candidate_error: f64,
    pub method: Method,
    pub rolled_back: f64,
    pub within_60s: f64,
    pub p50_s: Option<usize>,
    pub p95_s: Option<usize>,
}

/// Runs every scenario `runs` times with seeds `seed..seed+runs` and returns one row per method.
pub fn evaluate(scenarios: &[Scenario], runs: usize, seed: u64) -> Vec<Row> {
    let mut rows = Vec::new();
    for s in scenarios {
        let results: Vec<[Option<usize>; 3]> = (0..runs as u64)
            .map(|k| run_once(s, seed.wrapping_add(k)))
            .collect();
        for (m, method) in [Method::Sprt, Method::Threshold, Method::MannWhitney]
            .into_iter()
            .enumerate()
        {
            let mut times: Vec<usize> = results.iter().filter_map(|r| r[m]).collect();
            times.sort_unstable();
            let within = times.iter().filter(|t| **t <= 60).count();
            rows.push(Row {
                sigma: s.sigma,
                rate: s.rate,
                candidate_error: s.candidate_error,
                method,
                rolled_back: times.len() as f64 / runs as f64,
                within_60s: within as f64 / runs as f64,
                p50_s: quantile(&times, 0.5),
                p95_s: quantile(&times, 0.95),
            });
        }
    }
    rows
}

/// The standard grid: 1, 10, 20, 100 req/s; baseline 1% errors; candidate 1% (healthy), 2%, 5%.
pub fn standard_scenarios() -> Vec<Scenario> {
    let mut out = Vec::new();
    for sigma in [0.0, 0.25, 0.5] {
        for rate in [1.0, 10.0, 20.0, 100.0] {
            for candidate_error in [0.01, 0.02, 0.05] {
                out.push(Scenario {
                    rate,
                    baseline_error: 0.01,
                    candidate_error,
                    baseline_s: 600,
                    watch_s: 300,
                    sigma,
                });
            }
        }
    }
    out
}

/// Wilson score 95% interval of `k` successes in `n` trials, as percentages.
pub fn wilson(k: f64, n: f64) -> (f64, f64) {
    if n <= 0.0 {
        return (0.0, 100.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let p = k / n;
    let d = 1.0 + z * z / n;
    let c = (p + z * z / (2.0 * n)) / d;
    let h = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / d;
    (((c - h).max(0.0)) * 100.0, ((c + h).min(1.0)) * 100.0)
}

/// Markdown table of the rows.
pub fn table(rows: &[Row], runs: usize) -> String {
    let mut t = format!(
        "Baseline 1% errors measured for 10 min; watch window 5 min; {runs} seeded runs per cell. \
         Healthy rows (1% -> 1%): \"rolled back\" is the false-rollback rate (alpha = 1%).\n\n\
         sigma: lognormal per-30 s-block error-rate multiplier (0 = independent requests).\n\n\
         | sigma | req/s | errors 1% -> | method | rolled back | detected <= 60 s | p50 | p95 |\n|---|---|---|---|---|---|---|---|\n"
    );
    let secs = |v: Option<usize>| v.map(|s| format!("{s} s")).unwrap_or_else(|| "-".into());
    for r in rows {
        t.push_str(&format!(
            "| {} | {} | {:.0}% | {} | {:.1}% [{:.1}, {:.1}] | {:.1}% [{:.1}, {:.1}] | {} | {} |\n",
            r.sigma,
            r.rate,
            r.candidate_error * 100.0,
            r.method.name(),
            r.rolled_back * 100.0,
            wilson(r.rolled_back * runs as f64, runs as f64).0,
            wilson(r.rolled_back * runs as f64, runs as f64).1,
            r.within_60s * 100.0,
            wilson(r.within_60s * runs as f64, runs as f64).0,
            wilson(r.within_60s * runs as f64, runs as f64).1,
            secs(r.p50_s),
            secs(r.p95_s)
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(rate: f64, candidate_error: f64) -> Scenario {
        Scenario {
            rate,
            baseline_error: 0.01,
            candidate_error,
            baseline_s: 600,
            watch_s: 300,
            sigma: 0.0,
        }
    }

    #[test]
    fn overdispersed_healthy_deploys_stay_within_alpha() {
        // Regression guard for issue 12: lognormal sigma = 0.5 per 30 s block rolled back 21% of
        // healthy deploys at 100 req/s under the old Bernoulli SPRT. Fixed seed: not flaky.
        for rate in [10.0, 100.0] {
            let s = Scenario {
                sigma: 0.5,
                ..scenario(rate, 0.01)
            };
            let rows = evaluate(&[s], 200, 1234);
            assert!(
                rows[0].rolled_back <= 0.02,
                "{rate} req/s, sigma 0.5: false rollbacks {:.1}%",
                rows[0].rolled_back * 100.0
            );
        }
    }

    #[test]
    fn healthy_deploys_are_rarely_rolled_back_at_any_traffic() {
        for rate in [1.0, 10.0, 100.0] {
            let rows = evaluate(&[scenario(rate, 0.01)], 200, 7);
            let ours = &rows[0];
            assert!(
                ours.rolled_back <= 0.01,
                "{rate} req/s: false rollbacks {:.1}%",
                ours.rolled_back * 100.0
            );
        }
    }

    #[test]
    fn five_percent_errors_at_20_rps_are_caught_within_a_minute() {
        let rows = evaluate(&[scenario(20.0, 0.05)], 200, 11);
        assert!(
            rows[0].within_60s >= 0.95,
            "detected within 60 s in {:.1}% of runs",
            rows[0].within_60s * 100.0
        );
    }

    #[test]
    fn wilson_interval_matches_a_hand_computed_case() {
        // 4 of 400: p = 1%, Wilson 95% [0.39%, 2.54%].
        let (lo, hi) = wilson(4.0, 400.0);
        assert!(
            (lo - 0.389).abs() < 0.01 && (hi - 2.54).abs() < 0.01,
            "{lo} {hi}"
        );
        assert!(wilson(0.0, 400.0).0.abs() < 1e-9);
    }

    #[test]
    fn simulation_is_repeatable() {
        assert_eq!(
            run_once(&scenario(10.0, 0.05), 3),
            run_once(&scenario(10.0, 0.05), 3)
        );
    }
}
