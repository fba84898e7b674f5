//! Where a canary target's slots run and which balancer steers them, from its config; and the
//! read-only checks of `check-config --probe`.

use std::sync::Arc;
use std::time::Duration;

use super::slots::SlotSite;
use crate::config::{CanaryConfig, ExecutorConfig, TargetConfig, TrafficConfig};
use crate::rollback::{CommandRunner, LocalRunner};
use crate::traffic::haproxy::Haproxy;
use crate::traffic::{Slot, TrafficDriver};

/// Where a canary target's slots run, from its config (checked at load: a compose executor
/// with `dir`, and `selector.compose_project`).
fn slot_site(target: &TargetConfig, config: &CanaryConfig) -> Result<SlotSite, String> {
    let ExecutorConfig::Compose(x) = &target.executor else {
        return Err("a canary target needs a compose executor".into());
    };
    let (Some(dir), Some(project)) = (&x.dir, &target.selector.compose_project) else {
        return Err("a canary target needs executor.dir and selector.compose_project".into());
    };
    Ok(SlotSite {
        dir: dir.clone(),
        project: project.clone(),
        env_file: x.env_file.clone(),
        registry: x.registry.clone(),
        compose: Vec::new(),
        port_var: config.port_var.clone(),
        ports: config.ports,
    })
}

/// The site with its compose command found by trying, as the rollback executor does.
pub(super) async fn ready_site(
    target: &TargetConfig,
    config: &CanaryConfig,
    runner: &dyn CommandRunner,
) -> Result<SlotSite, String> {
    let mut site = slot_site(target, config)?;
    let command = match &target.executor {
        ExecutorConfig::Compose(x) => x.compose_command,
        ExecutorConfig::Docker(_) => crate::config::ComposeCommand::Auto,
    };
    let flavor = crate::rollback::detect_flavor(runner, &site.dir, command)
        .await
        .map_err(|e| e.to_string())?;
    site.compose = flavor.argv();
    Ok(site)
}

pub(super) fn driver_of(config: &CanaryConfig) -> Haproxy {
    let TrafficConfig::Haproxy {
        socket,
        backend,
        servers,
    } = &config.traffic;
    Haproxy {
        socket: socket.clone(),
        backend: backend.clone(),
        servers: servers.clone(),
    }
}

/// `check-config --probe` for a canary target, read-only: the load balancer answers with
/// both servers, and the compose file can run as two slots side by side.
pub async fn preflight(target: &TargetConfig) -> Vec<(&'static str, Result<String, String>)> {
    let Some(config) = target.canary.as_ref() else {
        return Vec::new();
    };
    let balancer = match driver_of(config).read().await {
        Ok(slots) => Ok(slots
            .iter()
            .map(|s| format!("{} {} weight {}", s.slot.name(), s.status, s.weight))
            .collect::<Vec<_>>()
            .join(", ")),
        Err(e) => Err(e.to_string()),
    };
    let runner: Arc<dyn CommandRunner> = Arc::new(LocalRunner::new(Duration::from_secs(30)));
    let slots = match ready_site(target, config, &*runner).await {
        Ok(site) => site
            .check(&runner)
            .await
            .map_err(|e| e.to_string())
            .map(|()| {
                format!(
                    "the compose file runs as {} and {} on ports {} and {}",
                    site.project_of(Slot::Blue),
                    site.project_of(Slot::Green),
                    site.ports[0],
                    site.ports[1]
                )
            }),
        Err(e) => Err(e),
    };
    vec![("load balancer", balancer), ("slots", slots)]
}

/// The path (and query) of the target's health URL: each slot is asked on its own port.
pub(super) fn health_path(t: &TargetConfig) -> String {
    let url = &t.health.url.0;
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}
