//! The Docker Engine edge: connecting to an endpoint, finding a target's containers, looking up
//! and pulling images, and recreating a container with another image. Everything rollwatch asks
//! Docker goes through [`DockerClient`]; it holds no decisions of its own.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, ContainerInspectResponse, NetworkingConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use serde::Deserialize;

use crate::target::Selector;

/// Seconds bollard waits for one API call; pulls stream and are not bound by it.
const API_TIMEOUT_SECS: u64 = 120;

/// Where a Docker Engine answers: `unix:///path`, `tcp://host:port` (plain, or TLS with client
/// certificates), or `ssh://user@host` (the engine's socket through ssh, key auth).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "EndpointSpec")]
pub enum DockerEndpoint {
    Unix(String),
    Tcp(String),
    Tls { addr: String, tls: TlsFiles },
    Ssh { addr: String, key: Option<PathBuf> },
}

/// The CA that signed the engine's certificate, and our client certificate and key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The config's spellings: a URL string, or a table with the URL and its TLS files or ssh key.
#[derive(Deserialize)]
#[serde(untagged)]
enum EndpointSpec {
    Url(String),
    Table {
        url: String,
        tls: Option<TlsFiles>,
        ssh_key: Option<PathBuf>,
    },
}

impl TryFrom<EndpointSpec> for DockerEndpoint {
    type Error = String;
    fn try_from(spec: EndpointSpec) -> Result<Self, String> {
        match spec {
            EndpointSpec::Url(url) => DockerEndpoint::try_from(url),
            EndpointSpec::Table { url, tls, ssh_key } => {
                match (DockerEndpoint::try_from(url.clone())?, tls, ssh_key) {
                    (DockerEndpoint::Tcp(addr), Some(tls), None) => {
                        Ok(DockerEndpoint::Tls { addr, tls })
                    }
                    (DockerEndpoint::Ssh { addr, .. }, None, key) => {
                        Ok(DockerEndpoint::Ssh { addr, key })
                    }
                    (e, None, None) => Ok(e),
                    _ => Err(format!(
                    "docker endpoint {url:?}: tls goes with tcp:// only, ssh_key with ssh:// only"
                )),
                }
            }
        }
    }
}

impl Default for DockerEndpoint {
    fn default() -> Self {
        DockerEndpoint::Unix("/var/run/docker.sock".into())
    }
}

impl TryFrom<String> for DockerEndpoint {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.starts_with('/') {
                return Ok(DockerEndpoint::Unix(path.to_string()));
            }
        } else if let Some(addr) = s.strip_prefix("tcp://") {
            if addr.contains(':') && !addr.contains('/') {
                return Ok(DockerEndpoint::Tcp(addr.to_string()));
            }
        } else if let Some(dest) = s.strip_prefix("ssh://") {
            let valid = !dest.is_empty()
                && !dest.starts_with('-')
                && dest.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@' | b':')
                });
            if valid && dest.contains(':') {
                return Err(format!(
                    "docker endpoint {s:?}: ssh:// endpoints take no port (the ssh connector cannot pass one); set it with a Host entry in ~/.ssh/config"
                ));
            }
            if valid {
                return Ok(DockerEndpoint::Ssh {
                    addr: s.clone(),
                    key: None,
                });
            }
        }
        Err(format!(
            "docker endpoint {s:?} is not unix:///path/to/docker.sock, tcp://host:port or ssh://user@host"
        ))
    }
}

impl fmt::Display for DockerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DockerEndpoint::Unix(p) => write!(f, "unix://{p}"),
            DockerEndpoint::Tcp(a) => write!(f, "tcp://{a}"),
            DockerEndpoint::Tls { addr, .. } => write!(f, "tcp://{addr} (TLS)"),
            DockerEndpoint::Ssh { addr, .. } => f.write_str(addr),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker Engine at {endpoint}: {source} (is dockerd running? scripts/setup starts one)")]
    Connect {
        endpoint: String,
        source: BollardError,
    },
    #[error("Docker Engine at {endpoint} refused {action}: {source}")]
    Api {
        endpoint: String,
        action: String,
        source: BollardError,
    },
    #[error("pulling {image} failed: {message}")]
    Pull { image: String, message: String },
    #[error("Docker Engine at {endpoint} did not answer {action} within {within:?}; treating it as unreachable")]
    Timeout {
        endpoint: String,
        action: String,
        within: std::time::Duration,
    },
}

