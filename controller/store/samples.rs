//! What a watch window saw — probe latency and failures, and the cumulative error counts of the
//! candidate and its baseline — kept so the status page can draw the window's evidence after
//! the fact. Only windows of a deploy rollwatch saw happen are sampled (not the probation of
//! what already ran when it started: at 10,000 targets that wrote 4.2 GB an hour). Bounded
//! three times: a sample sums the rounds of about 1/[`POINTS_PER_BAKE`] of the bake, a window
//! keeps at most [`MAX_SAMPLES_PER_WINDOW`], and a target its newest [`WINDOWS_KEPT`] windows
//! (older ones are deleted when a newer one is written).

use serde::Serialize;

use super::{Store, StoreError};
use crate::target::TargetId;
use crate::vals;

/// Samples per bake: a sample sums `bake / interval / POINTS_PER_BAKE` rounds (at least one).
pub const POINTS_PER_BAKE: u64 = 120;
/// Samples kept per window, for windows that outlast their bake (a paused rollback).
pub const MAX_SAMPLES_PER_WINDOW: u32 = 240;
/// Windows kept per target.
pub const WINDOWS_KEPT: i64 = 10;

/// A few rounds of a watch window. Error counts are cumulative within the window as of its
/// last round (`None` without an error-metrics source); `latency_ms` is the slowest passed
/// probe of those rounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub target: TargetId,
    /// When the window opened (the deploy was seen): the window's key.
    pub window_ms: i64,
    pub tag: String,
    pub at_ms: i64,
    pub latency_ms: Option<i64>,
    pub probes: u32,
    pub failures: u32,
    pub candidate: Option<(f64, f64)>,
    pub baseline: Option<(f64, f64)>,
}

impl Store {
    /// Writes `samples` in one transaction and drops, for each target written, the windows
    /// beyond the newest [`WINDOWS_KEPT`].
    pub async fn save_samples(&self, samples: Vec<Sample>) -> Result<(), StoreError> {
        if !self.may_decide() {
            return Ok(());
        }
        self.with_tx(move |db| {
            for s in &samples {
                db.execute(
                    "INSERT INTO samples (env, role, window_ms, tag, at_ms, latency_ms, probes,
                        failures, cand_requests, cand_errors, base_requests, base_errors)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    vals![
                        s.target.env.as_str(),
                        &s.target.role,
                        s.window_ms,
                        &s.tag,
                        s.at_ms,
                        s.latency_ms,
                        s.probes,
                        s.failures,
                        s.candidate.map(|c| c.0),
                        s.candidate.map(|c| c.1),
                        s.baseline.map(|b| b.0),
                        s.baseline.map(|b| b.1),
                    ],
                )?;
            }
            let mut targets: Vec<&TargetId> = samples.iter().map(|s| &s.target).collect();
            targets.sort_by_key(|t| t.to_string());
            targets.dedup();
            for t in targets {
                // PostgreSQL 15 wants the derived table named (`AS kept`).
                db.execute(
                    "DELETE FROM samples WHERE env = ?1 AND role = ?2 AND window_ms < (
                        SELECT MIN(w) FROM (SELECT DISTINCT window_ms AS w FROM samples
                            WHERE env = ?1 AND role = ?2 ORDER BY w DESC LIMIT ?3) AS kept)",
                    vals![t.env.as_str(), &t.role, WINDOWS_KEPT],
                )?;
            }
            Ok(())
        })
        .await
    }

    /// The window open at `at_ms` (the newest that opened at or before it), if one was kept;
    /// with `tag`, only a window of that tag.
    pub async fn window_at(
        &self,
        target: TargetId,
        at_ms: i64,
        tag: Option<String>,
    ) -> Result<Option<i64>, StoreError> {
        self.with(move |db| {
            match db.query_opt(
                "SELECT MAX(window_ms) FROM samples WHERE env = ?1 AND role = ?2 AND window_ms <= ?3
                   AND (CAST(?4 AS TEXT) IS NULL OR tag = ?4)",
                vals![target.env.as_str(), target.role, at_ms, tag],
            )? {
                Some(r) => r.get(0),
                None => Ok(None),
            }
        })
        .await
    }

    /// The rounds of one window, oldest first.
    pub async fn samples(
        &self,
        target: TargetId,
        window_ms: i64,
    ) -> Result<Vec<Sample>, StoreError> {
        self.with(move |db| {
            let rows = db.query(
                "SELECT tag, at_ms, latency_ms, probes, failures, cand_requests, cand_errors,
                        base_requests, base_errors
                 FROM samples WHERE env = ?1 AND role = ?2 AND window_ms = ?3 ORDER BY at_ms",
                vals![target.env.as_str(), &target.role, window_ms],
            )?;
            let pair = |a: Option<f64>, b: Option<f64>| a.zip(b);
            rows.iter()
                .map(|r| {
                    Ok(Sample {
                        target: target.clone(),
                        window_ms,
                        tag: r.get(0)?,
                        at_ms: r.get(1)?,
                        latency_ms: r.get(2)?,
                        probes: r.get(3)?,
                        failures: r.get(4)?,
                        candidate: pair(r.get(5)?, r.get(6)?),
                        baseline: pair(r.get(7)?, r.get(8)?),
                    })
                })
                .collect()
        })
        .await
    }
}
