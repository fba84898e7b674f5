//! Remote hosts and CI: the runbook over a real sshd on 127.0.0.1:2222, the Docker API over TLS on
//! 127.0.0.1:2376 and over ssh (sshd also on 127.0.0.2:22), a target spanning two hosts, the
//! GitLab CI example, rollback.sh, `rollwatch tags` against the real registry and `rollwatch wait`.

mod harness;

use std::path::Path;
use std::time::Duration;

use harness::*;

fn ssh_executor(d: &ComposeDeployment, app: &str, key: &str, port: u16) -> String {
    format!(
        r#"executor = {{ kind = "compose", dir = "{dir}", registry = "{REGISTRY}/{app}", host = "root@127.0.0.1", ssh = {{ port = {port}, identity_file = "{key}", known_hosts_file = "{kh}", host_key_checking = "strict", connect_timeout = "3s", retries = 1 }} }}"#,
        dir = d.dir().display(),
        key = testbed_file(&format!("ssh/{key}")).display(),
        kh = testbed_file("ssh/known_hosts").display(),
    )
}

/// The harness config with the executor line replaced.
fn config_with_executor(d: &ComposeDeployment, app: &str, executor: &str) -> std::path::PathBuf {
    let path = d.write_config(&format!("{REGISTRY}/{app}"), "");
    let text = std::fs::read_to_string(&path).unwrap();
    let replaced: String = text
        .lines()
        .map(|l| {
            if l.starts_with("executor = ") {
                executor.to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&path, replaced).unwrap();
    path
}

#[test]
fn compose_target_is_rolled_back_over_ssh() {
    let app = app_with_images("ss", &["v1.0.0", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.1.0");
    let config = config_with_executor(&d, &app, &ssh_executor(&d, &app, "client", 2222));
    cli_rollback(&config, "v1.0.0", 0);
    d.assert_runs("v1.0.0");
    assert!(
        d.env_file().contains("IMAGE_TAG=v1.0.0\n"),
        "{}",
        d.env_file()
    );
    assert!(
        d.env_file().starts_with("# written by the test harness"),
        "the rest of .env is kept"
    );
    wait_healthy_version(d.port, "v1.0.0");
}

fn assert_ssh_failure_changes_nothing(key: &str, port: u16, expect: &str) {
    let app = app_with_images("sf", &["v1.0.0", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.1.0");
    let before = d.container();
    let env_before = d.env_file();
    let config = config_with_executor(&d, &app, &ssh_executor(&d, &app, key, port));
    let (_, err) = cli_rollback(&config, "v1.0.0", 1);
    assert!(
        err.contains("ssh root@127.0.0.1 failed 2 time(s)") && err.contains(expect),
        "{err}"
    );
    assert!(err.contains("nothing was run on that host"), "{err}");
    assert_eq!(d.container().id, before.id, "container untouched");
    assert_eq!(d.env_file(), env_before, ".env untouched");
}

#[test]
fn wrong_ssh_key_is_a_clear_error_and_changes_nothing() {
    assert_ssh_failure_changes_nothing("wrong", 2222, "Permission denied");
}

#[test]
fn unreachable_ssh_host_is_a_clear_error_and_changes_nothing() {
    assert_ssh_failure_changes_nothing("client", free_port(), "Connection refused");
}

#[test]
fn docker_executor_works_through_the_tls_endpoint() {
    let app = app_with_images("tl", &["v1.0.0", "v1.1.0"]);
    let c = RunContainer::start(&app, "v1.1.0", &[], &[]);
    let (name, repo, port) = (c.name.clone(), c.repository(), c.port);
    let root = tempfile::tempdir().unwrap();
    let write = |docker: &str| c.write_config(root.path(), docker);
    // Without client certificates the engine refuses: a clear error, nothing changed.
    let plain = write(r#""tcp://127.0.0.1:2376""#);
    let out = rollwatch(&plain)
        .args(["rollback", "production", "backend", "v1.0.0"])
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("tcp://127.0.0.1:2376"), "{err}");
    assert_eq!(inspect(&name).image_ref, format!("{repo}:v1.1.0"));

    let tls = format!(
        r#"{{ url = "tcp://127.0.0.1:2376", tls = {{ ca = "{}", cert = "{}", key = "{}" }} }}"#,
        testbed_file("tls/ca.pem").display(),
        testbed_file("tls/cert.pem").display(),
        testbed_file("tls/key.pem").display()
    );
    let config = write(&tls);
    rollwatch(&config)
        .args(["rollback", "production", "backend", "v1.0.0"])
        .assert()
        .success();
    assert_eq!(
        Some(inspect(&name).image_id),
        image_id(&format!("{repo}:v1.0.0"))
    );
    wait_healthy_version(port, "v1.0.0");
}

#[test]
fn docker_executor_works_through_an_ssh_endpoint() {
    let app = app_with_images("sx", &["v1.0.0", "v1.1.0"]);
    let c = RunContainer::start(&app, "v1.1.0", &[], &[]);
    let root = tempfile::tempdir().unwrap();
    let docker = format!(
        r#"{{ url = "ssh://root@127.0.0.2", ssh_key = "{}" }}"#,
        testbed_file("ssh/client").display()
    );
    let config = c.write_config(root.path(), &docker);
    rollwatch(&config)
        .args(["rollback", "production", "backend", "v1.0.0"])
        .assert()
        .success();
    assert_eq!(
        Some(inspect(&c.name).image_id),
        image_id(&format!("{}:v1.0.0", c.repository()))
    );
    wait_healthy_version(c.port, "v1.0.0");
}

fn two_host_config(a: &ComposeDeployment, b: &ComposeDeployment, app: &str) -> std::path::PathBuf {
    let path = a.root.path().join("rollwatch.toml");
    std::fs::write(
        &path,
        format!(
            r#"[controller]
store = "rollwatch.db"

[[targets]]
env = "staging"
role = "backend"
selector = {{ labels = {{ "rollwatch.test.app" = "{app}" }} }}
health = {{ url = "http://127.0.0.1:{port}/health", validation_timeout = "30s" }}
executor = {{ kind = "compose", dir = "{a}", registry = "{REGISTRY}/{app}", also = [{{ dir = "{b}" }}] }}
"#,
            port = a.port,
            a = a.dir().display(),
            b = b.dir().display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn two_host_target_is_rolled_back_on_both() {
    let app = app_with_images("th", &["v1.0.0", "v1.1.0"]);
    let a = ComposeDeployment::up_on(&app, "staging", "backend", "v1.1.0", "hosta");
    let b = ComposeDeployment::up_on(&app, "staging", "backend", "v1.1.0", "hostb");
    let config = two_host_config(&a, &b, &app);
    let (text, _) = cli_rollback(&config, "v1.0.0", 0);
    assert!(
        text.contains("up@local:") && text.matches("up@local:").count() == 2,
        "{text}"
    );
    for d in [&a, &b] {
        d.assert_runs("v1.0.0");
        assert!(d.env_file().contains("IMAGE_TAG=v1.0.0\n"));
        wait_healthy_version(d.port, "v1.0.0");
    }
}

#[test]
fn two_host_partial_failure_is_reported_per_host() {
    let app = app_with_images("tp", &["v1.0.0", "v1.1.0"]);
    let a = ComposeDeployment::up_on(&app, "staging", "backend", "v1.1.0", "hosta");
    let b = ComposeDeployment::up_on(&app, "staging", "backend", "v1.1.0", "hostb");
    // Host B's deployment is broken: its compose file no longer parses.
    std::fs::write(
        b.dir().join("docker-compose.yml"),
        "services: [this is not compose\n",
    )
    .unwrap();
    let config = two_host_config(&a, &b, &app);
    let (_, err) = cli_rollback(&config, "v1.0.0", 1);
    let (ha, hb) = (
        format!("local:{}", a.dir().display()),
        format!("local:{}", b.dir().display()),
    );
    assert!(err.contains("1 of 2 hosts failed"), "{err}");
    assert!(
        err.contains(&format!("{ha}: rolled back to v1.0.0")),
        "{err}"
    );
    assert!(err.contains(&format!("{hb}: FAILED")), "{err}");
    assert_eq!(
        a.container().image_ref,
        format!("{}:v1.0.0", a.repository())
    );
    assert_eq!(
        b.container().image_ref,
        format!("{}:v1.1.0", b.repository()),
        "B left as it was"
    );
    let history = rollwatch(&config)
        .args(["history", "--verbose"])
        .assert()
        .success();
    assert!(String::from_utf8_lossy(&history.get_output().stdout).contains("1 of 2 hosts failed"));
}

#[test]
fn rollback_sh_works_with_the_runbook_arguments() {
    let app = app_with_images("rs", &["v1.0.0", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.1.0");
    let config = d.write_config(&format!("{REGISTRY}/{app}"), "");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deployment/scripts/rollback.sh");
    let run = |args: &[&str]| {
        std::process::Command::new(&script)
            .args(args)
            .env("ROLLWATCH_BIN", env!("CARGO_BIN_EXE_rollwatch"))
            .env("ROLLWATCH_CONFIG", &config)
            .output()
            .unwrap()
    };
    assert_eq!(run(&["staging"]).status.code(), Some(2), "usage error");
    assert_eq!(
        run(&["staging", "backend", "v1.0.0;id"]).status.code(),
        Some(2),
        "malformed tag refused"
    );
    let ok = run(&["staging", "backend", "v1.0.0"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    d.assert_runs("v1.0.0");
}

#[test]
fn gitlab_ci_example_parses_and_its_jobs_and_commands_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("examples/gitlab-ci.yml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
    for job in [
        "deploy:staging-backend",
        "deploy:staging-frontend",
        "deploy:production-backend",
        "deploy:production-frontend",
        "smoke:staging",
        "smoke:production",
        "rollback:manual",
    ] {
        assert!(doc.get(job).is_some(), "job {job} missing");
    }
    assert_eq!(doc["rollback:manual"]["when"], "manual");
    // Every rollwatch subcommand the example runs exists.
    for sub in ["wait", "rollback"] {
        assert!(
            text.contains(&format!("rollwatch --config \"$ROLLWATCH_CONFIG\" {sub}"))
                || sub == "rollback"
        );
        std::process::Command::new(env!("CARGO_BIN_EXE_rollwatch"))
            .args([sub, "--help"])
            .output()
            .map(|o| assert!(o.status.success(), "rollwatch {sub}"))
            .unwrap();
    }
    let script = root.join("deployment/scripts/rollback.sh");
    assert!(text.contains("./deployment/scripts/rollback.sh"));
    use std::os::unix::fs::PermissionsExt;
    assert!(
        script.metadata().unwrap().permissions().mode() & 0o111 != 0,
        "rollback.sh is executable"
    );
}

#[test]
fn gitlab_register_step_and_wait_talk_to_a_real_controller() {
    let (d, _c) = watched_good_deployment("gl", &["v1.0.1", "v1.1.0"], "", &[]);
    let config = d.root.path().join("rollwatch.toml");

    // The example's register step, run by bash with CI's variables, against the controller.
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gitlab-ci.yml"),
    )
    .unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let register = doc[".register"][0]
        .as_str()
        .expect("register step")
        .to_string();
    let sha = "89abcdef0123456789abcdef0123456789abcdef";
    let out = std::process::Command::new("bash")
        .args(["-c", &register])
        .env("ROLLWATCH_URL", format!("http://127.0.0.1:{}", d.api_port))
        .env("ROLLWATCH_API_TOKEN", TOKEN)
        .env("DEPLOY_ENV", "staging")
        .env("DEPLOY_ROLE", "backend")
        .env("IMAGE_TAG", "v1.0.1")
        .env("CI_COMMIT_SHA", sha)
        .env(
            "CI_PIPELINE_URL",
            "https://gitlab.example.com/shop/-/pipelines/42",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_event(&d.db(), "ci_deploy", "v1.0.1", Duration::from_secs(10));

    d.deploy("v1.0.1");
    rollwatch(&config)
        .args([
            "wait",
            "staging",
            "backend",
            "--tag",
            "v1.0.1",
            "--timeout",
            "60s",
        ])
        .assert()
        .code(0);
    d.deploy("v1.1.0");
    rollwatch(&config)
        .args([
            "wait",
            "staging",
            "backend",
            "--tag",
            "v1.1.0",
            "--timeout",
            "60s",
        ])
        .assert()
        .code(1);

    let tags = rollwatch(&config)
        .args(["tags", "staging", "backend"])
        .assert()
        .success();
    let t = String::from_utf8_lossy(&tags.get_output().stdout).to_string();
    assert!(
        t.contains("v1.0.1")
            && t.contains(&format!(
                "commit {sha} pipeline https://gitlab.example.com/shop/-/pipelines/42"
            )),
        "{t}"
    );
}

#[test]
fn tags_lists_and_orders_the_registry_tags() {
    let app = app_with_images("tg", &["v1.0.0", "develop", "main"]);
    let sha = "0123456789abcdef0123456789abcdef01234567";
    for extra in ["v1.10.0", "v1.2.0", sha] {
        sh(
            "docker",
            &[
                "tag",
                &format!("{REGISTRY}/demo/backend:v1.0.0"),
                &format!("{REGISTRY}/{app}/backend:{extra}"),
            ],
        );
        sh(
            "docker",
            &["push", "-q", &format!("{REGISTRY}/{app}/backend:{extra}")],
        );
    }
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
    let config = d.write_config(&format!("{REGISTRY}/{app}"), "");
    let out = rollwatch(&config)
        .args(["tags", "staging", "backend"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    let listed: Vec<&str> = text
        .split("registry tags")
        .nth(1)
        .unwrap_or("")
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        listed,
        vec!["v1.10.0", "v1.2.0", "v1.0.0", "develop", "main", sha],
        "{text}"
    );
    assert!(text.contains("develop  (fallback for this env)"), "{text}");
    assert!(
        text.contains("none yet: a rollback without a tag uses the fallback develop"),
        "{text}"
    );
}

// ---- The runbook as a non-root deployment user (scripts/setup makes `rollwatch-ssh`) ----

/// The deployment user of the remote-host tests: no root, in the docker group.
const SSH_USER: &str = "rollwatch-ssh";

/// (uid of SSH_USER, gid of the docker group).
fn ssh_user_ids() -> (u32, u32) {
    let uid = stdout(&sh("id", &["-u", SSH_USER])).parse().expect("uid");
    let group = stdout(&sh("getent", &["group", "docker"]));
    let gid = group
        .split(':')
        .nth(2)
        .and_then(|g| g.parse().ok())
        .expect("docker gid");
    (uid, gid)
}

/// Hands the deployment to the ssh user as a deploy user owns `/opt/<app>/<env>/<role>`: the
/// directory is the user's, `.env` is `user:docker` with mode 0600 (it may hold passwords), and
/// the test's temp root (0700 from tempfile) becomes traversable.
fn hand_to_ssh_user(d: &ComposeDeployment) {
    use std::os::unix::fs::PermissionsExt;
    let (uid, gid) = ssh_user_ids();
    let mode =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    mode(d.root.path(), 0o755);
    std::os::unix::fs::chown(d.dir(), Some(uid), Some(uid)).unwrap();
    std::os::unix::fs::chown(d.env_path(), Some(uid), Some(gid)).unwrap();
    mode(&d.env_path(), 0o600);
}

/// (bytes, mode, uid, gid) of a file.
fn file_state(p: &Path) -> (Vec<u8>, u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap();
    (
        std::fs::read(p).unwrap(),
        m.mode() & 0o7777,
        m.uid(),
        m.gid(),
    )
}

/// The compose executor as `rollwatch-ssh@127.0.0.1:2222` with one of setup's keys; `extra`
/// lands in the executor table (e.g. `, step_timeout = "3s"`).
fn user_ssh_executor(d: &ComposeDeployment, app: &str, key: &str, extra: &str) -> String {
    format!(
        r#"executor = {{ kind = "compose", dir = "{dir}", registry = "{REGISTRY}/{app}", host = "{SSH_USER}@127.0.0.1", ssh = {{ port = 2222, identity_file = "{key}", known_hosts_file = "{kh}", host_key_checking = "strict", connect_timeout = "3s", retries = 1 }}{extra} }}"#,
        dir = d.dir().display(),
        key = testbed_file(&format!("ssh/{key}")).display(),
        kh = testbed_file("ssh/known_hosts").display(),
    )
}

/// Files in the deployment directory other than the compose file and `.env` (temp files).
fn leftovers(d: &ComposeDeployment) -> Vec<String> {
    std::fs::read_dir(d.dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "docker-compose.yml" && n != ".env")
        .collect()
}

/// (state, error) of the newest rollback record.
fn last_rollback(d: &ComposeDeployment) -> (String, Option<String>) {
    query(
        &d.db(),
        "SELECT state, error FROM rollbacks ORDER BY id DESC LIMIT 1",
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .pop()
    .expect("a rollback record")
}

#[test]
fn remote_rollback_as_non_root_keeps_env_mode_and_owner() {
    let app = app_with_images("so", &["v1.0.0", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.1.0");
    hand_to_ssh_user(&d);
    let (_, mode, uid, gid) = file_state(&d.env_path());
    let config = config_with_executor(&d, &app, &user_ssh_executor(&d, &app, "client", ""));
    cli_rollback(&config, "v1.0.0", 0);
    let (bytes, mode_after, uid_after, gid_after) = file_state(&d.env_path());
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("IMAGE_TAG=v1.0.0\n"), "{text}");
    assert_eq!(
        (mode_after, uid_after, gid_after),
        (mode, uid, gid),
        "mode 0600 and owner {SSH_USER}:docker kept"
    );
    assert_eq!(mode_after, 0o600);
    assert_eq!(leftovers(&d), Vec::<String>::new(), "no temp file left");
    assert_eq!(last_rollback(&d).0, "succeeded");
    assert_eq!(
        d.container().image_ref,
        format!("{}:v1.0.0", d.repository())
    );
}

/// The `limited` key runs every command under `ulimit -f 8` (4 KiB): the new `.env` (16 KiB of
/// settings) is cut short by the kernel mid-write, as a full disk or a quota would cut it. The
/// old `cat > tmp && sync tmp; mv -f tmp .env` moved the 4 KiB stub into place and said ok.
#[test]
fn cut_short_remote_env_write_fails_the_rollback_and_keeps_env() {
    let app = app_with_images("sc", &["v1.0.0", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.1.0");
    let mut padded = d.env_file();
    for i in 0..256 {
        padded.push_str(&format!("# setting {i:04}: {}\n", "x".repeat(48)));
    }
    std::fs::write(d.env_path(), &padded).unwrap();
    hand_to_ssh_user(&d);
    let before = file_state(&d.env_path());
    assert!(before.0.len() > 16 * 1024);
    let config = config_with_executor(&d, &app, &user_ssh_executor(&d, &app, "limited", ""));
    let (_, err) = cli_rollback(&config, "v1.0.0", 1);
    let env = d.env_path().display().to_string();
    assert!(err.contains(&format!("cannot update {env}")), "{err}");
    assert_eq!(
        file_state(&d.env_path()),
        before,
        ".env bytes, mode and owner kept"
    );
    assert_eq!(leftovers(&d), Vec::<String>::new(), "temp file removed");
    let (state, error) = last_rollback(&d);
    assert_eq!(state, "failed");
    assert!(error.unwrap_or_default().contains(&env));
}

/// A `.env` owned by someone else cannot be replaced by a non-root user without changing its
/// owner: the step refuses instead of handing the file to the ssh user.
#[test]
fn remote_env_owned_by_another_user_is_refused_and_kept() {
    let app = app_with_images("sr", &["v1.0.0", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.1.0");
    hand_to_ssh_user(&d);
    std::os::unix::fs::chown(d.env_path(), Some(0), Some(0)).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.env_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let before = file_state(&d.env_path());
    let config = config_with_executor(&d, &app, &user_ssh_executor(&d, &app, "client", ""));
    let (_, err) = cli_rollback(&config, "v1.0.0", 1);
    assert!(err.contains("owner") && err.contains("root:root"), "{err}");
    assert_eq!(file_state(&d.env_path()), before, ".env untouched");
    assert_eq!(leftovers(&d), Vec::<String>::new(), "temp file removed");
    assert_eq!(last_rollback(&d).0, "failed");
}

/// Processes whose command line mentions `needle` (the test's unique app name).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| e.file_name().to_string_lossy() != me)
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(needle)
                .then(|| format!("{}: {cmd}", e.file_name().to_string_lossy()))
        })
        .collect()
}

/// Whether a pid is running (a zombie counts as gone: it is only waiting to be reaped).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// The `hang` key puts a docker-compose first on PATH whose `pull` sleeps for an hour, like one
/// stuck on a registry that stopped answering. The step is killed at `executor.step_timeout`,
/// the rollback fails saying so, and nothing of the step keeps running here or on the host.
#[test]
fn hung_remote_compose_step_is_killed_at_its_timeout() {
    let app = app_with_images("sh", &["v1.0.0", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.1.0");
    hand_to_ssh_user(&d);
    let before = d.container();
    let env_before = file_state(&d.env_path());
    let executor = user_ssh_executor(&d, &app, "hang", r#", step_timeout = "3s""#);
    let config = config_with_executor(&d, &app, &executor);
    let started = std::time::Instant::now();
    let out = rollwatch(&config)
        .args(["rollback", "staging", "backend", "v1.0.0"])
        .assert()
        .code(1);
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.contains("pull") && err.contains("did not finish within 3s"),
        "{err}"
    );
    // 3 s for the pull, plus the compose detection before it (two short ssh round trips).
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(3 + 12),
        "took {took:?}"
    );
    let pid = std::fs::read_to_string(d.dir().join(".rollwatch-hung-pid"))
        .expect("the hanging compose ran")
        .trim()
        .to_string();
    wait_for(
        Duration::from_secs(10),
        "the remote sleep to be killed",
        || (!alive(&pid)).then_some(()),
    );
    wait_for(
        Duration::from_secs(10),
        "no process of the step left",
        || processes_mentioning(&app).is_empty().then_some(()),
    );
    let (state, error) = last_rollback(&d);
    assert_eq!(state, "failed");
    assert!(error
        .unwrap_or_default()
        .contains("did not finish within 3s"));
    assert_eq!(d.container().id, before.id, "up never ran");
    assert_eq!(file_state(&d.env_path()), env_before);
}

/// The ssh runner for `rollwatch-ssh@127.0.0.1:2222` with one of setup's keys.
fn user_runner(key: &str, step_timeout: Duration) -> rollwatch::rollback::SshRunner {
    use rollwatch::config::{HostKeyChecking, SshConfig};
    let config = SshConfig {
        port: 2222,
        identity_file: Some(testbed_file(&format!("ssh/{key}"))),
        known_hosts_file: Some(testbed_file("ssh/known_hosts")),
        host_key_checking: HostKeyChecking::Strict,
        connect_timeout: Duration::from_secs(3),
        retries: 0,
    };
    rollwatch::rollback::SshRunner::new(format!("{SSH_USER}@127.0.0.1"), config, step_timeout)
}

/// A temp directory owned by the ssh user (its parent chain traversable).
fn user_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (uid, _) = ssh_user_ids();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid)).unwrap();
    dir
}

/// A read-only `.env` (0400) of the ssh user is replaced and stays 0400: the temp file gets
/// the mode only after it was written (as a non-root owner it could not write it otherwise).
#[tokio::test]
async fn a_read_only_remote_env_is_replaced_and_stays_read_only() {
    use rollwatch::rollback::CommandRunner;
    use std::os::unix::fs::PermissionsExt;
    let dir = user_dir();
    let env = dir.path().join(".env");
    std::fs::write(&env, "IMAGE_TAG=v1.1.0\n").unwrap();
    let (uid, gid) = ssh_user_ids();
    std::os::unix::fs::chown(&env, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o400)).unwrap();
    user_runner("client", Duration::from_secs(30))
        .write_file_atomic(&env, "IMAGE_TAG=v1.0.0\n")
        .await
        .unwrap();
    let (bytes, mode, u, g) = file_state(&env);
    assert_eq!(bytes, b"IMAGE_TAG=v1.0.0\n");
    assert_eq!((mode, u, g), (0o400, uid, gid));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp file"
    );
}

/// A step cancelled mid-way (the controller's shutdown, or its death) must not leave compose
/// running on the host beside the next attempt: sshd sends a command without a terminal no
/// signal when the connection ends. Here the step's deadline is 2 minutes away (and the host's
/// `timeout` a second later), so only the end of the connection can stop the remote command.
#[tokio::test]
async fn a_cancelled_remote_step_stops_on_the_host_too() {
    use rollwatch::rollback::CommandRunner;
    let dir = user_dir();
    let runner = user_runner("hang", Duration::from_secs(120));
    let marker = dir.path().display().to_string();
    let argv = vec!["docker-compose".to_string(), "pull".to_string()];
    let pid_file = dir.path().join(".rollwatch-hung-pid");
    let started = tokio::select! {
        out = runner.run(dir.path(), &[], &argv) => panic!("the hanging pull finished: {out:?}"),
        pid = async {
            loop {
                if let Ok(p) = std::fs::read_to_string(&pid_file) {
                    if !p.trim().is_empty() {
                        return p.trim().to_string();
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } => pid,
        _ = tokio::time::sleep(Duration::from_secs(30)) => panic!("the hanging pull never started"),
    };
    // The step's future is dropped here, as on shutdown.
    let gone = std::time::Instant::now() + Duration::from_secs(10);
    while (alive(&started) || !processes_mentioning(&marker).is_empty())
        && std::time::Instant::now() < gone
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !alive(&started),
        "the remote compose ({started}) still runs"
    );
    assert_eq!(processes_mentioning(&marker), Vec::<String>::new());
}

/// `check-config --probe` runs the compose checks on the ssh host itself: ok through the real
/// sshd, and a host that refuses fails the row naming ssh, while the local checks still pass.
#[test]
fn preflight_checks_the_ssh_host() {
    let app = app_with_images("sp", &["v1.0.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
    let probe = |port: u16| {
        let config = config_with_executor(&d, &app, &ssh_executor(&d, &app, "client", port));
        let o = rollwatch(&config)
            .args(["check-config", "--probe"])
            .output()
            .expect("check-config --probe");
        let row = stdout(&o)
            .lines()
            .find(|l| l.starts_with("staging/backend") && l.contains("compose@root@127.0.0.1"))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no compose row in:\n{}", stdout(&o)));
        (o.status.code(), row)
    };
    let (code, row) = probe(2222);
    assert_eq!(code, Some(0), "{row}");
    assert!(row.contains(" ok ") && row.contains(&d.project), "{row}");

    let (code, row) = probe(free_port());
    assert_eq!(code, Some(1), "{row}");
    assert!(
        row.contains("FAILED") && row.contains("Connection refused"),
        "{row}"
    );
}

/// The same unreachable host, met by an automatic rollback of `rollwatch run` (the engine the
/// watcher reads stays local): the bad version keeps running untouched, and the event, the
/// rollback record and `rollwatch_rollbacks_total` say why.
#[test]
fn unreachable_ssh_host_in_an_automatic_rollback_changes_nothing_and_is_reported() {
    let app = app_with_images("sfc", &["v1.0.0", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
    let dead = free_port();
    let config = config_with_executor(&d, &app, &ssh_executor(&d, &app, "client", dead));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n{FAST_WATCH}\n")).unwrap();
    let c = Controller::start(&config, &[]);
    wait_event(&d.db(), "promoted", "v1.0.0", Duration::from_secs(60));
    let (kind, message) = deploy_and_see_the_rollback_change_nothing(&d, &c, "v1.1.0");
    d.assert_runs("v1.1.0");
    // Nothing ran on the host, but the attempt failed: recorded as failed, the target held.
    assert_eq!(kind, "rollback_failed");
    assert!(message.contains("rollwatch resume"), "{message}");
    let errors = query(&d.db(), "SELECT state, error FROM rollbacks", |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
    });
    let [(state, Some(error))] = &errors[..] else {
        panic!("one rollback record with an error: {errors:?}")
    };
    assert_eq!(state, "failed");
    assert!(
        error.contains(&format!("port {dead}: Connection refused"))
            && error.contains("nothing was run on that host"),
        "{error}"
    );
    let count = |result: &str| rollbacks_counted(d.api_port, result);
    assert_eq!(
        (count("failed"), count("succeeded")),
        (Some(1.0), Some(0.0))
    );
}
