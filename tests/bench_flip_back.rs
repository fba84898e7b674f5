//! Issue 17's must-show 3 as a benchmark, not a test: after a promotion, a regression found
//! during the hold flips all traffic back to the held slot, and this measures how fast, beside
//! the replace strategy's rollback on the same machine in the same run. `#[ignore]`d and run by
//! `scripts/bench flip-back`, which appends the table to docs/BENCHMARKS.md; nothing here
//! asserts a time (a loaded 2-core machine would make such an assertion flaky, not wrong).
//!
//! "All traffic on the old version" is proven by HAProxy itself, not by the driver's answer:
//! `show stat` is read in a tight loop and the flip counts as done at the first reading from
//! which the new slot holds no session and takes no new one while the old slot takes requests.
//!
//! It runs twice in one test: calling `CanaryDeploy::flip_back` and `Rollbacker::rollback`
//! directly, then through real `rollwatch run` controllers, where `rollwatch deploy` promotes
//! the new version, its container hangs (SIGSTOP) and the watcher's own verdict (the `regressed`
//! event) triggers the flip back or the replace rollback; there the times come from the store
//! (wall-clock ms) and HAProxy's readings stamped on the same clock. Outcomes are asserted:
//! HAProxy's weights back to old 100 / new 0, the canary record flipped back, the rollback
//! record succeeded.

mod harness;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use harness::canary::deploy_with;
use harness::haproxy::{load_through, Haproxy};
use harness::slots::SlotBed;
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

/// [`ROUNDS`], or `ROLLWATCH_BENCH_ROUNDS` for a quick trial of the bench itself.
fn rounds() -> usize {
    std::env::var("ROLLWATCH_BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(ROUNDS)
}
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
    let ctrl_flips = ctrl_flip_rounds().await;
    let ctrl_replaces = ctrl_replace_rounds().await;
    let section = report(
        &flips,
        &replaces,
        &ctrl_flips,
        &ctrl_replaces,
        started.elapsed(),
    );
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
    let SlotBed { d, site, h } = SlotBed::start("bflip", OLD, &[NEW]).await;
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
    for round in 1..=rounds() {
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
    /// The same moment on the wall clock (ms since the epoch, µs precision): the store's
    /// `at_ms` are wall-clock ms, so the controller's rounds map its events onto readings.
    wall_ms: f64,
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
        wall_ms: wall_ms(),
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
        Store::connect(&config.controller.store, None)
            .await
            .expect("store"),
        RegistryClient::new(Duration::from_secs(10)).expect("registry client"),
        Prober::new().expect("prober"),
        config.fallback_tags.clone(),
    );
    let mut replaces = Vec::new();
    for round in 1..=rounds() {
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

// ---- through a real controller: `rollwatch run` and `rollwatch deploy` ----

/// The wall clock in ms since the epoch, µs precision (the store's `at_ms` are whole ms of it).
fn wall_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn from_ms(ms: f64) -> Duration {
    Duration::from_secs_f64(ms.max(0.0) / 1000.0)
}

/// Requests at ~LOAD_PER_S through HAProxy, each kept as (wall ms it was sent, answered 2xx),
/// so failures can be split by when they happened. Bounded to three minutes.
struct TimedLoader {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(f64, bool)>>,
}

impl TimedLoader {
    fn start(port: u16) -> TimedLoader {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut sent = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(180);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                let at = wall_ms();
                let ok = matches!(http_get(port, "/"), Some((200, _)));
                sent.push((at, ok));
                std::thread::sleep(Duration::from_millis(1000 / LOAD_PER_S));
            }
            sent
        });
        TimedLoader { stop, thread }
    }

    fn stop(self) -> Vec<(f64, bool)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the load generator")
    }
}

/// The requests sent in `[from, to)` (wall ms).
fn load_between(sent: &[(f64, bool)], from: f64, to: f64) -> Load {
    sent.iter()
        .filter(|(at, _)| *at >= from && *at < to)
        .fold(Load::default(), |l, (_, ok)| Load {
            ok: l.ok + u64::from(*ok),
            failed: l.failed + u64::from(!*ok),
        })
}

