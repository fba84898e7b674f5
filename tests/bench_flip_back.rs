//! Issue 17's must-show 3 as a benchmark, not a test: after a promotion, a regression found
//! during the hold flips all traffic back to the held slot, and this measures how fast, beside
//! the replace strategy's rollback on the same machine in the same run. `#[ignore]`d and run by
//! `scripts/bench flip-back`, which appends the table to docs/BENCHMARKS.md; nothing here
//! asserts a time (a loaded 2-core machine would make such an assertion flaky, not wrong).
//!
//! "All traffic on the old version" is proven by HAProxy itself, not by the driver's answer:
//! `show stat` is read in a tight loop and the flip counts as done at the first reading from
//! which the new slot holds no session and takes no new one while the old slot takes requests.

mod harness;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use harness::haproxy::{load_through, Haproxy};
use harness::*;
use rollwatch::analysis::MetricPolicy;
use rollwatch::canary::deploy::CanaryDeploy;
use rollwatch::canary::slots::SlotSite;
use rollwatch::config::{CanaryConfig, Config};
use rollwatch::probe::Prober;
use rollwatch::registry::RegistryClient;
use rollwatch::rollback::{LocalRunner, RollbackRequest, Rollbacker};
use rollwatch::store::{RollbackState, Store, Trigger};
use rollwatch::tag::Tag;
use rollwatch::traffic::haproxy::Haproxy as Driver;
use rollwatch::traffic::Slot;

const ROUNDS: usize = 10;
/// The load the canary tests use: enough that a flip is seen within a few ms.
const LOAD_PER_S: u64 = 50;
/// Load before each verdict, so the window starts with traffic flowing to the new version.
const LEAD_IN: Duration = Duration::from_secs(1);
/// About one period of the sequential load generator (a request, then a 20 ms pause).
const LOAD_PERIOD_US: u32 = 22_000;
/// Watching after the flip returns: at ~45 req/s, a new slot whose `stot` stays put for a
/// second has been passed over by dozens of requests, so "stopped increasing" is evidence.
const SETTLE: Duration = Duration::from_secs(1);
/// Pause between two `show stat` exchanges (an exchange itself takes well under 1 ms).
const POLL_PAUSE: Duration = Duration::from_millis(1);
const OLD: &str = "v1.0.0";
const NEW: &str = "v1.0.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by `scripts/bench flip-back`"]
async fn flip_back_beside_replace_rollback() {
    let started = Instant::now();
    let flips = flip_rounds().await;
    let replaces = replace_rounds().await;
    let section = report(&flips, &replaces, started.elapsed());
    println!("\n{section}");
    if let Ok(path) = std::env::var("ROLLWATCH_BENCH_FILE") {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open the bench file");
        write!(f, "\n{section}").expect("append to the bench file");
    }
}

// ---- the flip-back side ----

/// One flip-back round, timed from the verdict (the call of `flip_back`).
struct Flip {
    /// `flip_back`'s own measure of its one weight-change exchange.
    weight: Duration,
    /// The first `show stat` reading with all traffic on the old slot; `None`: never seen.
    all_on_old: Option<Duration>,
    /// Until `flip_back` returned: the weight change and the new slot's containers removed.
    returned: Duration,
    /// Requests HAProxy sent to the new slot after the verdict (before the weights took).
    late_to_new: u64,
    /// Median time between two readings.
    poll_gap: Duration,
    load: Load,
    /// Failed requests at the load generator during the canary deploy before it.
    deploy_failed: u64,
}

/// Requests at the load generator: (answered 2xx, failed).
#[derive(Clone, Copy, Default)]
struct Load {
    ok: u64,
    failed: u64,
}

struct FlipBed {
    /// Held for its clean-up of the app's containers when dropped.
    _deployment: ComposeDeployment,
    site: SlotSite,
    h: Haproxy,
    driver: Driver,
    config: CanaryConfig,
}

