//! The watcher's metric side: reads the source once per round, feeds the pure [`MetricWatch`],
//! and remembers whether the source is up, so a source going down or coming back is reported once.
//! It also keeps the start-up grace of a deploy out of the candidate's evidence, as the probes do:
//! a process that just started (cold caches, connections being opened, a recreate in progress)
//! is not yet the version being judged.

use std::time::Duration;

use crate::analysis::{MetricPolicy, MetricVerdict, MetricWatch, Population};
use crate::config::MetricsConfig;

use super::MetricsSource;

pub struct MetricsFeed {
    source: MetricsSource,
    pub watch: MetricWatch,
    pub policy: MetricPolicy,
    up: bool,
    /// The last verdict on a candidate, for status output and promotion notes.
    pub last: Option<MetricVerdict>,
    /// Baseline intervals added since the baseline was last saved.
    pub unsaved: usize,
    grace: StartupGrace,
}

/// What one round produced.
pub struct FeedRound {
    pub verdict: Option<MetricVerdict>,
    /// `Some(up)` when the source just went down or came back; the error kind when down.
    pub transition: Option<(bool, Option<String>)>,
}

impl MetricsFeed {
    pub fn new(config: &MetricsConfig) -> Result<MetricsFeed, String> {
        Ok(MetricsFeed {
            source: MetricsSource::new(config)?,
            watch: MetricWatch::default(),
            policy: config.policy(),
            up: true,
            last: None,
            unsaved: 0,
            grace: StartupGrace::default(),
        })
    }

    /// Intervals of a candidate that start within `grace` of its first round are booked nowhere
    /// (the target's `watch.grace`, the probes' start-up grace). Without it, none is skipped.
    pub fn with_grace(mut self, grace: Duration) -> MetricsFeed {
        self.grace = StartupGrace::new(grace);
        self
    }

    /// One read; `candidate_tag` is the tag on probation, if any.
    pub async fn round(
        &mut self,
        population: Population,
        candidate_tag: Option<&str>,
    ) -> FeedRound {
        let read = self.source.read().await;
        // Inside the start-up grace the delta chain goes on, but the interval counts for nobody.
        let population = self
            .grace
            .population(population, candidate_tag, crate::store::now_ms());
        let now_up = read.is_ok();
        let transition =
            (now_up != self.up).then(|| (now_up, read.as_ref().err().map(|e| e.to_string())));
        self.up = now_up;
        let before = self.watch.baseline.requests();
        let verdict = self.watch.observe(
            read.map_err(|e| e.to_string()),
            population,
            candidate_tag,
            &self.policy,
        );
        if population == Population::Baseline && self.watch.baseline.requests() != before {
            self.unsaved += 1;
        }
        if verdict.is_some() {
            self.last = verdict.clone();
        }
        FeedRound {
            verdict,
            transition,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }
}

/// How late a round's timer may fire and still count as on time. Rounds land a few ms after their
/// tick; without this, whether the round one grace after the first one counts depended on whether
/// its timer fired at 999 or 1,001 ms, and a replay of a recorded trace (its reads a millisecond
/// off the watcher's) booked one interval fewer than the live watcher did (seen: 10.002 s, then
/// 11.001 s against a 1 s grace).
const TICK_JITTER_MS: i64 = 100;

/// The start-up grace of the metric side: which population a round's interval is booked into.
/// Public so `rollwatch replay` books intervals exactly as the watcher does.
#[derive(Debug, Default)]
pub struct StartupGrace {
    grace_ms: i64,
    /// The candidate being watched, when its first round was, and when the last round was.
    candidate: Option<(String, i64, i64)>,
}

impl StartupGrace {
    pub fn new(grace: Duration) -> StartupGrace {
        StartupGrace {
            grace_ms: i64::try_from(grace.as_millis()).unwrap_or(i64::MAX),
            candidate: None,
        }
    }

    /// `population` as the watcher sees it, except that a candidate's interval is booked nowhere
    /// ([`Population::Neither`]) while it began inside the grace: an interval counts only when
    /// the previous round was at least `grace` after the candidate's first round.
    pub fn population(
        &mut self,
        population: Population,
        candidate_tag: Option<&str>,
        now_ms: i64,
    ) -> Population {
        if population != Population::Candidate {
            self.candidate = None;
            return population;
        }
        let tag = candidate_tag.unwrap_or_default();
        let (since, previous) = match &mut self.candidate {
            Some((t, since, last)) if t == tag => {
                let previous = *last;
                *last = now_ms;
                (*since, previous)
            }
            _ => {
                self.candidate = Some((tag.to_string(), now_ms, now_ms));
                (now_ms, now_ms)
            }
        };
        if self.grace_ms > 0
            && previous.saturating_add(TICK_JITTER_MS) < since.saturating_add(self.grace_ms)
        {
            Population::Neither
        } else {
            Population::Candidate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_intervals_starting_inside_the_grace_count_for_nobody() {
        let mut g = StartupGrace {
            grace_ms: 1_000,
            candidate: None,
        };
        let at =
            |g: &mut StartupGrace, ms: i64| g.population(Population::Candidate, Some("v2"), ms);
        assert_eq!(
            g.population(Population::Baseline, None, 0),
            Population::Baseline
        );
        // Rounds every 500 ms from the first candidate round at 10 s.
        assert_eq!(at(&mut g, 10_000), Population::Neither);
        assert_eq!(at(&mut g, 10_500), Population::Neither);
        assert_eq!(at(&mut g, 11_000), Population::Neither, "began at 10.5 s");
        assert_eq!(at(&mut g, 11_500), Population::Candidate, "began at 11 s");
        assert_eq!(at(&mut g, 12_000), Population::Candidate);
        // The next deploy starts its own grace.
        assert_eq!(
            g.population(Population::Candidate, Some("v3"), 13_000),
            Population::Neither
        );
        // Back to stable and a redeploy of the same tag: a new grace too.
        assert_eq!(
            g.population(Population::Baseline, None, 20_000),
            Population::Baseline
        );
        assert_eq!(at(&mut g, 21_000), Population::Neither);
    }

    #[test]
    fn a_round_a_millisecond_early_counts_as_on_time() {
        // The trace that failed a replay test: first round 10.002 s, next 11.001 s, grace 1 s.
        let mut g = StartupGrace::new(Duration::from_secs(1));
        let at =
            |g: &mut StartupGrace, ms: i64| g.population(Population::Candidate, Some("v2"), ms);
        assert_eq!(at(&mut g, 10_002), Population::Neither);
        assert_eq!(at(&mut g, 11_001), Population::Neither, "began at 10.002 s");
        assert_eq!(
            at(&mut g, 12_001),
            Population::Candidate,
            "began 999 ms later"
        );
    }

    #[test]
    fn without_a_grace_every_candidate_interval_counts() {
        let mut g = StartupGrace::default();
        assert_eq!(
            g.population(Population::Candidate, Some("v2"), 5),
            Population::Candidate
        );
    }
}
