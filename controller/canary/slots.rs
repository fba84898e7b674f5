//! The two slots of a canary target as compose projects beside each other: the live project's
//! name with `-blue` or `-green`, from the same directory and compose file, each on its own
//! port. The compose file must allow that: no `container_name` (two containers cannot share
//! one), and the service's port taken from a variable (`APP_PORT` by default) so each slot gets
//! its own. Both are checked by rendering the file with two ports before anything starts.

use std::path::PathBuf;
use std::sync::Arc;

use super::super::rollback::{CommandOutput, CommandRunner};
use crate::traffic::Slot;

/// Where and how a target's slots are run.
#[derive(Debug, Clone)]
pub struct SlotSite {
    pub dir: PathBuf,
    /// The live project's name; the slots are `<project>-blue` and `<project>-green`.
    pub project: String,
    pub env_file: String,
    /// `CONTAINER_REGISTRY` as the compose file uses it.
    pub registry: String,
    /// `["docker-compose"]` or `["docker", "compose"]`.
    pub compose: Vec<String>,
    /// The variable the compose file takes the service's port from.
    pub port_var: String,
    /// The ports of the blue and the green slot (the load balancer's servers point at them).
    pub ports: [u16; 2],
}

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("the compose file in {dir} sets container_name {name:?}: two slots of it cannot run side by side; remove container_name (compose names containers per project)")]
    ContainerName { dir: String, name: String },
    #[error("the compose file in {dir} does not take its port from ${{{var}}}: rendered with two different ports it is the same, so both slots would use one port; set the service's port (its ports: or the environment variable it listens on) from ${{{var}}}")]
    FixedPort { dir: String, var: String },
    #[error("`{command}` failed ({status}): {output}")]
    Failed {
        command: String,
        status: String,
        output: String,
    },
    #[error("cannot run `{command}`: {source}")]
    Run {
        command: String,
        source: std::io::Error,
    },
}

impl SlotSite {
    pub fn project_of(&self, slot: Slot) -> String {
        format!("{}-{}", self.project, slot.name())
    }

    pub fn port_of(&self, slot: Slot) -> u16 {
        match slot {
            Slot::Blue => self.ports[0],
            Slot::Green => self.ports[1],
        }
    }

    async fn compose(
        &self,
        runner: &Arc<dyn CommandRunner>,
        project: &str,
        vars: &[(&str, String)],
        args: &[&str],
    ) -> Result<CommandOutput, SlotError> {
        let mut argv = self.compose.clone();
        argv.extend(["-p".into(), project.into(), "--env-file".into()]);
        argv.push(self.env_file.clone());
        argv.extend(args.iter().map(|a| a.to_string()));
        let mut env = vec![("CONTAINER_REGISTRY".to_string(), self.registry.clone())];
        env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let command = argv.join(" ");
        let out = runner
            .run(&self.dir, &env, &argv)
            .await
            .map_err(|source| SlotError::Run {
                command: command.clone(),
                source,
            })?;
        if !out.success() {
            return Err(SlotError::Failed {
                command,
                status: out.status_text(),
                output: out.text.trim().chars().take(2000).collect(),
            });
        }
        Ok(out)
    }

    /// Refuses a compose file whose slots could not run side by side, naming why.
    pub async fn check(&self, runner: &Arc<dyn CommandRunner>) -> Result<(), SlotError> {
        let dir = self.dir.display().to_string();
        let render = |port: u16| {
            let vars = [
                ("IMAGE_TAG", "check".to_string()),
                (self.port_var.as_str(), port.to_string()),
            ];
            async move {
                let project = self.project_of(Slot::Blue);
                self.compose(runner, &project, &vars, &["config"]).await
            }
        };
        let a = render(41_001).await?.text;
        if let Some(name) = a
            .lines()
            .find_map(|l| l.trim().strip_prefix("container_name:"))
        {
            return Err(SlotError::ContainerName {
                dir,
                name: name.trim().trim_matches(['\'', '"']).to_string(),
            });
        }
        let b = render(41_002).await?.text;
        if a == b {
            return Err(SlotError::FixedPort {
                dir,
                var: self.port_var.clone(),
            });
        }
        Ok(())
    }

    /// Starts `tag` as `slot`'s project on its port (pulling first, as the runbook does).
    pub async fn start(
        &self,
        runner: &Arc<dyn CommandRunner>,
        slot: Slot,
        tag: &str,
    ) -> Result<(), SlotError> {
        let vars = [
            ("IMAGE_TAG", tag.to_string()),
            (self.port_var.as_str(), self.port_of(slot).to_string()),
        ];
        let project = self.project_of(slot);
        self.compose(runner, &project, &vars, &["pull"]).await?;
        self.compose(runner, &project, &vars, &["up", "-d", "--remove-orphans"])
            .await?;
        Ok(())
    }

    /// Stops and removes `slot`'s containers.
    pub async fn remove(
        &self,
        runner: &Arc<dyn CommandRunner>,
        slot: Slot,
    ) -> Result<(), SlotError> {
        // `down` still interpolates the file: any tag and port will do.
        let vars = [
            ("IMAGE_TAG", "removed".to_string()),
            (self.port_var.as_str(), "0".to_string()),
        ];
        let project = self.project_of(slot);
        self.compose(runner, &project, &vars, &["down", "--remove-orphans"])
            .await?;
        Ok(())
    }
}
