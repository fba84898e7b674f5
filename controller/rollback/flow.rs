//! One rollback from request to record: pick the tag, refuse what cannot work before touching
//! anything, write the intent, run the executor, validate `/health`, store the outcome. Manual
//! rollbacks (CLI, API) and automatic ones (watcher, alerts) all come through [`Rollbacker`].

use std::sync::Arc;
use std::time::Duration;

use super::fence::{while_held, RecordFence};
use super::{
    check_sites, compose_executor, compose_projects_of, step_start, DockerApiExecutor, ExecError,
    ExecPlan, ExecReport, Executor, RollbackError,
};
use crate::config::{ExecutorConfig, FallbackTags, TargetConfig};
use crate::docker::{ContainerInfo, DockerClient};
use crate::lease::{Fence, Lease, SoleInstance};
use crate::probe::Prober;
use crate::registry::RegistryClient;
use crate::store::{
    RollbackIntent, RollbackOutcome, RollbackRecord, RollbackState, StepRecord, Store, StoreError,
    Trigger,
};
use crate::tag::Tag;
use crate::target::TargetId;
use crate::telemetry::LeaseSeries;

/// Log lines kept per container in the incident record.
const LOG_LINES: usize = 30;

/// How often `/health` is asked while a rollback is being validated.
const VALIDATION_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct RollbackRequest {
    /// `None`: the newest known-good tag other than the running one, else the env's fallback.
    pub tag: Option<Tag>,
    pub trigger: Trigger,
    pub reason: String,
    pub dry_run: bool,
    /// The tag judged bad, when the watcher knows it (on a target running two tags it is the
    /// newer one); otherwise the running tag is read from Docker.
    pub failing_tag: Option<String>,
}

/// Fault injection for crash-safety tests: with `ROLLWATCH_FAULT_POINT=<name>` the process
/// stops making progress at that point (and waits to be killed), exactly like a crash there.
pub(crate) async fn fault_point(name: &str) {
    if std::env::var("ROLLWATCH_FAULT_POINT").is_ok_and(|v| v == name) {
        tracing::error!(point = name, "fault point reached; waiting to be killed");
        std::future::pending::<()>().await;
    }
}

/// Fault injection for the supervisor's test: with `ROLLWATCH_FAULT_POINT=<name>` the first
/// caller in this process panics there, like a bug would.
pub(crate) fn fault_panic_once(name: &str) {
    static FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    // Read once: every watcher passes a fault point every round, and `env::var` takes the
    // environment's lock and allocates.
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("ROLLWATCH_FAULT_POINT").ok());
    if point.as_deref() == Some(name) && !FIRED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        panic!("fault point {name} reached");
    }
}

/// A rollback record and the fence this instance writes it under.
struct Ticket<'a> {
    id: i64,
    target: &'a TargetId,
    fence: &'a Fence,
}

pub struct Rollbacker {
    store: Store,
    registry: RegistryClient,
    prober: Prober,
    fallback: FallbackTags,
    lease: Arc<dyn Lease>,
    lease_series: Option<Arc<LeaseSeries>>,
    /// One rollback per target at a time in this process. A leader whose lease lapsed and came
    /// back (a new epoch) resumes its own unfinished intent; the lock makes that resume wait
    /// for the old attempt, which the fence stops at its next step, instead of running beside a
    /// command still in flight.
    busy: std::sync::Mutex<std::collections::HashMap<TargetId, Arc<tokio::sync::Mutex<()>>>>,
}

/// The tag a container runs, when its image reference is `<repository>:<tag>`.
/// With several containers, the newest running one's tag (the latest deploy), as the watcher
/// sees it.
pub fn running_tag_of<'a, I>(containers: I, repository: &str) -> Option<String>
where
    I: IntoIterator<Item = &'a ContainerInfo> + Clone,
{
    let tag_of = |c: &ContainerInfo| {
        let (repo, tag) = c.image_ref.rsplit_once(':')?;
        (repo == repository && !tag.contains('/')).then(|| tag.to_string())
    };
    let newest = |running: bool| {
        containers
            .clone()
            .into_iter()
            .filter(|c| !running || c.state == "running")
            .filter_map(|c| tag_of(c).map(|t| (c.created, t)))
            .max_by_key(|(created, _)| *created)
            .map(|(_, t)| t)
    };
    newest(true).or_else(|| newest(false))
}

