//! A Docker daemon restart in the middle of a watch window: the event stream breaks, the
//! containers stop and come back. rollwatch must not call that a regression, and must keep
//! detecting deploys afterwards. And one in the middle of a rollback: the failure is recorded
//! and reported as it happened, nothing retries in a loop. Its own test binary, run with nothing
//! beside it (.config/nextest.toml): it restarts the one engine every test uses.

mod harness;

use std::time::Duration;

use harness::*;

fn stop_dockerd() {
    let pid = std::fs::read_to_string("/var/run/docker.pid")
        .expect("dockerd pid file (scripts/setup starts dockerd)");
    let pid = pid.trim().to_string();
    sh("kill", &["-TERM", &pid]);
    wait_for(Duration::from_secs(60), "dockerd to exit", || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
}

fn start_dockerd() {
    let setup = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup");
    sh(setup.to_str().unwrap(), &[]);
}

fn restart_dockerd() {
    stop_dockerd();
    start_dockerd();
}

#[test]
fn daemon_restart_during_watch_window_causes_no_false_rollback_and_detection_resumes() {
    let app = app_with_images("dr", &["v1.0.0", "v1.0.1", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
    let watch = r#"watch = { interval = "500ms", failures = 2, grace = "2s", bake = "3s", cooldown = "5m" }"#;
    let config = d.write_config(&format!("{REGISTRY}/{app}"), watch);
    let _c = Controller::start(&config, &[]);
    wait_event(&d.db(), "promoted", "v1.0.0", Duration::from_secs(60));

    // A long watch window for v1.0.1, with the daemon restart inside it.
    let long = r#"watch = { interval = "500ms", failures = 2, grace = "2s", bake = "25s", cooldown = "5m" }"#;
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace(watch, long),
    )
    .unwrap();
    drop(_c);
    let _c = Controller::start(&config, &[]);
    d.deploy("v1.0.1");
    wait_event(&d.db(), "deploy", "v1.0.1", Duration::from_secs(30));
    restart_dockerd();
    wait_for(Duration::from_secs(60), "docker reachable again", || {
        events(&d.db())
            .into_iter()
            .find(|(k, _, m)| k == "docker" && m.contains("reachable again"))
    });
    wait_healthy_version(d.port, "v1.0.1");
    wait_event(&d.db(), "promoted", "v1.0.1", Duration::from_secs(60));
    assert!(
        rollback_rows(&d.db()).is_empty(),
        "no false rollback: {:?}",
        rollback_rows(&d.db())
    );

    // Detection still works after the reconnect.
    d.deploy("v1.1.0");
    let row = wait_rollback(&d.db(), "succeeded");
    assert_eq!(
        (row.3.as_deref(), row.4.as_str()),
        (Some("v1.1.0"), "v1.0.1")
    );
}

/// The engine goes away while a rollback's `up` runs (a compose wrapper holds `up` until the
/// test has stopped dockerd) and comes back. The rollback cannot finish: it must say so in its
/// record, its event and its metric, leave `.env` as it was, hold the target (no retry loop
/// against an engine that may be gone again), and a `rollwatch resume` once the engine is back
/// must roll the still-bad version back.
#[test]
fn daemon_restart_mid_rollback_is_recorded_as_failed_and_resume_finishes_it() {
    let app = app_with_images("drrb", &["v1.0.0", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
    let dir = d.root.path();
    let (started, gate) = (dir.join("up-started"), dir.join("gate"));
    let path = compose_wrapper(
        dir,
        &format!(
            "case \" $* \" in *\" up \"*) touch {s}; i=0\n  while [ ! -e {g} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done;; esac\nexec \"$REAL\" \"$@\"",
            s = started.display(),
            g = gate.display()
        ),
    );
    let config = d.write_config(&format!("{REGISTRY}/{app}"), FAST_WATCH);
    let c = Controller::start(&config, &[("PATH", &path)]);
    wait_event(&d.db(), "promoted", "v1.0.0", Duration::from_secs(60));
    let env_before = d.env_file();
    d.deploy("v1.1.0");
    let env_deployed = d.env_file();
    assert_ne!(env_before, env_deployed);
    wait_for(Duration::from_secs(60), "the rollback's up step", || {
        started.exists().then_some(())
    });
    stop_dockerd();
    std::fs::write(&gate, "").unwrap();
    let row = wait_rollback(&d.db(), "failed");
    start_dockerd();

    eprintln!("{}", c.log_text());
    assert_eq!(
        (row.3.as_deref(), row.4.as_str()),
        (Some("v1.1.0"), "v1.0.0")
    );
    let failed = wait_event(
        &d.db(),
        "rollback_failed",
        "v1.0.0",
        Duration::from_secs(30),
    );
    assert!(failed.contains("rollwatch resume"), "{failed}");
    assert_eq!(
        d.env_file(),
        env_deployed,
        ".env is left as the deploy wrote it"
    );
    assert_eq!(rollbacks_counted(d.api_port, "failed"), Some(1.0));
    // Held: the engine is back and v1.1.0 still fails, but nothing retries on its own.
    wait_state(d.api_port, "rollback_failed", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(rollback_rows(&d.db()).len(), 1, "no retry loop");

    rollwatch(&config)
        .env("ROLLWATCH_API_TOKEN", TOKEN)
        .args(["resume", "staging", "backend"])
        .assert()
        .success();
    let ok = wait_rollback(&d.db(), "succeeded");
    assert_eq!(ok.4, "v1.0.0");
    // Counted after the record is finished, before its event.
    wait_event(&d.db(), "rollback", "v1.0.0", Duration::from_secs(30));
    d.assert_runs("v1.0.0");
    assert_eq!(rollbacks_counted(d.api_port, "succeeded"), Some(1.0));
}