/// Listing containers is what every round and every rollback starts with; a daemon that hangs
/// (seen: a call held 120 s while status said Docker was reachable) must read as unreachable
/// quickly, so the verdict is inconclusive instead of the watcher being stuck.
const LIST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The longest a Docker API executor's pull may take (the compose executor has its own
/// `executor.step_timeout`).
const PULL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// One container of a target, as much as decisions need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    /// The image reference the container was created from (`repo:tag`, or an ID when pinned).
    pub image_ref: String,
    /// `sha256:...` of the image actually running.
    pub image_id: String,
    /// `running`, `exited`, `restarting`, ...
    pub state: String,
    /// Docker healthcheck status (`healthy`, `unhealthy`, `starting`) when the image has one.
    pub health: Option<String>,
    /// The exit code of a container that is not running (`Exited (3) 2 seconds ago`).
    pub exit_code: Option<i64>,
    /// Creation time, Unix seconds.
    pub created: i64,
    pub labels: BTreeMap<String, String>,
    /// `com.docker.compose.project`: the project a rollback must run as (`-p`), whatever the
    /// directory or `.env` say.
    pub compose_project: Option<String>,
    /// `com.docker.compose.project.working_dir`: where compose ran when it created the container.
    pub compose_working_dir: Option<String>,
    /// `com.docker.compose.project.config_files`: the `-f` files, comma-separated as compose writes them.
    pub compose_config_files: Option<String>,
}

/// A connected, version-negotiated Docker API client.
#[derive(Clone)]
pub struct DockerClient {
    docker: Docker,
    endpoint: String,
    /// What each container listed by image ID was created from (see `name_moved_tags`).
    created_from: Arc<Mutex<HashMap<String, Option<String>>>>,
}

/// Containers whose creation image is remembered; past it the memory starts over (a container's
/// entry is only ever a saved inspect).
const CREATED_FROM_LIMIT: usize = 10_000;

