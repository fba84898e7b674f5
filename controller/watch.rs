//! One watcher task per target: every interval (and whenever Docker events wake it) it observes
//! the containers and probes `/health`, asks [`verdict::decide`] what that means, and carries the
//! decisions out — record a deploy, promote a tag, or roll back through the [`Rollbacker`]. Being
//! one sequential task is what guarantees at most one rollback in flight per target.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::analysis::{Evidence, MetricVerdict, Population};
use crate::config::TargetConfig;
use crate::detect::Wake;
use crate::docker::DockerClient;
use crate::metrics::MetricsFeed;
use crate::probe::Prober;
use crate::rollback::{running_tag_of, RollbackError, RollbackRequest, Rollbacker};
use crate::store::{
    now_ms, DeployRecord, EventRecord, RollbackRecord, RollbackState, Store, Trigger,
};
use crate::tag::Tag;
use crate::target::TargetId;
use crate::telemetry::Metrics;
use crate::verdict::{decide, ContainerView, Decision, Observation, Phase, Policy, TargetState};

/// Orders from people and CI (API, CLI), handled between rounds.
#[derive(Debug)]
pub enum Command {
    Pause,
    /// Clears a pause and a `rollback_failed` halt: a human has looked.
    Resume,
    Deploy(DeployRecord),
    Rollback {
        tag: Option<Tag>,
        trigger: Trigger,
        reason: String,
        reply: oneshot::Sender<Result<RollbackRecord, String>>,
    },
}

/// What `GET /api/v1/targets` and `rollwatch status` show for a target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    pub target: TargetId,
    pub state: String,
    pub running_tag: Option<String>,
    pub known_good_tag: Option<String>,
    pub since_ms: i64,
    /// When the running tag was first seen (the last deploy), for the alert window.
    pub last_deploy_ms: Option<i64>,
    pub paused: bool,
    pub dry_run: bool,
    pub docker_reachable: bool,
    pub last_probe: Option<String>,
    pub detail: Option<String>,
}

/// Shared, read-mostly view of every target for the API.
pub type StatusBoard = Arc<RwLock<BTreeMap<String, TargetStatus>>>;

pub struct Watcher {
    target: TargetConfig,
    policy: Policy,
    dry_run: bool,
    store: Store,
    rollbacker: Arc<Rollbacker>,
    prober: Prober,
    docker: Option<DockerClient>,
    state: TargetState,
    since_ms: i64,
    last_deploy_ms: Option<i64>,
    running_tag: Option<String>,
    known_good: Option<String>,
    last_probe: Option<String>,
    docker_reachable: bool,
    board: StatusBoard,
    events: broadcast::Sender<EventRecord>,
    metrics: Arc<Metrics>,
    webhook: Option<url::Url>,
    /// The error-metric side, when the target has a metrics source.
    feed: Option<MetricsFeed>,
    /// `die` events since the last round.
    deaths: Vec<crate::detect::Death>,
    /// Tags currently exported in the info gauges, to replace their series on change.
    shown_running: Option<String>,
    shown_known_good: Option<String>,
}

/// What the controller shares with every watcher.
#[derive(Clone)]
pub struct Shared {
    pub store: Store,
    pub rollbacker: Arc<Rollbacker>,
    pub prober: Prober,
    pub board: StatusBoard,
    pub events: broadcast::Sender<EventRecord>,
    pub metrics: Arc<Metrics>,
    /// Generic JSON webhook told about every rollback (`controller.webhook_url`).
    pub webhook: Option<url::Url>,
}

impl Watcher {
    pub fn new(
        target: TargetConfig,
        dry_run: bool,
        initial: TargetState,
        shared: Shared,
    ) -> Watcher {
        let Shared {
            store,
            rollbacker,
            prober,
            board,
            events,
            metrics,
            webhook,
        } = shared;
        metrics.init_target(&target.id());
        Watcher {
            policy: target.watch.policy(),
            target,
            dry_run,
            store,
            rollbacker,
            prober,
            docker: None,
            state: initial,
            since_ms: now_ms(),
            last_deploy_ms: None,
            running_tag: None,
            known_good: None,
            last_probe: None,
            docker_reachable: true,
            board,
            events,
            metrics,
            webhook,
            feed: None,
            deaths: Vec::new(),
            shown_running: None,
            shown_known_good: None,
        }
    }

