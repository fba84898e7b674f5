//! Error-metric sources: where a target's request, error and latency counters are read from —
//! the service's own `/metrics` (scraped and parsed here) or a Prometheus server (PromQL over its
//! HTTP API). A source returns cumulative counters with counter resets already handled series by
//! series (the `counters` module), so they only ever grow; turning them into per-interval evidence is
//! [`crate::analysis`]'s job. A source that is down, slow or answers garbage (NaN and ±Inf
//! included) returns an error, which the watcher turns into an `inconclusive` verdict — never a
//! rollback.

mod counters;
mod feed;
pub mod parse;
mod selector;
mod source;

pub use feed::{FeedRound, MetricsFeed, StartupGrace};
pub use selector::{Selector, SelectorError};
pub use source::{MetricsSource, Reading, SourceError};
