//! `rollwatch replay`: reads a trace file and the policy (config target, defaults, overrides),
//! runs [`crate::replay::replay`] and prints the timeline and the final verdict. All judgement is
//! in the library; this file only gathers inputs and prints. Exit codes follow `rollwatch wait`:
//! 0 promoted, 1 regressed, 3 inconclusive, and 2 for bad input (trace, config or flags).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::{parse_target, Refused};
use crate::analysis::{MetricPolicy, MetricVerdict};
use crate::config::{Config, WatchConfig};
use crate::replay::{check_policy, Outcome, Replay, Settings, Side};

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// The recorded trace: CSV `t_seconds,version,requests,errors[,latency_sum,latency_count]`,
    /// one row per interval and version, counters cumulative as scraped (README: `rollwatch replay`).
    #[arg(long)]
    trace: PathBuf,
    /// Judge as this target of the config does (its `metrics` policy and `watch.bake`).
    /// Without it: the config's only target when `--config` is given, else the defaults.
    #[arg(long, num_args = 2, value_names = ["ENV", "ROLE"])]
    target: Option<Vec<String>>,
    /// The watch window: promoted when no regression this long after the deploy
    /// [default: the target's watch.bake, else 5m].
    #[arg(long, value_parser = humantime::parse_duration)]
    bake: Option<Duration>,
    /// Bound on the false-rollback rate (overrides the config).
    #[arg(long)]
    alpha: Option<f64>,
    /// Requests the candidate must have served before any metric verdict.
    #[arg(long)]
    min_requests: Option<u64>,
    /// Practical effect: candidate error ratio at least this many times the baseline's...
    #[arg(long)]
    error_ratio_factor: Option<f64>,
    /// ...and at least this much higher (0.005 = half a percentage point).
    #[arg(long)]
    error_ratio_increase: Option<f64>,
    /// Latency: candidate median at least this many times the baseline's...
    #[arg(long)]
    latency_factor: Option<f64>,
    /// ...and this much slower (e.g. 100ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    latency_increase: Option<Duration>,
    /// Print only the final verdict line.
    #[arg(long)]
    quiet: bool,
}

/// Runs the subcommand; `config_given` says whether `--config`/`ROLLWATCH_CONFIG` named a file.
pub fn run(args: ReplayArgs, config_path: &Path, config_given: bool) -> anyhow::Result<ExitCode> {
    let (policy, bake, grace, from) = settings(&args, config_path, config_given)?;
    check_policy(&policy).map_err(Refused)?;
    if bake.is_zero() {
        return Err(Refused("--bake 0s: the watch window must be longer than 0".into()).into());
    }
    let text = std::fs::read_to_string(&args.trace)
        .with_context(|| format!("cannot read the trace {}", args.trace.display()))
        .map_err(|e| Refused(format!("{e:#}")))?;
    let trace = crate::replay::parse(&text)
        .map_err(|e| Refused(format!("{}: {e}", args.trace.display())))?;
    let r = crate::replay::replay(
        &trace,
        &Settings {
            policy,
            bake,
            grace,
        },
    );
    if !args.quiet {
        print_header(&args.trace, &r, &policy, bake, &from)?;
        print_timeline(&r)?;
    }
    outln!("{}", final_line(&r))?;
    Ok(ExitCode::from(match r.outcome {
        Outcome::Promoted { .. } => 0,
        Outcome::Regressed { .. } => 1,
        Outcome::Inconclusive(_) => 3,
    }))
}

/// The policy, bake and grace: the target's from the config, or the defaults; then the flags on top.
fn settings(
    args: &ReplayArgs,
    config_path: &Path,
    config_given: bool,
) -> anyhow::Result<(MetricPolicy, Duration, Duration, String)> {
    let target = match (&args.target, config_given) {
        (Some(t), _) => {
            let config = Config::load(config_path)?;
            let id = parse_target(&t[0], &t[1])?;
            let found = config
                .target(&id)
                .cloned()
                .ok_or_else(|| Refused(format!("no target {id} in {}", config.source.display())))?;
            Some((found, config.source))
        }
        (None, true) => {
            let config = Config::load(config_path)?;
            match config.targets.as_slice() {
                [only] => Some((only.clone(), config.source.clone())),
                many => {
                    let ids: Vec<String> = many.iter().map(|t| t.id().to_string()).collect();
                    return Err(Refused(format!(
                        "{} has {} targets ({}): choose one with --target <env> <role>",
                        config.source.display(),
                        many.len(),
                        ids.join(", ")
                    ))
                    .into());
                }
            }
        }
        (None, false) => None,
    };
    let grace = target
        .as_ref()
        .map_or(WatchConfig::default().grace, |(t, _)| t.watch.grace);
    let (mut policy, mut bake, mut from) = match &target {
        Some((t, source)) => (
            t.metrics.as_ref().map(|m| m.policy()).unwrap_or_default(),
            t.watch.bake,
            format!(
                "{} in {}{}",
                t.id(),
                source.display(),
                if t.metrics.is_none() {
                    " (it has no metrics section: default metric policy)"
                } else {
                    ""
                }
            ),
        ),
        None => (
            MetricPolicy::default(),
            WatchConfig::default().bake,
            "defaults".to_string(),
        ),
    };
    let mut overridden = Vec::new();
    let mut set = |name: &str, value: Option<f64>, field: &mut f64| {
        if let Some(v) = value {
            *field = v;
            overridden.push(name.to_string());
        }
    };
    set("alpha", args.alpha, &mut policy.alpha);
    set(
        "min-requests",
        args.min_requests.map(|n| n as f64),
        &mut policy.min_requests,
    );
    set(
        "error-ratio-factor",
        args.error_ratio_factor,
        &mut policy.error_ratio_factor,
    );
    set(
        "error-ratio-increase",
        args.error_ratio_increase,
        &mut policy.error_ratio_increase,
    );
    set(
        "latency-factor",
        args.latency_factor,
        &mut policy.latency_factor,
    );
    set(
        "latency-increase",
        args.latency_increase.map(|d| d.as_secs_f64()),
        &mut policy.latency_increase_s,
    );
    if let Some(b) = args.bake {
        bake = b;
        overridden.push("bake".into());
    }
    if !overridden.is_empty() {
        from = format!("{from}, with --{}", overridden.join(", --"));
    }
    Ok((policy, bake, grace, from))
}

