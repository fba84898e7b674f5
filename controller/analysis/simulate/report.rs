//! The simulation's tables: every rate with its Wilson 95% interval, the pooled false-rollback
//! rate per method, and the checks the README's claim rests on.

use super::{Cell, Method, Outcome, METHODS};

/// Wilson score 95% interval of `k` successes in `n` trials, as fractions.
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n) = (k as f64, n as f64);
    let z = 1.959_963_984_540_054_f64;
    let p = k / n;
    let d = 1.0 + z * z / n;
    let c = (p + z * z / (2.0 * n)) / d;
    let h = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / d;
    ((c - h).max(0.0), (c + h).min(1.0))
}

/// `k of n` as "1.2% [0.7, 2.0]".
fn rate(k: usize, n: usize) -> String {
    let (lo, hi) = wilson(k, n);
    format!(
        "{:.1}% [{:.1}, {:.1}]",
        pct(k as f64 / n.max(1) as f64),
        pct(lo),
        pct(hi)
    )
}

fn pct(x: f64) -> f64 {
    x * 100.0 + 0.0
}

fn column(cell: &Cell, m: Method) -> impl Iterator<Item = &Outcome> {
    let k = METHODS.iter().position(|x| *x == m).unwrap_or(0);
    cell.outcomes.iter().map(move |o| &o[k])
}

fn rolled_back(cell: &Cell, m: Method) -> usize {
    column(cell, m)
        .filter(|o| o.rolled_back_s.is_some())
        .count()
}

fn header(first: &str) -> String {
    let names: Vec<&str> = METHODS.iter().map(|m| m.name()).collect();
    format!(
        "| {first} | {} |\n|---|---|---|{}\n",
        names.join(" | "),
        "---|".repeat(METHODS.len())
    )
}

/// False rollbacks of healthy deploys, one row per cell, then the pooled rate per method.
pub fn healthy_table(cells: &[Cell]) -> String {
    let mut t = header("traffic | baseline errors | req/s");
    let mut pooled = [0usize; 4];
    let mut runs = 0;
    for c in cells {
        let s = &c.scenario;
        let n = c.outcomes.len();
        runs += n;
        let cols: Vec<String> = METHODS
            .iter()
            .enumerate()
            .map(|(k, m)| {
                let r = rolled_back(c, *m);
                pooled[k] += r;
                let no_data = column(c, *m).filter(|o| o.no_data).count();
                match no_data {
                    0 => rate(r, n),
                    d => format!("{} (no data {:.1}%)", rate(r, n), pct(d as f64 / n as f64)),
                }
            })
            .collect();
        t.push_str(&format!(
            "| {} | {}% | {} | {} |\n",
            s.traffic.label(),
            pct(s.baseline_error),
            s.rate,
            cols.join(" | ")
        ));
    }
    let all: Vec<String> = pooled.iter().map(|k| rate(*k, runs)).collect();
    t.push_str(&format!("| **pooled** | | | {} |\n", all.join(" | ")));
    t
}

/// Detection of regressed deploys: share caught within 60 s, share caught at all, median time.
pub fn detection_table(cells: &[Cell]) -> String {
    let mut t = header("traffic | errors | req/s");
    for c in cells {
        let s = &c.scenario;
        let n = c.outcomes.len();
        let cols: Vec<String> = METHODS
            .iter()
            .map(|m| {
                let mut times: Vec<f64> = column(c, *m).filter_map(|o| o.rolled_back_s).collect();
                times.sort_by(f64::total_cmp);
                let fast = times.iter().filter(|t| **t <= 60.0).count();
                let median = times
                    .get(times.len().saturating_sub(1) / 2)
                    .map_or("-".into(), |t| format!("{t:.0} s"));
                format!(
                    "≤60 s {}; all {}; p50 {median}",
                    rate(fast, n),
                    rate(times.len(), n)
                )
            })
            .collect();
        t.push_str(&format!(
            "| {} | {}% -> {}% | {} | {} |\n",
            s.traffic.label(),
            pct(s.baseline_error),
            pct(s.candidate_error),
            s.rate,
            cols.join(" | ")
        ));
    }
    t
}

/// The checks of the README's claim on rollwatch's default set-up (baseline before the deploy),
/// each with the numbers it rests on: (passed, text).
pub fn claim_checks(healthy: &[Cell], detection: &[Cell], alpha: f64) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let (mut worst_lo, mut worst) = (0.0f64, String::new());
    let (mut k, mut n) = (0, 0);
    for c in healthy {
        let r = rolled_back(c, Method::Rollwatch);
        let lo = wilson(r, c.outcomes.len()).0;
        if lo >= worst_lo {
            worst_lo = lo;
            worst = format!(
                "{} at {}% errors, {} req/s",
                c.scenario.traffic.label(),
                pct(c.scenario.baseline_error),
                c.scenario.rate
            );
        }
        k += r;
        n += c.outcomes.len();
    }
    out.push((
        worst_lo <= alpha,
        format!(
            "every healthy cell's Wilson lower bound <= alpha {:.1}%: highest {:.2}% ({worst})",
            pct(alpha),
            pct(worst_lo)
        ),
    ));
    out.push((
        (k as f64) <= alpha * n as f64,
        format!(
            "pooled false rollbacks <= alpha: {} of {n} runs",
            rate(k, n)
        ),
    ));
    for (traffic, need) in [("iid", 0.95), ("lognormal σ 0.25", 0.80)] {
        let cell = detection.iter().find(|c| {
            c.scenario.traffic.label() == traffic
                && c.scenario.rate == 20.0
                && c.scenario.candidate_error == 0.05
        });
        if let Some(c) = cell {
            let fast = column(c, Method::Rollwatch)
                .filter(|o| o.rolled_back_s.is_some_and(|t| t <= 60.0))
                .count();
            let share = fast as f64 / c.outcomes.len().max(1) as f64;
            out.push((
                share >= need,
                format!(
                    "1% -> 5% at 20 req/s ({traffic}) caught within 60 s in >= {:.0}%: {}",
                    pct(need),
                    rate(fast, c.outcomes.len())
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_matches_a_hand_computed_case() {
        // 4 of 400: p = 1%, Wilson 95% [0.39%, 2.54%].
        let (lo, hi) = wilson(4, 400);
        assert!(
            (lo - 0.00389).abs() < 0.0001 && (hi - 0.0254).abs() < 0.0001,
            "{lo} {hi}"
        );
        assert!(wilson(0, 400).0.abs() < 1e-12);
        assert_eq!(rate(4, 400), "1.0% [0.4, 2.5]");
    }
}
