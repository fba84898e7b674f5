//! The decision core: one pure function, [`decide`], from a target's state and one input (a round
//! of observations, the end of a rollback, an operator's pause or resume, the start-up adoption of
//! what runs) to its next state and what should happen. Every state transition of a target is made
//! here and nowhere else; the watcher only carries decisions out and the store persists the
//! [`Control`] part. Level-triggered, like a kube reconciler: safe to call again after any event,
//! tick, reconnect or restart. No I/O, no clocks here.

use std::sync::Arc;

use serde::Serialize;

use crate::analysis::MetricVerdict;
use crate::probe::ProbeFailure;
use crate::store::Trigger;

/// Timing rules of a watch window, from the target's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Consecutive failed probes (after the grace) that make a deploy `regressed`.
    pub failures: u32,
    /// Start-up time during which failed probes do not count.
    pub grace_ms: i64,
    /// How long a deploy must stay healthy to become known-good.
    pub bake_ms: i64,
    /// After a rollback, automatic rollbacks of this target wait this long.
    pub cooldown_ms: i64,
    /// The first wait after a refused automatic rollback; it doubles with each refusal.
    pub refusal_backoff_ms: i64,
}

/// Where a target stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Nothing observed yet (just started, or Docker unreachable since start).
    Unknown,
    /// `tag` is on probation since `since_ms`; `failures` consecutive failed probes so far.
    Watching {
        tag: String,
        since_ms: i64,
        failures: u32,
        last_failure: Option<String>,
    },
    /// `tag` passed its watch window, or was validated after a rollback.
    Stable { tag: String },
    /// `tag` regressed and was not rolled back (dry run, paused, cooldown): nothing more is done
    /// for it; the next deploy starts a new watch window.
    Regressed { tag: String, reason: String },
    /// A rollback did not bring the target back: no automatic action until a human resumes it.
    RollbackFailed { tag: String, reason: String },
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Unknown => "unknown",
            Phase::Watching { .. } => "watching",
            Phase::Stable { .. } => "stable",
            Phase::Regressed { .. } => "regressed",
            Phase::RollbackFailed { .. } => "rollback_failed",
        }
    }

    pub fn tag(&self) -> Option<&str> {
        match self {
            Phase::Unknown => None,
            Phase::Watching { tag, .. }
            | Phase::Stable { tag }
            | Phase::Regressed { tag, .. }
            | Phase::RollbackFailed { tag, .. } => Some(tag),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetState {
    pub phase: Phase,
    pub paused: bool,
    /// When the last automatic or manual rollback finished, for the cooldown.
    pub last_rollback_ms: Option<i64>,
    /// Consecutive probe rounds a stable target looked bad; a single bad round is usually a
    /// compose recreate in progress (the old container stopped before the new one starts).
    pub stable_failures: u32,
    /// Failed probes before this instant do not count: the start-up grace after a deploy, and
    /// again after Docker was unreachable (a daemon restart restarts the containers too).
    pub grace_until_ms: i64,
    /// Docker could not be asked in the last round.
    pub blind: bool,
    /// Automatic rollbacks of the current deploy refused in a row before anything changed.
    pub refusals: u32,
    /// After a refusal, the next automatic attempt waits until then (back-off).
    pub retry_at_ms: Option<i64>,
}

impl TargetState {
    pub fn new() -> TargetState {
        TargetState {
            phase: Phase::Unknown,
            paused: false,
            last_rollback_ms: None,
            stable_failures: 0,
            grace_until_ms: 0,
            blind: false,
            refusals: 0,
            retry_at_ms: None,
        }
    }

    /// The guard-rail part of the state, the part that must survive a restart.
    pub fn control(&self) -> Control {
        Control {
            paused: self.paused,
            halted: match &self.phase {
                Phase::RollbackFailed { tag, reason } => Some(Halt {
                    tag: tag.clone(),
                    reason: reason.clone(),
                }),
                _ => None,
            },
            last_rollback_ms: self.last_rollback_ms,
            refusals: self.refusals,
            retry_at_ms: self.retry_at_ms,
        }
    }

    /// The state a target starts in after a restart: its stored guard rails, and a phase that is
    /// `rollback_failed` when it was halted, else unknown (whatever runs is looked at afresh).
    pub fn restored(control: Control) -> TargetState {
        TargetState {
            phase: match control.halted {
                Some(Halt { tag, reason }) => Phase::RollbackFailed { tag, reason },
                None => Phase::Unknown,
            },
            paused: control.paused,
            last_rollback_ms: control.last_rollback_ms,
            refusals: control.refusals,
            retry_at_ms: control.retry_at_ms,
            ..TargetState::new()
        }
    }
}

/// What must hold across restarts, so a crash or an upgrade never lifts a guard rail: a pause, a
/// halt after a failed rollback, the cooldown's clock and the refusal back-off. The store keeps it
/// in its own row, written in the same transaction as the event that changed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Control {
    pub paused: bool,
    pub halted: Option<Halt>,
    pub last_rollback_ms: Option<i64>,
    pub refusals: u32,
    pub retry_at_ms: Option<i64>,
}

/// Why a target stopped acting: a rollback changed something and did not bring it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Halt {
    pub tag: String,
    pub reason: String,
}

/// Automatic rollbacks refused before anything changed (Docker unreachable, tag unknown) are
/// tried again after `policy.refusal_backoff_ms × 2^(n-1)`, capped at 5 min, at most
/// `REFUSAL_LIMIT` times; then the target gives up on that deploy and says so loudly instead of
/// retrying forever.
pub const REFUSAL_LIMIT: u32 = 5;
const REFUSAL_BACKOFF_MAX_MS: i64 = 300_000;

