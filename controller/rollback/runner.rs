//! Running commands for the compose executor. Behind a trait because the runbook is run either
//! here or on the deployment host through ssh; the executor does not care which.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use futures_util::future::BoxFuture;

/// Combined stdout and stderr of one command, in the order a terminal would show them roughly.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub code: Option<i32>,
    pub text: String,
}

impl CommandOutput {
    /// Stdout then stderr of a finished process.
    pub fn from_process(out: std::process::Output) -> CommandOutput {
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        CommandOutput {
            code: out.status.code(),
            text,
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    pub fn status_text(&self) -> String {
        self.code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "killed by signal".into())
    }
}

pub trait CommandRunner: Send + Sync {
    /// Runs `argv` in `dir` with `env` added to the environment. Arguments are passed as a
    /// vector, never through a shell.
    fn run<'a>(
        &'a self,
        dir: &'a Path,
        env: &'a [(String, String)],
        argv: &'a [String],
    ) -> BoxFuture<'a, std::io::Result<CommandOutput>>;

    fn read_file<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, std::io::Result<String>>;

    fn write_file_atomic<'a>(
        &'a self,
        path: &'a Path,
        contents: &'a str,
    ) -> BoxFuture<'a, std::io::Result<()>>;
}

/// Runs on this machine.
#[derive(Debug, Default, Clone)]
pub struct LocalRunner;

impl CommandRunner for LocalRunner {
    fn run<'a>(
        &'a self,
        dir: &'a Path,
        env: &'a [(String, String)],
        argv: &'a [String],
    ) -> BoxFuture<'a, std::io::Result<CommandOutput>> {
        Box::pin(async move {
            let (program, args) = argv.split_first().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command")
            })?;
            let out = tokio::process::Command::new(program)
                .args(args)
                .current_dir(dir)
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output()
                .await?;
            Ok(CommandOutput::from_process(out))
        })
    }

    fn read_file<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, std::io::Result<String>> {
        Box::pin(tokio::fs::read_to_string(path))
    }

    fn write_file_atomic<'a>(
        &'a self,
        path: &'a Path,
        contents: &'a str,
    ) -> BoxFuture<'a, std::io::Result<()>> {
        let path: PathBuf = path.to_path_buf();
        let contents = contents.to_string();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || super::envfile::write_atomic(&path, &contents))
                .await
                .map_err(std::io::Error::other)?
        })
    }
}
