//! Guard rails that must survive crashes and restarts, on real compose deployments: a dry run
//! stays a dry run after `kill -9`, a pause, a halt and the cooldown hold across restarts however
//! many events came between, SIGTERM stops a controller stuck in a rollback step, and what status
//! shows is what a rollback would do.

mod harness;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::*;

const TAGS: &[&str] = &["v1.0.1", "v1.1.0", "v1.2.0"];

/// The stored guard rails: (paused, halted tag, last rollback ms).
fn control(db: &Path) -> Option<(bool, Option<String>, Option<i64>)> {
    query(
        db,
        "SELECT paused, halted_tag, last_rollback_ms FROM target_control WHERE env = 'staging' AND role = 'backend'",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .into_iter()
    .next()
}

/// Many events after the guard rail was set: the old start-up rebuilt paused and halted from the
/// newest 200 events, so 10,000 deploys pushed them out of sight.
fn flood_events(db: &Path, n: usize) {
    let mut conn = rusqlite::Connection::open(db).expect("open store");
    let tx = conn.transaction().expect("transaction");
    for i in 0..n {
        tx.execute(
            "INSERT INTO events (at_ms, env, role, kind, tag, message) VALUES (?1, 'staging', 'backend', 'deploy', 'v1.0.0', 'flood')",
            [i as i64],
        )
        .expect("insert event");
    }
    tx.commit().expect("commit");
}

fn config_of(d: &ComposeDeployment) -> std::path::PathBuf {
    d.root.path().join("rollwatch.toml")
}

#[test]
fn a_dry_run_intent_killed_and_restarted_stays_a_dry_run() {
    let (d, mut c) = watched_good_deployment(
        "gdry",
        TAGS,
        "dry_run = true",
        &[("ROLLWATCH_FAULT_POINT", "after-intent")],
    );
    d.deploy("v1.1.0");
    wait_for(Duration::from_secs(60), "dry-run intent written", || {
        rollback_rows(&d.db()).into_iter().find(|r| r.0 == "intent")
    });
    c.kill9();
    let env_before = std::fs::read(d.env_path()).unwrap();
    let image_before = d.container().image_id;

    let _c2 = Controller::start(&config_of(&d), &[]);
    let row = wait_rollback(&d.db(), "dry_run");
    assert_eq!(row.4, "v1.0.0");
    let (dry_run, output): (bool, String) =
        query(&d.db(), "SELECT dry_run, output FROM rollbacks", |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .remove(0);
    assert!(dry_run, "the record says dry run");
    assert!(output.contains("nothing was executed"), "{output}");
    wait_event(
        &d.db(),
        "would_roll_back",
        "v1.0.0",
        Duration::from_secs(30),
    );
    assert_eq!(rollback_rows(&d.db()).len(), 1, "no second record");
    assert_eq!(d.container().image_id, image_before, "nothing was executed");
    d.assert_runs("v1.1.0");
    assert_eq!(std::fs::read(d.env_path()).unwrap(), env_before);
    assert!(!events(&d.db()).iter().any(|(k, _, _)| k == "rollback"));
}

#[test]
fn a_pause_survives_ten_thousand_events_and_a_restart() {
    let (d, mut c) = watched_good_deployment("gpause", TAGS, "", &[]);
    rollwatch(&config_of(&d))
        .env("ROLLWATCH_API_TOKEN", TOKEN)
        .args(["pause", "staging", "backend"])
        .assert()
        .success();
    assert_eq!(control(&d.db()).map(|c| c.0), Some(true), "pause stored");
    c.kill9();
    flood_events(&d.db(), 10_000);

    let _c2 = Controller::start(&config_of(&d), &[]);
    assert_eq!(target_status(d.api_port)["paused"], true);
    d.deploy("v1.1.0");
    let withheld = wait_event(&d.db(), "withheld", "v1.1.0", Duration::from_secs(60));
    assert!(withheld.contains("paused"), "{withheld}");
    assert!(rollback_rows(&d.db()).is_empty(), "nothing rolled back");
    assert_eq!(control(&d.db()).map(|c| c.0), Some(true));
}

#[test]
fn a_halted_target_stays_halted_across_a_restart() {
    let (d, mut c) = watched_good_deployment("ghalt", TAGS, "", &[]);
    // v1.1.0 (health down) is on record as the newest known-good: the rollback target is broken.
    record_newest_known_good(&d.db(), "v1.1.0");
    d.deploy("v1.2.0");
    wait_event(
        &d.db(),
        "rollback_failed",
        "v1.1.0",
        Duration::from_secs(90),
    );
    assert_eq!(
        control(&d.db()).and_then(|c| c.1).as_deref(),
        Some("v1.1.0")
    );
    c.kill9();
    flood_events(&d.db(), 10_000);

    let _c2 = Controller::start(&config_of(&d), &[]);
    wait_state(d.api_port, "rollback_failed", Duration::from_secs(30));
    // A new deploy to the halted target is left alone too: a human has to look first.
    d.deploy("v1.1.0");
    d.deploy("v1.2.0");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(rollback_rows(&d.db()).len(), 1, "no second rollback");
    assert_eq!(target_status(d.api_port)["state"], "rollback_failed");
}

#[test]
fn the_cooldown_holds_across_a_restart() {
    let (d, mut c) = watched_good_deployment("gcool", TAGS, "", &[]);
    d.deploy("v1.1.0");
    wait_rollback(&d.db(), "succeeded");
    // The record starts the cooldown; the watcher writes the same moment again with its event.
    wait_event(&d.db(), "rollback", "v1.0.0", Duration::from_secs(30));
    let last = control(&d.db()).and_then(|c| c.2);
    assert!(last.is_some(), "cooldown clock stored");
    c.kill9();

    let _c2 = Controller::start(&config_of(&d), &[]);
    d.deploy("v1.2.0");
    let withheld = wait_event(&d.db(), "withheld", "v1.2.0", Duration::from_secs(60));
    assert!(withheld.contains("cooldown"), "{withheld}");
    assert_eq!(rollback_rows(&d.db()).len(), 1, "no rollback in cooldown");
    assert_eq!(control(&d.db()).and_then(|c| c.2), last);
}

#[test]
fn status_and_the_gauge_never_name_a_bad_tag() {
    let (d, mut c) = watched_good_deployment("gbad", TAGS, "", &[]);
    d.deploy("v1.0.1");
    wait_event(&d.db(), "promoted", "v1.0.1", Duration::from_secs(60));
    c.kill9();
    // v1.0.0 is known-good but has since been marked bad (an alert, a person): a rollback skips
    // it, so status and the gauge must not offer it either.
    let conn = rusqlite::Connection::open(d.db()).unwrap();
    conn.execute(
        "INSERT INTO bad_tags (env, role, tag, reason, at_ms) VALUES ('staging', 'backend', 'v1.0.0', 'alert', 1)",
        [],
    )
    .unwrap();

    let _c2 = Controller::start(&config_of(&d), &[]);
    let status = wait_for(Duration::from_secs(30), "status with a running tag", || {
        let s = target_status(d.api_port);
        (s["running_tag"] == "v1.0.1").then_some(s)
    });
    assert_eq!(status["known_good_tag"], "v1.0.1", "{status}");
    let metrics = http_get(d.api_port, "/metrics").unwrap().1;
    assert!(
        !metrics.contains(
            r#"rollwatch_known_good_tag_info{env="staging",role="backend",tag="v1.0.0"}"#
        ),
        "{metrics}"
    );
    let out = rollwatch(&config_of(&d)).arg("status").assert().success();
    let table = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(!table.contains("v1.0.0"), "{table}");
}

/// A `docker-compose` whose `pull` hangs (a registry that accepts and never answers).
fn hanging_compose(dir: &Path, marker: &str) -> String {
    compose_wrapper(dir, &format!("exec sleep {marker}"))
}

fn processes_matching(pattern: &str) -> usize {
    let out = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn sigterm_during_a_hung_rollback_step_exits_within_5s_and_the_next_start_finishes_it() {
    let app = app_with_images("gterm", &["v1.0.0", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
    let config = d.write_config(&format!("{REGISTRY}/{app}"), FAST_WATCH);
    // Unique, so no other test's process matches.
    let marker = format!("{}", 3000 + free_port() % 1000);
    let path = hanging_compose(d.root.path(), &marker);
    let mut c = Controller::start(&config, &[("PATH", &path)]);
    wait_event(&d.db(), "promoted", "v1.0.0", Duration::from_secs(60));
    d.deploy("v1.1.0");
    wait_for(Duration::from_secs(60), "the pull step hanging", || {
        (processes_matching(&format!("sleep {marker}")) > 0).then_some(())
    });

    let pid = c.child.id().to_string();
    let sent = Instant::now();
    sh("kill", &["-TERM", &pid]);
    let status = wait_for(Duration::from_secs(5), "exit after SIGTERM", || {
        c.child.try_wait().ok().flatten()
    });
    eprintln!("exited {:?} after SIGTERM: {status}", sent.elapsed());
    assert!(status.success(), "{status}");
    wait_for(Duration::from_secs(5), "the hung step killed", || {
        (processes_matching(&format!("sleep {marker}")) == 0).then_some(())
    });
    let rows = rollback_rows(&d.db());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "intent", "left for the next start");

    // The next start answers on its API while the resume hangs in the same step, and SIGTERM
    // stops it there too.
    let mut c2 = Controller::start(&config, &[("PATH", &path)]);
    wait_for(Duration::from_secs(30), "the resumed pull hanging", || {
        (processes_matching(&format!("sleep {marker}")) > 0).then_some(())
    });
    assert_eq!(
        http_get(d.api_port, "/healthz").map(|r| r.0),
        Some(200),
        "the API listens before the resume is done"
    );
    sh("kill", &["-TERM", &c2.child.id().to_string()]);
    wait_for(
        Duration::from_secs(5),
        "exit after SIGTERM during resume",
        || c2.child.try_wait().ok().flatten(),
    );
    assert_eq!(rollback_rows(&d.db())[0].0, "intent");

    let _c3 = Controller::start(&config, &[]);
    wait_rollback(&d.db(), "succeeded");
    assert_eq!(rollback_rows(&d.db()).len(), 1, "the same record, finished");
    d.assert_runs("v1.0.0");
    assert!(d.env_file().contains("IMAGE_TAG=v1.0.0\n"));
}

#[test]
fn a_refused_rollback_backs_off_gives_up_and_never_halts() {
    let app = app_with_images("grefuse", &["v1.0.0", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
    // 200 ms rounds: the back-off starts at 1 s (five rounds) and doubles.
    let watch = r#"watch = { interval = "200ms", failures = 2, grace = "1s", bake = "2s", cooldown = "5m" }"#;
    let config = d.write_config(&format!("{REGISTRY}/{app}"), watch);
    let _c = Controller::start(&config, &[]);
    wait_event(&d.db(), "promoted", "v1.0.0", Duration::from_secs(60));
    // The newest known-good tag exists nowhere: every rollback is refused before it acts.
    record_newest_known_good(&d.db(), "v9.9.9");
    d.deploy("v1.1.0");
    let msg = wait_event(
        &d.db(),
        "rollback_given_up",
        "v1.1.0",
        Duration::from_secs(90),
    );
    assert!(
        msg.contains("after 5 refusals") && msg.contains("v9.9.9"),
        "{msg}"
    );
    let retries = events(&d.db())
        .iter()
        .filter(|(k, _, _)| k == "rollback_retry")
        .count();
    assert_eq!(retries, 4, "tried five times in all");
    assert!(
        rollback_rows(&d.db()).is_empty(),
        "refused before any intent"
    );
    assert_eq!(control(&d.db()).and_then(|c| c.1), None, "not halted");
    // The round that gives up publishes its state (and the given-up flag) after the event.
    wait_state(d.api_port, "regressed", Duration::from_secs(10));
    let metrics = http_get(d.api_port, "/metrics").unwrap().1;
    assert!(
        metrics.contains(r#"rollwatch_rollback_given_up{env="staging",role="backend"} 1"#),
        "{metrics}"
    );
    assert_eq!(
        d.container().image_ref,
        format!("{}:v1.1.0", d.repository()),
        "nothing was changed"
    );
}

#[test]
fn a_panicked_watcher_is_restarted_counted_and_still_rolls_back() {
    let (d, _c) = watched_good_deployment(
        "gpanic",
        TAGS,
        "",
        &[("ROLLWATCH_FAULT_POINT", "watcher-round")],
    );
    let metrics = http_get(d.api_port, "/metrics").unwrap().1;
    assert!(
        metrics.contains(r#"rollwatch_watcher_restarts_total{env="staging",role="backend"} 1"#),
        "{metrics}"
    );
    d.deploy("v1.1.0");
    let row = wait_rollback(&d.db(), "succeeded");
    assert_eq!(row.4, "v1.0.0");
}

#[test]
fn a_resume_that_fails_is_finished_as_failed_once_not_at_every_start() {
    let (d, mut c) = watched_good_deployment("gresume", TAGS, "", &[]);
    c.kill9();
    // A crash left an intent for a tag that exists nowhere: the resume cannot work.
    let conn = rusqlite::Connection::open(d.db()).unwrap();
    conn.execute(
        "INSERT INTO rollbacks (env, role, trigger, reason, from_tag, to_tag, state, started_at_ms) VALUES ('staging', 'backend', 'health', 'test', 'v1.0.0', 'v9.9.9', 'intent', 1)",
        [],
    )
    .unwrap();
    let mut c2 = Controller::start(&config_of(&d), &[]);
    let row = wait_rollback(&d.db(), "failed");
    assert_eq!(row.4, "v9.9.9");
    wait_state(d.api_port, "rollback_failed", Duration::from_secs(30));
    c2.kill9();

    let _c3 = Controller::start(&config_of(&d), &[]);
    wait_state(d.api_port, "rollback_failed", Duration::from_secs(30));
    let failures = events(&d.db())
        .iter()
        .filter(|(k, _, _)| k == "rollback_failed")
        .count();
    assert_eq!(failures, 1, "not tried again at the second start");
    assert_eq!(rollback_rows(&d.db()).len(), 1);
    d.assert_runs("v1.0.0");
}
