//! Canary deploys on record. Every weight change is written as an intent (`applied = 0`)
//! before the load balancer is asked, and marked applied after it answered; so after a
//! `kill -9` the store says which weights were meant, and whether the balancer may not have
//! them yet. A deploy's row ends in one of the final states, written once.

use serde::Serialize;

use super::{now_ms, returned_id, Row, Store, StoreError};
use crate::target::{Env, TargetId};
use crate::traffic::Slot;
use crate::vals;

/// Where a canary deploy is. `Starting`, `Stepping` and `Holding` are unfinished: a restart
/// finds them and finishes or aborts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryState {
    /// The new version is being started in the idle slot; no traffic goes to it.
    Starting,
    /// Traffic moves to the new version step by step.
    Stepping,
    /// Promoted: the new version takes everything, the old slot runs at weight 0 until the
    /// hold ends.
    Holding,
    /// Promoted and the hold is over: the old slot was stopped.
    Promoted,
    /// Taken out: all traffic back on the old version, the new slot removed.
    Aborted,
    /// A regression during the hold moved all traffic back to the held slot.
    FlippedBack,
    /// Could not start, or the load balancer failed mid-way; `reason` says what is left.
    Failed,
}

impl CanaryState {
    pub const UNFINISHED: [CanaryState; 3] = [
        CanaryState::Starting,
        CanaryState::Stepping,
        CanaryState::Holding,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CanaryState::Starting => "starting",
            CanaryState::Stepping => "stepping",
            CanaryState::Holding => "holding",
            CanaryState::Promoted => "promoted",
            CanaryState::Aborted => "aborted",
            CanaryState::FlippedBack => "flipped_back",
            CanaryState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<CanaryState> {
        [
            CanaryState::Starting,
            CanaryState::Stepping,
            CanaryState::Holding,
            CanaryState::Promoted,
            CanaryState::Aborted,
            CanaryState::FlippedBack,
            CanaryState::Failed,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }

    pub fn is_unfinished(self) -> bool {
        Self::UNFINISHED.contains(&self)
    }
}

/// One canary deploy as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanaryRecord {
    pub id: i64,
    pub target: TargetId,
    pub tag: String,
    /// The version live when the deploy began.
    pub from_tag: Option<String>,
    /// The slot the new version runs in.
    #[serde(serialize_with = "slot_name")]
    pub slot: Slot,
    pub state: CanaryState,
    /// The weights last written: meant, and applied when `applied`.
    pub weights: Weights,
    pub applied: bool,
    /// Each step: percent of the traffic on the new version, and when its weight was set (ms).
    pub steps: Vec<(u32, i64)>,
    pub reason: String,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    /// While holding: when the old slot is stopped.
    pub hold_until_ms: Option<i64>,
    pub commit_sha: Option<String>,
    pub pipeline_url: Option<String>,
}

fn slot_name<S: serde::Serializer>(slot: &Slot, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(slot.name())
}

/// The weights of the blue and the green slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Weights {
    pub blue: u32,
    pub green: u32,
}

impl Weights {
    pub fn of(&self, slot: Slot) -> u32 {
        match slot {
            Slot::Blue => self.blue,
            Slot::Green => self.green,
        }
    }

    /// `weights` applied over these.
    pub fn with(mut self, weights: &[(Slot, u32)]) -> Weights {
        for (slot, w) in weights {
            match slot {
                Slot::Blue => self.blue = *w,
                Slot::Green => self.green = *w,
            }
        }
        self
    }
}

/// What is known when a canary deploy begins.
#[derive(Debug, Clone)]
pub struct CanaryStart {
    pub target: TargetId,
    pub tag: String,
    pub from_tag: Option<String>,
    pub slot: Slot,
    /// The weights in effect before anything changes.
    pub weights: Weights,
    pub commit_sha: Option<String>,
    pub pipeline_url: Option<String>,
}

const SELECT: &str =
    "SELECT id, env, role, tag, from_tag, slot, state, blue, green, applied, steps,
    reason, started_ms, ended_ms, hold_until_ms, commit_sha, pipeline_url FROM canaries";

fn row_to_canary(r: &Row) -> Result<CanaryRecord, StoreError> {
    let env: String = r.get(1)?;
    let slot: String = r.get(5)?;
    let state: String = r.get(6)?;
    let steps: String = r.get(10)?;
    let id: i64 = r.get(0)?;
    let corrupt = |what: String| StoreError::Corrupt(format!("canary #{id}: {what}"));
    let env = Env::parse(&env).ok_or_else(|| corrupt(format!("unknown env {env:?}")))?;
    let slot = match slot.as_str() {
        "blue" => Slot::Blue,
        "green" => Slot::Green,
        other => return Err(corrupt(format!("unknown slot {other:?}"))),
    };
    let state =
        CanaryState::parse(&state).ok_or_else(|| corrupt(format!("unknown state {state:?}")))?;
    let steps = serde_json::from_str(&steps).map_err(|e| corrupt(format!("steps: {e}")))?;
    Ok(CanaryRecord {
        id,
        target: TargetId {
            env,
            role: r.get(2)?,
        },
        tag: r.get(3)?,
        from_tag: r.get(4)?,
        slot,
        state,
        weights: Weights {
            blue: r.get(7)?,
            green: r.get(8)?,
        },
        applied: r.get(9)?,
        steps,
        reason: r.get(11)?,
        started_ms: r.get(12)?,
        ended_ms: r.get(13)?,
        hold_until_ms: r.get(14)?,
        commit_sha: r.get(15)?,
        pipeline_url: r.get(16)?,
    })
}

