//! What people see from the command line, checked on the real binary without Docker: a listing
//! stops quietly when its reader goes away (`rollwatch history | head -1`), logs carry no
//! colour codes off a terminal, and a config that cannot be used says why once, at its place.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rollwatch::store::Store;
use rollwatch::target::{Env, TargetId};

const BIN: &str = env!("CARGO_BIN_EXE_rollwatch");

mod harness;

fn write_config(dir: &Path, health_extra: &str) -> PathBuf {
    harness::offline_config(dir, "127.0.0.1:5000/cli-output-test", health_extra)
}

/// More history than a pipe holds (64 KiB on Linux): 400 events of about 300 bytes each, written
/// through the real store.
fn fill_store(db: &Path) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = Store::open(db).expect("open store");
        let target = TargetId {
            env: Env::Staging,
            role: "backend".into(),
        };
        for i in 0..400 {
            store
                .record_event(
                    target.clone(),
                    "deploy_seen",
                    Some(format!("v1.{i}.0")),
                    format!("deploy {i} seen: {}", "x".repeat(240)),
                )
                .await
                .expect("record event");
        }
    });
}

/// `rollwatch <args> | head -1` in a real shell: rollwatch's exit status, what head printed and
/// rollwatch's stderr.
fn piped_to_head(config: &Path, args: &str) -> (String, String, String) {
    let dir = config.parent().expect("config dir");
    let (status, stderr) = (dir.join("status"), dir.join("stderr"));
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            r#"{{ "$0" {args} 2>"$1"; echo $? >"$2"; }} | head -1"#
        ))
        .arg(BIN)
        .arg(&stderr)
        .arg(&status)
        .env("ROLLWATCH_CONFIG", config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sh");
    assert!(out.status.success(), "the pipeline ran: {out:?}");
    (
        std::fs::read_to_string(&status).expect("status file"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        std::fs::read_to_string(&stderr).expect("stderr file"),
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn rollwatch(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("ROLLWATCH_CONFIG", config)
        .env_remove("NO_COLOR")
        .output()
        .expect("run rollwatch")
}

#[test]
fn history_piped_to_head_exits_zero_without_a_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "");
    fill_store(&dir.path().join("rollwatch.db"));

    let (status, stdout, stderr) = piped_to_head(&config, "history --limit 400");

    assert_eq!(status.trim(), "0", "exit status; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.is_empty(), "nothing to say on stderr: {stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("when (UTC)"), "{stdout}");
}

#[test]
fn history_prints_every_event_when_read_to_the_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "");
    fill_store(&dir.path().join("rollwatch.db"));

    let out = rollwatch(&config, &["history", "--limit", "400"]);

    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches(" deploy_seen ").count(), 400);
    assert!(stdout.ends_with("no rollbacks on record\n"), "{stdout}");
}

#[test]
fn logs_carry_no_colour_codes_off_a_terminal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "");
    // `status` against a controller that is not running: the HTTP client logs its attempt at
    // debug level, and the command fails with an error, all on stderr, which is a pipe here.
    let out = Command::new(BIN)
        .arg("status")
        .env("ROLLWATCH_CONFIG", &config)
        .env("RUST_LOG", "debug")
        .env_remove("NO_COLOR")
        .output()
        .expect("run rollwatch");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("DEBUG"), "logs were written: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "no escape codes: {stderr:?}");
    assert!(!text(&out.stdout).contains('\u{1b}'));
}

#[test]
fn missing_config_file_says_its_cause_once() {
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/rollwatch.toml", "check-config"])
        .output()
        .expect("run rollwatch");
    assert_eq!(out.status.code(), Some(2), "refused");
    assert_eq!(
        text(&out.stderr),
        "error: cannot read config file /nonexistent/rollwatch.toml: no such file; pass the right file with --config or ROLLWATCH_CONFIG\n"
    );
}

#[test]
fn zero_probe_timeout_is_refused_at_its_value() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), r#", timeout = "0s""#);

    let out = rollwatch(&config, &["check-config"]);

    assert_eq!(out.status.code(), Some(2), "refused");
    let stderr = text(&out.stderr);
    let expected = format!(
        "error: {}:9:57: targets[0].health.timeout: 0s leaves a probe no time to answer",
        config.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
    assert!(
        stderr.ends_with(
            "    | health = { url = \"http://127.0.0.1:9/health\", timeout = \"0s\" }\n"
        ),
        "{stderr}"
    );
}
