//! From what the engine says about running containers to a proposed target: env and role, the
//! selector, the executor and the ports the health endpoint may listen on. Pure functions, so
//! every guess is unit-tested; nothing here talks to Docker or the network.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

use crate::rollback::envfile;
use crate::target::Env;

/// One compose service or one `docker run` container, as read from the engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// Container names, sorted.
    pub containers: Vec<String>,
    /// `None` for containers started without compose.
    pub compose: Option<ComposeFound>,
    /// The first container's own labels (those its image also carries removed).
    pub own_labels: BTreeMap<String, String>,
    /// The image reference the container was created from, e.g. `reg:5000/shop/backend:v1`.
    pub image: String,
    /// `KEY=VALUE` entries of the container's environment.
    pub env: Vec<String>,
    /// Entrypoint then command.
    pub command: Vec<String>,
    /// The Docker `HEALTHCHECK` test (`["CMD", "curl", ...]`), empty when there is none.
    pub healthcheck: Vec<String>,
    /// Host ports published with `-p`/`ports:` (none under host networking).
    pub published: Vec<u16>,
    /// Container ports the image declares (`EXPOSE`); under host networking they are host ports.
    pub exposed: Vec<u16>,
    pub host_network: bool,
}

/// What compose recorded in a service's labels, and the `.env` beside its compose file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComposeFound {
    pub project: String,
    pub service: String,
    pub working_dir: Option<PathBuf>,
    /// Text of `<working_dir>/.env`, when it could be read.
    pub env_file: Option<String>,
}

/// Where a port candidate came from, shown beside the probe result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortCandidate {
    pub port: u16,
    /// A path the source names (a healthcheck's URL path), probed before the usual ones.
    pub path: Option<String>,
    pub source: String,
}

/// A target as `init` proposes it, before its health URL was probed.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// `None`: neither the path nor the name says staging or production.
    pub env: Option<Env>,
    pub role: String,
    /// Where env and role were read from, for the comment above the target.
    pub guessed_from: String,
    pub selector: SelectorProposal,
    pub executor: ExecutorProposal,
    pub ports: Vec<PortCandidate>,
    pub found: Found,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectorProposal {
    Compose {
        project: String,
        service: String,
    },
    /// Label pairs only this container carries; empty when it has none to select by.
    Labels(BTreeMap<String, String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutorProposal {
    Compose {
        dir: Option<PathBuf>,
        registry: String,
        /// Only when the image is not `<registry>/<role>`.
        image: Option<String>,
    },
    Docker {
        image: String,
    },
}

/// The repository of an image reference: the tag (after the last `:` past the last `/`) and any
/// digest removed.
pub fn repository_of(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => &image[..last_slash + i],
        None => image,
    }
}

/// `staging`/`production` from one word of a path or name, with the usual short forms.
fn env_word(word: &str) -> Option<Env> {
    match word.to_ascii_lowercase().as_str() {
        "staging" | "stage" | "stg" => Some(Env::Staging),
        "production" | "prod" | "prd" | "live" => Some(Env::Production),
        _ => None,
    }
}

/// A role name the config accepts: lowercase letters, digits and `-`.
fn role_name(s: &str) -> String {
    let cleaned: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let trimmed = cleaned.trim_matches('-');
    let mut role: String = trimmed.chars().take(63).collect();
    if role.is_empty() {
        role = "app".into();
    }
    role
}

/// Env and role from `/opt/<app>/<env>/<role>`: the component naming an env, and the one after
/// it as the role (the service name when the env is the last component).
fn from_path(dir: &Path, service: &str) -> Option<(Env, String)> {
    let parts: Vec<String> = dir
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let i = parts.iter().rposition(|p| env_word(p).is_some())?;
    let env = env_word(&parts[i])?;
    let role = parts.get(i + 1).map_or(service, String::as_str);
    Some((env, role_name(role)))
}

/// Env from the words of a name split at `-`, `_` and `.` (`shop-production-backend`).
fn from_name(name: &str) -> Option<Env> {
    name.split(['-', '_', '.']).find_map(env_word)
}

/// Proposes a target for one compose service or `docker run` container.
pub fn propose(found: Found) -> Proposal {
    let ports = port_candidates(&found);
    match found.compose.clone() {
        Some(c) => propose_compose(found, c, ports),
        None => propose_docker(found, ports),
    }
}

fn propose_compose(found: Found, c: ComposeFound, ports: Vec<PortCandidate>) -> Proposal {
    let by_path = c
        .working_dir
        .as_deref()
        .and_then(|d| from_path(d, &c.service));
    let (env, role, guessed_from) = match by_path {
        Some((env, role)) => (Some(env), role, "the directory path".to_string()),
        None => (
            from_name(&c.project),
            role_name(&c.service),
            format!("the project name {:?} and the service name", c.project),
        ),
    };
    let repository = repository_of(&found.image).to_string();
    let registry = c
        .env_file
        .as_deref()
        .and_then(|t| envfile::get_var(t, "CONTAINER_REGISTRY"))
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| {
            repository
                .rsplit_once('/')
                .map_or(repository.clone(), |(parent, _)| parent.to_string())
        });
    let image = (repository != format!("{registry}/{role}")).then_some(repository);
    Proposal {
        env,
        role,
        guessed_from,
        selector: SelectorProposal::Compose {
            project: c.project.clone(),
            service: c.service.clone(),
        },
        executor: ExecutorProposal::Compose {
            dir: c.working_dir.clone(),
            registry,
            image,
        },
        ports,
        found,
    }
}

