//! Canary deploys as users run them: `rollwatch run` watches a canary target (two compose
//! slot projects behind HAProxy, its health URL on HAProxy's frontend) and CI calls
//! `rollwatch deploy staging backend <tag>` instead of `up -d`, under ~50 req/s from a bounded
//! loopback load generator. Each test asserts on outcomes: the exit code, HAProxy's weights
//! read over its Runtime API, the store's record of them, the containers that run, the
//! exported metrics, and the load generator's failed requests.

mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::canary::*;
use harness::haproxy::load_through;
use harness::*;
use rollwatch::traffic::Slot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollwatch_deploy_aborts_a_version_failing_a_quarter_of_requests_and_marks_it_bad() {
    let b = bed("ccbad", &["v1.6.0"], "10m").await;
    let _c = b.controller(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let (seen, counter) = count_requests(b.site.port_of(Slot::Green), stop.clone());
    let Deployed {
        code,
        out,
        ok,
        failed,
    } = b.deploy_under_load("v1.6.0");
    stop.store(true, Ordering::Relaxed);
    let _ = counter.join();
    let r = b.newest().expect("a canary record");
    let out_after = r.ended_ms.expect("ended") - first_step_ms(&r.steps);
    eprintln!(
        "{out}\naborted {out_after} ms after its first non-zero weight; {} requests reached v1.6.0 by its own counter; load ok {ok}, failed {failed}",
        seen.load(Ordering::Relaxed)
    );
    assert_eq!(code, 1, "exit 1 for an aborted deploy: {out}");
    assert!(out.contains("aborted"), "{out}");
    assert!(
        out.contains("10%"),
        "the steps are shown as they happen: {out}"
    );
    assert_eq!(r.state, "aborted", "{r:?}");
    assert!(r.reason.contains("regressed"), "{}", r.reason);
    assert!(out_after < 30_000, "{out_after} ms");
    assert_eq!(b.weights(), (100, 0), "all traffic back on blue");
    assert_eq!(
        (r.weights, r.applied),
        ((100, 0), true),
        "the store matches HAProxy"
    );
    assert!(project_containers(&b.site.project_of(Slot::Green)).is_empty());
    assert!(
        seen.load(Ordering::Relaxed) > 0,
        "the canary took part of the traffic"
    );
    let bad = query(&b.db(), "SELECT tag FROM bad_tags", |r| {
        r.get::<_, String>(0)
    });
    assert_eq!(bad, vec!["v1.6.0".to_string()]);
    assert_eq!(b.metric("rollwatch_canary_aborts_total{"), Some(1.0));
    assert_eq!(
        b.metric("rollwatch_canary_weight{env=\"staging\",role=\"backend\",slot=\"green\"}"),
        Some(0.0)
    );
    let history = rollwatch(&b.config)
        .args(["history"])
        .output()
        .expect("history");
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(
        history.contains("v1.0.0 -> v1.6.0") && history.contains("aborted"),
        "{history}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollwatch_deploy_promotes_a_good_version_with_no_failed_request_and_abort_flips_back() {
    let b = bed("ccgood", &["v1.0.1"], "10m").await;
    let probe = rollwatch(&b.config)
        .args(["check-config", "--probe"])
        .output()
        .expect("check-config --probe");
    let table = String::from_utf8_lossy(&probe.stdout);
    assert_eq!(probe.status.code(), Some(0), "{table}");
    assert!(
        table.contains("blue UP weight 100") && table.contains("-green on ports"),
        "{table}"
    );
    let _c = b.controller(&[]);
    let Deployed {
        code,
        out,
        ok,
        failed,
    } = b.deploy_under_load("v1.0.1");
    eprintln!("{out}\nload ok {ok}, failed {failed}");
    assert_eq!(code, 0, "{out}");
    assert_eq!(failed, 0, "failed requests at the load generator ({ok} ok)");
    let r = b.newest().expect("record");
    assert_eq!(r.state, "holding", "{r:?}");
    let steps: Vec<(u32, i64)> = serde_json::from_str(&r.steps).expect("steps");
    assert_eq!(
        steps.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![10, 50, 100]
    );
    assert_eq!(b.weights(), (0, 100));
    assert_eq!((r.weights, r.applied), ((0, 100), true));
    assert!(health(b.h.port).is_some_and(|h| h.contains("v1.0.1")));
    assert!(
        health(b.site.port_of(Slot::Blue)).is_some_and(|h| h.contains("v1.0.0")),
        "the old version is held, running at weight 0"
    );
    assert_eq!(b.metric("rollwatch_canary_promotions_total{"), Some(1.0));
    wait_for(
        Duration::from_secs(10),
        "the hold in the target's status",
        || {
            http_get(b.d.api_port, "/api/v1/targets")
                .filter(|(_, body)| body.contains("v1.0.1 promoted; the old slot is held until"))
        },
    );

    // A person aborts during the hold: all traffic back to blue by weight, green removed.
    let out = rollwatch(&b.config)
        .env("ROLLWATCH_API_TOKEN", TOKEN)
        .args(["abort", "staging", "backend"])
        .output()
        .expect("abort");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("all traffic back on v1.0.0"), "{text}");
    assert_eq!(b.weights(), (100, 0));
    let r = b.newest().expect("record");
    assert_eq!((r.state.as_str(), r.weights), ("flipped_back", (100, 0)));
    assert!(project_containers(&b.site.project_of(Slot::Green)).is_empty());
    let rows = rollback_rows(&b.db());
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].0.as_str(), rows[0].4.as_str()),
        ("succeeded", "v1.0.0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_a_mid_deploy_step_then_restart_aborts_cleanly_with_weights_matching_the_store() {
    let b = bed("cckill", &["v1.0.1"], "10m").await;
    let mut c = b.controller(&[("ROLLWATCH_FAULT_POINT", "canary-mid-step")]);
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load_through(b.h.port, 50, stop.clone());
    let config = b.config.clone();
    let deploy = std::thread::spawn(move || deploy_with(&config, "v1.0.1"));
    // The fault point holds the deploy at its 50% step: the crash comes there.
    wait_for(Duration::from_secs(90), "the 50% step on record", || {
        b.newest().filter(|r| r.steps.contains("[50,"))
    });
    assert_eq!(b.weights(), (50, 50), "mid-deploy: both slots take traffic");
    c.kill9();
    let (code, out) = deploy.join().expect("deploy thread");
    assert_ne!(code, 0, "the deploy did not finish: {out}");
    let r = b.newest().expect("record");
    assert_eq!(
        r.state, "stepping",
        "the store still says mid-deploy: {r:?}"
    );

    let _c = b.controller(&[]);
    let r = wait_for(
        Duration::from_secs(60),
        "the interrupted deploy aborted",
        || b.newest().filter(|r| r.state == "aborted"),
    );
    assert!(
        r.reason.contains("stopped during this deploy"),
        "{}",
        r.reason
    );
    assert_eq!(b.weights(), (100, 0), "exactly one slot takes traffic");
    assert_eq!(
        (r.weights, r.applied),
        (b.weights(), true),
        "HAProxy matches the store"
    );
    assert!(project_containers(&b.site.project_of(Slot::Green)).is_empty());
    assert!(health(b.h.port).is_some_and(|h| h.contains("v1.0.0")));
    let bad = query(&b.db(), "SELECT tag FROM bad_tags", |r| {
        r.get::<_, String>(0)
    });
    assert!(
        bad.is_empty(),
        "an interrupted deploy was not judged bad: {bad:?}"
    );
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.join();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regression_found_by_the_watcher_during_the_hold_flips_traffic_back_by_weight() {
    let b = bed("ccflip", &["v1.0.1"], "10m").await;
    let _c = b.controller(&[]);
    let Deployed { code, out, .. } = b.deploy_under_load("v1.0.1");
    assert_eq!(code, 0, "{out}");
    assert_eq!(b.weights(), (0, 100));
    // The new version hangs (SIGSTOP, not `docker pause`: the cgroup-v1 freezer here froze
    // dockerd too): HAProxy's checks take it DOWN, and /health on the frontend fails.
    let green = project_containers(&b.site.project_of(Slot::Green));
    assert_eq!(green.len(), 1, "{green:?}");
    let paused = Instant::now();
    sh("docker", &["kill", "--signal", "STOP", &green[0]]);
    let r = wait_for(Duration::from_secs(60), "the watcher's flip back", || {
        b.newest().filter(|r| r.state == "flipped_back")
    });
    eprintln!(
        "flipped back {} ms after the new version hung",
        paused.elapsed().as_millis()
    );
    assert_eq!(b.weights(), (100, 0));
    assert_eq!((r.weights, r.applied), ((100, 0), true));
    let regressed = event_at_ms(&b.db(), "regressed", "v1.0.1").expect("the watcher's verdict");
    // The event (and the counter before it) follows the record's state.
    wait_event(
        &b.db(),
        "canary_flipped_back",
        "v1.0.1",
        Duration::from_secs(30),
    );
    let flipped = event_at_ms(&b.db(), "canary_flipped_back", "v1.0.1").expect("flip event");
    eprintln!(
        "verdict -> all traffic on v1.0.0 took {} ms",
        flipped - regressed
    );
    assert!(health(b.h.port).is_some_and(|h| h.contains("v1.0.0")));
    let rows = rollback_rows(&b.db());
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0].1, "health",
        "the watcher's health verdict: {rows:?}"
    );
    assert_eq!(rows[0].4, "v1.0.0");
    assert_eq!(b.metric("rollwatch_canary_flip_backs_total{"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_failed_orders_say_why_and_leave_the_traffic_where_it_was() {
    let b = bed("ccrefuse", &[], "10m").await;
    let mut controller = b.controller(&[]);
    let c = &b.config;
    for (args, token, code, says) in [
        (
            &["abort", "staging", "backend"][..],
            true,
            2,
            "no canary deploy is in flight",
        ),
        (
            &["promote", "staging", "backend"][..],
            true,
            2,
            "no canary deploy is in flight",
        ),
        (
            &["deploy", "staging", "backend", "v1.0.0"][..],
            true,
            2,
            "already takes the traffic",
        ),
        (
            &["deploy", "staging", "backend", "v1.0.1"][..],
            false,
            2,
            "ROLLWATCH_API_TOKEN",
        ),
        (
            &["deploy", "staging", "backend", "not a tag"][..],
            true,
            2,
            "not a tag",
        ),
    ] {
        let (got, out) = cli(c, args, token);
        assert_eq!(got, code, "{args:?}: {out}");
        assert!(out.contains(says), "{args:?}: {out}");
        assert_eq!(b.weights(), (100, 0), "{args:?} changed the weights");
    }
    assert!(b.newest().is_none(), "no deploy was recorded for a refusal");

    // A tag the registry does not have: started nowhere, no traffic moved, not marked bad.
    let (got, out) = cli(c, &["deploy", "staging", "backend", "v9.9.9"], true);
    assert_eq!(got, 1, "{out}");
    assert!(out.contains("could not be started"), "{out}");
    let r = b.newest().expect("the attempt is on record");
    assert_eq!(
        (r.state.as_str(), r.weights),
        ("aborted", (100, 0)),
        "{r:?}"
    );
    assert_eq!(b.weights(), (100, 0));
    assert!(project_containers(&b.site.project_of(Slot::Green)).is_empty());
    let bad = query(&b.db(), "SELECT tag FROM bad_tags", |r| {
        r.get::<_, String>(0)
    });
    assert!(bad.is_empty(), "{bad:?}");

    // No controller: refused, nothing changed.
    controller.kill9();
    let (got, out) = cli(c, &["deploy", "staging", "backend", "v1.0.1"], true);
    assert_eq!(got, 2, "{out}");
    assert!(out.contains("controller not reachable"), "{out}");
    assert_eq!(b.weights(), (100, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hold_survives_kill_9_and_ends_by_stopping_the_old_slot() {
    let b = bed("cchold", &["v1.0.1"], "8s").await;
    let mut c = b.controller(&[]);
    let Deployed { code, out, .. } = b.deploy_under_load("v1.0.1");
    assert_eq!(code, 0, "{out}");
    assert_eq!(b.newest().expect("record").state, "holding");
    // The controller dies during the hold; the next one picks the hold up from the store.
    c.kill9();
    assert!(
        health(b.site.port_of(Slot::Blue)).is_some_and(|h| h.contains("v1.0.0")),
        "the held slot runs on while rollwatch is down"
    );
    let _c = b.controller(&[]);
    let r = wait_for(Duration::from_secs(60), "the hold's end", || {
        b.newest().filter(|r| r.state == "promoted")
    });
    assert!(
        r.reason.contains("the old slot was stopped"),
        "{}",
        r.reason
    );
    assert!(project_containers(&b.site.project_of(Slot::Blue)).is_empty());
    assert_eq!(b.weights(), (0, 100));
    assert_eq!((r.weights, r.applied), ((0, 100), true));
    assert!(health(b.h.port).is_some_and(|h| h.contains("v1.0.1")));
    wait_event(
        &b.db(),
        "canary_hold_ended",
        "v1.0.1",
        Duration::from_secs(5),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_hold_a_regression_starts_the_known_good_version_and_switches_to_it() {
    let b = bed("ccswitch", &["v1.0.1"], "2s").await;
    let _c = b.controller(&[]);
    let Deployed { code, out, .. } = b.deploy_under_load("v1.0.1");
    assert_eq!(code, 0, "{out}");
    wait_for(Duration::from_secs(30), "the hold's end", || {
        b.newest().filter(|r| r.state == "promoted")
    });
    assert!(project_containers(&b.site.project_of(Slot::Blue)).is_empty());
    record_newest_known_good(&b.db(), "v1.0.0");
    let green = project_containers(&b.site.project_of(Slot::Green));
    sh("docker", &["kill", "--signal", "STOP", &green[0]]);
    let (state, trigger, _, from, to) =
        wait_for(Duration::from_secs(90), "the switch back", || {
            rollback_rows(&b.db()).into_iter().find(|r| r.0 != "intent")
        });
    assert_eq!(
        (
            state.as_str(),
            trigger.as_str(),
            from.as_deref(),
            to.as_str()
        ),
        ("succeeded", "health", Some("v1.0.1"), "v1.0.0")
    );
    assert_eq!(
        b.weights(),
        (100, 0),
        "the known-good version, in blue, takes all"
    );
    assert!(health(b.h.port).is_some_and(|h| h.contains("v1.0.0")));
    assert!(project_containers(&b.site.project_of(Slot::Green)).is_empty());
    let r = b.newest().expect("record");
    assert_eq!(
        (r.state.as_str(), r.weights, r.applied),
        ("promoted", (100, 0), true)
    );
}
