//! Running the runbook on the deployment host through `ssh`, the way an on-call engineer does:
//! key authentication only (`BatchMode`), host keys checked (configurable), a connect timeout,
//! and a bounded number of retries when the connection itself fails (ssh exit 255). Every word
//! of the remote command is single-quoted; nothing from outside reaches the remote shell unquoted.
//!
//! Every step is bounded here, by `executor.step_timeout` (the local ssh and its process group
//! are killed), and on the host: a remote command without a terminal keeps running when its
//! ssh connection dies (sshd sends it no signal), so compose commands run under a watcher that
//! stops them when the connection ends ([`RUN_SCRIPT`]), and everything runs under coreutils
//! `timeout` one second past our deadline. The `.env` write is a script that cannot report
//! success for a file it did not fully write ([`WRITE_SCRIPT`]).

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::runner::{run_bounded, Captured, Input, StepError};
use super::{CommandOutput, CommandRunner};
use crate::config::{HostKeyChecking, SshConfig};

/// Quotes one word for a POSIX shell: `'it'\''s'`.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// Printed on stderr by the remote shell before anything else runs. ssh exits 255 both when it
/// could not connect (nothing ran: safe to retry) and when the connection broke mid-command
/// (something may have run: not safe to retry); only this line tells the two apart.
const STARTED: &str = "rollwatch: remote step started";

/// Seconds the host's `timeout` waits after its TERM before sending KILL.
const REMOTE_KILL_AFTER_SECS: u64 = 5;

/// Replaces a file on the host; `$1` is the path, `$2` the byte count sent on stdin, and on
/// success the file as it now is comes back on stdout to be compared with what was sent.
///
/// Needs GNU coreutils (`mktemp`, `chmod`/`chown --reference`, `sync FILE`, `readlink -f`,
/// `stat -c`). Each step that can fail ends the script with a message (`|| die`), and `set -eu`
/// catches anything else: a write that is cut short (disk full, quota, file size limit, the
/// connection dropping mid-stream) never reaches the `mv`. The temp file is removed on every
/// way out, TERM from the remote `timeout` included. Mode and owner are set after the write:
/// mktemp's 0600 keeps the contents private meanwhile, and a read-only `.env` (0400) would
/// otherwise make the temp file unwritable for its non-root owner.
///
/// Owner: `chown --reference` keeps user and group. A non-root user can only do that for a file
/// it owns (and a group it is in); for anyone else's file it fails and the script stops, leaving
/// the file as it was. Writing in place instead would keep the owner but is exactly the
/// truncate-then-write that a cut-short write turns into a broken `.env`, so it is not done.
pub const WRITE_SCRIPT: &str = r#"set -eu
die() { printf 'rollwatch: %s\n' "$*" >&2; exit 3; }
path=$1
size=$2
if [ -e "$path" ]; then path=$(readlink -f -- "$path") || die "cannot resolve $1"; fi
dir=$(dirname -- "$path") || die "cannot take the directory of $path"
base=$(basename -- "$path") || die "cannot take the name of $path"
tmp=$(mktemp "$dir/.$base.rollwatch.XXXXXX") || die "cannot create a temp file in $dir as $(id -un): the directory must be writable by the ssh user"
trap 'rm -f -- "$tmp"' EXIT
trap 'exit 143' HUP INT TERM
cat >"$tmp" || die "writing $tmp failed or was cut short (disk full, quota, file size limit?); $path was left as it was"
got=$(wc -c <"$tmp") || die "cannot measure $tmp"
[ "$got" -eq "$size" ] || die "$tmp holds $got bytes, not the $size sent; $path was left as it was"
if [ -e "$path" ]; then chown --reference="$path" -- "$tmp" || die "cannot keep the owner $(stat -c %U:%G -- "$path") of $path as $(id -un); $path was left as it was. Connect as the file's owner or root"; fi
if [ -e "$path" ]; then chmod --reference="$path" -- "$tmp" || die "cannot keep the mode of $path; it was left as it was"; fi
sync -- "$tmp" || die "cannot sync $tmp; $path was left as it was"
mv -f -- "$tmp" "$path" || die "cannot move $tmp over $path; $path was left as it was"
sync -- "$dir" || die "$path was replaced but syncing $dir failed: the rename may not survive a crash"
cat -- "$path" || die "cannot read $path back"
"#;

/// Runs `"$@"` (a compose command) and stops it when rollwatch goes away. Without a terminal,
/// sshd sends a command no signal when its connection ends, so a killed step (deadline,
/// shutdown, `kill -9` of the controller) would keep running on the host beside the next
/// attempt. rollwatch holds this script's stdin open and never writes to it; ssh turns its
/// closing (or the connection's end) into end of file here, and then the watcher ends the whole
/// process group (`timeout` made it one). No `set -e`: the command's status is data to pass on.
/// Background lists get /dev/null as stdin, hence the copy on fd 3 for the watcher.
pub const RUN_SCRIPT: &str = r#"exec 3<&0
"$@" </dev/null 3<&- &
cmd=$!
{ cat >/dev/null; kill -TERM 0; } <&3 >/dev/null 2>&1 &
watch=$!
exec 3<&-
status=0
wait "$cmd" || status=$?
kill "$watch" 2>/dev/null
exit "$status"
"#;