/// Failed requests of one controller round, by when they were sent.
#[derive(Clone, Copy, Default)]
struct Windows {
    /// From the round's start (the deploy included) to the hang.
    before_hang: Load,
    /// From the hang to the verdict: the fault's own cost, before rollwatch knew.
    hang_to_verdict: Load,
    /// From the verdict to the round's end (1 s after the rollback record finished).
    after_verdict: Load,
}

fn windows(sent: &[(f64, bool)], hang: f64, verdict: f64) -> Windows {
    Windows {
        before_hang: load_between(sent, 0.0, hang),
        hang_to_verdict: load_between(sent, hang, verdict),
        after_verdict: load_between(sent, verdict, f64::MAX),
    }
}

/// An event of the store's `events` table.
#[derive(Debug)]
struct Event {
    id: i64,
    at_ms: i64,
    kind: String,
    tag: Option<String>,
}

fn events_after(db: &Path, after_id: i64) -> Vec<Event> {
    query(
        db,
        &format!("SELECT id, at_ms, kind, tag FROM events WHERE id > {after_id} ORDER BY id"),
        |r| {
            Ok(Event {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                kind: r.get(2)?,
                tag: r.get(3)?,
            })
        },
    )
}

fn last_event_id(db: &Path) -> i64 {
    events_after(db, 0).last().map_or(0, |e| e.id)
}

/// The first event of `kind` for `tag` after event `after_id`, waited for.
fn wait_event_after(db: &Path, after_id: i64, kind: &str, tag: &str, within: Duration) -> Event {
    wait_for(within, &format!("event {kind} {tag}"), || {
        events_after(db, after_id)
            .into_iter()
            .find(|e| e.kind == kind && e.tag.as_deref() == Some(tag))
    })
}

/// A row of the store's `rollbacks` table.
#[derive(Debug)]
struct RollbackRow {
    id: i64,
    state: String,
    trigger: String,
    to_tag: String,
    finished_at_ms: Option<i64>,
    steps: Vec<rollwatch::store::StepRecord>,
}

fn newest_rollback(db: &Path) -> Option<RollbackRow> {
    query(
        db,
        "SELECT id, state, trigger, to_tag, finished_at_ms, steps FROM rollbacks ORDER BY id DESC LIMIT 1",
        |r| {
            let steps: String = r.get(5)?;
            Ok(RollbackRow {
                id: r.get(0)?,
                state: r.get(1)?,
                trigger: r.get(2)?,
                to_tag: r.get(3)?,
                finished_at_ms: r.get(4)?,
                steps: serde_json::from_str(&steps).unwrap_or_default(),
            })
        },
    )
    .into_iter()
    .next()
}

/// The newest rollback after `after_id`, once finished.
fn wait_rollback_after(db: &Path, after_id: i64, within: Duration) -> RollbackRow {
    wait_for(within, "a finished rollback record", || {
        newest_rollback(db).filter(|r| r.id > after_id && r.finished_at_ms.is_some())
    })
}

/// (id, state, slot) of the newest canary record.
fn newest_canary(db: &Path) -> Option<(i64, String, String)> {
    query(
        db,
        "SELECT id, state, slot FROM canaries ORDER BY id DESC LIMIT 1",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .into_iter()
    .next()
}

/// HAProxy's weight of server `be/<server>`, read over its Runtime API.
fn weight(h: &Haproxy, server: &str) -> u32 {
    let answer = h.runtime(&format!("get weight be/{server}"));
    answer
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("get weight be/{server}: {answer:?}"))
}

/// `docker rm -f` of each container: the SIGSTOPped ones must not outlive a round.
fn remove_containers(names: &[String]) {
    for name in names {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", name])
            .output();
    }
}

