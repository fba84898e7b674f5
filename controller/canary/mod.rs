//! Canary deploys: a new version in the idle slot beside the live one, judged on its share of
//! the traffic while the traffic driver ([`crate::traffic`]) moves weight to it step by step.
//! This module holds the judgement; the deploy flow that steers the slots builds on it.

pub mod deploy;
mod flip;
pub mod flow;
pub mod judge;
pub mod plan;
pub mod record;
pub mod runner;
pub mod slots;
