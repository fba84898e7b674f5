//! The light health server `scripts/bench scale` points every target at: answers
//! `GET /health?t=<n>` with `{"status":"ok"}` and records when each target's probe arrived, so
//! the benchmark reads probes/s, missed probes and probe-interval jitter from the receiving end,
//! where they are true whatever rollwatch thinks it did.
//!
//!   cargo run --release --example health_sink -- <port> <targets> <interval-ms> <seconds> <out.json>
//!
//! Counts the `seconds` that start [`WARM_UP_MS`] after the first probe arrives, then writes
//! the summary and exits.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;

#[derive(serde::Deserialize)]
struct Probe {
    t: usize,
}

/// Start-up (connecting, the first listing, every target's first round) is not steady state.
const WARM_UP_MS: u32 = 10_000;

struct Arrivals {
    start: Instant,
    /// Per target: arrival times (ms since start) within the window.
    seen: Vec<Vec<u32>>,
    /// The window: arrivals before `from_ms` or after `until_ms` are not counted.
    from_ms: Option<u32>,
    until_ms: u32,
}

type Shared = Arc<Mutex<Arrivals>>;

async fn health(State(s): State<Shared>, Query(p): Query<Probe>) -> &'static str {
    if let Ok(mut a) = s.lock() {
        let now = a.start.elapsed().as_millis() as u32;
        let from = *a.from_ms.get_or_insert(now + WARM_UP_MS);
        if now >= from && now <= a.until_ms.saturating_add(from) {
            if let Some(v) = a.seen.get_mut(p.t) {
                v.push(now);
            }
        }
    }
    r#"{"status":"ok"}"#
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    match args.get(i).and_then(|a| a.parse().ok()) {
        Some(v) => v,
        None => {
            eprintln!("health_sink: argument {i} ({what}) missing or invalid; usage: health_sink <port> <targets> <interval-ms> <seconds> <out.json>");
            std::process::exit(2);
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = arg(&args, 1, "port");
    let targets: usize = arg(&args, 2, "targets");
    let interval_ms: u32 = arg(&args, 3, "interval-ms");
    let seconds: u32 = arg(&args, 4, "seconds");
    let out: String = arg(&args, 5, "out.json");
    let shared: Shared = Arc::new(Mutex::new(Arrivals {
        start: Instant::now(),
        seen: vec![Vec::new(); targets],
        from_ms: None,
        until_ms: seconds * 1000,
    }));
    let app = Router::new()
        .route("/health", get(health))
        .with_state(shared.clone());
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("health_sink: cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    // Wait for the first probe, then for the window to pass; give up after 10 minutes.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let done = shared
            .lock()
            .map(|a| {
                a.from_ms
                    .is_some_and(|f| a.start.elapsed().as_millis() as u32 > f + a.until_ms + 500)
            })
            .unwrap_or(true);
        if done || Instant::now() > deadline {
            break;
        }
    }
    server.abort();
    let summary = match shared.lock() {
        Ok(a) => summarize(&a.seen, interval_ms, seconds, a.from_ms.unwrap_or(0)),
        Err(_) => "{}".into(),
    };
    if let Err(e) = std::fs::write(&out, summary) {
        eprintln!("health_sink: cannot write {out}: {e}");
        std::process::exit(1);
    }
}

/// probes/s, targets never probed, missed probes (gaps longer than 1.5 intervals count the
/// intervals they skipped), and the p99 of |gap − interval| in ms; and the missed probes by
/// 5 s of the window in which their gap began, to tell a start-up tail or one stall from a
/// steady loss.
fn summarize(seen: &[Vec<u32>], interval_ms: u32, seconds: u32, from_ms: u32) -> String {
    let mut by_5s = vec![0u64; (seconds / 5 + 1) as usize];
    let total: usize = seen.iter().map(Vec::len).sum();
    let never = seen.iter().filter(|v| v.is_empty()).count();
    let mut missed = 0u64;
    let mut deviations: Vec<u32> = Vec::with_capacity(total);
    for v in seen {
        for w in v.windows(2) {
            let gap = w[1].saturating_sub(w[0]);
            deviations.push(gap.abs_diff(interval_ms));
            if gap * 2 > interval_ms * 3 {
                let n = u64::from((gap + interval_ms / 2) / interval_ms - 1);
                missed += n;
                let bucket = (w[0].saturating_sub(from_ms) / 5000) as usize;
                if let Some(b) = by_5s.get_mut(bucket) {
                    *b += n;
                }
            }
        }
    }
    deviations.sort_unstable();
    let p = |q: f64| {
        deviations
            .get(((deviations.len() as f64 * q) as usize).min(deviations.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    format!(
        r#"{{"probes": {total}, "probes_per_s": {:.1}, "never_probed": {never}, "missed": {missed}, "jitter_p50_ms": {}, "jitter_p99_ms": {}, "jitter_max_ms": {}, "missed_by_5s": {:?}}}"#,
        total as f64 / f64::from(seconds.max(1)),
        p(0.5),
        p(0.99),
        deviations.last().copied().unwrap_or(0),
        by_5s
    )
}