/// The watch settings of both controller beds: probes every 500 ms, a failed probe counts at
/// once (3 in a row is the verdict, the default), no cooldown (10 verdicts in a few minutes),
/// and a 90 s watch window, so each round's new version is still on probation when it hangs.
const WATCH: &str =
    r#"watch = { interval = "500ms", bake = "90s", grace = "0s", cooldown = "0s" }"#;

/// A canary target under `rollwatch run`: v1.0.0 live in the blue slot at weight 100 behind
/// HAProxy, green empty at weight 0; the health URL is HAProxy's frontend. The shape of
/// tests/canary_controller.rs, with shorter steps (not measured here).
struct CtrlBed {
    d: ComposeDeployment,
    site: SlotSite,
    h: Haproxy,
    config: std::path::PathBuf,
}

impl Drop for CtrlBed {
    fn drop(&mut self) {
        for slot in [Slot::Blue, Slot::Green] {
            remove_containers(&project_containers(&self.site.project_of(slot)));
        }
    }
}

async fn ctrl_bed() -> CtrlBed {
    let bed = SlotBed::start("bcflip", OLD, &[NEW]).await;
    let config = bed.write_config(
        WATCH,
        "steps = [50, 100]\nstep_min = \"1s\"\nstep_min_requests = 10\nhold = \"10m\"",
    );
    let SlotBed { d, site, h } = bed;
    CtrlBed { d, site, h, config }
}

fn start_controller(d: &ComposeDeployment, config: &Path) -> Controller {
    let c = Controller::start(config, &[]);
    wait_for(Duration::from_secs(20), "the controller's API", || {
        http_get(d.api_port, "/healthz").filter(|(s, _)| *s == 200)
    });
    c
}

/// One controller flip-back round; times from the store are wall-clock ms.
struct CtrlFlip {
    /// The hang (`docker kill --signal STOP` returned) -> the `regressed` event.
    detection: Duration,
    /// `regressed` -> `canary_flipped_back` (written right after HAProxy answered).
    weight_event: Duration,
    /// The rollback record's "flip weights" step (its own measure of the exchange).
    weight_step: Duration,
    /// `regressed` -> the first `show stat` reading from which the new slot starts no session
    /// and the old slot has started one: all new requests on the old version.
    all_new_on_old: Option<Duration>,
    /// The same, and no session left open on the new slot (`scur` 0): the brief's strict
    /// reading, which also waits for requests stuck in the hung container since before the
    /// verdict (HAProxy keeps them until `timeout server` or the container's removal).
    all_on_old_strict: Option<Duration>,
    /// Sessions open on the new slot at the last reading before the verdict.
    open_at_verdict: u64,
    /// `regressed` -> the rollback record finished (held slot validated, new slot removed).
    finished: Duration,
    late_to_new: u64,
    poll_gap: Duration,
    load: Windows,
}

async fn ctrl_flip_rounds() -> Vec<CtrlFlip> {
    let b = ctrl_bed().await;
    let _c = start_controller(&b.d, &b.config);
    let mut flips = Vec::new();
    for round in 1..=rounds() {
        let f = ctrl_flip_round(&b).await;
        eprintln!(
            "controller flip {round}: detection {} ms, weight event {} ms (step {} ms), all new on old {}, strict (scur 0) {}, {} open on new at verdict, finished {} ms, {} late to new, poll gap {} µs, failed before hang {}/{}, hang->verdict {}/{}, after verdict {}/{}",
            ms(f.detection),
            ms(f.weight_event),
            ms(f.weight_step),
            f.all_new_on_old.map_or("never".into(), |d| format!("{} ms", ms(d))),
            f.all_on_old_strict.map_or("never".into(), |d| format!("{} ms", ms(d))),
            f.open_at_verdict,
            ms(f.finished),
            f.late_to_new,
            f.poll_gap.as_micros(),
            f.load.before_hang.failed,
            f.load.before_hang.ok + f.load.before_hang.failed,
            f.load.hang_to_verdict.failed,
            f.load.hang_to_verdict.ok + f.load.hang_to_verdict.failed,
            f.load.after_verdict.failed,
            f.load.after_verdict.ok + f.load.after_verdict.failed,
        );
        flips.push(f);
    }
    let bad = query(&b.d.db(), "SELECT tag FROM bad_tags", |r| {
        r.get::<_, String>(0)
    });
    eprintln!("bad_tags after the controller flips: {bad:?} (the canary runner does not consult them; each re-deploy of {NEW} went ahead)");
    flips
}

