//! Running the runbook on the deployment host through `ssh`, the way an on-call engineer does:
//! key authentication only (`BatchMode`), host keys checked (configurable), a connect timeout,
//! and a bounded number of retries when the connection itself fails (ssh exit 255). Every word
//! of the remote command is single-quoted; nothing from outside reaches the remote shell unquoted.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::io::AsyncWriteExt;

use super::{CommandOutput, CommandRunner};
use crate::config::{HostKeyChecking, SshConfig};

/// Quotes one word for a POSIX shell: `'it'\''s'`.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

pub struct SshRunner {
    /// `user@host` (validated at config load).
    destination: String,
    config: SshConfig,
}

impl SshRunner {
    pub fn new(destination: String, config: SshConfig) -> SshRunner {
        SshRunner {
            destination,
            config,
        }
    }

    fn ssh_args(&self) -> Vec<String> {
        let mut args = vec![
            "-p".to_string(),
            self.config.port.to_string(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            format!(
                "ConnectTimeout={}",
                self.config.connect_timeout.as_secs().max(1)
            ),
            "-o".into(),
            format!(
                "StrictHostKeyChecking={}",
                match self.config.host_key_checking {
                    HostKeyChecking::Strict => "yes",
                    HostKeyChecking::AcceptNew => "accept-new",
                    HostKeyChecking::Off => "no",
                }
            ),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ];
        if let Some(k) = &self.config.known_hosts_file {
            args.extend(["-o".into(), format!("UserKnownHostsFile={}", k.display())]);
        }
        if let Some(i) = &self.config.identity_file {
            args.extend([
                "-i".into(),
                i.display().to_string(),
                "-o".into(),
                "IdentitiesOnly=yes".into(),
            ]);
        }
        args.push(self.destination.clone());
        args
    }

    /// Runs `remote` (already quoted) on the host, feeding `stdin`; retries connection failures.
    async fn ssh(&self, remote: &str, stdin: Option<&str>) -> std::io::Result<CommandOutput> {
        let attempts = self.config.retries + 1;
        let mut last = None;
        for attempt in 1..=attempts {
            let mut cmd = tokio::process::Command::new("ssh");
            cmd.args(self.ssh_args())
                .arg(remote)
                .stdin(if stdin.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let mut child = cmd.spawn()?;
            if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
                pipe.write_all(input.as_bytes()).await?;
                drop(pipe);
            }
            let out = child.wait_with_output().await?;
            let output = CommandOutput::from_process(out);
            // 255 is ssh's own failure (refused, unreachable, auth, host key): the remote
            // command never ran, so trying again is safe.
            if output.code != Some(255) {
                return Ok(output);
            }
            tracing::warn!(host = %self.destination, attempt, attempts, "ssh connection failed: {}", output.text.trim());
            last = Some(output);
            if attempt < attempts {
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
        }
        let out = last.unwrap_or(CommandOutput {
            code: Some(255),
            text: String::new(),
        });
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!(
                "ssh {} failed {attempts} time(s): {}",
                self.destination,
                out.text.trim()
            ),
        ))
    }
}

impl CommandRunner for SshRunner {
    fn run<'a>(
        &'a self,
        dir: &'a Path,
        env: &'a [(String, String)],
        argv: &'a [String],
    ) -> BoxFuture<'a, std::io::Result<CommandOutput>> {
        Box::pin(async move {
            let mut remote = format!("cd {} && env", shell_quote(&dir.display().to_string()));
            for (k, v) in env {
                remote.push(' ');
                remote.push_str(&shell_quote(&format!("{k}={v}")));
            }
            for word in argv {
                remote.push(' ');
                remote.push_str(&shell_quote(word));
            }
            self.ssh(&remote, None).await
        })
    }

    fn read_file<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, std::io::Result<String>> {
        Box::pin(async move {
            let p = shell_quote(&path.display().to_string());
            let out = self
                .ssh(
                    &format!("if [ -e {p} ]; then cat {p}; else exit 44; fi"),
                    None,
                )
                .await?;
            match out.code {
                Some(0) => Ok(out.text),
                Some(44) => Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} not found", path.display()),
                )),
                _ => Err(std::io::Error::other(format!(
                    "reading {} failed: {}",
                    path.display(),
                    out.text.trim()
                ))),
            }
        })
    }

    fn write_file_atomic<'a>(
        &'a self,
        path: &'a Path,
        contents: &'a str,
    ) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(async move {
            let tmp: PathBuf = path.with_extension("rollwatch-tmp");
            let (t, p) = (
                shell_quote(&tmp.display().to_string()),
                shell_quote(&path.display().to_string()),
            );
            let out = self
                .ssh(
                    &format!("cat > {t} && sync {t} 2>/dev/null; mv -f {t} {p}"),
                    Some(contents),
                )
                .await?;
            if out.success() {
                Ok(())
            } else {
                Err(std::io::Error::other(format!(
                    "writing {} failed: {}",
                    path.display(),
                    out.text.trim()
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_hostile_words() {
        assert_eq!(shell_quote("v1.0.0"), "'v1.0.0'");
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
        assert_eq!(shell_quote("$(reboot); `id`"), "'$(reboot); `id`'");
        // The shell itself agrees.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote("it's $(x) `y` \"z\"")))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's $(x) `y` \"z\"");
    }
}
