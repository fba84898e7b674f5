//! Steering one canary through its steps on a traffic driver: set the step's weights, read
//! both slots every interval, let the judge and the step decisions ([`super::plan`]) say what
//! next, and promote or abort. The new version must already run in the canary slot; starting
//! it there (and recording every weight change as an intent) is the deploy flow's part.

use std::future::Future;
use std::time::Duration;

use super::judge::CanaryJudge;
use super::plan::{self, Next, StepState};
use crate::clock::steady_ms;
use crate::config::CanaryConfig;
use crate::store::now_ms;
use crate::traffic::{Slot, TrafficDriver, TrafficError};

/// An order to a canary in flight: a person's (`rollwatch promote|abort`), or the watcher's
/// when it found the new version regressed (its container exited, its /health failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manual {
    /// The rest of the steps skipped: all traffic to the new version now.
    Promote,
    /// All traffic back to the live version now; why, when it was not a person.
    Abort(Option<String>),
}

impl Manual {
    /// The abort's reason at `percent`.
    fn abort_reason(why: Option<String>, percent: u32) -> String {
        match why {
            Some(why) => format!("regressed at {percent}%: {why}"),
            None => format!("aborted by hand at {percent}%"),
        }
    }
}

/// What the deploy around the flow hears and records: each step as it begins, and people's
/// orders, taken at the next reading.
pub trait Steering: Send + Sync {
    fn stepped(&self, percent: u32, at_ms: i64) -> impl Future<Output = ()> + Send;
    fn order(&self) -> Option<Manual>;
}

/// No record, no orders: the flow on its own (tests).
impl Steering for () {
    async fn stepped(&self, _: u32, _: i64) {}
    fn order(&self) -> Option<Manual> {
        None
    }
}

/// `inner`, with an order taken while the new slot started handed on first.
pub struct Early<'a, S> {
    pub inner: &'a S,
    pub first: std::sync::Mutex<Option<Manual>>,
}

impl<S: Steering> Steering for Early<'_, S> {
    async fn stepped(&self, percent: u32, at_ms: i64) {
        self.inner.stepped(percent, at_ms).await
    }

    fn order(&self) -> Option<Manual> {
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner()).take();
        first.or_else(|| self.inner.order())
    }
}