/// v1.0.0 live in the blue slot at weight 100 behind HAProxy; green empty at weight 0. The
/// same shape as tests/canary_deploy.rs, with shorter steps: the steps are not measured here.
async fn flip_bed() -> FlipBed {
    let app = app_with_images("bflip", &[OLD, NEW]);
    let d = ComposeDeployment::up(&app, "staging", "backend", OLD);
    d.compose(&["down"]);
    let site = SlotSite {
        dir: d.dir(),
        project: d.project.clone(),
        env_file: ".env".into(),
        registry: format!("{REGISTRY}/{app}"),
        compose: vec!["docker-compose".into()],
        port_var: "APP_PORT".into(),
        ports: [free_port(), free_port()],
    };
    site.start(&runner(), Slot::Blue, OLD)
        .await
        .expect("blue slot");
    wait_healthy_version(site.port_of(Slot::Blue), OLD);
    let h = Haproxy::start(&[
        ("blue", site.port_of(Slot::Blue), 100),
        ("green", site.port_of(Slot::Green), 0),
    ]);
    h.wait_server_up("blue", Duration::from_secs(10));
    let driver = h.driver();
    let config = CanaryConfig {
        steps: vec![50, 100],
        step_min_requests: 10,
        ..h.canary_config(Duration::from_secs(1))
    };
    FlipBed {
        _deployment: d,
        site,
        h,
        driver,
        config,
    }
}

fn runner() -> Arc<dyn rollwatch::rollback::CommandRunner> {
    Arc::new(LocalRunner::new(Duration::from_secs(120)))
}

fn canary(b: &FlipBed) -> CanaryDeploy<'_, Driver> {
    CanaryDeploy {
        site: &b.site,
        runner: runner(),
        driver: &b.driver,
        config: &b.config,
        prober: Prober::new().expect("prober"),
        health_path: "/health".into(),
        policy: MetricPolicy {
            min_requests: 20.0,
            ..MetricPolicy::default()
        },
        interval: Duration::from_millis(250),
        start_within: Duration::from_secs(30),
        decide_within: Duration::from_secs(60),
    }
}

async fn flip_rounds() -> Vec<Flip> {
    let b = flip_bed().await;
    let mut flips = Vec::new();
    for round in 1..=ROUNDS {
        let f = flip_round(&b).await;
        eprintln!(
            "flip {round}: weight {} ms, all on old {}, returned {} ms, {} late to new, poll gap {} µs, load ok {} failed {} (deploy failed {})",
            ms(f.weight),
            f.all_on_old.map_or("never".into(), |d| format!("{} ms", ms(d))),
            ms(f.returned),
            f.late_to_new,
            f.poll_gap.as_micros(),
            f.load.ok,
            f.load.failed,
            f.deploy_failed
        );
        flips.push(f);
    }
    flips
}

/// Canary-deploys v1.0.1 into the idle slot, promotes it, then flips back to v1.0.0: each
/// round is a real version change, and ends where it began (blue live, green empty).
async fn flip_round(b: &FlipBed) -> Flip {
    let d = canary(b);
    let deploy_load = Loader::start(b.h.port);
    let (slot, outcome) = d
        .deploy(&(), Slot::Blue, OLD, NEW)
        .await
        .expect("the canary deploy ran");
    assert!(outcome.promoted, "not promoted: {}", outcome.reason);
    let held = d.held(slot, outcome.ended_ms);
    // A fresh load generator per window: each is bounded to two minutes.
    let deploy_failed = deploy_load.stop().failed;
    let load = Loader::start(b.h.port);
    let poller = Poller::start(&b.h.socket, held.old.name(), held.new.name());
    tokio::time::sleep(LEAD_IN + phase()).await;
    let verdict = Instant::now();
    let weight = d.flip_back(&held).await.expect("flip back");
    let returned = verdict.elapsed();
    tokio::time::sleep(SETTLE).await;
    let readings = poller.stop();
    let load = load.stop();
    let before = last_before(&readings, verdict).expect("a reading before the verdict");
    let last = readings.last().expect("readings");
    Flip {
        weight,
        all_on_old: all_on_old_after(&readings, verdict),
        returned,
        late_to_new: last.new.stot.saturating_sub(before.new.stot),
        poll_gap: median_gap(&readings),
        load,
        deploy_failed,
    }
}

