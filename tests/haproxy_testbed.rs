//! The HAProxy test bed the canary driver is tested against behaves as the driver assumes:
//! weights set over the Runtime API move traffic between two slots at once, and the per-slot
//! counters of `show stat` and of the Prometheus exporter agree with what the slots themselves
//! served. Fails (never skips) when haproxy is not installed.

mod harness;

use harness::haproxy::{exporter_value, Haproxy, SlotServer};
use harness::http_get;
use std::time::{Duration, Instant};

/// Sends `n` GETs through the frontend one after another; returns how many answered 200 and
/// 500. Every request must be answered by a slot: a 502/503 or no answer fails the test.
fn send(port: u16, n: usize) -> (u64, u64) {
    let (mut ok, mut err) = (0, 0);
    for i in 0..n {
        match http_get(port, &format!("/work?i={i}")) {
            Some((200, _)) => ok += 1,
            Some((500, _)) => err += 1,
            other => panic!("request {i} through haproxy answered {other:?}"),
        }
    }
    (ok, err)
}

fn set(h: &Haproxy, cmd: &str) {
    assert_eq!(h.runtime(cmd), "\n", "`{cmd}` should answer a blank line");
}

#[test]
fn weights_route_traffic_and_counters_match_what_the_slots_served() {
    let blue = SlotServer::start(0);
    let green = SlotServer::start(1);
    let h = Haproxy::start(&[("blue", blue.port, 1), ("green", green.port, 0)]);
    h.wait_server_up("blue", Duration::from_secs(10));
    h.wait_server_up("green", Duration::from_secs(10));

    // Weight 0: green is UP but gets nothing.
    assert_eq!(send(h.port, 100), (100, 0));
    assert_eq!((blue.served(), green.served()), (100, 0));
    assert_eq!(h.counter("blue", "hrsp_2xx"), 100);
    assert_eq!(h.counter("green", "stot"), 0);

    set(&h, "set server be/green weight 1");
    set(&h, "set server be/blue weight 1");
    assert!(h
        .runtime("get weight be/green")
        .starts_with("1 (initial 0)"));
    let changed = Instant::now();
    let mut sent = 0;
    while green.served() == 0 {
        assert!(
            sent < 10,
            "green got none of {sent} requests after weight 1"
        );
        send(h.port, 1);
        sent += 1;
    }
    eprintln!(
        "weight change: first request on green {:?} after the command ({sent} requests)",
        changed.elapsed()
    );

    let before = (blue.served(), green.served());
    let (ok, err) = send(h.port, 200);
    assert_eq!(ok + err, 200);
    let (b, g) = (blue.served() - before.0, green.served() - before.1);
    assert!(
        b > 0 && g > 0,
        "both slots serve at weights 1/1: blue {b}, green {g}"
    );
    assert_eq!((ok, err), (b, g), "blue answers 200, green 500");
    assert_eq!(h.counter("green", "hrsp_5xx"), green.served());
    assert_eq!(h.counter("blue", "hrsp_2xx"), blue.served());
    assert_eq!(h.counter("green", "hrsp_2xx"), 0);

    // MAINT: green keeps its weight but is out of rotation at once.
    set(&h, "set server be/green state maint");
    assert!(h.server_stat("green")["status"].starts_with("MAINT"));
    let green_before = green.served();
    assert_eq!(send(h.port, 50), (50, 0));
    assert_eq!(
        green.served(),
        green_before,
        "no request reaches green in MAINT"
    );

    let metrics = h.metrics();
    let labels = |server, code| [("proxy", "be"), ("server", server), ("code", code)];
    let total = "haproxy_server_http_responses_total";
    assert_eq!(
        exporter_value(&metrics, total, &labels("green", "5xx")),
        Some(green.served() as f64),
        "exporter's green 5xx"
    );
    assert_eq!(
        exporter_value(&metrics, total, &labels("blue", "2xx")),
        Some(blue.served() as f64),
        "exporter's blue 2xx"
    );
}

#[test]
fn runtime_api_answers_as_the_canary_driver_reads_them() {
    let blue = SlotServer::start(0);
    let green = SlotServer::start(0);
    let h = Haproxy::start(&[("blue", blue.port, 1), ("green", green.port, 0)]);
    h.wait_server_up("green", Duration::from_secs(10));

    set(&h, "set server be/green weight 10");
    assert_eq!(h.runtime("get weight be/green"), "10 (initial 0)\n\n");

    set(&h, "set server be/green state drain");
    assert!(h.server_stat("green")["status"].starts_with("DRAIN"));
    set(&h, "set server be/green state maint");
    assert!(h.server_stat("green")["status"].starts_with("MAINT"));
    // A weight set in MAINT is kept, but `show stat`'s weight column still shows the weight at
    // the time MAINT began: the driver reads `get weight` or `uweight` instead.
    set(&h, "set server be/green weight 5");
    assert_eq!(h.runtime("get weight be/green"), "5 (initial 0)\n\n");
    let row = h.server_stat("green");
    assert_eq!(
        (row["weight"].as_str(), row["uweight"].as_str()),
        ("10", "5")
    );
    let uweight = exporter_value(
        &h.metrics(),
        "haproxy_server_uweight",
        &[("proxy", "be"), ("server", "green")],
    );
    assert_eq!(uweight, Some(5.0));

    let ready = Instant::now();
    set(&h, "set server be/green state ready");
    eprintln!(
        "status right after ready: {:?}",
        h.server_stat("green")["status"]
    );
    h.wait_server_up("green", Duration::from_secs(10));
    eprintln!("ready -> UP after {:?}", ready.elapsed());

    send(h.port, 11);
    assert_eq!(blue.served() + green.served(), 11);
    assert!(h.counter("green", "stot") > 0);
    set(&h, "clear counters all");
    assert_eq!(h.counter("green", "stot"), 0);
    assert_eq!(h.counter("blue", "hrsp_2xx"), 0);

    let state = h.runtime("show servers state be");
    eprintln!("show servers state be:\n{state}");
    assert!(state.lines().any(|l| l.contains(" green ")), "{state}");
}
