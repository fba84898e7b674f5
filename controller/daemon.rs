//! `rollwatch run`: wires the store, one watcher per target, one Docker event follower per
//! endpoint and the API server together, resumes rollbacks a crash left unfinished, and stops
//! everything on one cancellation token (Ctrl-C, SIGTERM, or the demo finishing).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::detect::{follow_events, Subscriber};
use crate::probe::Prober;
use crate::registry::RegistryClient;
use crate::rollback::Rollbacker;
use crate::store::{EventRecord, RollbackState, Store, StoreError};
use crate::target::TargetId;
use crate::telemetry::Metrics;
use crate::verdict::{Phase, TargetState};
use crate::watch::{Shared, StatusBoard, Watcher};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot build an HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
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

/// How each target starts: halted or paused as the record says, otherwise unknown (so whatever
/// runs is put on probation), or stable on the tag a resumed rollback just validated.
async fn initial_state(store: &Store, id: &TargetId) -> Result<TargetState, StoreError> {
    let mut state = TargetState::new();
    for e in store.events(Some(id.clone()), None, 200).await? {
        match e.kind.as_str() {
            "resumed" => break,
            "paused" => state.paused = true,
            "rollback_failed" if !matches!(state.phase, Phase::RollbackFailed { .. }) => {
                state.phase = Phase::RollbackFailed {
                    tag: e.tag.unwrap_or_default(),
                    reason: e.message,
                };
                break;
            }
            _ => {}
        }
    }
    Ok(state)
}

/// Starts the controller; returns once the API listens. Everything stops when `shutdown` fires.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, DaemonError> {
    crate::rollback::warn_project_mismatches(&config);
    let store = Store::open(&config.controller.store)?;
    let prober = Prober::new()?;
    let rollbacker = Arc::new(Rollbacker::new(
        store.clone(),
        RegistryClient::new(Duration::from_secs(10))?,
        prober.clone(),
        config.fallback_tags.clone(),
    ));
    let (events, _) = broadcast::channel(1024);
    let board: StatusBoard = Arc::new(RwLock::new(BTreeMap::new()));
    let metrics = Arc::new(Metrics::new()?);
    let shared = Shared {
        store: store.clone(),
        rollbacker: rollbacker.clone(),
        prober: prober.clone(),
        board: board.clone(),
        events: events.clone(),
        metrics: metrics.clone(),
        webhook: config.controller.webhook_url.clone(),
        lease: Arc::new(crate::lease::SoleInstance),
    };

    let mut states = HashMap::new();
    for t in &config.targets {
        states.insert(t.id(), initial_state(&store, &t.id()).await?);
    }
    resume_unfinished(&config, &store, &rollbacker, &mut states).await?;

    let mut commands = HashMap::new();
    let mut subscribers: HashMap<String, (crate::docker::DockerEndpoint, Vec<Subscriber>)> =
        HashMap::new();
    let mut tasks = Vec::new();
    for t in &config.targets {
        let (wake_tx, wake_rx) = mpsc::channel(64);
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
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
        let watcher = Watcher::new(
            t.clone(),
            config.is_dry_run(t),
            states.remove(&t.id()).unwrap_or_default(),
            shared.clone(),
        );
        tasks.push(tokio::spawn(watcher.run(wake_rx, cmd_rx, shutdown.clone())));
    }
    for (_, (endpoint, subs)) in subscribers {
        tasks.push(tokio::spawn(follow_events(
            endpoint,
            subs,
            shutdown.clone(),
        )));
    }

    let token = std::env::var(&config.controller.api_token_env)
        .ok()
        .filter(|t| !t.is_empty());
    if token.is_none() {
        tracing::warn!(variable = %config.controller.api_token_env, "no API token set: mutating API endpoints will answer 401");
    }
    let api_state = ApiState {
        board: board.clone(),
        store: store.clone(),
        commands: Arc::new(commands),
        metrics: metrics.clone(),
        alert_window_ms: config.controller.alert_window.as_millis() as i64,
        token,
        reads_need_token: config.controller.api_reads_need_token,
    };
    let listener = tokio::net::TcpListener::bind(config.controller.listen)
        .await
        .map_err(|source| DaemonError::Listen {
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
    let server_shutdown = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let app = api::router(api_state);
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { server_shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "API server stopped");
        }
    }));
    let done = tokio::spawn(async move {
        for t in tasks {
            let _ = t.await;
        }
    });
    Ok(Running {
        events,
        board,
        addr,
        done,
    })
}

/// Crash safety: every rollback whose intent is on record without an outcome is finished now,
/// before any watcher starts, so a restart never starts a second rollback for the same failure.
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
        tracing::warn!(id = record.id, target_id = %record.target, to = %record.to_tag, "resuming a rollback interrupted by a restart");
        let state = states.entry(record.target.clone()).or_default();
        match rollbacker.resume(target, &record, |_| {}).await {
            Ok(done) if done.state == RollbackState::Succeeded => {
                state.phase = Phase::Stable {
                    tag: done.to_tag.clone(),
                };
                state.last_rollback_ms = done.finished_at_ms;
                store
                    .record_event(
                        record.target.clone(),
                        "rollback",
                        Some(done.to_tag.clone()),
                        format!(
                            "resumed rollback #{} completed and validated after a restart",
                            done.id
                        ),
                    )
                    .await?;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(id = record.id, error = %e, "ROLLBACK FAILED while resuming");
                state.phase = Phase::RollbackFailed {
                    tag: record.to_tag.clone(),
                    reason: e.to_string(),
                };
                store
                    .record_event(
                        record.target.clone(),
                        "rollback_failed",
                        Some(record.to_tag.clone()),
                        e.to_string(),
                    )
                    .await?;
            }
        }
    }
    Ok(())
}
