//! The runbook, verbatim: in the deployment directory with `IMAGE_TAG` and `CONTAINER_REGISTRY`
//! set, `<compose> -p <project> --env-file .env pull`, then `... up -d --remove-orphans`, then
//! the tag is written into `.env` so a later plain `up -d` keeps it. `-p` is always the watched
//! containers' project, so the rollback replaces them instead of starting a second project.
//! A failed `up` brings the previous tag back and leaves `.env` untouched.

use std::path::Path;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::OnceCell;

use super::project::{self, ComposeSite, HostDir, SiteError};
use super::{
    envfile, step_start, CommandOutput, CommandRunner, ExecError, ExecPlan, ExecReport, Executor,
};
use crate::config::{ComposeCommand, ComposeExecutorConfig};
use crate::tag::Tag;

/// The two compose implementations in the field: the v2 plugin and the v1 Python binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComposeFlavor {
    Plugin,
    Standalone,
}

impl ComposeFlavor {
    fn argv(self) -> Vec<String> {
        match self {
            ComposeFlavor::Plugin => vec!["docker".into(), "compose".into()],
            ComposeFlavor::Standalone => vec!["docker-compose".into()],
        }
    }
}

pub struct ComposeExecutor {
    runner: Arc<dyn CommandRunner>,
    config: ComposeExecutorConfig,
    flavor: OnceCell<ComposeFlavor>,
    /// The host's name in step names (`pull@backend-2`) on multi-host targets; empty otherwise.
    label: String,
    /// One host of several: only containers started from its own directory name its project.
    multi_host: bool,
}

impl ComposeExecutor {
    pub fn new(runner: Arc<dyn CommandRunner>, config: ComposeExecutorConfig) -> ComposeExecutor {
        ComposeExecutor {
            runner,
            config,
            flavor: OnceCell::new(),
            label: String::new(),
            multi_host: false,
        }
    }

    fn step_name(&self, base: &str) -> String {
        if self.label.is_empty() {
            base.to_string()
        } else {
            format!("{base}@{}", self.label)
        }
    }

