//! `rollwatch run` against real compose deployments: deploys are detected, judged and, when
//! they regress, rolled back with nobody at the keyboard.

mod harness;

use std::time::Duration;

use harness::*;

const TAGS: &[&str] = &["v1.0.1", "v1.1.0", "v1.2.0"];

#[test]
fn health_down_deploy_is_rolled_back_to_known_good() {
    let (d, _c) = watched_good_deployment("hd", TAGS, "", &[]);
    d.deploy("v1.1.0");
    wait_rollback(&d.db(), "succeeded");
    let rows = rollback_rows(&d.db());
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (_, trigger, reason, from, to) = &rows[0];
    assert_eq!(trigger, "health");
    assert!(
        reason.contains("consecutive /health failures") && reason.contains("503"),
        "{reason}"
    );
    assert_eq!((from.as_deref(), to.as_str()), (Some("v1.1.0"), "v1.0.0"));
    d.assert_runs("v1.0.0");
    assert!(
        d.env_file().contains("IMAGE_TAG=v1.0.0\n"),
        "{}",
        d.env_file()
    );
    wait_healthy_version(d.port, "v1.0.0");
    let bad = query(&d.db(), "SELECT tag FROM bad_tags", |r| {
        r.get::<_, String>(0)
    });
    assert_eq!(bad, vec!["v1.1.0".to_string()]);
    let regressed = wait_event(&d.db(), "regressed", "v1.1.0", Duration::from_secs(1));
    assert!(regressed.contains("verdict regressed"), "{regressed}");
}

#[test]
fn healthy_deploy_is_promoted_after_the_bake_time() {
    let (d, _c) = watched_good_deployment("ok", TAGS, "", &[]);
    d.deploy("v1.0.1");
    wait_event(&d.db(), "promoted", "v1.0.1", Duration::from_secs(60));
    assert!(rollback_rows(&d.db()).is_empty());
    d.assert_runs("v1.0.1");
    let good = query(
        &d.db(),
        "SELECT tag, digest FROM known_good ORDER BY promoted_at_ms",
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
    );
    assert_eq!(
        good.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        vec!["v1.0.0", "v1.0.1"]
    );
    assert!(
        good.iter()
            .all(|g| g.1.as_deref().is_some_and(|d| d.contains("@sha256:"))),
        "digests recorded: {good:?}"
    );
}

#[test]
fn crash_looping_deploy_is_rolled_back() {
    let (d, _c) = watched_good_deployment("cl", TAGS, "", &[]);
    d.deploy("v1.2.0");
    let row = wait_rollback(&d.db(), "succeeded");
    assert_eq!(row.4, "v1.0.0");
    assert_eq!(row.3.as_deref(), Some("v1.2.0"));
    d.assert_runs("v1.0.0");
    wait_healthy_version(d.port, "v1.0.0");
}

#[test]
fn dry_run_records_would_roll_back_and_changes_nothing() {
    let (d, _c) = watched_good_deployment("dr", TAGS, "dry_run = true", &[]);
    d.deploy("v1.1.0");
    let msg = wait_event(
        &d.db(),
        "would_roll_back",
        "v1.1.0",
        Duration::from_secs(60),
    );
    assert!(msg.contains("would roll back v1.1.0 -> v1.0.0"), "{msg}");
    std::thread::sleep(Duration::from_secs(3));
    let rows = rollback_rows(&d.db());
    assert_eq!(rows.len(), 1, "decided once, not every round: {rows:?}");
    assert_eq!(rows[0].0, "dry_run");
    d.assert_runs("v1.1.0");
    assert!(d.env_file().contains("IMAGE_TAG=v1.1.0\n"));
}

