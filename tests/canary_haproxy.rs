//! Canary steps on a real HAProxy under steady load (about 50 req/s from a bounded loopback
//! generator): a version failing a quarter of its requests is judged from HAProxy's own per-slot
//! counters beside the live slot and taken out in one weight change; a good version is promoted
//! through every step without one failed request. (The new version is started by the test, not
//! yet by rollwatch as a compose project: issue 17.)

mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harness::haproxy::{load_through, Haproxy, SlotServer};
use rollwatch::analysis::MetricPolicy;
use rollwatch::canary::flow::{self, Outcome};
use rollwatch::canary::judge::CanaryJudge;
use rollwatch::traffic::{Slot, TrafficDriver};

/// What one canary run through HAProxy did.
struct Run {
    outcome: Outcome,
    live: SlotServer,
    canary: SlotServer,
    /// The weights (live, canary) HAProxy reports after the decision.
    weights: (u32, u32),
    /// Requests each slot (live, canary) served in the 1.5 s after the decision.
    after: (u64, u64),
    /// (answered 2xx, failed) at the load generator, from before the first weight to the end.
    load: (u64, u64),
}

/// The live slot (blue) serves everything at first; the canary (green) fails every
/// `fail_every`-th request (0: none). Steps 10/50/100 %, 2 s and 20 requests each at least.
async fn canary_run(fail_every: u64) -> Run {
    let live = SlotServer::start(0);
    let canary = SlotServer::start(fail_every);
    let h = Haproxy::start(&[("blue", live.port, 100), ("green", canary.port, 0)]);
    h.wait_server_up("blue", Duration::from_secs(10));
    h.wait_server_up("green", Duration::from_secs(10));
    let driver = h.driver();
    let config = h.canary_config(Duration::from_secs(2));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load_through(h.port, 50, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(canary.served(), 0, "weight 0 sends the canary nothing");
    let policy = MetricPolicy {
        min_requests: 20.0,
        ..MetricPolicy::default()
    };
    let mut judge = CanaryJudge::new(policy, "v1", "v2", Slot::Green);
    let outcome = flow::run(
        &driver,
        &(),
        &config,
        &mut judge,
        Slot::Green,
        Duration::from_millis(500),
        Duration::from_secs(60),
    )
    .await
    .expect("the canary ran");
    // Traffic after the last change, to see where it goes (a request in flight at the change
    // may still land: 200 ms of it are not counted).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = (live.served(), canary.served());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = (live.served() - before.0, canary.served() - before.1);
    let slots = driver.read().await.expect("final reading");
    let weights = (slots[0].weight, slots[1].weight);
    stop.store(true, Ordering::Relaxed);
    let load = traffic.join().expect("load");
    drop(h);
    Run {
        outcome,
        live,
        canary,
        weights,
        after,
        load,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_a_quarter_of_its_requests_is_aborted_by_weight_within_30_s() {
    let run = canary_run(4).await;
    let o = &run.outcome;
    let first_weight = o.steps.first().expect("a first step").1;
    let out_after = o.ended_ms - first_weight;
    eprintln!(
        "aborted {out_after} ms after the canary's first weight; {} requests reached it; steps {:?}; {}",
        run.canary.served(),
        o.steps.iter().map(|s| s.0).collect::<Vec<_>>(),
        o.reason
    );
    assert!(!o.promoted, "{}", o.reason);
    assert!(o.reason.contains("regressed (error_ratio)"), "{}", o.reason);
    assert!(
        out_after < 30_000,
        "{out_after} ms from first weight to abort"
    );
    let percents: Vec<u32> = o.steps.iter().map(|s| s.0).collect();
    assert_eq!(
        percents,
        [10],
        "a suspect canary got more than its first step"
    );
    // Every failed request at the load generator was one of the canary's 500s.
    let (ok, failed) = run.load;
    assert_eq!(failed, run.canary.served() / 4, "ok {ok}, failed {failed}");
    assert_eq!(run.weights, (100, 0));
    assert_eq!(run.after.1, 0, "traffic reached the canary after the abort");
    assert!(run.after.0 > 0 && run.live.served() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_version_is_promoted_through_every_step_without_a_failed_request() {
    let run = canary_run(0).await;
    let o = &run.outcome;
    eprintln!(
        "promoted after steps {:?} in {} ms; load {:?}; {}",
        o.steps.iter().map(|s| s.0).collect::<Vec<_>>(),
        o.ended_ms - o.steps[0].1,
        run.load,
        o.reason
    );
    assert!(o.promoted, "{}", o.reason);
    assert_eq!(
        o.steps.iter().map(|s| s.0).collect::<Vec<_>>(),
        [10, 50, 100]
    );
    assert_eq!(run.load.1, 0, "failed requests at the load generator");
    assert!(
        run.canary.served() > 40,
        "the canary took part of the traffic"
    );
    assert_eq!(run.weights, (0, 100));
    assert_eq!(
        run.after.0, 0,
        "traffic reached the old slot after the promotion"
    );
}
