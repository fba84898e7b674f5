//! `rollwatch run`: wires the store, one watcher per target, one Docker event follower per
//! endpoint and the API server together, resumes rollbacks a crash left unfinished, and stops
//! everything on one cancellation token (Ctrl-C, SIGTERM, or the demo finishing).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::canary::handle::CanaryHandle;
use crate::canary::record::Journal;
use crate::canary::runner::CanaryRunner;
use crate::clock::steady_ms;
use crate::config::{Config, TargetConfig};
use crate::detect::{follow_events, Subscriber};
use crate::engine::EngineView;
use crate::lease::{Lease, LeaseTiming, OnTakeover, SoleInstance, StoreLease};
use crate::probe::Prober;
use crate::registry::RegistryClient;
use crate::rollback::{RollbackError, Rollbacker};
use crate::store::{EventRecord, RollbackState, Store, StoreError, StoreLocation};
use crate::target::TargetId;
use crate::telemetry::LeaseSeries;
use crate::telemetry::Metrics;
use crate::verdict::{decide, Input, RollbackEnd, TargetState};
use crate::watch::{Shared, StatusBoard, Watcher};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot build an HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Lock(#[from] crate::lease::LockError),
    #[error("cannot listen on {addr}: {source} (set controller.listen to a free address)")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Handles a caller (CLI, demo, tests) keeps while the controller runs.
pub struct Running {
    pub events: broadcast::Sender<EventRecord>,
    pub board: StatusBoard,
    pub addr: std::net::SocketAddr,
    pub done: tokio::task::JoinHandle<()>,
}

/// Starts the controller; returns once the API listens, before anything else: unfinished
/// rollbacks are resumed and watchers started in the background, so status and `/metrics` answer
/// (and a SIGTERM is honoured) even while a resume waits on a slow host. Everything stops when
/// `shutdown` fires.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, DaemonError> {
    // First: a second controller on this store must change nothing, not even the store.
    // The file lock guards an SQLite store; instances sharing PostgreSQL elect a leader by lease.
    let lock = match &config.controller.store {
        StoreLocation::Sqlite(path) => Some(crate::lease::StoreLock::acquire(path)?),
        StoreLocation::Postgres(_) => None,
    };
    crate::rollback::warn_project_mismatches(&config);
    for w in crate::config::watch_warnings(&config.targets) {
        tracing::warn!("{w}");
    }
    let store =
        Store::connect(&config.controller.store, config.controller.store_password()).await?;
    let (metrics, store_lease) = leadership(&config);
    let lease: Arc<dyn Lease> = match &store_lease {
        Some(l) => l.clone(),
        None => Arc::new(SoleInstance),
    };
    let store = store.gated_by(lease.clone());
    let prober = Prober::new()?;
    let rollbacker = Arc::new(
        Rollbacker::new(
            store.clone(),
            RegistryClient::new(Duration::from_secs(10))?,
            prober.clone(),
            config.fallback_tags.clone(),
        )
        .with_lease(lease.clone(), metrics.lease.clone()),
    );
    let (events, _) = broadcast::channel(1024);
    let board = StatusBoard::default();
    let (writer, writer_task) = crate::store::StoreWriter::start(store.clone(), shutdown.clone());
    let (canary_runners, canaries) = canary_runners(&config, &store, &prober, &events, &metrics);
    let shared = Shared {
        store: store.clone(),
        writer,
        rollbacker: rollbacker.clone(),
        prober: prober.clone(),
        board: board.clone(),
        events: events.clone(),
        metrics: metrics.clone(),
        webhook: config.controller.webhook_url.clone(),
        lease: lease.clone(),
        canaries: canaries.clone(),
    };

    let mut states = HashMap::new();
    for t in &config.targets {
        let control = store.control(t.id()).await?;
        states.insert(t.id(), TargetState::restored(control));
    }

    // One shared container view per engine, listed at most once per the shortest watch
    // interval of its targets.
    let mut shortest: HashMap<String, (crate::docker::DockerEndpoint, Duration)> = HashMap::new();
    for t in &config.targets {
        let e = shortest
            .entry(t.docker.to_string())
            .or_insert_with(|| (t.docker.clone(), t.watch.interval));
        e.1 = e.1.min(t.watch.interval);
    }
    let views: HashMap<String, Arc<EngineView>> = shortest
        .into_iter()
        .map(|(key, (endpoint, interval))| (key, EngineView::new(endpoint, interval)))
        .collect();
    let mut commands = HashMap::new();
    let mut watchers = Vec::new();
    let mut subscribers: HashMap<String, (crate::docker::DockerEndpoint, Vec<Subscriber>)> =
        HashMap::new();
    for t in &config.targets {
        let (wake_tx, wake_rx) = mpsc::channel(64);
        let (cmd_tx, cmd_rx) = mpsc::channel(crate::watch::COMMAND_QUEUE);
        commands.insert(t.id(), cmd_tx);
        subscribers
            .entry(t.docker.to_string())
            .or_insert_with(|| (t.docker.clone(), Vec::new()))
            .1
            .push(Subscriber {
                target: t.id(),
                selector: t.selector.clone(),
                wake: wake_tx,
            });
        watchers.push((t.clone(), wake_rx, cmd_rx));
    }

    let token = std::env::var(&config.controller.api_token_env)
        .ok()
        .filter(|t| !t.is_empty());
    if token.is_none() {
        tracing::warn!(variable = %config.controller.api_token_env, "no API token set: mutating API endpoints will answer 401");
    }
    if reads_exposed(
        config.controller.listen,
        config.controller.api_reads_need_token,
    ) {
        tracing::warn!(
            listen = %config.controller.listen,
            "the API listens beyond loopback and its reads need no token: anyone who reaches it reads target state, rollback records, command output and container logs; set controller.api_reads_need_token = true, and put the API behind a TLS reverse proxy (see the README)"
        );
    }
    let commands = Arc::new(commands);
    let api_state = ApiState {
        board: board.clone(),
        store: store.clone(),
        commands: commands.clone(),
        metrics: metrics.clone(),
        alert_window_ms: config.controller.alert_window.as_millis() as i64,
        token: token.as_deref().map(api::TokenDigest::of),
        reads_need_token: config.controller.api_reads_need_token,
        canaries,
        lease,
    };
    let listener =
        crate::server::bind(config.controller.listen).map_err(|source| DaemonError::Listen {
            addr: config.controller.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| DaemonError::Listen {
            addr: config.controller.listen,
            source,
        })?;
    tracing::info!(%addr, targets = config.targets.len(), "rollwatch controller running");
    let limits = crate::server::Limits::for_descriptors(crate::server::raise_descriptor_limit());
    let api = tokio::spawn(crate::server::serve(
        listener,
        api::router(api_state.clone()).merge(crate::ui::router(
            api_state,
            events.clone(),
            shutdown.clone(),
        )),
        limits,
        shutdown.clone(),
    ));

    let config = Arc::new(config);
    let mut tasks = vec![api, writer_task];
    if let Some(l) = store_lease {
        // Several instances: what earlier leaders left unfinished is resumed by whoever takes
        // the lease, each time it changes hands; the watchers start at once and follow.
        if config.controller.advertise_url.is_none() {
            l.set_address(format!("http://{addr}"));
        }
        let hook = takeover(
            config.clone(),
            store.clone(),
            rollbacker.clone(),
            commands,
            shutdown.clone(),
        );
        // Its own connection: renewals never queue behind a slow store call of a watcher or
        // a reader (the store's calls share one connection), which could lapse the lease.
        let lease_store =
            Store::connect(&config.controller.store, config.controller.store_password()).await?;
        tasks.push(tokio::spawn(l.run(
            Arc::new(lease_store),
            hook,
            shutdown.clone(),
        )));
    }
    let done = tokio::spawn(async move {
        if matches!(config.controller.store, StoreLocation::Sqlite(_)) {
            let resumed = tokio::select! {
                r = resume_unfinished(&config, &store, &rollbacker, &mut states) => r,
                _ = shutdown.cancelled() => Ok(()),
            };
            if let Err(e) = resumed {
                tracing::error!(error = %e, "cannot resume unfinished rollbacks; the store is not usable");
                shutdown.cancel();
            }
        }
        if !shutdown.is_cancelled() {
            for runner in canary_runners {
                tasks.push(tokio::spawn(runner.run(shutdown.clone())));
            }
            for (t, wakes, commands) in watchers {
                let initial = states.remove(&t.id()).unwrap_or_default();
                let dry_run = config.is_dry_run(&t);
                let view = views[&t.docker.to_string()].clone();
                tasks.push(tokio::spawn(supervise(
                    t,
                    dry_run,
                    initial,
                    (shared.clone(), view),
                    wakes,
                    commands,
                    shutdown.clone(),
                )));
            }
            for (_, (endpoint, subs)) in subscribers {
                let view = views[&endpoint.to_string()].clone();
                tasks.push(tokio::spawn(follow_events(
                    endpoint,
                    view,
                    subs,
                    shutdown.clone(),
                )));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        // Held until every task ended: the next controller on this store starts after.
        drop(lock);
    });
    Ok(Running {
        events,
        board,
        addr,
        done,
    })
}

/// One runner per canary target, with the handles the API and the watchers reach it by.
fn canary_runners(
    config: &Config,
    store: &Store,
    prober: &Prober,
    events: &broadcast::Sender<EventRecord>,
    metrics: &Arc<Metrics>,
) -> (Vec<CanaryRunner>, Arc<HashMap<TargetId, CanaryHandle>>) {
    let mut runners = Vec::new();
    let mut handles = HashMap::new();
    for t in &config.targets {
        let journal = Journal {
            store: store.clone(),
            events: events.clone(),
            series: metrics.target(&t.id()),
            target: t.id(),
        };
        if let Some((runner, handle)) = CanaryRunner::new(t, prober.clone(), journal) {
            runners.push(runner);
            handles.insert(t.id(), handle);
        }
    }
    (runners, Arc::new(handles))
}

/// Whether anyone beyond this host may read target state, rollback records, command output and
/// container logs without a token.
fn reads_exposed(listen: std::net::SocketAddr, reads_need_token: bool) -> bool {
    !listen.ip().is_loopback() && !reads_need_token
}

/// Runs a target's watcher and starts a fresh one if it panics: one target's bug must not end
/// the watch on it silently. The panic is logged and counted
/// (`rollwatch_watcher_restarts_total`); the new watcher starts from the stored guard rails.
async fn supervise(
    target: TargetConfig,
    dry_run: bool,
    initial: TargetState,
    (shared, view): (Shared, Arc<EngineView>),
    mut wakes: mpsc::Receiver<crate::detect::Wake>,
    mut commands: mpsc::Receiver<crate::watch::Command>,
    shutdown: CancellationToken,
) {
    let id = target.id();
    let mut state = Some(initial);
    loop {
        let initial = match state.take() {
            Some(s) => s,
            None => match shared.store.control(id.clone()).await {
                Ok(c) => TargetState::restored(c),
                Err(e) => {
                    tracing::error!(target_id = %id, error = %e, "cannot read the guard rails; watcher not restarted");
                    return;
                }
            },
        };
        let watcher = Watcher::new(
            target.clone(),
            dry_run,
            initial,
            shared.clone(),
            view.clone(),
        );
        // Boxed: inline, this task would hold the watcher twice (before and inside `run`).
        let run = Box::pin(watcher.run(&mut wakes, &mut commands, shutdown.clone()));
        let Err(panic) = AssertUnwindSafe(run).catch_unwind().await else {
            return;
        };
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        tracing::error!(target_id = %id, panic = %what, "watcher task panicked; restarting it in 1 s");
        shared.metrics.target(&id).restarted();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Crash safety: every rollback whose intent is on record without an outcome is finished now,
/// before any watcher starts, so a restart never starts a second rollback for the same failure.
/// Each is finished exactly once: a resume that fails is recorded as failed (and halts the
/// target), never tried again at the next start.
async fn resume_unfinished(
    config: &Config,
    store: &Store,
    rollbacker: &Rollbacker,
    states: &mut HashMap<TargetId, TargetState>,
) -> Result<(), StoreError> {
    for record in store.unfinished_rollbacks().await? {
        let Some(target) = config.target(&record.target) else {
            tracing::warn!(id = record.id, target_id = %record.target, "unfinished rollback for a target no longer configured; left as is");
            continue;
        };
        if target.strategy == crate::config::Strategy::Canary {
            // A flip back by weight: the target's canary runner finishes it at its start.
            continue;
        }
        tracing::warn!(id = record.id, target_id = %record.target, to = %record.to_tag, dry_run = record.dry_run, "finishing a rollback interrupted by a restart");
        let result = rollbacker
            .resume(target, config.is_dry_run(target), &record, |_| {})
            .await;
        let result = match result {
            // Another instance leads now: it resumes the rest.
            Err(e @ (RollbackError::NotLeader { .. } | RollbackError::Fenced { .. })) => {
                tracing::warn!(id = record.id, error = %e, "not resuming: this instance lost the lease");
                return Ok(());
            }
            Err(RollbackError::Superseded { id, why, .. }) => {
                tracing::warn!(id, %why, "rollback left behind by a newer deploy");
                store
                    .record_event(
                        record.target.clone(),
                        "rollback_superseded",
                        Some(record.to_tag.clone()),
                        why,
                    )
                    .await?;
                continue;
            }
            other => other,
        };
        let (end, kind, message) = match result {
            Ok(done) if done.state == RollbackState::DryRun => (
                RollbackEnd::DryRun,
                "would_roll_back",
                format!(
                    "dry run #{} finished after a restart; nothing was executed",
                    done.id
                ),
            ),
            Ok(done) => (
                RollbackEnd::Succeeded {
                    to_tag: done.to_tag.clone(),
                },
                "rollback",
                format!(
                    "resumed rollback #{} completed and validated after a restart",
                    done.id
                ),
            ),
            Err(e) => {
                tracing::error!(id = record.id, error = %e, "ROLLBACK FAILED while resuming");
                let error = e.to_string();
                let end = RollbackEnd::Failed {
                    tag: record.to_tag.clone(),
                    error: error.clone(),
                };
                (end, "rollback_failed", error)
            }
        };
        if !states.contains_key(&record.target) {
            let control = store.control(record.target.clone()).await?;
            states.insert(record.target.clone(), TargetState::restored(control));
        }
        let state = states.entry(record.target.clone()).or_default();
        let input = Input::RollbackEnded {
            now_ms: steady_ms(),
            from_tag: record.from_tag.clone().unwrap_or_default(),
            reason: record.reason.clone(),
            trigger: record.trigger,
            end,
        };
        let (next, _) = decide(state, &input, &target.watch.policy());
        *state = next;
        store
            .record_event_with_control(
                record.target.clone(),
                kind,
                Some(record.to_tag.clone()),
                message,
                Some(state.control()),
            )
            .await?;
    }
    Ok(())
}

/// The metrics and, on a PostgreSQL store, the lease this instance competes for.
fn leadership(config: &Config) -> (Arc<Metrics>, Option<Arc<StoreLease>>) {
    let StoreLocation::Postgres(_) = &config.controller.store else {
        return (Arc::new(Metrics::new()), None);
    };
    let metrics = Arc::new(Metrics::with_lease(LeaseSeries::new("postgres", false)));
    let c = &config.controller;
    let address = c
        .advertise_url
        .as_ref()
        .map_or_else(|| format!("http://{}", c.listen), |u| u.to_string());
    // The pid and a random suffix: two processes given one instance name (a shared config,
    // pid 1 in two containers) never pass for one holder and both lead.
    let holder = format!(
        "{}:{}.{:04x}",
        c.instance_name(),
        std::process::id(),
        rand::random::<u16>()
    );
    let lease = StoreLease::new(
        holder,
        address,
        LeaseTiming::from_ttl(c.lease_ttl),
        metrics.lease.clone(),
    );
    (metrics, Some(lease))
}

/// What a new leader does first: finish every rollback an earlier leader left as an intent,
/// under the new epoch (each is claimed, so the old leader, if alive, is fenced off), retried
/// every second while the store fails; then every watcher rereads the guard rails the previous
/// leader kept (a pause ordered through it, a halt, the cooldown).
fn takeover(
    config: Arc<Config>,
    store: Store,
    rollbacker: Arc<Rollbacker>,
    commands: Arc<HashMap<TargetId, mpsc::Sender<crate::watch::Command>>>,
    shutdown: CancellationToken,
) -> OnTakeover {
    Box::new(move |fence| {
        let (config, store, rollbacker, commands, shutdown) = (
            config.clone(),
            store.clone(),
            rollbacker.clone(),
            commands.clone(),
            shutdown.clone(),
        );
        Box::pin(async move {
            loop {
                let mut states = HashMap::new();
                let resumed = tokio::select! {
                    r = resume_unfinished(&config, &store, &rollbacker, &mut states) => r,
                    _ = shutdown.cancelled() => return,
                };
                match resumed {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::error!(epoch = fence.epoch, error = %e, "cannot resume unfinished rollbacks after taking the lease; retrying in 1 s")
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            for (id, tx) in commands.iter() {
                if !reload(tx).await {
                    tracing::warn!(target_id = %id, "the watcher did not reread its guard rails within 10 s; it acts on what it holds");
                }
            }
        })
    })
}

/// Asks one watcher to reread its guard rails; whether it did within 10 s.
async fn reload(tx: &mpsc::Sender<crate::watch::Command>) -> bool {
    let (done, reloaded) = tokio::sync::oneshot::channel();
    let asked = async {
        tx.send(crate::watch::Command::Reload { done }).await.ok()?;
        reloaded.await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(10), asked).await,
        Ok(Some(()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_reads_beyond_loopback_are_flagged() {
        let at = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert!(reads_exposed(at("0.0.0.0:9860"), false));
        assert!(reads_exposed(at("[::]:9860"), false));
        assert!(reads_exposed(at("10.1.2.3:9860"), false));
        assert!(!reads_exposed(at("0.0.0.0:9860"), true));
        assert!(!reads_exposed(at("127.0.0.1:9860"), false));
        assert!(!reads_exposed(at("127.8.9.10:9860"), false));
        assert!(!reads_exposed(at("[::1]:9860"), false));
    }
}
