//! A Docker daemon restart in the middle of a watch window: the event stream breaks, the
//! containers stop and come back. rollwatch must not call that a regression, and must keep
//! detecting deploys afterwards. Its own test binary: it restarts the one engine every test uses,
//! and cargo runs test binaries one after another.

mod harness;

use std::time::Duration;

use harness::*;

fn restart_dockerd() {
    let pid = std::fs::read_to_string("/var/run/docker.pid")
        .expect("dockerd pid file (scripts/setup starts dockerd)");
    let pid = pid.trim().to_string();
    sh("kill", &["-TERM", &pid]);
    wait_for(Duration::from_secs(60), "dockerd to exit", || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    let setup = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup");
    sh(setup.to_str().unwrap(), &[]);
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