/// Seconds for people: `31s`, `31.5s`, never `-0s`.
fn secs(x: f64) -> String {
    let s = format!("{:.3}", x + 0.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}s")
}

fn print_header(
    path: &Path,
    r: &Replay,
    p: &MetricPolicy,
    bake: Duration,
    from: &str,
) -> std::io::Result<()> {
    let candidate = match (&r.candidate, r.deploy_t) {
        (Some(c), Some(t)) => format!("candidate {c} (deploy: its first row, t={})", secs(t)),
        _ => "no candidate".to_string(),
    };
    outln!(
        "replay of {}: baseline {}, {candidate}",
        path.display(),
        r.baseline
    )?;
    outln!(
        "policy from {from}: alpha {}, min_requests {}, error_ratio_factor {}, error_ratio_increase {}, latency_factor {}, latency_increase {}, bake {}",
        p.alpha,
        p.min_requests,
        p.error_ratio_factor,
        p.error_ratio_increase,
        p.latency_factor,
        secs(p.latency_increase_s),
        humantime::format_duration(bake)
    )?;
    outln!(
        "{:>9}  {:<28} {:<12} evidence",
        "t",
        "population",
        "verdict"
    )
}

fn print_timeline(r: &Replay) -> std::io::Result<()> {
    let candidate = r.candidate.as_deref().unwrap_or_default();
    for (k, s) in r.steps.iter().enumerate() {
        let population = match s.side {
            Side::Baseline => format!("baseline {}", r.baseline),
            Side::Candidate { beside: false } => format!("candidate {candidate}"),
            Side::Candidate { beside: true } => {
                format!("candidate {candidate} +{}", r.baseline)
            }
        };
        let (verdict, evidence) = match &s.verdict {
            None if s.failed => (
                "-",
                "the read failed: the next read only re-anchors the counters".to_string(),
            ),
            None if k == 0 => ("-", "first read: counters anchored".to_string()),
            None => (
                "-",
                format!(
                    "baseline {:.0} requests, {:.0} errors",
                    s.baseline_requests, s.baseline_errors
                ),
            ),
            Some(v) => describe(v),
        };
        outln!(
            "{:>9}  {population:<28} {verdict:<12} {evidence}",
            secs(s.t)
        )?;
    }
    if r.rows_after > 0 {
        outln!(
            "({} later rows not judged: the watcher acts on the first verdict)",
            r.rows_after
        )?;
    }
    Ok(())
}

fn describe(v: &MetricVerdict) -> (&'static str, String) {
    match v {
        MetricVerdict::Waiting(e) => ("waiting", e.clone()),
        MetricVerdict::Healthy(e) => ("healthy", e.clone()),
        MetricVerdict::Regressed { trigger, evidence } => {
            ("regressed", format!("({}) {evidence}", trigger.as_str()))
        }
        MetricVerdict::Inconclusive(e) => ("inconclusive", e.clone()),
    }
}

/// The last line, for people and scripts: `regressed at ...`, `promoted ...` or `inconclusive: ...`.
pub fn final_line(r: &Replay) -> String {
    match &r.outcome {
        Outcome::Regressed {
            t,
            after_deploy,
            trigger,
            evidence,
        } => format!(
            "regressed at t={} ({} after the deploy) ({}): {evidence}",
            secs(*t),
            secs(*after_deploy),
            trigger.as_str()
        ),
        Outcome::Promoted {
            t,
            after_deploy,
            last,
        } => {
            let metrics = match last {
                Some(v) => {
                    let (verdict, evidence) = describe(v);
                    format!("metrics {verdict}: {evidence}")
                }
                None => "no metric verdict".into(),
            };
            format!(
                "promoted at t={} ({} after the deploy): healthy for the whole window; {metrics}",
                secs(*t),
                secs(*after_deploy)
            )
        }
        Outcome::Inconclusive(why) => format!("inconclusive: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_read_well() {
        assert_eq!(secs(31.0), "31s");
        assert_eq!(secs(31.5), "31.5s");
        assert_eq!(secs(0.1234), "0.123s");
        assert_eq!(secs(-0.0), "0s");
        assert_eq!(secs(0.0), "0s");
    }
}
