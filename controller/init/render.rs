//! The config file `init` writes: one commented `[[targets]]` table per accepted proposal. What
//! could not be guessed is written as a commented line with the reason, so the file fails
//! `check-config` naming that field rather than holding a wrong value.

use std::fmt::Write;

use super::propose::{ExecutorProposal, Proposal, SelectorProposal};
use super::HealthFound;

/// A TOML string literal (quoted and escaped).
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A proposal with its probe result, as accepted (possibly edited) by the user.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub proposal: Proposal,
    pub health: Option<HealthFound>,
    /// Tried `(port, source)` pairs, for the comment when no health URL was found.
    pub tried: Vec<String>,
}

impl Accepted {
    /// How many required fields are written commented out: the env, the health URL, the
    /// selector of a container with no labels of its own.
    pub fn unguessed(&self) -> usize {
        let no_labels =
            matches!(&self.proposal.selector, SelectorProposal::Labels(l) if l.is_empty());
        usize::from(self.proposal.env.is_none())
            + usize::from(self.health.is_none())
            + usize::from(no_labels)
    }
}

/// The whole file: header, controller table, targets.
pub fn render(docker: Option<&str>, accepted: &[Accepted], written_by: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Written by `{written_by}`.");
    let _ = writeln!(
        out,
        "# Prove it before turning automation on: rollwatch --config <this file> check-config --probe"
    );
    let _ = writeln!(
        out,
        "# Every field and its default: the README's configuration reference.\n"
    );
    out.push_str("[controller]\nstore = \"rollwatch.db\"\nlisten = \"127.0.0.1:9860\"\n");
    for a in accepted {
        out.push('\n');
        out.push_str(&target(docker, a));
    }
    out
}

fn target(docker: Option<&str>, a: &Accepted) -> String {
    let p = &a.proposal;
    let mut t = String::new();
    let what = match &p.selector {
        SelectorProposal::Compose { project, service } => {
            format!("compose project {project:?}, service {service:?}")
        }
        SelectorProposal::Labels(_) => "a container started with docker run".into(),
    };
    let _ = writeln!(
        t,
        "# {what}: {} ({}), image {}",
        p.found.containers.join(", "),
        plural(p.found.containers.len(), "container"),
        p.found.image
    );
    let _ = writeln!(t, "# env and role from {}", p.guessed_from);
    if let Some(h) = &a.health {
        let _ = writeln!(
            t,
            "# health: {} answered {} (port from {})",
            h.url, h.answer, h.source
        );
    }
    t.push_str("[[targets]]\n");
    match p.env {
        Some(env) => {
            let _ = writeln!(t, "env = \"{env}\"");
        }
        None => t.push_str(
            "# env = \"staging\"  # rollwatch init could not tell staging from production: set it\n",
        ),
    }
    let _ = writeln!(t, "role = {}", quoted(&p.role));
    if let Some(d) = docker {
        let _ = writeln!(t, "docker = {}", quoted(d));
    }
    t.push_str(&selector(&p.selector));
    match &a.health {
        Some(h) => {
            let _ = writeln!(t, "health = {{ url = {} }}", quoted(h.url.as_str()));
        }
        None => {
            let tried = if a.tried.is_empty() {
                "no port found in the healthcheck, published ports, *PORT variables, command flags or EXPOSE".to_string()
            } else {
                format!("tried {}", a.tried.join("; "))
            };
            let _ = writeln!(
                t,
                "# health = {{ url = \"http://127.0.0.1:PORT/health\" }}  # nothing answered on /health, /healthz or /up ({tried}): set it"
            );
        }
    }
    t.push_str(&executor(&p.executor));
    t
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn selector(s: &SelectorProposal) -> String {
    match s {
        SelectorProposal::Compose { project, service } => format!(
            "selector = {{ compose_project = {}, compose_service = {} }}\n",
            quoted(project),
            quoted(service)
        ),
        SelectorProposal::Labels(labels) if labels.is_empty() => {
            "# selector = { labels = { \"app\" = \"NAME\" } }  # the container has no labels of its own to be found by: start it with `docker run --label app=NAME`, then set this\n".into()
        }
        SelectorProposal::Labels(labels) => {
            let pairs: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{} = {}", quoted(k), quoted(v)))
                .collect();
            format!("selector = {{ labels = {{ {} }} }}\n", pairs.join(", "))
        }
    }
}

fn executor(e: &ExecutorProposal) -> String {
    match e {
        ExecutorProposal::Compose {
            dir,
            registry,
            image,
        } => {
            let mut fields = vec!["kind = \"compose\"".to_string()];
            if let Some(d) = dir {
                fields.push(format!("dir = {}", quoted(&d.display().to_string())));
            }
            fields.push(format!("registry = {}", quoted(registry)));
            if let Some(i) = image {
                fields.push(format!("image = {}", quoted(i)));
            }
            format!("executor = {{ {} }}\n", fields.join(", "))
        }
        ExecutorProposal::Docker { image } => {
            format!(
                "executor = {{ kind = \"docker\", image = {} }}\n",
                quoted(image)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::super::propose::{propose, ComposeFound, Found};
    use super::*;
    use crate::config::Config;

    fn found(dir: &str) -> Found {
        Found {
            containers: vec!["x-backend-1".into()],
            compose: Some(ComposeFound {
                project: "shop \"quoted\"".into(),
                service: "backend".into(),
                working_dir: Some(dir.into()),
                env_file: Some("CONTAINER_REGISTRY=127.0.0.1:5000/shop\n".into()),
            }),
            image: "127.0.0.1:5000/shop/backend:v1".into(),
            ..Found::default()
        }
    }

    fn health() -> Option<HealthFound> {
        Some(HealthFound {
            url: url::Url::parse("http://127.0.0.1:8080/health").unwrap(),
            answer: "HTTP 200 {\"status\":\"ok\"}".into(),
            source: "container variable PORT".into(),
            passed: true,
        })
    }

    #[test]
    fn a_fully_guessed_target_passes_the_config_check() {
        let a = Accepted {
            proposal: propose(found("/opt/shop/production/backend")),
            health: health(),
            tried: vec![],
        };
        let text = render(None, &[a], "rollwatch init --yes");
        let config = Config::parse(&text, Path::new("init.toml"), Path::new("/tmp"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.targets.len(), 1);
        assert_eq!(config.targets[0].id().to_string(), "production/backend");
        assert_eq!(
            config.targets[0].selector.compose_project.as_deref(),
            Some("shop \"quoted\"")
        );
    }

    #[test]
    fn what_was_not_guessed_fails_the_check_naming_the_field() {
        let a = Accepted {
            proposal: propose(found("/srv/backend")),
            health: health(),
            tried: vec![],
        };
        let text = render(None, &[a], "rollwatch init --yes");
        let err = Config::parse(&text, Path::new("init.toml"), Path::new("/tmp"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("missing field `env`"), "{err}");

        let no_labels = Found {
            containers: vec!["lonely".into()],
            image: "reg/app:1".into(),
            own_labels: BTreeMap::new(),
            ..Found::default()
        };
        let a = Accepted {
            proposal: propose(no_labels),
            health: None,
            tried: vec!["8080 (container variable PORT)".into()],
        };
        assert_eq!(a.unguessed(), 3, "env, selector and health");
        let text = render(None, &[a], "rollwatch init --yes");
        assert!(text.contains("# selector = "), "{text}");
        assert!(
            text.contains("tried 8080 (container variable PORT)"),
            "{text}"
        );
    }
}
