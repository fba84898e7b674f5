//! Which compose project, directory and files a rollback acts on. Compose names a project after
//! `-p`, else `COMPOSE_PROJECT_NAME`, else the directory; a rollback run under another name than
//! the watched containers' creates a second project beside the bad one. So the project comes from
//! the containers' own labels, and this module never guesses: it refuses when it cannot tell.
//! Pure functions, except [`project_warnings`], which reads local `.env` files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{envfile, ExecPlan};
use crate::config::{Config, ExecutorConfig};
use crate::docker::ContainerInfo;
use crate::target::TargetId;

/// What the watched containers' compose labels say about one project they belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeProjectFacts {
    /// `com.docker.compose.project`.
    pub project: String,
    /// `com.docker.compose.project.working_dir`, when compose recorded it.
    pub working_dir: Option<PathBuf>,
    /// `com.docker.compose.project.config_files`, absolute. Compose v1 records them relative to
    /// the working directory, v2 absolute.
    pub config_files: Vec<PathBuf>,
    /// Image IDs the project's containers run (the running ones, else all): what a restore
    /// after a failed `up` must bring back.
    pub image_ids: Vec<String>,
}

/// Groups the watched containers by compose project; containers without the label are skipped.
pub fn compose_projects_of(containers: &[ContainerInfo]) -> Vec<ComposeProjectFacts> {
    let projects: BTreeSet<&str> = containers
        .iter()
        .filter_map(|c| c.compose_project.as_deref())
        .collect();
    projects
        .into_iter()
        .map(|project| {
            let members: Vec<&ContainerInfo> = containers
                .iter()
                .filter(|c| c.compose_project.as_deref() == Some(project))
                .collect();
            facts_of(project, &members)
        })
        .collect()
}

fn facts_of(project: &str, members: &[&ContainerInfo]) -> ComposeProjectFacts {
    let working_dir = members
        .iter()
        .find_map(|c| c.compose_working_dir.as_deref().filter(|d| !d.is_empty()))
        .map(PathBuf::from);
    let config_files = members
        .iter()
        .find_map(|c| c.compose_config_files.as_deref())
        .map(|files| {
            files
                .split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(|f| match &working_dir {
                    Some(wd) => wd.join(f),
                    None => PathBuf::from(f),
                })
                .collect()
        })
        .unwrap_or_default();
    let running: Vec<&&ContainerInfo> = members.iter().filter(|c| c.state == "running").collect();
    let source: Vec<&ContainerInfo> = if running.is_empty() {
        members.to_vec()
    } else {
        running.into_iter().copied().collect()
    };
    let image_ids: BTreeSet<String> = source.iter().map(|c| c.image_id.clone()).collect();
    ComposeProjectFacts {
        project: project.to_string(),
        working_dir,
        config_files,
        image_ids: image_ids.into_iter().collect(),
    }
}

/// Where and as which project one host's compose commands run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeSite {
    pub dir: PathBuf,
    /// Passed as `-p`; `None` only when nothing names a project (compose's own default applies).
    pub project: Option<String>,
    /// Passed as `-f`, in order; empty when `dir` was configured (compose finds its files there).
    pub files: Vec<PathBuf>,
    /// Image IDs the project ran before the rollback; empty when unknown.
    pub previous_images: Vec<String>,
}

/// Why a compose rollback cannot tell where or as what to run; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteError {
    #[error("{target}: executor.dir is not set and no watched container carries compose's com.docker.compose.project.working_dir label (none found, or not started by compose); set executor.dir to the deployment directory; nothing was changed")]
    NoDirectory { target: TargetId },
    #[error("{target}: the watched containers belong to several compose projects ({projects}) and none was started from {dir}; set executor.project (or selector.compose_project) to the one to roll back; nothing was changed")]
    Ambiguous {
        target: TargetId,
        projects: String,
        dir: String,
    },
}

