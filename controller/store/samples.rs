//! What a watch window saw — probe latency and failures, and the cumulative error counts of the
//! candidate and its baseline — kept so the status page can draw the window's evidence after
//! the fact. Only windows of a deploy rollwatch saw happen are sampled (not the probation of
//! what already ran when it started: at 10,000 targets that wrote 4.2 GB an hour). Bounded
//! three times: a sample sums the rounds of about 1/[`POINTS_PER_BAKE`] of the bake, a window
//! keeps at most [`MAX_SAMPLES_PER_WINDOW`], and a target its newest [`WINDOWS_KEPT`] windows
//! (older ones are deleted when a newer one is written).

use rusqlite::params;
use serde::Serialize;

use super::{Store, StoreError};
use crate::target::TargetId;

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
        self.with(move |c| {
            let tx = c.unchecked_transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO samples (env, role, window_ms, tag, at_ms, latency_ms, probes,
                        failures, cand_requests, cand_errors, base_requests, base_errors)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?;
                for s in &samples {
                    insert.execute(params![
                        s.target.env.as_str(),
                        s.target.role,
                        s.window_ms,
                        s.tag,
                        s.at_ms,
                        s.latency_ms,
                        s.probes,
                        s.failures,
                        s.candidate.map(|c| c.0),
                        s.candidate.map(|c| c.1),
                        s.baseline.map(|b| b.0),
                        s.baseline.map(|b| b.1),
                    ])?;
                }
                let mut prune = tx.prepare_cached(
                    "DELETE FROM samples WHERE env = ?1 AND role = ?2 AND window_ms < (
                        SELECT MIN(w) FROM (SELECT DISTINCT window_ms AS w FROM samples
                            WHERE env = ?1 AND role = ?2 ORDER BY w DESC LIMIT ?3))",
                )?;
                let mut targets: Vec<&TargetId> = samples.iter().map(|s| &s.target).collect();
                targets.sort_by_key(|t| t.to_string());
                targets.dedup();
                for t in targets {
                    prune.execute(params![t.env.as_str(), t.role, WINDOWS_KEPT])?;
                }
            }
            tx.commit()?;
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
        self.with(move |c| {
            let w = c.query_row(
                "SELECT MAX(window_ms) FROM samples WHERE env = ?1 AND role = ?2 AND window_ms <= ?3
                   AND (?4 IS NULL OR tag = ?4)",
                params![target.env.as_str(), target.role, at_ms, tag],
                |r| r.get::<_, Option<i64>>(0),
            )?;
            Ok(w)
        })
        .await
    }

    /// The rounds of one window, oldest first.
    pub async fn samples(
        &self,
        target: TargetId,
        window_ms: i64,
    ) -> Result<Vec<Sample>, StoreError> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT tag, at_ms, latency_ms, probes, failures, cand_requests, cand_errors,
                        base_requests, base_errors
                 FROM samples WHERE env = ?1 AND role = ?2 AND window_ms = ?3 ORDER BY at_ms",
            )?;
            let pair = |a: Option<f64>, b: Option<f64>| a.zip(b);
            let rows =
                stmt.query_map(params![target.env.as_str(), target.role, window_ms], |r| {
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
                })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Env;

    fn sample(role: &str, window_ms: i64, at_ms: i64) -> Sample {
        Sample {
            target: TargetId {
                env: Env::Staging,
                role: role.into(),
            },
            window_ms,
            tag: "v2".into(),
            at_ms,
            latency_ms: Some(3),
            probes: 2,
            failures: 0,
            candidate: Some((10.0, 1.0)),
            baseline: None,
        }
    }

    #[tokio::test]
    async fn a_target_keeps_its_newest_windows_and_others_are_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let other = sample("frontend", 1, 1);
        store.save_samples(vec![other.clone()]).await.unwrap();
        for w in 0..WINDOWS_KEPT + 5 {
            let window = 1000 + w * 100;
            let rounds = vec![
                sample("backend", window, window + 1),
                sample("backend", window, window + 2),
            ];
            store.save_samples(rounds).await.unwrap();
        }
        let id = other.target.clone();
        assert_eq!(store.samples(id, 1).await.unwrap(), vec![other]);
        let backend = sample("backend", 0, 0).target;
        let oldest_kept = 1000 + 5 * 100;
        assert!(store
            .samples(backend.clone(), oldest_kept - 100)
            .await
            .unwrap()
            .is_empty());
        let kept = store.samples(backend.clone(), oldest_kept).await.unwrap();
        assert_eq!(
            kept.iter().map(|s| s.at_ms).collect::<Vec<_>>(),
            [oldest_kept + 1, oldest_kept + 2]
        );
        assert_eq!(
            store
                .window_at(backend.clone(), oldest_kept + 150, None)
                .await
                .unwrap(),
            Some(oldest_kept + 100)
        );
        assert_eq!(store.window_at(backend, 10, None).await.unwrap(), None);
    }
}