impl Store {
    /// Writes a new canary deploy (state `starting`) before its slot is started; returns its id.
    pub async fn begin_canary(&self, start: CanaryStart) -> Result<i64, StoreError> {
        self.with(move |db| {
            let row = db.query_opt(
                "INSERT INTO canaries (env, role, tag, from_tag, slot, state, blue, green, applied,
                    started_ms, commit_sha, pipeline_url)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'starting', ?6, ?7, ?8, ?9, ?10, ?11) RETURNING id",
                vals![
                    start.target.env.as_str(),
                    start.target.role,
                    start.tag,
                    start.from_tag,
                    start.slot.name(),
                    start.weights.blue,
                    start.weights.green,
                    true,
                    now_ms(),
                    start.commit_sha,
                    start.pipeline_url
                ],
            )?;
            returned_id(row)
        })
        .await
    }

    /// The intent of a weight change, written before the balancer is asked.
    pub async fn canary_weights_meant(&self, id: i64, w: Weights) -> Result<(), StoreError> {
        self.with(move |db| {
            db.execute(
                "UPDATE canaries SET blue = ?1, green = ?2, applied = ?3 WHERE id = ?4",
                vals![w.blue, w.green, false, id],
            )?;
            Ok(())
        })
        .await
    }

    /// The balancer answered the change last meant.
    pub async fn canary_weights_applied(&self, id: i64) -> Result<(), StoreError> {
        self.with(move |db| {
            db.execute(
                "UPDATE canaries SET applied = ?1 WHERE id = ?2",
                vals![true, id],
            )?;
            Ok(())
        })
        .await
    }

    /// A step began: `percent` of the traffic on the new version since `at_ms`. The steps are
    /// a JSON array appended to in Rust, in one transaction (SQLite's `json_insert` has no
    /// PostgreSQL twin on a TEXT column).
    pub async fn canary_step(&self, id: i64, percent: u32, at_ms: i64) -> Result<(), StoreError> {
        self.with_tx(move |db| {
            let Some(row) = db.query_opt("SELECT steps FROM canaries WHERE id = ?1", vals![id])?
            else {
                return Ok(());
            };
            let steps: String = row.get(0)?;
            let mut steps: Vec<(u32, i64)> = serde_json::from_str(&steps)
                .map_err(|e| StoreError::Corrupt(format!("canary #{id}: steps: {e}")))?;
            steps.push((percent, at_ms));
            let steps =
                serde_json::to_string(&steps).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            db.execute(
                "UPDATE canaries SET state = 'stepping', steps = ?1 WHERE id = ?2",
                vals![steps, id],
            )?;
            Ok(())
        })
        .await
    }

    /// Moves a deploy to `state` with why; an end state also records when it ended.
    pub async fn canary_state(
        &self,
        id: i64,
        state: CanaryState,
        reason: String,
        hold_until_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let ended = (!state.is_unfinished() || state == CanaryState::Holding).then(now_ms);
        self.with(move |db| {
            db.execute(
                "UPDATE canaries SET state = ?1, reason = ?2, hold_until_ms = ?3,
                    ended_ms = COALESCE(?4, ended_ms) WHERE id = ?5",
                vals![state.as_str(), reason, hold_until_ms, ended, id],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn canary(&self, id: i64) -> Result<Option<CanaryRecord>, StoreError> {
        self.with(move |db| {
            db.query_opt(&format!("{SELECT} WHERE id = ?1"), vals![id])?
                .map(|r| row_to_canary(&r))
                .transpose()
        })
        .await
    }

    /// Newest first; all targets when `target` is `None`.
    pub async fn canaries(
        &self,
        target: Option<TargetId>,
        limit: usize,
    ) -> Result<Vec<CanaryRecord>, StoreError> {
        self.with(move |db| super::newest_rows(db, SELECT, target.as_ref(), limit, row_to_canary))
            .await
    }

    /// The target's newest deploy that has not reached an end state, if any.
    pub async fn unfinished_canary(
        &self,
        target: TargetId,
    ) -> Result<Option<CanaryRecord>, StoreError> {
        let newest = self.canaries(Some(target), 1).await?;
        Ok(newest.into_iter().find(|r| r.state.is_unfinished()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_weight_change_keeps_the_other_slot() {
        let w = Weights {
            blue: 100,
            green: 0,
        };
        let w = w.with(&[(Slot::Green, 10)]);
        assert_eq!((w.blue, w.green), (100, 10));
        let w = w.with(&[(Slot::Blue, 0), (Slot::Green, 100)]);
        assert_eq!((w.of(Slot::Blue), w.of(Slot::Green)), (0, 100));
    }
}
