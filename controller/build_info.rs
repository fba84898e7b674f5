//! What this binary is: the crate version and the git commit it was built from (recorded by
//! `build.rs`; `unknown` for a build outside a git checkout). Shown by `rollwatch --version` and
//! exported as the `rollwatch_build_info` gauge's labels; nothing else reads git.

/// The crate version, `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `git rev-parse --short=12 HEAD` at build time, `-dirty` appended for uncommitted changes.
pub const GIT_COMMIT: &str = env!("ROLLWATCH_GIT_COMMIT");

/// `0.1.0 (commit abc123def456)`, the text of `rollwatch --version`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("ROLLWATCH_GIT_COMMIT"),
    ")"
);