/// `rollwatch deploy` of v1.0.1 (promoted after 50 -> 100 %), then its container hangs
/// (SIGSTOP); the watcher's health verdict flips traffic back to the held v1.0.0, and the
/// round ends as it began: blue live, green removed.
async fn ctrl_flip_round(b: &CtrlBed) -> CtrlFlip {
    let db = b.d.db();
    let mark = last_event_id(&db);
    let rollback_mark = newest_rollback(&db).map_or(0, |r| r.id);
    let load = TimedLoader::start(b.h.port);
    let config = b.config.clone();
    let (code, out) = tokio::task::spawn_blocking(move || deploy_with(&config, NEW))
        .await
        .expect("deploy thread");
    assert_eq!(code, 0, "rollwatch deploy {NEW}: {out}");
    let (id, state, slot) = newest_canary(&db).expect("a canary record");
    assert_eq!(state, "holding", "canary #{id} after the deploy");
    let (new, old) = if slot == "green" {
        (Slot::Green, Slot::Blue)
    } else {
        (Slot::Blue, Slot::Green)
    };
    assert_eq!(
        (weight(&b.h, old.name()), weight(&b.h, new.name())),
        (0, 100)
    );
    // The watcher judges the new version (on probation) before it hangs.
    wait_event_after(&db, mark, "deploy", NEW, Duration::from_secs(30));
    let poller = Poller::start(&b.h.socket, old.name(), new.name());
    tokio::time::sleep(LEAD_IN + phase()).await;
    let hung = project_containers(&b.site.project_of(new));
    assert_eq!(hung.len(), 1, "{hung:?}");
    // SIGSTOP, not `docker pause` (the cgroup-v1 freezer here once froze dockerd).
    sh("docker", &["kill", "--signal", "STOP", &hung[0]]);
    let hang = wall_ms();
    let rb = wait_rollback_after(&db, rollback_mark, Duration::from_secs(90));
    tokio::time::sleep(SETTLE).await;
    let readings = poller.stop();
    let sent = load.stop();
    remove_containers(&hung);
    let regressed = wait_event_after(&db, mark, "regressed", NEW, Duration::from_secs(5));
    let flipped = wait_event_after(
        &db,
        mark,
        "canary_flipped_back",
        NEW,
        Duration::from_secs(5),
    );
    // Outcomes only: HAProxy's weights back, the store's record flipped back.
    assert_eq!(
        (weight(&b.h, old.name()), weight(&b.h, new.name())),
        (100, 0),
        "all traffic back on {OLD}"
    );
    let (rid, state, _) = newest_canary(&db).expect("the canary record");
    assert_eq!((rid, state.as_str()), (id, "flipped_back"));
    assert_eq!(
        (rb.state.as_str(), rb.trigger.as_str(), rb.to_tag.as_str()),
        ("succeeded", "health", OLD),
        "{rb:?}"
    );
    let verdict = regressed.at_ms as f64;
    let step = rb
        .steps
        .iter()
        .find(|s| s.name == "flip weights")
        .expect("a flip weights step");
    let before = readings.iter().rev().find(|r| r.wall_ms <= verdict);
    let last = readings.last().expect("readings");
    let after = || readings.iter().filter(|r| r.wall_ms > verdict);
    let moved = |strict: bool| {
        let before = before?;
        after()
            .find(|r| {
                (!strict || r.new.scur == 0)
                    && r.new.stot == last.new.stot
                    && r.old.stot > before.old.stot
            })
            .map(|r| from_ms(r.wall_ms - verdict))
    };
    CtrlFlip {
        detection: from_ms(verdict - hang),
        weight_event: from_ms((flipped.at_ms - regressed.at_ms) as f64),
        weight_step: from_ms(step.duration_ms as f64),
        all_new_on_old: moved(false),
        all_on_old_strict: moved(true),
        open_at_verdict: before.map_or(0, |b| b.new.scur),
        finished: from_ms((rb.finished_at_ms.unwrap_or(regressed.at_ms) - regressed.at_ms) as f64),
        late_to_new: before.map_or(0, |b| last.new.stot.saturating_sub(b.new.stot)),
        poll_gap: median_gap(&readings),
        load: windows(&sent, hang, verdict),
    }
}