    /// Tries `docker compose version`, then `docker-compose version`. Trying beats looking at
    /// PATH: a static docker CLI without the plugin is on PATH yet cannot run `docker compose`.
    async fn flavor(&self, dir: &Path) -> Result<ComposeFlavor, ExecError> {
        let candidates: &[ComposeFlavor] = match self.config.compose_command {
            ComposeCommand::Auto => &[ComposeFlavor::Plugin, ComposeFlavor::Standalone],
            ComposeCommand::Plugin => &[ComposeFlavor::Plugin],
            ComposeCommand::Standalone => &[ComposeFlavor::Standalone],
        };
        self.flavor
            .get_or_try_init(|| async {
                let mut tried = Vec::new();
                for &flavor in candidates {
                    let mut argv = flavor.argv();
                    argv.push("version".into());
                    match self.runner.run(dir, &[], &argv).await {
                        Ok(out) if out.success() => return Ok(flavor),
                        Ok(out) => {
                            tried.push(format!("{}: exit {}", argv.join(" "), out.status_text()))
                        }
                        // The host itself is unreachable: no point trying another command.
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                            return Err(ExecError::Unreachable(e.to_string()));
                        }
                        Err(e) => tried.push(format!("{}: {e}", argv.join(" "))),
                    }
                }
                Err(ExecError::NoCompose(tried.join("; ")))
            })
            .await
            .copied()
    }

    /// This host's directory, project and files for `plan` (see [`project::resolve_site`]).
    pub fn site(&self, plan: &ExecPlan) -> Result<ComposeSite, ExecError> {
        let host = HostDir {
            dir: self.config.dir.as_deref(),
            project: self.config.project.as_deref(),
            multi_host: self.multi_host,
        };
        Ok(project::resolve_site(host, plan)?)
    }

    /// `<compose> [-p P] [-f F]... --env-file E <args>` with `IMAGE_TAG=tag`, in the site's dir.
    async fn compose(
        &self,
        flavor: ComposeFlavor,
        site: &ComposeSite,
        tag: &Tag,
        args: &[&str],
        report: &mut ExecReport,
    ) -> Result<CommandOutput, ExecError> {
        let mut argv = flavor.argv();
        if let Some(p) = &site.project {
            argv.extend(["-p".to_string(), p.clone()]);
        }
        for f in &site.files {
            argv.extend(["-f".to_string(), f.display().to_string()]);
        }
        argv.extend(["--env-file".to_string(), self.config.env_file.clone()]);
        argv.extend(args.iter().map(|a| a.to_string()));
        let env = [
            ("IMAGE_TAG".to_string(), tag.to_string()),
            (
                "CONTAINER_REGISTRY".to_string(),
                self.config.registry.clone(),
            ),
        ];
        let label = format!(
            "IMAGE_TAG={tag} CONTAINER_REGISTRY={} {}",
            self.config.registry,
            argv.join(" ")
        );
        let out = self
            .runner
            .run(&site.dir, &env, &argv)
            .await
            .map_err(|source| ExecError::Spawn {
                command: argv.join(" "),
                dir: site.dir.display().to_string(),
                source,
            })?;
        report.capture(&label, &out);
        Ok(out)
    }

    async fn run(&self, plan: &ExecPlan, report: &mut ExecReport) -> Result<(), ExecError> {
        // Resolved before any command: a target we cannot place is refused untouched.
        let site = self.site(plan)?;
        let flavor = self.flavor(&site.dir).await?;
        self.pull(flavor, &site, plan, report).await?;
        self.up_or_restore(flavor, &site, plan, report).await?;
        self.record_tag(&site, plan, report).await
    }

    /// The runbook's pull. A failed pull is tolerated when the image is already here (registry
    /// briefly down, air-gapped host); anything else stops before `up` touches a thing.
    async fn pull(
        &self,
        flavor: ComposeFlavor,
        site: &ComposeSite,
        plan: &ExecPlan,
        report: &mut ExecReport,
    ) -> Result<(), ExecError> {
        let (t, ms) = step_start();
        let pull = self
            .compose(flavor, site, &plan.tag, &["pull"], report)
            .await?;
        if pull.success() {
            report.step(&self.step_name("pull"), t, ms, true, plan.image());
            return Ok(());
        }
        let argv: Vec<String> = ["docker", "image", "inspect", "--format", "{{.Id}}"]
            .iter()
            .map(|s| s.to_string())
            .chain([plan.image()])
            .collect();
        let present = self
            .runner
            .run(&site.dir, &[], &argv)
            .await
            .is_ok_and(|o| o.success());
        if !present {
            report.step(
                &self.step_name("pull"),
                t,
                ms,
                false,
                format!("{} not pulled and not present locally", plan.image()),
            );
            return Err(ExecError::Pull {
                image: plan.image(),
            });
        }
        report.warn(format!(
            "pull of {} failed; using the copy present locally",
            plan.image()
        ));
        report.step(
            &self.step_name("pull"),
            t,
            ms,
            true,
            "failed, image present locally",
        );
        Ok(())
    }

    /// `up -d --remove-orphans`; when it fails (e.g. the new container cannot start after the
    /// old one was stopped), the previous tag is brought back before the error is returned.
    async fn up_or_restore(
        &self,
        flavor: ComposeFlavor,
        site: &ComposeSite,
        plan: &ExecPlan,
        report: &mut ExecReport,
    ) -> Result<(), ExecError> {
        let (t, ms) = step_start();
        let up = self.compose(flavor, site, &plan.tag, &UP, report).await?;
        report.step(
            &self.step_name("up"),
            t,
            ms,
            up.success(),
            "up -d --remove-orphans",
        );
        if up.success() {
            return Ok(());
        }
        let restore = self.restore(flavor, site, plan, report).await;
        Err(ExecError::Up {
            command: "up -d --remove-orphans".into(),
            status: up.status_text(),
            restore,
        })
    }

    /// Runs `up` with the tag that ran before, without a pull (the image is still here, and a
    /// registry that is down must not stop the way back), records a `restore` step, and says
    /// in one sentence what it achieved. Compose v1.29 leaves the failed new container
    /// (`created`) and the stopped old one (renamed `<id>_<name>`); this `up` replaces both
    /// with one container of the previous configuration.
    async fn restore(
        &self,
        flavor: ComposeFlavor,
        site: &ComposeSite,
        plan: &ExecPlan,
        report: &mut ExecReport,
    ) -> String {
        let (t, ms) = step_start();
        let name = self.step_name("restore");
        let Some(previous) = &plan.previous_tag else {
            let msg = "the previous tag is unknown (the containers did not run <repository>:<tag>), so nothing was restored: containers may be partly recreated; bring them back by hand".to_string();
            report.step(&name, t, ms, false, msg.clone());
            return msg;
        };
        let up = match self.compose(flavor, site, previous, &UP, report).await {
            Ok(out) => out,
            Err(e) => {
                let msg = format!(
                    "restoring {previous} could not run: {e}; containers may be partly recreated"
                );
                report.step(&name, t, ms, false, msg.clone());
                return msg;
            }
        };
        if !up.success() {
            let msg = format!(
                "restoring {previous} failed too (exit {}); containers may be partly recreated",
                up.status_text()
            );
            report.step(&name, t, ms, false, msg);
            return format!("restoring {previous} failed too; containers may be partly recreated");
        }
        let (ok, detail) = self.compare_images(flavor, site, previous, report).await;
        report.step(
            &name,
            t,
            ms,
            ok,
            format!("IMAGE_TAG={previous} up: {detail}"),
        );
        if ok {
            format!("the previous tag {previous} was brought back ({detail}); .env was not changed")
        } else {
            format!("the previous tag {previous} was started again, but {detail}")
        }
    }

    /// Whether the project's containers run the image IDs they ran before the rollback.
    async fn compare_images(
        &self,
        flavor: ComposeFlavor,
        site: &ComposeSite,
        tag: &Tag,
        report: &mut ExecReport,
    ) -> (bool, String) {
        if site.previous_images.is_empty() {
            return (true, "previous image IDs unknown, not compared".into());
        }
        let mut scratch = ExecReport::new(|_| {});
        let ids = match self
            .compose(flavor, site, tag, &["ps", "-q"], &mut scratch)
            .await
        {
            Ok(out) if out.success() => out
                .text
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>(),
            _ => {
                return (
                    false,
                    "cannot list the project's containers to compare image IDs".into(),
                )
            }
        };
        let mut argv: Vec<String> = ["docker", "inspect", "--format", "{{.Image}}"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        argv.extend(ids.iter().cloned());
        let now: Vec<String> = match self.runner.run(&site.dir, &[], &argv).await {
            Ok(out) if out.success() && !ids.is_empty() => {
                let mut v: Vec<String> = out.text.split_whitespace().map(String::from).collect();
                v.sort();
                v.dedup();
                v
            }
            _ => {
                return (
                    false,
                    "cannot inspect the restored containers' images".into(),
                )
            }
        };
        report.output.push_str(&format!(
            "restore: containers {} run {}\n",
            ids.join(" "),
            now.join(" ")
        ));
        if now == site.previous_images {
            (
                true,
                format!(
                    "{} container(s) on {}, as before",
                    ids.len(),
                    now.join(", ")
                ),
            )
        } else {
            (
                false,
                format!(
                    "they run {} instead of {}",
                    now.join(", "),
                    site.previous_images.join(", ")
                ),
            )
        }
    }

    /// Writes the tag into the env file, only after a successful `up`: a later plain `up -d`
    /// keeps it, and a failed rollback leaves the file as it was.
    async fn record_tag(
        &self,
        site: &ComposeSite,
        plan: &ExecPlan,
        report: &mut ExecReport,
    ) -> Result<(), ExecError> {
        let (t, ms) = step_start();
        let path = site.dir.join(&self.config.env_file);
        let env_err = |source| ExecError::EnvFile {
            path: path.display().to_string(),
            source,
        };
        let text = match self.runner.read_file(&path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(env_err(e)),
        };
        let updated = envfile::set_var(&text, "IMAGE_TAG", plan.tag.as_str());
        self.runner
            .write_file_atomic(&path, &updated)
            .await
            .map_err(env_err)?;
        report.step(
            &self.step_name("env-file"),
            t,
            ms,
            true,
            format!("{}: IMAGE_TAG={}", path.display(), plan.tag),
        );
        Ok(())
    }
}

