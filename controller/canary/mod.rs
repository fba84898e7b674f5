//! Canary deploys: a new version in the idle slot beside the live one, judged on its share of
//! the traffic while the traffic driver ([`crate::traffic`]) moves weight to it step by step.
//!
//! - [`judge`] and [`plan`]: the pure decisions (is the canary worse? stay, step, promote,
//!   abort?);
//! - [`flow`] steps one canary on a traffic driver, [`deploy`] adds the slots around it;
//! - [`runner`] owns a target's slots and weights in `rollwatch run` (deploys, the hold,
//!   orders from people and the watcher; [`handle`] is how they reach it, [`site`] where its
//!   slots run), [`record`] writes each weight change as an intent, and `flip` takes traffic
//!   back and finishes what a crash left.

pub mod deploy;
mod flip;
pub mod flow;
pub mod handle;
pub mod judge;
pub mod plan;
pub mod record;
pub mod runner;
pub mod site;
pub mod slots;
