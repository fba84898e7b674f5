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
}

impl ComposeExecutor {
    pub fn new(runner: Arc<dyn CommandRunner>, config: ComposeExecutorConfig) -> ComposeExecutor {
        ComposeExecutor {
            runner,
            config,
            flavor: OnceCell::new(),
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
            report.step("pull", t, ms, true, plan.image());
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
                    "pull",
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
            report.step("pull", t, ms, true, "failed, image present locally");
        }

        let (t, ms) = step_start();
        let up = self
            .compose(flavor, plan, &["up", "-d", "--remove-orphans"], report)
            .await?;
        report.step("up", t, ms, up.success(), "up -d --remove-orphans");
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
            "env-file",
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
