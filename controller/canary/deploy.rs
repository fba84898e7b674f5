//! One canary deploy from start to end, on a target's two slots: start the new version in the
//! idle slot beside the live one, wait for its `/health`, move traffic to it step by step while
//! judging it against the live slot ([`super::flow`]), and either promote it or abort: all
//! traffic back to the live slot in one weight change, the new slot's containers removed.
//!
//! After a promotion the old slot is held at weight 0 for `hold`: a regression found in that
//! time moves all traffic back to it by weight ([`CanaryDeploy::flip_back`]), no container
//! needs to start.
//!
//! The store, the hold's timer, orders from people and the watcher are the runner's part
//! ([`super::runner`]): it hands this flow a driver that records every weight change.

use std::sync::Arc;
use std::time::Duration;

use super::flow::{self, next_order, Early, Manual, Outcome, Steering};
use super::judge::CanaryJudge;
use super::slots::{SlotError, SlotSite};
use crate::analysis::MetricPolicy;
use crate::config::CanaryConfig;
use crate::probe::Prober;
use crate::rollback::CommandRunner;
use crate::traffic::{Slot, TrafficDriver, TrafficError};

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    Traffic(#[from] TrafficError),
    #[error("{tag} could not be started in the {slot} slot: {why}; no traffic went to it")]
    NotStarted {
        tag: String,
        slot: &'static str,
        why: String,
    },
    #[error("{tag} in the {slot} slot never answered /health ok within {}: {why}; its containers were removed and no traffic went to it", humantime::format_duration(*.within))]
    NeverHealthy {
        tag: String,
        slot: &'static str,
        within: Duration,
        why: String,
    },
}

/// A promoted version with the old one still running at weight 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The slot of the version before, kept for the hold.
    pub old: Slot,
    /// The promoted version's slot.
    pub new: Slot,
    /// When the hold ends (ms): then the old slot is stopped.
    pub until_ms: i64,
}

pub struct CanaryDeploy<'a, D: TrafficDriver> {
    pub site: &'a SlotSite,
    pub runner: Arc<dyn CommandRunner>,
    pub driver: &'a D,
    pub config: &'a CanaryConfig,
    pub prober: Prober,
    /// The slots' health path, e.g. `/health`.
    pub health_path: String,
    pub policy: MetricPolicy,
    /// How often both slots are read.
    pub interval: Duration,
    /// The longest the new slot may take to answer /health, and the whole canary to decide.
    pub start_within: Duration,
    pub decide_within: Duration,
}

impl<D: TrafficDriver> CanaryDeploy<'_, D> {
    /// The live slot is the one with the larger weight (blue on a tie: a fresh backend).
    pub async fn live_slot(&self) -> Result<Slot, TrafficError> {
        let [blue, green] = self.driver.read().await?;
        Ok(if green.weight > blue.weight {
            Slot::Green
        } else {
            Slot::Blue
        })
    }

    /// The new slot answers its /health, and the balancer's own checks see it up too (else
    /// the judge would call it DOWN).
    pub async fn until_up(&self, slot: Slot) -> Result<(), String> {
        let url = format!(
            "http://127.0.0.1:{}{}",
            self.site.port_of(slot),
            self.health_path
        );
        let url = url::Url::parse(&url).map_err(|e| e.to_string())?;
        self.prober
            .wait_healthy(
                &url,
                Duration::from_secs(1),
                Duration::from_millis(200),
                self.start_within,
            )
            .await
            .map_err(|f| f.to_string())?;
        self.until_balancer_sees_up(slot).await
    }

    async fn until_balancer_sees_up(&self, slot: Slot) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.start_within;
        loop {
            let slots = self.driver.read().await.map_err(|e| e.to_string())?;
            let status = slots
                .iter()
                .find(|s| s.slot == slot)
                .map(|s| s.status.clone())
                .unwrap_or_default();
            if status.starts_with("UP") || status == "no check" {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("the load balancer still reports the slot {status}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Deploys `tag` beside `live`. The caller has checked the site ([`SlotSite::check`])
    /// before anything was recorded: the runner does, so a refused compose file leaves no record.
    pub async fn deploy<S: Steering>(
        &self,
        steer: &S,
        live: Slot,
        live_tag: &str,
        tag: &str,
    ) -> Result<(Slot, Outcome), DeployError> {
        let idle = live.other();
        if let Err(e) = self.site.start(&self.runner, idle, tag).await {
            // Whatever part of it started goes again; no traffic went to it.
            let _ = self.site.remove(&self.runner, idle).await;
            return Err(DeployError::NotStarted {
                tag: tag.to_string(),
                slot: idle.name(),
                why: e.to_string(),
            });
        }
        // A person's order while the slot starts is taken now, not after the health wait.
        let (up, early) = tokio::select! {
            up = self.until_up(idle) => (up, None),
            order = next_order(steer) => match order {
                Manual::Abort(why) => (Ok(()), Some(Manual::Abort(why))),
                Manual::Promote => (self.until_up(idle).await, Some(Manual::Promote)),
            },
        };
        if let Some(Manual::Abort(why)) = early {
            self.site.remove(&self.runner, idle).await?;
            return Ok((idle, Outcome::aborted_while_starting(why)));
        }
        if let Err(why) = up {
            self.site.remove(&self.runner, idle).await?;
            return Err(DeployError::NeverHealthy {
                tag: tag.to_string(),
                slot: idle.name(),
                within: self.start_within,
                why,
            });
        }
        let steer = Early {
            inner: steer,
            first: std::sync::Mutex::new(early),
        };
        let mut judge = CanaryJudge::new(self.policy, live_tag, tag, idle);
        let outcome = flow::run(
            self.driver,
            &steer,
            self.config,
            &mut judge,
            idle,
            self.interval,
            self.decide_within,
        )
        .await?;
        if !outcome.promoted {
            self.site.remove(&self.runner, idle).await?;
        }
        Ok((idle, outcome))
    }

    /// The hold after a promotion in `slot` that ended at `ended_ms`.
    pub fn held(&self, slot: Slot, ended_ms: i64) -> Held {
        let hold = i64::try_from(self.config.hold.as_millis()).unwrap_or(i64::MAX);
        Held {
            old: slot.other(),
            new: slot,
            until_ms: ended_ms.saturating_add(hold),
        }
    }

    /// A regression of the promoted version during the hold: all traffic back to the held
    /// slot in one weight change (the old slot first), then the new slot's containers
    /// removed. Returns how long the weight change took.
    pub async fn flip_back(&self, held: &Held) -> Result<Duration, DeployError> {
        let started = tokio::time::Instant::now();
        self.driver
            .set_weights(&[(held.old, 100), (held.new, 0)])
            .await?;
        let took = started.elapsed();
        self.site.remove(&self.runner, held.new).await?;
        Ok(took)
    }

    /// The hold ended without a regression: the old slot's containers are stopped.
    pub async fn end_hold(&self, held: &Held) -> Result<(), DeployError> {
        self.site.remove(&self.runner, held.old).await?;
        Ok(())
    }
}
