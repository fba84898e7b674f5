//! What rollwatch tells the outside world: logs (human-readable by default, JSON with
//! `--log-format json`) and the Prometheus metrics served on `/metrics` ([`Metrics`]).

mod exposition;
mod lease;
mod registry;
mod series;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub use lease::LeaseSeries;
pub use registry::Metrics;
pub use series::{RollbackResult, Source, TargetSeries, STATES};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber; logs go to stderr so command output on stdout stays clean.
/// `default_level` applies when `RUST_LOG` is unset.
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Colour codes only for a person at a terminal. tracing-subscriber colours whenever `NO_COLOR`
/// is unset, terminal or not, so log files, pipes and journald got escape sequences; here a
/// non-terminal or a non-empty `NO_COLOR` (no-color.org) means plain text.
pub fn colour(is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::{Env, TargetId};

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(
            colour(true, Some("".into())),
            "an empty NO_COLOR does not count"
        );
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None), "a pipe or a file gets plain text");
    }

    #[test]
    fn state_gauge_has_exactly_one_active_state_and_tags_are_replaced() {
        let m = Metrics::new();
        let id = TargetId {
            env: Env::Staging,
            role: "backend".into(),
        };
        let series = m.target(&id);
        series.set_state("watching");
        series.set_running_tag(Some("v1.1.0"));
        series.set_running_tag(Some("v1.0.0"));
        let text = m.render();
        assert!(
            text.contains(
                r#"rollwatch_target_state{env="staging",role="backend",state="watching"} 1"#
            ),
            "{text}"
        );
        assert!(text
            .contains(r#"rollwatch_target_state{env="staging",role="backend",state="stable"} 0"#));
        assert!(text.contains(
            r#"rollwatch_running_tag_info{env="staging",role="backend",tag="v1.0.0"} 1"#
        ));
        assert!(!text.contains(r#"tag="v1.1.0""#), "old tag series removed");
        let build_info = format!(
            r#"rollwatch_build_info{{commit="{}",version="{}"}} 1"#,
            crate::build_info::GIT_COMMIT,
            crate::build_info::VERSION
        );
        assert!(
            text.contains(&build_info),
            "{build_info} missing from {text}"
        );
    }
}
