//! One watcher task per target: every interval (and whenever Docker events wake it) it observes
//! the containers and probes `/health`, asks [`verdict::decide`] what that means, and carries the
//! decisions out — record a deploy, promote a tag, or roll back through the [`Rollbacker`]. Being
//! one sequential task is what guarantees at most one rollback in flight per target.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

mod actions;
mod sampler;
mod status;
#[cfg(test)]
mod tests;

pub use status::{StatusBoard, StatusSlot, TargetStatus, WindowProgress};

use crate::analysis::{Evidence, MetricVerdict, Population};
use crate::canary::handle::CanaryHandle;
use crate::clock::steady_ms;
use crate::config::TargetConfig;
use crate::detect::Wake;
use crate::engine::{EngineView, ListingId};
use crate::metrics::MetricsFeed;
use crate::probe::{HealthProbe, Prober};
use crate::rollback::{running_tag_of, RollbackError, RollbackRequest, Rollbacker};
use crate::store::{
    now_ms, DeployRecord, EventRecord, RollbackRecord, RollbackState, Sample, Store, StoreWriter,
    Trigger,
};
use crate::tag::Tag;
use crate::target::TargetId;
use crate::telemetry::{Metrics, RollbackResult, Source, TargetSeries};
use crate::verdict::{
    decide, ContainerView, Control, Decision, Input, Observation, Phase, Policy, TargetState,
};

/// Orders from people and CI (API, CLI), handled between rounds. The queue is bounded
/// ([`COMMAND_QUEUE`]) and the API only ever `try_send`s into it: a full queue is answered
/// `503 busy` with nothing changed, never by waiting.
#[derive(Debug)]
pub enum Command {
    /// `done` fires once the pause is stored, so an acknowledgement never precedes it.
    Pause { done: oneshot::Sender<()> },
    /// Clears a pause and a `rollback_failed` halt: a human has looked.
    Resume { done: oneshot::Sender<()> },
    /// `done` answers once the registration is stored, or why it could not be.
    Deploy {
        record: DeployRecord,
        done: oneshot::Sender<Result<(), String>>,
    },
    Rollback {
        tag: Option<Tag>,
        trigger: Trigger,
        reason: String,
        reply: oneshot::Sender<Result<RollbackRecord, String>>,
    },
    /// This instance took the lease: reread the guard rails from the store (the previous
    /// leader kept them). `done` fires once they are in place.
    Reload { done: oneshot::Sender<()> },
}

/// Orders a watcher holds waiting while it is busy (a rollback in flight takes minutes).
pub const COMMAND_QUEUE: usize = 16;

/// How often a follower rereads the guard rails the leader keeps (one small query per target).
const FOLLOWER_RESYNC: std::time::Duration = std::time::Duration::from_secs(30);

pub struct Watcher {
    target: TargetConfig,
    /// `target.id()`, built once.
    id: TargetId,
    policy: Policy,
    dry_run: bool,
    store: Store,
    writer: StoreWriter,
    rollbacker: Arc<Rollbacker>,
    /// The target's own keep-alive connection to its health URL.
    health: HealthProbe,
    /// The engine's shared container listing (one per endpoint, see [`EngineView`]).
    view: Arc<EngineView>,
    /// The image repository the target runs (`executor.image_repository`), computed once.
    repository: String,
    /// The engine listing `views` and `running_tag` were read from: unchanged, nothing is copied.
    listing: ListingId,
    views: Arc<[ContainerView]>,
    state: TargetState,
    /// The last read of known-good tags failed (its warning is said once per outage).
    store_unread: bool,
    since_ms: i64,
    last_deploy_ms: Option<i64>,
    running_tag: Option<String>,
    known_good: Option<String>,
    last_probe: Option<String>,
    docker_reachable: bool,
    /// This target's entry on the status board.
    status: StatusSlot,
    events: broadcast::Sender<EventRecord>,
    /// This target's exported series.
    series: Arc<TargetSeries>,
    webhook: Option<url::Url>,
    /// The error-metric side, when the target has a metrics source.
    feed: Option<MetricsFeed>,
    lease: Arc<dyn crate::lease::Lease>,
    /// `die` events since the last round.
    deaths: Vec<crate::detect::Death>,
    /// The guard rails as last written to the store; written again whenever they change.
    saved_control: Control,
    /// Sums a deploy's watch window into samples for the status page.
    sampler: sampler::Sampler,
    /// Cancels a rollback in flight at shutdown (its intent stays for the next start).
    shutdown: CancellationToken,
    /// A canary target's runner: it does this target's rollbacks, by weight.
    canary: Option<CanaryHandle>,
}

