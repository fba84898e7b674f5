//! One task per canary target that owns its slots and its weights: it runs deploys one at a
//! time, holds the old slot after a promotion and stops it when the hold ends, flips traffic
//! back on the watcher's order, and at start finishes or aborts whatever a crash left
//! unfinished. Orders reach it through a [`CanaryHandle`]; a person's promote or abort during
//! a deploy goes straight to the flow, which takes it at its next reading.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::handle::{CanaryHandle, DeployOrder, Phase};

use super::deploy::{CanaryDeploy, DeployError};
use super::flow::Manual;
use super::handle::Order;
use super::record::{Journal, Recorded, Steer};
use super::site::{driver_of, health_path, ready_site};
use super::slots::SlotSite;
use crate::analysis::MetricPolicy;
use crate::clock::steady_ms;
use crate::config::{CanaryConfig, ExecutorConfig, TargetConfig};
use crate::probe::Prober;
use crate::rollback::{CommandRunner, LocalRunner, RollbackError, RollbackRequest};
use crate::store::{
    now_ms, CanaryRecord, CanaryStart, CanaryState, RollbackRecord, Store, StoreError, Weights,
};
use crate::traffic::haproxy::Haproxy;
use crate::traffic::{Slot, TrafficDriver};

/// Orders a runner holds while it is busy.
const ORDERS: usize = 8;
/// How often a deploy left unfinished by a failing load balancer is tried again.
const LEFTOVER_RETRY: Duration = Duration::from_secs(30);

/// A canary target's runner and its handle.
pub struct CanaryRunner {
    target: TargetConfig,
    config: CanaryConfig,
    driver: Haproxy,
    runner: Arc<dyn CommandRunner>,
    prober: Prober,
    journal: Journal,
    orders: mpsc::Receiver<Order>,
    manual: Mutex<mpsc::Receiver<Manual>>,
    phase: Arc<Mutex<Phase>>,
    deploying: Arc<AtomicBool>,
}

impl CanaryRunner {
    /// `None` for a target that is not a canary target.
    pub fn new(
        target: &TargetConfig,
        prober: Prober,
        journal: Journal,
    ) -> Option<(CanaryRunner, CanaryHandle)> {
        let config = target.canary.clone()?;
        if target.strategy != crate::config::Strategy::Canary {
            return None;
        }
        let driver = driver_of(&config);
        let step_timeout = match &target.executor {
            ExecutorConfig::Compose(c) => c.step_timeout,
            ExecutorConfig::Docker(_) => crate::config::DEFAULT_STEP_TIMEOUT,
        };
        let (orders_tx, orders) = mpsc::channel(ORDERS);
        let (manual_tx, manual) = mpsc::channel(ORDERS);
        let phase = Arc::new(Mutex::new(Phase::Idle));
        let deploying = Arc::new(AtomicBool::new(false));
        journal.series.canary_target();
        let handle = CanaryHandle {
            orders: orders_tx,
            manual: manual_tx,
            phase: phase.clone(),
            deploying: deploying.clone(),
        };
        let runner = CanaryRunner {
            target: target.clone(),
            config,
            driver,
            runner: Arc::new(LocalRunner::new(step_timeout)),
            prober,
            journal,
            orders,
            manual: Mutex::new(manual),
            phase,
            deploying,
        };
        Some((runner, handle))
    }

    fn store(&self) -> &Store {
        &self.journal.store
    }