/// One slot's sessions in HAProxy's `show stat`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Sessions {
    /// Open now.
    scur: u64,
    /// Ever started (a request is counted when it is sent to the server).
    stot: u64,
}

/// Both slots at one moment: when HAProxy's answer arrived.
#[derive(Clone, Copy, Debug)]
struct Reading {
    at: Instant,
    old: Sessions,
    new: Sessions,
}

/// A verdict at a fixed time after the load generator's start would meet its requests at the
/// same point of their period every round (seen: "all on old" 9-16 ms in all 10 rounds). A
/// delay spread over one period, from the clock's nanoseconds, makes the rounds sample it.
fn phase() -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Duration::from_micros(u64::from(nanos / 1_000 % LOAD_PERIOD_US))
}

fn last_before(readings: &[Reading], t: Instant) -> Option<&Reading> {
    readings.iter().rev().find(|r| r.at <= t)
}

/// From the verdict to the first reading from which on all traffic is on the old slot: the new
/// slot holds no session and starts none up to the last reading (its `stot` is final), and the
/// old slot has started at least one since the verdict. Includes up to one gap of the load
/// generator (~20 ms): the old slot's first request has to come.
fn all_on_old_after(readings: &[Reading], verdict: Instant) -> Option<Duration> {
    let before = last_before(readings, verdict)?;
    let last = readings.last()?;
    readings
        .iter()
        .filter(|r| r.at > verdict)
        .find(|r| r.new.scur == 0 && r.new.stot == last.new.stot && r.old.stot > before.old.stot)
        .map(|r| r.at - verdict)
}

fn median_gap(readings: &[Reading]) -> Duration {
    let gaps: Vec<Duration> = readings.windows(2).map(|w| w[1].at - w[0].at).collect();
    percentile(&gaps, 0.5).unwrap_or_default()
}

/// Reads `show stat` in a loop on its own thread until stopped.
struct Poller {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Reading>>,
}

impl Poller {
    fn start(socket: &Path, old: &'static str, new: &'static str) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let (socket, flag) = (socket.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut readings = Vec::new();
            // Bounded like every loop of the test bed, whatever the round does.
            let deadline = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Some(r) = read_sessions(&socket, old, new) {
                    readings.push(r);
                }
                std::thread::sleep(POLL_PAUSE);
            }
            readings
        });
        Poller { stop, thread }
    }

    fn stop(self) -> Vec<Reading> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the poller thread")
    }
}

/// One `show stat` exchange on the Runtime API, both slots' sessions out of it. Its own
/// blocking exchange, not the driver's: the poller runs on a thread, beside the runtime.
fn read_sessions(socket: &Path, old: &str, new: &str) -> Option<Reading> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"show stat\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let at = Instant::now();
    Some(Reading {
        at,
        old: sessions(&text, old)?,
        new: sessions(&text, new)?,
    })
}

/// Server `be/<server>`'s `scur` and `stot` from a `show stat` answer.
fn sessions(text: &str, server: &str) -> Option<Sessions> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.strip_prefix("# ")?.split(',').collect();
    let column = |name: &str| header.iter().position(|c| *c == name);
    let (scur, stot) = (column("scur")?, column("stot")?);
    let row: Vec<&str> = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|r| r.first() == Some(&"be") && r.get(1) == Some(&server))?;
    Some(Sessions {
        scur: row.get(scur)?.parse().ok()?,
        stot: row.get(stot)?.parse().ok()?,
    })
}

/// `load_through` at the canary tests' rate, stopped and counted as one.
struct Loader {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(u64, u64)>,
}