fn refusal_backoff_ms(policy: &Policy, refusals: u32) -> i64 {
    let doublings = refusals.saturating_sub(1).min(16);
    policy
        .refusal_backoff_ms
        .max(1)
        .saturating_mul(1 << doublings)
        .min(REFUSAL_BACKOFF_MAX_MS)
}

/// How a rollback ended, as the state machine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackEnd {
    /// Executed and validated: the target runs `to_tag`.
    Succeeded { to_tag: String },
    /// Dry run: decided and recorded, nothing executed.
    DryRun,
    /// Not this one's to do, and nothing was executed: a canary deploy is in flight and its
    /// own judge decides.
    Withheld { why: String },
    /// This instance does not hold the lease (a follower, or a leader whose store is away), or
    /// lost it mid-way and was fenced. Nothing changes: the target stays as judged, so the
    /// same regression is acted on the first round this instance leads again, and meanwhile
    /// the leader (or the one that resumes the fenced record) acts.
    NotLeader { why: String },
    /// Something was changed (the executor ran) and the target did not come back: halt.
    Failed { tag: String, error: String },
    /// Refused before anything changed (Docker unreachable, unknown tag, registry down).
    Refused { error: String },
}

/// Everything that can move a target's state.
#[derive(Debug, Clone)]
pub enum Input {
    /// One round of evidence.
    Observed(Observation),
    /// A rollback of `from_tag`, ordered by `trigger`, has ended.
    RollbackEnded {
        now_ms: i64,
        from_tag: String,
        reason: String,
        trigger: Trigger,
        end: RollbackEnd,
    },
    /// An operator paused automatic rollbacks.
    Pause,
    /// An operator resumed them; also clears a halt (a human has looked).
    Resume,
    /// Start-up: the tag running now, and whether the store vouches for it (known-good, not bad).
    Adopt { running: String, known_good: bool },
    /// This instance took the lease: the guard rails the previous leader kept (a pause, a
    /// halt, the cooldown's clock, the refusal back-off) replace what this follower held.
    Restored(Control),
}

impl Default for TargetState {
    fn default() -> Self {
        TargetState::new()
    }
}

/// A target's container as the decision needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    /// The tag of its image reference, when it is `<repository>:<tag>`.
    pub tag: Option<String>,
    /// Docker's state: `running`, `exited`, `restarting`, `dead`, `created`, `paused`.
    pub state: String,
    /// Docker healthcheck status when the image defines one (`healthy`, `unhealthy`, `starting`).
    pub health: Option<String>,
    /// Exit code when the container is not running.
    pub exit_code: Option<i64>,
    /// Creation time (Unix seconds): the newest container is the latest deploy.
    pub created: i64,
}

/// Exit codes of a container stopped on purpose: 0, or 143 (128 + SIGTERM) for a process that
/// let the signal kill it. `docker compose up` stops the old container this way before it starts
/// the new one, so such an exit is a recreate in progress, not a crash.
fn stopped_on_purpose(exit_code: Option<i64>) -> bool {
    matches!(exit_code, Some(0) | Some(143))
}

/// One round of evidence.
#[derive(Debug, Clone)]
pub struct Observation {
    pub now_ms: i64,
    /// `Err` when Docker could not be asked: evidence missing, never a reason to act.
    pub containers: Result<Arc<[ContainerView]>, String>,
    /// `None` when no probe ran this round.
    pub probe: Option<Result<(), ProbeFailure>>,
    /// The error-metric judgement of the candidate, when the target has a metrics source.
    pub metrics: Option<MetricVerdict>,
    /// Containers that died since the last round, as Docker reported them: (container, tag,
    /// exit code). A crash-looping container may be running again by the time it is listed.
    pub deaths: Vec<(String, Option<String>, i64)>,
}

/// What the caller should do. Only `RollBack` has side effects on the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A new tag appeared (a deploy); its watch window starts now.
    DeploySeen {
        tag: String,
        previous: Option<String>,
    },
    Promote {
        tag: String,
    },
    RollBack {
        from_tag: String,
        trigger: Trigger,
        reason: String,
    },
    /// Regressed, but a guard rail (cooldown, pause) holds the rollback back.
    Withheld {
        tag: String,
        reason: String,
        why_not: String,
    },
    /// Evidence missing (Docker unreachable): nothing is concluded.
    Inconclusive {
        reason: String,
    },
    /// A stable target fails its checks: reported, not acted on (it is not on probation).
    UnhealthyStable {
        tag: String,
        reason: String,
    },
    /// After a restart, the running tag is on record as known-good: stable, not on probation.
    Adopted {
        tag: String,
    },
    /// An automatic rollback was refused before anything changed; it is tried again at `at_ms`.
    RetryLater {
        tag: String,
        error: String,
        refusals: u32,
        at_ms: i64,
    },
    /// Refused `REFUSAL_LIMIT` times in a row: no more automatic attempts for this deploy.
    GaveUp {
        tag: String,
        error: String,
        refusals: u32,
    },
}

/// The deployed tag: the tag of the newest running container (or, when none runs, of the newest
/// container — a crashed deploy is still that deploy). Newest, not most common: a canary or a
/// host-by-host rollout runs the new tag beside the old one, and the new one is what is judged.
fn current_tag(containers: &[ContainerView]) -> Option<String> {
    let running: Vec<&ContainerView> = containers
        .iter()
        .filter(|c| c.state == "running" && c.tag.is_some())
        .collect();
    let pool: Vec<&ContainerView> = if running.is_empty() {
        containers.iter().filter(|c| c.tag.is_some()).collect()
    } else {
        running
    };
    pool.into_iter()
        .max_by(|a, b| a.created.cmp(&b.created).then_with(|| b.name.cmp(&a.name)))
        .and_then(|c| c.tag.clone())
}