/// One replace-strategy round under `rollwatch run`.
struct CtrlReplace {
    detection: Duration,
    /// `regressed` -> the rollback record's `finished_at_ms` (validated on the old version).
    validated: Duration,
    load: Windows,
}

/// A plain compose target (strategy replace, the default) under `rollwatch run`, behind its own
/// HAProxy for the load; no known-good tag on record, so each rollback goes to the staging
/// fallback tag, v1.0.0.
async fn ctrl_replace_rounds() -> Vec<CtrlReplace> {
    let app = app_with_images("bcrepl", &[OLD, NEW]);
    let d = ComposeDeployment::up(&app, "staging", "backend", OLD);
    wait_healthy_version(d.port, OLD);
    let h = Haproxy::start(&[("blue", d.port, 100), ("green", free_port(), 0)]);
    h.wait_server_up("blue", Duration::from_secs(10));
    let config = d.write_config(
        &format!("{REGISTRY}/{app}"),
        &format!("{WATCH}\n\n[fallback_tags]\nstaging = \"{OLD}\"\n"),
    );
    let _c = start_controller(&d, &config);
    let mut replaces = Vec::new();
    for round in 1..=rounds() {
        let r = ctrl_replace_round(&d, &h).await;
        eprintln!(
            "controller replace {round}: detection {} ms, validated {} ms, failed before hang {}/{}, hang->verdict {}/{}, after verdict {}/{}",
            ms(r.detection),
            ms(r.validated),
            r.load.before_hang.failed,
            r.load.before_hang.ok + r.load.before_hang.failed,
            r.load.hang_to_verdict.failed,
            r.load.hang_to_verdict.ok + r.load.hang_to_verdict.failed,
            r.load.after_verdict.failed,
            r.load.after_verdict.ok + r.load.after_verdict.failed,
        );
        replaces.push(r);
    }
    replaces
}

