//! What the watcher does beyond looking: rolling back (automatically or on an order), recording
//! the outcome, telling the webhook, and the operators' commands (pause, resume, CI deploys).

use super::*;
use crate::verdict::{automation_blocked, RollbackEnd};

impl Watcher {
    pub(super) async fn roll_back(&mut self, from_tag: String, trigger: Trigger, reason: String) {
        let id = self.id.clone();
        let in_flight = self.canary.as_ref().and_then(|c| match c.phase() {
            // Its own judge decides; a regression of the canary itself aborts it.
            crate::canary::handle::Phase::Deploying { id, tag } => {
                Some(if c.regressed(&from_tag, &reason) {
                    format!("canary deploy #{id} of {tag} is in flight: told to abort")
                } else {
                    format!("canary deploy #{id} of {tag} is in flight and its own judge decides")
                })
            }
            _ => None,
        });
        if !self.lease.is_leader() {
            // Said at debug level: a follower judges the same regression every round.
            let why = self.lease.describe();
            tracing::debug!(target_id = %id, %why, "regressed, but this instance does not act");
            let result = Err(RollbackEnd::NotLeader { why });
            self.rollback_ended(&from_tag, &reason, trigger, result)
                .await;
            return;
        }
        if let Some(why) = in_flight {
            let result = Err(RollbackEnd::Withheld { why });
            self.rollback_ended(&from_tag, &reason, trigger, result)
                .await;
            return;
        }
        let detection = match &self.state.phase {
            Phase::Watching { since_ms, .. } => Some((steady_ms() - since_ms) as f64 / 1000.0),
            _ => None,
        };
        self.series.regressed(detection);
        self.emit(
            "regressed",
            Some(from_tag.clone()),
            format!("verdict regressed: {reason}"),
        )
        .await;
        if let Err(e) = self
            .store
            .mark_bad(id.clone(), from_tag.clone(), reason.clone())
            .await
        {
            tracing::error!(target_id = %id, error = %e, "cannot record bad tag");
        }
        let request = RollbackRequest {
            tag: None,
            trigger,
            reason: reason.clone(),
            dry_run: self.dry_run,
            failing_tag: Some(from_tag.clone()),
        };
        let result = self.execute_rollback(request).await;
        self.after_rollback(&from_tag, &reason, trigger, result)
            .await;
    }

    pub(super) async fn execute_rollback(
        &mut self,
        request: RollbackRequest,
    ) -> Result<RollbackRecord, RollbackError> {
        let id = self.id.clone();
        let events = self.events.clone();
        // Steps are printed live by `rollwatch demo` through the event channel.
        let on_step = move |s: &crate::store::StepRecord| {
            let _ = events.send(EventRecord {
                id: 0,
                at_ms: now_ms(),
                target: id.clone(),
                kind: "step".into(),
                tag: None,
                message: format!(
                    "{} {} in {} ms: {}",
                    s.name,
                    if s.ok { "ok" } else { "FAILED" },
                    s.duration_ms,
                    s.detail
                ),
            });
        };
        // At shutdown the rollback is dropped mid-step (its child processes are killed with it);
        // the intent stays on record and the next start resumes it.
        // Boxed: the rollback's state machine is large and rare; inline, every watcher task
        // (one per target, allocated whole at spawn) would carry its size all the time.
        if let Some(canary) = self.canary.clone() {
            return tokio::select! {
                result = Box::pin(canary.roll_back(&self.target, request)) => result,
                _ = self.shutdown.cancelled() => Err(RollbackError::Interrupted { target: self.id.clone() }),
            };
        }
        tokio::select! {
            result = Box::pin(self.rollbacker.rollback(&self.target, request, on_step)) => result,
            _ = self.shutdown.cancelled() => Err(RollbackError::Interrupted { target: self.id.clone() }),
        }
    }