fn propose_docker(found: Found, ports: Vec<PortCandidate>) -> Proposal {
    let name = found.containers.first().cloned().unwrap_or_default();
    let repository = repository_of(&found.image).to_string();
    let image_role = repository.rsplit('/').next().unwrap_or("app").to_string();
    let env = from_name(&name);
    // The word after the env in `shop-production-backend`, else the image's last component.
    let words: Vec<&str> = name.split(['-', '_', '.']).collect();
    let role = words
        .iter()
        .position(|w| env_word(w).is_some())
        .and_then(|i| words.get(i + 1))
        .map_or_else(|| role_name(&image_role), |w| role_name(w));
    let selector = SelectorProposal::Labels(
        found
            .own_labels
            .iter()
            .filter(|(k, _)| !k.starts_with("com.docker.compose."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    Proposal {
        env,
        role,
        guessed_from: format!("the container name {name:?}"),
        selector,
        executor: ExecutorProposal::Docker { image: repository },
        ports,
        found,
    }
}

static URL_PORT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"https?://(?:\[[^\]]*\]|[^/\s:'\x22]+):(\d{1,5})(/[^\s'\x22;|&]*)?")
        .unwrap_or_else(|_| unreachable!())
});

static FLAG_PORT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^--?(?:port|http-port|listen|bind|addr|address|p)(?:=(.*))?$")
        .unwrap_or_else(|_| unreachable!())
});

/// A port number in `8080`, `:8080`, `0.0.0.0:8080` or `[::]:8080`.
fn port_in(value: &str) -> Option<u16> {
    let tail = value.rsplit(':').next().unwrap_or(value);
    tail.parse::<u16>().ok().filter(|p| *p > 0)
}

/// `PORT`, `APP_PORT`, `HTTP_PORT`: a variable whose name ends in `PORT`.
fn is_port_variable(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper == "PORT" || upper.ends_with("_PORT")
}