/// Prints the file, or exits 44 when there is none.
const READ_SCRIPT: &str = r#"if [ -e "$1" ]; then exec cat -- "$1"; else exit 44; fi"#;

/// ssh's `ServerAliveInterval` for a connect timeout: a host that answered once but stopped
/// (hung kernel, cable pulled) is given up on after `ServerAliveCountMax` (3) silent intervals.
fn server_alive_interval(connect_timeout: Duration) -> u64 {
    connect_timeout.as_secs().max(1)
}

/// The remote command line: the start marker, `setup` (e.g. `cd dir`), then `command` under the
/// host's `timeout` of `secs` (TERM, then KILL 5 s later, to the command's whole process group).
fn bounded_remote(setup: Option<&str>, command: &str, secs: u64) -> String {
    let setup = setup.map(|s| format!("{s} && ")).unwrap_or_default();
    format!(
        "printf '%s\\n' {marker} >&2 && {setup}exec timeout -k {REMOTE_KILL_AFTER_SECS} {secs} {command}",
        marker = shell_quote(STARTED),
    )
}

/// Removes the start marker line from stderr; returns whether it was there.
fn strip_marker(stderr: &mut Vec<u8>) -> bool {
    let line = format!("{STARTED}\n");
    let text = String::from_utf8_lossy(stderr).into_owned();
    match text.find(&line) {
        Some(i) => {
            let mut rest = text[..i].to_string();
            rest.push_str(&text[i + line.len()..]);
            *stderr = rest.into_bytes();
            true
        }
        None => false,
    }
}

pub struct SshRunner {
    /// `user@host` (validated at config load).
    destination: String,
    config: SshConfig,
    /// `executor.step_timeout`: one budget per step, retries included.
    step_timeout: Duration,
}

impl SshRunner {
    pub fn new(destination: String, config: SshConfig, step_timeout: Duration) -> SshRunner {
        SshRunner {
            destination,
            config,
            step_timeout,
        }
    }

