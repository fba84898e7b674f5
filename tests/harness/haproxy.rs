//! A real HAProxy (Debian's 2.6, installed by scripts/setup) in front of loopback "slots", the
//! shape rollwatch's canary driver meets in production: one backend `be` with one server per
//! slot, weights and states changed through the Runtime API, per-slot counters read back from
//! `show stat` and the Prometheus exporter. Each `Haproxy` is its own daemon with its own
//! config, socket and ports in a tempdir; the packaged system service is never used.

use super::{free_port, wait_for};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Daemonizing takes about 60 ms here; a loaded 2-core machine running other tests is slower.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// One Runtime API exchange; the socket answers in microseconds when HAProxy is alive.
const RUNTIME_TIMEOUT: Duration = Duration::from_secs(5);
/// Time SIGTERM gets before SIGKILL on drop.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Haproxy {
    /// The traffic frontend, routing to backend `be`.
    pub port: u16,
    /// The frontend serving the Prometheus exporter on `/metrics`.
    pub metrics_port: u16,
    /// The Runtime API (admin level).
    pub socket: PathBuf,
    /// Taken from the pidfile once the daemon is up; `None` only if start failed midway.
    pid: Option<i32>,
    dir: tempfile::TempDir,
    /// The ports of the first two servers (the blue and the green slot).
    slot_ports: [u16; 2],
}