/// Every port the service may answer on, most telling source first: the healthcheck's URL (it
/// names the path too), published ports, `*PORT` variables of the container and of `.env`,
/// port flags of the command, and the image's `EXPOSE`. Each port appears once.
pub fn port_candidates(found: &Found) -> Vec<PortCandidate> {
    let mut out: Vec<PortCandidate> = Vec::new();
    let mut push = |port: u16, path: Option<String>, source: String| {
        if !out.iter().any(|c| c.port == port) {
            out.push(PortCandidate { port, path, source });
        }
    };
    let check = found.healthcheck.join(" ");
    for cap in URL_PORT.captures_iter(&check) {
        if let Some(port) = cap.get(1).and_then(|m| m.as_str().parse().ok()) {
            let path = cap.get(2).map(|m| m.as_str().to_string());
            push(port, path, "the Docker healthcheck".into());
        }
    }
    for &port in &found.published {
        push(port, None, "a published port".into());
    }
    for (name, value) in found.env.iter().filter_map(|e| e.split_once('=')) {
        if let Some(port) = is_port_variable(name).then(|| port_in(value)).flatten() {
            push(port, None, format!("container variable {name}"));
        }
    }
    let env_file = found.compose.as_ref().and_then(|c| c.env_file.as_deref());
    for line in env_file.unwrap_or_default().lines() {
        let line = line.trim_start();
        let line = line.strip_prefix("export ").unwrap_or(line);
        if let Some((name, value)) = line.split_once('=') {
            let value = value.trim().trim_matches(['"', '\'']);
            if let Some(port) = is_port_variable(name.trim())
                .then(|| port_in(value))
                .flatten()
            {
                push(port, None, format!(".env variable {}", name.trim()));
            }
        }
    }
    let mut args = found.command.iter().peekable();
    while let Some(arg) = args.next() {
        let Some(cap) = FLAG_PORT.captures(arg) else {
            for cap in URL_PORT.captures_iter(arg) {
                if let Some(port) = cap.get(1).and_then(|m| m.as_str().parse().ok()) {
                    push(port, None, "the command's URL".into());
                }
            }
            continue;
        };
        let value = match cap.get(1) {
            Some(v) => Some(v.as_str().to_string()),
            None => args.next().cloned(),
        };
        if let Some(port) = value.as_deref().and_then(port_in) {
            push(
                port,
                None,
                format!("the command flag {}", arg.split('=').next().unwrap_or(arg)),
            );
        }
    }
    for &port in &found.exposed {
        push(port, None, "the image's EXPOSE".into());
    }
    out
}