impl Loader {
    fn start(port: u16) -> Loader {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = load_through(port, LOAD_PER_S, stop.clone());
        Loader { stop, thread }
    }

    fn stop(self) -> Load {
        self.stop.store(true, Ordering::Relaxed);
        let (ok, failed) = self.thread.join().expect("the load generator");
        Load { ok, failed }
    }
}

// ---- the replace side ----

/// One replace-strategy rollback, timed from its call to its validated end.
struct Replace {
    took: Duration,
    load: Load,
}

async fn replace_rounds() -> Vec<Replace> {
    let app = app_with_images("brepl", &[OLD, NEW]);
    let d = ComposeDeployment::up(&app, "staging", "backend", OLD);
    wait_healthy_version(d.port, OLD);
    // The same path for the load as the flip's: through HAProxy, one server (green unused).
    let h = Haproxy::start(&[("blue", d.port, 100), ("green", free_port(), 0)]);
    h.wait_server_up("blue", Duration::from_secs(10));
    let config = Config::load(&d.write_config(&format!("{REGISTRY}/{app}"), ""))
        .expect("the bench's config");
    let target = config.targets.first().expect("one target");
    let rollbacker = Rollbacker::new(
        Store::open(&config.controller.store).expect("store"),
        RegistryClient::new(Duration::from_secs(10)).expect("registry client"),
        Prober::new().expect("prober"),
        config.fallback_tags.clone(),
    );
    let mut replaces = Vec::new();
    for round in 1..=ROUNDS {
        // The bad deploy, as CI does it; not timed.
        d.deploy(NEW);
        wait_healthy_version(d.port, NEW);
        h.wait_server_up("blue", Duration::from_secs(10));
        let r = replace_round(&h, target, &rollbacker).await;
        wait_healthy_version(d.port, OLD);
        eprintln!(
            "replace {round}: rollback {} ms, load ok {} failed {}",
            ms(r.took),
            r.load.ok,
            r.load.failed
        );
        replaces.push(r);
    }
    replaces
}

async fn replace_round(
    h: &Haproxy,
    target: &rollwatch::config::TargetConfig,
    rollbacker: &Rollbacker,
) -> Replace {
    let load = Loader::start(h.port);
    tokio::time::sleep(LEAD_IN + phase()).await;
    let request = RollbackRequest {
        tag: Some(Tag::parse(OLD).expect("a tag")),
        trigger: Trigger::Manual,
        reason: "bench: flip-back beside replace".into(),
        dry_run: false,
        failing_tag: None,
    };
    let verdict = Instant::now();
    let record = rollbacker
        .rollback(target, request, |_| {})
        .await
        .expect("the rollback ran");
    let took = verdict.elapsed();
    assert_eq!(record.state, RollbackState::Succeeded, "{record:?}");
    tokio::time::sleep(SETTLE).await;
    Replace {
        took,
        load: load.stop(),
    }
}

// ---- the table ----

