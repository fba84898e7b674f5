//! Failure paths of canary deploys through `rollwatch run`, from a fresh-eyes review of issue
//! 17 (each test was written failing, then the code fixed): kill -9 at other moments (while
//! the slot starts, during a flip or switch back, right after promotion), the load balancer
//! dying mid-deploy, two deploys at once, a refused deploy during a hold, people's orders
//! while the slot starts, and what the watcher makes of a canary still deciding. The bed is
//! tests/harness/canary.rs; each asserts on HAProxy's weights, the store and the containers.

mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::canary::*;
use harness::haproxy::load_through;
use harness::*;
use rollwatch::traffic::Slot;

fn deploy_thread(b: &Bed, tag: &str) -> std::thread::JoinHandle<(i32, String)> {
    let config = b.config.clone();
    let tag = tag.to_string();
    std::thread::spawn(move || deploy_with(&config, &tag))
}

/// (state, error) of every rollback record, oldest first.
fn rollback_errors(db: &std::path::Path) -> Vec<(String, Option<String>)> {
    query(db, "SELECT state, error FROM rollbacks ORDER BY id", |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
}

fn all_canaries(db: &std::path::Path) -> Vec<(i64, String, String, u32, u32, bool, String)> {
    query(
        db,
        "SELECT id, tag, state, blue, green, applied, reason FROM canaries ORDER BY id",
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        },
    )
}

fn dump(b: &Bed) {
    eprintln!("canaries: {:#?}", all_canaries(&b.db()));
    eprintln!("rollbacks: {:#?}", rollback_errors(&b.db()));
    eprintln!("events: {:#?}", events(&b.db()));
    eprintln!("haproxy (blue, green): {:?}", b.weights());
    eprintln!(
        "containers blue {:?} green {:?}",
        project_containers(&b.site.project_of(Slot::Blue)),
        project_containers(&b.site.project_of(Slot::Green))
    );
    if let Some((_, m)) = http_get(b.d.api_port, "/metrics") {
        for l in m.lines().filter(|l| l.starts_with("rollwatch_canary")) {
            eprintln!("metric: {l}");
        }
    }
}

/// R1. A deploy of the tag that already takes the traffic is refused ("nothing changed"), but
/// during a hold it first ends the hold: the old slot is stopped, the safety net gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_a_refused_redeploy_of_the_promoted_tag_leaves_the_hold_alone() {
    let b = bed("rvredo", &["v1.0.1"], "10m").await;
    let _c = b.controller(&[]);
    let _load = Load::start(&b);
    let (code, out) = deploy_thread(&b, "v1.0.1").join().expect("deploy");
    assert_eq!(code, 0, "{out}");
    assert_eq!(b.newest().expect("record").state, "holding");
    // CI retries the same job (or two pipelines race): the same tag again.
    let (code, out) = deploy_thread(&b, "v1.0.1").join().expect("deploy");
    eprintln!("second deploy: exit {code}: {out}");
    dump(&b);
    assert_eq!(code, 2, "refused: {out}");
    assert!(out.contains("already takes the traffic"), "{out}");
    let r = b.newest().expect("record");
    assert_eq!(
        r.state, "holding",
        "a refused order must not end the hold: {r:?}"
    );
    assert!(
        !project_containers(&b.site.project_of(Slot::Blue)).is_empty(),
        "the held slot (v1.0.0) was stopped by a refused deploy"
    );
}

/// R2. kill -9 while a flip back removes the hung new slot (Docker's 10 s stop grace), then
/// restart: the rollback record must say the flip happened, and the hung slot must go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_kill_9_during_a_flip_back_then_restart_records_it_honestly_and_removes_the_slot() {
    let b = bed("rvflipk", &["v1.0.1"], "10m").await;
    let mut c = b.controller(&[]);
    let _load = Load::start(&b);
    let (code, out) = deploy_thread(&b, "v1.0.1").join().expect("deploy");
    assert_eq!(code, 0, "{out}");
    let green = project_containers(&b.site.project_of(Slot::Green));
    assert_eq!(green.len(), 1, "{green:?}");
    sh("docker", &["kill", "--signal", "STOP", &green[0]]);
    wait_for(Duration::from_secs(60), "the flip back", || {
        b.newest().filter(|r| r.state == "flipped_back")
    });
    // The weights are back on blue and the rollback recorded; the hung green container takes
    // its stop grace to go. Killed in that window (waiting on the record, not a fixed sleep: a
    // loaded machine writes it later).
    wait_for(Duration::from_secs(30), "the flip back's record", || {
        rollback_errors(&b.db())
            .first()
            .filter(|r| r.0 == "succeeded")
            .cloned()
    });
    c.kill9();
    eprintln!("at kill: {:?}", rollback_errors(&b.db()));
    let _c = b.controller(&[]);
    std::thread::sleep(Duration::from_secs(20));
    dump(&b);
    assert_eq!(b.weights(), (100, 0));
    let rows = rollback_errors(&b.db());
    assert!(!rows.is_empty());
    assert_eq!(
        rows[0].0, "succeeded",
        "the weights were flipped before the crash: {rows:?}"
    );
    assert!(
        project_containers(&b.site.project_of(Slot::Green)).is_empty(),
        "the hung slot's containers are left behind"
    );
}

