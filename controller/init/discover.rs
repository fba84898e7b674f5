//! The Docker edge of `init`: every running container, grouped into compose services and lone
//! `docker run` containers, with what their inspection and the `.env` beside them say.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bollard::models::ContainerInspectResponse;

use super::propose::{ComposeFound, Found};
use crate::docker::{ContainerInfo, DockerClient, DockerError};
use crate::target::Selector;

/// Running containers carrying every `labels` pair (all running containers when empty), as one
/// [`Found`] per compose service or lone container. `read_env_files`: the compose working
/// directories are on this machine, so their `.env` can be read.
pub async fn discover(
    docker: &DockerClient,
    labels: &BTreeMap<String, String>,
    read_env_files: bool,
) -> Result<Vec<Found>, DockerError> {
    let selector = Selector {
        labels: labels.clone(),
        ..Selector::default()
    };
    let running = docker.containers(&selector, false).await?;
    let mut groups: BTreeMap<(String, String), Vec<&ContainerInfo>> = BTreeMap::new();
    for c in &running {
        let key = match (
            &c.compose_project,
            c.labels.get("com.docker.compose.service"),
        ) {
            (Some(p), Some(s)) => (p.clone(), s.clone()),
            // A lone container is its own group, keyed so it sorts after compose services.
            _ => ("~".to_string(), c.name.clone()),
        };
        groups.entry(key).or_default().push(c);
    }
    let mut out = Vec::new();
    for ((project, service), members) in groups {
        let first = members[0];
        let inspected = docker.inspect(&first.id).await?;
        let image_labels = docker.image_labels(&first.image_id).await?;
        let compose = (project != "~").then(|| {
            let working_dir = first.compose_working_dir.clone().map(PathBuf::from);
            let env_file = working_dir
                .as_ref()
                .filter(|_| read_env_files)
                .and_then(|d| std::fs::read_to_string(d.join(".env")).ok());
            ComposeFound {
                project,
                service,
                working_dir,
                env_file,
            }
        });
        let mut containers: Vec<String> = members.iter().map(|c| c.name.clone()).collect();
        containers.sort();
        out.push(found_from(
            first,
            &inspected,
            &image_labels,
            containers,
            compose,
        ));
    }
    Ok(out)
}

fn found_from(
    first: &ContainerInfo,
    inspected: &ContainerInspectResponse,
    image_labels: &BTreeMap<String, String>,
    containers: Vec<String>,
    compose: Option<ComposeFound>,
) -> Found {
    let config = inspected.config.clone().unwrap_or_default();
    let host = inspected.host_config.clone().unwrap_or_default();
    let own_labels = first
        .labels
        .iter()
        .filter(|(k, v)| image_labels.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut command = config.entrypoint.unwrap_or_default();
    command.extend(config.cmd.unwrap_or_default());
    let published = host
        .port_bindings
        .unwrap_or_default()
        .into_values()
        .flatten()
        .flatten()
        .filter_map(|b| b.host_port.and_then(|p| p.parse().ok()))
        .collect();
    let exposed = config
        .exposed_ports
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.split('/').next().and_then(|n| n.parse().ok()))
        .collect();
    Found {
        containers,
        compose,
        own_labels,
        image: first.image_ref.clone(),
        env: config.env.unwrap_or_default(),
        command,
        healthcheck: config.healthcheck.and_then(|h| h.test).unwrap_or_default(),
        published,
        exposed,
        host_network: host.network_mode.as_deref() == Some("host"),
    }
}
