//! High availability on PostgreSQL: two `rollwatch run` on one database, one leads and acts.
//! Each test asserts what ran (the compose wrapper's log of every instance's calls), what was
//! recorded (the rows in PostgreSQL) and what was exported.

mod harness;

use std::time::{Duration, Instant};

use harness::ha::HaBed;
use harness::*;

const TAKEOVER_BOUND: Duration = Duration::from_secs(10);

#[test]
fn two_controllers_on_one_database_roll_a_bad_deploy_back_once_by_the_leader() {
    let bed = HaBed::new("ha-once", "");
    let a = bed.start_leader("a", &[]);
    let b = bed.start("b", &[]);
    b.wait_metric("rollwatch_leader", 0.0, Duration::from_secs(30));
    bed.wait_event("promoted", "v1.0.0", Duration::from_secs(60));

    // The follower takes no orders and names the leader.
    let (status, body) = http_post(
        b.api_port,
        "/api/v1/targets/staging/backend/pause",
        Some(TOKEN),
        "{}",
    )
    .expect("the follower answers");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&a.address()), "names the leader: {body}");
    let (_, page) = http_get(b.api_port, "/").expect("the follower's status page");
    assert!(
        page.contains("This instance follows") && page.contains(&a.address()),
        "{page}"
    );
    let (_, page) = http_get(a.api_port, "/").expect("the leader's status page");
    assert!(!page.contains("This instance follows"));
    // The CLI on the follower's config goes to the leader, which answers (here: a refusal of
    // a tag no registry has, so nothing changes).
    let out = rollwatch(&b.config)
        .env("ROLLWATCH_API_TOKEN", TOKEN)
        .args(["rollback", "staging", "backend", "v9.9.9"])
        .assert()
        .code(2);
    let said = String::from_utf8_lossy(&out.get_output().stderr).to_string()
        + &String::from_utf8_lossy(&out.get_output().stdout);
    assert!(
        said.contains(&format!(
            "sending the rollback to the leader at {}",
            a.address()
        )) && said.contains("unknown tag v9.9.9"),
        "{said}"
    );

    bed.d.deploy("v1.1.0");
    let row = bed.wait_rollback("succeeded", Duration::from_secs(90));
    bed.d.assert_runs("v1.0.0");
    std::thread::sleep(Duration::from_secs(3));
    let rows = bed.rollbacks();
    assert_eq!(rows.len(), 1, "one record: {rows:?}");
    assert_eq!(
        (row.2.as_deref(), row.3.as_str()),
        (Some("v1.1.0"), "v1.0.0")
    );
    assert_eq!(bed.ups(), vec!["a"], "one compose up, by the leader");
    assert_eq!(rollbacks_counted(a.api_port, "succeeded"), Some(1.0));
    assert_eq!(rollbacks_counted(b.api_port, "succeeded"), Some(0.0));
    // Each instance's role as a label too, for joins onto its other series.
    let role = |port, leader| metric_value(port, "rollwatch_role_info{", &[leader]);
    assert_eq!(role(a.api_port, r#"leader="true""#), Some(1.0));
    assert_eq!(role(b.api_port, r#"leader="false""#), Some(1.0));
    // Decisions are written by the leader alone: one deploy event, not one per instance.
    let deploys = bed
        .events()
        .into_iter()
        .filter(|(k, t, _)| k == "deploy" && t.as_deref() == Some("v1.1.0"))
        .count();
    assert_eq!(deploys, 1, "{:?}", bed.events());
}

#[test]
fn after_a_kill9_of_the_leader_right_after_the_intent_the_follower_finishes_it_once() {
    let bed = HaBed::new("ha-kill", "");
    // a stops making progress right after writing the intent (and is then killed).
    let mut a = bed.start_leader("a", &[("ROLLWATCH_FAULT_POINT", "after-intent")]);
    let b = bed.start("b", &[]);
    b.wait_metric("rollwatch_leader", 0.0, Duration::from_secs(30));
    bed.wait_event("promoted", "v1.0.0", Duration::from_secs(60));

    bed.d.deploy("v1.1.0");
    bed.wait_rollback("intent", Duration::from_secs(60));
    a.c.kill9();
    let killed = Instant::now();
    let took = bed.wait_lease_of("b", killed, Duration::from_secs(20));
    eprintln!("takeover after kill -9: {took:?}");
    assert!(took < TAKEOVER_BOUND, "took over within 10 s: {took:?}");

    let row = bed.wait_rollback("succeeded", Duration::from_secs(60));
    bed.d.assert_runs("v1.0.0");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(bed.rollbacks().len(), 1, "{:?}", bed.rollbacks());
    assert_eq!(row.4, 2, "finished under the follower's epoch");
    assert_eq!(bed.ups(), vec!["b"], "exactly one up, by the new leader");
    assert_eq!(bed.pulls(), vec!["b"]);
    let resumed = bed.wait_event("rollback", "v1.0.0", Duration::from_secs(30));
    assert!(resumed.contains("resumed"), "{resumed}");
}

#[test]
fn a_leader_frozen_past_its_lease_is_refused_at_every_step_while_the_new_leader_acts() {
    let root = tempfile::tempdir().expect("temp dir");
    let (started, gate) = (root.path().join("a-pull-started"), root.path().join("gate"));
    // a's pull waits for the gate, so a is frozen mid-rollback with its next step ahead.
    let bed = HaBed::new(
        "ha-stop",
        &format!(
            "case \"$HA_TEST_INSTANCE $*\" in \"a \"*\" pull\") touch {s}; i=0\n  while [ ! -e {g} ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done;; esac",
            s = started.display(),
            g = gate.display()
        ),
    );
    let a = bed.start_leader("a", &[]);
    let b = bed.start("b", &[]);
    b.wait_metric("rollwatch_leader", 0.0, Duration::from_secs(30));
    bed.wait_event("promoted", "v1.0.0", Duration::from_secs(60));

    bed.d.deploy("v1.1.0");
    wait_for(Duration::from_secs(60), "a's pull", || {
        started.exists().then_some(())
    });
    sh("kill", &["-STOP", &a.pid()]);
    let stopped = Instant::now();
    bed.wait_lease_of("b", stopped, Duration::from_secs(20));
    let row = bed.wait_rollback("succeeded", Duration::from_secs(60));
    assert_eq!(row.4, 2, "the new leader took the record over");
    bed.d.assert_runs("v1.0.0");

    // a wakes up with its pull done and `up` next.
    std::fs::write(&gate, "").expect("open the gate");
    sh("kill", &["-CONT", &a.pid()]);
    let fenced = bed.wait_event("fenced", "v1.0.0", Duration::from_secs(30));
    assert!(
        fenced.contains(&format!("epoch 1 of a:{}.", a.pid()))
            && fenced.contains(&format!(" is stale: b:{}.", b.pid()))
            && fenced.contains(" leads under epoch 2"),
        "{fenced}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(bed.ups(), vec!["b"], "a ran no up: {:?}", bed.calls());
    assert_eq!(bed.pulls(), vec!["a", "b"]);
    bed.d.assert_runs("v1.0.0");
    assert!(
        bed.d.env_file().contains("IMAGE_TAG=v1.0.0"),
        "{}",
        bed.d.env_file()
    );
    let rows = bed.rollbacks();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].1.as_str(), rows[0].4), ("succeeded", 2));
    assert_eq!(a.metric("rollwatch_fenced_steps_total"), Some(1.0));
    a.wait_metric("rollwatch_leader", 0.0, Duration::from_secs(10));
}

#[test]
fn with_postgres_down_for_30s_during_a_bad_deploy_nothing_acts_until_it_is_back() {
    let mut bed = HaBed::new("ha-pgdown", "");
    let a = bed.start_leader("a", &[]);
    bed.wait_event("promoted", "v1.0.0", Duration::from_secs(60));

    bed.pg.stop();
    let down = Instant::now();
    bed.d.deploy("v1.1.0");
    a.wait_metric("rollwatch_store_up", 0.0, Duration::from_secs(20));
    a.wait_metric("rollwatch_leader", 0.0, Duration::from_secs(20));
    while down.elapsed() < Duration::from_secs(30) {
        assert!(
            bed.ups().is_empty(),
            "nothing acts without a record: {:?}",
            bed.calls()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    bed.d.assert_runs("v1.1.0");
    assert_eq!(
        a.metric("rollwatch_store_up"),
        Some(0.0),
        "the alert metric is still set"
    );

    bed.pg.resume();
    let row = bed.wait_rollback("succeeded", Duration::from_secs(90));
    bed.d.assert_runs("v1.0.0");
    assert_eq!(
        (row.2.as_deref(), row.3.as_str()),
        (Some("v1.1.0"), "v1.0.0")
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(bed.rollbacks().len(), 1);
    assert_eq!(bed.ups(), vec!["a"]);
    assert_eq!(a.metric("rollwatch_store_up"), Some(1.0));
    assert_eq!(a.metric("rollwatch_leader"), Some(1.0));
}

/// Guard rails live in the store, kept by whoever leads: a pause ordered through the old
/// leader holds under the new one, which rereads them when it takes over.
#[test]
fn a_pause_ordered_through_the_leader_holds_after_a_takeover() {
    let bed = HaBed::new("ha-pause", "");
    let mut a = bed.start_leader("a", &[]);
    let b = bed.start("b", &[]);
    b.wait_metric("rollwatch_leader", 0.0, Duration::from_secs(30));
    bed.wait_event("promoted", "v1.0.0", Duration::from_secs(60));
    let (status, body) = http_post(
        a.api_port,
        "/api/v1/targets/staging/backend/pause",
        Some(TOKEN),
        "{}",
    )
    .expect("the leader answers");
    assert!((200..300).contains(&status), "{status} {body}");

    a.c.kill9();
    b.wait_metric(
        "rollwatch_leader",
        1.0,
        TAKEOVER_BOUND + Duration::from_secs(5),
    );
    bed.d.deploy("v1.1.0");
    let withheld = bed.wait_event("withheld", "v1.1.0", Duration::from_secs(30));
    assert!(withheld.contains("paused"), "{withheld}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(bed.rollbacks().is_empty(), "{:?}", bed.rollbacks());
    assert!(bed.ups().is_empty(), "{:?}", bed.calls());
    bed.d.assert_runs("v1.1.0");
}

/// Alertmanager pointed at every instance: the follower answers 503 (Alertmanager retries it)
/// and the leader acts once; after a failover, the same alert episode re-sent to the new leader
/// is a duplicate, because the store remembers it.
#[test]
fn an_alert_sent_to_every_instance_rolls_back_once_even_across_a_failover() {
    let bed = HaBed::build("ha-alert", "", FAST_WATCH, &["v1.0.0", "v1.0.1"]);
    let mut a = bed.start_leader("a", &[]);
    let b = bed.start("b", &[]);
    b.wait_metric("rollwatch_leader", 0.0, Duration::from_secs(30));
    bed.wait_event("promoted", "v1.0.0", Duration::from_secs(60));
    bed.d.deploy("v1.0.1");
    bed.wait_event("promoted", "v1.0.1", Duration::from_secs(60));

    let path = "/api/v1/alertmanager";
    let firing = am_payload("firing", "staging", "backend", "2026-11-29T10:00:00Z");
    let to_b = http_post(b.api_port, path, Some(TOKEN), &firing).expect("b answers");
    assert_eq!(to_b.0, 503, "{to_b:?}");
    let to_a = http_post(a.api_port, path, Some(TOKEN), &firing).expect("a answers");
    assert_eq!(to_a.0, 200, "{to_a:?}");
    assert!(to_a.1.contains(r#""action":"rollback""#), "{to_a:?}");
    let row = bed.wait_rollback("succeeded", Duration::from_secs(60));
    assert_eq!(
        (row.2.as_deref(), row.3.as_str()),
        (Some("v1.0.1"), "v1.0.0")
    );

    a.c.kill9();
    b.wait_metric(
        "rollwatch_leader",
        1.0,
        TAKEOVER_BOUND + Duration::from_secs(5),
    );
    let again = http_post(b.api_port, path, Some(TOKEN), &firing).expect("b answers");
    assert_eq!(again.0, 200, "{again:?}");
    assert!(again.1.contains(r#""action":"duplicate""#), "{again:?}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(bed.rollbacks().len(), 1, "{:?}", bed.rollbacks());
    assert_eq!(bed.ups(), vec!["a"]);
    bed.d.assert_runs("v1.0.0");
}