/// R3. `rollwatch abort` while the new slot is still starting (state `starting`): the answer
/// says it aborts "at its next reading"; it must not first give the canary its 10 % step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_an_abort_while_the_new_slot_starts_gives_it_no_traffic() {
    let b = bed("rvabst", &["v1.0.1"], "10m").await;
    let _c = b.controller(&[]);
    let _load = Load::start(&b);
    let deploy = deploy_thread(&b, "v1.0.1");
    wait_for(Duration::from_secs(60), "state starting", || {
        b.newest().filter(|r| r.state == "starting")
    });
    let t = Instant::now();
    let (code, out) = cli(&b.config, &["abort", "staging", "backend"], true);
    eprintln!("abort: exit {code} in {:?}: {out}", t.elapsed());
    let (dcode, dout) = deploy.join().expect("deploy");
    eprintln!(
        "deploy: exit {dcode} {:?} after the abort: {dout}",
        t.elapsed()
    );
    dump(&b);
    let r = b.newest().expect("record");
    assert_eq!(code, 0, "{out}");
    assert_eq!(r.state, "aborted", "{r:?}");
    assert_eq!(
        r.steps, "[]",
        "an abort given before any step gave the canary traffic: {r:?}"
    );
    assert_eq!(b.weights(), (100, 0));
}

/// R4. The same with a version that never gets healthy (v1.1.0): the person's abort waits out
/// the whole health wait, and the tag is marked bad for "never healthy", not "aborted by hand".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_an_abort_of_a_never_healthy_version_is_taken_at_once() {
    let b = bed("rvabnh", &["v1.1.0"], "10m").await;
    let _c = b.controller(&[]);
    let _load = Load::start(&b);
    let deploy = deploy_thread(&b, "v1.1.0");
    wait_for(Duration::from_secs(60), "state starting", || {
        b.newest().filter(|r| r.state == "starting")
    });
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    let (code, out) = cli(&b.config, &["abort", "staging", "backend"], true);
    eprintln!("abort: exit {code}: {out}");
    let (dcode, dout) = deploy.join().expect("deploy");
    let took = t.elapsed();
    eprintln!("deploy ended {took:?} after the abort order: exit {dcode}: {dout}");
    dump(&b);
    let r = b.newest().expect("record");
    assert_eq!(r.state, "aborted");
    // Not a speed claim: the bound is what tells "taken at once" from "after the health wait",
    // which for a version that never answers lasts validation_timeout (60 s here).
    assert!(took < Duration::from_secs(20), "abort took {took:?}");
    assert!(r.reason.contains("by hand"), "{}", r.reason);
}