/// What the executor needs to put `tag` on the target, with the facts of the containers it
/// replaces: their compose projects (for `-p`) and the tag they ran (for a restore).
fn plan_for(target: &TargetConfig, tag: Tag, containers: &[ContainerInfo]) -> ExecPlan {
    let repository = target.executor.image_repository(&target.role);
    ExecPlan {
        previous_tag: running_tag_of(containers, &repository).and_then(|t| Tag::parse(&t).ok()),
        compose_projects: compose_projects_of(containers),
        selector_project: target.selector.compose_project.clone(),
        ..ExecPlan::new(target.id(), tag, repository)
    }
}

impl Rollbacker {
    pub fn new(
        store: Store,
        registry: RegistryClient,
        prober: Prober,
        fallback: FallbackTags,
    ) -> Rollbacker {
        Rollbacker {
            store,
            registry,
            prober,
            fallback,
            lease: Arc::new(SoleInstance),
            lease_series: None,
            busy: Default::default(),
        }
    }

    /// Waits until no other rollback of `target` runs in this process; held while it lives.
    async fn exclusive(&self, target: &TargetId) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(target.clone())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Acts only under `lease`, each step fenced by its epoch (several instances on one store).
    pub fn with_lease(mut self, lease: Arc<dyn Lease>, series: Arc<LeaseSeries>) -> Rollbacker {
        self.lease = lease;
        self.lease_series = Some(series);
        self
    }

    /// The fence a rollback starting now acts under, or why there is none.
    fn not_leader(&self, target: &TargetId) -> RollbackError {
        RollbackError::NotLeader {
            target: target.clone(),
            why: format!("not the leader ({})", self.lease.describe()),
        }
    }

    fn report(
        &self,
        rollback_id: i64,
        fence: &Fence,
        on_step: impl Fn(&StepRecord) + Send + Sync + 'static,
    ) -> ExecReport {
        ExecReport::new(on_step).with_fence(Arc::new(self.record_fence(rollback_id, fence)))
    }

    fn record_fence(&self, rollback_id: i64, fence: &Fence) -> RecordFence {
        RecordFence::new(
            self.store.clone(),
            rollback_id,
            fence.clone(),
            self.lease.clone(),
            self.lease_series.clone(),
        )
    }

