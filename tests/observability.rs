//! Metrics, rules, dashboard and alert-driven rollback against a real Prometheus, a real
//! Alertmanager and real promtool.

mod harness;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harness::*;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn promtool_checks_and_unit_tests_pass_for_the_rules() {
    let rules = repo("rules/rollwatch.rules.yml");
    let out = sh("promtool", &["check", "rules", rules.to_str().unwrap()]);
    assert!(stdout(&out).contains("SUCCESS"), "{}", stdout(&out));
    let tests = repo("rules/rollwatch.rules.test.yml");
    let out = sh("promtool", &["test", "rules", tests.to_str().unwrap()]);
    assert!(stdout(&out).contains("SUCCESS"), "{}", stdout(&out));
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(repo("dashboards/rollwatch.json")).unwrap())
        .expect("dashboard JSON")
}

/// Every query of the dashboard with its variables filled as Grafana would for "All".
fn dashboard_queries(d: &serde_json::Value) -> Vec<(String, String)> {
    let fill = |e: &str| {
        e.replace("$env", ".*")
            .replace("$role", ".*")
            .replace("$__range", "1h")
            .replace("$__rate_interval", "1m")
    };
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            out.push((
                format!("panel {} {}", p["id"], t["refId"]),
                fill(t["expr"].as_str().unwrap()),
            ));
        }
    }
    for a in d["annotations"]["list"].as_array().unwrap() {
        out.push((
            format!("annotation {}", a["name"]),
            fill(a["expr"].as_str().unwrap()),
        ));
    }
    out
}

/// Series of the controller itself (one per instance), which carry no env or role.
const CONTROLLER_WIDE: [&str; 4] = [
    "rollwatch_leader",
    "rollwatch_store_up",
    "rollwatch_lease_epoch",
    "rollwatch_fenced_steps_total",
];

#[test]
fn dashboard_has_a_sound_shape() {
    let d = dashboard();
    let panels = d["panels"].as_array().unwrap();
    let mut ids: Vec<i64> = panels.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, vec!["datasource", "env", "role"]);
    for p in panels {
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {} uses the datasource variable",
            p["id"]
        );
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "${datasource}");
            let e = t["expr"].as_str().unwrap();
            // Leadership and the store are the controller's, not a target's: no env or role.
            let controller_wide = CONTROLLER_WIDE.iter().any(|m| e.contains(m));
            assert!(
                controller_wide || (e.contains("$env") && e.contains("$role")),
                "panel {} filters by env and role: {e}",
                p["id"]
            );
        }
    }
    for a in d["annotations"]["list"].as_array().unwrap() {
        assert_eq!(a["datasource"]["uid"], "${datasource}");
    }
}