    pub async fn run(
        mut self,
        mut wakes: mpsc::Receiver<Wake>,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.target.watch.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        if let Some(m) = &self.target.metrics {
            match MetricsFeed::new(m) {
                Ok(f) => self.feed = Some(f),
                Err(e) => {
                    tracing::error!(target_id = %self.target.id(), error = %e, "metrics source unusable; judging on /health only")
                }
            }
        }
        self.adopt_known_good().await;
        self.load_baseline().await;
        self.refresh_known_good().await;
        self.publish();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.round(true).await,
                Some(w) = wakes.recv() => {
                    tracing::debug!(target_id = %self.target.id(), reason = %w.reason, "woken");
                    self.deaths.extend(w.death);
                    self.round(false).await;
                }
                Some(cmd) = commands.recv() => self.command(cmd).await,
            }
        }
    }

    async fn observe(&mut self) -> Result<Vec<ContainerView>, String> {
        if self.docker.is_none() {
            self.docker = Some(
                DockerClient::connect(&self.target.docker)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        let Some(docker) = &self.docker else {
            return Err("not connected".into());
        };
        let repository = self.target.executor.image_repository(&self.target.role);
        match docker.containers(&self.target.selector, true).await {
            Ok(list) => {
                self.running_tag = running_tag_of(&list, &repository);
                Ok(list
                    .into_iter()
                    .map(|c| ContainerView {
                        tag: c
                            .image_ref
                            .strip_prefix(&format!("{repository}:"))
                            .map(String::from),
                        name: c.name,
                        state: c.state,
                        health: c.health,
                        exit_code: c.exit_code,
                        created: c.created,
                    })
                    .collect())
            }
            Err(e) => {
                self.docker = None;
                Err(e.to_string())
            }
        }
    }

    async fn round(&mut self, probe: bool) {
        let containers = self.observe().await;
        let probe = if probe && containers.is_ok() {
            let r = self
                .prober
                .probe(&self.target.health.url.0, self.target.health.timeout)
                .await;
            self.metrics.probe(
                &self.target.id(),
                r.latency.as_secs_f64(),
                r.outcome.as_ref().err(),
            );
            self.last_probe = Some(match &r.outcome {
                Ok(()) => format!("ok in {} ms", r.latency.as_millis()),
                Err(f) => f.to_string(),
            });
            Some(r.outcome)
        } else {
            None
        };
        let reachable = containers.is_ok();
        if reachable != self.docker_reachable {
            self.docker_reachable = reachable;
            let [env, role] = [self.target.env.as_str(), self.target.role.as_str()];
            self.metrics
                .source_up
                .with_label_values(&[env, role, "docker"])
                .set(i64::from(reachable));
            if !reachable {
                self.metrics
                    .verdicts
                    .with_label_values(&[env, role, "inconclusive"])
                    .inc();
            }
            let msg = if reachable {
                "docker reachable again".to_string()
            } else {
                "docker unreachable: verdicts inconclusive".to_string()
            };
            self.emit("docker", None, msg).await;
        }
        let metrics = if probe.is_some() {
            self.metric_round().await
        } else {
            None
        };
        let repository = format!(
            "{}:",
            self.target.executor.image_repository(&self.target.role)
        );
        let deaths = std::mem::take(&mut self.deaths)
            .into_iter()
            .map(|d| {
                (
                    d.container,
                    d.image.strip_prefix(&repository).map(String::from),
                    d.exit_code,
                )
            })
            .collect();
        let obs = Observation {
            now_ms: now_ms(),
            containers,
            probe,
            metrics,
            deaths,
        };
        let (next, decisions) = decide(&self.state, &obs, &self.policy);
        if next.phase.name() != self.state.phase.name() {
            self.since_ms = obs.now_ms;
        }
        self.state = next;
        let changed = !decisions.is_empty();
        for d in decisions {
            self.act(d).await;
        }
        if changed {
            self.refresh_known_good().await;
        }
        self.publish();
    }

    /// Reads the metrics source (probe rounds only) and returns the verdict on a candidate.
    async fn metric_round(&mut self) -> Option<MetricVerdict> {
        let population = match &self.state.phase {
            Phase::Watching { .. } => Population::Candidate,
            Phase::Stable { .. } => Population::Baseline,
            _ => Population::Neither,
        };
        let watched = match &self.state.phase {
            Phase::Watching { tag, .. } => Some(tag.clone()),
            _ => None,
        };
        let feed = self.feed.as_mut()?;
        let round = feed.round(population, watched.as_deref()).await;
        let save = (feed.unsaved >= 30)
            .then(|| serde_json::to_string(&feed.watch.baseline).ok())
            .flatten();
        if save.is_some() {
            feed.unsaved = 0;
        }
        let id = self.target.id();
        let [env, role] = [id.env.as_str(), id.role.as_str()];
        if let Some((up, why)) = round.transition {
            self.metrics
                .source_up
                .with_label_values(&[env, role, "metrics"])
                .set(i64::from(up));
            if up {
                self.emit(
                    "metrics_source_up",
                    None,
                    "metrics source answers again".into(),
                )
                .await;
            } else {
                self.metrics
                    .verdicts
                    .with_label_values(&[env, role, "inconclusive"])
                    .inc();
                let why = why.unwrap_or_default();
                self.emit(
                    "metrics_source_down",
                    None,
                    format!("{why}; metric verdicts inconclusive, never a rollback on that"),
                )
                .await;
            }
        }
        if let (Some(json), Phase::Stable { tag }) = (save, &self.state.phase) {
            if let Err(e) = self.store.save_baseline(id, tag.clone(), json).await {
                tracing::warn!(error = %e, "cannot save the metric baseline");
            }
        }
        round.verdict
    }

    /// What the metrics said about the candidate, for promotion and status messages.
    fn metric_note(&self) -> String {
        match self.feed.as_ref().and_then(|f| f.last.as_ref()) {
            Some(MetricVerdict::Healthy(e)) => format!("; metrics healthy: {e}"),
            Some(MetricVerdict::Waiting(e)) => {
                format!("; metrics inconclusive (too little traffic: {e})")
            }
            Some(MetricVerdict::Inconclusive(e)) => {
                format!("; metrics inconclusive (source down: {e})")
            }
            Some(MetricVerdict::Regressed { evidence, .. }) => format!("; metrics: {evidence}"),
            None if self.feed.is_some() => "; metrics inconclusive (no reading yet)".into(),
            None => String::new(),
        }
    }

    async fn act(&mut self, decision: Decision) {
        let id = self.target.id();
        match decision {
            Decision::DeploySeen { tag, previous } => {
                self.last_deploy_ms = Some(now_ms());
                if let Some(f) = self.feed.as_mut() {
                    f.watch.start_candidate();
                    f.last = None;
                }
                self.metrics
                    .deploys
                    .with_label_values(&[id.env.as_str(), id.role.as_str()])
                    .inc();
                let ci = self
                    .store
                    .deploy_of(id.clone(), tag.clone())
                    .await
                    .ok()
                    .flatten();
                let from = previous.map(|p| format!(" (was {p})")).unwrap_or_default();
                let ci = ci
                    .map(|d| {
                        format!(
                            "; CI commit {} pipeline {}",
                            d.commit_sha.unwrap_or_default(),
                            d.pipeline_url.unwrap_or_default()
                        )
                    })
                    .unwrap_or_default();
                self.emit(
                    "deploy",
                    Some(tag.clone()),
                    format!(
                        "{tag} seen{from}; watch window {} started{ci}",
                        humantime::format_duration(self.target.watch.bake)
                    ),
                )
                .await;
            }
            Decision::Promote { tag } => {
                self.metrics
                    .verdicts
                    .with_label_values(&[id.env.as_str(), id.role.as_str(), "healthy"])
                    .inc();
                let image = format!(
                    "{}:{tag}",
                    self.target.executor.image_repository(&self.target.role)
                );
                let digest = match &self.docker {
                    Some(d) => d.image_digest(&image).await.ok().flatten(),
                    None => None,
                };
                match Tag::parse(&tag) {
                    Ok(t) => {
                        if let Err(e) = self
                            .store
                            .record_known_good(id.clone(), t, digest.clone())
                            .await
                        {
                            tracing::error!(target_id = %id, error = %e, "cannot record known-good tag");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(target_id = %id, error = %e, "running tag is not a valid tag; not promoted")
                    }
                }
                let digest = digest.unwrap_or_else(|| "digest unknown".into());
                self.emit(
                    "promoted",
                    Some(tag.clone()),
                    format!(
                        "{tag} healthy for the whole watch window: known-good ({digest}){}",
                        self.metric_note()
                    ),
                )
                .await;
                if let Some(f) = self.feed.as_mut() {
                    // The new known-good version's own traffic is the next baseline.
                    f.watch.restart_baseline();
                }
            }
            Decision::RollBack {
                from_tag,
                trigger,
                reason,
            } => self.roll_back(from_tag, trigger, reason).await,
            Decision::Withheld {
                tag,
                reason,
                why_not,
            } => {
                self.emit(
                    "withheld",
                    Some(tag),
                    format!("regressed ({reason}) but not rolled back: {why_not}"),
                )
                .await;
            }
            Decision::Inconclusive { reason } => {
                tracing::debug!(target_id = %id, %reason, "inconclusive")
            }
            Decision::UnhealthyStable { tag, reason } => {
                self.emit(
                    "unhealthy",
                    Some(tag),
                    format!("{reason}; stable tag, no automatic action"),
                )
                .await;
            }
        }
    }

    async fn roll_back(&mut self, from_tag: String, trigger: Trigger, reason: String) {
        let id = self.target.id();
        let [env, role] = [id.env.as_str(), id.role.as_str()];
        self.metrics
            .verdicts
            .with_label_values(&[env, role, "regressed"])
            .inc();
        if let Phase::Watching { since_ms, .. } = &self.state.phase {
            self.metrics
                .detection
                .with_label_values(&[env, role])
                .observe((now_ms() - since_ms) as f64 / 1000.0);
        }
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

    async fn execute_rollback(
        &mut self,
        request: RollbackRequest,
    ) -> Result<RollbackRecord, RollbackError> {
        let id = self.target.id();
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
        self.rollbacker
            .rollback(&self.target, request, on_step)
            .await
    }

    async fn after_rollback(
        &mut self,
        from_tag: &str,
        reason: &str,
        trigger: Trigger,
        result: Result<RollbackRecord, RollbackError>,
    ) {
        let id = self.target.id();
        let [env, role] = [id.env.as_str(), id.role.as_str()];
        let outcome = match &result {
            Ok(rec) if rec.state == RollbackState::DryRun => "dry_run",
            Ok(_) => "succeeded",
            Err(RollbackError::Execution { .. } | RollbackError::Validation { .. }) => "failed",
            Err(_) => "refused",
        };
        self.metrics
            .rollbacks
            .with_label_values(&[env, role, trigger.as_str(), outcome])
            .inc();
        self.notify(outcome, &result).await;
        if outcome != "dry_run" {
            if let Ok(rec) = &result {
                let took = rec.finished_at_ms.unwrap_or(rec.started_at_ms) - rec.started_at_ms;
                self.metrics
                    .rollback_duration
                    .with_label_values(&[env, role, trigger.as_str()])
                    .observe(took as f64 / 1000.0);
            }
            self.metrics
                .last_rollback
                .with_label_values(&[env, role])
                .set(now_ms() as f64 / 1000.0);
        }
        match result {
            Ok(rec) if rec.state == RollbackState::DryRun => {
                self.state.phase = Phase::Regressed {
                    tag: from_tag.to_string(),
                    reason: reason.to_string(),
                };
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
            Ok(rec) => {
                if let Some(f) = self.feed.as_mut() {
                    f.watch.restart_baseline();
                }
                let took = rec.finished_at_ms.unwrap_or(rec.started_at_ms) - rec.started_at_ms;
                self.state.phase = Phase::Stable {
                    tag: rec.to_tag.clone(),
                };
                self.state.last_rollback_ms = Some(now_ms());
                self.since_ms = now_ms();
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
            Err(e) => {
                let tag = match &e {
                    RollbackError::Execution { tag, .. }
                    | RollbackError::Validation { tag, .. } => tag.to_string(),
                    _ => from_tag.to_string(),
                };
                tracing::error!(target_id = %self.target.id(), error = %e, "ROLLBACK FAILED: automatic action stopped for this target until `rollwatch resume`");
                self.state.phase = Phase::RollbackFailed {
                    tag: tag.clone(),
                    reason: e.to_string(),
                };
                self.state.last_rollback_ms = Some(now_ms());
                self.since_ms = now_ms();
                self.emit(
                    "rollback_failed",
                    Some(tag),
                    format!("{e}; no further automatic action until `rollwatch resume`"),
                )
                .await;
            }
        }
    }

    /// Tells the configured webhook about a rollback, with its incident record. Best effort:
    /// a receiver that is down is logged, never retried in the way of the next round.
    async fn notify(&self, outcome: &str, result: &Result<RollbackRecord, RollbackError>) {
        let Some(url) = &self.webhook else { return };
        let id = self.target.id();
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

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Pause => {
                self.state.paused = true;
                self.emit(
                    "paused",
                    None,
                    "automatic rollbacks paused by an operator".into(),
                )
                .await;
            }
            Command::Resume => {
                self.state.paused = false;
                if matches!(
                    self.state.phase,
                    Phase::RollbackFailed { .. } | Phase::Regressed { .. }
                ) {
                    // Re-judge from scratch: whatever runs now goes on probation.
                    self.state.phase = Phase::Unknown;
                }
                self.emit(
                    "resumed",
                    None,
                    "automatic rollbacks resumed by an operator".into(),
                )
                .await;
            }
            Command::Deploy(d) => {
                let tag = d.tag.clone();
                let msg = format!(
                    "CI registered deploy of {tag} (commit {}, pipeline {})",
                    d.commit_sha.as_deref().unwrap_or("-"),
                    d.pipeline_url.as_deref().unwrap_or("-")
                );
                if let Err(e) = self.store.register_deploy(self.target.id(), d).await {
                    tracing::error!(error = %e, "cannot record CI deploy");
                }
                self.emit("ci_deploy", Some(tag), msg).await;
                self.round(false).await;
            }
            Command::Rollback {
                tag,
                trigger,
                reason,
                reply,
            } => {
                let from = self.running_tag.clone().unwrap_or_else(|| "?".into());
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
                    failing_tag: None,
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
        self.publish();
    }

    /// After a restart, a target already running a known-good tag is stable, not on probation:
    /// probation is for tags nobody has vouched for yet.
    async fn adopt_known_good(&mut self) {
        if self.state.phase != Phase::Unknown || self.observe().await.is_err() {
            return;
        }
        let Some(running) = self.running_tag.clone() else {
            return;
        };
        let known = self
            .store
            .known_good_tags(self.target.id())
            .await
            .unwrap_or_default();
        let bad = self
            .store
            .is_bad(self.target.id(), running.clone())
            .await
            .unwrap_or(true);
        if !bad && known.iter().any(|(t, _, _)| *t == running) {
            self.state.phase = Phase::Stable {
                tag: running.clone(),
            };
            self.emit(
                "stable",
                Some(running.clone()),
                format!("{running} is on record as known-good; watching it as stable"),
            )
            .await;
        }
    }

    /// A restart keeps the metric baseline measured on the tag that still runs.
    async fn load_baseline(&mut self) {
        let (Some(feed), Phase::Stable { tag }) = (self.feed.as_mut(), &self.state.phase) else {
            return;
        };
        if let Ok(Some(json)) = self.store.baseline(self.target.id(), tag.clone()).await {
            match serde_json::from_str::<Evidence>(&json) {
                Ok(e) => {
                    tracing::info!(target_id = %self.target.id(), requests = e.requests(), "metric baseline restored");
                    feed.watch.baseline = e;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "saved metric baseline unreadable; measuring anew")
                }
            }
        }
    }

    async fn refresh_known_good(&mut self) {
        let running = self.running_tag.clone();
        if let Ok(tags) = self.store.known_good_tags(self.target.id()).await {
            // The tag a rollback would pick: newest known-good that is not the running one.
            self.known_good = tags
                .iter()
                .map(|(t, _, _)| t.clone())
                .find(|t| Some(t) != running.as_ref())
                .or_else(|| tags.first().map(|(t, _, _)| t.clone()));
        }
    }

    async fn emit(&self, kind: &str, tag: Option<String>, message: String) {
        let id = self.target.id();
        let loud = matches!(
            kind,
            "rollback_failed" | "regressed" | "rollback" | "unhealthy"
        );
        if loud {
            tracing::warn!(target_id = %id, kind, tag = tag.as_deref().unwrap_or(""), "{message}");
        } else {
            tracing::info!(target_id = %id, kind, tag = tag.as_deref().unwrap_or(""), "{message}");
        }
        let stored = self
            .store
            .record_event(id.clone(), kind, tag.clone(), message.clone())
            .await;
        let event_id = stored.unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot record event");
            0
        });
        let _ = self.events.send(EventRecord {
            id: event_id,
            at_ms: now_ms(),
            target: id,
            kind: kind.into(),
            tag,
            message,
        });
    }

    fn publish(&mut self) {
        let id = self.target.id();
        let [env, role] = [id.env.as_str(), id.role.as_str()];
        self.metrics.set_state(&id, self.state.phase.name());
        self.metrics
            .paused
            .with_label_values(&[env, role])
            .set(i64::from(self.state.paused));
        let unhealthy = matches!(self.state.phase, Phase::Stable { .. })
            && self.state.stable_failures >= self.policy.failures;
        self.metrics
            .unhealthy
            .with_label_values(&[env, role])
            .set(i64::from(unhealthy));
        self.metrics.set_tag(
            &self.metrics.running_tag,
            &id,
            self.running_tag.as_deref(),
            self.shown_running.as_deref(),
        );
        self.shown_running = self.running_tag.clone();
        self.metrics.set_tag(
            &self.metrics.known_good_tag,
            &id,
            self.known_good.as_deref(),
            self.shown_known_good.as_deref(),
        );
        self.shown_known_good = self.known_good.clone();
        let detail = match &self.state.phase {
            Phase::Watching {
                since_ms,
                failures,
                last_failure,
                ..
            } => Some(format!(
                "{}s of {} watched, {failures} consecutive failures{}{}",
                (now_ms() - since_ms) / 1000,
                humantime::format_duration(self.target.watch.bake),
                last_failure
                    .as_ref()
                    .map(|f| format!(", last: {f}"))
                    .unwrap_or_default(),
                self.metric_note()
            )),
            Phase::Regressed { reason, .. } | Phase::RollbackFailed { reason, .. } => {
                Some(reason.clone())
            }
            _ => None,
        };
        let status = TargetStatus {
            target: id.clone(),
            state: self.state.phase.name().to_string(),
            running_tag: self.running_tag.clone(),
            known_good_tag: self.known_good.clone(),
            since_ms: self.since_ms,
            last_deploy_ms: self.last_deploy_ms,
            paused: self.state.paused,
            dry_run: self.dry_run,
            docker_reachable: self.docker_reachable,
            last_probe: self.last_probe.clone(),
            detail,
        };
        let mut board = self.board.write().unwrap_or_else(|p| p.into_inner());
        board.insert(id.to_string(), status);
    }
}
