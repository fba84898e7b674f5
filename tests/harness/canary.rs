//! A canary target under a real `rollwatch run`, as tests/canary_controller.rs and
//! tests/canary_review.rs drive it: v1.0.0 live in the blue slot behind HAProxy, CI's
//! `rollwatch deploy`, and readers of what came of it (HAProxy's weights, the store's canary
//! record, the exported metrics).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::haproxy::load_through;
use super::slots::SlotBed;
use super::*;

/// A canary target: v1.0.0 live in the blue slot at weight 100, green empty at weight 0.
pub struct Bed {
    pub slots: SlotBed,
    pub config: PathBuf,
}

impl std::ops::Deref for Bed {
    type Target = SlotBed;
    fn deref(&self) -> &SlotBed {
        &self.slots
    }
}

pub async fn bed(prefix: &str, tags: &[&str], hold: &str) -> Bed {
    let slots = SlotBed::start(prefix, "v1.0.0", tags).await;
    let config = slots.write_config(
        r#"watch = { interval = "500ms", bake = "90s", grace = "0s" }"#,
        &format!(
            "steps = [10, 50, 100]\nstep_min = \"2s\"\nstep_min_requests = 20\nhold = \"{hold}\""
        ),
    );
    Bed { slots, config }
}

impl Bed {
    pub fn db(&self) -> PathBuf {
        self.d.db()
    }

    /// HAProxy's weights of (blue, green), read over its Runtime API.
    pub fn weights(&self) -> (u32, u32) {
        let w = |s: &str| {
            let answer = self.h.runtime(&format!("get weight be/{s}"));
            answer
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("get weight be/{s}: {answer:?}"))
        };
        (w("blue"), w("green"))
    }

    /// The newest canary record.
    pub fn newest(&self) -> Option<Canary> {
        query(
            &self.db(),
            "SELECT state, blue, green, applied, steps, reason, ended_ms FROM canaries ORDER BY id DESC LIMIT 1",
            |r| {
                Ok(Canary {
                    state: r.get(0)?,
                    weights: (r.get(1)?, r.get(2)?),
                    applied: r.get(3)?,
                    steps: r.get(4)?,
                    reason: r.get(5)?,
                    ended_ms: r.get(6)?,
                })
            },
        )
        .into_iter()
        .next()
    }

    /// `rollwatch deploy staging backend <tag>` under ~50 req/s through HAProxy, kept up
    /// until half a second after the deploy ended.
    pub fn deploy_under_load(&self, tag: &str) -> Deployed {
        let stop = Arc::new(AtomicBool::new(false));
        let traffic = load_through(self.h.port, 50, stop.clone());
        let (code, out) = deploy_with(&self.config, tag);
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let (ok, failed) = traffic.join().expect("load");
        Deployed {
            code,
            out,
            ok,
            failed,
        }
    }

    pub fn controller(&self, env: &[(&str, &str)]) -> Controller {
        let c = Controller::start(&self.config, env);
        wait_for(Duration::from_secs(20), "the controller's API", || {
            http_get(self.d.api_port, "/healthz").filter(|(s, _)| *s == 200)
        });
        c
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        metric_value(self.d.api_port, name, &[])
    }
}

pub struct Deployed {
    pub code: i32,
    pub out: String,
    /// Requests the load generator saw answered 2xx, and not.
    pub ok: u64,
    pub failed: u64,
}

#[derive(Debug)]
pub struct Canary {
    pub state: String,
    pub weights: (u32, u32),
    pub applied: bool,
    pub steps: String,
    pub reason: String,
    pub ended_ms: Option<i64>,
}

/// The first step's time from the stored steps (`[[10, ms], ...]`).
pub fn first_step_ms(steps: &str) -> i64 {
    let v: Vec<(u32, i64)> = serde_json::from_str(steps).expect("steps json");
    v.first().expect("a first step").1
}

/// The demo service's own request counter on `port`, sampled until `stop`: the largest value.
pub fn count_requests(
    port: u16,
    stop: Arc<AtomicBool>,
) -> (Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let seen = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    let t = std::thread::spawn(move || {
        for _ in 0..3000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Some(c) = demo_counters(port) {
                let n: f64 = c
                    .split(',')
                    .nth(1)
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0.0);
                s.fetch_max(n as u64, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    (seen, t)
}

/// `rollwatch deploy staging backend <tag>` as CI runs it: (exit code, output).
pub fn deploy_with(config: &std::path::Path, tag: &str) -> (i32, String) {
    let out = rollwatch(config)
        .env("ROLLWATCH_API_TOKEN", TOKEN)
        .args(["deploy", "staging", "backend", tag, "--timeout", "150s"])
        .output()
        .expect("rollwatch deploy");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs `rollwatch <args>` against the bed's controller; (exit code, stdout and stderr).
pub fn cli(config: &std::path::Path, args: &[&str], token: bool) -> (i32, String) {
    let mut cmd = rollwatch(config);
    if token {
        cmd.env("ROLLWATCH_API_TOKEN", TOKEN);
    } else {
        cmd.env_remove("ROLLWATCH_API_TOKEN");
    }
    let out = cmd.args(args).output().expect("rollwatch");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
