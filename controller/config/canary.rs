//! `strategy = "canary"`: how a target's new versions reach users. `replace` (the default) is
//! today's behaviour, the new version replaces the old and is watched; `canary` starts it in
//! the idle one of two server slots and moves traffic to it step by step through a load
//! balancer (`[targets.canary]`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    #[default]
    Replace,
    Canary,
}

/// The canary settings of a target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    pub traffic: TrafficConfig,
    /// Percent of the traffic on the new version at each step, increasing, the last 100.
    #[serde(default = "default_steps")]
    pub steps: Vec<u32>,
    /// Each step lasts at least this long...
    #[serde(default = "default_step_min", with = "humantime_serde")]
    pub step_min: Duration,
    /// ...and until the new version served this many requests in it.
    #[serde(default = "default_step_min_requests")]
    pub step_min_requests: u64,
    /// After promotion the old slot keeps running at weight 0 this long, so a regression
    /// found later moves traffic back by weight at once.
    #[serde(default = "default_hold", with = "humantime_serde")]
    pub hold: Duration,
    /// The ports of the blue and the green slot, in that order: the balancer's two servers
    /// point at them, and each slot's compose project gets its own through `port_var`.
    pub ports: [u16; 2],
    /// The variable the compose file takes the service's port from.
    #[serde(default = "default_port_var")]
    pub port_var: String,
}

/// The load balancer that steers the slots.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TrafficConfig {
    Haproxy {
        /// The Runtime API socket (`stats socket <path> level admin`).
        socket: PathBuf,
        /// The backend holding the target's two servers.
        backend: String,
        /// The servers of the blue and the green slot, in that order.
        servers: [String; 2],
    },
}

impl CanaryConfig {
    /// How long a deploy lasts at the least: every step's minimum, then the hold.
    pub fn least_duration(&self) -> Duration {
        let steps = u32::try_from(self.steps.len()).unwrap_or(u32::MAX);
        self.step_min
            .saturating_mul(steps)
            .saturating_add(self.hold)
    }
}

/// A canary target whose watch window ends before its hold does: a regression found late in
/// the hold is reported on a stable tag, not flipped back. Said, not refused: a short window
/// may be deliberate.
pub fn watch_warnings(targets: &[super::TargetConfig]) -> Vec<String> {
    targets
        .iter()
        .filter_map(|t| {
            let c = t.canary.as_ref().filter(|_| t.strategy == Strategy::Canary)?;
            let least = c.least_duration();
            (t.watch.bake < least).then(|| {
                format!(
                    "{}: watch.bake ({}) ends before a canary deploy's steps and hold do (at least {}): a regression found after the watch window is reported, not rolled back; set watch.bake = \"{}\" or more",
                    t.id(),
                    humantime::format_duration(t.watch.bake),
                    humantime::format_duration(least),
                    humantime::format_duration(least)
                )
            })
        })
        .collect()
}

pub fn default_port_var() -> String {
    "APP_PORT".into()
}

pub fn default_steps() -> Vec<u32> {
    vec![10, 50, 100]
}

pub fn default_step_min() -> Duration {
    Duration::from_secs(60)
}

pub fn default_step_min_requests() -> u64 {
    100
}

pub fn default_hold() -> Duration {
    Duration::from_secs(600)
}
