//! Simulated traffic: per-second request and error counts of a service before and after a deploy.
//!
//! What varies over time is shared by every stream alive at that second (the known-good version
//! before the deploy, the candidate and the old version running beside it after): a slow
//! dependency, a bad client or the time of day hits all replicas at once. Each stream then draws
//! its own Poisson requests and binomial errors.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution, Poisson};

/// How the error rate moves over time on a healthy service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Traffic {
    /// Independent requests at a constant error rate.
    Iid,
    /// The error rate of each 30 s block is multiplied by a lognormal factor of mean one and this
    /// log-scale sigma.
    Lognormal(f64),
    /// Short bursts: on average one per `BURST_EVERY_S`, each `BURST_S` long, during which the
    /// error rate is `BURST_FACTOR` times its usual value.
    Bursts,
    /// The error rate rises linearly over the whole trace to `DRIFT_END` times its start: at the
    /// end of the watch the candidate is ~1.27x the baseline's mean, below the 1.5x effect.
    Drift,
}

pub const BURST_EVERY_S: f64 = 300.0;
pub const BURST_S: usize = 10;
pub const BURST_FACTOR: f64 = 5.0;
pub const DRIFT_END: f64 = 1.4;
const BLOCK_S: usize = 30;

impl Traffic {
    pub fn label(self) -> String {
        match self {
            Traffic::Iid => "iid".into(),
            Traffic::Lognormal(s) => format!("lognormal σ {s}"),
            Traffic::Bursts => format!("bursts {BURST_FACTOR}x {BURST_S} s"),
            Traffic::Drift => format!("drift to {DRIFT_END}x"),
        }
    }

    /// The multiplier of the error rate at each second of a trace `n` seconds long.
    fn multipliers(self, rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
        match self {
            Traffic::Iid => vec![1.0; n],
            Traffic::Lognormal(sigma) => {
                let mut m = Vec::with_capacity(n);
                while m.len() < n {
                    let z: f64 = rng.sample(rand_distr::StandardNormal);
                    let factor = (sigma * z - sigma * sigma / 2.0).exp();
                    m.extend(std::iter::repeat_n(factor, BLOCK_S.min(n - m.len())));
                }
                m
            }
            Traffic::Bursts => {
                let mut m = vec![1.0; n];
                let mut t = 0.0;
                loop {
                    let gap: f64 = rng.sample(rand_distr::Exp1);
                    t += gap * BURST_EVERY_S;
                    let start = t as usize;
                    if start >= n {
                        break m;
                    }
                    let end = (start + BURST_S).min(n);
                    m[start..end].iter_mut().for_each(|x| *x = BURST_FACTOR);
                }
            }
            Traffic::Drift => (0..n)
                .map(|t| 1.0 + (DRIFT_END - 1.0) * t as f64 / n.max(1) as f64)
                .collect(),
        }
    }
}

/// Requests and errors served in one second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Second {
    pub requests: u64,
    pub errors: u64,
}

/// One simulated deploy: `before` is the known-good version; after the deploy the candidate and
/// the old version (`beside`, e.g. the other replica or the canary's baseline) serve at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub before: Vec<Second>,
    pub candidate: Vec<Second>,
    pub beside: Vec<Second>,
}

/// What to simulate: traffic shape, rate per stream, and the error rates of both versions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    pub traffic: Traffic,
    /// Requests per second of each stream (Poisson).
    pub rate: f64,
    pub baseline_error: f64,
    pub candidate_error: f64,
    pub before_s: usize,
    pub watch_s: usize,
}

impl Scenario {
    /// A stable key for the scenario: its random stream does not depend on which other
    /// scenarios are run or in which order.
    pub fn key(&self) -> u64 {
        let text = format!("{self:?}");
        // FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
        text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    /// The trace of run `run`: a ChaCha stream keyed by (seed, scenario, run), so every cell and
    /// every run draws from its own independent stream and any one run can be replayed alone.
    pub fn trace(&self, seed: u64, run: u64) -> Trace {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&self.key().to_le_bytes());
        key[16..24].copy_from_slice(&run.to_le_bytes());
        let mut rng = ChaCha8Rng::from_seed(key);
        let m = self
            .traffic
            .multipliers(&mut rng, self.before_s + self.watch_s);
        let (pre, post) = m.split_at(self.before_s);
        Trace {
            before: stream(&mut rng, self.rate, self.baseline_error, pre),
            candidate: stream(&mut rng, self.rate, self.candidate_error, post),
            beside: stream(&mut rng, self.rate, self.baseline_error, post),
        }
    }
}

fn stream(rng: &mut ChaCha8Rng, rate: f64, p: f64, multipliers: &[f64]) -> Vec<Second> {
    let poisson = Poisson::new(rate).ok();
    multipliers
        .iter()
        .map(|m| {
            let requests = poisson.map_or(0, |d| d.sample(rng) as u64);
            let errors =
                Binomial::new(requests, (p * m).clamp(0.0, 1.0)).map_or(0, |d| d.sample(rng));
            Second { requests, errors }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(traffic: Traffic) -> Scenario {
        Scenario {
            traffic,
            rate: 1000.0,
            baseline_error: 0.01,
            candidate_error: 0.01,
            before_s: 600,
            watch_s: 600,
        }
    }

    fn ratio(s: &[Second]) -> f64 {
        let n: u64 = s.iter().map(|x| x.requests).sum();
        let e: u64 = s.iter().map(|x| x.errors).sum();
        e as f64 / n as f64
    }

    #[test]
    fn runs_are_repeatable_and_streams_independent() {
        let s = scenario(Traffic::Iid);
        assert_eq!(s.trace(1, 7), s.trace(1, 7));
        assert_ne!(s.trace(1, 7).candidate, s.trace(1, 8).candidate);
        let other = Scenario { rate: 999.0, ..s };
        assert_ne!(s.key(), other.key());
    }

    #[test]
    fn rates_match_the_scenario_at_a_thousand_requests_per_second() {
        let t = scenario(Traffic::Iid).trace(1, 1);
        let n: u64 = t.before.iter().map(|x| x.requests).sum();
        assert!((n as f64 / 600.0 - 1000.0).abs() < 10.0, "{n}");
        assert!((ratio(&t.before) - 0.01).abs() < 0.001);
    }

    #[test]
    fn bursts_and_drift_raise_the_error_rate_where_they_should() {
        let drift = scenario(Traffic::Drift).trace(1, 1);
        let late = ratio(&drift.candidate[500..]);
        assert!(late > 0.0125 && late < 0.0145, "{late}");
        // Over many runs, bursts add about (5 - 1) * 10 / 300 = 13% to the mean error rate.
        let mean: f64 = (0..50)
            .map(|r| ratio(&scenario(Traffic::Bursts).trace(2, r).candidate))
            .sum::<f64>()
            / 50.0;
        assert!(mean > 0.0105 && mean < 0.0125, "{mean}");
    }
}