/// Nearest-rank percentile `p` (0..=1) of `xs`.
fn percentile(xs: &[Duration], p: f64) -> Option<Duration> {
    let mut v = xs.to_vec();
    v.sort();
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
    v.get(rank - 1).copied()
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// `| measure | runs | p50 | p95 = max | min | goal |` for the times that were measured.
fn row(measure: &str, xs: &[Duration], goal: &str) -> String {
    let cell = |p: f64| percentile(xs, p).map_or("-".into(), |d| format!("{} ms", ms(d)));
    format!(
        "| {measure} | {} | {} | {} | {} | {goal} |\n",
        xs.len(),
        cell(0.5),
        cell(0.95),
        cell(0.0)
    )
}

fn total(loads: impl Iterator<Item = Load>) -> Load {
    loads.fold(Load::default(), |a, l| Load {
        ok: a.ok + l.ok,
        failed: a.failed + l.failed,
    })
}

fn report(flips: &[Flip], replaces: &[Replace], took: Duration) -> String {
    let weights: Vec<Duration> = flips.iter().map(|f| f.weight).collect();
    let on_old: Vec<Duration> = flips.iter().filter_map(|f| f.all_on_old).collect();
    let returned: Vec<Duration> = flips.iter().map(|f| f.returned).collect();
    let rollbacks: Vec<Duration> = replaces.iter().map(|r| r.took).collect();
    let gaps: Vec<Duration> = flips.iter().map(|f| f.poll_gap).collect();
    let flip_load = total(flips.iter().map(|f| f.load));
    let replace_load = total(replaces.iter().map(|r| r.load));
    let deploy_failed: u64 = flips.iter().map(|f| f.deploy_failed).sum();
    let late: u64 = flips.iter().map(|f| f.late_to_new).sum();
    let unseen = flips.len() - on_old.len();
    let when = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let mut s = format!("## Canary flip-back beside replace rollback ({when})\n\n");
    s += &format!("{}\n\n", machine());
    s += &format!(
        "`scripts/bench flip-back` (release build, {:.0} s): {ROUNDS} rounds of each, ~{LOAD_PER_S} req/s \
         of sequential loopback requests through HAProxy 2.6 (`load_through`). Flip-back: {OLD} live \
         in the blue compose slot; each round canary-deploys {NEW} into green (steps 50 -> 100 %, \
         1 s each), promotes it, and {} s (plus 0-22 ms, so the verdict falls anywhere in the load's period) \
         later calls `CanaryDeploy::flip_back(&held)` (the verdict). \
         Weight change: flip_back's own measure of its Runtime API exchange. All traffic on old: \
         the first `show stat` reading (one exchange every {} ms, median) from which green holds \
         no session and starts none and blue has started one, so it includes up to one ~20 ms gap \
         of the load generator. Replace: a compose deployment behind its own HAProxy; each round \
         `docker-compose up -d` of {NEW}, then `Rollbacker::rollback` to {OLD}, timed from the call \
         to its return after /health answered ok (polled every 250 ms). Nearest-rank \
         percentiles: of 10 runs, p50 is the 5th and p95 the 10th.\n\n",
        took.as_secs_f64(),
        LEAD_IN.as_secs(),
        percentile(&gaps, 0.5).map_or("?".into(), ms),
    );
    s += "| measure (verdict ->) | runs | p50 | p95 = max | min | goal (p50) |\n|---|---|---|---|---|---|\n";
    s += &row("flip-back: weight change answered", &weights, "-");
    s += &row(
        "flip-back: all traffic on the old version (HAProxy)",
        &on_old,
        "< 1 s",
    );
    s += &row(
        "flip-back: new slot's containers removed (flip_back returned)",
        &returned,
        "-",
    );
    s += &row(
        "replace: rollback validated on the old version",
        &rollbacks,
        "-",
    );
    s += &format!(
        "\nFailed requests at the load generator: flip-back {} of {} (from {} s before each verdict \
         to {} s after flip_back returned, the new slot's removal included), during the canary \
         deploys {deploy_failed}; replace {} of {} (same window around each rollback). Requests \
         HAProxy still sent to the new slot after the verdict: {late} in {ROUNDS} flips.{}\n",
        flip_load.failed,
        flip_load.ok + flip_load.failed,
        LEAD_IN.as_secs(),
        SETTLE.as_secs(),
        replace_load.failed,
        replace_load.ok + replace_load.failed,
        if unseen > 0 {
            format!(" All traffic on old never seen in {unseen} rounds.")
        } else {
            String::new()
        }
    );
    s
}

/// `Machine: <CPU model>, <n> cores (nproc), <kernel>. Commit <hash>.` for the section.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = command_line("uname", &["-sr"]);
    let commit = command_line("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !command_line("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    format!(
        "Machine: {cpu}, {cores} cores (nproc), {kernel}. Commit {commit}{}.",
        if dirty {
            " with uncommitted changes"
        } else {
            ""
        }
    )
}

fn command_line(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
