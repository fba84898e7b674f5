//! The executor for containers started without compose files: each container of the target is
//! recreated through the Docker API with its own configuration and the known-good image, pinned
//! by image ID so a re-pushed tag cannot change what runs.

use futures_util::future::BoxFuture;

use super::{step_start, ExecError, ExecPlan, ExecReport, Executor};
use crate::docker::DockerClient;
use crate::target::Selector;

pub struct DockerApiExecutor {
    docker: DockerClient,
    selector: Selector,
}

impl DockerApiExecutor {
    pub fn new(docker: DockerClient, selector: Selector) -> DockerApiExecutor {
        DockerApiExecutor { docker, selector }
    }

    async fn run(&self, plan: &ExecPlan, report: &mut ExecReport) -> Result<(), ExecError> {
        let containers = self.docker.containers(&self.selector, true).await?;
        if containers.is_empty() {
            return Err(ExecError::NoContainers {
                target: plan.target.clone(),
            });
        }
        let image = plan.image();
        report.fenced("pull").await?;
        let (t, ms) = step_start();
        let image_id = match self
            .docker
            .pull(&plan.image_repository, plan.tag.as_str())
            .await
        {
            Ok(()) => self.docker.image_id(&image).await?,
            Err(e) => {
                let local = self.docker.image_id(&image).await?;
                if local.is_some() {
                    report.warn(format!("{e}; using the copy present locally"));
                } else {
                    report.output.push_str(&format!("{e}\n"));
                }
                local
            }
        };
        let Some(image_id) = image_id else {
            report.step(
                "pull",
                t,
                ms,
                false,
                format!("{image} not pulled and not present locally"),
            );
            return Err(ExecError::Pull { image });
        };
        report.step("pull", t, ms, true, format!("{image} = {image_id}"));

        for c in containers {
            report.fenced("recreate").await?;
            let (t, ms) = step_start();
            let result = self.docker.recreate_with_image(&c.id, &image_id).await;
            let detail = match &result {
                Ok(new_id) => format!(
                    "{} {} -> {} (container {})",
                    c.name,
                    c.image_ref,
                    image_id,
                    short(new_id)
                ),
                Err(e) => format!("{}: {e}", c.name),
            };
            report.output.push_str(&format!("recreate {detail}\n"));
            report.step(
                &format!("recreate {}", c.name),
                t,
                ms,
                result.is_ok(),
                detail,
            );
            result?;
        }
        Ok(())
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl Executor for DockerApiExecutor {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn execute<'a>(
        &'a self,
        plan: &'a ExecPlan,
        report: &'a mut ExecReport,
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        Box::pin(self.run(plan, report))
    }
}