/// What the controller shares with every watcher.
#[derive(Clone)]
pub struct Shared {
    pub store: Store,
    /// Metric baselines and watch-window samples go through it, written in batches (see [`StoreWriter`]).
    pub writer: StoreWriter,
    pub rollbacker: Arc<Rollbacker>,
    pub prober: Prober,
    pub board: StatusBoard,
    pub events: broadcast::Sender<EventRecord>,
    pub metrics: Arc<Metrics>,
    /// Generic JSON webhook told about every rollback (`controller.webhook_url`).
    pub webhook: Option<url::Url>,
    /// Asked before every rollback: only the leader acts.
    pub lease: Arc<dyn crate::lease::Lease>,
    /// The runners of canary targets: their rollbacks move traffic between slots.
    pub canaries: Arc<HashMap<TargetId, CanaryHandle>>,
}

impl Watcher {
    pub fn new(
        target: TargetConfig,
        dry_run: bool,
        initial: TargetState,
        shared: Shared,
        view: Arc<EngineView>,
    ) -> Watcher {
        let Shared {
            store,
            writer,
            rollbacker,
            prober,
            board,
            events,
            metrics,
            webhook,
            lease,
            canaries,
        } = shared;
        let canary = canaries.get(&target.id()).cloned();
        let id = target.id();
        let series = metrics.target(&id);
        let repository = target.executor.image_repository(&target.role);
        let health = HealthProbe::new(&target.health.url.0, target.health.timeout, prober);
        let saved_control = initial.control();
        // The stored pause shows from the first answer of the API, not only after the first round.
        let status = board.slot(&id, || TargetStatus {
            paused: initial.paused,
            halted: initial.refusals >= crate::verdict::REFUSAL_LIMIT,
            ..TargetStatus::new(id.clone(), dry_run)
        });
        Watcher {
            id,
            listing: ListingId::default(),
            views: Arc::from([]),
            policy: target.watch.policy(),
            target,
            dry_run,
            store,
            writer,
            rollbacker,
            health,
            repository,
            view,
            state: initial,
            store_unread: false,
            since_ms: now_ms(),
            last_deploy_ms: None,
            running_tag: None,
            known_good: None,
            last_probe: None,
            docker_reachable: true,
            status,
            events,
            series,
            webhook,
            feed: None,
            deaths: Vec::new(),
            lease,
            saved_control,
            sampler: sampler::Sampler::default(),
            shutdown: CancellationToken::new(),
            canary,
        }
    }