/// The next person's order, asked a few times a second (orders are rare and wait in a queue).
pub async fn next_order<S: Steering>(steer: &S) -> Manual {
    loop {
        if let Some(order) = steer.order() {
            return order;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How a canary ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub promoted: bool,
    /// Why it was promoted or aborted, in words.
    pub reason: String,
    /// Each step taken: (percent, when its weight was set, ms).
    pub steps: Vec<(u32, i64)>,
    /// When the last weight change (all to one slot) took effect, ms.
    pub ended_ms: i64,
    /// Aborted because the version is bad (its judge, or a person, said so), rather than for
    /// want of a decision (too little traffic before the deadline).
    pub judged_bad: bool,
}

impl Outcome {
    /// Aborted before the new version had any traffic.
    pub fn aborted_while_starting(why: Option<String>) -> Outcome {
        let reason = match why {
            Some(why) => format!("regressed while starting, before it had any traffic: {why}"),
            None => {
                "aborted by hand while the new version started, before it had any traffic".into()
            }
        };
        Outcome {
            promoted: false,
            reason,
            steps: Vec::new(),
            ended_ms: now_ms(),
            judged_bad: true,
        }
    }
}

/// Runs the steps of `c` with the new version in `canary`, reading every `interval`, and gives
/// up (aborting) after `deadline` without reaching a decision.
pub async fn run<D: TrafficDriver, S: Steering>(
    driver: &D,
    steer: &S,
    c: &CanaryConfig,
    judge: &mut CanaryJudge,
    canary: Slot,
    interval: Duration,
    deadline: Duration,
) -> Result<Outcome, TrafficError> {
    let live = canary.other();
    let started = tokio::time::Instant::now();
    // At weight 0 the canary serves nothing until its first step: one reading anchors both
    // the judge and the first step's request count.
    let first = driver.read().await?;
    judge.observe(&first);
    let mut served_before = canary_served(&first, canary);
    let mut steps = Vec::new();
    // An order already given: an abort gives the canary no traffic at all.
    match steer.order() {
        Some(Manual::Abort(why)) => return Ok(Outcome::aborted_while_starting(why)),
        Some(Manual::Promote) => {
            driver.set_weights(&[(canary, 100), (live, 0)]).await?;
            let at = now_ms();
            steer.stepped(100, at).await;
            return Ok(Outcome {
                promoted: true,
                reason: "promoted by hand before its first step".into(),
                steps: vec![(100, at)],
                ended_ms: at,
                judged_bad: false,
            });
        }
        None => {}
    }
    let mut step = 0;
    let mut state = set_step(driver, c, live, canary, step, &mut steps).await?;
    steer
        .stepped(percent_of(&steps), last_step_ms(&steps))
        .await;
    loop {
        tokio::time::sleep(interval).await;
        let slots = driver.read().await?;
        let served = canary_served(&slots, canary);
        state.requests = served.saturating_sub(served_before);
        let verdict = judge.observe(&slots);
        let timed_out = started.elapsed() >= deadline;
        let decision = if let Some(order) = steer.order() {
            match order {
                Manual::Promote => Next::Promote,
                Manual::Abort(why) => Next::Abort {
                    reason: Manual::abort_reason(why, percent_of(&steps)),
                },
            }
        } else if timed_out {
            Next::Abort {
                reason: format!(
                    "no decision within {} (the canary served {} requests in its last step)",
                    humantime::format_duration(deadline),
                    state.requests
                ),
            }
        } else {
            match plan::next(c, &state, steady_ms(), verdict.as_ref()) {
                // More traffic only to a canary that does not already look worse.
                Next::Step { .. } | Next::Promote if judge.suspect().is_some() => Next::Stay,
                other => other,
            }
        };
        match decision {
            Next::Stay => {}
            Next::Step { .. } => {
                step += 1;
                state = set_step(driver, c, live, canary, step, &mut steps).await?;
                steer
                    .stepped(percent_of(&steps), last_step_ms(&steps))
                    .await;
                served_before = served;
            }
            Next::Promote => {
                // The new version takes everything; the old one stays up at 0 for the hold.
                driver.set_weights(&[(canary, 100), (live, 0)]).await?;
                return Ok(Outcome {
                    promoted: true,
                    reason: format!("healthy at every step: {}", describe(&steps)),
                    steps,
                    ended_ms: now_ms(),
                    judged_bad: false,
                });
            }
            Next::Abort { reason } => {
                // The live slot first: no moment with both at 0.
                driver.set_weights(&[(live, 100), (canary, 0)]).await?;
                return Ok(Outcome {
                    promoted: false,
                    reason,
                    steps,
                    ended_ms: now_ms(),
                    judged_bad: !timed_out,
                });
            }
        }
    }
}

async fn set_step<D: TrafficDriver>(
    driver: &D,
    c: &CanaryConfig,
    live: Slot,
    canary: Slot,
    step: usize,
    steps: &mut Vec<(u32, i64)>,
) -> Result<StepState, TrafficError> {
    let percent = c.steps.get(step).copied().unwrap_or(100);
    let (live_w, canary_w) = plan::weights(percent);
    driver
        .set_weights(&[(live, live_w), (canary, canary_w)])
        .await?;
    // The record keeps the wall clock; the step's minimum time is timed on the steady one.
    steps.push((percent, now_ms()));
    Ok(StepState {
        step,
        since_ms: steady_ms(),
        requests: 0,
    })
}

fn percent_of(steps: &[(u32, i64)]) -> u32 {
    steps.last().map_or(0, |s| s.0)
}

fn last_step_ms(steps: &[(u32, i64)]) -> i64 {
    steps.last().map_or_else(now_ms, |s| s.1)
}

fn canary_served(slots: &[crate::traffic::SlotReading; 2], canary: Slot) -> u64 {
    slots
        .iter()
        .find(|s| s.slot == canary)
        .map_or(0, |s| s.responses + s.errors)
}

fn describe(steps: &[(u32, i64)]) -> String {
    steps
        .iter()
        .map(|(p, _)| format!("{p}%"))
        .collect::<Vec<_>>()
        .join(" → ")
}