/// Makes `(env, role)` unique: a second target with the same pair gets its service (or
/// container) name appended to the role, then a number.
pub fn dedupe_roles(proposals: &mut [Proposal]) {
    let mut seen: BTreeSet<(Option<Env>, String)> = BTreeSet::new();
    for p in proposals.iter_mut() {
        if seen.contains(&(p.env, p.role.clone())) {
            let suffix = match &p.selector {
                SelectorProposal::Compose { service, .. } => service.clone(),
                SelectorProposal::Labels(_) => {
                    p.found.containers.first().cloned().unwrap_or_default()
                }
            };
            let base = role_name(&format!("{}-{suffix}", p.role));
            let mut role = base.clone();
            let mut n = 2;
            while seen.contains(&(p.env, role.clone())) {
                role = format!("{base}-{n}");
                n += 1;
            }
            p.role = role;
        }
        seen.insert((p.env, p.role.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compose(project: &str, service: &str, dir: &str, env_file: &str) -> Found {
        Found {
            containers: vec![format!("{project}-{service}-1")],
            compose: Some(ComposeFound {
                project: project.into(),
                service: service.into(),
                working_dir: Some(dir.into()),
                env_file: Some(env_file.into()),
            }),
            image: "127.0.0.1:5000/shop/backend:v1.0.0".into(),
            host_network: true,
            ..Found::default()
        }
    }

    #[test]
    fn repository_drops_tag_and_digest_but_not_a_registry_port() {
        assert_eq!(
            repository_of("127.0.0.1:5000/shop/api:v1"),
            "127.0.0.1:5000/shop/api"
        );
        assert_eq!(
            repository_of("127.0.0.1:5000/shop/api"),
            "127.0.0.1:5000/shop/api"
        );
        assert_eq!(repository_of("nginx@sha256:abc"), "nginx");
        assert_eq!(repository_of("nginx:1.27@sha256:abc"), "nginx");
    }

    #[test]
    fn runbook_path_gives_env_and_role_and_env_file_the_registry() {
        let f = compose(
            "whatever",
            "api",
            "/opt/shop/production/backend",
            "CONTAINER_REGISTRY=127.0.0.1:5000/shop\nIMAGE_TAG=v1.0.0\n",
        );
        let p = propose(f);
        assert_eq!(p.env, Some(Env::Production));
        assert_eq!(p.role, "backend");
        assert_eq!(
            p.executor,
            ExecutorProposal::Compose {
                dir: Some("/opt/shop/production/backend".into()),
                registry: "127.0.0.1:5000/shop".into(),
                image: None,
            }
        );
        assert_eq!(
            p.selector,
            SelectorProposal::Compose {
                project: "whatever".into(),
                service: "api".into()
            }
        );
    }

    #[test]
    fn project_name_is_read_when_the_path_says_nothing() {
        let p = propose(compose("shop-stg-web", "web", "/srv/web", ""));
        assert_eq!((p.env, p.role.as_str()), (Some(Env::Staging), "web"));
        // No CONTAINER_REGISTRY: the image's repository parent, and the image spelled out
        // because it is not <registry>/<role>.
        assert_eq!(
            p.executor,
            ExecutorProposal::Compose {
                dir: Some("/srv/web".into()),
                registry: "127.0.0.1:5000/shop".into(),
                image: Some("127.0.0.1:5000/shop/backend".into()),
            }
        );
        assert_eq!(propose(compose("web", "web", "/srv/web", "")).env, None);
    }

    #[test]
    fn ports_come_from_every_source_once_healthcheck_first() {
        let mut f = compose("p", "s", "/opt/a/staging/b", "APP_PORT=8081\nOTHER=1\n");
        f.healthcheck = vec![
            "CMD-SHELL".into(),
            "curl -fsS http://localhost:8080/healthz || exit 1".into(),
        ];
        f.env = vec![
            "DEMO_PORT=8081".into(),
            "PORTAL=9".into(),
            "HTTP_PORT=:8082".into(),
        ];
        f.command = vec![
            "serve".into(),
            "--port".into(),
            "8083".into(),
            "--bind=0.0.0.0:8084".into(),
        ];
        f.exposed = vec![8080, 8085];
        let got: Vec<(u16, Option<String>)> = port_candidates(&f)
            .into_iter()
            .map(|c| (c.port, c.path))
            .collect();
        assert_eq!(
            got,
            vec![
                (8080, Some("/healthz".into())),
                (8081, None),
                (8082, None),
                (8083, None),
                (8084, None),
                (8085, None),
            ]
        );
    }

    #[test]
    fn docker_run_container_is_selected_by_its_own_labels() {
        let mut own = BTreeMap::new();
        own.insert("team".to_string(), "shop".to_string());
        let f = Found {
            containers: vec!["shop-production-api".into()],
            own_labels: own.clone(),
            image: "127.0.0.1:5000/shop/api:v2".into(),
            ..Found::default()
        };
        let p = propose(f);
        assert_eq!((p.env, p.role.as_str()), (Some(Env::Production), "api"));
        assert_eq!(p.selector, SelectorProposal::Labels(own));
        assert_eq!(
            p.executor,
            ExecutorProposal::Docker {
                image: "127.0.0.1:5000/shop/api".into()
            }
        );
    }

    #[test]
    fn same_env_and_role_twice_gets_the_service_appended() {
        let a = propose(compose("a", "web", "/opt/x/staging/backend", ""));
        let b = propose(compose("b", "worker", "/opt/x/staging/backend", ""));
        let mut all = vec![a, b];
        dedupe_roles(&mut all);
        assert_eq!(all[0].role, "backend");
        assert_eq!(all[1].role, "backend-worker");
    }
}