    fn ssh_args(&self) -> Vec<String> {
        let alive = server_alive_interval(self.config.connect_timeout);
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
            format!("ServerAliveInterval={alive}"),
            "-o".into(),
            "ServerAliveCountMax=3".into(),
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

    /// Runs `command` (already quoted) on the host after `setup`, with `input` on stdin, within one
    /// `step_timeout` for all attempts; `what` names the step in errors. Retries only when ssh
    /// failed before the remote shell started; a step that hangs is killed, never retried.
    async fn ssh(
        &self,
        what: &str,
        setup: Option<&str>,
        command: &str,
        input: Input,
    ) -> std::io::Result<Captured> {
        let label = format!("ssh {} {what}", self.destination);
        let deadline = Instant::now() + self.step_timeout;
        let attempts = self.config.retries + 1;
        let mut tried = 0;
        let mut last = String::new();
        while tried < attempts {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            tried += 1;
            // The host's deadline is a second past ours, so ours fires first and the error is
            // ours; the host's only cleans up what a dead connection would leave running.
            let remote = bounded_remote(setup, command, remaining.as_secs() + 1);
            let mut cmd = tokio::process::Command::new("ssh");
            cmd.args(self.ssh_args()).arg(remote);
            let mut out = run_bounded(cmd, input.clone(), remaining, &label)
                .await
                .map_err(|e| match e {
                    StepError::TimedOut {
                        command, partial, ..
                    } => StepError::TimedOut {
                        command,
                        timeout: self.step_timeout,
                        partial: partial.replacen(&format!("{STARTED}\n"), "", 1),
                    },
                    other => other,
                })?;
            let started = strip_marker(&mut out.stderr);
            // 255 is ssh's own failure (refused, unreachable, auth, host key, keep-alive lost).
            if out.status.code() != Some(255) {
                return Ok(out);
            }
            let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if started {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    format!(
                        "the connection to {} ended while `{what}` ran (ssh exit 255: {text}); it may have partly run, so it was not retried",
                        self.destination
                    ),
                ));
            }
            tracing::warn!(host = %self.destination, attempt = tried, attempts, "ssh connection failed: {text}");
            last = text;
            if tried < attempts {
                let pause = Duration::from_millis(500 * u64::from(tried))
                    .min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
            }
        }
        if tried < attempts {
            // The budget ran out between attempts.
            return Err(StepError::TimedOut {
                command: label,
                timeout: self.step_timeout,
                partial: last,
            }
            .into());
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("ssh {} failed {tried} time(s): {last}", self.destination),
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
            let setup = format!("cd {}", shell_quote(&dir.display().to_string()));
            let mut command = format!("sh -c {} rollwatch-run env", shell_quote(RUN_SCRIPT));
            for (k, v) in env {
                command.push(' ');
                command.push_str(&shell_quote(&format!("{k}={v}")));
            }
            for word in argv {
                command.push(' ');
                command.push_str(&shell_quote(word));
            }
            let out = self
                .ssh(&argv.join(" "), Some(&setup), &command, Input::HoldOpen)
                .await?;
            Ok(CommandOutput::from_parts(
                out.status,
                &out.stdout,
                &out.stderr,
            ))
        })
    }

    fn read_file<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, std::io::Result<String>> {
        Box::pin(async move {
            let shown = path.display().to_string();
            let command = format!(
                "sh -c {} rollwatch-read {}",
                shell_quote(READ_SCRIPT),
                shell_quote(&shown)
            );
            let out = self
                .ssh(&format!("read {shown}"), None, &command, Input::Null)
                .await?;
            match out.status.code() {
                Some(0) => String::from_utf8(out.stdout).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{shown} on {} is not UTF-8 text", self.destination),
                    )
                }),
                Some(44) => Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{shown} not found"),
                )),
                _ => Err(std::io::Error::other(format!(
                    "reading {shown} on {} failed: {}",
                    self.destination,
                    String::from_utf8_lossy(&out.stderr).trim()
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
            let shown = path.display().to_string();
            let command = write_command(&shown, contents.len());
            let out = self
                .ssh(
                    &format!("write {shown}"),
                    None,
                    &command,
                    Input::Bytes(contents.as_bytes().to_vec()),
                )
                .await?;
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if !out.status.success() {
                let status = out
                    .status
                    .code()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "a signal".into());
                let why = if stderr.is_empty() {
                    format!("exit {status}")
                } else {
                    stderr
                };
                return Err(std::io::Error::other(format!(
                    "writing {shown} on {} failed: {why}",
                    self.destination
                )));
            }
            if out.stdout != contents.as_bytes() {
                return Err(std::io::Error::other(format!(
                    "{shown} on {} was replaced, but reading it back gave {} bytes that differ from the {} written; another writer (or output from the ssh user's shell start-up files) is in the way: check the file",
                    self.destination,
                    out.stdout.len(),
                    contents.len()
                )));
            }
            Ok(())
        })
    }
}

