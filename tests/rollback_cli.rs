//! `rollwatch rollback` against real compose deployments and plain `docker run` containers.

mod harness;

use std::time::Duration;

use harness::*;

#[test]
fn compose_target_is_rolled_back_to_named_tag_pulled_from_registry() {
    let app = app_with_images("rb", &["v1.0.0", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.1.0");
    // Only the registry has v1.0.0 of this repository now: the rollback must pull it.
    sh("docker", &["rmi", &format!("{}:v1.0.0", d.repository())]);
    assert!(image_id(&format!("{}:v1.0.0", d.repository())).is_none());
    let config = d.write_config(&format!("{REGISTRY}/{app}"), "");

    let (text, _) = cli_rollback(&config, "v1.0.0", 0);
    assert!(
        text.contains("rolled back staging/backend from v1.1.0 to v1.0.0"),
        "{text}"
    );

    let c = d.container();
    assert_eq!(c.image_ref, format!("{}:v1.0.0", d.repository()));
    assert_eq!(
        Some(c.image_id.clone()),
        image_id(&format!("{}:v1.0.0", d.repository())),
        "pulled image runs"
    );
    assert!(
        d.env_file().contains("IMAGE_TAG=v1.0.0\n") && !d.env_file().contains("v1.1.0"),
        "{}",
        d.env_file()
    );
    assert!(
        d.env_file().starts_with("# written by the test harness\n"),
        "other .env lines kept"
    );
    let body = health(d.port).expect("/health answers");
    assert!(body.contains("\"ok\"") && body.contains("v1.0.0"), "{body}");

    let history = rollwatch(&config)
        .args(["history", "staging", "backend", "--verbose"])
        .assert()
        .success();
    let h = String::from_utf8_lossy(&history.get_output().stdout).to_string();
    assert!(
        h.contains("v1.1.0 -> v1.0.0") && h.contains("succeeded") && h.contains("manual"),
        "{h}"
    );
    assert!(
        h.contains("pull") && h.contains("Pulling"),
        "command output recorded: {h}"
    );
    let db = d.root.path().join("rollwatch.db");
    let conn = rusqlite::Connection::open(db).unwrap();
    let (state, digest): (String, Option<String>) = conn
        .query_row(
            "SELECT state, to_digest FROM rollbacks WHERE env='staging' AND role='backend'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(state, "succeeded");
    assert!(
        digest.is_some_and(|d| d.contains("@sha256:")),
        "digest recorded"
    );
}

/// Runs a refused rollback and checks nothing moved: same container, same `.env`, no record.
fn assert_refused(d: &ComposeDeployment, config: &std::path::Path, tag: &str, expect: &str) {
    let before = d.container();
    let env_before = d.env_file();
    let out = rollwatch(config)
        .args(["rollback", "staging", "backend", tag])
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        err.contains(expect),
        "stderr for {tag:?} lacks {expect:?}: {err}"
    );
    let after = d.container();
    assert_eq!(before.id, after.id, "container untouched");
    assert!(after.running);
    assert_eq!(env_before, d.env_file(), ".env untouched");
    let history = rollwatch(config).args(["history"]).assert().success();
    assert!(
        String::from_utf8_lossy(&history.get_output().stdout).contains("no rollbacks on record")
    );
}

#[test]
fn malformed_and_unknown_tags_are_refused_with_nothing_changed() {
    let app = app_with_images("rf", &["v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.1.0");
    let config = d.write_config(&format!("{REGISTRY}/{app}"), "");
    assert_refused(
        &d,
        &config,
        "v1.0.0;reboot",
        "malformed tag \"v1.0.0;reboot\"",
    );
    assert_refused(
        &d,
        &config,
        "v9.9.9",
        "unknown tag v9.9.9 for staging/backend",
    );
}

#[test]
fn unreachable_registry_is_refused_with_nothing_changed() {
    let app = app_with_images("ur", &["v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.1.0");
    let dead = free_port();
    let config = d.write_config(&format!("127.0.0.1:{dead}/{app}"), "");
    assert_refused(
        &d,
        &config,
        "v1.0.0",
        &format!("registry 127.0.0.1:{dead} is unreachable"),
    );
}

#[test]
fn failed_pull_of_locally_present_image_is_a_warning() {
    let app = app_with_images("lp", &["v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.1.0");
    // The registry named in the config is down, but the image is already on the host.
    let dead = free_port();
    let local = format!("127.0.0.1:{dead}/{app}/backend:v1.0.0");
    sh(
        "docker",
        &["tag", &format!("{REGISTRY}/demo/backend:v1.0.0"), &local],
    );
    let config = d.write_config(&format!("127.0.0.1:{dead}/{app}"), "");
    cli_rollback(&config, "v1.0.0", 0);
    assert_eq!(d.container().image_ref, local);
    let _ = std::process::Command::new("docker")
        .args(["rmi", &local])
        .output();
    let h = rollwatch(&config)
        .args(["history", "--verbose"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&h.get_output().stdout).to_string();
    assert!(
        text.contains("warning: pull of") && text.contains("present locally"),
        "{text}"
    );
}

#[test]
fn without_a_tag_the_env_fallback_branch_is_used_when_nothing_is_known_good() {
    let app = app_with_images("fb", &["v1.1.0", "develop"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.1.0");
    let config = d.write_config(&format!("{REGISTRY}/{app}"), "");
    rollwatch(&config)
        .args(["rollback", "staging", "backend"])
        .assert()
        .success();
    d.assert_runs("develop");
    wait_healthy_version(d.port, "develop");
}

#[test]
fn docker_executor_recreates_a_plain_container_with_same_config_and_older_image() {
    let app = app_with_images("dx", &["v1.0.0", "v1.1.0"]);
    let c = RunContainer::start(
        &app,
        "v1.1.0",
        &[
            "-e",
            "EXTRA_SETTING=kept",
            "--label",
            "role=backend",
            "--restart",
            "on-failure:3",
        ],
        &["--serve", "extra-arg"],
    );
    let (name, repo, port) = (c.name.clone(), c.repository(), c.port);
    let before = inspect(&name);
    let root = tempfile::tempdir().unwrap();
    let config = c.write_config(root.path(), r#""unix:///var/run/docker.sock""#);
    rollwatch(&config)
        .args(["rollback", "production", "backend", "v1.0.0"])
        .assert()
        .success();

    let after = inspect(&name);
    assert_ne!(before.id, after.id, "container was recreated");
    let v1 = image_id(&format!("{repo}:v1.0.0")).expect("v1.0.0 present");
    assert_eq!(after.image_id, v1, "runs v1.0.0");
    assert_eq!(after.image_ref, v1, "pinned by image ID");
    assert_eq!(after.network_mode, "host");
    assert_eq!(after.cmd, before.cmd, "command kept");
    assert_eq!(
        after.cmd,
        vec!["--serve".to_string(), "extra-arg".to_string()]
    );
    assert_eq!(after.labels, before.labels, "labels kept");
    for var in [
        format!("DEMO_PORT={port}"),
        "EXTRA_SETTING=kept".to_string(),
    ] {
        assert!(after.env.contains(&var), "env {var} kept: {:?}", after.env);
    }
    assert!(after.running);
    let body = health(port).unwrap();
    assert!(body.contains("\"ok\"") && body.contains("v1.0.0"), "{body}");
    drop(c);
}

/// The registry goes away before an automatic rollback of `rollwatch run` whose image is not on
/// the host any more: nothing can bring v1.0.0 back, so nothing may be touched. The bad version
/// keeps running, and the event, the record and `rollwatch_rollbacks_total` say why.
#[test]
fn registry_down_in_an_automatic_rollback_keeps_the_running_version_and_is_reported() {
    let app = app_with_images("rdc", &["v1.0.0", "v1.1.0"]);
    // The deployment's images under a registry address nothing answers on, present locally.
    let dead = free_port();
    let repo = format!("127.0.0.1:{dead}/{app}");
    for tag in ["v1.0.0", "v1.1.0"] {
        let image = format!("{repo}/backend:{tag}");
        sh(
            "docker",
            &["tag", &format!("{REGISTRY}/demo/backend:{tag}"), &image],
        );
    }
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
    let env = d.env_file().replace(&format!("{REGISTRY}/{app}"), &repo);
    std::fs::write(d.env_path(), env).unwrap();
    d.compose(&["up", "-d", "--remove-orphans"]);
    let config = d.write_config(&repo, FAST_WATCH);
    let c = Controller::start(&config, &[]);
    wait_event(&d.db(), "promoted", "v1.0.0", Duration::from_secs(60));
    // v1.0.0 leaves the host with the container that ran it: only the registry could bring it back.
    sh("docker", &["rmi", "-f", &format!("{repo}/backend:v1.0.0")]);
    let (kind, message) = deploy_and_see_the_rollback_change_nothing(&d, &c, "v1.1.0");
    assert_eq!(d.container().image_ref, format!("{repo}/backend:v1.1.0"));
    // Refused before anything ran: no rollback record, retried with back-off.
    assert_eq!(kind, "rollback_refused");
    assert!(
        message.contains(&format!("registry 127.0.0.1:{dead} is unreachable"))
            && message.contains("not present locally either"),
        "{message}"
    );
    assert!(
        rollback_rows(&d.db()).is_empty(),
        "{:?}",
        rollback_rows(&d.db())
    );
    wait_event(&d.db(), "rollback_retry", "v1.1.0", Duration::from_secs(30));
    let count = |result: &str| rollbacks_counted(d.api_port, result);
    assert!(
        count("refused").is_some_and(|n| n >= 1.0),
        "{:?}",
        count("refused")
    );
    assert_eq!(
        (count("failed"), count("succeeded")),
        (Some(0.0), Some(0.0))
    );
    let _ = std::process::Command::new("docker")
        .args(["rmi", &format!("{repo}/backend:v1.1.0")])
        .output();
}