impl DockerClient {
    /// Connects and negotiates the API version: the Debian engine speaks 1.41 and bollard's
    /// default (1.53) would be refused.
    pub async fn connect(endpoint: &DockerEndpoint) -> Result<DockerClient, DockerError> {
        let name = endpoint.to_string();
        let connect_err = |source| DockerError::Connect {
            endpoint: name.clone(),
            source,
        };
        let docker = match endpoint {
            DockerEndpoint::Unix(path) => {
                Docker::connect_with_unix(path, API_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            }
            DockerEndpoint::Tcp(addr) => {
                Docker::connect_with_http(addr, API_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            }
            DockerEndpoint::Tls { addr, tls } => Docker::connect_with_ssl(
                addr,
                &tls.key,
                &tls.cert,
                &tls.ca,
                API_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            ),
            DockerEndpoint::Ssh { addr, key } => Docker::connect_with_ssh(
                addr,
                API_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
                key.as_ref().map(|k| k.display().to_string()),
            ),
        }
        .map_err(connect_err)?;
        let docker = tokio::time::timeout(LIST_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| DockerError::Timeout {
                endpoint: name.clone(),
                action: "the version handshake".into(),
                within: LIST_TIMEOUT,
            })?
            .map_err(connect_err)?;
        Ok(DockerClient {
            docker,
            endpoint: name,
            created_from: Arc::default(),
        })
    }

    fn api_err(&self, action: impl Into<String>) -> impl FnOnce(BollardError) -> DockerError + '_ {
        let action = action.into();
        move |source| DockerError::Api {
            endpoint: self.endpoint.clone(),
            action,
            source,
        }
    }

    /// The target's containers, running or not (`all`), oldest name first for stable output.
    pub async fn containers(
        &self,
        selector: &Selector,
        all: bool,
    ) -> Result<Vec<ContainerInfo>, DockerError> {
        let filters = HashMap::from([("label".to_string(), selector.docker_label_filters())]);
        let opts = ListContainersOptionsBuilder::default()
            .all(all)
            .filters(&filters)
            .build();
        let list = tokio::time::timeout(LIST_TIMEOUT, self.docker.list_containers(Some(opts)))
            .await
            .map_err(|_| DockerError::Timeout {
                endpoint: self.endpoint.clone(),
                action: "listing containers".into(),
                within: LIST_TIMEOUT,
            })?
            .map_err(self.api_err("listing containers"))?;
        let mut out: Vec<ContainerInfo> = list
            .into_iter()
            .map(container_info)
            .filter(|c| selector.matches(&c.labels))
            .collect();
        self.name_moved_tags(&mut out).await;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A container whose tag was moved to another image after it was created (a moving tag such
    /// as `main` pulled again, or the same tag pushed anew) is listed by the engine with the
    /// image ID instead of `repo:tag`: its tag, and with it the deploy, would be unknown, never
    /// made known-good. Its `Config.Image` still names what it was created from. A container's
    /// config never changes, so each is inspected once; an inspect that fails leaves the ID.
    async fn name_moved_tags(&self, containers: &mut [ContainerInfo]) {
        for c in containers
            .iter_mut()
            .filter(|c| c.image_ref.starts_with("sha256:"))
        {
            let known = self.created_from().get(&c.id).cloned();
            let named = match known {
                Some(named) => named,
                None => {
                    let Ok(inspected) = self.inspect(&c.id).await else {
                        continue;
                    };
                    let named = inspected
                        .config
                        .and_then(|config| config.image)
                        .filter(|image| !image.starts_with("sha256:"));
                    let mut memory = self.created_from();
                    if memory.len() >= CREATED_FROM_LIMIT {
                        memory.clear();
                    }
                    memory.insert(c.id.clone(), named.clone());
                    named
                }
            };
            if let Some(named) = named {
                c.image_ref = named;
            }
        }
    }

    fn created_from(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<String>>> {
        self.created_from.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Container events (start, die, health_status, ...) as they happen: `(action, labels)`.
    /// The stream ends when the engine goes away; the caller reconnects and reconciles.
    pub fn container_events(
        &self,
    ) -> impl futures_util::Stream<Item = Result<(String, BTreeMap<String, String>), DockerError>> + '_
    {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "event".to_string(),
                [
                    "create",
                    "start",
                    "die",
                    "stop",
                    "kill",
                    "destroy",
                    "health_status",
                    "restart",
                    "oom",
                    "pause",
                    "unpause",
                    "rename",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ),
        ]);
        let opts = bollard::query_parameters::EventsOptionsBuilder::default()
            .filters(&filters)
            .build();
        self.docker.events(Some(opts)).map(move |item| {
            let msg = item.map_err(self.api_err("streaming events"))?;
            Ok(event_of(msg))
        })
    }

    /// The last `lines` lines of a container's stdout and stderr, for incident records.
    pub async fn logs_tail(&self, id: &str, lines: usize) -> Result<String, DockerError> {
        let opts = bollard::query_parameters::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = self.docker.logs(id, Some(opts));
        let mut out = String::new();
        while let Some(item) = stream.next().await {
            out.push_str(
                &item
                    .map_err(self.api_err(format!("reading logs of {id}")))?
                    .to_string(),
            );
        }
        Ok(out)
    }

    /// One container's full configuration, within the listing deadline (a hung engine must
    /// not hold `init` or a recreate).
    pub async fn inspect(&self, id: &str) -> Result<ContainerInspectResponse, DockerError> {
        tokio::time::timeout(LIST_TIMEOUT, self.docker.inspect_container(id, None))
            .await
            .map_err(|_| DockerError::Timeout {
                endpoint: self.endpoint.clone(),
                action: format!("inspecting container {id}"),
                within: LIST_TIMEOUT,
            })?
            .map_err(self.api_err(format!("inspecting container {id}")))
    }

    /// The labels an image carries (its `LABEL`s); empty when the engine does not have it.
    /// Container labels equal to these came from the image, not from whoever started it.
    pub async fn image_labels(&self, image: &str) -> Result<BTreeMap<String, String>, DockerError> {
        Ok(self
            .image_inspect(image)
            .await?
            .and_then(|i| i.config)
            .and_then(|c| c.labels)
            .map(|l| l.into_iter().collect())
            .unwrap_or_default())
    }

    /// The local image ID for a reference, `None` when the engine does not have it.
    pub async fn image_id(&self, image: &str) -> Result<Option<String>, DockerError> {
        Ok(self.image_inspect(image).await?.and_then(|i| i.id))
    }

    /// The registry digest (`repo@sha256:...`) of a local image, when it was pulled or pushed.
    pub async fn image_digest(&self, image: &str) -> Result<Option<String>, DockerError> {
        Ok(self
            .image_inspect(image)
            .await?
            .and_then(|i| i.repo_digests)
            .and_then(|d| d.into_iter().next()))
    }

    async fn image_inspect(
        &self,
        image: &str,
    ) -> Result<Option<bollard::models::ImageInspect>, DockerError> {
        let answer = tokio::time::timeout(LIST_TIMEOUT, self.docker.inspect_image(image))
            .await
            .map_err(|_| DockerError::Timeout {
                endpoint: self.endpoint.clone(),
                action: format!("inspecting image {image}"),
                within: LIST_TIMEOUT,
            })?;
        match answer {
            Ok(i) => Ok(Some(i)),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.api_err(format!("inspecting image {image}"))(e)),
        }
    }

    /// Pulls `repo:tag` from its registry; the stream's error messages are kept verbatim.
    /// Pulls `repo:tag`, giving up after [`PULL_TIMEOUT`]: a registry that accepts and never
    /// answers must fail the step, not hold the rollback (and the target's watcher) forever.
    pub async fn pull(&self, repo: &str, tag: &str) -> Result<(), DockerError> {
        tokio::time::timeout(PULL_TIMEOUT, self.pull_unbounded(repo, tag))
            .await
            .map_err(|_| DockerError::Timeout {
                endpoint: self.endpoint.clone(),
                action: format!("the pull of {repo}:{tag}"),
                within: PULL_TIMEOUT,
            })?
    }

    async fn pull_unbounded(&self, repo: &str, tag: &str) -> Result<(), DockerError> {
        let opts = CreateImageOptionsBuilder::default()
            .from_image(repo)
            .tag(tag)
            .build();
        let mut stream = self.docker.create_image(Some(opts), None, None);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| DockerError::Pull {
                image: format!("{repo}:{tag}"),
                message: e.to_string(),
            })?;
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(DockerError::Pull {
                    image: format!("{repo}:{tag}"),
                    message: detail,
                });
            }
        }
        Ok(())
    }

    /// Replaces a container by one with the same configuration but `image` (an image ID, so
    /// the result is pinned). The old container is kept, stopped and renamed, until the new one
    /// has started, and restored if it does not: a failed recreate leaves the old version running.
    pub async fn recreate_with_image(&self, id: &str, image: &str) -> Result<String, DockerError> {
        let old = self.inspect(id).await?;
        let name = old
            .name
            .clone()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string();
        let aside = format!("{name}-rollwatch-old");
        // What the old image itself set must not be carried over, or its ENV (DEMO_FAULT,
        // APP_VERSION, ...) would override the known-good image's own.
        let old_image = match old.image.as_deref() {
            Some(img) => self.image_inspect(img).await?.and_then(|i| i.config),
            None => None,
        };
        let body = recreate_body(&old, old_image.as_ref(), image);
        let stop = StopContainerOptionsBuilder::default().t(10).build();
        self.docker
            .stop_container(id, Some(stop))
            .await
            .map_err(self.api_err(format!("stopping {name}")))?;
        let rename = RenameContainerOptionsBuilder::default()
            .name(&aside)
            .build();
        self.docker
            .rename_container(id, rename)
            .await
            .map_err(self.api_err(format!("renaming {name}")))?;
        let created = async {
            let opts = CreateContainerOptionsBuilder::default().name(&name).build();
            let new = self
                .docker
                .create_container(Some(opts), body)
                .await
                .map_err(self.api_err(format!("creating {name} from {image}")))?;
            if let Err(e) = self.docker.start_container(&new.id, None).await {
                let _ = self.remove(&new.id).await;
                return Err(self.api_err(format!("starting {name} from {image}"))(e));
            }
            Ok(new.id)
        }
        .await;
        match created {
            Ok(new_id) => {
                self.remove(id).await?;
                Ok(new_id)
            }
            Err(e) => {
                // Put the previous container back exactly as it was.
                let back = RenameContainerOptionsBuilder::default().name(&name).build();
                let _ = self.docker.rename_container(id, back).await;
                let _ = self.docker.start_container(id, None).await;
                Err(e)
            }
        }
    }

    async fn remove(&self, id: &str) -> Result<(), DockerError> {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        self.docker
            .remove_container(id, Some(opts))
            .await
            .map_err(self.api_err(format!("removing {id}")))
    }
}