impl Haproxy {
    /// Starts HAProxy with one server per slot, `(name, port on 127.0.0.1, initial weight)`, and
    /// returns once the Runtime API answers and the frontends accept. Panics with the cause
    /// (haproxy missing, config refused, no pidfile) rather than letting a test skip.
    pub fn start(slots: &[(&str, u16, u32)]) -> Haproxy {
        let dir = tempfile::Builder::new()
            .prefix("rw-haproxy")
            .tempdir()
            .expect("temp dir");
        let socket = dir.path().join("haproxy.sock");
        let (port, metrics_port) = (free_port(), free_port());
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, config(&socket, port, metrics_port, slots)).expect("write config");
        let pidfile = dir.path().join("haproxy.pid");
        let out = dir.path().join("haproxy.out");
        let started = Instant::now();
        let mut launcher = Command::new(binary())
            .arg("-f")
            .arg(&cfg)
            .arg("-D")
            .arg("-p")
            .arg(&pidfile)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("create output file"))
            .stderr(std::fs::File::create(dir.path().join("haproxy.err")).expect("create"))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run haproxy ({e}): install it with scripts/setup (Debian's haproxy)")
            });
        // The launcher exits once the daemon has forked; it is our child, so it is reaped here.
        let status = loop {
            if let Some(s) = launcher.try_wait().expect("wait for haproxy launcher") {
                break s;
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = launcher.kill();
                let _ = launcher.wait();
                panic!("haproxy did not daemonize within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let err = std::fs::read_to_string(dir.path().join("haproxy.err")).unwrap_or_default();
        assert!(
            status.success(),
            "haproxy refused to start ({status}):\n{err}"
        );
        let slot_port = |i: usize| slots.get(i).map_or(0, |s| s.1);
        let mut h = Haproxy {
            slot_ports: [slot_port(0), slot_port(1)],
            port,
            metrics_port,
            socket,
            pid: None,
            dir,
        };
        h.pid = Some(wait_for(START_TIMEOUT, "haproxy's pidfile", || {
            std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        }));
        wait_for(START_TIMEOUT, "haproxy's Runtime API", || {
            h.try_runtime("show info").filter(|a| a.contains("Pid:"))
        });
        for p in [port, metrics_port] {
            wait_for(START_TIMEOUT, "haproxy's frontends", || {
                std::net::TcpStream::connect(("127.0.0.1", p)).ok()
            });
        }
        eprintln!("haproxy: up in {:?}", started.elapsed());
        h
    }

    /// Sends one Runtime API command and returns HAProxy's whole answer (a blank line `"\n"`
    /// for a `set` that succeeded). Panics if the socket does not answer in time.
    pub fn runtime(&self, cmd: &str) -> String {
        self.try_runtime(cmd)
            .unwrap_or_else(|| panic!("haproxy's Runtime API did not answer {cmd:?}"))
    }

    fn try_runtime(&self, cmd: &str) -> Option<String> {
        let mut s = UnixStream::connect(&self.socket).ok()?;
        s.set_read_timeout(Some(RUNTIME_TIMEOUT)).ok()?;
        s.set_write_timeout(Some(RUNTIME_TIMEOUT)).ok()?;
        s.write_all(format!("{cmd}\n").as_bytes()).ok()?;
        // Non-interactive mode: HAProxy closes the connection after one answer.
        let mut answer = String::new();
        s.read_to_string(&mut answer).ok()?;
        Some(answer)
    }

    /// `show stat`, one map per row, keyed by the CSV header's column names (`pxname`,
    /// `svname`, `status`, `stot`, `hrsp_5xx`, ...).
    pub fn stat(&self) -> Vec<BTreeMap<String, String>> {
        let text = self.runtime("show stat");
        let mut lines = text.lines();
        let header: Vec<&str> = lines
            .next()
            .and_then(|h| h.strip_prefix("# "))
            .unwrap_or_else(|| panic!("`show stat` without its header: {text:?}"))
            .split(',')
            .collect();
        lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                header
                    .iter()
                    .zip(l.split(','))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect()
    }

    /// Server `name`'s row of backend `be` in `show stat`.
    pub fn server_stat(&self, name: &str) -> BTreeMap<String, String> {
        self.stat()
            .into_iter()
            .find(|r| r["pxname"] == "be" && r["svname"] == name)
            .unwrap_or_else(|| panic!("no server be/{name} in `show stat`"))
    }

    /// One numeric `show stat` column of server `name` (`stot`, `hrsp_2xx`, `econ`, ...); an
    /// empty cell reads 0.
    pub fn counter(&self, name: &str, column: &str) -> u64 {
        let row = self.server_stat(name);
        let cell = row
            .get(column)
            .unwrap_or_else(|| panic!("no column {column} in `show stat`"));
        if cell.is_empty() {
            return 0;
        }
        cell.parse()
            .unwrap_or_else(|_| panic!("be/{name} {column} is not a number: {cell:?}"))
    }

    /// Waits until health checks see server `name` UP (`UP`, or `UP 1/3` right after `state
    /// ready` while checks are still rising).
    pub fn wait_server_up(&self, name: &str, within: Duration) {
        wait_for(within, &format!("haproxy server be/{name} UP"), || {
            self.server_stat(name)["status"]
                .starts_with("UP")
                .then_some(())
        });
    }

    /// One scrape of the Prometheus exporter's `/metrics`.
    pub fn metrics(&self) -> String {
        match super::http_get(self.metrics_port, "/metrics") {
            Some((200, body)) => body,
            other => panic!("haproxy's exporter answered {other:?}"),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The value of the exporter sample `name` whose labels include every `(label, value)` given.
pub fn exporter_value(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix('{')?;
        let (set, value) = rest.split_once('}')?;
        labels
            .iter()
            .all(|(k, v)| set.split(',').any(|p| p == format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())?
    })
}

/// Health checks every 500 ms, down after 2 failures, up after 1 success: the canary driver's
/// tests see a slot's state change within about a second. No `retry-on` or `option
/// redispatch`: they would resend a request a failing slot refused, hiding its errors.
fn config(socket: &Path, port: u16, metrics_port: u16, slots: &[(&str, u16, u32)]) -> String {
    let servers: String = slots
        .iter()
        .map(|(name, p, w)| {
            format!("    server {name} 127.0.0.1:{p} weight {w} check inter 500ms fall 2 rise 1\n")
        })
        .collect();
    format!(
        "global
    stats socket {socket} mode 600 level admin

defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s

frontend traffic
    bind 127.0.0.1:{port}
    default_backend be

backend be
    option httpchk GET /health
{servers}
frontend metrics
    bind 127.0.0.1:{metrics_port}
    http-request use-service prometheus-exporter if {{ path /metrics }}
",
        socket = socket.display()
    )
}

/// Debian installs haproxy in /usr/sbin, which a non-login PATH may lack.
fn binary() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/haproxy");
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from("haproxy")
    }
}

/// Alive and still ours: the daemon was reparented, so once dead it may linger as a zombie
/// until init reaps it, and its pid could be reused afterwards.
fn is_our_haproxy(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, s)| s.trim().chars().next());
    state != Some('Z') && stat.contains("(haproxy)")
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let Some(pid) = self.pid else { return };
        if !is_our_haproxy(pid) {
            return;
        }
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while is_our_haproxy(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if is_our_haproxy(pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// A loopback HTTP server standing in for one slot's container. `/health` always answers 200 (so
/// health checks keep it UP); other requests are counted, health checks not, and every
/// `fail_every`-th of them answers 500 (0: none, 1: all, 4: a quarter).
pub struct SlotServer {
    pub port: u16,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl SlotServer {
    pub fn start(fail_every: u64) -> SlotServer {
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
                        std::thread::spawn(move || answer(conn, fail_every, &count));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        SlotServer {
            port,
            served,
            stop,
            accept: Some(accept),
        }
    }

    /// Requests answered, health checks not counted.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for SlotServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Reads one request head and answers it, counting it before the answer leaves so a client that
/// has its answer always sees the count.
fn answer(mut conn: TcpStream, fail_every: u64, served: &AtomicU64) {
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
        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
        if fail_every > 0 && n.is_multiple_of(fail_every) {
            (500, r#"{"status":"error"}"#)
        } else {
            (200, r#"{"status":"ok"}"#)
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

/// Requests through the frontend at about `per_s` until `stop` (bounded to two minutes);
/// returns (answered 2xx, answered otherwise or not at all).
pub fn load_through(
    port: u16,
    per_s: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match super::http_get(port, "/") {
                Some((200, _)) => ok += 1,
                _ => failed += 1,
            }
            std::thread::sleep(Duration::from_millis(1000 / per_s));
        }
        (ok, failed)
    })
}

impl Haproxy {
    /// rollwatch's driver for this instance's backend `be` with slots `blue` and `green`.
    pub fn driver(&self) -> rollwatch::traffic::haproxy::Haproxy {
        rollwatch::traffic::haproxy::Haproxy {
            socket: self.socket.clone(),
            backend: "be".into(),
            servers: ["blue".into(), "green".into()],
        }
    }

    /// Canary settings on this instance: steps 10/50/100 %, each at least `step_min` and 20
    /// requests.
    pub fn canary_config(&self, step_min: Duration) -> rollwatch::config::CanaryConfig {
        rollwatch::config::CanaryConfig {
            traffic: rollwatch::config::TrafficConfig::Haproxy {
                socket: self.socket.clone(),
                backend: "be".into(),
                servers: ["blue".into(), "green".into()],
            },
            steps: vec![10, 50, 100],
            step_min,
            step_min_requests: 20,
            hold: Duration::from_secs(600),
            ports: self.slot_ports,
            port_var: "APP_PORT".into(),
        }
    }
}