/// R5. HAProxy dies mid-deploy (at the 10% step) and comes back: the deploy fails; what is
/// left (the canary's containers, the unfinished record) and can another deploy start over it?
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_haproxy_down_mid_deploy_leaves_nothing_unfinished_behind_a_new_deploy() {
    let b = bed("rvhadown", &["v1.0.1"], "10m").await;
    let _c = b.controller(&[]);
    let _load = Load::start(&b);
    let deploy = deploy_thread(&b, "v1.0.1");
    wait_for(Duration::from_secs(60), "the 10% step", || {
        b.newest().filter(|r| r.steps.contains("[10,"))
    });
    let pidfile = b.h.dir().join("haproxy.pid");
    let pid = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .to_string();
    sh("kill", &["-9", &pid]);
    let (code, out) = deploy.join().expect("deploy");
    eprintln!("deploy with haproxy killed: exit {code}: {out}");
    dump_no_haproxy(&b);
    // HAProxy is restarted from its config (blue 100, green 0), as systemd would.
    let _ = std::fs::remove_file(&b.h.socket);
    let cfg = b.h.dir().join("haproxy.cfg");
    let st = std::process::Command::new("/usr/sbin/haproxy")
        .arg("-f")
        .arg(&cfg)
        .arg("-D")
        .arg("-p")
        .arg(&pidfile)
        .status()
        .expect("haproxy");
    assert!(st.success());
    wait_for(Duration::from_secs(10), "haproxy back", || {
        std::os::unix::net::UnixStream::connect(&b.h.socket).ok()
    });
    std::thread::sleep(Duration::from_secs(3));
    eprintln!("after haproxy restart:");
    dump(&b);
    let (code2, out2) = deploy_thread(&b, "v1.0.1").join().expect("deploy");
    eprintln!("next deploy: exit {code2}: {out2}");
    dump(&b);
    let rows = all_canaries(&b.db());
    let unfinished: Vec<_> = rows
        .iter()
        .filter(|r| {
            ["starting", "stepping", "holding"].contains(&r.2.as_str())
                && r.0 != rows.last().map_or(0, |l| l.0)
        })
        .collect();
    assert!(
        unfinished.is_empty(),
        "v1.0.1's record stays unfinished forever behind the next deploy: {rows:?}"
    );
    let pid = std::fs::read_to_string(&pidfile).unwrap_or_default();
    let _ = std::process::Command::new("kill").arg(pid.trim()).status();
}

fn dump_no_haproxy(b: &Bed) {
    eprintln!("canaries: {:#?}", all_canaries(&b.db()));
    eprintln!(
        "containers blue {:?} green {:?}",
        project_containers(&b.site.project_of(Slot::Blue)),
        project_containers(&b.site.project_of(Slot::Green))
    );
}

/// R6. Two `rollwatch deploy` at once (two pipelines): the second is either refused (409, exit
/// 2, nothing changed) or runs; if it is refused, it must not run later anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r6_a_second_deploy_at_once_is_refused_or_run_never_both() {
    let b = bed("rvtwo", &["v1.0.1", "v1.6.0"], "10m").await;
    // Longer steps: the first deploy is still running when the second comes.
    let text = std::fs::read_to_string(&b.config)
        .unwrap()
        .replace("step_min = \"2s\"", "step_min = \"5s\"");
    std::fs::write(&b.config, text).unwrap();
    let _c = b.controller(&[]);
    let _load = Load::start(&b);
    let first = deploy_thread(&b, "v1.0.1");
    // The second comes once the first is taken (a fixed head start let it overtake the first
    // on a loaded machine).
    wait_for(Duration::from_secs(60), "the first deploy taken", || {
        b.newest()
    });
    let t = Instant::now();
    let second = deploy_thread(&b, "v1.6.0");
    let (c2, o2) = second.join().expect("second");
    eprintln!(
        "second deploy (v1.6.0): exit {c2} after {:?}: {o2}",
        t.elapsed()
    );
    let (c1, o1) = first.join().expect("first");
    eprintln!("first deploy (v1.0.1): exit {c1}: {o1}");
    // Whatever was queued would run now.
    std::thread::sleep(Duration::from_secs(10));
    dump(&b);
    let rows = all_canaries(&b.db());
    let second_runs = rows.iter().filter(|r| r.1 == "v1.6.0").count();
    assert_eq!(c2, 2, "the second is refused at once: {o2}");
    assert!(o2.contains("in flight"), "{o2}");
    assert_eq!(second_runs, 0, "refused, and it never ran: {rows:#?}");
    assert_eq!(c1, 0, "the first went on: {o1}");
}

