//! The watcher's metric side: reads the source once per round, feeds the pure [`MetricWatch`],
//! and remembers whether the source is up, so a source going down or coming back is reported once.

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
        })
    }

    /// One read; `candidate_tag` is the tag on probation, if any.
    pub async fn round(
        &mut self,
        population: Population,
        candidate_tag: Option<&str>,
    ) -> FeedRound {
        let read = self.source.read().await;
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
