//! The wall clock stepped under a running controller (libfaketime from Debian's `faketime`,
//! preloaded into `rollwatch run` only; the monotonic clock is left alone, as an NTP step or a
//! person's `date -s` leaves it). Two hours forward must not end a watch window early (a
//! version recorded known-good after seconds of watching); two hours back must not keep a bad
//! deploy inside its start-up grace for two hours.

mod harness;

use std::path::Path;
use std::time::Duration;

use harness::*;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Steps the controller's wall clock to `offset` from the real one ("+2h", "+0").
fn set_clock(file: &Path, offset: &str) {
    std::fs::write(file, format!("{offset}\n")).expect("write the faketime offset");
    // libfaketime reads the file at every clock call (FAKETIME_NO_CACHE): four watch rounds
    // (500 ms each) see the new time before the test looks.
    std::thread::sleep(Duration::from_secs(2));
}

#[test]
fn wall_clock_steps_neither_end_a_watch_window_early_nor_stretch_the_grace() {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} missing: scripts/setup installs Debian's faketime"
    );
    let app = app_with_images("clock", &["v1.0.0", "v1.0.1", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
    let watch = r#"watch = { interval = "500ms", failures = 2, grace = "5s", bake = "20s", cooldown = "5m" }"#;
    let config = d.write_config(&format!("{REGISTRY}/{app}"), watch);
    let offset = d.root.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let offset_path = offset.display().to_string();
    let c = Controller::start(
        &config,
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", &offset_path),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    wait_event(&d.db(), "promoted", "v1.0.0", Duration::from_secs(60));

    // Forward: a good deploy's 20 s window is still open after the step.
    d.deploy("v1.0.1");
    wait_event(&d.db(), "deploy", "v1.0.1", Duration::from_secs(30));
    set_clock(&offset, "+2h");
    let log = c.log_text();
    assert!(
        !events(&d.db())
            .iter()
            .any(|(k, t, _)| k == "promoted" && t.as_deref() == Some("v1.0.1")),
        "v1.0.1 was promoted right after the clock jumped 2 h forward, seconds into its 20 s window:\n{log}"
    );
    wait_state(d.api_port, "watching", Duration::from_secs(5));
    let promoted_at = event_at_ms(&d.db(), "deploy", "v1.0.1").expect("deploy event");
    wait_event(&d.db(), "promoted", "v1.0.1", Duration::from_secs(60));
    // The record keeps the wall clock as the controller sees it: two hours on.
    let promoted = event_at_ms(&d.db(), "promoted", "v1.0.1").expect("promoted event");
    assert!(
        promoted - promoted_at > 2 * 3_600_000,
        "records are on the (stepped) wall clock: {promoted} vs {promoted_at}"
    );

    // Back: a bad deploy seen just before the step is judged after its 5 s grace, not two hours on.
    d.deploy("v1.1.0");
    wait_event(&d.db(), "deploy", "v1.1.0", Duration::from_secs(30));
    set_clock(&offset, "+0");
    let row = wait_rollback(&d.db(), "succeeded");
    assert_eq!(
        (row.3.as_deref(), row.4.as_str()),
        (Some("v1.1.0"), "v1.0.1")
    );
    d.assert_runs("v1.0.1");
    wait_event(&d.db(), "rollback", "v1.0.1", Duration::from_secs(30));
    assert_eq!(
        metric_value(
            d.api_port,
            "rollwatch_rollbacks_total{",
            &[r#"trigger="health""#, r#"result="succeeded""#]
        ),
        Some(1.0)
    );
}
