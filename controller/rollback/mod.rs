//! Rolling a target back to a tag: the executors that do it (the runbook's compose commands, or
//! the Docker API) and the flow around them — choose and check the tag, write the intent, execute,
//! validate `/health`, record the outcome. Executors only act; whether to act is decided upstream.

mod compose;
mod docker_api;
pub mod envfile;
mod error;
mod fence;
mod flow;
mod project;
mod runner;
mod ssh;

use std::time::Instant;

use futures_util::future::BoxFuture;

pub use compose::{
    check_sites, compose_executor, detect_flavor, preflight as compose_preflight, ComposeExecutor,
    ComposeFlavor,
};
pub use docker_api::DockerApiExecutor;
pub use error::RollbackError;
pub use fence::RecordFence;
pub(crate) use flow::{fault_panic_once, fault_point};
pub use flow::{running_tag_of, RollbackRequest, Rollbacker};
pub use project::{
    compose_projects_of, is_valid_project_name, project_warnings, warn_project_mismatches,
    ComposeProjectFacts, SiteError,
};
pub use runner::{CommandOutput, CommandRunner, LocalRunner};
pub use ssh::{shell_quote, SshRunner};

use crate::docker::DockerError;
use crate::store::{now_ms, StepRecord};
use crate::tag::Tag;
use crate::target::TargetId;

/// What an executor is asked to do: put `tag` of `image_repository` on every container of `target`,
/// with the facts about those containers it needs to act on exactly them.
#[derive(Debug, Clone)]
pub struct ExecPlan {
    pub target: TargetId,
    pub tag: Tag,
    pub image_repository: String,
    /// The compose projects of the watched containers, from their labels: the compose executor
    /// runs with their `-p` (and, without `executor.dir`, in their directory with their files).
    pub compose_projects: Vec<ComposeProjectFacts>,
    /// The selector's `compose_project`: names the project when no container is left to.
    pub selector_project: Option<String>,
    /// The tag the containers ran before this rollback: a failed `up` brings it back.
    pub previous_tag: Option<Tag>,
}

impl ExecPlan {
    /// A plan with no facts about the running containers (a deploy, a test).
    pub fn new(target: TargetId, tag: Tag, image_repository: String) -> ExecPlan {
        ExecPlan {
            target,
            tag,
            image_repository,
            compose_projects: Vec::new(),
            selector_project: None,
            previous_tag: None,
        }
    }

    pub fn image(&self) -> String {
        format!("{}:{}", self.image_repository, self.tag)
    }
}

/// The running account of a rollback: timed steps and captured command output. Executors append
/// to it as they go, so a failure still leaves everything that happened on record.
pub struct ExecReport {
    pub steps: Vec<StepRecord>,
    pub output: String,
    pub warnings: Vec<String>,
    on_step: Box<dyn Fn(&StepRecord) + Send + Sync>,
    fence: Option<std::sync::Arc<dyn StepFence>>,
}

/// Asked right before every command that changes a host: may this instance still act on this
/// rollback? The store's answer is re-checked against the lease each time, so an instance that
/// lost the lease while a step ran (frozen, partitioned) stops before the next one.
pub trait StepFence: Send + Sync {
    /// `Err` says why this step must not run; it is already on record.
    fn check<'a>(&'a self, step: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

impl ExecReport {
    pub fn new(on_step: impl Fn(&StepRecord) + Send + Sync + 'static) -> ExecReport {
        ExecReport {
            steps: Vec::new(),
            output: String::new(),
            warnings: Vec::new(),
            on_step: Box::new(on_step),
            fence: None,
        }
    }

    /// Every later [`ExecReport::fenced`] asks `fence`.
    pub fn with_fence(mut self, fence: std::sync::Arc<dyn StepFence>) -> ExecReport {
        self.fence = Some(fence);
        self
    }

    /// Runs before a step that changes a host: refused when this instance may no longer act.
    pub async fn fenced(&mut self, step: &str) -> Result<(), ExecError> {
        let Some(fence) = self.fence.clone() else {
            return Ok(());
        };
        fence.check(step).await.map_err(|why| {
            self.output
                .push_str(&format!("refused before {step}: {why}\n"));
            ExecError::Fenced {
                step: step.to_string(),
                why,
            }
        })
    }

    /// Records a step that started at `started` (and at wall time `started_ms`).
    pub fn step(
        &mut self,
        name: &str,
        started: Instant,
        started_ms: i64,
        ok: bool,
        detail: impl Into<String>,
    ) {
        let rec = StepRecord {
            name: name.to_string(),
            started_at_ms: started_ms,
            duration_ms: started.elapsed().as_millis() as i64,
            ok,
            detail: detail.into(),
        };
        (self.on_step)(&rec);
        self.steps.push(rec);
    }

    pub fn capture(&mut self, label: &str, out: &CommandOutput) {
        self.output.push_str(&format!(
            "$ {label}  (exit {})\n{}",
            out.status_text(),
            out.text
        ));
        if !out.text.ends_with('\n') && !out.text.is_empty() {
            self.output.push('\n');
        }
    }

    pub fn warn(&mut self, w: String) {
        self.output.push_str(&format!("warning: {w}\n"));
        self.warnings.push(w);
    }
}

/// Starts a timed step: returns the monotonic start and the wall-clock start in ms.
pub fn step_start() -> (Instant, i64) {
    (Instant::now(), now_ms())
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("no compose command works here: `docker compose version` and `docker-compose version` both failed ({0}); install the compose plugin or docker-compose, or set executor.compose_command")]
    NoCompose(String),
    #[error("cannot run {command} in {dir}: {source}")]
    Spawn {
        command: String,
        dir: String,
        source: std::io::Error,
    },
    #[error("pull of {image} failed and the image is not present locally; the running version was left untouched (output below)")]
    Pull { image: String },
    #[error("`{command}` failed with exit {status}; {restore} (output in the record)")]
    Up {
        command: String,
        status: String,
        /// What the restore of the previous tag achieved, as a sentence.
        restore: String,
    },
    #[error("cannot update {path}: {source}")]
    EnvFile {
        path: String,
        source: std::io::Error,
    },
    #[error("no container of {target} matches the selector; nothing to roll back")]
    NoContainers { target: TargetId },
    #[error("{0}; nothing was run on that host (check the host, the ssh key and known_hosts)")]
    Unreachable(String),
    #[error("{failed} of {total} hosts failed: {summary}")]
    Hosts {
        failed: usize,
        total: usize,
        summary: String,
    },
    #[error(transparent)]
    Site(#[from] SiteError),
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("step {step} refused: {why}")]
    Fenced { step: String, why: String },
}

/// One way to put a tag on a target's containers. Object-safe so targets can hold any executor.
pub trait Executor: Send + Sync {
    /// A short name for logs and records (`compose`, `docker`).
    fn kind(&self) -> &'static str;

    fn execute<'a>(
        &'a self,
        plan: &'a ExecPlan,
        report: &'a mut ExecReport,
    ) -> BoxFuture<'a, Result<(), ExecError>>;
}
