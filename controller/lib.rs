//! rollwatch: watches Docker-deployed services after every deploy and rolls a regressed
//! environment and role back to its last known-good image tag. See DESIGN.md for the data flow;
//! each module below owns one concept of it.

pub mod alertmanager;
pub mod analysis;
pub mod api;
pub mod build_info;
pub mod canary;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod detect;
pub mod docker;
pub mod engine;
pub mod init;
pub mod lease;
pub mod metrics;
pub mod preflight;
pub mod probe;
pub mod registry;
pub mod replay;
pub mod rollback;
pub mod secrets;
pub mod server;
pub mod store;
pub mod tag;
pub mod target;
pub mod telemetry;
pub mod traffic;
pub mod ui;
pub mod verdict;
pub mod watch;

#[cfg(test)]
mod props_util;

/// The innermost cause of an error ("Connection refused"): what a person needs to read, where
/// the outer layers only say which client call failed.
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(inner) = cur.source() {
        cur = inner;
    }
    cur.to_string()
}
