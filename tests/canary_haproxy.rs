//! The canary driver and judge against a real HAProxy: under steady load, a canary slot failing
//! a quarter of its requests gets a tenth of the traffic by weight, is judged regressed from
//! HAProxy's own per-slot counters beside the live slot, and is taken out in one weight change.
//! (The deploy flow that starts slots as compose projects is not built yet: issue 17.)

mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::haproxy::{Haproxy, SlotServer};
use harness::http_get;
use rollwatch::analysis::{MetricPolicy, MetricVerdict};
use rollwatch::canary::judge::CanaryJudge;
use rollwatch::store::Trigger;
use rollwatch::traffic::haproxy::Haproxy as Driver;
use rollwatch::traffic::{Slot, TrafficDriver};

/// Requests through the frontend at about `per_s` until `stop` (bounded to two minutes);
/// returns (answered 2xx, answered otherwise or not at all).
fn load(port: u16, per_s: u64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match http_get(port, "/work") {
                Some((200, _)) => ok += 1,
                _ => failed += 1,
            }
            std::thread::sleep(Duration::from_millis(1000 / per_s));
        }
        (ok, failed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_a_quarter_of_its_requests_is_judged_from_haproxy_and_taken_out() {
    let live = SlotServer::start(0);
    let canary = SlotServer::start(4);
    let h = Haproxy::start(&[("blue", live.port, 100), ("green", canary.port, 0)]);
    h.wait_server_up("blue", Duration::from_secs(10));
    h.wait_server_up("green", Duration::from_secs(10));
    let driver = Driver {
        socket: h.socket.clone(),
        backend: "be".into(),
        servers: ["blue".into(), "green".into()],
    };
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(h.port, 50, stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(canary.served(), 0, "weight 0 sends the canary nothing");

    let policy = MetricPolicy {
        min_requests: 40.0,
        ..MetricPolicy::default()
    };
    let mut judge = CanaryJudge::new(policy, "v1", "v2", Slot::Green);
    judge.observe(&driver.read().await.expect("first reading"));
    driver
        .set_weights(&[(Slot::Blue, 90), (Slot::Green, 10)])
        .await
        .expect("a tenth to the canary");
    let weighted = Instant::now();
    let verdict = loop {
        assert!(
            weighted.elapsed() < Duration::from_secs(60),
            "no verdict in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let slots = driver.read().await.expect("reading");
        assert_eq!((slots[0].weight, slots[1].weight), (90, 10));
        if let Some(v @ MetricVerdict::Regressed { .. }) = judge.observe(&slots) {
            break v;
        }
    };
    driver
        .set_weights(&[(Slot::Blue, 100), (Slot::Green, 0)])
        .await
        .expect("abort: all back to the live slot");
    let out_after = weighted.elapsed();
    let reached = canary.served();
    eprintln!(
        "canary weighted for {:.1} s, {reached} requests reached it; verdict: {verdict:?}",
        out_after.as_secs_f64()
    );
    match &verdict {
        MetricVerdict::Regressed { trigger, evidence } => {
            assert_eq!(*trigger, Trigger::ErrorRatio, "{evidence}");
            assert!(evidence.contains("side by side"), "{evidence}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        out_after < Duration::from_secs(30),
        "{out_after:?} from weight to abort"
    );
    assert!(reached > 0, "the canary served part of the traffic");

    // Out by weight: nothing more reaches it, the live slot serves everything.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = canary.served();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        canary.served(),
        before,
        "traffic reached the canary after the abort"
    );
    let slots = driver.read().await.expect("reading");
    assert_eq!((slots[0].weight, slots[1].weight), (100, 0));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = traffic.join().expect("load");
    // Every failed request the load saw was one of the canary's 500s, nothing else.
    let canary_errors = canary.served() / 4;
    assert_eq!(
        failed, canary_errors,
        "failed {failed}, canary 500s {canary_errors}, ok {ok}"
    );
}
