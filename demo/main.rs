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
//!
//! `--probe <url>` (`http://host[:port]/path`) serves nothing: it GETs the URL once and exits 0
//! when the answer is 200 with a JSON body whose `status` is `"ok"`, 1 otherwise (connect,
//! write and read each bounded by 2 s). The images have no shell and no curl, so this is the
//! container's own health check (Docker Swarm's `--health-cmd`, scripts/bench_swarm.py).

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

/// How long `--probe` waits to connect, to send and for each read of the answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `--probe <url>`: one GET of a plain `http://` URL. Ok when the status is 200 and the body is
/// JSON with `"status": "ok"`; the error says what was wrong.
fn probe(url: &str, timeout: Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let mut conn = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    conn.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        conn,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    // HTTP/1.0 with Connection: close: the answer ends when the server closes. A bounded read,
    // a health answer is small.
    let mut answer = Vec::new();
    conn.take(64 * 1024)
        .read_to_end(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| "no complete answer".to_string())?;
    let status_line = head.lines().next().unwrap_or_default();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(format!("answered {status_line:?}: {}", body.trim()));
    }
    let json: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("body is not JSON ({e}): {body:?}"))?;
    match json.get("status").and_then(|s| s.as_str()) {
        Some("ok") => Ok(()),
        _ => Err(format!("status is not \"ok\": {}", body.trim())),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, url] if flag == "--probe" => match probe(url, PROBE_TIMEOUT) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("demo --probe {url}: {e}");
                std::process::exit(1);
            }
        },
        // Other arguments are ignored, as they always were: tests start the demo with some to
        // check that a recreated container keeps its command.
        _ => serve(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn serve() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A one-connection server on a loopback port answering `answer` (None: never answers).
    fn serve_once(answer: Option<&'static str>) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            // The whole request head before answering: closing after a partial read makes the
            // probe's next write fail with a broken pipe (seen once under load).
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            match answer {
                Some(a) => {
                    let _ = conn.write_all(a.as_bytes());
                }
                None => std::thread::sleep(Duration::from_secs(3)),
            }
        });
        format!("http://127.0.0.1:{port}/health")
    }

    #[test]
    fn probe_passes_only_200_with_status_ok() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"status\":\"ok\",\"version\":\"v1.0.0\"}";
        assert_eq!(probe(&serve_once(Some(ok)), PROBE_TIMEOUT), Ok(()));
        let down =
            "HTTP/1.1 503 Service Unavailable\r\n\r\n{\"status\":\"down\",\"version\":\"v1.1.0\"}";
        assert!(probe(&serve_once(Some(down)), PROBE_TIMEOUT)
            .unwrap_err()
            .contains("503"));
        let not_ok = "HTTP/1.1 200 OK\r\n\r\n{\"status\":\"down\"}";
        assert!(probe(&serve_once(Some(not_ok)), PROBE_TIMEOUT).is_err());
        let not_json = "HTTP/1.1 200 OK\r\n\r\nfine";
        assert!(probe(&serve_once(Some(not_json)), PROBE_TIMEOUT).is_err());
    }

    #[test]
    fn probe_fails_on_refused_silence_and_bad_urls() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        assert!(probe(&format!("http://127.0.0.1:{port}/health"), PROBE_TIMEOUT).is_err());
        let started = Instant::now();
        assert!(probe(&serve_once(None), Duration::from_millis(300)).is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(probe("https://127.0.0.1:1/health", PROBE_TIMEOUT).is_err());
    }

    /// The real server answers the probe: ok without a fault, not ok with health-down.
    #[test]
    fn probe_reads_the_demo_health_endpoint() {
        for (health_down, want_ok) in [(false, true), (true, false)] {
            let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = std_listener.local_addr().unwrap().port();
            std_listener.set_nonblocking(true).unwrap();
            let app = Arc::new(App {
                version: "v9".into(),
                fault: Fault {
                    health_down,
                    ..Fault::default()
                },
                lazy_errors: false,
                ok: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                buckets: Default::default(),
                count: AtomicU64::new(0),
                sum_micros: AtomicU64::new(0),
                rng: AtomicU64::new(1),
            });
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                    let router = Router::new().route("/health", get(health)).with_state(app);
                    let _ = axum::serve(listener, router).await;
                });
            });
            let url = format!("http://127.0.0.1:{port}/health");
            assert_eq!(
                probe(&url, PROBE_TIMEOUT).is_ok(),
                want_ok,
                "health_down={health_down}"
            );
        }
    }
}