/// R7. kill -9 while the new slot is starting (state `starting`, before any weight change),
/// then restart: aborted, no green container left (compose may still be creating it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r7_kill_9_while_the_new_slot_starts_then_restart_leaves_one_slot() {
    let b = bed("rvkstart", &["v1.0.1"], "10m").await;
    let mut c = b.controller(&[]);
    let _load = Load::start(&b);
    let deploy = deploy_thread(&b, "v1.0.1");
    wait_for(Duration::from_secs(60), "state starting", || {
        b.newest().filter(|r| r.state == "starting")
    });
    c.kill9();
    let (code, out) = deploy.join().expect("deploy");
    eprintln!("deploy: exit {code}: {out}");
    let _c = b.controller(&[]);
    let r = wait_for(Duration::from_secs(60), "aborted", || {
        b.newest().filter(|r| r.state == "aborted")
    });
    std::thread::sleep(Duration::from_secs(15));
    dump(&b);
    eprintln!("{r:?}");
    assert_eq!(b.weights(), (100, 0));
    assert!(
        project_containers(&b.site.project_of(Slot::Green)).is_empty(),
        "green left behind"
    );
    assert_eq!(
        (r.weights, r.applied),
        ((100, 0), true),
        "the store matches HAProxy"
    );
}

/// R8. A wrong server name in the config: check-config --probe and a deploy say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r8_a_wrong_server_or_backend_name_is_named_by_the_probe_and_the_deploy() {
    let b = bed("rvname", &["v1.0.1"], "10m").await;
    let good = std::fs::read_to_string(&b.config).unwrap();
    for (what, text, says) in [
        (
            "server",
            good.replace(
                "servers = [\"blue\", \"green\"]",
                "servers = [\"blue\", \"grean\"]",
            ),
            "backend be has no server grean",
        ),
        (
            "backend",
            good.replace("backend = \"be\"", "backend = \"bee\""),
            "has no backend bee",
        ),
        (
            "socket",
            good.replace("haproxy.sock", "nothere.sock"),
            "cannot reach the load balancer's runtime socket",
        ),
    ] {
        std::fs::write(&b.config, &text).unwrap();
        let (code, out) = cli(&b.config, &["check-config", "--probe"], false);
        eprintln!("--- {what}: check-config --probe exit {code}:\n{out}");
        assert_ne!(code, 0, "{what}: {out}");
        assert!(out.contains(says), "{what}: {out}");
    }
    std::fs::write(
        &b.config,
        good.replace(
            "servers = [\"blue\", \"green\"]",
            "servers = [\"blue\", \"grean\"]",
        ),
    )
    .unwrap();
    let _c = b.controller(&[]);
    let _load = Load::start(&b);
    let (code, out) = deploy_thread(&b, "v1.0.1").join().unwrap();
    eprintln!("deploy with a wrong server name: exit {code}: {out}");
    dump(&b);
    assert_eq!(code, 2, "refused: {out}");
    assert!(out.contains("grean"), "{out}");
    assert!(b.newest().is_none(), "nothing recorded");
    assert!(project_containers(&b.site.project_of(Slot::Green)).is_empty());
}

/// ~50 req/s through HAProxy's frontend until dropped (bounded: 6 minutes).
struct Load {
    stop: Arc<AtomicBool>,
    t: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl Load {
    fn start(b: &Bed) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (port, s) = (b.h.port, stop.clone());
        let t = std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            let until = Instant::now() + Duration::from_secs(360);
            while !s.load(Ordering::Relaxed) && Instant::now() < until {
                let (o, f) = load_through(port, 50, s.clone()).join().unwrap_or((0, 0));
                ok += o;
                failed += f;
            }
            (ok, failed)
        });
        Load { stop, t: Some(t) }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.t.take() {
            let (ok, failed) = t.join().unwrap_or((0, 0));
            eprintln!("load: ok {ok}, failed {failed}");
        }
    }
}

/// R9. kill -9 while a rollback after the hold starts the known-good version (a switch back:
/// a canary row of the good tag in `starting` and a rollback intent), then restart: no
/// rollback record may stay an intent forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_kill_9_during_a_switch_back_then_restart_finishes_its_rollback_record() {
    let b = bed("rvswk", &["v1.0.1"], "2s").await;
    let mut c = b.controller(&[]);
    let load = Load::start(&b);
    let (code, out) = deploy_thread(&b, "v1.0.1").join().expect("deploy");
    drop(load);
    assert_eq!(code, 0, "{out}");
    wait_for(Duration::from_secs(30), "the hold's end", || {
        b.newest().filter(|r| r.state == "promoted")
    });
    record_newest_known_good(&b.db(), "v1.0.0");
    let green = project_containers(&b.site.project_of(Slot::Green));
    sh("docker", &["kill", "--signal", "STOP", &green[0]]);
    wait_for(Duration::from_secs(90), "the switch back starting", || {
        b.newest().filter(|r| r.state == "starting")
    });
    c.kill9();
    eprintln!("at kill: {:?}", rollback_errors(&b.db()));
    let _c = b.controller(&[]);
    std::thread::sleep(Duration::from_secs(25));
    dump(&b);
    let rows = rollback_errors(&b.db());
    assert!(
        rows.iter().all(|r| r.0 != "intent"),
        "a rollback record left as an intent after the restart: {rows:?}"
    );
}