/// Immediate regressions Docker itself shows: a container of the watched tag that exited,
/// died, restart-loops or is healthcheck-`unhealthy`.
fn container_regression(containers: &[ContainerView], tag: &str) -> Option<String> {
    containers
        .iter()
        .filter(|c| c.tag.as_deref() == Some(tag))
        .find_map(|c| match (c.state.as_str(), c.health.as_deref()) {
            ("exited", _) if stopped_on_purpose(c.exit_code) => None,
            ("exited" | "dead", _) => Some(format!(
                "container {} {}{}",
                c.name,
                c.state,
                c.exit_code
                    .map(|e| format!(" with code {e}"))
                    .unwrap_or_default()
            )),
            ("restarting", _) => Some(format!("container {} is restart-looping", c.name)),
            (_, Some("unhealthy")) => Some(format!("container {} is Docker-unhealthy", c.name)),
            _ => None,
        })
}

/// Why automation (the watcher's verdicts, alerts) may not roll the target back right now; a
/// person still may. One place for the guard rails every automatic trigger shares.
pub fn automation_blocked(
    state: &TargetState,
    now_ms: i64,
    policy: &Policy,
) -> Option<&'static str> {
    if state.paused {
        Some("target is paused")
    } else if state
        .last_rollback_ms
        .is_some_and(|t| now_ms - t < policy.cooldown_ms)
    {
        Some("in cooldown after the last rollback")
    } else {
        None
    }
}

/// The reconciler. Returns the next state and the decisions, in the order they should be acted on.
pub fn decide(state: &TargetState, input: &Input, policy: &Policy) -> (TargetState, Vec<Decision>) {
    match input {
        Input::Observed(obs) => observe(state, obs, policy),
        Input::RollbackEnded {
            now_ms,
            from_tag,
            reason,
            trigger,
            end,
        } => rollback_ended(state, policy, *now_ms, from_tag, reason, *trigger, end),
        Input::Pause => {
            let mut next = state.clone();
            next.paused = true;
            (next, Vec::new())
        }
        Input::Restored(control) => {
            let mut next = state.clone();
            next.paused = control.paused;
            next.last_rollback_ms = control.last_rollback_ms;
            next.refusals = control.refusals;
            next.retry_at_ms = control.retry_at_ms;
            match (&control.halted, &state.phase) {
                (Some(Halt { tag, reason }), _) => {
                    next.phase = Phase::RollbackFailed {
                        tag: tag.clone(),
                        reason: reason.clone(),
                    }
                }
                // Resumed by a person through the previous leader: judge afresh.
                (None, Phase::RollbackFailed { .. }) => next.phase = Phase::Unknown,
                (None, _) => {}
            }
            (next, Vec::new())
        }
        Input::Resume => {
            let mut next = state.clone();
            next.paused = false;
            next.refusals = 0;
            next.retry_at_ms = None;
            if matches!(next.phase, Phase::RollbackFailed { .. }) {
                // The failed attempt is what the person answers: the cooldown it started
                // would otherwise withhold the very retry they asked for.
                next.last_rollback_ms = None;
            }
            if matches!(
                next.phase,
                Phase::RollbackFailed { .. } | Phase::Regressed { .. }
            ) {
                // Re-judge from scratch: whatever runs now goes on probation.
                next.phase = Phase::Unknown;
            }
            (next, Vec::new())
        }
        Input::Adopt {
            running,
            known_good,
        } => {
            let mut next = state.clone();
            if next.phase == Phase::Unknown && *known_good {
                next.phase = Phase::Stable {
                    tag: running.clone(),
                };
                return (
                    next,
                    vec![Decision::Adopted {
                        tag: running.clone(),
                    }],
                );
            }
            (next, Vec::new())
        }
    }
}

/// What follows a rollback. Only a rollback that changed something and failed halts the target;
/// one refused before it changed anything is retried with back-off when the watcher ordered it
/// (alerts are re-sent by Alertmanager, people see the error), up to [`REFUSAL_LIMIT`].
fn rollback_ended(
    state: &TargetState,
    policy: &Policy,
    now_ms: i64,
    from_tag: &str,
    reason: &str,
    trigger: Trigger,
    end: &RollbackEnd,
) -> (TargetState, Vec<Decision>) {
    let mut next = state.clone();
    let mut out = Vec::new();
    let regressed = || Phase::Regressed {
        tag: from_tag.to_string(),
        reason: reason.to_string(),
    };
    match end {
        RollbackEnd::Succeeded { to_tag } => {
            next.phase = Phase::Stable {
                tag: to_tag.clone(),
            };
            next.last_rollback_ms = Some(now_ms);
            next.stable_failures = 0;
            next.refusals = 0;
            next.retry_at_ms = None;
        }
        RollbackEnd::DryRun => next.phase = regressed(),
        RollbackEnd::NotLeader { .. } => {}
        RollbackEnd::Withheld { why } => {
            next.phase = regressed();
            out.push(Decision::Withheld {
                tag: from_tag.to_string(),
                reason: reason.to_string(),
                why_not: why.clone(),
            });
        }
        RollbackEnd::Failed { tag, error } => {
            next.phase = Phase::RollbackFailed {
                tag: tag.clone(),
                reason: error.clone(),
            };
            next.last_rollback_ms = Some(now_ms);
            next.refusals = 0;
            next.retry_at_ms = None;
        }
        RollbackEnd::Refused { error } if trigger.is_verdict() => {
            next.refusals += 1;
            if next.refusals >= REFUSAL_LIMIT {
                next.retry_at_ms = None;
                next.phase = Phase::Regressed {
                    tag: from_tag.to_string(),
                    reason: format!(
                        "{reason}; automatic rollback refused {} times, last: {error}",
                        next.refusals
                    ),
                };
                out.push(Decision::GaveUp {
                    tag: from_tag.to_string(),
                    error: error.clone(),
                    refusals: next.refusals,
                });
            } else {
                let at_ms = now_ms + refusal_backoff_ms(policy, next.refusals);
                next.retry_at_ms = Some(at_ms);
                out.push(Decision::RetryLater {
                    tag: from_tag.to_string(),
                    error: error.clone(),
                    refusals: next.refusals,
                    at_ms,
                });
            }
        }
        // A person or an alert asked and was told why not; nothing changed, nothing to hold.
        RollbackEnd::Refused { .. } => {}
    }
    (next, out)
}