    /// Rolls `target` back and returns the stored record. Refusals (unknown tag, unreachable
    /// registry, Docker down) happen before the intent is written and change nothing.
    pub async fn rollback(
        &self,
        target: &TargetConfig,
        request: RollbackRequest,
        on_step: impl Fn(&StepRecord) + Send + Sync + 'static,
    ) -> Result<RollbackRecord, RollbackError> {
        let id = target.id();
        let _one_at_a_time = self.exclusive(&id).await;
        let docker = DockerClient::connect(&target.docker).await?;
        let repository = target.executor.image_repository(&target.role);
        let containers = docker.containers(&target.selector, true).await?;
        let running = running_tag_of(&containers, &repository);
        if let (Some(failing), Some(running)) = (&request.failing_tag, &running) {
            if failing != running {
                return Err(RollbackError::Gone {
                    target: id,
                    failing: failing.clone(),
                    running: running.clone(),
                });
            }
        }
        let from_tag = request.failing_tag.clone().or(running);
        let from_image = containers.first().map(|c| c.image_id.clone());

        let explicit = request.tag.is_some();
        let tag = match request.tag {
            Some(t) => t,
            None => match self
                .store
                .last_known_good(id.clone(), from_tag.clone())
                .await?
            {
                Some(t) => t,
                None => self.fallback.for_env(id.env).clone(),
            },
        };
        if !explicit && from_tag.as_deref() == Some(tag.as_str()) {
            return Err(RollbackError::AlreadyRunning { target: id, tag });
        }
        let plan = plan_for(target, tag.clone(), &containers);
        if let ExecutorConfig::Compose(c) = &target.executor {
            check_sites(c, &plan)?;
        }
        let image = plan.image();
        if docker.image_id(&image).await?.is_none() {
            let registry = crate::registry::split_repository(&repository)
                .map(|(h, _)| h.to_string())
                .unwrap_or_default();
            match self.registry.tag_exists(&repository, tag.as_str()).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(RollbackError::UnknownTag {
                        target: id,
                        tag,
                        image,
                        registry,
                    })
                }
                Err(source) => {
                    return Err(RollbackError::Registry {
                        target: id,
                        tag,
                        image,
                        source,
                    })
                }
            }
        }

        // A new rollback needs the lease *and* the watchers' turn: during a takeover only its
        // resumes act (they hold the fence before the watchers may).
        let fence = self
            .lease
            .is_leader()
            .then(|| self.lease.fence())
            .flatten()
            .ok_or_else(|| self.not_leader(&id))?;
        let rollback_id = self
            .store
            .begin_rollback(RollbackIntent {
                target: id.clone(),
                trigger: request.trigger,
                reason: request.reason.clone(),
                from_tag,
                from_image,
                to_tag: tag.clone(),
                dry_run: request.dry_run,
                fence: fence.clone(),
            })
            .await
            .map_err(|e| self.refused_by_store(&id, e))?;
        fault_point("after-intent").await;
        // Evidence for the incident record: what the containers said before they were replaced.
        let mut logs = String::new();
        for c in &containers {
            if let Ok(tail) = docker.logs_tail(&c.id, LOG_LINES).await {
                logs.push_str(&format!(
                    "==> {} ({}, {}) <==\n{tail}",
                    c.name, c.image_ref, c.state
                ));
            }
        }
        if !logs.is_empty() {
            // Evidence, not a step: a store blip here must not leave the intent behind.
            if let Err(e) = self.store.set_rollback_logs(rollback_id, logs).await {
                tracing::warn!(rollback = rollback_id, error = %e, "cannot store the containers' last log lines");
            }
        }
        let mut report = self.report(rollback_id, &fence, on_step);
        if request.dry_run {
            report
                .output
                .push_str(&format!("dry run: would roll {id} back to {image}\n"));
            let ticket = Ticket {
                id: rollback_id,
                target: &id,
                fence: &fence,
            };
            return self.finish_dry_run(ticket, report).await;
        }
        self.execute_recorded(rollback_id, &fence, target, &docker, &plan, report)
            .await
    }

    /// Finishes a rollback whose intent is on record but whose outcome is not (the controller
    /// died mid-way). A dry run's intent, or any intent of a target that is in dry run now, is
    /// finished as a dry run without acting: the config of today decides, not that of the crash.
    /// If the target already runs the intended tag and answers ok, it is only verified;
    /// otherwise the executor runs again — both executors are idempotent. Whatever goes wrong
    /// here finishes the record as failed, so no start-up retries the same intent again.
    pub async fn resume(
        &self,
        target: &TargetConfig,
        dry_run_now: bool,
        record: &RollbackRecord,
        on_step: impl Fn(&StepRecord) + Send + Sync + 'static,
    ) -> Result<RollbackRecord, RollbackError> {
        let _one_at_a_time = self.exclusive(&record.target).await;
        // The record passes to this epoch first: the instance that wrote it, if it still
        // runs, is refused at its next step from here on.
        let fence = self
            .lease
            .fence()
            .ok_or_else(|| self.not_leader(&record.target))?;
        self.store
            .claim_rollback(record.id, fence.clone())
            .await
            .map_err(|e| self.refused_by_store(&record.target, e))?;
        if record.dry_run || dry_run_now {
            let mut report = self.report(record.id, &fence, on_step);
            report.output.push_str(&if record.dry_run {
                format!(
                    "dry run #{} interrupted by a restart; nothing was executed\n",
                    record.id
                )
            } else {
                format!(
                    "rollback #{} not resumed: {} is in dry run now; nothing was executed\n",
                    record.id,
                    target.id()
                )
            });
            let ticket = Ticket {
                id: record.id,
                target: &record.target,
                fence: &fence,
            };
            return self.finish_dry_run(ticket, report).await;
        }
        match self.resume_for_real(target, &fence, record, on_step).await {
            Err(e) if !e.is_recorded() => {
                let outcome = RollbackOutcome {
                    state: RollbackState::Failed,
                    to_digest: None,
                    steps: Vec::new(),
                    output: format!("resuming after a restart failed: {e}\n"),
                    error: Some(format!("not resumed after a restart: {e}")),
                };
                self.store
                    .finish_fenced(record.id, outcome, fence)
                    .await
                    .map_err(|e| self.refused_by_store(&record.target, e))?;
                Err(e)
            }
            other => other,
        }
    }

    async fn resume_for_real(
        &self,
        target: &TargetConfig,
        fence: &Fence,
        record: &RollbackRecord,
        on_step: impl Fn(&StepRecord) + Send + Sync + 'static,
    ) -> Result<RollbackRecord, RollbackError> {
        let docker = DockerClient::connect(&target.docker).await?;
        let tag = Tag::parse(&record.to_tag).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let containers = docker.containers(&target.selector, true).await?;
        let plan = plan_for(target, tag, &containers);
        let mut report = self.report(record.id, fence, on_step);
        report.output.push_str(&format!(
            "resuming rollback #{} after a controller restart or a change of leader (epoch {})\n",
            record.id, fence.epoch
        ));
        // A deploy made after this rollback was ordered is not the version it was meant to
        // undo: rolling it back now would undo something nobody judged.
        if let Some(now) = running_tag_of(&containers, &plan.image_repository) {
            if record.from_tag.as_deref() != Some(now.as_str()) && record.to_tag != now {
                let why = format!(
                    "not resumed: {} now runs {now}, deployed after rollback #{} of {} was ordered; nothing was run",
                    record.target,
                    record.id,
                    record.from_tag.as_deref().unwrap_or("?")
                );
                report.output.push_str(&format!("{why}\n"));
                let ticket = Ticket {
                    id: record.id,
                    target: &record.target,
                    fence,
                };
                self.finish(
                    ticket,
                    RollbackState::Failed,
                    None,
                    report,
                    Some(why.clone()),
                )
                .await?;
                return Err(RollbackError::Superseded {
                    id: record.id,
                    target: record.target.clone(),
                    why,
                });
            }
        }
        let all_on_tag = !containers.is_empty()
            && containers
                .iter()
                .all(|c| c.state == "running" && c.image_ref == plan.image());
        if all_on_tag {
            let (t, ms) = step_start();
            let probe = self
                .prober
                .probe(&target.health.url.0, target.health.timeout)
                .await;
            report.step(
                "verify",
                t,
                ms,
                probe.outcome.is_ok(),
                "already on the intended tag",
            );
            if probe.outcome.is_ok() {
                let digest = docker.image_digest(&plan.image()).await.ok().flatten();
                self.finish(
                    Ticket {
                        id: record.id,
                        target: &record.target,
                        fence,
                    },
                    RollbackState::Succeeded,
                    digest,
                    report,
                    None,
                )
                .await?;
                return self.record(record.id).await;
            }
        }
        self.execute_recorded(record.id, fence, target, &docker, &plan, report)
            .await
    }

    /// Runs the executor for the recorded rollback `rollback_id`, validates, records the outcome.
    async fn execute_recorded(
        &self,
        rollback_id: i64,
        fence: &Fence,
        target: &TargetConfig,
        docker: &DockerClient,
        plan: &ExecPlan,
        mut report: ExecReport,
    ) -> Result<RollbackRecord, RollbackError> {
        let id = target.id();
        let tag = plan.tag.clone();
        let image = plan.image();
        let executor: Box<dyn Executor> = match &target.executor {
            ExecutorConfig::Compose(c) => compose_executor(c),
            ExecutorConfig::Docker(_) => Box::new(DockerApiExecutor::new(
                docker.clone(),
                target.selector.clone(),
            )),
        };
        // A step already past its fence check still runs when the lease runs out (this
        // instance frozen, or cut off from the store): it is stopped then, its processes
        // killed, instead of racing the new leader to its end.
        let watch = self.record_fence(rollback_id, fence);
        let executed = tokio::select! {
            r = executor.execute(plan, &mut report) => r,
            e = watch.lost() => Err(ExecError::Fenced {
                step: "the running step".into(),
                why: format!("this instance's lease ran out while it ran, so it was stopped ({e})"),
            }),
        };
        if let Err(source) = executed {
            if let ExecError::Fenced { step, why } = source {
                return Err(RollbackError::Fenced {
                    id: rollback_id,
                    target: id,
                    why: format!("{step} refused: {why}"),
                });
            }
            self.finish(
                Ticket {
                    id: rollback_id,
                    target: &id,
                    fence,
                },
                RollbackState::Failed,
                None,
                report,
                Some(source.to_string()),
            )
            .await?;
            return Err(RollbackError::Execution {
                id: rollback_id,
                target: id,
                tag,
                source,
            });
        }

        let (t, ms) = step_start();
        let health = &target.health;
        let validated = self
            .prober
            .wait_healthy(
                &health.url.0,
                health.timeout,
                VALIDATION_INTERVAL,
                health.validation_timeout,
            )
            .await;
        report.step(
            "validate",
            t,
            ms,
            validated.is_ok(),
            match &validated {
                Ok(_) => format!("{} answered status=ok", health.url.0),
                Err(f) => format!("{} {f}", health.url.0),
            },
        );
        let digest = docker.image_digest(&image).await.ok().flatten();
        match validated {
            Ok(_) => {
                self.finish(
                    Ticket {
                        id: rollback_id,
                        target: &id,
                        fence,
                    },
                    RollbackState::Succeeded,
                    digest,
                    report,
                    None,
                )
                .await?;
                self.record(rollback_id).await
            }
            Err(failure) => {
                let msg = format!("/health not ok after rollback: {failure}");
                self.finish(
                    Ticket {
                        id: rollback_id,
                        target: &id,
                        fence,
                    },
                    RollbackState::Failed,
                    digest,
                    report,
                    Some(msg),
                )
                .await?;
                Err(RollbackError::Validation {
                    id: rollback_id,
                    target: id,
                    tag,
                    within: health.validation_timeout,
                    failure,
                })
            }
        }
    }

    /// Writes the outcome, if the record is still this epoch's.
    async fn finish(
        &self,
        Ticket { id, target, fence }: Ticket<'_>,
        state: RollbackState,
        to_digest: Option<String>,
        report: ExecReport,
        error: Option<String>,
    ) -> Result<(), RollbackError> {
        let outcome = RollbackOutcome {
            state,
            to_digest,
            steps: report.steps,
            output: report.output,
            error,
        };
        let written = while_held(self.lease.as_ref(), fence, || {
            self.store.finish_fenced(id, outcome.clone(), fence.clone())
        })
        .await;
        match written {
            Ok(()) => Ok(()),
            Err(e @ StoreError::Fenced { .. }) => Err(RollbackError::Fenced {
                id,
                target: target.clone(),
                why: e.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Records a dry run's outcome (nothing was executed) and returns the record.
    async fn finish_dry_run(
        &self,
        ticket: Ticket<'_>,
        report: ExecReport,
    ) -> Result<RollbackRecord, RollbackError> {
        let id = ticket.id;
        self.finish(ticket, RollbackState::DryRun, None, report, None)
            .await?;
        self.record(id).await
    }

    /// A store refusal before anything ran: a stale fence means another instance leads.
    fn refused_by_store(&self, target: &TargetId, e: StoreError) -> RollbackError {
        match e {
            StoreError::Fenced { .. } => RollbackError::NotLeader {
                target: target.clone(),
                why: e.to_string(),
            },
            e => RollbackError::Store(e),
        }
    }

    async fn record(&self, id: i64) -> Result<RollbackRecord, RollbackError> {
        self.store.rollback(id).await?.ok_or_else(|| {
            RollbackError::Store(StoreError::Corrupt(format!("rollback #{id} vanished")))
        })
    }
}