/// The runbook's `up`, also used to restore.
const UP: [&str; 3] = ["up", "-d", "--remove-orphans"];

impl Executor for ComposeExecutor {
    fn kind(&self) -> &'static str {
        "compose"
    }

    fn execute<'a>(
        &'a self,
        plan: &'a ExecPlan,
        report: &'a mut ExecReport,
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        Box::pin(self.run(plan, report))
    }
}

/// Builds the executor for a compose target: one host, or every host of a multi-host target.
pub fn compose_executor(config: &ComposeExecutorConfig) -> Box<dyn Executor> {
    let runner_for = |host: &Option<crate::config::SshDestination>| -> Arc<dyn CommandRunner> {
        match host {
            Some(h) => Arc::new(super::SshRunner::new(h.0.clone(), config.ssh.clone())),
            None => Arc::new(super::LocalRunner),
        }
    };
    let primary = ComposeExecutor::new(runner_for(&config.host), config.clone());
    if config.also.is_empty() {
        return Box::new(primary);
    }
    let name = |host: &Option<crate::config::SshDestination>, dir: Option<&Path>| {
        let dir = dir
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "<compose working_dir>".into());
        match host {
            Some(h) => format!("{}:{dir}", h.0),
            None => format!("local:{dir}"),
        }
    };
    let mut hosts = vec![ComposeExecutor {
        label: name(&config.host, config.dir.as_deref()),
        multi_host: true,
        ..primary
    }];
    for extra in &config.also {
        let mut c = config.clone();
        c.dir = Some(extra.dir.clone());
        c.host = extra.host.clone();
        let mut e = ComposeExecutor::new(runner_for(&extra.host), c);
        e.label = name(&extra.host, Some(&extra.dir));
        e.multi_host = true;
        hosts.push(e);
    }
    Box::new(MultiHostExecutor { hosts })
}