/// One container of a listing, as much as decisions need.
fn container_info(c: bollard::models::ContainerSummary) -> ContainerInfo {
    ContainerInfo {
        id: c.id.unwrap_or_default(),
        name: c
            .names
            .and_then(|n| n.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        image_ref: c.image.unwrap_or_default(),
        image_id: c.image_id.unwrap_or_default(),
        state: c.state.map(|s| s.to_string()).unwrap_or_default(),
        // API 1.41 has no Health field in listings; the status text carries it:
        // "Up 5 seconds (unhealthy)".
        health: c.status.as_deref().and_then(health_from_status),
        exit_code: c.status.as_deref().and_then(exit_code_from_status),
        created: c.created.unwrap_or(0),
        compose_project: compose_label(&c.labels, "project"),
        compose_working_dir: compose_label(&c.labels, "project.working_dir"),
        compose_config_files: compose_label(&c.labels, "project.config_files"),
        labels: c.labels.unwrap_or_default().into_iter().collect(),
    }
}

/// A container event as `(action, labels)`.
fn event_of(msg: bollard::models::EventMessage) -> (String, BTreeMap<String, String>) {
    let action = msg.action.unwrap_or_default();
    let labels = msg
        .actor
        .and_then(|a| a.attributes)
        .unwrap_or_default()
        .into_iter()
        .collect();
    (action, labels)
}

fn exit_code_from_status(status: &str) -> Option<i64> {
    let rest = status.strip_prefix("Exited (")?;
    rest.split_once(')')?.0.parse().ok()
}

/// The value of compose's `com.docker.compose.<key>` label, when set.
fn compose_label(labels: &Option<HashMap<String, String>>, key: &str) -> Option<String> {
    labels
        .as_ref()?
        .get(&format!("com.docker.compose.{key}"))
        .cloned()
}

fn health_from_status(status: &str) -> Option<String> {
    ["unhealthy", "healthy", "health: starting"]
        .iter()
        .find(|h| status.contains(&format!("({h})")))
        .map(|h| h.trim_start_matches("health: ").to_string())
}

/// The create request that reproduces `old` with another image: same env, labels, command,
/// entrypoint, host config (network mode, mounts, restart policy) and networks. Docker reports a
/// container's config merged with its image's defaults; values that only came from the old
/// image (`image_defaults`) are dropped so the new image's defaults apply instead.
fn recreate_body(
    old: &ContainerInspectResponse,
    image_defaults: Option<&bollard::models::ImageConfig>,
    image: &str,
) -> ContainerCreateBody {
    let c = old.config.clone().unwrap_or_default();
    let d = image_defaults.cloned().unwrap_or_default();
    let env = c.env.map(|env| {
        let inherited = d.env.unwrap_or_default();
        env.into_iter()
            .filter(|e| !inherited.contains(e))
            .collect::<Vec<_>>()
    });
    let labels = c.labels.map(|labels| {
        let inherited = d.labels.unwrap_or_default();
        labels
            .into_iter()
            .filter(|(k, v)| inherited.get(k) != Some(v))
            .collect::<HashMap<_, _>>()
    });
    let unless_inherited = |own: Option<Vec<String>>, inherited: Option<Vec<String>>| {
        own.filter(|o| Some(o) != inherited.as_ref())
    };
    let cmd = unless_inherited(c.cmd, d.cmd);
    let entrypoint = unless_inherited(c.entrypoint, d.entrypoint);
    let working_dir = c
        .working_dir
        .filter(|w| Some(w) != d.working_dir.as_ref() && !w.is_empty());
    let user = c
        .user
        .filter(|u| Some(u) != d.user.as_ref() && !u.is_empty());
    let networks = old
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .map(|nets| {
            nets.into_iter()
                .map(|(k, mut v)| {
                    // Addresses and endpoint IDs belong to the old container.
                    v.endpoint_id = None;
                    v.ip_address = None;
                    v.gateway = None;
                    v.mac_address = None;
                    (k, v)
                })
                .collect()
        });
    ContainerCreateBody {
        hostname: c.hostname,
        domainname: c.domainname,
        user,
        exposed_ports: c.exposed_ports,
        tty: c.tty,
        open_stdin: c.open_stdin,
        env,
        cmd,
        healthcheck: c.healthcheck,
        image: Some(image.to_string()),
        volumes: c.volumes,
        working_dir,
        entrypoint,
        labels,
        stop_signal: c.stop_signal,
        stop_timeout: c.stop_timeout,
        host_config: old.host_config.clone(),
        networking_config: networks.map(|endpoints_config| NetworkingConfig {
            endpoints_config: Some(endpoints_config),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "docker_props.rs"]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_or_name_the_bad_value() {
        assert_eq!(
            DockerEndpoint::try_from("unix:///run/docker.sock".to_string()),
            Ok(DockerEndpoint::Unix("/run/docker.sock".into()))
        );
        assert_eq!(
            DockerEndpoint::try_from("tcp://127.0.0.1:2375".to_string()),
            Ok(DockerEndpoint::Tcp("127.0.0.1:2375".into()))
        );
        assert!(matches!(
            DockerEndpoint::try_from("ssh://deploy@host".to_string()),
            Ok(DockerEndpoint::Ssh { .. })
        ));
        assert!(
            DockerEndpoint::try_from("ssh://deploy@host:2222".to_string())
                .unwrap_err()
                .contains("no port")
        );
        let err = DockerEndpoint::try_from("http://x".to_string()).unwrap_err();
        assert!(err.contains("http://x"), "{err}");
    }

    #[test]
    fn health_is_read_from_the_status_text() {
        assert_eq!(
            health_from_status("Up 5 seconds (unhealthy)").as_deref(),
            Some("unhealthy")
        );
        assert_eq!(
            health_from_status("Up 1 minute (healthy)").as_deref(),
            Some("healthy")
        );
        assert_eq!(
            health_from_status("Up 2 seconds (health: starting)").as_deref(),
            Some("starting")
        );
        assert_eq!(health_from_status("Exited (1) 3 seconds ago"), None);
        assert_eq!(
            exit_code_from_status("Exited (137) 3 seconds ago"),
            Some(137)
        );
        assert_eq!(exit_code_from_status("Up 3 seconds"), None);
    }
}