/// One host of a compose target, as configured.
#[derive(Debug, Clone, Copy)]
pub struct HostDir<'a> {
    /// `executor.dir` (or the `also` entry's dir); `None` takes it from the labels.
    pub dir: Option<&'a Path>,
    /// `executor.project`.
    pub project: Option<&'a str>,
    /// One of several hosts: only containers started from this host's directory name its
    /// project, since the others' belong to the other hosts.
    pub multi_host: bool,
}

/// Decides directory, project and files for one host. The project is the label of the watched
/// containers (those started from this host's directory, when several projects are watched),
/// else the selector's `compose_project`, else `executor.project`.
pub fn resolve_site(host: HostDir<'_>, plan: &ExecPlan) -> Result<ComposeSite, SiteError> {
    let facts = &plan.compose_projects;
    let from_dir: Vec<&ComposeProjectFacts> = match host.dir {
        Some(dir) => facts
            .iter()
            .filter(|f| f.working_dir.as_deref().is_some_and(|w| same_dir(w, dir)))
            .collect(),
        None => Vec::new(),
    };
    let labelled = match (from_dir.as_slice(), facts.as_slice()) {
        ([one], _) => Some(*one),
        (_, [one]) if !host.multi_host => Some(one),
        _ => None,
    };
    let project = labelled
        .map(|f| f.project.clone())
        .or_else(|| plan.selector_project.clone())
        .or_else(|| host.project.map(str::to_string));
    if project.is_none() && !host.multi_host && facts.len() > 1 {
        return Err(SiteError::Ambiguous {
            target: plan.target.clone(),
            projects: facts
                .iter()
                .map(|f| f.project.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            dir: host
                .dir
                .map(|d| d.display().to_string())
                .unwrap_or_else(|| "executor.dir (unset)".into()),
        });
    }
    let chosen = labelled.or_else(|| {
        let p = project.as_deref()?;
        facts.iter().find(|f| f.project == p)
    });
    let previous_images = chosen.map(|f| f.image_ids.clone()).unwrap_or_default();
    let (dir, files) = match host.dir {
        Some(d) => (d.to_path_buf(), Vec::new()),
        None => match chosen.and_then(|f| f.working_dir.clone().map(|w| (w, f))) {
            Some((w, f)) => (w, f.config_files.clone()),
            None => {
                return Err(SiteError::NoDirectory {
                    target: plan.target.clone(),
                })
            }
        },
    };
    Ok(ComposeSite {
        dir,
        project,
        files,
        previous_images,
    })
}

/// Paths compare equal ignoring a trailing slash or `.` components.
pub(super) fn same_dir(a: &Path, b: &Path) -> bool {
    a.components().eq(b.components())
}

/// Compose v1 (1.29, `get_project_name`): lowercase, then drop every character outside
/// `[-_a-z0-9]`. It applies to `-p`, `COMPOSE_PROJECT_NAME` and the directory name alike.
pub fn normalize_v1(name: &str) -> String {
    name.to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'))
        .collect()
}

/// Compose v2 (compose-go `NormalizeProjectName`): as v1, then leading `-` and `_` trimmed.
/// v2 applies it to the directory name only; a `-p` or `COMPOSE_PROJECT_NAME` that it would
/// change is refused ("invalid project name").
pub fn normalize_v2(name: &str) -> String {
    normalize_v1(name)
        .trim_start_matches(['-', '_'])
        .to_string()
}

/// A name both compose versions accept unchanged as `-p`.
pub fn is_valid_project_name(name: &str) -> bool {
    !name.is_empty() && normalize_v2(name) == name
}

/// The project compose would use in a directory without `-p`, per compose version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultProject {
    pub v1: String,
    pub v2: String,
    /// Taken from `COMPOSE_PROJECT_NAME` in the env file, else from the directory name.
    pub from_env_file: bool,
}