    pub(super) async fn after_rollback(
        &mut self,
        from_tag: &str,
        reason: &str,
        trigger: Trigger,
        result: Result<RollbackRecord, RollbackError>,
    ) {
        let id = self.id.clone();
        let outcome = match &result {
            Err(RollbackError::Interrupted { .. }) => {
                tracing::warn!(target_id = %id, "rollback interrupted by shutdown; resumed at the next start");
                return;
            }
            Err(
                e @ (RollbackError::Fenced { .. }
                | RollbackError::NotLeader { .. }
                | RollbackError::Gone { .. }
                | RollbackError::Store(
                    crate::store::StoreError::Unreachable { .. }
                    | crate::store::StoreError::Lost { .. }
                    | crate::store::StoreError::Stuck { .. },
                )),
            ) => {
                // Another instance leads (or the store is away), or already rolled the version
                // back: whoever leads resumes the record, if one was written. Nothing to count
                // or notify from here; the next round sees what runs now.
                tracing::warn!(target_id = %id, error = %e, "rollback not carried on by this instance");
                let end = Err(RollbackEnd::NotLeader { why: e.to_string() });
                self.rollback_ended(from_tag, reason, trigger, end).await;
                return;
            }
            Ok(rec) if rec.state == RollbackState::DryRun => RollbackResult::DryRun,
            Ok(_) => RollbackResult::Succeeded,
            Err(e) if e.changed_something() => RollbackResult::Failed,
            Err(_) => RollbackResult::Refused,
        };
        let ran = matches!(outcome, RollbackResult::Succeeded | RollbackResult::Failed);
        let took = match &result {
            Ok(rec) if ran => {
                let ms = rec.finished_at_ms.unwrap_or(rec.started_at_ms) - rec.started_at_ms;
                Some(ms as f64 / 1000.0)
            }
            _ => None,
        };
        let finished_at = ran.then(|| now_ms() as f64 / 1000.0);
        self.series.rollback(trigger, outcome, took, finished_at);
        self.notify(outcome.as_str(), &result).await;
        let result = result.map_err(|e| match e {
            e if e.changed_something() => {
                let tag = match &e {
                    RollbackError::Execution { tag, .. }
                    | RollbackError::Validation { tag, .. } => tag.to_string(),
                    _ => from_tag.to_string(),
                };
                RollbackEnd::Failed {
                    tag,
                    error: e.to_string(),
                }
            }
            e => RollbackEnd::Refused {
                error: e.to_string(),
            },
        });
        self.rollback_ended(from_tag, reason, trigger, result).await;
    }

    /// Feeds the end of a rollback to [`decide`] and reports what it means.
    async fn rollback_ended(
        &mut self,
        from_tag: &str,
        reason: &str,
        trigger: Trigger,
        result: Result<RollbackRecord, RollbackEnd>,
    ) {
        let end = match &result {
            Ok(rec) if rec.state == RollbackState::DryRun => RollbackEnd::DryRun,
            Ok(rec) => RollbackEnd::Succeeded {
                to_tag: rec.to_tag.clone(),
            },
            Err(end) => end.clone(),
        };
        let decisions = self.transition(Input::RollbackEnded {
            now_ms: steady_ms(),
            from_tag: from_tag.to_string(),
            reason: reason.to_string(),
            trigger,
            end: end.clone(),
        });
        match (result, end) {
            (Ok(rec), RollbackEnd::DryRun) => {
                self.emit(
                    "would_roll_back",
                    Some(from_tag.to_string()),
                    format!(
                        "dry run: would roll back {from_tag} -> {} (record #{})",
                        rec.to_tag, rec.id
                    ),
                )
                .await;
            }
            (Ok(rec), _) => {
                if let Some(f) = self.feed.as_mut() {
                    f.watch.restart_baseline();
                }
                let took = rec.finished_at_ms.unwrap_or(rec.started_at_ms) - rec.started_at_ms;
                self.emit(
                    "rollback",
                    Some(rec.to_tag.clone()),
                    format!(
                        "rolled back {} -> {} in {took} ms and validated /health (record #{})",
                        rec.from_tag.as_deref().unwrap_or(from_tag),
                        rec.to_tag,
                        rec.id
                    ),
                )
                .await;
            }
            (Err(_), RollbackEnd::Failed { tag, error }) => {
                tracing::error!(target_id = %self.id, %error, "ROLLBACK FAILED: automatic action stopped for this target until `rollwatch resume`");
                self.emit(
                    "rollback_failed",
                    Some(tag),
                    format!("{error}; no further automatic action until `rollwatch resume`"),
                )
                .await;
            }
            (Err(_), RollbackEnd::Refused { error }) => {
                let retry = decisions
                    .is_empty()
                    .then_some("; nothing was changed and the target is not held");
                self.emit(
                    "rollback_refused",
                    Some(from_tag.to_string()),
                    format!(
                        "{} rollback refused: {error}{}",
                        trigger.as_str(),
                        retry.unwrap_or("")
                    ),
                )
                .await;
            }
            (Err(_), _) => {}
        }
        for d in decisions {
            match d {
                Decision::Withheld {
                    tag,
                    reason,
                    why_not,
                } => {
                    let msg = format!("regressed ({reason}) but not rolled back: {why_not}");
                    self.emit("withheld", Some(tag), msg).await;
                }
                d => self.report_refusal(d).await,
            }
        }
    }