/// Refuses, before anything runs, a plan for which some host has no directory or no
/// unambiguous project (the same resolution each host's executor does).
pub fn check_sites(config: &ComposeExecutorConfig, plan: &ExecPlan) -> Result<(), SiteError> {
    let multi_host = !config.also.is_empty();
    let project = config.project.as_deref();
    let primary = HostDir {
        dir: config.dir.as_deref(),
        project,
        multi_host,
    };
    let extra = config.also.iter().map(|h| HostDir {
        dir: Some(&h.dir),
        project,
        multi_host,
    });
    for host in std::iter::once(primary).chain(extra) {
        project::resolve_site(host, plan)?;
    }
    Ok(())
}

/// Several hosts of one target: every host is rolled back (a failure on one does not stop the
/// others), and the outcome names each host.
pub struct MultiHostExecutor {
    hosts: Vec<ComposeExecutor>,
}

impl MultiHostExecutor {
    async fn run(&self, plan: &ExecPlan, report: &mut ExecReport) -> Result<(), ExecError> {
        let mut lines = Vec::new();
        let mut failed = 0;
        for h in &self.hosts {
            report.output.push_str(&format!("== host {}\n", h.label));
            match h.run(plan, report).await {
                Ok(()) => lines.push(format!("{}: rolled back to {}", h.label, plan.tag)),
                Err(e) => {
                    failed += 1;
                    lines.push(format!("{}: FAILED: {e}", h.label));
                }
            }
        }
        report
            .output
            .push_str(&format!("per host:\n  {}\n", lines.join("\n  ")));
        if failed > 0 {
            return Err(ExecError::Hosts {
                failed,
                total: self.hosts.len(),
                summary: lines.join("; "),
            });
        }
        Ok(())
    }
}

impl Executor for MultiHostExecutor {
    fn kind(&self) -> &'static str {
        "compose"
    }

    fn execute<'a>(
        &'a self,
        plan: &'a ExecPlan,
        report: &'a mut ExecReport,
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        Box::pin(self.run(plan, report))
    }
}
