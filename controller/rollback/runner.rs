//! Running commands for the compose executor. Behind a trait because the runbook is run either
//! here or on the deployment host through ssh; the executor does not care which.
//!
//! Every command runs under a deadline (`executor.step_timeout`) in its own process group: at
//! the deadline the whole group is killed with SIGKILL (compose's helpers and ssh alike), the
//! output readers stop waiting, and the caller gets [`StepError::TimedOut`]. Nothing here waits
//! without a bound.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::config::DEFAULT_STEP_TIMEOUT;

/// Combined stdout and stderr of one command, in the order a terminal would show them roughly.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub code: Option<i32>,
    pub text: String,
}

impl CommandOutput {
    /// Stdout then stderr of a finished process.
    pub fn from_process(out: std::process::Output) -> CommandOutput {
        CommandOutput::from_parts(out.status, &out.stdout, &out.stderr)
    }

    pub(crate) fn from_parts(status: ExitStatus, stdout: &[u8], stderr: &[u8]) -> CommandOutput {
        let mut text = String::from_utf8_lossy(stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(stderr));
        CommandOutput {
            code: status.code(),
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
    ) -> BoxFuture<'a, io::Result<CommandOutput>>;

    fn read_file<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<String>>;

    /// Replaces `path` with `contents` so that it is either the old file or the complete new
    /// one, with the old file's mode and owner, and checks the result by reading it back. An
    /// error means the old file is still in place (unless it says otherwise).
    fn write_file_atomic<'a>(
        &'a self,
        path: &'a Path,
        contents: &'a str,
    ) -> BoxFuture<'a, io::Result<()>>;
}

/// Why a bounded command did not give an exit status.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("cannot start `{command}`: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("`{command}` did not finish within {} (executor.step_timeout); its process group was killed. Raise executor.step_timeout if the step is merely slow{}", humantime::format_duration(*.timeout), last_output(.partial))]
    TimedOut {
        command: String,
        timeout: Duration,
        partial: String,
    },
    #[error("waiting for `{command}` failed: {source}")]
    Wait { command: String, source: io::Error },
}

fn last_output(partial: &str) -> String {
    const TAIL: usize = 600;
    let text = partial.trim();
    if text.is_empty() {
        return String::new();
    }
    let start = text
        .char_indices()
        .rev()
        .nth(TAIL)
        .map(|(i, _)| i)
        .unwrap_or(0);
    format!("; its last output: {}", &text[start..])
}

impl From<StepError> for io::Error {
    fn from(e: StepError) -> io::Error {
        let kind = match &e {
            StepError::Spawn { source, .. } => source.kind(),
            StepError::TimedOut { .. } => io::ErrorKind::TimedOut,
            StepError::Wait { .. } => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// What a bounded command left: its exit status and its two streams, apart.
#[derive(Debug)]
pub(crate) struct Captured {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// How long a killed process group gets to be reaped and to let its pipes reach EOF. SIGKILL
/// cannot be caught, so this only covers the kernel's own teardown.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Kills a process group with SIGKILL when dropped, unless disarmed after its leader was reaped.
/// Dropping covers the paths that never reach the end of [`run_bounded`]: the step's future
/// cancelled by shutdown, or a panic. tokio's `kill_on_drop` alone kills only the leader and
/// would leave compose's or ssh's children running.
struct GroupKill(Option<nix::unistd::Pid>);

impl GroupKill {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // ESRCH (the group is already gone) is the outcome we want anyway.
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Appends everything `r` yields to `buf` (shared, so a killed command's partial output can be
/// read without waiting for the reader to finish).
async fn drain(mut r: impl AsyncRead + Unpin, buf: Arc<Mutex<Vec<u8>>>) {
    let mut chunk = [0u8; 8192];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => match buf.lock() {
                Ok(mut b) => b.extend_from_slice(&chunk[..n]),
                Err(_) => return,
            },
        }
    }
}

fn take(buf: &Arc<Mutex<Vec<u8>>>) -> Vec<u8> {
    buf.lock()
        .map(|mut b| std::mem::take(&mut *b))
        .unwrap_or_default()
}

/// What a bounded command gets on stdin.
#[derive(Debug, Clone)]
pub(crate) enum Input {
    /// /dev/null.
    Null,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// A pipe that stays open, without data, until the command has ended or is killed (or this
    /// process dies): ssh forwards its closing as end of file, which the host side can watch
    /// to stop the command when rollwatch is gone.
    HoldOpen,
}

/// Runs `cmd` in a new process group with `input` on stdin and returns its exit
/// status and output; at `timeout` kills the whole group and returns [`StepError::TimedOut`]
/// naming `command`. Writing stdin and reading stdout/stderr happen concurrently and inside the
/// deadline, so neither a command that never reads nor one whose helper keeps a pipe open can
/// hold the caller past it.
pub(crate) async fn run_bounded(
    mut cmd: tokio::process::Command,
    input: Input,
    timeout: Duration,
    command: &str,
) -> Result<Captured, StepError> {
    crate::secrets::scrub(&mut cmd);
    cmd.process_group(0)
        .kill_on_drop(true)
        .stdin(match input {
            Input::Null => Stdio::null(),
            Input::Bytes(_) | Input::HoldOpen => Stdio::piped(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| StepError::Spawn {
        command: command.to_string(),
        source,
    })?;
    // With process_group(0) the child's pid is its group's id.
    let mut group = GroupKill(
        child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .map(nix::unistd::Pid::from_raw),
    );
    let (out_buf, err_buf) = (Arc::default(), Arc::default());
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(drain(out, Arc::clone(&out_buf))));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(drain(err, Arc::clone(&err_buf))));
    }
    // Held until this function returns: dropping it closes the pipe.
    let mut _held = None;
    let writer = match (input, child.stdin.take()) {
        (Input::HoldOpen, pipe) => {
            _held = pipe;
            None
        }
        (Input::Bytes(bytes), Some(mut pipe)) => Some(tokio::spawn(async move {
            // A command that exits before reading everything (it failed early) closes the pipe:
            // its exit status tells what happened, so the write error itself is not reported.
            let _ = pipe.write_all(&bytes).await;
            let _ = pipe.shutdown().await;
        })),
        _ => None,
    };

    let finished = tokio::time::timeout(timeout, async {
        let status = child.wait().await;
        for r in readers.iter_mut() {
            let _ = r.await;
        }
        status
    })
    .await;
    if let Some(w) = writer {
        w.abort();
    }
    match finished {
        Ok(Ok(status)) => {
            // The leader is reaped and its pipes are closed: the group is done.
            group.0 = None;
            Ok(Captured {
                status,
                stdout: take(&out_buf),
                stderr: take(&err_buf),
            })
        }
        Ok(Err(source)) => Err(StepError::Wait {
            command: command.to_string(),
            source,
        }),
        Err(_) => {
            group.kill();
            let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
            for r in readers.iter_mut() {
                let _ = tokio::time::timeout(KILL_GRACE, r).await;
            }
            for r in &readers {
                r.abort();
            }
            let mut partial = String::from_utf8_lossy(&take(&out_buf)).into_owned();
            partial.push_str(&String::from_utf8_lossy(&take(&err_buf)));
            Err(StepError::TimedOut {
                command: command.to_string(),
                timeout,
                partial,
            })
        }
    }
}

/// Runs on this machine.
#[derive(Debug, Clone)]
pub struct LocalRunner {
    step_timeout: Duration,
}

impl LocalRunner {
    /// `step_timeout` bounds each command (`executor.step_timeout`).
    pub fn new(step_timeout: Duration) -> LocalRunner {
        LocalRunner { step_timeout }
    }
}

impl Default for LocalRunner {
    fn default() -> Self {
        LocalRunner::new(DEFAULT_STEP_TIMEOUT)
    }
}

impl CommandRunner for LocalRunner {
    fn run<'a>(
        &'a self,
        dir: &'a Path,
        env: &'a [(String, String)],
        argv: &'a [String],
    ) -> BoxFuture<'a, io::Result<CommandOutput>> {
        Box::pin(async move {
            let (program, args) = argv
                .split_first()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args)
                .current_dir(dir)
                .envs(env.iter().map(|(k, v)| (k, v)));
            let out = run_bounded(cmd, Input::Null, self.step_timeout, &argv.join(" ")).await?;
            Ok(CommandOutput::from_parts(
                out.status,
                &out.stdout,
                &out.stderr,
            ))
        })
    }