    fn set_phase(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    /// Finishes what a crash left, then takes orders until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let id = self.target.id();
        if let Err(e) = self.recover().await {
            tracing::error!(target_id = %id, error = %e, "cannot finish the canary deploy a restart interrupted; its record says what was meant");
        }
        self.export_weights().await;
        // A deploy the balancer left half-done is retried this often while idle.
        let mut leftovers = tokio::time::interval(LEFTOVER_RETRY);
        leftovers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let hold_end = match self.phase() {
                Phase::Holding { until_ms, .. } => Some(until_ms),
                _ => None,
            };
            let wait_hold = async {
                match hold_end {
                    Some(until) => {
                        let ms = u64::try_from(until - steady_ms()).unwrap_or(0);
                        tokio::time::sleep(Duration::from_millis(ms)).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = leftovers.tick() => {
                    if let Err(e) = self.abort_leftover().await {
                        tracing::warn!(target_id = %id, "{e}; trying again in {}", humantime::format_duration(LEFTOVER_RETRY));
                    }
                }
                _ = wait_hold => {
                    if let Err(e) = self.end_hold("the hold ended without a regression").await {
                        tracing::error!(target_id = %id, error = %e, "cannot stop the held slot; trying again in a minute");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                        }
                    }
                }
                Some(order) = self.orders.recv() => {
                    // At shutdown a deploy is dropped mid-step; its record says what was
                    // meant and the next start aborts it cleanly.
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = self.take(order) => {}
                    }
                }
            }
        }
    }

    fn phase(&self) -> Phase {
        self.phase.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn take(&mut self, order: Order) {
        match order {
            Order::Deploy {
                order,
                accepted,
                done,
            } => {
                if accepted.is_closed() {
                    // The API answered busy meanwhile (nothing would change): keep that true.
                    tracing::warn!(tag = %order.tag, "a deploy order waited past its answer; dropped");
                } else if let Some(record) = self.deploy(order, accepted).await {
                    let _ = done.send(record);
                }
                self.deploying.store(false, Ordering::SeqCst);
            }
            Order::Manual { what, reply } => {
                let _ = reply.send(self.manual_when_not_deploying(what).await);
            }
            Order::RollBack { request, reply } => {
                let _ = reply.send(self.flip_back(request).await);
            }
        }
    }

    async fn ready_site(&self) -> Result<SlotSite, String> {
        ready_site(&self.target, &self.config, &*self.runner).await
    }

    fn deployer<'a, D: TrafficDriver>(
        &'a self,
        site: &'a SlotSite,
        driver: &'a D,
    ) -> CanaryDeploy<'a, D> {
        let policy = match &self.target.metrics {
            Some(m) => m.policy(),
            None => MetricPolicy {
                min_requests: self.config.step_min_requests as f64,
                ..MetricPolicy::default()
            },
        };
        let steps = u32::try_from(self.config.steps.len()).unwrap_or(u32::MAX);
        CanaryDeploy {
            site,
            runner: self.runner.clone(),
            driver,
            config: &self.config,
            prober: self.prober.clone(),
            health_path: health_path(&self.target),
            policy,
            interval: self.target.watch.interval,
            start_within: self.target.health.validation_timeout,
            // Each step may wait for its traffic: five times its minimum, then give up.
            decide_within: self.config.step_min.saturating_mul(steps.saturating_mul(5))
                + Duration::from_secs(300),
        }
    }

    /// The tag running in `slot`'s compose project, read from Docker.
    pub(super) async fn tag_in(&self, site: &SlotSite, slot: Slot) -> Option<String> {
        let docker = crate::docker::DockerClient::connect(&self.target.docker)
            .await
            .ok()?;
        let selector = crate::target::Selector {
            compose_project: Some(site.project_of(slot)),
            compose_service: self.target.selector.compose_service.clone(),
            ..Default::default()
        };
        let containers = docker.containers(&selector, false).await.ok()?;
        let repository = self.target.executor.image_repository(&self.target.role);
        crate::rollback::running_tag_of(&containers, &repository)
    }

    /// Runs one deploy to its end; `None` when it was refused before anything changed.
    async fn deploy(
        &mut self,
        order: DeployOrder,
        accepted: oneshot::Sender<Result<i64, String>>,
    ) -> Option<CanaryRecord> {
        let refuse = |accepted: oneshot::Sender<Result<i64, String>>, why: String| {
            let _ = accepted.send(Err(why));
            None
        };
        // A deploy the balancer left half-done is aborted before anything else starts.
        if let Err(e) = self.abort_leftover().await {
            return refuse(accepted, e);
        }
        let site = match self.ready_site().await {
            Ok(s) => s,
            Err(e) => return refuse(accepted, e),
        };
        if let Err(e) = site.check(&self.runner).await {
            return refuse(accepted, e.to_string());
        }
        let plain = self.deployer(&site, &self.driver);
        let live = match plain.live_slot().await {
            Ok(s) => s,
            Err(e) => return refuse(accepted, e.to_string()),
        };
        let Some(live_tag) = self.tag_in(&site, live).await else {
            return refuse(accepted, format!(
                "nothing runs in the live slot {project} (the one with the larger weight); start the first version there with `IMAGE_TAG=<tag> CONTAINER_REGISTRY={registry} {var}={port} docker compose -p {project} --env-file {env} up -d` in {dir}",
                project = site.project_of(live),
                registry = site.registry,
                var = site.port_var,
                port = site.port_of(live),
                env = site.env_file,
                dir = site.dir.display(),
            ));
        };
        let tag = order.tag.to_string();
        if live_tag == tag {
            return refuse(
                accepted,
                format!("{tag} already takes the traffic (slot {})", live.name()),
            );
        }
        // Only now, with every refusal behind: a refused deploy must leave the hold alone.
        if let Phase::Holding { .. } = self.phase() {
            if let Err(e) = self.end_hold("a new deploy began").await {
                return refuse(accepted, format!("the held slot of the last deploy could not be stopped: {e}; nothing else was changed"));
            }
        }
        let weights = match self.driver.read().await {
            Ok([b, g]) => Weights {
                blue: b.weight,
                green: g.weight,
            },
            Err(e) => return refuse(accepted, e.to_string()),
        };
        let start = CanaryStart {
            target: self.target.id(),
            tag: tag.clone(),
            from_tag: Some(live_tag.clone()),
            slot: live.other(),
            weights,
            commit_sha: order.commit_sha.clone(),
            pipeline_url: order.pipeline_url.clone(),
        };
        // The watcher shows the pipeline and commit when it sees the new version start.
        let ci = crate::store::DeployRecord {
            tag: tag.clone(),
            commit_sha: order.commit_sha,
            pipeline_url: order.pipeline_url,
            at_ms: now_ms(),
        };
        if let Err(e) = self.store().register_deploy(self.target.id(), ci).await {
            return refuse(accepted, e.to_string());
        }
        let id = match self.store().begin_canary(start).await {
            Ok(id) => id,
            Err(e) => return refuse(accepted, e.to_string()),
        };
        // Orders given to an earlier deploy must not steer this one; from the phase on,
        // people's orders reach this deploy.
        while self.manual_orders().try_recv().is_ok() {}
        self.set_phase(Phase::Deploying {
            id,
            tag: tag.clone(),
        });
        let _ = accepted.send(Ok(id));
        self.journal
            .event(
                "canary_started",
                &tag,
                format!(
                    "canary deploy #{id} of {tag} beside {live_tag} (slot {}): steps {:?}%",
                    live.other().name(),
                    self.config.steps
                ),
            )
            .await;
        let recorded = Recorded::new(&self.driver, self.journal.clone(), id, weights);
        let steer = Steer {
            journal: &self.journal,
            id,
            tag: &tag,
            orders: &self.manual,
        };
        let result = self
            .deployer(&site, &recorded)
            .deploy(&steer, live, &live_tag, &tag)
            .await;
        self.set_phase(Phase::Idle);
        if let Err(DeployError::Traffic(e)) = &result {
            // The balancer failed mid-way: take traffic back now, not at the next start.
            let why = format!("the load balancer failed during the deploy: {e}");
            if let Ok(Some(rec)) = self.store().canary(id).await {
                match super::flip::abort_unfinished(self, &rec, &why).await {
                    Ok(Some(_)) => return self.store().canary(id).await.ok().flatten(),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "cannot record the abort of canary deploy #{id}")
                    }
                }
            }
        }
        let (state, reason, hold) = self.conclude(&tag, result).await;
        if let Err(e) = self.store().canary_state(id, state, reason, hold).await {
            tracing::error!(error = %e, "cannot record the end of canary deploy #{id}");
        }
        if let Some(until_ms) = hold {
            self.set_phase(Phase::Holding { id, tag, until_ms });
        }
        self.store().canary(id).await.ok().flatten()
    }

    /// A deploy left `starting` or `stepping` (its balancer failed while aborting it) is
    /// aborted now; `Err` when it still cannot be.
    async fn abort_leftover(&mut self) -> Result<(), String> {
        let left = self
            .store()
            .unfinished_canary(self.target.id())
            .await
            .map_err(|e| e.to_string())?;
        let Some(rec) = left.filter(|r| r.state != CanaryState::Holding) else {
            return Ok(());
        };
        let why = "the load balancer failed during this deploy; aborted before the next one";
        match super::flip::abort_unfinished(self, &rec, why).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(format!(
                "canary deploy #{} of {} is unfinished and the load balancer still cannot take its traffic back; nothing was changed",
                rec.id, rec.tag
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The gauge shows the balancer's weights from the start, not only after a change.
    async fn export_weights(&self) {
        if let Ok([b, g]) = self.driver.read().await {
            self.journal.series.canary_weights(Weights {
                blue: b.weight,
                green: g.weight,
            });
        }
    }

    fn manual_orders(&self) -> std::sync::MutexGuard<'_, mpsc::Receiver<Manual>> {
        self.manual.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The end state, reason and hold of a finished deploy; reports it.
    async fn conclude(
        &self,
        tag: &str,
        result: Result<(Slot, super::flow::Outcome), DeployError>,
    ) -> (CanaryState, String, Option<i64>) {
        let series = &self.journal.series;
        match result {
            Ok((_, outcome)) if outcome.promoted => {
                series.canary_ended(true);
                let hold = i64::try_from(self.config.hold.as_millis()).unwrap_or(i64::MAX);
                let until = outcome.ended_ms.saturating_add(hold);
                let reason = format!(
                    "{}; the old slot is held at weight 0 for {}",
                    outcome.reason,
                    humantime::format_duration(self.config.hold)
                );
                self.journal
                    .event("canary_promoted", tag, reason.clone())
                    .await;
                (CanaryState::Holding, reason, Some(until))
            }
            Ok((_, outcome)) => {
                series.canary_ended(false);
                if outcome.judged_bad {
                    self.mark_bad(tag, &outcome.reason).await;
                }
                let reason = format!(
                    "{}; all traffic back on the live slot, the canary's containers removed",
                    outcome.reason
                );
                self.journal
                    .event("canary_aborted", tag, reason.clone())
                    .await;
                (CanaryState::Aborted, reason, None)
            }
            Err(e @ DeployError::NotStarted { .. }) => {
                // Not the version's fault (a pull, the compose file): not marked bad.
                series.canary_ended(false);
                self.journal
                    .event("canary_aborted", tag, e.to_string())
                    .await;
                (CanaryState::Aborted, e.to_string(), None)
            }
            Err(e @ DeployError::NeverHealthy { .. }) => {
                series.canary_ended(false);
                self.mark_bad(tag, &e.to_string()).await;
                self.journal
                    .event("canary_aborted", tag, e.to_string())
                    .await;
                (CanaryState::Aborted, e.to_string(), None)
            }
            Err(e @ DeployError::Traffic(_)) => {
                // The balancer could not be told to take traffic back: the record stays
                // unfinished so that the next start of rollwatch aborts what is left.
                let reason = format!("{e}; the store holds the weights last meant, and the next start of rollwatch aborts what is left");
                self.journal
                    .event("canary_failed", tag, reason.clone())
                    .await;
                (CanaryState::Stepping, reason, None)
            }
            Err(e) => {
                let reason = e.to_string();
                self.journal
                    .event("canary_failed", tag, reason.clone())
                    .await;
                (CanaryState::Failed, reason, None)
            }
        }
    }

    async fn mark_bad(&self, tag: &str, why: &str) {
        let target = self.target.id();
        if let Err(e) = self
            .store()
            .mark_bad(target, tag.to_string(), why.to_string())
            .await
        {
            tracing::error!(error = %e, "cannot mark {tag} bad");
        }
    }

    /// The hold is over: the old slot's containers are stopped; the deploy is promoted.
    async fn end_hold(&mut self, why: &str) -> Result<(), String> {
        let Some(r) = self.held().await? else {
            self.set_phase(Phase::Idle);
            return Ok(());
        };
        let site = self.ready_site().await?;
        site.remove(&self.runner, r.slot.other())
            .await
            .map_err(|e| e.to_string())?;
        // Judged at every step and through the hold: known-good, the rollback target next.
        match crate::tag::Tag::parse(&r.tag) {
            Ok(tag) => {
                if let Err(e) = self
                    .store()
                    .record_known_good(self.target.id(), tag, None)
                    .await
                {
                    tracing::error!(error = %e, "cannot record {} as known-good", r.tag);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "{} is not a valid tag; not recorded as known-good", r.tag)
            }
        }
        let reason = format!("{}; {why}: the old slot was stopped", r.reason);
        self.store()
            .canary_state(r.id, CanaryState::Promoted, reason, None)
            .await
            .map_err(|e| e.to_string())?;
        self.set_phase(Phase::Idle);
        self.journal
            .event(
                "canary_hold_ended",
                &r.tag,
                format!("{why}: {} stopped", site.project_of(r.slot.other())),
            )
            .await;
        Ok(())
    }

    /// The deploy on hold, if any.
    async fn held(&self) -> Result<Option<CanaryRecord>, String> {
        let r = self
            .store()
            .unfinished_canary(self.target.id())
            .await
            .map_err(|e| e.to_string())?;
        Ok(r.filter(|r| r.state == CanaryState::Holding))
    }

    async fn manual_when_not_deploying(&mut self, what: Manual) -> Result<String, String> {
        let held = self.held().await?;
        let Some(r) = held else {
            return Err("no canary deploy is in flight or on hold for this target".into());
        };
        match what {
            Manual::Promote => {
                self.end_hold("promoted by hand").await?;
                Ok(format!(
                    "{} promoted: the hold ended and the old slot was stopped",
                    r.tag
                ))
            }
            Manual::Abort(_) => {
                let request = RollbackRequest {
                    tag: None,
                    trigger: crate::store::Trigger::Manual,
                    reason: "aborted by hand during the hold".into(),
                    dry_run: false,
                    failing_tag: Some(r.tag.clone()),
                };
                let rec = self.flip_back(request).await.map_err(|e| e.to_string())?;
                Ok(format!(
                    "{} taken out: all traffic back on {} (rollback #{})",
                    r.tag, rec.to_tag, rec.id
                ))
            }
        }
    }

    /// All traffic back to the held slot in one weight change, the new slot removed; recorded
    /// as a rollback (the incident) and on the canary's record.
    async fn flip_back(
        &mut self,
        request: RollbackRequest,
    ) -> Result<RollbackRecord, RollbackError> {
        super::flip::flip_back(self, request).await
    }

    /// Crash safety: the unfinished deploy on record is finished or aborted.
    async fn recover(&mut self) -> Result<(), StoreError> {
        super::flip::recover(self).await
    }
}

/// For [`super::flip`]: the runner's parts.
impl CanaryRunner {
    pub(super) fn parts(&self) -> (&TargetConfig, &Haproxy, &Arc<dyn CommandRunner>, &Journal) {
        (&self.target, &self.driver, &self.runner, &self.journal)
    }

    pub(super) fn prober(&self) -> &Prober {
        &self.prober
    }

    pub(super) async fn slot_site(&self) -> Result<SlotSite, String> {
        self.ready_site().await
    }

    pub(super) fn deployer_for<'a>(&'a self, site: &'a SlotSite) -> CanaryDeploy<'a, Haproxy> {
        self.deployer(site, &self.driver)
    }

    pub(super) fn enter(&self, phase: Phase) {
        self.set_phase(phase);
    }
}