/// `dir`'s default project given its env file's text (`None`: no env file). A top-level `name:`
/// in a v2 compose file would also count; it is not read here.
pub fn default_project(dir: &Path, env_text: Option<&str>) -> DefaultProject {
    let from_env = env_text
        .and_then(|t| envfile::get_var(t, "COMPOSE_PROJECT_NAME"))
        .filter(|v| !v.is_empty());
    match from_env {
        Some(name) => DefaultProject {
            v1: normalize_v1(&name),
            v2: name,
            from_env_file: true,
        },
        None => {
            let base = dir
                .file_name()
                .map(|b| b.to_string_lossy().into_owned())
                .unwrap_or_default();
            let or_default = |s: String| if s.is_empty() { "default".into() } else { s };
            DefaultProject {
                v1: or_default(normalize_v1(&base)),
                v2: normalize_v2(&base),
                from_env_file: false,
            }
        }
    }
}

/// The warning for one directory whose default project is not the watched one, if any.
pub fn mismatch_warning(
    target: &TargetId,
    dir: &Path,
    env_file: &str,
    watched: &str,
    default: &DefaultProject,
) -> Option<String> {
    if default.v1 == watched && default.v2 == watched {
        return None;
    }
    let source = if default.from_env_file {
        format!("COMPOSE_PROJECT_NAME in {env_file}")
    } else {
        "the directory name".to_string()
    };
    let name = if default.v1 == default.v2 {
        format!("{:?}", default.v1)
    } else {
        format!(
            "{:?} (docker-compose v1) / {:?} (docker compose v2)",
            default.v1, default.v2
        )
    };
    Some(format!(
        "target {target}: a plain `docker compose up` in {} would use project {name} (from {source}), but the watched containers are in project {watched:?}; rollwatch passes `-p {watched}` to every compose command, so its rollbacks act on the watched project, but anyone running compose there by hand creates a second project; set COMPOSE_PROJECT_NAME={watched} in {env_file} to make them agree",
        dir.display()
    ))
}

/// Start-up and `check-config` warnings: every local compose directory whose default project
/// differs from the project the config says is watched (selector `compose_project`, else
/// `executor.project`). Remote directories are not read (that would need ssh at start-up).
pub fn project_warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for t in &config.targets {
        let ExecutorConfig::Compose(c) = &t.executor else {
            continue;
        };
        if t.strategy == crate::config::Strategy::Canary {
            // Its projects are the two slots, named from compose_project by rollwatch.
            continue;
        }
        let Some(watched) = t
            .selector
            .compose_project
            .as_deref()
            .or(c.project.as_deref())
        else {
            continue;
        };
        let primary = c.dir.as_deref().filter(|_| c.host.is_none());
        let extra = c
            .also
            .iter()
            .filter(|h| h.host.is_none())
            .map(|h| h.dir.as_path());
        for dir in primary.into_iter().chain(extra) {
            let env_text = std::fs::read_to_string(dir.join(&c.env_file)).ok();
            let default = default_project(dir, env_text.as_deref());
            out.extend(mismatch_warning(
                &t.id(),
                dir,
                &c.env_file,
                watched,
                &default,
            ));
        }
    }
    out
}