    /// A refused automatic rollback: when it is tried again, or that it was given up (alerted
    /// through `rollwatch_rollback_given_up`).
    pub(super) async fn report_refusal(&mut self, decision: Decision) {
        match decision {
            Decision::RetryLater {
                tag,
                error,
                refusals,
                at_ms,
            } => {
                let wait = humantime::format_duration(std::time::Duration::from_millis(
                    (at_ms - steady_ms()).max(0) as u64 / 1000 * 1000,
                ));
                // Most refusals say so themselves; the sentence is not repeated.
                let unchanged = if error.contains("nothing was changed") {
                    ""
                } else {
                    "; nothing was changed"
                };
                let msg = format!(
                    "automatic rollback of {tag} refused ({refusals} of {} allowed): {error}{unchanged}, trying again in {wait}",
                    crate::verdict::REFUSAL_LIMIT
                );
                self.emit("rollback_retry", Some(tag), msg).await;
            }
            Decision::GaveUp {
                tag,
                error,
                refusals,
            } => {
                tracing::error!(target_id = %self.id, %tag, "automatic rollback given up after {refusals} refusals: {error}");
                let msg = format!(
                    "automatic rollback of {tag} given up after {refusals} refusals (last: {error}); nothing was changed: roll back by hand (`rollwatch rollback`) or deploy a fix"
                );
                self.emit("rollback_given_up", Some(tag), msg).await;
            }
            other => tracing::debug!(?other, "not a refusal"),
        }
    }