/// One round of evidence.
fn observe(
    state: &TargetState,
    obs: &Observation,
    policy: &Policy,
) -> (TargetState, Vec<Decision>) {
    let mut next = state.clone();
    let mut out = Vec::new();
    let containers = match &obs.containers {
        Ok(c) => c,
        Err(e) => {
            next.blind = true;
            out.push(Decision::Inconclusive {
                reason: format!("docker unavailable: {e}"),
            });
            return (next, out);
        }
    };
    if next.blind {
        // Back from an evidence gap: containers may be restarting right now; start the grace again.
        next.blind = false;
        next.grace_until_ms = obs.now_ms + policy.grace_ms;
        if let Phase::Watching { failures, .. } = &mut next.phase {
            *failures = 0;
        }
    }
    let Some(tag) = current_tag(containers) else {
        // No container at all: nothing deployed (or removed by hand); nothing to judge.
        return (next, out);
    };

    if let Phase::RollbackFailed { .. } = next.phase {
        return (next, out);
    }
    if next.phase.tag() != Some(tag.as_str()) {
        next.stable_failures = 0;
        next.refusals = 0;
        next.retry_at_ms = None;
        next.grace_until_ms = obs.now_ms + policy.grace_ms;
        out.push(Decision::DeploySeen {
            tag: tag.clone(),
            previous: next.phase.tag().map(String::from),
        });
        next.phase = Phase::Watching {
            tag: tag.clone(),
            since_ms: obs.now_ms,
            failures: 0,
            last_failure: None,
        };
    }

    match &mut next.phase {
        Phase::Watching {
            tag,
            since_ms,
            failures,
            last_failure,
        } => {
            let in_grace = obs.now_ms < next.grace_until_ms;
            let crashed = obs.deaths.iter().find(|(_, t, code)| {
                t.as_deref() == Some(tag.as_str()) && !stopped_on_purpose(Some(*code))
            });
            let mut regression = container_regression(containers, tag)
                .or_else(|| {
                    crashed
                        .map(|(name, _, code)| format!("container {name} exited with code {code}"))
                })
                .map(|r| (Trigger::Health, r));
            match &obs.probe {
                Some(Ok(())) => {
                    *failures = 0;
                    *last_failure = None;
                }
                Some(Err(f)) if !in_grace => {
                    *failures += 1;
                    *last_failure = Some(f.to_string());
                    if *failures >= policy.failures && regression.is_none() {
                        let reason = format!("{failures} consecutive /health failures, last: {f}");
                        regression = Some((Trigger::Health, reason));
                    }
                }
                Some(Err(f)) => *last_failure = Some(format!("{f} (in start-up grace)")),
                None => {}
            }
            if regression.is_none() {
                if let Some(MetricVerdict::Regressed { trigger, evidence }) = &obs.metrics {
                    regression = Some((*trigger, evidence.clone()));
                }
            }
            let backing_off = next.retry_at_ms.is_some_and(|t| obs.now_ms < t);
            if regression.is_some() && backing_off {
                // A refused rollback waits out its back-off quietly; the next try says why.
            } else if let Some((trigger, reason)) = regression {
                let tag = tag.clone();
                if let Some(why_not) = automation_blocked(&next, obs.now_ms, policy) {
                    out.push(Decision::Withheld {
                        tag: tag.clone(),
                        reason: reason.clone(),
                        why_not: why_not.into(),
                    });
                    next.phase = Phase::Regressed { tag, reason };
                } else {
                    out.push(Decision::RollBack {
                        from_tag: tag,
                        trigger,
                        reason,
                    });
                }
            } else if obs.now_ms - *since_ms >= policy.bake_ms
                && *failures == 0
                && obs.probe == Some(Ok(()))
            {
                let tag = tag.clone();
                out.push(Decision::Promote { tag: tag.clone() });
                next.phase = Phase::Stable { tag };
            }
        }
        Phase::Stable { tag } => {
            // Judged on probe rounds only, so event-driven rounds during a recreate do not count.
            if let Some(probe) = &obs.probe {
                let reason = container_regression(containers, tag)
                    .or_else(|| probe.as_ref().err().map(|f| format!("/health {f}")));
                match reason {
                    Some(reason) => {
                        next.stable_failures += 1;
                        if next.stable_failures == policy.failures {
                            out.push(Decision::UnhealthyStable {
                                tag: tag.clone(),
                                reason,
                            });
                        }
                    }
                    None => next.stable_failures = 0,
                }
            }
        }
        Phase::Unknown | Phase::Regressed { .. } | Phase::RollbackFailed { .. } => {}
    }
    (next, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        failures: 3,
        grace_ms: 2_000,
        bake_ms: 10_000,
        cooldown_ms: 60_000,
        refusal_backoff_ms: 5_000,
    };

    fn running(tag: &str) -> Vec<ContainerView> {
        vec![ContainerView {
            name: "app-1".into(),
            tag: Some(tag.into()),
            state: "running".into(),
            health: None,
            exit_code: None,
            created: 0,
        }]
    }

    fn obs(
        now_ms: i64,
        containers: Vec<ContainerView>,
        probe: Option<Result<(), ProbeFailure>>,
    ) -> Observation {
        Observation {
            now_ms,
            containers: Ok(containers.into()),
            probe,
            metrics: None,
            deaths: Vec::new(),
        }
    }

    /// One round of evidence through the one transition function.
    fn see(state: &TargetState, o: &Observation, policy: &Policy) -> (TargetState, Vec<Decision>) {
        decide(state, &Input::Observed(o.clone()), policy)
    }

    fn fail() -> Option<Result<(), ProbeFailure>> {
        Some(Err(ProbeFailure::Status(503)))
    }

    /// Feeds observations one per second from `start_ms` and collects every decision.
    fn run(
        mut state: TargetState,
        start_ms: i64,
        rounds: &[(&str, Option<Result<(), ProbeFailure>>)],
    ) -> (TargetState, Vec<Decision>) {
        let mut all = Vec::new();
        for (i, (tag, probe)) in rounds.iter().enumerate() {
            let (s, d) = see(
                &state,
                &obs(start_ms + i as i64 * 1000, running(tag), probe.clone()),
                &POLICY,
            );
            state = s;
            all.extend(d);
        }
        (state, all)
    }

    #[test]
    fn with_two_tags_running_the_newest_container_is_the_deploy() {
        let mut c = running("v1.0.0");
        c.push(ContainerView {
            name: "app-2".into(),
            tag: Some("v1.3.0".into()),
            created: 100,
            ..c[0].clone()
        });
        let (s, _) = see(&TargetState::new(), &obs(0, c, None), &POLICY);
        assert_eq!(s.phase.tag(), Some("v1.3.0"));
    }

    #[test]
    fn first_sight_puts_the_running_tag_on_probation() {
        let (s, d) = see(
            &TargetState::new(),
            &obs(0, running("v1.0.0"), None),
            &POLICY,
        );
        assert_eq!(
            d,
            vec![Decision::DeploySeen {
                tag: "v1.0.0".into(),
                previous: None
            }]
        );
        assert_eq!(s.phase.name(), "watching");
    }

    #[test]
    fn healthy_for_the_bake_time_is_promoted_once() {
        let rounds: Vec<_> = (0..13).map(|_| ("v1.0.0", Some(Ok(())))).collect();
        let (s, d) = run(TargetState::new(), 0, &rounds);
        let promotions = d
            .iter()
            .filter(|d| matches!(d, Decision::Promote { .. }))
            .count();
        assert_eq!(promotions, 1);
        assert_eq!(
            s.phase,
            Phase::Stable {
                tag: "v1.0.0".into()
            }
        );
    }

    #[test]
    fn failures_in_grace_do_not_count_then_n_consecutive_roll_back() {
        // t=0,1 in grace; t=2,3 fail, t=4 ok resets, t=5,6,7 fail -> rollback at the third.
        let rounds = [
            ("v1.1.0", fail()),
            ("v1.1.0", fail()),
            ("v1.1.0", fail()),
            ("v1.1.0", fail()),
            ("v1.1.0", Some(Ok(()))),
            ("v1.1.0", fail()),
            ("v1.1.0", fail()),
            ("v1.1.0", fail()),
        ];
        let (_, d) = run(TargetState::new(), 0, &rounds[..7]);
        assert!(
            !d.iter().any(|d| matches!(d, Decision::RollBack { .. })),
            "{d:?}"
        );
        let (_, d) = run(TargetState::new(), 0, &rounds);
        let rb: Vec<_> = d
            .iter()
            .filter(|d| matches!(d, Decision::RollBack { .. }))
            .collect();
        assert_eq!(rb.len(), 1, "{d:?}");
        assert!(
            matches!(rb[0], Decision::RollBack { trigger: Trigger::Health, reason, .. } if reason.starts_with("3 consecutive"))
        );
    }

    #[test]
    fn exited_container_regresses_at_once_even_in_grace() {
        let mut c = running("v1.2.0");
        c[0].state = "exited".into();
        let (_, d) = see(&TargetState::new(), &obs(0, c, None), &POLICY);
        assert!(
            matches!(&d[1], Decision::RollBack { reason, .. } if reason.contains("exited")),
            "{d:?}"
        );
    }

    #[test]
    fn a_reported_crash_regresses_even_if_the_container_already_restarted() {
        let (s0, _) = see(
            &TargetState::new(),
            &obs(0, running("v1.2.0"), Some(Ok(()))),
            &POLICY,
        );
        let mut o = obs(500, running("v1.2.0"), None);
        o.deaths = vec![("app-1".into(), Some("v1.2.0".into()), 3)];
        let (_, d) = see(&s0, &o, &POLICY);
        assert!(
            matches!(&d[..], [Decision::RollBack { reason, .. }] if reason.contains("exited with code 3")),
            "{d:?}"
        );
        // A clean stop (a recreate) is not a crash.
        o.deaths = vec![("app-1".into(), Some("v1.2.0".into()), 0)];
        assert!(see(&s0, &o, &POLICY).1.is_empty());
    }

    #[test]
    fn container_stopped_by_a_recreate_is_not_a_crash() {
        for code in [0, 143] {
            let mut c = running("v1.0.0");
            c[0].state = "exited".into();
            c[0].exit_code = Some(code);
            let (_, d) = see(&TargetState::new(), &obs(0, c, None), &POLICY);
            assert!(
                !d.iter().any(|d| matches!(d, Decision::RollBack { .. })),
                "code {code}: {d:?}"
            );
        }
    }

    #[test]
    fn restart_loop_and_docker_unhealthy_regress() {
        let mut c = running("v1.2.0");
        c[0].state = "restarting".into();
        let (_, d) = see(&TargetState::new(), &obs(0, c, None), &POLICY);
        assert!(d.iter().any(
            |d| matches!(d, Decision::RollBack { reason, .. } if reason.contains("restart-looping"))
        ));
        let mut c = running("v1.2.0");
        c[0].health = Some("unhealthy".into());
        let (_, d) = see(&TargetState::new(), &obs(0, c, None), &POLICY);
        assert!(d.iter().any(
            |d| matches!(d, Decision::RollBack { reason, .. } if reason.contains("unhealthy"))
        ));
    }

    #[test]
    fn docker_unreachable_is_inconclusive_and_changes_nothing() {
        let (s0, _) = run(
            TargetState::new(),
            0,
            &[("v1.1.0", fail()), ("v1.1.0", fail()), ("v1.1.0", fail())],
        );
        let o = Observation {
            now_ms: 10_000,
            containers: Err("connection refused".into()),
            probe: fail(),
            metrics: None,
            deaths: Vec::new(),
        };
        let (s1, d) = see(&s0, &o, &POLICY);
        assert_eq!(s0.phase, s1.phase, "no verdict progress without evidence");
        assert!(s1.blind);
        assert!(matches!(&d[..], [Decision::Inconclusive { .. }]));
    }

    #[test]
    fn after_docker_was_unreachable_the_grace_starts_again() {
        let ok: Vec<_> = (0..5).map(|_| ("v1.1.0", Some(Ok(())))).collect();
        let (s0, _) = run(TargetState::new(), 0, &ok);
        let blind = Observation {
            now_ms: 6_000,
            containers: Err("daemon restarting".into()),
            probe: None,
            metrics: None,
            deaths: Vec::new(),
        };
        let (s1, _) = see(&s0, &blind, &POLICY);
        // Containers come back slowly: three failed probes right after, all inside the new grace.
        let (_, d) = run(s1, 7_000, &[("v1.1.0", fail()), ("v1.1.0", fail())]);
        assert!(
            !d.iter().any(|d| matches!(d, Decision::RollBack { .. })),
            "{d:?}"
        );
    }

    #[test]
    fn a_follower_that_may_not_act_asks_again_every_round_and_acts_once_it_leads() {
        // A regression judged while this instance does not hold the lease (the leader acts,
        // or the store is away): nothing recorded, nothing held, the target still on probation.
        let bad: Vec<_> = (0..5).map(|_| ("v1.1.0", fail())).collect();
        let (s0, d) = run(TargetState::new(), 0, &bad);
        let Some(Decision::RollBack {
            from_tag,
            trigger,
            reason,
        }) = d.last().cloned()
        else {
            panic!("regressed: {d:?}")
        };
        let ended = Input::RollbackEnded {
            now_ms: 5_000,
            from_tag,
            reason,
            trigger,
            end: RollbackEnd::NotLeader {
                why: "follower".into(),
            },
        };
        let (s1, d) = decide(&s0, &ended, &POLICY);
        assert!(d.is_empty(), "silent: {d:?}");
        assert_eq!(s1.phase, s0.phase);
        assert_eq!(s1.last_rollback_ms, None, "no cooldown: nothing was done");
        assert_eq!(s1.retry_at_ms, None);
        // The next round (now leading) orders the rollback again.
        let (_, d) = run(s1, 6_000, &[("v1.1.0", fail())]);
        assert!(
            matches!(&d[..], [Decision::RollBack { .. }]),
            "asked again: {d:?}"
        );
    }

    #[test]
    fn a_new_leader_takes_the_guard_rails_the_previous_one_kept() {
        // This follower saw a bad deploy; meanwhile the leader's operator paused the target.
        let bad: Vec<_> = (0..5).map(|_| ("v1.1.0", fail())).collect();
        let (follower, _) = run(TargetState::new(), 0, &bad);
        let kept = Control {
            paused: true,
            last_rollback_ms: Some(4_000),
            ..Control::default()
        };
        let (led, d) = decide(&follower, &Input::Restored(kept), &POLICY);
        assert!(d.is_empty());
        assert!(led.paused);
        assert_eq!(led.last_rollback_ms, Some(4_000));
        let (_, d) = run(led, 6_000, &[("v1.1.0", fail())]);
        assert!(
            !d.iter().any(|d| matches!(d, Decision::RollBack { .. })),
            "paused through the old leader: {d:?}"
        );
        // A halt kept by the old leader holds here too; its lifting (a resume there) frees.
        let halted = Control {
            halted: Some(Halt {
                tag: "v1.0.0".into(),
                reason: "validation failed".into(),
            }),
            ..Control::default()
        };
        let (h, _) = decide(&follower, &Input::Restored(halted), &POLICY);
        assert!(matches!(h.phase, Phase::RollbackFailed { .. }));
        let (freed, _) = decide(&h, &Input::Restored(Control::default()), &POLICY);
        assert_eq!(freed.phase, Phase::Unknown);
    }

    #[test]
    fn cooldown_and_pause_withhold_the_rollback() {
        let mut state = TargetState {
            last_rollback_ms: Some(0),
            ..TargetState::new()
        };
        let rounds: Vec<_> = (0..6).map(|_| ("v1.1.0", fail())).collect();
        let (_, d) = run(state.clone(), 1_000, &rounds);
        let withheld = d.iter().filter(
            |d| matches!(d, Decision::Withheld { why_not, .. } if why_not.contains("cooldown")),
        );
        assert_eq!(withheld.count(), 1, "said once, not every round: {d:?}");
        assert!(!d.iter().any(|d| matches!(d, Decision::RollBack { .. })));
        state.last_rollback_ms = None;
        state.paused = true;
        let (_, d) = run(state, 1_000, &rounds);
        assert!(d.iter().any(
            |d| matches!(d, Decision::Withheld { why_not, .. } if why_not.contains("paused"))
        ));
    }

    #[test]
    fn rollback_failed_target_is_left_alone() {
        let state = TargetState {
            phase: Phase::RollbackFailed {
                tag: "v1.0.0".into(),
                reason: "validation".into(),
            },
            ..TargetState::new()
        };
        let rounds: Vec<_> = (0..10).map(|_| ("v1.0.0", fail())).collect();
        let (s, d) = run(state.clone(), 0, &rounds);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(s, state);
    }

    #[test]
    fn metric_regression_rolls_back_with_its_trigger_but_inconclusive_never_does() {
        let (s0, _) = see(
            &TargetState::new(),
            &obs(0, running("v1.3.0"), Some(Ok(()))),
            &POLICY,
        );
        let mut o = obs(1_000, running("v1.3.0"), Some(Ok(())));
        o.metrics = Some(MetricVerdict::Inconclusive("source down".into()));
        let (s1, d) = see(&s0, &o, &POLICY);
        assert!(d.is_empty(), "{d:?}");
        o.metrics = Some(MetricVerdict::Regressed {
            trigger: Trigger::ErrorRatio,
            evidence: "errors 20%".into(),
        });
        let (_, d) = see(&s1, &o, &POLICY);
        let expected = Decision::RollBack {
            from_tag: "v1.3.0".into(),
            trigger: Trigger::ErrorRatio,
            reason: "errors 20%".into(),
        };
        assert_eq!(d, vec![expected]);
    }

    #[test]
    fn stable_target_failing_is_reported_not_rolled_back() {
        let state = TargetState {
            phase: Phase::Stable {
                tag: "v1.0.0".into(),
            },
            ..TargetState::new()
        };
        let (_, d) = run(state.clone(), 0, &[("v1.0.0", fail()), ("v1.0.0", fail())]);
        assert!(
            d.is_empty(),
            "below the failure count nothing is said: {d:?}"
        );
        let (_, d) = run(
            state,
            0,
            &[
                ("v1.0.0", fail()),
                ("v1.0.0", fail()),
                ("v1.0.0", fail()),
                ("v1.0.0", fail()),
            ],
        );
        assert!(
            matches!(&d[..], [Decision::UnhealthyStable { .. }]),
            "said once: {d:?}"
        );
    }

    #[test]
    fn a_new_tag_starts_a_new_watch_window() {
        let state = TargetState {
            phase: Phase::Stable {
                tag: "v1.0.0".into(),
            },
            ..TargetState::new()
        };
        let (s, d) = run(state, 5_000, &[("v1.1.0", Some(Ok(())))]);
        assert_eq!(
            d[0],
            Decision::DeploySeen {
                tag: "v1.1.0".into(),
                previous: Some("v1.0.0".into())
            }
        );
        assert!(matches!(
            s.phase,
            Phase::Watching {
                since_ms: 5_000,
                ..
            }
        ));
    }

    fn ended(
        state: &TargetState,
        now_ms: i64,
        trigger: Trigger,
        end: RollbackEnd,
    ) -> (TargetState, Vec<Decision>) {
        let input = Input::RollbackEnded {
            now_ms,
            from_tag: "v1.1.0".into(),
            reason: "3 consecutive /health failures".into(),
            trigger,
            end,
        };
        decide(state, &input, &POLICY)
    }

    /// Watching v1.1.0 with three failed probes behind it: the next failure rolls back.
    fn regressed_watching() -> TargetState {
        let rounds: Vec<_> = (0..5).map(|_| ("v1.1.0", fail())).collect();
        let (s, d) = run(TargetState::new(), 0, &rounds);
        assert!(matches!(d.last(), Some(Decision::RollBack { .. })), "{d:?}");
        s
    }

    #[test]
    fn a_successful_rollback_is_stable_on_the_new_tag_and_starts_the_cooldown() {
        let (s, d) = ended(
            &regressed_watching(),
            9_000,
            Trigger::Health,
            RollbackEnd::Succeeded {
                to_tag: "v1.0.0".into(),
            },
        );
        assert!(d.is_empty());
        assert_eq!(
            s.phase,
            Phase::Stable {
                tag: "v1.0.0".into()
            }
        );
        assert_eq!(s.last_rollback_ms, Some(9_000));
        assert_eq!(
            automation_blocked(&s, 10_000, &POLICY),
            Some("in cooldown after the last rollback")
        );
    }

    #[test]
    fn only_a_rollback_that_changed_something_and_failed_halts() {
        let (s, _) = ended(
            &regressed_watching(),
            9_000,
            Trigger::Health,
            RollbackEnd::Failed {
                tag: "v1.0.0".into(),
                error: "validation".into(),
            },
        );
        assert_eq!(s.phase.name(), "rollback_failed");
        assert_eq!(s.control().halted.map(|h| h.tag), Some("v1.0.0".into()));
        // A refusal (nothing changed) does not halt; it backs off and tries again.
        let (s, d) = ended(
            &regressed_watching(),
            9_000,
            Trigger::Health,
            RollbackEnd::Refused {
                error: "docker unreachable".into(),
            },
        );
        assert_eq!(s.phase.name(), "watching");
        assert!(
            matches!(
                &d[..],
                [Decision::RetryLater {
                    refusals: 1,
                    at_ms: 14_000,
                    ..
                }]
            ),
            "{d:?}"
        );
    }

    #[test]
    fn refused_rollbacks_back_off_then_give_up_at_the_limit() {
        let mut s = regressed_watching();
        let mut now = 4_000;
        let mut tries = 0;
        let mut gave_up = false;
        for _ in 0..200 {
            now += 1_000;
            let (next, d) = see(&s, &obs(now, running("v1.1.0"), fail()), &POLICY);
            s = next;
            if d.iter().any(|d| matches!(d, Decision::RollBack { .. })) {
                tries += 1;
                let (next, d) = ended(
                    &s,
                    now,
                    Trigger::Health,
                    RollbackEnd::Refused {
                        error: "registry down".into(),
                    },
                );
                s = next;
                if d.iter().any(|d| matches!(d, Decision::GaveUp { .. })) {
                    gave_up = true;
                    break;
                }
                // Never asked again before the back-off is over.
                let at = s.retry_at_ms.expect("back-off set");
                assert!(at > now);
            }
        }
        assert!(gave_up, "gave up after {tries} tries");
        assert_eq!(tries, REFUSAL_LIMIT as usize);
        assert_eq!(s.phase.name(), "regressed");
        // Given up: no further attempt for this deploy, however long it fails.
        let (_, d) = see(&s, &obs(now + 600_000, running("v1.1.0"), fail()), &POLICY);
        assert!(d.is_empty(), "{d:?}");
        // A new deploy starts afresh.
        let (s2, _) = see(&s, &obs(now + 601_000, running("v1.2.0"), fail()), &POLICY);
        assert_eq!((s2.refusals, s2.retry_at_ms), (0, None));
    }

    #[test]
    fn refusals_of_orders_from_people_and_alerts_change_nothing() {
        let s0 = regressed_watching();
        for trigger in [Trigger::Manual, Trigger::Alert] {
            let (s, d) = ended(
                &s0,
                9_000,
                trigger,
                RollbackEnd::Refused {
                    error: "unknown tag".into(),
                },
            );
            assert_eq!(s, s0);
            assert!(d.is_empty());
        }
    }

    #[test]
    fn dry_run_and_not_leader_leave_the_tag_regressed_without_acting() {
        let (s, d) = ended(
            &regressed_watching(),
            9_000,
            Trigger::Health,
            RollbackEnd::DryRun,
        );
        assert_eq!(s.phase.name(), "regressed");
        assert!(d.is_empty());
        assert_eq!(s.last_rollback_ms, None, "a dry run starts no cooldown");
        let (s, d) = ended(
            &regressed_watching(),
            9_000,
            Trigger::Health,
            RollbackEnd::Withheld {
                why: "not the leader".into(),
            },
        );
        assert_eq!(s.phase.name(), "regressed");
        assert!(matches!(&d[..], [Decision::Withheld { .. }]));
    }

    #[test]
    fn pause_resume_and_restart_round_trip_through_control() {
        let (paused, _) = decide(&TargetState::new(), &Input::Pause, &POLICY);
        let (halted, _) = ended(
            &paused,
            9_000,
            Trigger::Health,
            RollbackEnd::Failed {
                tag: "v1.0.0".into(),
                error: "up failed".into(),
            },
        );
        // A restart rebuilds exactly the guard rails.
        let restored = TargetState::restored(halted.control());
        assert_eq!(restored.control(), halted.control());
        assert!(restored.paused);
        assert_eq!(restored.phase.name(), "rollback_failed");
        let (resumed, _) = decide(&restored, &Input::Resume, &POLICY);
        assert!(!resumed.paused);
        assert_eq!(resumed.phase, Phase::Unknown);
        assert_eq!(resumed.control().halted, None);
    }

    #[test]
    fn resume_after_a_failed_rollback_lets_the_retry_through_the_cooldown() {
        let (failed, _) = ended(
            &TargetState::new(),
            9_000,
            Trigger::Health,
            RollbackEnd::Failed {
                tag: "v1.0.0".into(),
                error: "up failed: the engine was gone".into(),
            },
        );
        assert!(automation_blocked(&failed, 10_000, &POLICY).is_some());
        let (resumed, _) = decide(&failed, &Input::Resume, &POLICY);
        assert_eq!(automation_blocked(&resumed, 10_000, &POLICY), None);
        // A resume after a pause keeps the cooldown of a rollback that worked.
        let (ok, _) = ended(
            &TargetState::new(),
            9_000,
            Trigger::Health,
            RollbackEnd::Succeeded {
                to_tag: "v1.0.0".into(),
            },
        );
        let (paused, _) = decide(&ok, &Input::Pause, &POLICY);
        let (resumed, _) = decide(&paused, &Input::Resume, &POLICY);
        assert!(automation_blocked(&resumed, 10_000, &POLICY).is_some());
    }

    #[test]
    fn adoption_makes_a_vouched_tag_stable_and_leaves_others_on_probation() {
        let adopt = |known_good| Input::Adopt {
            running: "v1.0.0".into(),
            known_good,
        };
        let (s, d) = decide(&TargetState::new(), &adopt(true), &POLICY);
        assert_eq!(
            s.phase,
            Phase::Stable {
                tag: "v1.0.0".into()
            }
        );
        assert_eq!(
            d,
            vec![Decision::Adopted {
                tag: "v1.0.0".into()
            }]
        );
        let (s, d) = decide(&TargetState::new(), &adopt(false), &POLICY);
        assert_eq!(s.phase, Phase::Unknown);
        assert!(d.is_empty());
        // A halted target stays halted whatever runs.
        let halted = TargetState::restored(Control {
            halted: Some(Halt {
                tag: "v1.0.0".into(),
                reason: "x".into(),
            }),
            ..Control::default()
        });
        assert_eq!(decide(&halted, &adopt(true), &POLICY).0, halted);
    }
}