#[test]
fn every_dashboard_query_returns_data_after_a_real_rollback_and_the_rollback_alert_fires() {
    let (d, _c) = watched_good_deployment("ob", &["v1.1.0"], "", &[]);
    let scrape = format!(
        "  - job_name: rollwatch\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        d.api_port
    );
    let prom = Service::prometheus(&scrape, &[repo("rules/rollwatch.rules.yml")], None);
    // Prometheus must have scraped the counters before they move, so increase() has two points
    // (its scrape manager applies new targets on a 5 s tick).
    wait_for(
        Duration::from_secs(30),
        "Prometheus scraping rollwatch",
        || {
            (prom
                .query(r#"count_over_time(up{job="rollwatch"}[1m]) >= 2"#)
                .len()
                == 1)
                .then_some(())
        },
    );
    d.deploy("v1.1.0");
    wait_rollback(&d.db(), "succeeded");

    let rollbacks = wait_for(
        Duration::from_secs(30),
        "rollback counter in Prometheus",
        || {
            let r = prom.query(r#"rollwatch_rollbacks_total{trigger="health",result="succeeded"}"#);
            (!r.is_empty() && r[0]["value"][1] == "1").then_some(r)
        },
    );
    assert_eq!(rollbacks[0]["metric"]["env"], "staging");
    promtool_accepts_the_exposition(d.api_port);
    // The running tag is published by the round after the rollback: wait for a scrape of it.
    wait_for(
        Duration::from_secs(30),
        "one running-tag series, v1.0.0",
        || {
            let running = prom.query("rollwatch_running_tag_info");
            (running.len() == 1 && running[0]["metric"]["tag"] == "v1.0.0").then_some(())
        },
    );

    let queries = dashboard_queries(&dashboard());
    wait_for(
        Duration::from_secs(60),
        "every dashboard query to return data",
        || {
            let empty: Vec<&(String, String)> = queries
                .iter()
                // Annotations are range queries in Grafana: evaluate them over the last 10 minutes.
                .filter(|(what, q)| {
                    if what.starts_with("annotation") {
                        prom.query_range(q, 600).is_empty()
                    } else {
                        prom.query(q).is_empty()
                    }
                })
                .collect();
            if !empty.is_empty() {
                eprintln!("still empty: {empty:?}");
            }
            empty.is_empty().then_some(())
        },
    );
    wait_for(
        Duration::from_secs(30),
        "RollwatchRollbackPerformed firing",
        || {
            prom.firing().into_iter().find(|(name, labels)| {
                name == "RollwatchRollbackPerformed" && labels["role"] == "backend"
            })
        },
    );
}

/// Our own renderer writes `/metrics`: promtool's linter (format, HELP/TYPE, naming) must pass on
/// a real scrape taken after a rollback, when the rare histograms exist too.
fn promtool_accepts_the_exposition(api_port: u16) {
    let (200, body) = http_get(api_port, "/metrics").expect("scrape rollwatch") else {
        panic!("/metrics did not answer 200");
    };
    assert!(
        body.contains("rollwatch_rollback_duration_seconds_bucket{"),
        "{body}"
    );
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_alert_on_error_rate_orders_a_rollback_through_alertmanager() {
    let (d, _c) = watched_good_deployment("am", &["v1.3.0"], "", &[]);

    let am = Service::alertmanager(
        &format!("http://127.0.0.1:{}/api/v1/alertmanager", d.api_port),
        TOKEN,
    );
    let demo_rules = tempfile::tempdir().unwrap();
    let demo_rule = demo_rules.path().join("demo.rules.yml");
    std::fs::write(
        &demo_rule,
        "groups:\n  - name: demo\n    interval: 1s\n    rules:\n      - alert: DemoHighErrorRate\n        expr: sum(rate(http_requests_total{job=\"demo\",code=\"500\"}[5s])) / sum(rate(http_requests_total{job=\"demo\"}[5s])) > 0.1\n        labels:\n          env: staging\n          role: backend\n          rollwatch_action: rollback\n        annotations:\n          summary: more than 10% of requests fail\n",
    )
    .unwrap();
    let scrape = format!(
        "  - job_name: rollwatch\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n  - job_name: demo\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        d.api_port, d.port
    );
    let prom = Service::prometheus(
        &scrape,
        &[repo("rules/rollwatch.rules.yml"), demo_rule],
        Some(am.port),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(d.port, 50, stop.clone());

    // v1.3.0 answers /health ok but fails 20% of real requests: only the alert can see it.
    d.deploy("v1.3.0");
    let row = wait_rollback(&d.db(), "succeeded");
    assert_eq!(row.1, "alert");
    assert!(row.2.contains("DemoHighErrorRate"), "{row:?}");
    assert_eq!(
        (row.3.as_deref(), row.4.as_str()),
        (Some("v1.3.0"), "v1.0.0")
    );
    d.assert_runs("v1.0.0");
    wait_for(
        Duration::from_secs(60),
        "RollwatchRollbackPerformed firing",
        || {
            prom.firing().into_iter().find(|(name, labels)| {
                name == "RollwatchRollbackPerformed" && labels["trigger"] == "alert"
            })
        },
    );
    stop.store(true, Ordering::Relaxed);
    let sent = traffic.join().unwrap();
    assert!(sent > 50, "load generator ran ({sent} requests)");
    // Repeats of the same alert episode (Alertmanager re-notifies) never roll back twice.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        rollback_rows(&d.db()).len(),
        1,
        "{:?}",
        rollback_rows(&d.db())
    );
}

#[test]
fn alertmanager_webhook_answers_each_case_and_changes_only_what_it_should() {
    let (d, _c) = watched_good_deployment("wh", &["v1.0.1"], "", &[]);
    d.deploy("v1.0.1");
    wait_event(&d.db(), "promoted", "v1.0.1", Duration::from_secs(60));
    let path = "/api/v1/alertmanager";
    let firing = am_payload("firing", "staging", "backend", "2026-11-25T10:00:00Z");
    let unchanged = |what: &str| {
        assert!(rollback_rows(&d.db()).is_empty(), "{what}: no rollback");
        assert_eq!(
            d.container().image_ref,
            format!("{}:v1.0.1", d.repository()),
            "{what}: container unchanged"
        );
    };

    let r = http_post(d.api_port, path, None, &firing).unwrap();
    assert_eq!(r.0, 401, "{r:?}");
    unchanged("no token");
    let r = http_post(d.api_port, path, Some("not-the-token"), &firing).unwrap();
    assert_eq!(r.0, 401, "{r:?}");
    unchanged("wrong token");
    let r = http_post(
        d.api_port,
        path,
        Some(TOKEN),
        r#"{"version":"4","alerts":[{"status":"#,
    )
    .unwrap();
    assert_eq!(r.0, 400, "{r:?}");
    assert!(r.1.contains("not an Alertmanager webhook payload"), "{r:?}");
    unchanged("malformed JSON");
    let r = http_post(
        d.api_port,
        path,
        Some(TOKEN),
        &am_payload("firing", "production", "backend", "2026-11-25T10:00:00Z"),
    )
    .unwrap();
    assert_eq!(r.0, 404, "{r:?}");
    unchanged("unknown target");
    let r = http_post(
        d.api_port,
        path,
        Some(TOKEN),
        &am_payload("resolved", "staging", "backend", "2026-11-25T10:00:00Z"),
    )
    .unwrap();
    assert_eq!(r.0, 200, "{r:?}");
    assert!(r.1.contains("ignored"), "{r:?}");
    unchanged("resolved alert");

    let r = http_post(d.api_port, path, Some(TOKEN), &firing).unwrap();
    assert_eq!(r.0, 200, "{r:?}");
    assert!(r.1.contains(r#""action":"rollback""#), "{r:?}");
    let again = http_post(d.api_port, path, Some(TOKEN), &firing).unwrap();
    assert_eq!(again.0, 200, "{again:?}");
    assert!(again.1.contains(r#""action":"duplicate""#), "{again:?}");
    let row = wait_rollback(&d.db(), "succeeded");
    assert_eq!(
        (row.1.as_str(), row.3.as_deref(), row.4.as_str()),
        ("alert", Some("v1.0.1"), "v1.0.0")
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rollback_rows(&d.db()).len(), 1, "the duplicate did nothing");

    // The alert fires again (a new episode) right after: the rolled-back tag is not rolled back.
    let again = am_payload("firing", "staging", "backend", "2026-11-25T10:05:00Z");
    assert_eq!(
        http_post(d.api_port, path, Some(TOKEN), &again).unwrap().0,
        200
    );
    let withheld = wait_event(&d.db(), "withheld", "v1.0.0", Duration::from_secs(20));
    assert!(withheld.contains("cooldown"), "{withheld}");
    assert_eq!(
        rollback_rows(&d.db()).len(),
        1,
        "no rollback of the rollback"
    );
    d.assert_runs("v1.0.0");
}