/// R10. A canary aborted by its own judge (v1.6.0, a quarter of requests fail): afterwards the
/// watcher must not start a rollback of its own (a switch back) for a version already gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r10_after_an_abort_the_watcher_does_not_roll_back_a_version_already_gone() {
    let b = bed("rvafter", &["v1.6.0"], "10m").await;
    let _c = b.controller(&[]);
    let _load = Load::start(&b);
    let (code, out) = deploy_thread(&b, "v1.6.0").join().expect("deploy");
    eprintln!("deploy: exit {code}: {out}");
    assert_eq!(code, 1, "{out}");
    std::thread::sleep(Duration::from_secs(30));
    dump(&b);
    let rows = rollback_errors(&b.db());
    assert!(rows.is_empty(), "{rows:?}");
    assert_eq!(all_canaries(&b.db()).len(), 1);
    let (_, targets) = http_get(b.d.api_port, "/api/v1/targets").expect("targets");
    eprintln!("targets: {targets}");
}

/// R11. The watcher's bake ends while a canary is still at its first step (slow traffic, or
/// long steps): the watcher records the undecided canary's tag as known-good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r11_the_watcher_does_not_make_an_undecided_canary_known_good() {
    let b = bed("rvbake", &["v1.0.1"], "10m").await;
    let text = std::fs::read_to_string(&b.config)
        .unwrap()
        .replace("step_min = \"2s\"", "step_min = \"40s\"")
        .replace("bake = \"90s\"", "bake = \"5s\"");
    std::fs::write(&b.config, text).unwrap();
    let check = cli(&b.config, &["check-config"], false);
    eprintln!("check-config: {check:?}");
    let _c = b.controller(&[]);
    let _load = Load::start(&b);
    let deploy = deploy_thread(&b, "v1.0.1");
    wait_for(Duration::from_secs(60), "the 10% step", || {
        b.newest().filter(|r| r.steps.contains("[10,"))
    });
    std::thread::sleep(Duration::from_secs(12));
    let r = b.newest().expect("record");
    let good = query(&b.db(), "SELECT tag FROM known_good", |r| {
        r.get::<_, String>(0)
    });
    eprintln!("while {} at {}: known_good {good:?}", r.state, r.steps);
    let (code, out) = cli(&b.config, &["abort", "staging", "backend"], true);
    eprintln!("abort: {code} {out}");
    let _ = deploy.join();
    dump(&b);
    let good_after = query(&b.db(), "SELECT tag FROM known_good", |r| {
        r.get::<_, String>(0)
    });
    let bad = query(&b.db(), "SELECT tag FROM bad_tags", |r| {
        r.get::<_, String>(0)
    });
    eprintln!("after the abort: known_good {good_after:?}, bad {bad:?}");
    assert_eq!(r.state, "stepping");
    assert!(
        !good.contains(&"v1.0.1".to_string()),
        "v1.0.1 made known-good at 10% with the canary undecided: {good:?}"
    );
}

/// R12. `rollwatch abort` during the 50% step: HAProxy's weights back, the store with them
/// (the time it took is printed, not asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r12_an_abort_at_50_percent_puts_the_weights_back() {
    let b = bed("rvab50", &["v1.0.1"], "10m").await;
    let text = std::fs::read_to_string(&b.config)
        .unwrap()
        .replace("step_min = \"2s\"", "step_min = \"20s\"");
    std::fs::write(&b.config, text).unwrap();
    let _c = b.controller(&[]);
    let _load = Load::start(&b);
    let deploy = deploy_thread(&b, "v1.0.1");
    wait_for(Duration::from_secs(90), "the 50% step", || {
        b.newest().filter(|r| r.steps.contains("[50,"))
    });
    assert_eq!(b.weights(), (50, 50));
    let t = Instant::now();
    let (code, out) = cli(&b.config, &["abort", "staging", "backend"], true);
    let answered = t.elapsed();
    wait_for(Duration::from_secs(10), "weights back", || {
        (b.weights() == (100, 0)).then_some(())
    });
    let back = t.elapsed();
    let (dcode, dout) = deploy.join().unwrap();
    eprintln!("abort answered in {answered:?} (exit {code}: {out}); weights back in {back:?}; deploy exit {dcode}: {dout}");
    dump(&b);
    let r = b.newest().unwrap();
    assert_eq!(r.state, "aborted");
    assert_eq!(
        (r.weights, r.applied),
        ((100, 0), true),
        "the store matches HAProxy"
    );
}

