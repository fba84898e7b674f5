//! The control plane under abuse, against a real `rollwatch run` and real compose deployments:
//! a flood of idle and half-sent connections starves neither `/healthz` nor an authenticated
//! rollback; strangers get 401 JSON before anything of theirs is parsed; bodies are JSON
//! whatever their Content-Type says and their fields capped; a full watcher queue answers
//! `503 busy` with nothing changed; alert episodes are claimed only for orders the watcher took,
//! per target. Loopback only; every loop and wait is bounded.

mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use harness::*;

const BEARER: &str = "Bearer test-token-0123456789";

fn post(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    http_raw(port, "POST", path, headers, body.as_bytes())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

/// An error answer of this status whose JSON `error` contains `needle`.
fn assert_error(answer: &(u16, String, String), status: u16, needle: &str, what: &str) {
    assert_eq!(answer.0, status, "{what}: {answer:?}");
    let v = json(&answer.2);
    let e = v["error"].as_str().unwrap_or_default();
    assert!(e.contains(needle), "{what}: error {e:?} lacks {needle:?}");
}

/// (env, state, trigger, from_tag, to_tag) of every rollback record.
fn records(db: &Path) -> Vec<(String, String, String, Option<String>, String)> {
    query(
        db,
        "SELECT env, state, trigger, from_tag, to_tag FROM rollbacks ORDER BY id",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )
}

fn count_events(db: &Path, kind: &str) -> usize {
    events(db).iter().filter(|(k, _, _)| k == kind).count()
}

fn paused(db: &Path) -> bool {
    query(
        db,
        "SELECT paused FROM target_control WHERE env = 'staging' AND role = 'backend'",
        |r| r.get::<_, bool>(0),
    )
    .into_iter()
    .next()
    .unwrap_or(false)
}

/// Alertmanager's webhook body (version 4) for one alert on env/role.
fn alert(env: &str, fingerprint: &str, starts_at: &str) -> String {
    format!(
        r#"{{"version":"4","groupKey":"{{}}:{{alertname=\"HighErrors\"}}","status":"firing","receiver":"rollwatch","groupLabels":{{}},"commonLabels":{{}},"commonAnnotations":{{}},"externalURL":"http://127.0.0.1:9093","alerts":[{{"status":"firing","labels":{{"alertname":"HighErrors","env":"{env}","role":"backend","rollwatch_action":"rollback"}},"annotations":{{"summary":"5xx above 10%"}},"startsAt":"{starts_at}","endsAt":"0001-01-01T00:00:00Z","generatorURL":"","fingerprint":"{fingerprint}"}}]}}"#
    )
}

/// Raises this test process's open-file limit to its hard limit: the flood needs ~2,300.
fn raise_nofile(need: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < need {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    assert!(
        soft >= need,
        "RLIMIT_NOFILE {soft} < {need}: raise the hard limit"
    );
}

/// Whether the server still holds `s` open: nothing to read yet, no end of stream.
fn still_open(mut s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    s.set_nonblocking(true).unwrap();
    let open = matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    s.set_nonblocking(false).unwrap();
    open
}

#[test]
fn a_flood_of_idle_and_half_sent_connections_starves_neither_healthz_nor_a_rollback() {
    raise_nofile(4096);
    let (d, c) = watched_good_deployment("flood", &["v1.0.1"], "", &[]);
    let port = d.api_port;
    let addr = ([127, 0, 0, 1], port).into();
    let connect = || TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");

    let opened = Instant::now();
    let mut slow = Vec::new();
    let idle: Vec<TcpStream> = (0..2000)
        .map(|i| {
            let t = Instant::now();
            let s = connect();
            if t.elapsed() > Duration::from_millis(100) {
                slow.push((i, t.elapsed()));
            }
            s
        })
        .collect();
    eprintln!(
        "slow connects: {} {:?}",
        slow.len(),
        &slow[..slow.len().min(10)]
    );
    // Half-sent: 100 request heads cut off mid-header, 100 authenticated rollback orders whose
    // body never finishes (they reach the handler and wait in it).
    let mut half: Vec<TcpStream> = Vec::new();
    for i in 0..200 {
        let mut s = connect();
        let text = if i % 2 == 0 {
            "POST /api/v1/targets/staging/backend/rollback HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthoriz"
                .to_string()
        } else {
            format!("POST /api/v1/targets/staging/backend/rollback HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {BEARER}\r\nContent-Length: 100\r\n\r\n{{\"tag\":\"v1.")
        };
        s.write_all(text.as_bytes()).expect("half-send");
        half.push(s);
    }
    eprintln!("2,200 flood connections opened in {:?}", opened.elapsed());

    let t = Instant::now();
    let healthz = http_get(port, "/healthz");
    let healthz_took = t.elapsed();
    let t = Instant::now();
    let metrics = http_get(port, "/metrics");
    let metrics_took = t.elapsed();
    eprintln!("under the flood: /healthz {healthz_took:?}, /metrics {metrics_took:?}");
    assert_eq!(healthz.map(|r| r.0), Some(200));
    assert!(healthz_took < Duration::from_secs(2), "{healthz_took:?}");
    assert_eq!(metrics.map(|r| r.0), Some(200));
    let rss = std::fs::read_to_string(format!("/proc/{}/status", c.child.id()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    eprintln!("controller resident memory with the flood open: {rss}");
    let open = idle.iter().filter(|s| still_open(s)).count();
    assert_eq!(
        open, 2000,
        "the flood was still there when /healthz answered"
    );

    let t = Instant::now();
    let answer = post(
        port,
        "/api/v1/targets/staging/backend/rollback",
        &[
            ("Authorization", BEARER),
            ("Content-Type", "application/json"),
        ],
        r#"{"tag":"v1.0.1","reason":"under a flood"}"#,
    );
    eprintln!(
        "authenticated rollback under the flood answered in {:?}",
        t.elapsed()
    );
    assert_eq!(answer.0, 200, "{answer:?}");
    assert_eq!(json(&answer.2)["to_tag"], "v1.0.1", "{answer:?}");
    let rows = records(&d.db());
    assert_eq!(
        rows.len(),
        1,
        "the half-sent orders ordered nothing: {rows:?}"
    );
    assert_eq!(
        (rows[0].1.as_str(), rows[0].2.as_str(), rows[0].4.as_str()),
        ("succeeded", "manual", "v1.0.1")
    );
    d.assert_runs("v1.0.1");
    wait_healthy_version(d.port, "v1.0.1");

    // The server let go of the flood by itself: idle and cut-off heads by the header-read
    // timeout, unfinished bodies by the body deadline (answered 408).
    let mut all: Vec<TcpStream> = idle.into_iter().chain(half).collect();
    wait_for(
        Duration::from_secs(30),
        "the server closing the flood",
        || {
            all.retain(still_open);
            all.is_empty().then_some(())
        },
    );
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
}

#[test]
fn strangers_get_401_json_before_any_parsing_and_bodies_are_checked() {
    let (d, _c) = watched_good_deployment("refuse", &["v1.0.1", "develop"], "", &[]);
    let port = d.api_port;
    let rollback = "/api/v1/targets/staging/backend/rollback";
    let wrong = "Bearer test-token-0123456788";
    let short = "Bearer t";
    let garbage = "\u{0}{{{ not json at all";
    let big = "x".repeat(100_000);
    // (method, path, headers, body)
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "POST",
            rollback,
            vec![("Content-Type", "text/plain")],
            garbage,
        ),
        ("POST", rollback, vec![("Authorization", wrong)], garbage),
        (
            "POST",
            rollback,
            vec![("Authorization", short)],
            r#"{"tag":"v1.0.1"}"#,
        ),
        (
            "POST",
            rollback,
            vec![("Authorization", "test-token-0123456789")],
            "",
        ),
        (
            "POST",
            "/api/v1/targets/nowhere/x/rollback",
            vec![],
            garbage,
        ),
        (
            "POST",
            "/api/v1/targets/staging/%ff%fe/pause",
            vec![("Authorization", wrong)],
            "",
        ),
        (
            "POST",
            "/api/v1/deploys",
            vec![("Authorization", wrong)],
            &big,
        ),
        (
            "POST",
            "/api/v1/deploys",
            vec![("Content-Type", "application/xml")],
            "<a/>",
        ),
        ("POST", "/api/v1/alertmanager", vec![], garbage),
        ("POST", "/api/v1/no-such-endpoint", vec![], garbage),
        (
            "PUT",
            "/api/v1/targets",
            vec![("Authorization", wrong)],
            garbage,
        ),
        ("DELETE", "/api/v1/rollbacks", vec![], ""),
    ];
    for (method, path, headers, body) in &cases {
        let a = http_raw(port, method, path, headers, body.as_bytes());
        assert_error(
            &a,
            401,
            "bearer token",
            &format!("{method} {path} {headers:?}"),
        );
    }
    let unchanged = |what: &str| {
        assert!(records(&d.db()).is_empty(), "{what}: no rollback");
        d.assert_runs("v1.0.0");
        assert!(!paused(&d.db()), "{what}: not paused");
        assert_eq!(
            count_events(&d.db(), "ci_deploy"),
            0,
            "{what}: no deploy registered"
        );
    };
    unchanged("strangers");

    let auth = ("Authorization", BEARER);
    let a = post(
        port,
        rollback,
        &[auth, ("Content-Type", "text/plain")],
        "tag=v1.0.1",
    );
    assert_error(
        &a,
        400,
        "Content-Type \"text/plain\" is not JSON",
        "text body",
    );
    let a = post(port, rollback, &[auth], "tag=v1.0.1");
    assert_error(&a, 400, "not valid JSON", "form body without Content-Type");
    let a = post(
        port,
        rollback,
        &[auth],
        &format!(r#"{{"tag":"v{}"}}"#, "1".repeat(199)),
    );
    assert_error(
        &a,
        400,
        "field tag is 200 bytes long; the limit is 128",
        "long tag",
    );
    let a = post(
        port,
        rollback,
        &[auth],
        &format!(r#"{{"tag":"v1.0.1","reason":"{}"}}"#, "r".repeat(5000)),
    );
    assert_error(
        &a,
        400,
        "field reason is 5000 bytes long; the limit is 1024",
        "long reason",
    );
    let deploy = |url: &str| {
        format!(r#"{{"env":"staging","role":"backend","tag":"v1.0.1","pipeline_url":"{url}"}}"#)
    };
    let a = post(port, "/api/v1/deploys", &[auth], &deploy(&"u".repeat(3000)));
    assert_error(
        &a,
        400,
        "field pipeline_url is 3000 bytes long; the limit is 2048",
        "long URL",
    );
    let a = post(
        port,
        "/api/v1/deploys",
        &[auth],
        &deploy(&"u".repeat(1 << 20)),
    );
    assert_error(&a, 413, "over 65536 bytes", "1 MB pipeline_url");
    let a = post(port, "/api/v1/targets/staging/b%ff/pause", &[auth], "");
    assert_eq!(a.0, 400, "{a:?}");
    json(&a.2);
    unchanged("refused bodies");

    // A JSON body without Content-Type is the order: v1.0.1, not the fallback or known-good.
    let a = post(port, rollback, &[auth], r#"{"tag":"v1.0.1"}"#);
    assert_eq!(a.0, 200, "{a:?}");
    assert_eq!(json(&a.2)["to_tag"], "v1.0.1", "{a:?}");
    let rows = records(&d.db());
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].1.as_str(), rows[0].4.as_str()),
        ("succeeded", "v1.0.1")
    );
    d.assert_runs("v1.0.1");
}

/// A `docker-compose` that waits while `hold` exists (at most 120 s) before running the real
/// one; it touches `<hold>.reached` when it starts waiting.
fn holding_compose(dir: &Path, hold: &Path) -> String {
    let hold = hold.display();
    compose_wrapper(
        dir,
        &format!("touch {hold}.reached\ni=0\nwhile [ -e {hold} ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done\nexec \"$REAL\" \"$@\""),
    )
}

#[test]
fn a_full_queue_answers_busy_changes_nothing_and_a_dropped_alert_runs_on_retry() {
    let app = app_with_images("busy", &["v1.0.0", "v1.0.1"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
    let watch = r#"watch = { interval = "500ms", failures = 2, grace = "1s", bake = "3s", cooldown = "1s" }"#;
    let config = d.write_config(&format!("{REGISTRY}/{app}"), watch);
    let hold = d.root.path().join("hold");
    let path = holding_compose(d.root.path(), &hold);
    let _c = Controller::start(&config, &[("PATH", &path)]);
    let port = d.api_port;
    let db = d.db();
    wait_event(&db, "promoted", "v1.0.0", Duration::from_secs(60));
    d.deploy("v1.0.1");
    wait_event(&db, "promoted", "v1.0.1", Duration::from_secs(60));

    // The watcher busy in a rollback held at its first compose step.
    std::fs::write(&hold, "").unwrap();
    let held = std::thread::spawn(move || {
        post(
            port,
            "/api/v1/targets/staging/backend/rollback",
            &[("Authorization", BEARER)],
            r#"{"tag":"v1.0.0"}"#,
        )
    });
    wait_for(
        Duration::from_secs(60),
        "the rollback held in compose",
        || hold.with_extension("reached").exists().then_some(()),
    );
    // Fill its queue: 16 resumes, each answered 202 `queued` once it waited its 10 s in vain.
    let resumes: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || {
                post(
                    port,
                    "/api/v1/targets/staging/backend/resume",
                    &[("Authorization", BEARER)],
                    "",
                )
            })
        })
        .collect();
    for r in resumes {
        let a = r.join().expect("resume thread");
        assert_eq!(a.0, 202, "{a:?}");
        assert_eq!(json(&a.2)["status"], "queued", "{a:?}");
    }

    let auth = [("Authorization", BEARER)];
    let busy = |a: (u16, String, String), what: &str| {
        assert_error(&a, 503, "busy", what);
        assert!(
            a.1.to_ascii_lowercase().contains("retry-after: 5"),
            "{what}: {}",
            a.1
        );
    };
    // A blocking send would hang here until the held rollback ended, never answer 503.
    busy(
        post(port, "/api/v1/targets/staging/backend/pause", &auth, ""),
        "pause",
    );
    busy(
        post(
            port,
            "/api/v1/targets/staging/backend/rollback",
            &auth,
            r#"{"tag":"v1.0.1"}"#,
        ),
        "rollback",
    );
    busy(
        post(
            port,
            "/api/v1/deploys",
            &auth,
            r#"{"env":"staging","role":"backend","tag":"v1.0.1"}"#,
        ),
        "deploy",
    );
    let firing = alert("staging", "0123abcd", "2026-11-28T10:00:00Z");
    let a = post(port, "/api/v1/alertmanager", &auth, &firing);
    busy(a.clone(), "alert");
    assert_eq!(json(&a.2)["results"][0]["action"], "busy", "{a:?}");
    // Alertmanager giving up on an answer: the same alert, connection dropped right away.
    {
        let addr = ([127, 0, 0, 1], port).into();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        let req = format!(
            "POST /api/v1/alertmanager HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {BEARER}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{firing}",
            firing.len()
        );
        s.write_all(req.as_bytes()).unwrap();
    }

    std::fs::remove_file(&hold).unwrap();
    let a = held.join().expect("held rollback thread");
    assert_eq!(a.0, 200, "{a:?}");
    wait_for(
        Duration::from_secs(30),
        "the 16 queued resumes done",
        || (count_events(&db, "resumed") == 16).then_some(()),
    );
    assert!(!paused(&db), "the busy pause changed nothing");
    let rows = records(&db);
    assert_eq!(rows.len(), 1, "only the held rollback: {rows:?}");
    assert_eq!(
        (rows[0].2.as_str(), rows[0].4.as_str()),
        ("manual", "v1.0.0")
    );
    assert_eq!(
        count_events(&db, "ci_deploy"),
        0,
        "the busy deploy registered nothing"
    );
    let claimed = query(&db, "SELECT episode FROM alert_episodes", |r| {
        r.get::<_, String>(0)
    });
    assert!(claimed.is_empty(), "no episode claimed: {claimed:?}");
    d.assert_runs("v1.0.0");

    // CI deploys v1.0.1 again; once the 1 s cooldown is over (the bake alone takes 3 s),
    // Alertmanager's retry of the same notification acts.
    d.deploy("v1.0.1");
    wait_for(Duration::from_secs(30), "the redeploy promoted", || {
        let promoted = events(&db)
            .into_iter()
            .filter(|(k, t, _)| k == "promoted" && t.as_deref() == Some("v1.0.1"))
            .count();
        (promoted == 2).then_some(())
    });
    let a = post(port, "/api/v1/alertmanager", &auth, &firing);
    assert_eq!(a.0, 200, "{a:?}");
    assert_eq!(
        json(&a.2)["results"][0]["action"],
        "rollback",
        "not a duplicate: {a:?}"
    );
    let row = wait_for(Duration::from_secs(90), "the alert's rollback", || {
        records(&db)
            .into_iter()
            .find(|r| r.2 == "alert" && r.1 == "succeeded")
    });
    assert_eq!(
        (row.3.as_deref(), row.4.as_str()),
        (Some("v1.0.1"), "v1.0.0")
    );
    d.assert_runs("v1.0.0");
    let again = post(port, "/api/v1/alertmanager", &auth, &firing);
    assert_eq!(
        json(&again.2)["results"][0]["action"],
        "duplicate",
        "{again:?}"
    );
}

#[test]
fn equal_fingerprints_on_two_targets_both_roll_back() {
    let app = app_with_images("twofp", &["v1.0.0", "v1.0.1"]);
    let staging = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
    let production = ComposeDeployment::up(&app, "production", "backend", "v1.0.0");
    let target = |d: &ComposeDeployment| {
        format!(
            r#"[[targets]]
env = "{env}"
role = "backend"
selector = {{ compose_project = "{project}", compose_service = "backend" }}
health = {{ url = "http://127.0.0.1:{port}/health", timeout = "1s", validation_timeout = "8s" }}
executor = {{ kind = "compose", dir = "{dir}", registry = "{REGISTRY}/{app}" }}
{FAST_WATCH}
"#,
            env = d.env,
            project = d.project,
            port = d.port,
            dir = d.dir().display(),
        )
    };
    let config = staging.root.path().join("rollwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[controller]\nstore = \"rollwatch.db\"\nlisten = \"127.0.0.1:{}\"\n\n{}\n{}",
            staging.api_port,
            target(&staging),
            target(&production)
        ),
    )
    .unwrap();
    let _c = Controller::start(&config, &[]);
    let db = staging.db();
    let promoted = |env: &str, tag: &str| {
        let sql = format!(
            "SELECT COUNT(*) FROM events WHERE env = '{env}' AND kind = 'promoted' AND tag = '{tag}'"
        );
        wait_for(
            Duration::from_secs(60),
            &format!("{env} promoted {tag}"),
            || (query(&db, &sql, |r| r.get::<_, i64>(0)).first() == Some(&1)).then_some(()),
        )
    };
    promoted("staging", "v1.0.0");
    promoted("production", "v1.0.0");
    staging.deploy("v1.0.1");
    production.deploy("v1.0.1");
    promoted("staging", "v1.0.1");
    promoted("production", "v1.0.1");

    // Two rules' alerts that Alertmanager fingerprinted alike, in two notifications.
    let auth = [("Authorization", BEARER)];
    for env in ["staging", "production"] {
        let a = post(
            staging.api_port,
            "/api/v1/alertmanager",
            &auth,
            &alert(env, "0123abcd", "2026-11-28T10:00:00Z"),
        );
        assert_eq!(a.0, 200, "{a:?}");
        assert_eq!(
            json(&a.2)["results"][0]["action"],
            "rollback",
            "{env}: {a:?}"
        );
    }
    let rows = wait_for(Duration::from_secs(120), "both alert rollbacks", || {
        let done: Vec<_> = records(&db)
            .into_iter()
            .filter(|r| r.1 == "succeeded" && r.2 == "alert")
            .collect();
        (done.len() == 2).then_some(done)
    });
    let mut envs: Vec<_> = rows.iter().map(|r| (r.0.clone(), r.4.clone())).collect();
    envs.sort();
    assert_eq!(
        envs,
        vec![
            ("production".to_string(), "v1.0.0".to_string()),
            ("staging".to_string(), "v1.0.0".to_string())
        ]
    );
    staging.assert_runs("v1.0.0");
    production.assert_runs("v1.0.0");
}
