//! The `rollwatch` command line: arguments parsed once into typed values, one function per
//! subcommand, and exit codes scripts can rely on — 0 done, 1 an action ran and failed,
//! 2 refused (bad input or config, nothing was changed).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[macro_use]
mod out;
mod canary;
mod ci;
mod controller;
mod demo;
mod init;
mod replay;
mod simulate;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, ExecutorConfig, DEFAULT_CONFIG_FILE};
use crate::probe::Prober;
use crate::registry::RegistryClient;
use crate::rollback::{RollbackError, RollbackRequest, Rollbacker};
use crate::store::{RollbackRecord, StepRecord, Store, Trigger};
use crate::tag::Tag;
use crate::target::{Env, TargetId};
use crate::telemetry::{init_logging, LogFormat};

#[derive(Parser, Debug)]
#[command(
    name = "rollwatch",
    version = crate::build_info::LONG_VERSION,
    about = "Post-deploy health watch and automatic rollback for docker compose deployments"
)]
struct Cli {
    /// Configuration file [default: rollwatch.toml]
    #[arg(long, short, global = true, env = "ROLLWATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Watch every configured target and roll back regressed deploys (the controller).
    Run,
    /// The live demo on an embedded config: a good deploy, a bad one, an automatic rollback.
    Demo {
        /// Repeat the scenario and print detection and recovery quantiles (a benchmark).
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// With --runs: append the result table to this file (docs/BENCHMARKS.md).
        #[arg(long)]
        bench_file: Option<PathBuf>,
        /// Keep the controller and its status page running this long after the rollback
        /// (e.g. `5m`), to look around; Ctrl-C ends it sooner.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        serve_for: std::time::Duration,
    },
    /// Targets as the running controller sees them: env, role, running tag, known-good tag, state.
    Status,
    /// Stop automatic rollbacks of <env> <role> (through the running controller's API).
    Pause { env: String, role: String },
    /// Resume automatic rollbacks of <env> <role>; also clears a rollback_failed halt.
    Resume { env: String, role: String },
    /// Incident records of rollbacks: reason and evidence, tags, timings, the failed containers' logs.
    Incidents {
        env: Option<String>,
        role: Option<String>,
        #[arg(long, default_value_t = 5)]
        limit: usize,
    },
    /// Simulate healthy and regressed deploys (seeded) and compare rollwatch's error-ratio test
    /// with a Flagger-style threshold and a Kayenta-style Mann-Whitney judge.
    Simulate(simulate::Args),
    /// Tags to roll back to: known-good history (with pipeline and commit) and the registry's tags.
    Tags { env: String, role: String },
    /// For CI smoke jobs: wait for rollwatch's verdict; exit 0 promoted, 1 regressed or rolled
    /// back, 3 no verdict within --timeout.
    Wait {
        env: String,
        role: String,
        /// The deployed tag (default: whatever deploy rollwatch sees next).
        #[arg(long)]
        tag: Option<String>,
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Replay a recorded trace of counters through the production metric judgement: what rollwatch
    /// would have decided, round by round. Exit 0 promoted, 1 regressed, 3 inconclusive, 2 bad input.
    Replay(replay::ReplayArgs),
    /// Validate the configuration and print the targets it defines.
    CheckConfig {
        /// Also check every target for real, read-only: its containers, health URL, metrics,
        /// registry, compose directory and project, ssh host. Exit 0 only when all pass.
        #[arg(long)]
        probe: bool,
    },
    /// Propose a config from the running containers of a Docker host: one target per compose
    /// service or docker-run container, health endpoints probed. Asks per target on a terminal.
    Init(init::Args),
    /// Roll <env> <role> back to <tag> now, then wait for /health to answer status=ok.
    ///
    /// Without <tag>: the newest known-good tag other than the running one, else the env's
    /// fallback branch (develop for staging, main for production). The drop-in for
    /// `deployment/scripts/rollback.sh <env> <role> <tag>`.
    Rollback {
        /// staging or production
        env: String,
        /// backend, frontend, ...
        role: String,
        /// v1.2.3, a branch slug, or a 40-hex commit SHA
        tag: Option<String>,
        /// Why, for the record.
        #[arg(long, default_value = "manual rollback from the command line")]
        reason: String,
        /// Check everything and record "would roll back", but change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Deploy <tag> to a canary target: the new version starts beside the live one and takes
    /// traffic step by step while judged against it. What CI calls instead of `up -d`.
    /// Exit 0 promoted, 1 aborted or failed, 2 refused (nothing changed), 3 still running.
    Deploy {
        env: String,
        role: String,
        tag: String,
        /// The 40-hex commit SHA the tag was built from, for the record.
        #[arg(long)]
        commit_sha: Option<String>,
        /// The CI pipeline's URL, for the record.
        #[arg(long)]
        pipeline_url: Option<String>,
        /// Stop waiting (exit 3) after this long; the controller carries on.
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Promote a canary target's deploy now: skip its remaining steps, or end its hold.
    Promote { env: String, role: String },
    /// Abort a canary target's deploy: all traffic back on the old version, the new one
    /// removed (during the hold: flip back to the held slot).
    Abort { env: String, role: String },
    /// What happened (deploys, verdicts, promotions, rollbacks), when and why, newest first.
    History {
        env: Option<String>,
        role: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Also print each rollback's command output.
        #[arg(long)]
        verbose: bool,
    },
}

/// Threads for blocking work: store calls (one SQLite connection behind a mutex, so more threads
/// only wait), file reads and name lookups. Tokio's default of 512 let 1,000 watchers starting
/// at once each park a thread on the store's mutex: 500 threads and their malloc arenas stayed
/// in rollwatch's RSS.
const BLOCKING_THREADS: usize = 16;
/// One thread runs every task. The work is waiting on sockets, and with two workers each
/// wake-up of a parked thread cost more than the work it woke for: 1,000 targets at 1 s took
/// 3.8% of a core with two workers and 2.4% with one, and 10,000 still had no missed probe
/// (`scripts/bench scale-ab`, docs/BENCHMARKS.md). Blocking work (the store, `/metrics`
/// rendering) runs on the blocking threads, not on this one.
const WORKER_THREADS: usize = 1;

/// Refusals: the input was wrong and nothing was changed (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo narrates through its own output; its logs would only repeat it.
    let level = if matches!(cli.command, Command::Demo { .. }) {
        "error"
    } else {
        "info"
    };
    init_logging(cli.log_format, level);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Tokio's own variable still chooses, for a host where one thread is not enough.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(WORKER_THREADS);
    }
    let runtime = match builder
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        // The reader of a listing went away (`| head`): nothing is wrong, stop quietly.
        Err(e) if out::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("error: {e:#}");
            let refused = e.downcast_ref::<Refused>().is_some()
                || matches!(
                    e.downcast_ref::<crate::daemon::DaemonError>(),
                    Some(crate::daemon::DaemonError::Lock(
                        crate::lease::LockError::Held { .. }
                    ))
                )
                || e.downcast_ref::<crate::config::ConfigError>().is_some()
                || matches!(
                    e.downcast_ref::<RollbackError>(),
                    Some(
                        RollbackError::UnknownTag { .. }
                            | RollbackError::Registry { .. }
                            | RollbackError::AlreadyRunning { .. }
                            | RollbackError::Gone { .. }
                            | RollbackError::NotLeader { .. }
                            | RollbackError::Docker(_)
                            | RollbackError::Site(_)
                            | RollbackError::Canary { .. }
                    )
                );
            ExitCode::from(if refused { 2 } else { 1 })
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
    match cli.command {
        Command::Run => {
            let config = Config::load(&config_path)?;
            run_controller(config).await
        }
        Command::Demo {
            runs,
            bench_file,
            serve_for,
        } => {
            demo::run(runs, bench_file, serve_for).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => {
            let config = Config::load(&config_path)?;
            status(&config).await
        }
        Command::Pause { env, role } => {
            let config = Config::load(&config_path)?;
            let id = parse_target(&env, &role)?;
            post_command(&config, &id, "pause").await
        }
        Command::Resume { env, role } => {
            let config = Config::load(&config_path)?;
            let id = parse_target(&env, &role)?;
            post_command(&config, &id, "resume").await
        }
        Command::Replay(args) => replay::run(args, &config_path, cli.config.is_some()),
        Command::CheckConfig { probe } => {
            let config = Config::load(&config_path)?;
            print_config(&config)?;
            let warnings = crate::rollback::project_warnings(&config)
                .into_iter()
                .chain(crate::config::watch_warnings(&config.targets));
            for w in warnings {
                errln!("warning: {w}");
            }
            if probe {
                return preflight(&config).await;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Init(args) => init::run(&args).await,
        Command::Rollback {
            env,
            role,
            tag,
            reason,
            dry_run,
        } => {
            let config = Config::load(&config_path)?;
            let id = parse_target(&env, &role)?;
            let tag = parse_tag(tag)?;
            rollback(&config, id, tag, reason, dry_run).await
        }
        Command::Deploy {
            env,
            role,
            tag,
            commit_sha,
            pipeline_url,
            timeout,
        } => {
            let config = Config::load(&config_path)?;
            let id = parse_target(&env, &role)?;
            let Some(tag) = parse_tag(Some(tag))? else {
                return Err(Refused("give the tag to deploy".into()).into());
            };
            let args = canary::DeployArgs {
                tag,
                commit_sha,
                pipeline_url,
                timeout,
            };
            canary::deploy(&config, &id, args).await
        }
        Command::Promote { env, role } => {
            let config = Config::load(&config_path)?;
            canary::steer(&config, &parse_target(&env, &role)?, "promote").await
        }
        Command::Abort { env, role } => {
            let config = Config::load(&config_path)?;
            canary::steer(&config, &parse_target(&env, &role)?, "abort").await
        }
        Command::Simulate(args) => {
            simulate::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tags { env, role } => {
            let config = Config::load(&config_path)?;
            let id = parse_target(&env, &role)?;
            ci::tags(&config, &id).await
        }
        Command::Wait {
            env,
            role,
            tag,
            timeout,
        } => {
            let config = Config::load(&config_path)?;
            let id = parse_target(&env, &role)?;
            let tag = parse_tag(tag)?;
            ci::wait(&config, &id, tag, timeout).await
        }
        Command::Incidents { env, role, limit } => {
            let config = Config::load(&config_path)?;
            let target = optional_target(env, role)?;
            let store =
                Store::connect(&config.controller.store, config.controller.store_password())
                    .await?;
            print_incidents(&store.rollbacks(target, limit).await?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::History {
            env,
            role,
            limit,
            verbose,
        } => {
            let config = Config::load(&config_path)?;
            let target = match (env, role) {
                (Some(e), Some(r)) => Some(parse_target(&e, &r)?),
                (None, None) => None,
                _ => return Err(Refused("give both <env> and <role>, or neither".into()).into()),
            };
            let store =
                Store::connect(&config.controller.store, config.controller.store_password())
                    .await?;
            let events = store.events(target.clone(), None, None, limit).await?;
            print_events(&events)?;
            outln!()?;
            let canaries = store.canaries(target.clone(), limit).await?;
            print_canaries(&canaries)?;
            let records = store.rollbacks(target, limit).await?;
            print_history(&records, verbose)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// SIGTERM must stop the controller within 5 s (systemd and Docker wait 10 s, then SIGKILL).
const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(4);

async fn run_controller(config: Config) -> anyhow::Result<ExitCode> {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = crate::daemon::start(config, shutdown.clone()).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
    // Every task stops at its next select; a rollback mid-step is dropped (its processes killed)
    // and its intent resumed at the next start. Whatever still hangs does not hold the exit.
    if tokio::time::timeout(SHUTDOWN_DEADLINE, running.done)
        .await
        .is_err()
    {
        tracing::warn!(
            "tasks still busy after {SHUTDOWN_DEADLINE:?}; exiting (unfinished rollbacks resume at the next start)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn api_base(config: &Config) -> String {
    format!("http://{}", config.controller.listen)
}

fn api_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .context("building the API client")
}

async fn status(config: &Config) -> anyhow::Result<ExitCode> {
    let url = format!("{}/api/v1/targets", api_base(config));
    let mut req = api_client()?.get(&url);
    if let Ok(token) = std::env::var(&config.controller.api_token_env) {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.with_context(|| {
        format!("controller not reachable at {url}; is `rollwatch run` running?")
    })?;
    if !resp.status().is_success() {
        anyhow::bail!(
            "{url} answered {}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    let targets: Vec<serde_json::Value> = resp.json().await.context("reading the target list")?;
    outln!(
        "{:<12} {:<10} {:<14} {:<14} {:<16} {:<20} detail",
        "env",
        "role",
        "running",
        "known-good",
        "state",
        "since (UTC)"
    )?;
    for t in targets {
        let s = |k: &str| t[k].as_str().unwrap_or("-").to_string();
        let mut state = s("state");
        if t["paused"].as_bool() == Some(true) {
            state.push_str(" (paused)");
        }
        if t["dry_run"].as_bool() == Some(true) {
            state.push_str(" [dry]");
        }
        let since = t["since_ms"].as_i64().map(fmt_time).unwrap_or_default();
        outln!(
            "{:<12} {:<10} {:<14} {:<14} {:<16} {:<20} {}",
            t["target"]["env"].as_str().unwrap_or("-"),
            t["target"]["role"].as_str().unwrap_or("-"),
            s("running_tag"),
            s("known_good_tag"),
            state,
            since,
            t["detail"].as_str().unwrap_or("")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn post_command(config: &Config, id: &TargetId, action: &str) -> anyhow::Result<ExitCode> {
    let url = format!(
        "{}/api/v1/targets/{}/{}/{action}",
        api_base(config),
        id.env,
        id.role
    );
    let token = std::env::var(&config.controller.api_token_env).map_err(|_| {
        Refused(format!(
            "set {} to the controller's API token",
            config.controller.api_token_env
        ))
    })?;
    let client = api_client()?;
    let resp = controller::send_retrying_busy(|| client.post(&url).bearer_auth(&token))
        .await
        .with_context(|| {
            format!("controller not reachable at {url}; is `rollwatch run` running?")
        })?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("{action} {id}: {status}: {text}");
    }
    if status == reqwest::StatusCode::ACCEPTED {
        outln!("{id}: {action} queued: a rollback is in flight; it takes effect when that ends")?;
    } else {
        outln!("{id}: {action}d")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn fmt_time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .trim_end_matches('Z')
        .replace('T', " ")
}

fn print_events(events: &[crate::store::EventRecord]) -> std::io::Result<()> {
    if events.is_empty() {
        outln!("no events on record")?;
        return Ok(());
    }
    outln!(
        "{:<20} {:<20} {:<16} {:<10} what",
        "when (UTC)",
        "target",
        "event",
        "tag"
    )?;
    for e in events.iter().rev() {
        outln!(
            "{:<20} {:<20} {:<16} {:<10} {}",
            fmt_time(e.at_ms),
            e.target.to_string(),
            e.kind,
            e.tag.as_deref().unwrap_or("-"),
            e.message
        )?;
    }
    Ok(())
}

fn optional_target(env: Option<String>, role: Option<String>) -> Result<Option<TargetId>, Refused> {
    match (env, role) {
        (Some(e), Some(r)) => Ok(Some(parse_target(&e, &r)?)),
        (None, None) => Ok(None),
        _ => Err(Refused("give both <env> and <role>, or neither".into())),
    }
}

fn print_incidents(records: &[RollbackRecord]) -> std::io::Result<()> {
    if records.is_empty() {
        outln!("no incidents on record")?;
    }
    for r in records {
        let took = r
            .finished_at_ms
            .map(|f| secs(f - r.started_at_ms))
            .unwrap_or_else(|| "unfinished".into());
        outln!(
            "== incident #{}: {} rolled back {} -> {} ({})",
            r.id,
            r.target,
            r.from_tag.as_deref().unwrap_or("?"),
            r.to_tag,
            r.state.as_str()
        )?;
        outln!(
            "   when:     {} UTC, took {took}",
            fmt_time(r.started_at_ms)
        )?;
        outln!("   trigger:  {}", r.trigger.as_str())?;
        outln!("   reason:   {}", r.reason)?;
        if let Some(d) = &r.to_digest {
            outln!("   now runs: {d}")?;
        }
        if let Some(e) = &r.error {
            outln!("   error:    {e}")?;
        }
        outln!("   steps:")?;
        for s in &r.steps {
            outln!(
                "     {:<20} {:>7} {} {}",
                s.name,
                secs(s.duration_ms),
                if s.ok { "ok  " } else { "FAIL" },
                s.detail
            )?;
        }
        if !r.logs.is_empty() {
            outln!("   last log lines of the replaced containers:")?;
            for line in r.logs.lines() {
                outln!("     | {line}")?;
            }
        }
        outln!()?;
    }
    Ok(())
}

/// A tag from the command line, refused (exit 2) when malformed.
fn parse_tag(tag: Option<String>) -> Result<Option<Tag>, Refused> {
    tag.map(|t| Tag::parse(&t))
        .transpose()
        .map_err(|e| Refused(e.to_string()))
}

fn parse_target(env: &str, role: &str) -> Result<TargetId, Refused> {
    let env = Env::parse(env)
        .ok_or_else(|| Refused(format!("unknown env {env:?}: use staging or production")))?;
    Ok(TargetId {
        env,
        role: role.to_string(),
    })
}

async fn rollback(
    config: &Config,
    id: TargetId,
    tag: Option<Tag>,
    reason: String,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let target = config.target(&id).ok_or_else(|| {
        let known: Vec<String> = config.targets.iter().map(|t| t.id().to_string()).collect();
        Refused(format!(
            "no target {id} in {}; configured: {}",
            config.source.display(),
            known.join(", ")
        ))
    })?;
    let canary = target.strategy == crate::config::Strategy::Canary;
    if canary && dry_run {
        return Err(Refused(format!("{id} is a canary target: a dry run of its rollback is not available (it would move traffic between its slots)")).into());
    }
    if !dry_run {
        if let Some(code) = through_controller(config, &id, tag.as_ref(), &reason).await? {
            return Ok(code);
        }
    }
    if canary {
        // The runbook's compose commands know nothing of the slots and the weights.
        return Err(Refused(format!(
            "{id} is a canary target: its rollback moves traffic between its slots, which the running controller does, and none answers at {}; start `rollwatch run` and try again",
            api_base(config)
        ))
        .into());
    }
    if let crate::store::StoreLocation::Postgres(_) = &config.controller.store {
        return Err(Refused(format!(
            "controller.store is PostgreSQL: rollbacks are made by the leading controller, whose lease fences every step, and no controller answers at {}; start `rollwatch run`, or point this config's controller.listen at a running one",
            api_base(config)
        ))
        .into());
    }
    let store =
        Store::connect(&config.controller.store, config.controller.store_password()).await?;
    let rollbacker = Rollbacker::new(
        store,
        RegistryClient::new(Duration::from_secs(10))
            .context("building the registry HTTP client")?,
        Prober::new().context("building the health-probe HTTP client")?,
        config.fallback_tags.clone(),
    );
    let request = RollbackRequest {
        tag: tag.clone(),
        trigger: Trigger::Manual,
        reason,
        dry_run: dry_run || config.is_dry_run(target),
        failing_tag: None,
    };
    match &tag {
        Some(t) => tell!("rolling back {id} to {t} ({})", t.kind_name()),
        None => tell!("rolling back {id} to its last known-good tag"),
    }
    let record = rollbacker.rollback(target, request, print_step).await?;
    let total = record.finished_at_ms.unwrap_or(record.started_at_ms) - record.started_at_ms;
    let from = record.from_tag.as_deref().unwrap_or("?");
    if record.state == crate::store::RollbackState::DryRun {
        tell!(
            "dry run: would roll {id} back from {from} to {} (record #{})",
            record.to_tag,
            record.id
        );
    } else {
        tell!(
            "rolled back {id} from {from} to {} in {} (record #{}, digest {})",
            record.to_tag,
            secs(total),
            record.id,
            record.to_digest.as_deref().unwrap_or("unknown")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// When a controller answers on `controller.listen` and watches this target, the rollback is
/// ordered through its API, so it is serialised with the controller's own rollbacks (one at a
/// time per target). `None`: nothing listens there (or it does not watch this target), roll back
/// from here. A controller that is there but does not answer in time is refused, never acted
/// beside.
async fn through_controller(
    config: &Config,
    id: &TargetId,
    tag: Option<&Tag>,
    reason: &str,
) -> anyhow::Result<Option<ExitCode>> {
    let base = api_base(config);
    match controller::liveness(&base).await {
        controller::Liveness::Down => return Ok(None),
        controller::Liveness::Up => {}
        controller::Liveness::Unresponsive(why) => {
            return Err(Refused(format!(
                "a controller listens at {base} but is not answering ({why}); not rolling back beside it. \
                 Try again when it answers, or stop it and run this again to roll back from here"
            ))
            .into())
        }
    }
    let token = std::env::var(&config.controller.api_token_env).map_err(|_| {
        Refused(format!(
            "a rollwatch controller runs at {base}; set {} so this rollback goes through it (one rollback at a time per target)",
            config.controller.api_token_env
        ))
    })?;
    let body = serde_json::json!({ "tag": tag.map(|t| t.to_string()), "reason": reason });
    tell!("rolling back {id} through the controller at {base}");
    // The controller answers once the rollback ended (or with 202 after 10 minutes).
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(11 * 60))
        .build()
        .context("building the API client")?;
    let order = |base: &str| {
        let url = format!("{base}/api/v1/targets/{}/{}/rollback", id.env, id.role);
        let (client, token, body) = (&client, &token, &body);
        async move {
            let resp =
                controller::send_retrying_busy(|| client.post(&url).bearer_auth(token).json(body))
                    .await
                    .with_context(|| format!("calling {url}"))?;
            let status = resp.status();
            let answer: serde_json::Value = resp.json().await.unwrap_or_default();
            anyhow::Ok((status, answer))
        }
    };
    let (mut status, mut answer) = order(&base).await?;
    // A follower (several controllers on one PostgreSQL store) names the leader: go there.
    if status.as_u16() == 503 {
        if let Some(leader) = answer["leader"].as_str().map(str::to_string) {
            tell!("{base} follows; sending the rollback to the leader at {leader}");
            (status, answer) = order(leader.trim_end_matches('/')).await?;
        }
    }
    match status.as_u16() {
        404 => Ok(None),
        401 => Err(Refused(format!("the controller at {base} refused the API token")).into()),
        200 => {
            for s in answer["steps"].as_array().into_iter().flatten() {
                if let Ok(step) = serde_json::from_value::<StepRecord>(s.clone()) {
                    print_step(&step);
                }
            }
            let took = answer["finished_at_ms"].as_i64().unwrap_or(0)
                - answer["started_at_ms"].as_i64().unwrap_or(0);
            tell!(
                "rolled back {id} from {} to {} in {} (record #{})",
                answer["from_tag"].as_str().unwrap_or("?"),
                answer["to_tag"].as_str().unwrap_or("?"),
                secs(took),
                answer["id"]
            );
            Ok(Some(ExitCode::SUCCESS))
        }
        202 => {
            tell!(
                "the controller is still running the rollback of {id}; follow it with `rollwatch incidents {} {}`",
                id.env,
                id.role
            );
            Ok(Some(ExitCode::from(3)))
        }
        // The watcher refused it before changing anything.
        409 => Err(Refused(
            answer["error"]
                .as_str()
                .unwrap_or("the controller refused the rollback")
                .to_string(),
        )
        .into()),
        _ => {
            errln!(
                "error: {}",
                answer["error"]
                    .as_str()
                    .unwrap_or("the controller answered an error")
            );
            Ok(Some(ExitCode::from(1)))
        }
    }
}

fn print_step(s: &StepRecord) {
    tell!(
        "  {:<22} {:>7}  {}  {}",
        s.name,
        secs(s.duration_ms),
        if s.ok { "ok  " } else { "FAIL" },
        s.detail
    );
}

/// A step or rollback duration. A clock stepped back between start and finish would make it
/// negative ("-0.00s"); durations shown are never below zero.
fn secs(ms: i64) -> String {
    format!("{:.2}s", ms.max(0) as f64 / 1000.0)
}

fn print_config(config: &Config) -> std::io::Result<()> {
    outln!(
        "{}: {} target(s)",
        config.source.display(),
        config.targets.len()
    )?;
    outln!(
        "store: {}   listen: {}   dry_run: {}",
        config.controller.store,
        config.controller.listen,
        config.controller.dry_run
    )?;
    for t in &config.targets {
        let exec = match &t.executor {
            ExecutorConfig::Compose(c) => {
                format!(
                    "compose in {}{} (registry {})",
                    c.dir.as_ref().map_or_else(
                        || "the containers' compose working_dir".into(),
                        |d| d.display().to_string()
                    ),
                    c.project
                        .as_ref()
                        .map(|p| format!(", project {p}"))
                        .unwrap_or_default(),
                    c.registry
                )
            }
            ExecutorConfig::Docker(d) => format!("docker API, image {}", d.image),
        };
        outln!(
            "  {:<22} docker {}  selector {:?}\n  {:<22} health {}  executor {}{}",
            t.id().to_string(),
            t.docker,
            t.selector.docker_label_filters(),
            "",
            t.health.url.0,
            exec,
            if config.is_dry_run(t) {
                "  [dry run]"
            } else {
                ""
            }
        )?;
    }
    Ok(())
}

/// `check-config --probe`: the table, then exit 0 only when every check passed.
async fn preflight(config: &Config) -> anyhow::Result<ExitCode> {
    outln!()?;
    let checks = crate::preflight::run(config).await;
    outln!("{:<24} {:<28} {:<6} DETAIL", "TARGET", "CHECK", "RESULT")?;
    for c in &checks {
        let (result, detail) = match &c.outcome {
            Ok(d) => ("ok", d),
            Err(d) => ("FAILED", d),
        };
        outln!(
            "{:<24} {:<28} {:<6} {detail}",
            c.target.to_string(),
            c.check,
            result
        )?;
    }
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c.outcome.is_err())
        .map(|c| format!("{} {}", c.target, c.check))
        .collect();
    if failed.is_empty() {
        outln!("\nall {} checks passed", checks.len())?;
        Ok(ExitCode::SUCCESS)
    } else {
        errln!(
            "{} of {} checks failed: {}",
            failed.len(),
            checks.len(),
            failed.join(", ")
        );
        Ok(ExitCode::from(1))
    }
}

fn print_canaries(records: &[crate::store::CanaryRecord]) -> std::io::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    outln!(
        "{:>4}  {:<20} {:<20} {:<22} {:<12} {:<16} reason",
        "id",
        "when (UTC)",
        "target",
        "canary",
        "result",
        "steps"
    )?;
    for r in records {
        let steps: Vec<String> = r.steps.iter().map(|(p, _)| format!("{p}%")).collect();
        outln!(
            "{:>4}  {:<20} {:<20} {:<22} {:<12} {:<16} {}",
            r.id,
            fmt_time(r.started_ms),
            r.target.to_string(),
            format!("{} -> {}", r.from_tag.as_deref().unwrap_or("?"), r.tag),
            r.state.as_str(),
            steps.join(" "),
            r.reason
        )?;
    }
    outln!()
}

fn print_history(records: &[RollbackRecord], verbose: bool) -> std::io::Result<()> {
    if records.is_empty() {
        outln!("no rollbacks on record")?;
        return Ok(());
    }
    outln!(
        "{:>4}  {:<20} {:<20} {:<9} {:<22} {:<10} {:>8}  reason",
        "id",
        "when (UTC)",
        "target",
        "trigger",
        "from -> to",
        "result",
        "took"
    )?;
    for r in records {
        let took = r
            .finished_at_ms
            .map(|f| secs(f - r.started_at_ms))
            .unwrap_or_else(|| "-".into());
        outln!(
            "{:>4}  {:<20} {:<20} {:<9} {:<22} {:<10} {:>8}  {}",
            r.id,
            fmt_time(r.started_at_ms),
            r.target.to_string(),
            r.trigger.as_str(),
            format!("{} -> {}", r.from_tag.as_deref().unwrap_or("?"), r.to_tag),
            r.state.as_str(),
            took,
            r.reason
        )?;
        if let Some(e) = &r.error {
            outln!("      error: {e}")?;
        }
        if verbose {
            for s in &r.steps {
                outln!(
                    "      {:<20} {:>7} {} {}",
                    s.name,
                    secs(s.duration_ms),
                    if s.ok { "ok" } else { "FAIL" },
                    s.detail
                )?;
            }
            for line in r.output.lines() {
                outln!("      | {line}")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_never_print_negative() {
        assert_eq!(secs(-3), "0.00s");
        assert_eq!(secs(1234), "1.23s");
    }
}
