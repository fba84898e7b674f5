//! `scripts/bench takeover`: how long a follower takes to lead after the leader is killed with
//! `kill -9` right after writing a rollback intent, and to finish that rollback (10 runs, p50
//! and p95, appended to docs/BENCHMARKS.md). `#[ignore]`d: a benchmark, not a test; the bound
//! the issue sets (10 s) is asserted by tests/ha.rs.

mod harness;

use std::time::{Duration, Instant};

use harness::ha::HaBed;
use harness::*;

const RUNS: usize = 10;
/// A rollback every run: no cooldown in the way of the next one.
const WATCH: &str =
    r#"watch = { interval = "500ms", failures = 2, grace = "1s", bake = "2s", cooldown = "1s" }"#;

struct Run {
    takeover: Duration,
    finished: Duration,
}

#[test]
#[ignore]
fn takeover_after_kill9_of_the_leader() {
    let bed = HaBed::with_watch("bench-takeover", "", WATCH);
    let mut runs = Vec::new();
    for n in 0..RUNS {
        let mut a = bed.start_leader(
            &format!("a{n}"),
            &[("ROLLWATCH_FAULT_POINT", "after-intent")],
        );
        let b = bed.start(&format!("b{n}"), &[]);
        b.wait_metric("rollwatch_leader", 0.0, Duration::from_secs(30));
        bed.wait_event("promoted", "v1.0.0", Duration::from_secs(60));
        let before = bed.rollbacks().len();
        bed.d.deploy("v1.1.0");
        wait_for(Duration::from_secs(60), "the intent", || {
            bed.rollbacks()
                .into_iter()
                .skip(before)
                .find(|r| r.1 == "intent")
        });
        a.c.kill9();
        let killed = Instant::now();
        let takeover = bed.wait_lease_of(&b.name, killed, Duration::from_secs(30));
        wait_for(Duration::from_secs(60), "the resumed rollback", || {
            bed.rollbacks()
                .into_iter()
                .skip(before)
                .find(|r| r.1 == "succeeded")
        });
        let finished = killed.elapsed();
        eprintln!("run {n}: takeover {takeover:?}, finished {finished:?}");
        runs.push(Run { takeover, finished });
        // A clean stop gives the lease up at once: the next run's leader takes it.
        sh("kill", &["-TERM", &b.pid()]);
        wait_for(Duration::from_secs(30), "b to stop", || {
            bed.lease().is_none().then_some(())
        });
        drop(b);
        bed.d.assert_runs("v1.0.0");
    }
    let table = table(&runs);
    println!("{table}");
    if let Ok(path) = std::env::var("ROLLWATCH_BENCH_FILE") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .expect("bench file");
        writeln!(f, "{table}").expect("append the table");
    }
}

fn percentile(xs: &[Duration], p: f64) -> Duration {
    let mut v = xs.to_vec();
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn table(runs: &[Run]) -> String {
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let row = |name: &str, xs: Vec<Duration>| {
        format!(
            "| {name} | {} | {} | {} | {} |\n",
            secs(percentile(&xs, 0.5)),
            secs(percentile(&xs, 0.95)),
            secs(*xs.iter().min().expect("runs")),
            secs(*xs.iter().max().expect("runs")),
        )
    };
    let date = command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    format!(
        "\n## Failover: kill -9 of the leader right after a rollback intent ({date})\n\n{}\n\n\
         Two `rollwatch run` on one PostgreSQL 15 (loopback), default lease (ttl 5 s, renewed \
         every 1 s); {n} runs, each with new processes. The leader is stopped at the fault point \
         `after-intent` and killed with SIGKILL; measured from the kill, by polling the lease \
         row every 100 ms.\n\n\
         | measure | p50 | p95 | min | max |\n|---|---|---|---|---|\n{}{}",
        machine(),
        row(
            "kill -9 -> follower holds the lease",
            runs.iter().map(|r| r.takeover).collect()
        ),
        row(
            "kill -9 -> the intent resumed, run and validated (record `succeeded`)",
            runs.iter().map(|r| r.finished).collect()
        ),
        n = runs.len(),
    )
}
