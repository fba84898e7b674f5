//! `rollwatch simulate`: the seeded simulation of the error-ratio verdicts against the peers'
//! defaults, printed as tables and optionally appended to docs/BENCHMARKS.md.

use std::path::PathBuf;

use anyhow::Context;

use crate::analysis::simulate::{self as sim, report};
use crate::analysis::MetricPolicy;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Runs per cell (the claim in the README rests on 1,000).
    #[arg(long, default_value_t = 1000)]
    pub runs: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Only the cells whose traffic label contains this text (e.g. "σ 0.5", "bursts", "iid").
    #[arg(long)]
    pub only: Option<String>,
    /// Append the result tables to this file (docs/BENCHMARKS.md).
    #[arg(long)]
    pub bench_file: Option<PathBuf>,
}

/// The machine a benchmark ran on, for the tables in docs/BENCHMARKS.md: CPU model and cores.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let (runs, seed) = (args.runs.max(1), args.seed);
    let only = |cells: Vec<sim::Scenario>| -> Vec<sim::Scenario> {
        cells
            .into_iter()
            .filter(|s| {
                args.only
                    .as_ref()
                    .is_none_or(|o| s.traffic.label().contains(o.as_str()))
            })
            .collect()
    };
    let started = std::time::Instant::now();
    let healthy = sim::evaluate(&only(sim::healthy_scenarios()), runs, seed);
    let detection = sim::evaluate(&only(sim::detection_scenarios()), runs, seed);
    let checks = report::claim_checks(&healthy, &detection, MetricPolicy::default().alpha);
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let text = format!(
        "## Error-ratio verdicts: simulated deploys ({date})\n\n\
         `rollwatch simulate --runs {runs} --seed {seed}` ({:.0} s, {} cells of {runs} runs; {}). \
         {}\n\n### False rollbacks of healthy deploys\n\n{}\n### Detection of regressed deploys\n\n{}\n### The claim\n\n{}\n",
        started.elapsed().as_secs_f64(),
        healthy.len() + detection.len(),
        machine(),
        sim::SETUP,
        report::healthy_table(&healthy),
        report::detection_table(&detection),
        checks
            .iter()
            .map(|(ok, text)| format!("- {} {text}\n", if *ok { "PASS" } else { "FAIL" }))
            .collect::<String>()
    );
    // The bench file is the durable result: it is written even when stdout's reader left.
    let printed = outln!("{text}");
    if let Some(path) = &args.bench_file {
        append_bench(path, &text)?;
    }
    Ok(printed?)
}

/// Appends a benchmark's table to the bench file (docs/BENCHMARKS.md), creating it if needed.
pub fn append_bench(path: &std::path::Path, table: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "\n{table}").with_context(|| format!("writing {}", path.display()))?;
    tell!("appended to {}", path.display());
    Ok(())
}
