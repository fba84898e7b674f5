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
    pub fn argv(self) -> Vec<String> {
        match self {
            ComposeFlavor::Plugin => vec!["docker".into(), "compose".into()],
            ComposeFlavor::Standalone => vec!["docker-compose".into()],
        }
    }
}

/// Tries `docker compose version`, then `docker-compose version`. Trying beats looking at
/// PATH: a static docker CLI without the plugin is on PATH yet cannot run `docker compose`.
pub async fn detect_flavor(
    runner: &dyn CommandRunner,
    dir: &Path,
    command: ComposeCommand,
) -> Result<ComposeFlavor, ExecError> {
    let candidates: &[ComposeFlavor] = match command {
        ComposeCommand::Auto => &[ComposeFlavor::Plugin, ComposeFlavor::Standalone],
        ComposeCommand::Plugin => &[ComposeFlavor::Plugin],
        ComposeCommand::Standalone => &[ComposeFlavor::Standalone],
    };
    let mut tried = Vec::new();
    for &flavor in candidates {
        let mut argv = flavor.argv();
        argv.push("version".into());
        match runner.run(dir, &[], &argv).await {
            Ok(out) if out.success() => return Ok(flavor),
            Ok(out) => tried.push(format!("{}: exit {}", argv.join(" "), out.status_text())),
            // The host itself is unreachable: no point trying another command.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(ExecError::Unreachable(e.to_string()));
            }
            Err(e) => tried.push(format!("{}: {e}", argv.join(" "))),
        }
    }
    Err(ExecError::NoCompose(tried.join("; ")))
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
        self.flavor
            .get_or_try_init(|| detect_flavor(&*self.runner, dir, self.config.compose_command))
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
        report
            .fenced(args.first().copied().unwrap_or("compose"))
            .await?;
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

    /// One host's pre-flight (see [`preflight`]): what was checked, or the first thing wrong.
    async fn preflight(&self, plan: &ExecPlan, watched_ids: &[String]) -> Result<String, String> {
        let site = self.site(plan).map_err(|e| e.to_string())?;
        let dir = site.dir.display().to_string();
        let started_from = site.project.as_deref().and_then(|p| {
            plan.compose_projects
                .iter()
                .find(|f| f.project == p)
                .and_then(|f| f.working_dir.clone())
        });
        if let Some(wd) = started_from.filter(|wd| !project::same_dir(wd, &site.dir)) {
            return Err(format!(
                "the watched containers were started from {}, but executor.dir is {dir}; set executor.dir to {}",
                wd.display(),
                wd.display()
            ));
        }
        let env_path = site.dir.join(&self.config.env_file);
        if let Err(e) = self.runner.read_file(&env_path).await {
            return Err(format!(
                "cannot read {}: {e}; is executor.dir ({dir}) the deployment directory?",
                env_path.display()
            ));
        }
        let flavor = self.flavor(&site.dir).await.map_err(|e| e.to_string())?;
        let mut scratch = ExecReport::new(|_| {});
        let valid = self
            .compose(
                flavor,
                &site,
                &plan.tag,
                &["config", "--quiet"],
                &mut scratch,
            )
            .await
            .map_err(|e| e.to_string())?;
        if !valid.success() {
            return Err(format!(
                "`config --quiet` in {dir} failed (exit {}): {}",
                valid.status_text(),
                valid.text.trim()
            ));
        }
        let ids = self
            .container_ids(flavor, &site, &plan.tag)
            .await
            .ok_or_else(|| format!("`ps -q` in {dir} failed"))?;
        let project = site.project.as_deref().unwrap_or("(compose default)");
        let missing: Vec<&String> = watched_ids
            .iter()
            .filter(|w| {
                !ids.iter()
                    .any(|i| w.starts_with(i.as_str()) || i.starts_with(w.as_str()))
            })
            .collect();
        if ids.is_empty() || (!self.multi_host && !missing.is_empty()) {
            return Err(format!(
                "compose project {project} in {dir} has {} container(s), not the {} watched one(s); check executor.dir and the project",
                ids.len(),
                watched_ids.len()
            ));
        }
        Ok(format!(
            "{} in {dir}, project {project}: {} container(s)",
            flavor.argv().join(" "),
            ids.len()
        ))
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
            report.step(&name, t, ms, false, msg.clone());
            return msg;
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
        let ids = match self.container_ids(flavor, site, tag).await {
            Some(ids) if !ids.is_empty() => ids,
            Some(_) => return (false, "no container of the project is there".into()),
            None => return (false, "cannot list the project's containers".into()),
        };
        let Some(now) = self.image_ids(site, &ids).await else {
            return (false, "cannot inspect the restored containers".into());
        };
        report.output.push_str(&format!(
            "restore: containers {} run {}\n",
            ids.join(" "),
            now.join(" ")
        ));
        if now == site.previous_images {
            let detail = format!(
                "{} container(s) on {}, as before",
                ids.len(),
                now.join(", ")
            );
            (true, detail)
        } else {
            let detail = format!(
                "they run {} instead of {}",
                now.join(", "),
                site.previous_images.join(", ")
            );
            (false, detail)
        }
    }

    /// `<compose> ps -q`: the project's container IDs.
    async fn container_ids(
        &self,
        flavor: ComposeFlavor,
        site: &ComposeSite,
        tag: &Tag,
    ) -> Option<Vec<String>> {
        let mut scratch = ExecReport::new(|_| {});
        let out = self
            .compose(flavor, site, tag, &["ps", "-q"], &mut scratch)
            .await
            .ok()
            .filter(|o| o.success())?;
        // The output mixes in stderr (v2 warns about an obsolete `version:` there): keep only
        // the words that are container IDs.
        let ids = out
            .text
            .split_whitespace()
            .filter(|w| w.len() >= 12 && w.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(String::from)
            .collect();
        Some(ids)
    }

    /// The distinct image IDs (`sha256:...`) the given containers run, sorted.
    async fn image_ids(&self, site: &ComposeSite, containers: &[String]) -> Option<Vec<String>> {
        let argv: Vec<String> = ["docker", "inspect", "--format", "{{.Image}}"]
            .iter()
            .map(|s| s.to_string())
            .chain(containers.iter().cloned())
            .collect();
        let out = self
            .runner
            .run(&site.dir, &[], &argv)
            .await
            .ok()
            .filter(|o| o.success())?;
        let ids: std::collections::BTreeSet<String> = out
            .text
            .split_whitespace()
            .filter(|w| w.starts_with("sha256:"))
            .map(String::from)
            .collect();
        Some(ids.into_iter().collect())
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
        report.fenced("env-file").await?;
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
    let mut hosts = host_executors(config);
    if hosts.len() == 1 {
        if let Some(only) = hosts.pop() {
            return Box::new(only);
        }
    }
    Box::new(MultiHostExecutor { hosts })
}

/// One executor per host of the target, each labelled `host:dir` when there are several.
fn host_executors(config: &ComposeExecutorConfig) -> Vec<ComposeExecutor> {
    let runner_for = |host: &Option<crate::config::SshDestination>| -> Arc<dyn CommandRunner> {
        match host {
            Some(h) => Arc::new(super::SshRunner::new(
                h.0.clone(),
                config.ssh.clone(),
                config.step_timeout,
            )),
            None => Arc::new(super::LocalRunner::new(config.step_timeout)),
        }
    };
    let primary = ComposeExecutor::new(runner_for(&config.host), config.clone());
    if config.also.is_empty() {
        return vec![primary];
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
    hosts
}

/// `check-config --probe` for a compose target, per host: `(host, outcome)`. Runs only
/// read-only commands: reads the env file, finds the compose command, `config --quiet` (the
/// directory holds a valid project), and `ps -q`, whose containers must be the watched ones.
pub async fn preflight(
    config: &ComposeExecutorConfig,
    plan: &ExecPlan,
    watched_ids: &[String],
) -> Vec<(String, Result<String, String>)> {
    let mut out = Vec::new();
    for host in host_executors(config) {
        let label = if host.label.is_empty() {
            config
                .host
                .as_ref()
                .map_or("local".to_string(), |h| h.0.clone())
        } else {
            host.label.clone()
        };
        out.push((label, host.preflight(plan, watched_ids).await));
    }
    out
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Mutex;

    use super::*;
    use crate::rollback::ComposeProjectFacts;
    use crate::target::{Env, TargetId};

    /// Answers like docker-compose v1 would when the new tag's container cannot start; records
    /// every command and write.
    #[derive(Default)]
    struct FakeHost {
        commands: Mutex<Vec<(PathBuf, Vec<String>)>>,
        writes: Mutex<Vec<PathBuf>>,
    }

    impl CommandRunner for FakeHost {
        fn run<'a>(
            &'a self,
            dir: &'a Path,
            env: &'a [(String, String)],
            argv: &'a [String],
        ) -> BoxFuture<'a, std::io::Result<CommandOutput>> {
            let mut line: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            line.extend(argv.iter().cloned());
            self.commands
                .lock()
                .unwrap()
                .push((dir.to_path_buf(), line.clone()));
            let joined = line.join(" ");
            let (code, text) = if joined.contains("IMAGE_TAG=v6.6.6") && joined.contains(" up ") {
                (
                    1,
                    "ERROR: for backend  Cannot start service backend".to_string(),
                )
            } else if joined.ends_with("ps -q") {
                (0, "WARNING: noise\nabcdef0123456789abcdef\n".to_string())
            } else if joined.starts_with("docker inspect") {
                (0, "sha256:old\n".to_string())
            } else {
                (0, String::new())
            };
            Box::pin(async move {
                Ok(CommandOutput {
                    code: Some(code),
                    text,
                })
            })
        }

        fn read_file<'a>(&'a self, _: &'a Path) -> BoxFuture<'a, std::io::Result<String>> {
            Box::pin(async { Ok("IMAGE_TAG=v1.0.0\n".to_string()) })
        }

        fn write_file_atomic<'a>(
            &'a self,
            path: &'a Path,
            _: &'a str,
        ) -> BoxFuture<'a, std::io::Result<()>> {
            self.writes.lock().unwrap().push(path.to_path_buf());
            Box::pin(async { Ok(()) })
        }
    }

    fn config(dir: Option<&str>) -> ComposeExecutorConfig {
        ComposeExecutorConfig {
            dir: dir.map(PathBuf::from),
            project: None,
            env_file: ".env".into(),
            registry: "r/shop".into(),
            image: None,
            compose_command: ComposeCommand::Standalone,
            host: None,
            also: Vec::new(),
            ssh: Default::default(),
            step_timeout: crate::config::DEFAULT_STEP_TIMEOUT,
        }
    }

    fn plan(to: &str, facts: Vec<ComposeProjectFacts>) -> ExecPlan {
        let id = TargetId {
            env: Env::Staging,
            role: "backend".into(),
        };
        let mut p = ExecPlan::new(id, Tag::parse(to).unwrap(), "r/shop/backend".into());
        p.compose_projects = facts;
        p.previous_tag = Some(Tag::parse("v1.0.0").unwrap());
        p
    }

    fn facts() -> Vec<ComposeProjectFacts> {
        vec![ComposeProjectFacts {
            project: "shop-staging-backend".into(),
            working_dir: Some("/opt/shop/staging/backend".into()),
            config_files: vec!["/opt/shop/staging/backend/docker-compose.yml".into()],
            image_ids: vec!["sha256:old".into()],
        }]
    }

    async fn execute(
        host: &Arc<FakeHost>,
        cfg: ComposeExecutorConfig,
        plan: &ExecPlan,
    ) -> (Result<(), ExecError>, ExecReport) {
        let exec = ComposeExecutor::new(host.clone(), cfg);
        let mut report = ExecReport::new(|_| {});
        let result = exec.run(plan, &mut report).await;
        (result, report)
    }

    #[tokio::test]
    async fn every_compose_command_runs_as_the_labelled_project() {
        let host = Arc::new(FakeHost::default());
        let (result, _) = execute(&host, config(Some("/srv/x")), &plan("v1.0.1", facts())).await;
        assert!(result.is_ok(), "{result:?}");
        let commands = host.commands.lock().unwrap();
        let compose: Vec<&Vec<String>> = commands
            .iter()
            .map(|(_, l)| l)
            .filter(|l| l.iter().any(|w| w == "docker-compose") && !l.contains(&"version".into()))
            .collect();
        assert_eq!(compose.len(), 2, "pull and up: {compose:?}");
        for l in compose {
            let at = l.iter().position(|w| w == "-p").expect("-p passed");
            assert_eq!(l[at + 1], "shop-staging-backend");
            assert!(
                !l.contains(&"-f".to_string()),
                "a configured dir keeps its own files"
            );
        }
        assert!(commands.iter().all(|(d, _)| d == Path::new("/srv/x")));
        assert_eq!(*host.writes.lock().unwrap(), [PathBuf::from("/srv/x/.env")]);
    }

    #[tokio::test]
    async fn failed_up_restores_the_previous_tag_without_pull_and_leaves_env_alone() {
        let host = Arc::new(FakeHost::default());
        let (result, report) = execute(&host, config(None), &plan("v6.6.6", facts())).await;
        let err = result.expect_err("the rollback failed");
        assert!(err.to_string().contains("v1.0.0 was brought back"), "{err}");
        let steps: Vec<(&str, bool)> = report
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.ok))
            .collect();
        assert_eq!(steps, [("pull", true), ("up", false), ("restore", true)]);
        let commands = host.commands.lock().unwrap();
        let restore: Vec<&Vec<String>> = commands
            .iter()
            .map(|(_, l)| l)
            .filter(|l| l.contains(&"IMAGE_TAG=v1.0.0".to_string()))
            .collect();
        assert!(
            restore.iter().all(|l| !l.contains(&"pull".to_string())),
            "no pull for the restore: {restore:?}"
        );
        assert!(
            restore[0].contains(&"/opt/shop/staging/backend/docker-compose.yml".to_string()),
            "dir and files from the labels: {restore:?}"
        );
        assert!(host.writes.lock().unwrap().is_empty(), ".env not written");
    }

    #[tokio::test]
    async fn unset_dir_without_labels_runs_nothing() {
        let host = Arc::new(FakeHost::default());
        let (result, _) = execute(&host, config(None), &plan("v1.0.1", Vec::new())).await;
        assert!(
            matches!(result, Err(ExecError::Site(SiteError::NoDirectory { .. }))),
            "{result:?}"
        );
        assert!(host.commands.lock().unwrap().is_empty());
    }
}