/// `docker-compose up -d` of v1.0.1 as CI does it, then its container hangs (SIGSTOP); the
/// watcher's health verdict rolls back to v1.0.0 by replacing the container.
async fn ctrl_replace_round(d: &ComposeDeployment, h: &Haproxy) -> CtrlReplace {
    let db = d.db();
    let mark = last_event_id(&db);
    let rollback_mark = newest_rollback(&db).map_or(0, |r| r.id);
    let load = TimedLoader::start(h.port);
    d.deploy(NEW);
    wait_healthy_version(d.port, NEW);
    h.wait_server_up("blue", Duration::from_secs(10));
    wait_event_after(&db, mark, "deploy", NEW, Duration::from_secs(30));
    tokio::time::sleep(LEAD_IN + phase()).await;
    let hung = project_containers(&d.project);
    assert_eq!(hung.len(), 1, "{hung:?}");
    sh("docker", &["kill", "--signal", "STOP", &hung[0]]);
    let hang = wall_ms();
    let rb = wait_rollback_after(&db, rollback_mark, Duration::from_secs(120));
    wait_healthy_version(d.port, OLD);
    h.wait_server_up("blue", Duration::from_secs(10));
    tokio::time::sleep(SETTLE).await;
    let sent = load.stop();
    remove_containers(&hung);
    let regressed = wait_event_after(&db, mark, "regressed", NEW, Duration::from_secs(5));
    assert_eq!(
        (rb.state.as_str(), rb.to_tag.as_str()),
        ("succeeded", OLD),
        "{rb:?}"
    );
    let verdict = regressed.at_ms as f64;
    CtrlReplace {
        detection: from_ms(verdict - hang),
        validated: from_ms((rb.finished_at_ms.unwrap_or(regressed.at_ms) - regressed.at_ms) as f64),
        load: windows(&sent, hang, verdict),
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

fn report(
    flips: &[Flip],
    replaces: &[Replace],
    ctrl_flips: &[CtrlFlip],
    ctrl_replaces: &[CtrlReplace],
    took: Duration,
) -> String {
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
    let mut s = format!(
        "## Canary flip-back beside replace rollback, library and `rollwatch run` ({when})\n\n"
    );
    s += &format!("{}\n\n", machine());
    s += &format!(
        "`scripts/bench flip-back` (release build, {:.0} s for all four parts): {} rounds of each, ~{LOAD_PER_S} req/s \
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
        flips.len(),
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
         HAProxy still sent to the new slot after the verdict: {late} in {} flips.{}\n",
        flip_load.failed,
        flip_load.ok + flip_load.failed,
        LEAD_IN.as_secs(),
        SETTLE.as_secs(),
        replace_load.failed,
        replace_load.ok + replace_load.failed,
        flips.len(),
        if unseen > 0 {
            format!(" All traffic on old never seen in {unseen} rounds.")
        } else {
            String::new()
        }
    );
    s += &ctrl_report(ctrl_flips, ctrl_replaces);
    s
}

fn windows_total<'a>(ws: impl Iterator<Item = &'a Windows>) -> Windows {
    let add = |a: Load, b: Load| Load {
        ok: a.ok + b.ok,
        failed: a.failed + b.failed,
    };
    ws.fold(Windows::default(), |a, w| Windows {
        before_hang: add(a.before_hang, w.before_hang),
        hang_to_verdict: add(a.hang_to_verdict, w.hang_to_verdict),
        after_verdict: add(a.after_verdict, w.after_verdict),
    })
}

fn of(l: Load) -> String {
    format!("{} of {}", l.failed, l.ok + l.failed)
}

/// The second table: the same claim through `rollwatch run`.
fn ctrl_report(flips: &[CtrlFlip], replaces: &[CtrlReplace]) -> String {
    let pick = |f: fn(&CtrlFlip) -> Duration| flips.iter().map(f).collect::<Vec<_>>();
    let on_old: Vec<Duration> = flips.iter().filter_map(|f| f.all_new_on_old).collect();
    let strict: Vec<Duration> = flips.iter().filter_map(|f| f.all_on_old_strict).collect();
    let open: u64 = flips.iter().map(|f| f.open_at_verdict).sum();
    let gaps = pick(|f| f.poll_gap);
    let flip_load = windows_total(flips.iter().map(|f| &f.load));
    let replace_load = windows_total(replaces.iter().map(|r| &r.load));
    let late: u64 = flips.iter().map(|f| f.late_to_new).sum();
    let unseen = flips.len() - on_old.len();
    let unseen_strict = flips.len() - strict.len();
    let mut s = String::from("\n### The same claim through `rollwatch run`\n\n");
    s += &format!(
        "Same run. Flip-back: a canary target (strategy = \"canary\", steps 50 -> 100 %, step_min 1 s, \
         hold 10 min) under a real `rollwatch run` (watch interval 500 ms, grace 0, 3 failed probes, \
         cooldown 0, bake 90 s), its health URL HAProxy's frontend; {OLD} live in the blue slot. Each \
         round: `rollwatch deploy staging backend {NEW}` (promoted), the watcher's `deploy` event for \
         {NEW}, {} s of load, then `docker kill --signal STOP` of the promoted slot's container (the \
         hang); the watcher's health verdict (the `regressed` event) makes the canary runner flip \
         the weights back to the held {OLD}; the round waits for the rollback record to finish (held \
         slot validated, the hung slot removed by the controller), then `docker rm -f`s the hung \
         container. Each re-deploy of {NEW} is a real change (after the flip green is removed and \
         blue is live again); the tag the watcher marks bad stays in `bad_tags`, which the canary \
         runner does not consult, so no row was deleted. Times are the store's wall-clock `at_ms` \
         (whole ms, so +-1 ms), and `show stat` readings (one every {} ms, median) stamped on the \
         same wall clock. All new requests on old: the first reading after the verdict from which \
         green starts no session and blue has started one (the goal row, as in the table above, \
         less its `scur` condition); the strict reading adds green's `scur` 0, which waits for the \
         sessions HAProxy opened to the hung container before the verdict (kept until its \
         `timeout server 10s` or the container's removal). Replace: a plain compose target (strategy replace) under its own \
         `rollwatch run`, same watch settings, load through its own HAProxy; each round \
         `docker-compose up -d` of {NEW}, the watcher's `deploy` event, {} s of load, SIGSTOP of \
         its container; the verdict rolls back to {OLD} (the staging fallback tag; no known-good \
         on record) by `docker-compose up -d`, which first has to stop the hung container (Docker's \
         10 s stop grace, then SIGKILL), timed to the rollback record's `finished_at_ms` (after \
         /health answered ok).\n\n",
        LEAD_IN.as_secs(),
        percentile(&gaps, 0.5).map_or("?".into(), ms),
        LEAD_IN.as_secs(),
    );
    s += "| measure | runs | p50 | p95 = max | min | goal (p50) |\n|---|---|---|---|---|---|\n";
    s += &row(
        "flip-back: verdict -> weight change (`regressed` -> `canary_flipped_back` event)",
        &pick(|f| f.weight_event),
        "-",
    );
    s += &row(
        "flip-back: the rollback record's \"flip weights\" step",
        &pick(|f| f.weight_step),
        "-",
    );
    s += &row(
        "flip-back: verdict -> all new requests on the old version (HAProxy: the new slot starts no session, the old slot has started one)",
        &on_old,
        "< 1 s",
    );
    s += &row(
        "flip-back: verdict -> also no session left open on the new slot (scur 0)",
        &strict,
        "-",
    );
    s += &row(
        "flip-back: verdict -> rollback record finished (hung slot removed)",
        &pick(|f| f.finished),
        "-",
    );
    s += &row(
        "flip-back: hang -> verdict (detection, for context)",
        &pick(|f| f.detection),
        "-",
    );
    s += &row(
        "replace: verdict -> rollback validated on the old version",
        &replaces.iter().map(|r| r.validated).collect::<Vec<_>>(),
        "-",
    );
    s += &row(
        "replace: hang -> verdict (detection, for context)",
        &replaces.iter().map(|r| r.detection).collect::<Vec<_>>(),
        "-",
    );
    s += &format!(
        "\nFailed requests at the load generator (by when sent): flip-back {} from each round's \
         start (the `rollwatch deploy` included) to the hang, {} from the hang to the verdict \
         (the hung version's cost before rollwatch knew), {} from the verdict to 1 s after the \
         rollback record finished; replace {}, {}, {} in the same windows. Requests HAProxy sent \
         to the new slot after the verdict: {late} in {} flips; sessions open on it at the verdict \
         (requests sent before the verdict, stuck in the hung container): {open} in all.{}\n",
        of(flip_load.before_hang),
        of(flip_load.hang_to_verdict),
        of(flip_load.after_verdict),
        of(replace_load.before_hang),
        of(replace_load.hang_to_verdict),
        of(replace_load.after_verdict),
        flips.len(),
        if unseen + unseen_strict > 0 {
            format!(" All new requests on old never seen in {unseen} rounds; no session left open on new never seen (within 1 s of the rollback's end) in {unseen_strict}.")
        } else {
            String::new()
        }
    );
    s
}