    fn read_file<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<String>> {
        Box::pin(tokio::fs::read_to_string(path))
    }

    fn write_file_atomic<'a>(
        &'a self,
        path: &'a Path,
        contents: &'a str,
    ) -> BoxFuture<'a, io::Result<()>> {
        let path: PathBuf = path.to_path_buf();
        let contents = contents.to_string();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || super::envfile::write_atomic(&path, &contents))
                .await
                .map_err(io::Error::other)?
                .map_err(io::Error::other)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn group_alive(pgid: i32) -> bool {
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_ok()
    }

    #[tokio::test]
    async fn a_hung_command_is_killed_with_its_whole_group_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        // The shell notes its pid (= the group id), leaves a grandchild sleeping in the
        // background holding stdout open, and sleeps itself.
        let argv: Vec<String> = [
            "sh",
            "-c",
            "echo $$ > pid; echo started; sleep 300 & sleep 300",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let runner = LocalRunner::new(Duration::from_millis(500));
        let started = Instant::now();
        let err = runner.run(dir.path(), &[], &argv).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let text = err.to_string();
        assert!(text.contains("did not finish within 500ms"), "{text}");
        assert!(text.contains("executor.step_timeout"), "{text}");
        assert!(text.contains("its last output: started"), "{text}");
        let pgid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Every member, the background sleep included, is gone (zombies aside, reaped by init).
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_alive(pgid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let zombies_only = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter_map(|s| {
                let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
                (rest.get(2)? == &pgid.to_string()).then(|| rest[0].to_string())
            })
            .all(|state| state == "Z");
        assert!(zombies_only, "a process of group {pgid} still runs");
    }

    #[tokio::test]
    async fn a_finished_command_returns_both_streams_and_its_status() {
        let argv: Vec<String> = ["sh", "-c", "echo out; echo err >&2; exit 3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out = LocalRunner::default()
            .run(Path::new("/"), &[], &argv)
            .await
            .unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.text, "out\nerr\n");
    }

    #[tokio::test]
    async fn stdin_is_fed_and_a_command_that_ignores_it_does_not_block() {
        let mut cmd = tokio::process::Command::new("wc");
        cmd.arg("-c");
        let out = run_bounded(
            cmd,
            Input::Bytes(vec![b'x'; 300_000]),
            Duration::from_secs(10),
            "wc",
        )
        .await
        .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "300000");
        // `true` never reads its 1 MB of stdin: the write fails quietly, the status stands.
        let cmd = tokio::process::Command::new("true");
        let out = run_bounded(
            cmd,
            Input::Bytes(vec![b'x'; 1 << 20]),
            Duration::from_secs(10),
            "true",
        )
        .await
        .unwrap();
        assert!(out.status.success());
    }
}