/// The remote command that runs [`WRITE_SCRIPT`] for `path` with `len` bytes on stdin.
fn write_command(path: &str, len: usize) -> String {
    format!(
        "sh -c {} rollwatch-write {} {len}",
        shell_quote(WRITE_SCRIPT),
        shell_quote(path)
    )
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

    /// Runs the write script here, as the host would, optionally under `ulimit -f <blocks>`.
    fn run_write_script(
        path: &Path,
        sent: &[u8],
        size: usize,
        fsize: Option<u32>,
    ) -> std::process::Output {
        use std::io::Write;
        let wrapper = match fsize {
            Some(blocks) => format!("ulimit -f {blocks} && exec sh -c \"$@\""),
            None => "exec sh -c \"$@\"".to_string(),
        };
        let mut child = std::process::Command::new("sh")
            .args(["-c", &wrapper, "wrapper", WRITE_SCRIPT, "rollwatch-write"])
            .arg(path)
            .arg(size.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(sent);
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_script_is_valid_sh_and_every_step_stops_it_on_failure() {
        let check = std::process::Command::new("sh")
            .args(["-n", "-c", WRITE_SCRIPT])
            .output()
            .unwrap();
        assert!(check.status.success(), "{check:?}");
        assert!(WRITE_SCRIPT.starts_with("set -eu\n"));
        for line in WRITE_SCRIPT.lines() {
            let declaration = ["set ", "die()", "path=$1", "size=$2", "trap "]
                .iter()
                .any(|p| line.starts_with(p));
            assert!(
                declaration || line.contains("|| die "),
                "unguarded step: {line}"
            );
            // The old script's bug: `cat > tmp && sync tmp; mv -f tmp path`.
            if let Some(i) = line.find("mv ") {
                assert!(!line[..i].contains(';'), "a move joined by `;`: {line}");
            }
        }
        let at = |needle: &str| WRITE_SCRIPT.find(needle).unwrap();
        assert!(at("cat >\"$tmp\"") < at("[ \"$got\" -eq \"$size\" ]"));
        assert!(at("[ \"$got\" -eq \"$size\" ]") < at("mv -f"));
        assert!(at("chown --reference") < at("mv -f") && at("chmod --reference") < at("mv -f"));
    }

    #[test]
    fn remote_command_lines_quote_the_script_and_bound_it() {
        let cmd = write_command("/opt/a b/.env", 12);
        assert!(cmd.starts_with("sh -c 'set -eu\n"), "{cmd}");
        assert!(
            cmd.ends_with(" rollwatch-write '/opt/a b/.env' 12"),
            "{cmd}"
        );
        let line = bounded_remote(Some("cd '/x'"), &cmd, 7);
        assert!(
            line.starts_with("printf '%s\\n' 'rollwatch: remote step started' >&2 && cd '/x' && exec timeout -k 5 7 sh -c "),
            "{line}"
        );
        assert_eq!(server_alive_interval(Duration::from_millis(300)), 1);
        assert_eq!(server_alive_interval(Duration::from_secs(10)), 10);
    }

    #[test]
    fn ssh_keeps_the_connection_alive_and_notices_a_silent_host() {
        let config = SshConfig {
            connect_timeout: Duration::from_secs(4),
            ..SshConfig::default()
        };
        let runner = SshRunner::new("deploy@h".into(), config, Duration::from_secs(60));
        let args = runner.ssh_args().join(" ");
        assert!(
            args.contains("-o ServerAliveInterval=4 -o ServerAliveCountMax=3"),
            "{args}"
        );
        assert!(
            args.contains("-o BatchMode=yes") && args.ends_with(" deploy@h"),
            "{args}"
        );
    }

    /// Starts [`RUN_SCRIPT`] here as the host would (in its own process group, as under
    /// `timeout`: its watcher signals the whole group), with a stdin pipe held open.
    fn spawn_run_script(dir: &Path, command: &str) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sh")
            .args(["-c", RUN_SCRIPT, "rollwatch-run", "sh", "-c", command])
            .current_dir(dir)
            .process_group(0)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    #[test]
    fn run_script_passes_on_the_command_status_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn_run_script(dir.path(), "echo out; echo err >&2; exit 7");
        // Held open until the command has ended by itself, as run_bounded does (std's
        // wait_with_output would close it first, and the watcher would stop the command).
        let stdin = child.stdin.take();
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        assert_eq!(out.status.code(), Some(7));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn run_script_stops_the_command_when_its_stdin_closes() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn_run_script(dir.path(), "echo $$ > pid; exec sleep 300");
        let pid_file = dir.path().join("pid");
        let started = std::time::Instant::now();
        while !pid_file.exists() && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .to_string();
        // What the host sees when rollwatch or its ssh is killed: end of file on stdin.
        drop(child.stdin.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the script did not stop"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(!status.success());
        // The script signals the command and exits; the signal takes effect a moment later
        // (seen still running right after the script's exit three times on a loaded machine).
        let running = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    !s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(false)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while running() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !running(),
            "the command ({pid}) still runs 5 s after the script ended"
        );
    }

    #[test]
    fn the_start_marker_is_removed_from_stderr() {
        let mut err = b"warn\nrollwatch: remote step started\nboom\n".to_vec();
        assert!(strip_marker(&mut err));
        assert_eq!(err, b"warn\nboom\n");
        let mut none = b"ssh: connect to host x port 22: Connection refused\n".to_vec();
        assert!(!strip_marker(&mut none));
    }

    #[test]
    fn write_script_replaces_the_file_keeping_its_mode_and_echoes_it_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".env");
        std::fs::write(&p, "IMAGE_TAG=old\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let new = b"IMAGE_TAG=new\nDB_PASSWORD=s3cret\n";
        let out = run_write_script(&p, new, new.len(), None);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, new, "the file comes back on stdout");
        assert_eq!(std::fs::read(&p).unwrap(), new);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        assert_eq!(entries(dir.path()), vec![".env"]);
    }

    #[test]
    fn write_script_cut_short_by_a_file_size_limit_leaves_the_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".env");
        std::fs::write(&p, "IMAGE_TAG=old\n").unwrap();
        let big = vec![b'#'; 64 * 1024];
        // 8 blocks (4 KiB in dash, 8 KiB in bash): the kernel stops `cat` mid-file.
        let out = run_write_script(&p, &big, big.len(), Some(8));
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cut short") && err.contains("left as it was"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "IMAGE_TAG=old\n");
        assert_eq!(entries(dir.path()), vec![".env"], "temp file removed");
    }

    #[test]
    fn write_script_refuses_a_stream_shorter_than_announced() {
        // What the host sees when the connection drops mid-stream: `cat` ends cleanly, early.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".env");
        std::fs::write(&p, "IMAGE_TAG=old\n").unwrap();
        let out = run_write_script(&p, b"IMAGE_TAG=n", 14, None);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("holds 11 bytes, not the 14 sent"), "{err}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "IMAGE_TAG=old\n");
        assert_eq!(entries(dir.path()), vec![".env"]);
    }
}
