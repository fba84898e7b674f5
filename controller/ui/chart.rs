//! The evidence chart of one watch window, drawn on the server as SVG: probe latency with the
//! failed probes marked, and the candidate's error ratio against its baseline's, on one time
//! axis with the verdict marked. No script and no chart library: the page stays light and the
//! chart is there without JavaScript.

use std::fmt::Write as _;

use super::html::esc;
use crate::store::Sample;

const WIDTH: f64 = 640.0;
const PANEL: f64 = 110.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 18.0;
const GAP: f64 = 34.0;

/// A vertical mark on the time axis: when, and what (`regressed`, `promoted`, `rollback`).
pub struct Mark {
    pub at_ms: i64,
    pub label: String,
}

/// The chart, or a sentence saying why there is none.
pub fn evidence(samples: &[Sample], marks: &[Mark]) -> String {
    let Some((first, last)) = samples.first().zip(samples.last()) else {
        return "<p class=\"empty\">No rounds were kept for this watch window.</p>".into();
    };
    let t0 = first.at_ms.min(first.window_ms);
    let t1 = marks
        .iter()
        .map(|m| m.at_ms)
        .chain([last.at_ms])
        .max()
        .unwrap_or(last.at_ms)
        .max(t0 + 1000);
    let x = |t: i64| LEFT + (WIDTH - LEFT - RIGHT) * (t - t0) as f64 / (t1 - t0) as f64;
    let height = TOP + 2.0 * PANEL + GAP + 28.0;
    let failed: u32 = samples.iter().map(|s| s.failures).sum();
    let mut svg = format!(
        "<svg class=\"evidence\" viewBox=\"0 0 {WIDTH} {height}\" width=\"100%\" role=\"img\" \
aria-label=\"Evidence of the watch window of {tag}: {n} rounds, {failed} failed probes\" \
xmlns=\"http://www.w3.org/2000/svg\" data-rounds=\"{n}\" data-failed=\"{failed}\">",
        tag = esc(&first.tag),
        n = samples.len()
    );
    latency_panel(&mut svg, samples, &x);
    ratio_panel(&mut svg, samples, &x);
    let bottom = TOP + 2.0 * PANEL + GAP;
    for m in marks {
        let mx = x(m.at_ms);
        // Labels at the edges would be cut off: they hang inward there.
        let anchor = if mx > WIDTH - 80.0 {
            "end"
        } else if mx < LEFT + 40.0 {
            "start"
        } else {
            "middle"
        };
        let _ = write!(
            svg,
            "<line class=\"verdict\" data-verdict=\"{label}\" x1=\"{mx:.1}\" x2=\"{mx:.1}\" y1=\"{TOP}\" y2=\"{bottom}\"/>\
<text class=\"verdict-label\" x=\"{mx:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\">{label}</text>",
            label = esc(&m.label),
            y = TOP - 5.0
        );
    }
    let _ = write!(
        svg,
        "<text class=\"axis\" x=\"{LEFT}\" y=\"{y:.1}\">0 s</text><text class=\"axis\" x=\"{xr:.1}\" y=\"{y:.1}\" text-anchor=\"end\">{span} after the deploy</text></svg>",
        y = bottom + 18.0,
        xr = WIDTH - RIGHT,
        span = super::html::duration(t1 - t0)
    );
    svg
}

fn latency_panel(svg: &mut String, samples: &[Sample], x: &impl Fn(i64) -> f64) {
    let top = TOP;
    let max = samples
        .iter()
        .filter_map(|s| s.latency_ms)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let y = |ms: i64| top + PANEL - PANEL * (ms as f64 / max).min(1.0);
    frame(svg, top, "probe latency", &format!("{max:.0} ms"));
    let points: Vec<String> = samples
        .iter()
        .filter_map(|s| {
            s.latency_ms
                .map(|l| format!("{:.1},{:.1}", x(s.at_ms), y(l)))
        })
        .collect();
    let _ = write!(
        svg,
        "<polyline class=\"latency\" fill=\"none\" points=\"{}\"/>",
        points.join(" ")
    );
    for s in samples.iter().filter(|s| s.failures > 0) {
        let _ = write!(
            svg,
            "<circle class=\"failure\" data-failures=\"{n}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\"><title>{n} of {p} probes failed</title></circle>",
            x(s.at_ms),
            top + 6.0,
            n = s.failures,
            p = s.probes,
        );
    }
}

