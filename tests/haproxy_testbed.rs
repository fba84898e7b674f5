//! The HAProxy test bed the canary driver is tested against behaves as the driver assumes:
//! weights set over the Runtime API move traffic between two slots at once, and the per-slot
//! counters of `show stat` and of the Prometheus exporter agree with what the slots themselves
//! served. Fails (never skips) when haproxy is not installed.

mod harness;

use harness::haproxy::{exporter_value, Haproxy};
use harness::http_get;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A loopback HTTP server standing in for one slot's container. `/health` always answers 200 (so
/// health checks keep it UP); other paths answer `status` and are counted, health checks not.
struct Slot {
    port: u16,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Slot {
    fn start(status: u16) -> Slot {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a slot");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("slot address").port();
        let served = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, flag) = (served.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            // Bounded like every loop of the test bed: ten minutes whatever the test does.
            let deadline = Instant::now() + Duration::from_secs(600);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let count = count.clone();
                        std::thread::spawn(move || answer(conn, status, &count));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Slot {
            port,
            served,
            stop,
            accept: Some(accept),
        }
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Reads one request head and answers it, counting it before the answer leaves so a client that
/// has its answer always sees the count.
fn answer(mut conn: TcpStream, status: u16, served: &AtomicU64) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let path = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let (code, body) = if path == "/health" {
        (200, r#"{"status":"ok"}"#)
    } else {
        served.fetch_add(1, Ordering::SeqCst);
        match status {
            200 => (200, r#"{"status":"ok"}"#),
            _ => (status, r#"{"status":"error"}"#),
        }
    };
    let reason = if code == 200 { "OK" } else { "Error" };
    let _ = conn.write_all(
        format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

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
    let blue = Slot::start(200);
    let green = Slot::start(500);
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
    let blue = Slot::start(200);
    let green = Slot::start(200);
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
