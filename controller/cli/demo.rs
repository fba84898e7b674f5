//! `rollwatch demo`: a real compose deployment of the demo service on loopback, watched by an
//! in-process controller on the embedded config. It deploys a good `v1.0.0`, waits for it to be
//! promoted, deploys a broken `v1.1.0`, and prints what rollwatch sees and does until the target
//! is healthy again on `v1.0.0`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio_util::sync::CancellationToken;

use crate::config::{ComposeCommand, ComposeExecutorConfig, Config};
use crate::probe::Prober;
use crate::rollback::{ComposeExecutor, ExecPlan, ExecReport, Executor, LocalRunner};
use crate::tag::Tag;
use crate::target::{Env, TargetId};

const TEMPLATE: &str = include_str!("../../demo/rollwatch-demo.toml");
const PROJECT: &str = "rollwatch-demo-staging-backend";
const GOOD: &str = "v1.0.0";
const BAD: &str = "v1.1.0";

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn remove_demo_containers() {
    let filter = format!("label=com.docker.compose.project={PROJECT}");
    if let Ok(out) = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &filter])
        .output()
    {
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", id])
                .output();
        }
    }
}

/// Lays out `/opt/demo/staging/backend` under `root` like the runbook's hosts.
fn lay_out(root: &Path, app_port: u16) -> anyhow::Result<PathBuf> {
    let dir = root.join("opt/demo/staging/backend");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join("docker-compose.yml"),
        "version: \"3.7\"\nservices:\n  backend:\n    image: ${CONTAINER_REGISTRY}/backend:${IMAGE_TAG}\n    network_mode: host\n    environment:\n      DEMO_PORT: ${APP_PORT}\n",
    )?;
    std::fs::write(
        dir.join(".env"),
        format!("COMPOSE_PROJECT_NAME={PROJECT}\nCONTAINER_REGISTRY=127.0.0.1:5000/demo\nIMAGE_TAG={GOOD}\nAPP_PORT={app_port}\n"),
    )?;
    Ok(dir)
}

/// A deploy as CI does it: the runbook's pull and up with the new tag.
async fn deploy(dir: &Path, tag: &str) -> anyhow::Result<()> {
    let executor = ComposeExecutor::new(
        std::sync::Arc::new(LocalRunner::default()),
        ComposeExecutorConfig {
            dir: Some(dir.to_path_buf()),
            project: None,
            env_file: ".env".into(),
            registry: "127.0.0.1:5000/demo".into(),
            image: None,
            compose_command: ComposeCommand::Auto,
            host: None,
            also: Vec::new(),
            ssh: Default::default(),
            step_timeout: crate::config::DEFAULT_STEP_TIMEOUT,
        },
    );
    let plan = ExecPlan::new(
        TargetId {
            env: Env::Staging,
            role: "backend".into(),
        },
        Tag::parse(tag)?,
        "127.0.0.1:5000/demo/backend".into(),
    );
    let mut report = ExecReport::new(|_| {});
    executor
        .execute(&plan, &mut report)
        .await
        .with_context(|| format!("deploying {tag}:\n{}", report.output))?;
    Ok(())
}

/// Timings of one bad deploy, measured from the moment `up -d` of the bad tag returned.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// Fault onset to the `regressed` verdict.
    pub detect: Duration,
    /// Fault onset to `/health` validated ok on the known-good tag.
    pub healthy: Duration,
}