#[test]
fn broken_known_good_tag_ends_in_rollback_failed_without_a_loop() {
    let (d, _c) = watched_good_deployment("kb", TAGS, "", &[]);
    // v1.1.0 (health down) is on record as the newest known-good: the rollback target is broken too.
    record_newest_known_good(&d.db(), "v1.1.0");
    // A short validation so the failure shows quickly.
    d.deploy("v1.2.0");
    let msg = wait_event(
        &d.db(),
        "rollback_failed",
        "v1.1.0",
        Duration::from_secs(90),
    );
    assert!(msg.contains("did not answer ok"), "{msg}");
    std::thread::sleep(Duration::from_secs(4));
    let rows = rollback_rows(&d.db());
    assert_eq!(rows.len(), 1, "no second attempt: {rows:?}");
    assert_eq!(rows[0].0, "failed");
    assert_eq!(
        d.container().image_ref,
        format!("{}:v1.1.0", d.repository()),
        "left alone after the failure"
    );
    let status = http_get(d.api_port, "/api/v1/targets")
        .expect("API answers")
        .1;
    assert!(status.contains(r#""state":"rollback_failed""#), "{status}");
}

#[test]
fn kill_9_right_after_the_intent_yields_exactly_one_rollback() {
    let (d, mut c) =
        watched_good_deployment("k9", TAGS, "", &[("ROLLWATCH_FAULT_POINT", "after-intent")]);
    d.deploy("v1.1.0");
    wait_for(Duration::from_secs(60), "intent written", || {
        rollback_rows(&d.db()).into_iter().find(|r| r.0 == "intent")
    });
    c.kill9();
    assert_eq!(
        d.container().image_ref,
        format!("{}:v1.1.0", d.repository()),
        "no side effect before the crash"
    );

    let config = d.root.path().join("rollwatch.toml");
    let _c2 = Controller::start(&config, &[]);
    wait_rollback(&d.db(), "succeeded");
    std::thread::sleep(Duration::from_secs(3));
    let rows = rollback_rows(&d.db());
    assert_eq!(rows.len(), 1, "exactly one rollback: {rows:?}");
    assert_eq!(rows[0].0, "succeeded");
    d.assert_runs("v1.0.0");
    let resumed = wait_event(&d.db(), "rollback", "v1.0.0", Duration::from_secs(30));
    assert!(resumed.contains("resumed rollback"), "{resumed}");
}

#[test]
fn ci_deploy_registration_pause_resume_status_and_history() {
    let (d, _c) = watched_good_deployment("api", TAGS, "", &[]);
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let body = format!(
        r#"{{"env":"staging","role":"backend","tag":"v1.0.1","commit_sha":"{sha}","pipeline_url":"https://gitlab.example.com/p/1"}}"#
    );
    assert_eq!(
        http_post(d.api_port, "/api/v1/deploys", None, &body)
            .unwrap()
            .0,
        401,
        "no token"
    );
    assert_eq!(
        http_post(d.api_port, "/api/v1/deploys", Some("wrong"), &body)
            .unwrap()
            .0,
        401,
        "wrong token"
    );
    let bad = http_post(
        d.api_port,
        "/api/v1/deploys",
        Some(TOKEN),
        r#"{"env":"staging","role":"backend","tag":"v1 0"}"#,
    )
    .unwrap();
    assert_eq!(bad.0, 400, "{bad:?}");
    let unknown = http_post(
        d.api_port,
        "/api/v1/deploys",
        Some(TOKEN),
        r#"{"env":"staging","role":"db","tag":"v1.0.1"}"#,
    )
    .unwrap();
    assert_eq!(unknown.0, 404, "{unknown:?}");
    assert_eq!(
        http_post(d.api_port, "/api/v1/deploys", Some(TOKEN), &body)
            .unwrap()
            .0,
        202
    );
    d.deploy("v1.0.1");
    let seen = wait_event(&d.db(), "deploy", "v1.0.1", Duration::from_secs(30));
    assert!(
        seen.contains(sha) && seen.contains("pipeline https://gitlab.example.com/p/1"),
        "{seen}"
    );
    wait_event(&d.db(), "promoted", "v1.0.1", Duration::from_secs(30));

    let config = d.root.path().join("rollwatch.toml");
    rollwatch(&config)
        .env("ROLLWATCH_API_TOKEN", TOKEN)
        .args(["pause", "staging", "backend"])
        .assert()
        .success();
    d.deploy("v1.1.0");
    let withheld = wait_event(&d.db(), "withheld", "v1.1.0", Duration::from_secs(30));
    assert!(withheld.contains("paused"), "{withheld}");
    assert!(rollback_rows(&d.db()).is_empty());
    wait_state(d.api_port, "regressed", Duration::from_secs(10));
    let status = rollwatch(&config).arg("status").assert().success();
    let table = String::from_utf8_lossy(&status.get_output().stdout).to_string();
    assert!(
        table.contains("v1.1.0")
            && table.contains("v1.0.1")
            && table.contains("regressed (paused)"),
        "{table}"
    );

    rollwatch(&config)
        .env("ROLLWATCH_API_TOKEN", TOKEN)
        .args(["resume", "staging", "backend"])
        .assert()
        .success();
    let row = wait_rollback(&d.db(), "succeeded");
    assert_eq!(row.4, "v1.0.1", "back to the newest known-good");
    let history = rollwatch(&config)
        .args(["history", "staging", "backend"])
        .assert()
        .success();
    let h = String::from_utf8_lossy(&history.get_output().stdout).to_string();
    for word in [
        "ci_deploy",
        "promoted",
        "paused",
        "withheld",
        "resumed",
        "regressed",
        "rollback",
        "v1.1.0 -> v1.0.1",
    ] {
        assert!(h.contains(word), "history lacks {word}: {h}");
    }
}

/// Collects the bodies of POST requests sent to it (a stand-in webhook receiver).
fn webhook_receiver() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten().take(100) {
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            sink.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    (port, bodies)
}

#[test]
fn incident_record_webhook_and_manual_rollback_over_the_api() {
    let (hook_port, bodies) = webhook_receiver();
    let app = app_with_images("in", &["v1.0.0", "v1.0.1", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
    let config = d.write_config(&format!("{REGISTRY}/{app}"), FAST_WATCH);
    let text = std::fs::read_to_string(&config).unwrap();
    let hook = format!("webhook_url = \"http://127.0.0.1:{hook_port}/hooks/rollwatch\"\n");
    std::fs::write(
        &config,
        text.replacen("[[targets]]", &format!("{hook}\n[[targets]]"), 1),
    )
    .unwrap();
    let _c = Controller::start(&config, &[]);
    wait_event(&d.db(), "promoted", "v1.0.0", Duration::from_secs(60));
    d.deploy("v1.1.0");
    wait_rollback(&d.db(), "succeeded");

    // The outgoing webhook carried the incident, logs included.
    let body = wait_for(Duration::from_secs(20), "webhook call", || {
        bodies.lock().unwrap().first().cloned()
    });
    let v: serde_json::Value = serde_json::from_str(&body).expect("webhook JSON");
    assert_eq!(v["event"], "rollback");
    assert_eq!(v["result"], "succeeded");
    assert_eq!(v["target"], "staging/backend");
    assert_eq!(v["incident"]["from_tag"], "v1.1.0");
    assert!(
        v["incident"]["logs"]
            .as_str()
            .unwrap_or("")
            .contains("demo v1.1.0 listening"),
        "{body}"
    );

    // `rollwatch incidents` and the API show the same record.
    let out = rollwatch(&config)
        .args(["incidents", "staging", "backend"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    for want in [
        "incident #1: staging/backend rolled back v1.1.0 -> v1.0.0 (succeeded)",
        "trigger:  health",
        "consecutive /health failures",
        "last log lines",
        "demo v1.1.0 listening",
    ] {
        assert!(text.contains(want), "incidents lack {want:?}: {text}");
    }
    let (status, api) = http_get(d.api_port, "/api/v1/incidents?env=staging&role=backend").unwrap();
    assert_eq!(status, 200);
    assert!(api.contains("demo v1.1.0 listening"), "{api}");

    // A person orders a rollback over HTTP: refused without the token, done with it.
    let path = "/api/v1/targets/staging/backend/rollback";
    assert_eq!(
        http_post(d.api_port, path, None, r#"{"tag":"v1.0.1"}"#)
            .unwrap()
            .0,
        401
    );
    let bad = http_post(d.api_port, path, Some(TOKEN), r#"{"tag":"v1.0.1; reboot"}"#).unwrap();
    assert_eq!(bad.0, 400, "{bad:?}");
    let (status, record) = http_post(
        d.api_port,
        path,
        Some(TOKEN),
        r#"{"tag":"v1.0.1","reason":"operator drill"}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{record}");
    let rec: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(
        (
            rec["trigger"].as_str(),
            rec["state"].as_str(),
            rec["to_tag"].as_str()
        ),
        (Some("manual"), Some("succeeded"), Some("v1.0.1"))
    );
    d.assert_runs("v1.0.1");

    // `rollwatch rollback` sees the running controller and goes through it.
    let out = rollwatch(&config)
        .env("ROLLWATCH_API_TOKEN", TOKEN)
        .args(["rollback", "staging", "backend", "v1.0.0"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        text.contains("through the controller")
            && text.contains("rolled back staging/backend from v1.0.1 to v1.0.0"),
        "{text}"
    );
    d.assert_runs("v1.0.0");
    let ordered = events(&d.db())
        .into_iter()
        .filter(|(k, _, m)| k == "rollback_ordered" && m.starts_with("manual"))
        .count();
    assert_eq!(
        ordered, 2,
        "both manual rollbacks went through the controller"
    );
}

/// A running version whose tag was moved to another image (a moving tag such as `main` pulled
/// again, or the same tag pushed anew) before rollwatch first saw it: the engine lists its
/// container by image ID, not by `repo:tag`. It must still be known by the tag it was deployed
/// as, watched, made known-good, and be the target of the next rollback.
#[test]
fn a_version_whose_tag_moved_to_another_image_is_still_known_by_its_tag() {
    let app = app_with_images("mt", &["v1.0.0", "v1.0.1", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.0.1");
    let repo = d.repository();
    sh(
        "docker",
        &["tag", &format!("{repo}:v1.0.0"), &format!("{repo}:v1.0.1")],
    );
    let listed = stdout(&sh(
        "docker",
        &[
            "ps",
            "--filter",
            &format!("label=com.docker.compose.project={}", d.project),
            "--format",
            "{{.Image}}",
        ],
    ));
    assert!(
        !listed.contains(':'),
        "the engine lists the container by image ID, not by tag: {listed}"
    );
    let _c = Controller::start(
        &d.write_config(&format!("{REGISTRY}/{app}"), FAST_WATCH),
        &[],
    );
    wait_event(&d.db(), "promoted", "v1.0.1", Duration::from_secs(30));
    assert_eq!(target_status(d.api_port)["running_tag"], "v1.0.1");
    d.deploy("v1.1.0");
    let row = wait_rollback(&d.db(), "succeeded");
    assert_eq!(
        (row.3.as_deref(), row.4.as_str()),
        (Some("v1.1.0"), "v1.0.1")
    );
}