/// Logs [`project_warnings`] (the controller's start-up calls this).
pub fn warn_project_mismatches(config: &Config) {
    for w in project_warnings(config) {
        tracing::warn!("{w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tag::Tag;
    use crate::target::Env;

    fn id() -> TargetId {
        TargetId {
            env: Env::Staging,
            role: "backend".into(),
        }
    }

    fn container(project: &str, dir: &str, files: &str, image: &str, state: &str) -> ContainerInfo {
        ContainerInfo {
            id: format!("{project}-{image}"),
            name: format!("{project}_backend_1"),
            image_ref: "r/backend:v1".into(),
            image_id: image.into(),
            state: state.into(),
            health: None,
            exit_code: None,
            created: 0,
            labels: Default::default(),
            compose_project: Some(project.into()),
            compose_working_dir: Some(dir.into()),
            compose_config_files: Some(files.into()),
        }
    }

    fn plan(facts: Vec<ComposeProjectFacts>, selector: Option<&str>) -> ExecPlan {
        let mut p = ExecPlan::new(id(), Tag::parse("v1.0.0").unwrap(), "r/backend".into());
        p.compose_projects = facts;
        p.selector_project = selector.map(String::from);
        p
    }

    fn host(dir: Option<&Path>) -> HostDir<'_> {
        HostDir {
            dir,
            project: None,
            multi_host: false,
        }
    }

    #[test]
    fn labels_are_grouped_per_project_with_v1_relative_files_made_absolute() {
        let cs = [
            container(
                "shop-b",
                "/opt/b",
                "/opt/b/compose.yml",
                "sha256:b",
                "running",
            ),
            container(
                "shop-a",
                "/opt/a",
                "docker-compose.yml, override.yml",
                "sha256:old",
                "exited",
            ),
            container(
                "shop-a",
                "/opt/a",
                "docker-compose.yml",
                "sha256:new",
                "running",
            ),
        ];
        let facts = compose_projects_of(&cs);
        assert_eq!(facts.len(), 2);
        assert_eq!(facts[0].project, "shop-a");
        assert_eq!(
            facts[0].config_files,
            [
                PathBuf::from("/opt/a/docker-compose.yml"),
                PathBuf::from("/opt/a/override.yml")
            ]
        );
        assert_eq!(facts[0].image_ids, ["sha256:new"], "running ones only");
        assert_eq!(facts[1].config_files, [PathBuf::from("/opt/b/compose.yml")]);
    }

    #[test]
    fn the_label_project_wins_over_selector_and_config() {
        let facts = compose_projects_of(&[container(
            "shop-p",
            "/opt/backend",
            "docker-compose.yml",
            "sha256:1",
            "running",
        )]);
        let p = plan(facts, Some("other"));
        let h = HostDir {
            project: Some("configured"),
            ..host(Some(Path::new("/elsewhere")))
        };
        let site = resolve_site(h, &p).unwrap();
        assert_eq!(site.project.as_deref(), Some("shop-p"));
        assert_eq!(site.dir, PathBuf::from("/elsewhere"));
        assert!(
            site.files.is_empty(),
            "a configured dir keeps compose's own file lookup"
        );
        assert_eq!(site.previous_images, ["sha256:1"]);
    }

    #[test]
    fn without_containers_the_selector_then_the_config_names_the_project() {
        let dir = Some(Path::new("/opt/backend"));
        let h = HostDir {
            project: Some("configured"),
            ..host(dir)
        };
        let site = resolve_site(h, &plan(vec![], Some("sel"))).unwrap();
        assert_eq!(site.project.as_deref(), Some("sel"));
        let site = resolve_site(h, &plan(vec![], None)).unwrap();
        assert_eq!(site.project.as_deref(), Some("configured"));
        let site = resolve_site(host(dir), &plan(vec![], None)).unwrap();
        assert_eq!(site.project, None, "compose's own default, as the runbook");
    }

    #[test]
    fn unset_dir_comes_from_the_labels_with_their_files() {
        let facts = compose_projects_of(&[container(
            "p",
            "/opt/x/backend",
            "a.yml,b.yml",
            "sha256:1",
            "running",
        )]);
        let site = resolve_site(host(None), &plan(facts, None)).unwrap();
        assert_eq!(site.dir, PathBuf::from("/opt/x/backend"));
        assert_eq!(
            site.files,
            [
                PathBuf::from("/opt/x/backend/a.yml"),
                PathBuf::from("/opt/x/backend/b.yml")
            ]
        );
    }

    #[test]
    fn unset_dir_without_labels_is_refused_naming_the_setting() {
        let err = resolve_site(host(None), &plan(vec![], Some("p"))).unwrap_err();
        assert_eq!(err, SiteError::NoDirectory { target: id() });
        assert!(err.to_string().contains("set executor.dir"), "{err}");
    }

    #[test]
    fn several_projects_pick_the_one_started_from_the_host_dir() {
        let facts = compose_projects_of(&[
            container("a", "/opt/a/", "c.yml", "sha256:a", "running"),
            container("b", "/opt/b", "c.yml", "sha256:b", "running"),
        ]);
        let p = plan(facts, None);
        let site = resolve_site(host(Some(Path::new("/opt/a"))), &p).unwrap();
        assert_eq!(site.project.as_deref(), Some("a"), "trailing slash ignored");
        let multi = HostDir {
            multi_host: true,
            ..host(Some(Path::new("/opt/b")))
        };
        assert_eq!(
            resolve_site(multi, &p).unwrap().project.as_deref(),
            Some("b")
        );
        let unknown_multi = HostDir {
            multi_host: true,
            ..host(Some(Path::new("/srv/remote")))
        };
        assert_eq!(resolve_site(unknown_multi, &p).unwrap().project, None);
        let err = resolve_site(host(Some(Path::new("/opt/c"))), &p).unwrap_err();
        assert!(matches!(err, SiteError::Ambiguous { .. }), "{err}");
        assert!(err.to_string().contains("a, b"), "{err}");
    }

    #[test]
    fn normalisation_follows_compose_v1_and_v2() {
        assert_eq!(normalize_v1("My.App_2-x"), "myapp_2-x");
        assert_eq!(normalize_v1("_backend"), "_backend");
        assert_eq!(normalize_v2("_backend"), "backend");
        assert_eq!(normalize_v2("--Shop Backend"), "shopbackend");
        assert!(is_valid_project_name("shop-staging_backend1"));
        assert!(!is_valid_project_name("Shop"));
        assert!(!is_valid_project_name("-shop"));
        assert!(!is_valid_project_name(""));
    }

    #[test]
    fn default_project_prefers_the_env_file_then_the_directory() {
        let dir = Path::new("/opt/shop/staging/Back.end");
        let d = default_project(
            dir,
            Some("A=1\nCOMPOSE_PROJECT_NAME=shop-staging-backend\n"),
        );
        assert_eq!(d.v1, "shop-staging-backend");
        assert!(d.from_env_file);
        let d = default_project(dir, Some("COMPOSE_PROJECT_NAME=\n"));
        assert_eq!((d.v1.as_str(), d.v2.as_str()), ("backend", "backend"));
        assert!(!d.from_env_file);
        let d = default_project(Path::new("/opt/_x"), None);
        assert_eq!((d.v1.as_str(), d.v2.as_str()), ("_x", "x"));
    }

    #[test]
    fn mismatch_warns_with_the_flag_rollwatch_passes() {
        let dir = Path::new("/opt/shop/staging/backend");
        let d = default_project(dir, Some("IMAGE_TAG=v1\n"));
        let w = mismatch_warning(&id(), dir, ".env", "shop-staging-backend", &d).unwrap();
        assert!(w.contains("project \"backend\""), "{w}");
        assert!(w.contains("-p shop-staging-backend"), "{w}");
        assert!(
            w.contains("COMPOSE_PROJECT_NAME=shop-staging-backend"),
            "{w}"
        );
        let d = default_project(dir, Some("COMPOSE_PROJECT_NAME=shop-staging-backend\n"));
        assert_eq!(
            mismatch_warning(&id(), dir, ".env", "shop-staging-backend", &d),
            None
        );
        let d = default_project(Path::new("/opt/_p"), None);
        let w = mismatch_warning(&id(), Path::new("/opt/_p"), ".env", "_p", &d).unwrap();
        assert!(
            w.contains("(docker compose v2)"),
            "v2 trims the underscore: {w}"
        );
    }
}
