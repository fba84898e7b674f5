//! `check-config --probe`: the pre-flight a user runs before turning automation on. For every
//! target it does once, for real and read-only, what the watcher and a rollback will do: list
//! the containers, probe the health URL, read the metrics source, reach the registry, and run
//! the executor's own checks (compose directory, project, ssh host). Nothing is changed.

use std::time::Duration;

use crate::config::{Config, ExecutorConfig, MetricsConfig, TargetConfig};
use crate::docker::{ContainerInfo, DockerClient};
use crate::metrics::MetricsSource;
use crate::probe::Prober;
use crate::registry::RegistryClient;
use crate::rollback::{compose_preflight, compose_projects_of, running_tag_of, ExecPlan};
use crate::tag::Tag;
use crate::target::TargetId;

/// The registry's deadline for the tag listing (the registry client pages up to its own limit).
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(10);

/// One row of the pre-flight table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub target: TargetId,
    /// `containers`, `health`, `metrics`, `registry`, `compose@<host>`, `docker`.
    pub check: String,
    /// What was seen when it passed; why it failed, and what to do, when not.
    pub outcome: Result<String, String>,
}

/// Every target's checks, in config order. Targets are checked one after another: the output
/// reads in order and a pre-flight has no deadline to race.
pub async fn run(config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    for t in &config.targets {
        out.extend(target_checks(t).await);
    }
    out
}

async fn target_checks(t: &TargetConfig) -> Vec<Check> {
    let id = t.id();
    let row = |check: &str, outcome: Result<String, String>| Check {
        target: id.clone(),
        check: check.to_string(),
        outcome,
    };
    let mut rows = Vec::new();
    let containers = containers(t).await;
    rows.push(row(
        "containers",
        containers
            .as_ref()
            .map(|c| describe(c))
            .map_err(Clone::clone),
    ));
    rows.push(row("health", health(t).await));
    if let Some(m) = &t.metrics {
        rows.push(row("metrics", metrics(m).await));
    }
    let repository = t.executor.image_repository(&t.role);
    rows.push(row("registry", registry(&repository).await));
    let containers = containers.unwrap_or_default();
    if t.strategy == crate::config::Strategy::Canary {
        // Its slots, not the compose executor's project, are what a deploy runs.
        for (check, outcome) in crate::canary::site::preflight(t).await {
            rows.push(row(check, outcome));
        }
        return rows;
    }
    match &t.executor {
        ExecutorConfig::Compose(c) => {
            let tag = running_tag_of(&containers, &repository)
                .and_then(|s| Tag::parse(&s).ok())
                .unwrap_or_else(|| {
                    Tag::parse(t.env.default_fallback_tag()).unwrap_or_else(|_| unreachable!())
                });
            let mut plan = ExecPlan::new(id.clone(), tag, repository);
            plan.compose_projects = compose_projects_of(&containers);
            plan.selector_project = t.selector.compose_project.clone();
            let ids: Vec<String> = containers.iter().map(|c| c.id.clone()).collect();
            for (host, outcome) in compose_preflight(c, &plan, &ids).await {
                rows.push(row(&format!("compose@{host}"), outcome));
            }
        }
        ExecutorConfig::Docker(d) => rows.push(row("docker", docker_image(&containers, &d.image))),
    }
    rows
}

fn describe(containers: &[ContainerInfo]) -> String {
    let running = containers.iter().filter(|c| c.state == "running").count();
    let images: std::collections::BTreeSet<&str> =
        containers.iter().map(|c| c.image_ref.as_str()).collect();
    format!(
        "{running} of {} running ({})",
        containers.len(),
        images.into_iter().collect::<Vec<_>>().join(", ")
    )
}

/// The target's containers; failed when the engine cannot be asked or none is running.
async fn containers(t: &TargetConfig) -> Result<Vec<ContainerInfo>, String> {
    let docker = DockerClient::connect(&t.docker)
        .await
        .map_err(|e| e.to_string())?;
    let all = docker
        .containers(&t.selector, true)
        .await
        .map_err(|e| e.to_string())?;
    if !all.iter().any(|c| c.state == "running") {
        return Err(format!(
            "no running container on {} carries {}; check the selector (docker ps --filter label=...)",
            t.docker,
            t.selector.docker_label_filters().join(", ")
        ));
    }
    Ok(all)
}

async fn health(t: &TargetConfig) -> Result<String, String> {
    let prober = Prober::new().map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let url = &t.health.url.0;
    let result = prober.probe(url, t.health.timeout).await;
    match result.outcome {
        Ok(()) => Ok(format!("{url} ok in {} ms", result.latency.as_millis())),
        Err(f) => Err(format!("{url}: {f}; check health.url")),
    }
}

async fn metrics(m: &MetricsConfig) -> Result<String, String> {
    let mut source = MetricsSource::new(m)?;
    let readings = tokio::time::timeout(m.timeout * 2, source.read())
        .await
        .map_err(|_| format!("no answer within {:?}", m.timeout * 2))?
        .map_err(|e| e.to_string())?;
    let requests: f64 = readings.iter().map(|r| r.requests).sum();
    let errors: f64 = readings.iter().map(|r| r.errors).sum();
    Ok(format!(
        "{} endpoint(s): {requests} requests, {errors} errors so far",
        readings.len()
    ))
}

async fn registry(repository: &str) -> Result<String, String> {
    let client = RegistryClient::new(REGISTRY_TIMEOUT)
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let tags = client
        .list_tags(repository)
        .await
        .map_err(|e| e.to_string())?;
    if tags.is_empty() {
        return Err(format!(
            "{repository} has no tags in its registry: nothing to roll back to; check executor.registry / executor.image"
        ));
    }
    Ok(format!("{repository}: {} tag(s)", tags.len()))
}

/// The docker executor recreates containers with `<image>:<tag>`: the running containers must
/// come from that repository, or a rollback would switch them to another image.
fn docker_image(containers: &[ContainerInfo], image: &str) -> Result<String, String> {
    let others: Vec<&str> = containers
        .iter()
        .map(|c| c.image_ref.as_str())
        // A container the docker executor recreated runs an image pinned by ID.
        .filter(|r| !r.starts_with("sha256:") && crate::init::propose::repository_of(r) != image)
        .collect();
    if others.is_empty() {
        Ok(format!(
            "recreates through the Docker API with {image}:<tag>"
        ))
    } else {
        Err(format!(
            "the containers run {}, not {image}; set executor.image to their repository",
            others.join(", ")
        ))
    }
}
