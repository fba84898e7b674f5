//! The decision core: a pure function from a target's state and one round of observations
//! (containers, a health probe, the clock) to its next state and what should happen. It is
//! level-triggered, like a kube reconciler: it looks at the whole current picture each time, so it
//! is safe to call again after any event, tick, reconnect or restart. No I/O, no clocks here.

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
        }
    }
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
    pub containers: Result<Vec<ContainerView>, String>,
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
pub fn decide(
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
            if let Some((trigger, reason)) = regression {
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
            containers: Ok(containers),
            probe,
            metrics: None,
            deaths: Vec::new(),
        }
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
            let (s, d) = decide(
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
        let (s, _) = decide(&TargetState::new(), &obs(0, c, None), &POLICY);
        assert_eq!(s.phase.tag(), Some("v1.3.0"));
    }

    #[test]
    fn first_sight_puts_the_running_tag_on_probation() {
        let (s, d) = decide(
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
        let (_, d) = decide(&TargetState::new(), &obs(0, c, None), &POLICY);
        assert!(
            matches!(&d[1], Decision::RollBack { reason, .. } if reason.contains("exited")),
            "{d:?}"
        );
    }

    #[test]
    fn a_reported_crash_regresses_even_if_the_container_already_restarted() {
        let (s0, _) = decide(
            &TargetState::new(),
            &obs(0, running("v1.2.0"), Some(Ok(()))),
            &POLICY,
        );
        let mut o = obs(500, running("v1.2.0"), None);
        o.deaths = vec![("app-1".into(), Some("v1.2.0".into()), 3)];
        let (_, d) = decide(&s0, &o, &POLICY);
        assert!(
            matches!(&d[..], [Decision::RollBack { reason, .. }] if reason.contains("exited with code 3")),
            "{d:?}"
        );
        // A clean stop (a recreate) is not a crash.
        o.deaths = vec![("app-1".into(), Some("v1.2.0".into()), 0)];
        assert!(decide(&s0, &o, &POLICY).1.is_empty());
    }

    #[test]
    fn container_stopped_by_a_recreate_is_not_a_crash() {
        for code in [0, 143] {
            let mut c = running("v1.0.0");
            c[0].state = "exited".into();
            c[0].exit_code = Some(code);
            let (_, d) = decide(&TargetState::new(), &obs(0, c, None), &POLICY);
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
        let (_, d) = decide(&TargetState::new(), &obs(0, c, None), &POLICY);
        assert!(d.iter().any(
            |d| matches!(d, Decision::RollBack { reason, .. } if reason.contains("restart-looping"))
        ));
        let mut c = running("v1.2.0");
        c[0].health = Some("unhealthy".into());
        let (_, d) = decide(&TargetState::new(), &obs(0, c, None), &POLICY);
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
        let (s1, d) = decide(&s0, &o, &POLICY);
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
        let (s1, _) = decide(&s0, &blind, &POLICY);
        // Containers come back slowly: three failed probes right after, all inside the new grace.
        let (_, d) = run(s1, 7_000, &[("v1.1.0", fail()), ("v1.1.0", fail())]);
        assert!(
            !d.iter().any(|d| matches!(d, Decision::RollBack { .. })),
            "{d:?}"
        );
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
        let (s0, _) = decide(
            &TargetState::new(),
            &obs(0, running("v1.3.0"), Some(Ok(()))),
            &POLICY,
        );
        let mut o = obs(1_000, running("v1.3.0"), Some(Ok(())));
        o.metrics = Some(MetricVerdict::Inconclusive("source down".into()));
        let (s1, d) = decide(&s0, &o, &POLICY);
        assert!(d.is_empty(), "{d:?}");
        o.metrics = Some(MetricVerdict::Regressed {
            trigger: Trigger::ErrorRatio,
            evidence: "errors 20%".into(),
        });
        let (_, d) = decide(&s1, &o, &POLICY);
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
}