    /// Tells the configured webhook about a rollback, with its incident record. Best effort:
    /// a receiver that is down is logged, never retried in the way of the next round.
    pub(super) async fn notify(
        &self,
        outcome: &str,
        result: &Result<RollbackRecord, RollbackError>,
    ) {
        let Some(url) = &self.webhook else { return };
        let id = self.id.clone();
        let incident = match result {
            Ok(rec) => self
                .store
                .rollback(rec.id)
                .await
                .ok()
                .flatten()
                .map(|r| serde_json::to_value(r).unwrap_or_default()),
            Err(_) => None,
        };
        let body = serde_json::json!({
            "event": "rollback",
            "target": id.to_string(),
            "env": id.env.as_str(),
            "role": id.role,
            "result": outcome,
            "error": result.as_ref().err().map(|e| e.to_string()),
            "incident": incident,
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(5))
            .build();
        let sent = match client {
            Ok(c) => c
                .post(url.clone())
                .json(&body)
                .send()
                .await
                .map(|r| r.status()),
            Err(e) => Err(e),
        };
        match sent {
            Ok(status) if status.is_success() => {}
            Ok(status) => {
                tracing::warn!(%url, %status, "rollback webhook refused the notification")
            }
            Err(e) => tracing::warn!(%url, error = %e, "rollback webhook unreachable"),
        }
    }

    /// Why an alert may not roll the target back now: paused, halted, in cooldown, or the
    /// running tag is itself the result of a rollback (never roll back a rollback).
    fn alert_guard(&self) -> Option<String> {
        let now = steady_ms();
        if !self.lease.is_leader() {
            return Some(format!("not the leader ({})", self.lease.describe()));
        }
        if let Some(why_not) = automation_blocked(&self.state, now, &self.policy) {
            return Some(why_not.into());
        }
        if let Phase::RollbackFailed { .. } = self.state.phase {
            return Some("the target is halted after a failed rollback".into());
        }
        if let Some(last) = self.state.last_rollback_ms {
            if self.last_deploy_ms.is_none_or(|d| d < last) {
                return Some(
                    "the running tag is the result of a rollback, which is never rolled back"
                        .into(),
                );
            }
        }
        None
    }

    /// Rereads the guard rails the leader keeps in the store (after a takeover, and now and
    /// then on a follower, whose status would otherwise miss a pause made through the leader).
    pub(super) async fn reload_control(&mut self) {
        match self.store.control(self.id.clone()).await {
            Ok(control) => {
                self.transition(Input::Restored(control));
            }
            Err(e) => {
                tracing::warn!(target_id = %self.id, error = %e, "cannot reread the guard rails; keeping this instance's")
            }
        }
        self.publish();
    }

    pub(super) async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Reload { done } => {
                self.reload_control().await;
                let _ = done.send(());
            }
            Command::Pause { done } => {
                self.transition(Input::Pause);
                self.emit(
                    "paused",
                    None,
                    "automatic rollbacks paused by an operator".into(),
                )
                .await;
                self.publish();
                let _ = done.send(());
            }
            Command::Resume { done } => {
                self.transition(Input::Resume);
                self.emit(
                    "resumed",
                    None,
                    "automatic rollbacks resumed by an operator".into(),
                )
                .await;
                self.publish();
                let _ = done.send(());
            }
            Command::Deploy { record: d, done } => {
                let tag = d.tag.clone();
                let msg = format!(
                    "CI registered deploy of {tag} (commit {}, pipeline {})",
                    d.commit_sha.as_deref().unwrap_or("-"),
                    d.pipeline_url.as_deref().unwrap_or("-")
                );
                if let Err(e) = self.store.register_deploy(self.id.clone(), d).await {
                    tracing::error!(error = %e, "cannot record CI deploy");
                    let _ = done.send(Err(format!("cannot record the deploy: {e}")));
                    return;
                }
                self.emit("ci_deploy", Some(tag), msg).await;
                let _ = done.send(Ok(()));
                self.round(false).await;
            }
            Command::Rollback {
                tag,
                trigger,
                reason,
                reply,
            } => {
                let from = self.running_tag.clone().unwrap_or_else(|| "?".into());
                if trigger == Trigger::Alert {
                    // An alert is automation too: the same guard rails as the watcher's own
                    // verdicts. A person (manual trigger) may override them.
                    if let Some(why_not) = self.alert_guard() {
                        let msg = format!("alert ordered a rollback of {from} ({reason}) but it was not done: {why_not}");
                        self.emit("withheld", Some(from.clone()), msg.clone()).await;
                        let _ = reply.send(Err(msg));
                        self.publish();
                        return;
                    }
                    if let Err(e) = self
                        .store
                        .mark_bad(self.id.clone(), from.clone(), reason.clone())
                        .await
                    {
                        tracing::error!(error = %e, "cannot record bad tag");
                    }
                }
                self.emit(
                    "rollback_ordered",
                    Some(from.clone()),
                    format!("{} rollback ordered: {reason}", trigger.as_str()),
                )
                .await;
                let request = RollbackRequest {
                    tag,
                    trigger,
                    reason: reason.clone(),
                    dry_run: self.dry_run,
                    failing_tag: (trigger == Trigger::Alert).then(|| from.clone()),
                };
                let result = self.execute_rollback(request).await;
                let answer = match &result {
                    Ok(r) => Ok(r.clone()),
                    Err(e) => Err(e.to_string()),
                };
                self.after_rollback(&from, &reason, trigger, result).await;
                self.refresh_known_good().await;
                let _ = reply.send(answer);
            }
        }
        self.save_control().await;
        self.publish();
    }
}