/// R13. `rollwatch promote` at the 10% step: all traffic to the new version, then the hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r13_a_promote_at_10_percent_skips_the_steps_and_holds() {
    let b = bed("rvprom", &["v1.0.1"], "10m").await;
    let text = std::fs::read_to_string(&b.config)
        .unwrap()
        .replace("step_min = \"2s\"", "step_min = \"30s\"");
    std::fs::write(&b.config, text).unwrap();
    let _c = b.controller(&[]);
    let _load = Load::start(&b);
    let deploy = deploy_thread(&b, "v1.0.1");
    wait_for(Duration::from_secs(90), "the 10% step", || {
        b.newest().filter(|r| r.steps.contains("[10,"))
    });
    let (code, out) = cli(&b.config, &["promote", "staging", "backend"], true);
    let (dcode, dout) = deploy.join().unwrap();
    eprintln!("promote exit {code}: {out}; deploy exit {dcode}: {dout}");
    dump(&b);
    let r = b.newest().unwrap();
    assert_eq!(
        (r.state.as_str(), b.weights()),
        ("holding", (0, 100)),
        "{r:?}"
    );
    assert!(!project_containers(&b.site.project_of(Slot::Blue)).is_empty());
}

/// R14. A version that crashes 2 s after start (v1.2.0): aborted, marked bad, weights back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r14_a_version_that_crashes_after_start_is_aborted_and_marked_bad() {
    let b = bed("rvcrash", &["v1.2.0"], "10m").await;
    let _c = b.controller(&[]);
    let load = Load::start(&b);
    let t = Instant::now();
    let (code, out) = deploy_thread(&b, "v1.2.0").join().unwrap();
    eprintln!("deploy exit {code} in {:?}: {out}", t.elapsed());
    drop(load);
    dump(&b);
    let r = b.newest().unwrap();
    assert_eq!(code, 1);
    assert_eq!(
        (r.state.as_str(), b.weights()),
        ("aborted", (100, 0)),
        "{r:?}"
    );
    assert!(project_containers(&b.site.project_of(Slot::Green)).is_empty());
    let bad = query(&b.db(), "SELECT tag FROM bad_tags", |r| {
        r.get::<_, String>(0)
    });
    assert_eq!(bad, vec!["v1.2.0".to_string()]);
}

/// R15. kill -9 right after the promotion (state `holding`), then restart: the hold resumes,
/// both slots run, HAProxy matches the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r15_kill_9_right_after_promotion_then_restart_resumes_the_hold() {
    let b = bed("rvkprom", &["v1.0.1"], "10m").await;
    let mut c = b.controller(&[]);
    let load = Load::start(&b);
    let deploy = deploy_thread(&b, "v1.0.1");
    wait_for(Duration::from_secs(90), "holding", || {
        b.newest().filter(|r| r.state == "holding")
    });
    c.kill9();
    let _ = deploy.join();
    let _c = b.controller(&[]);
    std::thread::sleep(Duration::from_secs(8));
    drop(load);
    dump(&b);
    let r = b.newest().unwrap();
    assert_eq!(
        (r.state.as_str(), r.weights, r.applied),
        ("holding", (0, 100), true)
    );
    assert_eq!(b.weights(), (0, 100));
    assert!(!project_containers(&b.site.project_of(Slot::Blue)).is_empty());
    let (_, targets) = http_get(b.d.api_port, "/api/v1/targets").unwrap();
    eprintln!("targets: {targets}");
    assert!(
        targets.contains("promoted; the old slot is held until"),
        "{targets}"
    );
    let (_, m) = http_get(b.d.api_port, "/metrics").unwrap();
    assert!(
        m.contains("rollwatch_canary_weight{env=\"staging\",role=\"backend\",slot=\"green\"} 100"),
        "the weight gauge after a restart"
    );
}
