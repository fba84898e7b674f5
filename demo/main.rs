//! The demo service rollwatch watches in the demo, the tests and the benchmarks: `GET /health`,
//! `GET /metrics` (Prometheus text) and `GET /` (the work), with a fault chosen by environment:
//!
//! - `DEMO_PORT` (default 8080), `DEMO_BIND` (default 127.0.0.1), `DEMO_VERSION` (shown in /health)
//! - `DEMO_FAULT`: comma-separated `none`, `health-down`, `error-ratio=<p>`, `crash-after=<secs>`,
//!   `latency-ms=<ms>`.
//! - `DEMO_ERROR_SERIES`: `eager` (default: the 5xx series is exposed at 0 from the start) or
//!   `lazy` (no 5xx series until the first 5xx, as most client libraries do with labelled
//!   counters: what a metrics source must read as 0 errors, not as missing data).
//!
//! It exits at once on SIGTERM: as PID 1 in a container a process without a handler ignores the
//! signal, and every compose recreate would then wait out the 10 s stop timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

#[derive(Debug, Default, Clone)]
struct Fault {
    health_down: bool,
    error_ratio: f64,
    crash_after: Option<Duration>,
    latency: Duration,
}

fn parse_fault(spec: &str) -> Result<Fault, String> {
    let mut f = Fault::default();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let num = || {
            value
                .parse::<f64>()
                .map_err(|_| format!("DEMO_FAULT {part:?}: {value:?} is not a number"))
        };
        match key {
            "none" => {}
            "health-down" => f.health_down = true,
            "error-ratio" => f.error_ratio = num()?.clamp(0.0, 1.0),
            "crash-after" => f.crash_after = Some(Duration::from_secs_f64(num()?.max(0.0))),
            "latency-ms" => f.latency = Duration::from_secs_f64(num()?.max(0.0) / 1000.0),
            _ => return Err(format!("DEMO_FAULT {part:?}: unknown fault (none, health-down, error-ratio=p, crash-after=s, latency-ms=n)")),
        }
    }
    Ok(f)
}

/// Upper bounds of the request-duration histogram, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

struct App {
    version: String,
    fault: Fault,
    /// The 5xx series appears only once a 5xx happened.
    lazy_errors: bool,
    ok: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    rng: AtomicU64,
}

impl App {
    /// xorshift64: errors are spread evenly without a crate or a lock.
    fn next_unit(&self) -> f64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if s <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

async fn work(State(app): State<Arc<App>>) -> impl IntoResponse {
    let started = Instant::now();
    if !app.fault.latency.is_zero() {
        tokio::time::sleep(app.fault.latency).await;
    }
    let fail = app.fault.error_ratio > 0.0 && app.next_unit() < app.fault.error_ratio;
    app.observe(started.elapsed());
    if fail {
        app.errors.fetch_add(1, Ordering::Relaxed);
        (StatusCode::INTERNAL_SERVER_ERROR, "injected error\n")
    } else {
        app.ok.fetch_add(1, Ordering::Relaxed);
        (StatusCode::OK, "done\n")
    }
}

async fn health(State(app): State<Arc<App>>) -> impl IntoResponse {
    let (code, status) = if app.fault.health_down {
        (StatusCode::SERVICE_UNAVAILABLE, "down")
    } else {
        (StatusCode::OK, "ok")
    };
    (
        code,
        [("content-type", "application/json")],
        format!(
            "{{\"status\":\"{status}\",\"version\":\"{}\"}}",
            app.version
        ),
    )
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let mut out = String::new();
    out.push_str("# HELP http_requests_total Requests to / by status code.\n# TYPE http_requests_total counter\n");
    out.push_str(&format!(
        "http_requests_total{{code=\"200\"}} {}\n",
        app.ok.load(Ordering::Relaxed)
    ));
    let errors = app.errors.load(Ordering::Relaxed);
    if errors > 0 || !app.lazy_errors {
        out.push_str(&format!("http_requests_total{{code=\"500\"}} {errors}\n"));
    }
    out.push_str("# HELP http_request_duration_seconds Time to serve /.\n# TYPE http_request_duration_seconds histogram\n");
    for (i, le) in BUCKETS.iter().enumerate() {
        out.push_str(&format!(
            "http_request_duration_seconds_bucket{{le=\"{le}\"}} {}\n",
            app.buckets[i].load(Ordering::Relaxed)
        ));
    }
    let count = app.count.load(Ordering::Relaxed);
    out.push_str(&format!(
        "http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}\n"
    ));
    out.push_str(&format!(
        "http_request_duration_seconds_sum {}\n",
        app.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    ));
    out.push_str(&format!("http_request_duration_seconds_count {count}\n"));
    out.push_str(&format!(
        "# TYPE demo_build_info gauge\ndemo_build_info{{version=\"{}\"}} 1\n",
        app.version
    ));
    ([("content-type", "text/plain; version=0.0.4")], out)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let fault = match parse_fault(&var("DEMO_FAULT", "none")) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("demo: {e}");
            std::process::exit(2);
        }
    };
    let addr = format!(
        "{}:{}",
        var("DEMO_BIND", "127.0.0.1"),
        var("DEMO_PORT", "8080")
    );
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let app = Arc::new(App {
        version: var("DEMO_VERSION", "dev"),
        fault: fault.clone(),
        lazy_errors: match var("DEMO_ERROR_SERIES", "eager").as_str() {
            "eager" => false,
            "lazy" => true,
            other => {
                eprintln!("demo: DEMO_ERROR_SERIES {other:?}: use eager or lazy");
                std::process::exit(2);
            }
        },
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        buckets: Default::default(),
        count: AtomicU64::new(0),
        sum_micros: AtomicU64::new(0),
        rng: AtomicU64::new(seed),
    });
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("demo {} listening on {addr}, fault {fault:?}", app.version);
    let router = Router::new()
        .route("/", get(work))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(app);
    if let Some(after) = fault.crash_after {
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            eprintln!("demo: injected crash");
            std::process::exit(3);
        });
    }
    tokio::spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        std::process::exit(0);
    });
    if let Err(e) = axum::serve(listener, router).await {
        eprintln!("demo: server error: {e}");
        std::process::exit(1);
    }
}
