//! A whole canary deploy on the real test bed: the live version runs as the blue slot's compose
//! project behind HAProxy under ~50 req/s from a bounded loopback load generator; rollwatch
//! starts the new version as the green slot beside it, waits for its /health and for HAProxy to
//! see it up, then steps traffic to it while judging it against blue from HAProxy's counters.
//! A version failing a quarter of its requests is aborted and removed; a good one is promoted
//! with no failed request at the load generator.

mod harness;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harness::haproxy::{load_through, Haproxy};
use harness::slots::SlotBed;
use harness::*;
use rollwatch::analysis::MetricPolicy;
use rollwatch::canary::deploy::CanaryDeploy;
use rollwatch::canary::slots::SlotSite;
use rollwatch::config::CanaryConfig;
use rollwatch::probe::Prober;
use rollwatch::rollback::LocalRunner;
use rollwatch::traffic::haproxy::Haproxy as Driver;
use rollwatch::traffic::{Slot, TrafficDriver};

struct Bed {
    /// Held for its directory and its clean-up of the app's containers when dropped.
    _deployment: ComposeDeployment,
    site: SlotSite,
    h: Haproxy,
    driver: Driver,
    config: CanaryConfig,
}

/// v1.0.0 live in the blue slot at weight 100; green empty at weight 0.
async fn bed(prefix: &str, tags: &[&str]) -> Bed {
    let SlotBed { d, site, h } = SlotBed::start(prefix, "v1.0.0", tags).await;
    let driver = h.driver();
    let config = h.canary_config(Duration::from_secs(3));
    Bed {
        _deployment: d,
        site,
        h,
        driver,
        config,
    }
}

fn deploy<'a>(b: &'a Bed) -> CanaryDeploy<'a, Driver> {
    CanaryDeploy {
        site: &b.site,
        runner: Arc::new(LocalRunner::new(Duration::from_secs(120))),
        driver: &b.driver,
        config: &b.config,
        prober: Prober::new().expect("prober"),
        health_path: "/health".into(),
        policy: MetricPolicy {
            min_requests: 20.0,
            ..MetricPolicy::default()
        },
        interval: Duration::from_millis(500),
        start_within: Duration::from_secs(30),
        decide_within: Duration::from_secs(90),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_a_quarter_of_requests_is_aborted_and_removed_within_30_s() {
    let b = bed("cdbad", &["v1.6.0"]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load_through(b.h.port, 50, stop.clone());
    // The bad service's own request counter, kept while it runs (it is removed at the abort).
    let seen = Arc::new(AtomicU64::new(0));
    let (watch, done) = (seen.clone(), stop.clone());
    let green_port = b.site.port_of(Slot::Green);
    let counter = std::thread::spawn(move || {
        for _ in 0..1200 {
            if done.load(Ordering::Relaxed) {
                break;
            }
            if let Some(c) = demo_counters(green_port) {
                let requests: f64 = c
                    .split(',')
                    .nth(1)
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0.0);
                watch.store(requests as u64, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let (slot, outcome) = deploy(&b)
        .deploy(&(), Slot::Blue, "v1.0.0", "v1.6.0")
        .await
        .expect("the deploy ran");
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = traffic.join().expect("load");
    let _ = counter.join();
    let first = outcome.steps.first().expect("a first step").1;
    let out_after = outcome.ended_ms - first;
    eprintln!(
        "aborted {out_after} ms after the canary's first weight; {} requests reached it by its own counter; load ok {ok}, failed {failed}; {}",
        seen.load(Ordering::Relaxed),
        outcome.reason
    );
    assert_eq!(slot, Slot::Green);
    assert!(!outcome.promoted, "{}", outcome.reason);
    assert!(
        outcome.reason.contains("regressed (error_ratio)"),
        "{}",
        outcome.reason
    );
    assert!(out_after < 30_000, "{out_after} ms");
    let [blue, green] = b.driver.read().await.expect("reading");
    assert_eq!((blue.weight, green.weight), (100, 0));
    assert!(
        project_containers(&b.site.project_of(Slot::Green)).is_empty(),
        "the aborted slot's containers are removed"
    );
    assert!(health(b.site.port_of(Slot::Blue)).is_some_and(|h| h.contains("v1.0.0")));
    assert!(
        seen.load(Ordering::Relaxed) > 0,
        "the bad version took part of the traffic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_version_is_promoted_through_every_step_with_no_failed_request() {
    let b = bed("cdgood", &["v1.0.1"]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load_through(b.h.port, 50, stop.clone());
    let (slot, outcome) = deploy(&b)
        .deploy(&(), Slot::Blue, "v1.0.0", "v1.0.1")
        .await
        .expect("the deploy ran");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = traffic.join().expect("load");
    eprintln!(
        "promoted through {:?} in {} ms; load ok {ok}, failed {failed}",
        outcome.steps.iter().map(|s| s.0).collect::<Vec<_>>(),
        outcome.ended_ms - outcome.steps[0].1
    );
    assert_eq!(slot, Slot::Green);
    assert!(outcome.promoted, "{}", outcome.reason);
    assert_eq!(failed, 0, "failed requests at the load generator ({ok} ok)");
    let [blue, green] = b.driver.read().await.expect("reading");
    assert_eq!((blue.weight, green.weight), (0, 100));
    assert!(health(b.site.port_of(Slot::Green)).is_some_and(|h| h.contains("v1.0.1")));
}

/// The served-request count of the demo service on `port`, by its own counter.
fn served(port: u16) -> Option<u64> {
    let c = demo_counters(port)?;
    let requests: f64 = c.split(',').nth(1)?.parse().ok()?;
    Some(requests as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regression_during_the_hold_flips_all_traffic_back_to_the_held_slot() {
    let b = bed("cdflip", &["v1.0.1"]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load_through(b.h.port, 50, stop.clone());
    let d = deploy(&b);
    let (slot, outcome) = d
        .deploy(&(), Slot::Blue, "v1.0.0", "v1.0.1")
        .await
        .expect("the deploy ran");
    assert!(outcome.promoted, "{}", outcome.reason);
    let held = d.held(slot, outcome.ended_ms);
    assert_eq!((held.old, held.new), (Slot::Blue, Slot::Green));
    assert!(
        held.until_ms >= outcome.ended_ms + 600_000,
        "held for `hold`"
    );
    // Blue is held at weight 0 and still runs: the flip needs no container to start.
    assert!(health(b.site.port_of(Slot::Blue)).is_some_and(|h| h.contains("v1.0.0")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let blue_before = served(b.site.port_of(Slot::Blue)).expect("blue's counter");

    // A regression found later: everything back to blue by weight.
    let took = d.flip_back(&held).await.expect("flip back");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = traffic.join().expect("load");
    eprintln!(
        "flip back: weights changed in {} ms; load ok {ok}, failed {failed}",
        took.as_millis()
    );
    let [blue, green] = b.driver.read().await.expect("reading");
    assert_eq!((blue.weight, green.weight), (100, 0));
    assert!(
        served(b.site.port_of(Slot::Blue)).expect("blue's counter") > blue_before,
        "blue serves again"
    );
    assert!(
        project_containers(&b.site.project_of(Slot::Green)).is_empty(),
        "the regressed slot's containers are removed"
    );
    assert_eq!(failed, 0, "the flip failed requests ({ok} ok)");
}