fn ratio_panel(svg: &mut String, samples: &[Sample], x: &impl Fn(i64) -> f64) {
    let top = TOP + PANEL + GAP;
    let ratio = |c: Option<(f64, f64)>| c.filter(|(r, _)| *r > 0.0).map(|(r, e)| e / r);
    let series: Vec<(i64, Option<f64>, Option<f64>)> = samples
        .iter()
        .map(|s| (s.at_ms, ratio(s.candidate), ratio(s.baseline)))
        .collect();
    let max = series
        .iter()
        .flat_map(|(_, c, b)| [*c, *b])
        .flatten()
        .fold(0.0_f64, f64::max);
    if samples.iter().all(|s| s.candidate.is_none()) {
        frame(svg, top, "error ratio", "");
        let _ = write!(
            svg,
            "<text class=\"empty\" x=\"{:.1}\" y=\"{:.1}\">no error-metrics source for this target</text>",
            LEFT + 8.0,
            top + PANEL / 2.0
        );
        return;
    }
    let max = if max > 0.0 { max } else { 0.01 };
    let y = |r: f64| top + PANEL - PANEL * (r / max).min(1.0);
    frame(svg, top, "error ratio", &format!("{:.1}%", max * 100.0));
    for (class, pick) in [("candidate", 0), ("baseline", 1)] {
        let points: Vec<String> = series
            .iter()
            .filter_map(|(t, c, b)| {
                let r = if pick == 0 { *c } else { *b };
                r.map(|r| format!("{:.1},{:.1}", x(*t), y(r)))
            })
            .collect();
        let _ = write!(
            svg,
            "<polyline class=\"{class}\" fill=\"none\" points=\"{}\"><title>{class}</title></polyline>",
            points.join(" ")
        );
    }
    let _ = write!(
        svg,
        "<text class=\"legend candidate\" x=\"{:.1}\" y=\"{:.1}\">candidate</text><text class=\"legend baseline\" x=\"{:.1}\" y=\"{:.1}\">baseline</text>",
        WIDTH - RIGHT - 140.0,
        top + 12.0,
        WIDTH - RIGHT - 60.0,
        top + 12.0
    );
}

/// A panel's box, its name and the value at its top.
fn frame(svg: &mut String, top: f64, name: &str, max: &str) {
    let _ = write!(
        svg,
        "<rect class=\"panel\" x=\"{LEFT}\" y=\"{top}\" width=\"{w}\" height=\"{PANEL}\"/>\
<text class=\"axis\" x=\"{lx}\" y=\"{ty:.1}\" text-anchor=\"end\">{max}</text>\
<text class=\"axis\" x=\"{lx}\" y=\"{by:.1}\" text-anchor=\"end\">0</text>\
<text class=\"panel-name\" x=\"{nx}\" y=\"{ty:.1}\">{name}</text>",
        w = WIDTH - LEFT - RIGHT,
        lx = LEFT - 4.0,
        nx = LEFT + 6.0,
        ty = top + 12.0,
        by = top + PANEL,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::{Env, TargetId};

    fn round(at_ms: i64, failures: u32, cand: (f64, f64)) -> Sample {
        Sample {
            target: TargetId {
                env: Env::Staging,
                role: "backend".into(),
            },
            window_ms: 1_000,
            tag: "v<2>".into(),
            at_ms,
            latency_ms: Some(4),
            probes: 2,
            failures,
            candidate: Some(cand),
            baseline: Some((1000.0, 1.0)),
        }
    }

    #[test]
    fn failures_and_the_verdict_are_marked_and_values_escaped() {
        let rounds = [
            round(2_000, 0, (50.0, 0.0)),
            round(3_000, 1, (100.0, 40.0)),
            round(4_000, 2, (150.0, 80.0)),
        ];
        let mark = Mark {
            at_ms: 4_100,
            label: "regressed".into(),
        };
        let svg = evidence(&rounds, &[mark]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("class=\"failure\"").count(), 2);
        assert!(svg.contains("data-failed=\"3\""), "{svg}");
        assert!(svg.contains("data-verdict=\"regressed\""));
        assert!(svg.contains("v&lt;2&gt;") && !svg.contains("v<2>"));
        assert!(svg.contains("class=\"candidate\"") && svg.contains("class=\"baseline\""));
        // The candidate's worst ratio (80/150 = 53.3%) is the top of the ratio panel.
        assert!(svg.contains("53.3%"), "{svg}");
    }

    #[test]
    fn no_rounds_is_said_in_words() {
        assert!(evidence(&[], &[]).contains("No rounds"));
    }
}