/// Runs the scenario `runs` times; with `runs > 1` it prints quantiles and, when `bench` names a
/// file, appends a table there.
/// `serve_for`: how long the controller (and its status page) keeps running after the rollback.
pub async fn run(runs: usize, bench: Option<PathBuf>, serve_for: Duration) -> anyhow::Result<()> {
    let docker_ok = std::process::Command::new("docker")
        .args(["info"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !docker_ok {
        bail!("no Docker Engine answers; run scripts/demo, which installs and starts one");
    }
    let mut all = Vec::new();
    for i in 0..runs.max(1) {
        if runs > 1 {
            tell!("\n== run {}/{runs}", i + 1);
        }
        let root = std::env::temp_dir().join("rollwatch-demo");
        remove_demo_containers();
        let _ = std::fs::remove_dir_all(&root);
        let (app_port, api_port) = (free_port()?, free_port()?);
        let dir = lay_out(&root, app_port)?;
        let text = TEMPLATE
            .replace("{store}", &root.join("rollwatch.db").display().to_string())
            .replace("{api_port}", &api_port.to_string())
            .replace("{app_port}", &app_port.to_string())
            .replace("{dir}", &dir.display().to_string());
        let config = Config::parse(&text, Path::new("<embedded demo config>"), &root)?;
        let result = scenario(config, &dir, app_port, serve_for).await;
        remove_demo_containers();
        all.push(result?);
    }
    if runs > 1 {
        report(&all, bench.as_deref())?;
    }
    Ok(())
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    // Nearest-rank: the smallest value with at least q of the samples at or below it.
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn report(all: &[Timings], bench: Option<&Path>) -> anyhow::Result<()> {
    let stats = |f: fn(&Timings) -> Duration| {
        let mut v: Vec<f64> = all.iter().map(|t| f(t).as_secs_f64()).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        (quantile(&v, 0.5), quantile(&v, 0.95), v[0], v[v.len() - 1])
    };
    let (d50, d95, dmin, dmax) = stats(|t| t.detect);
    let (h50, h95, hmin, hmax) = stats(|t| t.healthy);
    let machine = super::simulate::machine();
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let table = format!(
        "## Watcher: detection and recovery of a health-down deploy ({date})\n\n\
         Machine: {machine}. `rollwatch demo --runs {n}`: compose target on loopback, probe interval 1 s,\n\
         2 consecutive failures = regressed, start-up grace 1 s; bad tag `v1.1.0` answers /health 503.\n\
         Fault onset = `docker-compose up -d` of the bad tag returned; healthy = rollback validated /health ok on v1.0.0.\n\n\
         | measure | p50 | p95 | min | max | goal (p50) |\n|---|---|---|---|---|---|\n\
         | fault onset -> verdict regressed | {d50:.2} s | {d95:.2} s | {dmin:.2} s | {dmax:.2} s | <= 3.5 s |\n\
         | fault onset -> healthy on known-good | {h50:.2} s | {h95:.2} s | {hmin:.2} s | {hmax:.2} s | <= 8 s |\n",
        n = all.len()
    );
    tell!("\n{table}");
    if let Some(path) = bench {
        super::simulate::append_bench(path, &table)?;
    }
    Ok(())
}

async fn scenario(
    config: Config,
    dir: &Path,
    app_port: u16,
    serve_for: Duration,
) -> anyhow::Result<Timings> {
    let t0 = Instant::now();
    let say = move |msg: String| tell!("[{:>6.2}s] {msg}", t0.elapsed().as_secs_f64());
    say(format!(
        "deploying demo {GOOD} (good) into {}",
        dir.display()
    ));
    deploy(dir, GOOD).await?;

    let shutdown = CancellationToken::new();
    let running = crate::daemon::start(config.clone(), shutdown.clone()).await?;
    let mut events = running.events.subscribe();
    say(format!("rollwatch watching staging/backend (probe every 1s, 2 failures = regressed, bake 3s); API on {}", running.addr));
    say(format!("status page: http://{}/", running.addr));

    let mut fault_at: Option<Instant> = None;
    let mut regressed_at = None;
    let outcome = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let e = match events.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => bail!("controller stopped"),
            };
            let label = if e.kind == "step" {
                "  rollback step".to_string()
            } else {
                e.kind.clone()
            };
            say(format!("{label:<16} {}", e.message));
            match (e.kind.as_str(), e.tag.as_deref()) {
                ("promoted", Some(GOOD)) if fault_at.is_none() => {
                    say(format!("deploying demo {BAD} (its /health answers 503)"));
                    deploy(dir, BAD).await?;
                    fault_at = Some(Instant::now());
                }
                ("regressed", _) => regressed_at = Some(Instant::now()),
                ("rollback", _) => return Ok(Instant::now()),
                ("rollback_failed", _) => bail!("rollback failed: {}", e.message),
                _ => {}
            }
        }
    })
    .await;
    if outcome.as_ref().is_ok_and(|r| r.is_ok()) && !serve_for.is_zero() {
        say(format!(
            "the status page stays up for {}: http://{}/ (Ctrl-C ends it)",
            humantime::format_duration(serve_for),
            running.addr
        ));
        tokio::select! {
            _ = tokio::time::sleep(serve_for) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    shutdown.cancel();
    let _ = running.done.await;
    let healthy_at = outcome.context("the demo did not finish within 120 s")??;

    let prober = Prober::new()?;
    let url = url::Url::parse(&format!("http://127.0.0.1:{app_port}/health"))?;
    prober
        .wait_healthy(
            &url,
            Duration::from_secs(1),
            Duration::from_millis(100),
            Duration::from_secs(10),
        )
        .await
        .map_err(|f| anyhow::anyhow!("after the rollback /health is not ok: {f}"))?;
    let body = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(url.clone())
        .send()
        .await?
        .text()
        .await?;
    if !body.contains(GOOD) {
        bail!("after the rollback /health says {body}");
    }
    let fault = fault_at.unwrap_or(t0);
    let timings = Timings {
        detect: regressed_at.map(|r| r - fault).unwrap_or_default(),
        healthy: healthy_at - fault,
    };
    tell!();
    tell!("summary");
    tell!(
        "  bad deploy running -> verdict regressed        {:>6.2}s",
        timings.detect.as_secs_f64()
    );
    tell!(
        "  bad deploy running -> healthy on {GOOD} again   {:>6.2}s",
        timings.healthy.as_secs_f64()
    );
    tell!("  /health now: {}", body.trim());
    tell!("  store: {}", config.controller.store);
    Ok(timings)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo is the first thing a new user runs: its embedded config must pass every check.
    #[test]
    fn embedded_demo_config_passes_validation() {
        let text = TEMPLATE
            .replace("{store}", "/tmp/rollwatch-demo/rollwatch.db")
            .replace("{api_port}", "9860")
            .replace("{app_port}", "8080")
            .replace("{dir}", "/tmp/rollwatch-demo/staging/backend");
        let config = Config::parse(
            &text,
            Path::new("<embedded demo config>"),
            Path::new("/tmp"),
        );
        assert!(config.is_ok(), "{config:?}");
    }
}
