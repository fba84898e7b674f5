//! The runbook, verbatim: in the deployment directory with `IMAGE_TAG` and `CONTAINER_REGISTRY`
//! set, `<compose> --env-file .env pull`, then `<compose> --env-file .env up -d --remove-orphans`,
//! then the tag is written into `.env` so a later plain `up -d` keeps it.

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::OnceCell;

use super::{envfile, step_start, CommandRunner, ExecError, ExecPlan, ExecReport, Executor};
use crate::config::{ComposeCommand, ComposeExecutorConfig};

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
}

impl ComposeExecutor {
    pub fn new(runner: Arc<dyn CommandRunner>, config: ComposeExecutorConfig) -> ComposeExecutor {
        ComposeExecutor {
            runner,
            config,
            flavor: OnceCell::new(),
            label: String::new(),
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
    async fn flavor(&self) -> Result<ComposeFlavor, ExecError> {
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
                    match self.runner.run(&self.config.dir, &[], &argv).await {
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

    fn env_path(&self) -> PathBuf {
        self.config.dir.join(&self.config.env_file)
    }

    async fn compose(
        &self,
        flavor: ComposeFlavor,
        plan: &ExecPlan,
        args: &[&str],
        report: &mut ExecReport,
    ) -> Result<super::CommandOutput, ExecError> {
        let mut argv = flavor.argv();
        argv.extend(["--env-file".to_string(), self.config.env_file.clone()]);
        argv.extend(args.iter().map(|a| a.to_string()));
        let env = [
            ("IMAGE_TAG".to_string(), plan.tag.to_string()),
            (
                "CONTAINER_REGISTRY".to_string(),
                self.config.registry.clone(),
            ),
        ];
        let label = format!(
            "IMAGE_TAG={} CONTAINER_REGISTRY={} {}",
            plan.tag,
            self.config.registry,
            argv.join(" ")
        );
        let out = self
            .runner
            .run(&self.config.dir, &env, &argv)
            .await
            .map_err(|source| ExecError::Spawn {
                command: argv.join(" "),
                dir: self.config.dir.display().to_string(),
                source,
            })?;
        report.capture(&label, &out);
        Ok(out)
    }

    async fn run(&self, plan: &ExecPlan, report: &mut ExecReport) -> Result<(), ExecError> {
        let flavor = self.flavor().await?;

        let (t, ms) = step_start();
        let pull = self.compose(flavor, plan, &["pull"], report).await?;
        if pull.success() {
            report.step(&self.step_name("pull"), t, ms, true, plan.image());
        } else {
            // The runbook tolerates a failed pull when the image is already here (registry
            // briefly down, air-gapped host); anything else must stop before `up` touches a thing.
            let argv: Vec<String> = ["docker", "image", "inspect", "--format", "{{.Id}}"]
                .iter()
                .map(|s| s.to_string())
                .chain([plan.image()])
                .collect();
            let present = self
                .runner
                .run(&self.config.dir, &[], &argv)
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
        }

        let (t, ms) = step_start();
        let up = self
            .compose(flavor, plan, &["up", "-d", "--remove-orphans"], report)
            .await?;
        report.step(
            &self.step_name("up"),
            t,
            ms,
            up.success(),
            "up -d --remove-orphans",
        );
        if !up.success() {
            return Err(ExecError::Up {
                command: "up -d --remove-orphans".into(),
                status: up.status_text(),
            });
        }

        let (t, ms) = step_start();
        let path = self.env_path();
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
        return Box::new(primary);
    }
    let name = |host: &Option<crate::config::SshDestination>, dir: &std::path::Path| match host {
        Some(h) => format!("{}:{}", h.0, dir.display()),
        None => format!("local:{}", dir.display()),
    };
    let mut hosts = vec![ComposeExecutor {
        label: name(&config.host, &config.dir),
        ..primary
    }];
    for extra in &config.also {
        let mut c = config.clone();
        c.dir = extra.dir.clone();
        c.host = extra.host.clone();
        let mut e = ComposeExecutor::new(runner_for(&extra.host), c);
        e.label = name(&extra.host, &extra.dir);
        hosts.push(e);
    }
    Box::new(MultiHostExecutor { hosts })
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