    /// Watches until `shutdown`. The channels are borrowed so that a supervisor can start a
    /// fresh watcher on the same channels after a panic.
    pub async fn run(
        mut self,
        wakes: &mut mpsc::Receiver<Wake>,
        commands: &mut mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) {
        self.shutdown = shutdown.clone();
        let interval = self.target.watch.interval;
        let first = tokio::time::Instant::now() + phase_offset(&self.id, interval);
        let mut tick = tokio::time::interval_at(first, interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        if let Some(m) = &self.target.metrics {
            match MetricsFeed::new(m) {
                Ok(f) => self.feed = Some(f.with_grace(self.target.watch.grace)),
                Err(e) => {
                    tracing::error!(target_id = %self.id, error = %e, "metrics source unusable; judging on /health only")
                }
            }
        }
        // The steps' futures are boxed: a task's resident size is its largest await point, and
        // inline a round made every idle watcher hold ~12 KB (12 MB at 1,000 targets).
        Box::pin(self.start_up()).await;
        self.publish();
        // Built once: 1,000 watchers re-creating it every iteration all took the token's lock.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let mut resync = tokio::time::interval_at(first + FOLLOWER_RESYNC, FOLLOWER_RESYNC);
        resync.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = &mut cancelled => break,
                _ = tick.tick() => Box::pin(self.round(true)).await,
                // A follower's status shows the pauses and halts the leader keeps.
                _ = resync.tick(), if !self.lease.is_leader() => Box::pin(self.reload_control()).await,
                Some(w) = wakes.recv() => {
                    tracing::debug!(target_id = %self.id, reason = %w.reason, "woken");
                    self.deaths.extend(w.death);
                    Box::pin(self.round(false)).await;
                }
                Some(cmd) = commands.recv() => Box::pin(self.command(cmd)).await,
            }
        }
    }

    async fn start_up(&mut self) {
        self.adopt_known_good().await;
        self.load_baseline().await;
        self.refresh_known_good().await;
    }

    /// The target's containers, copied from the engine's listing only when that listing changed.
    async fn observe(&mut self) -> Result<Arc<[ContainerView]>, String> {
        let repository = &self.repository;
        let fresh = self
            .view
            .with_containers(&self.target.selector, &mut self.listing, |list| {
                let views = list
                    .iter()
                    .map(|c| ContainerView {
                        tag: c
                            .image_ref
                            .strip_prefix(repository.as_str())
                            .and_then(|rest| rest.strip_prefix(':'))
                            .map(String::from),
                        name: c.name.clone(),
                        state: c.state.clone(),
                        health: c.health.clone(),
                        exit_code: c.exit_code,
                        created: c.created,
                    })
                    .collect::<Arc<[ContainerView]>>();
                (running_tag_of(list.iter().copied(), repository), views)
            })
            .await?;
        if let Some((running_tag, views)) = fresh {
            self.running_tag = running_tag;
            self.views = views;
        }
        Ok(self.views.clone())
    }

    async fn round(&mut self, probe: bool) {
        crate::rollback::fault_panic_once("watcher-round");
        let containers = self.observe().await;
        let mut probed = None;
        let probe = if probe && containers.is_ok() {
            let r = self.health.probe().await;
            let ms = i64::try_from(r.latency.as_millis()).unwrap_or(i64::MAX);
            probed = Some((ms, r.outcome.is_ok()));
            self.series
                .probe(r.latency.as_secs_f64(), r.outcome.as_ref().err());
            // Written into the same buffer every round (it is copied to the status board).
            let last = self.last_probe.get_or_insert_with(String::new);
            last.clear();
            let _ = match &r.outcome {
                Ok(()) => write!(last, "ok in {} ms", r.latency.as_millis()),
                Err(f) => write!(last, "{f}"),
            };
            Some(r.outcome)
        } else {
            None
        };
        let reachable = containers.is_ok();
        if reachable != self.docker_reachable {
            self.docker_reachable = reachable;
            self.series.source_up(Source::Docker, reachable);
            if !reachable {
                self.series.inconclusive();
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
        self.record_sample(probed);
        let repository = self.repository.as_str();
        let deaths = std::mem::take(&mut self.deaths)
            .into_iter()
            .map(|d| {
                let tag = d
                    .image
                    .strip_prefix(repository)
                    .and_then(|r| r.strip_prefix(':'));
                (d.container, tag.map(String::from), d.exit_code)
            })
            .collect();
        let obs = Observation {
            now_ms: steady_ms(),
            containers,
            probe,
            metrics,
            deaths,
        };
        let decisions = self.transition(Input::Observed(obs));
        if !matches!(self.state.phase, Phase::Watching { .. }) {
            // The round's verdict ended the window: its last rounds are charted too.
            self.record_sample(None);
        }
        let changed = !decisions.is_empty();
        for d in decisions {
            self.act(d).await;
        }
        if changed {
            self.refresh_known_good().await;
        }
        self.save_control().await;
        self.publish();
    }

    /// The only way the watcher's state changes: through [`decide`].
    fn transition(&mut self, input: Input) -> Vec<Decision> {
        let (next, decisions) = decide(&self.state, &input, &self.policy);
        if next.phase.name() != self.state.phase.name() {
            self.since_ms = now_ms();
        }
        self.state = next;
        decisions
    }

    /// Writes the guard rails when a transition changed them without an event to carry them.
    async fn save_control(&mut self) {
        let control = self.state.control();
        if control == self.saved_control {
            return;
        }
        let message = describe_control(&control);
        let id = self.id.clone();
        match self
            .store
            .record_event_with_control(id, "control", None, message, Some(control.clone()))
            .await
        {
            Ok(_) => self.saved_control = control,
            Err(e) => tracing::error!(error = %e, "cannot persist the target's guard rails"),
        }
    }

    /// Reads the metrics source (probe rounds only) and returns the verdict on a candidate.
    async fn metric_round(&mut self) -> Option<MetricVerdict> {
        let (population, watched) = match &self.state.phase {
            // A deploy happened since the last round and `decide` has not seen it yet: this
            // interval mixes both versions, so it belongs to neither population.
            phase if phase.tag().is_some() && self.running_tag.as_deref() != phase.tag() => {
                (Population::Neither, None)
            }
            Phase::Watching { tag, .. } => (Population::Candidate, Some(tag.clone())),
            Phase::Stable { .. } => (Population::Baseline, None),
            _ => (Population::Neither, None),
        };
        let feed = self.feed.as_mut()?;
        let round = feed.round(population, watched.as_deref()).await;
        let save = (feed.unsaved >= 30)
            .then(|| serde_json::to_string(&feed.watch.baseline).ok())
            .flatten();
        if save.is_some() {
            feed.unsaved = 0;
        }
        if let Some((up, why)) = round.transition {
            self.series.source_up(Source::Metrics, up);
            if up {
                self.emit(
                    "metrics_source_up",
                    None,
                    "metrics source answers again".into(),
                )
                .await;
            } else {
                self.series.inconclusive();
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
            self.writer.save(self.id.clone(), tag.clone(), json);
        }
        round.verdict
    }

    async fn act(&mut self, decision: Decision) {
        let id = self.id.clone();
        match decision {
            Decision::DeploySeen { tag, previous } => {
                self.last_deploy_ms = Some(now_ms());
                if previous.is_some() {
                    let (bake, interval) = (self.target.watch.bake, self.target.watch.interval);
                    let rounds = bake.as_millis() / interval.as_millis().max(1);
                    self.sampler
                        .deploy_seen(u64::try_from(rounds).unwrap_or(u64::MAX));
                }
                if let Some(f) = self.feed.as_mut() {
                    f.watch.start_candidate();
                    f.last = None;
                }
                self.series.deployed();
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
            Decision::Promote { tag } if self.canary_in_flight(&tag) => {
                // Its window ended before its canary decided: not known-good on that alone.
                self.emit(
                    "watched",
                    Some(tag.clone()),
                    format!("{tag} healthy for the whole watch window, but its canary deploy is still in flight: known-good once the canary is promoted and its hold ends"),
                )
                .await;
            }
            Decision::Promote { tag } => {
                self.series.healthy();
                let image = format!(
                    "{}:{tag}",
                    self.target.executor.image_repository(&self.target.role)
                );
                let digest = match self.view.client() {
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
            Decision::Adopted { tag } => {
                self.emit(
                    "stable",
                    Some(tag.clone()),
                    format!("{tag} is on record as known-good; watching it as stable"),
                )
                .await;
            }
            d @ (Decision::RetryLater { .. } | Decision::GaveUp { .. }) => {
                self.report_refusal(d).await
            }
        }
    }
}

impl Watcher {
    /// A canary deploy of `tag` is still stepping on this target.
    fn canary_in_flight(&self, tag: &str) -> bool {
        self.canary.as_ref().is_some_and(|c| {
            matches!(c.phase(), crate::canary::handle::Phase::Deploying { tag: t, .. } if t == tag)
        })
    }
}

/// Targets whose offsets fall in the same slot start their rounds together: the runtime wakes
/// once per slot and runs them back to back, instead of parking and waking a worker thread
/// for every target (at 1,000 targets a second, a tenth of rollwatch's CPU was thread switches).
const SLOTS_PER_INTERVAL: u64 = 50;

/// Where in its interval a target probes: spread by a hash of its id over
/// [`SLOTS_PER_INTERVAL`] slots, so 1,000 targets started together do not all probe (and ask
/// the engine) at once. Stable across restarts, unlike a random offset, so a target's probe
/// times are predictable.
fn phase_offset(id: &TargetId, interval: std::time::Duration) -> std::time::Duration {
    // FNV-1a: small, and spreads short similar strings (`staging/r0001`, `staging/r0002`).
    let hash = id
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    let slot = interval / SLOTS_PER_INTERVAL as u32;
    slot * (hash % SLOTS_PER_INTERVAL) as u32
}

/// One line for the history when the guard rails change without another event.
fn describe_control(c: &Control) -> String {
    let mut parts = vec![if c.paused { "paused" } else { "not paused" }.to_string()];
    if let Some(h) = &c.halted {
        parts.push(format!("halted on {}", h.tag));
    }
    if c.refusals > 0 {
        parts.push(format!("{} refused rollback(s)", c.refusals));
    }
    format!("guard rails: {}", parts.join(", "))
}
