//! The recorded-trace format of `rollwatch replay`: a CSV of cumulative counters as scraped,
//! `t_seconds,version,requests,errors[,latency_sum,latency_count]`, one row per interval and
//! version. Parsing validates everything once (numbers, order, populations) and answers any
//! bad input with an error naming the line and column; the replay itself never re-checks.

use std::collections::BTreeSet;

/// The columns, in the only order accepted; the last two are optional (both or neither).
pub const COLUMNS: [&str; 6] = [
    "t_seconds",
    "version",
    "requests",
    "errors",
    "latency_sum",
    "latency_count",
];

/// One row: the cumulative counters one version's endpoint reported at `t`, or a read that
/// failed at `t` (`failed`: every field after `t` empty; the version is empty, the counts 0).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// 1-based line in the file, for messages.
    pub line: usize,
    pub t: f64,
    /// The source did not answer (or answered garbage) at `t`: the whole round failed.
    pub failed: bool,
    pub version: String,
    pub requests: f64,
    pub errors: f64,
    /// `(sum of seconds, count)` of the latency histogram, when the trace has those columns.
    pub latency: Option<(f64, f64)>,
}

/// A validated trace: rows in time order, the baseline and (if any) candidate version.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub rows: Vec<Row>,
    /// The version of the first row: the known-good version.
    pub baseline: String,
    /// The first other version seen: the deploy on probation.
    pub candidate: Option<String>,
    pub has_latency: bool,
}

/// Bad input, located: `line 4, column 3 (requests): "12x" is not a number`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}, column {column} ({name}): {message}")]
pub struct TraceError {
    pub line: usize,
    /// 1-based column number.
    pub column: usize,
    /// The column's name from [`COLUMNS`].
    pub name: &'static str,
    pub message: String,
}

fn err(line: usize, column: usize, message: impl Into<String>) -> TraceError {
    TraceError {
        line,
        column: column + 1,
        name: COLUMNS.get(column).copied().unwrap_or("extra"),
        message: message.into(),
    }
}

/// Parses and validates a whole trace. Blank lines and lines starting with `#` are skipped;
/// fields are trimmed; there is no quoting (versions are tags: no commas).
pub fn parse(text: &str) -> Result<Trace, TraceError> {
    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let Some((header_line, header)) = lines.next() else {
        return Err(err(
            1,
            0,
            format!(
                "the trace is empty; it starts with the header {}",
                COLUMNS.join(",")
            ),
        ));
    };
    let width = check_header(header_line, header)?;
    let has_latency = width == COLUMNS.len();
    let mut rows: Vec<Row> = Vec::new();
    let mut seen_at_t: BTreeSet<String> = BTreeSet::new();
    let mut baseline: Option<String> = None;
    let mut candidate: Option<String> = None;
    // The line of a failed-read row of the current round: such a round has no other row.
    let mut failed_line: Option<usize> = None;
    for (line, text) in lines {
        let fields: Vec<&str> = text.split(',').map(str::trim).collect();
        if fields.len() > width {
            return Err(err(
                line,
                width,
                format!("{} fields where the header has {width}", fields.len()),
            ));
        }
        if fields.len() < width {
            return Err(err(
                line,
                fields.len(),
                format!(
                    "missing: the row has {} of the header's {width} fields",
                    fields.len()
                ),
            ));
        }
        let t = number(line, 0, fields[0])?;
        if let Some(prev) = rows.last() {
            if t < prev.t {
                return Err(err(
                    line,
                    0,
                    format!(
                        "t goes backwards: {} after {} on line {}; rows must be in time order",
                        fields[0], prev.t, prev.line
                    ),
                ));
            }
            if t > prev.t {
                seen_at_t.clear();
                failed_line = None;
            }
        }
        if fields[1..].iter().all(|f| f.is_empty()) {
            if let Some(other) = failed_line {
                return Err(err(
                    line,
                    1,
                    format!(
                        "a second failed read at t={}, after line {other}",
                        fields[0]
                    ),
                ));
            }
            if !seen_at_t.is_empty() {
                return Err(err(
                    line,
                    1,
                    format!("a failed read at t={} beside data rows of the same round: a read fails whole", fields[0]),
                ));
            }
            failed_line = Some(line);
            rows.push(Row {
                line,
                t,
                failed: true,
                version: String::new(),
                requests: 0.0,
                errors: 0.0,
                latency: None,
            });
            continue;
        }
        if let Some(other) = failed_line {
            return Err(err(
                line,
                1,
                format!(
                    "data at t={} where line {other} recorded a failed read: a read fails whole",
                    fields[0]
                ),
            ));
        }
        let version = fields[1];
        if version.is_empty() {
            return Err(err(line, 1, "empty version"));
        }
        if !seen_at_t.insert(version.to_string()) {
            return Err(err(
                line,
                1,
                format!(
                    "a second row for {version} at t={}: one row per interval and version",
                    fields[0]
                ),
            ));
        }
        match (&baseline, &candidate) {
            (None, _) => baseline = Some(version.to_string()),
            (Some(b), None) if b != version => candidate = Some(version.to_string()),
            (Some(b), Some(c)) if b != version && c != version => {
                return Err(err(
                    line,
                    1,
                    format!(
                        "a third version {version:?}: a replay judges one deploy (baseline {b}, candidate {c}); cut the trace before this line"
                    ),
                ))
            }
            _ => {}
        }
        let requests = number(line, 2, fields[2])?;
        let errors = number(line, 3, fields[3])?;
        let latency = if has_latency {
            match (fields[4].is_empty(), fields[5].is_empty()) {
                // No latency this row (e.g. no histogram yet): the latency test skips it.
                (true, true) => None,
                (false, true) => return Err(err(line, 5, "missing while latency_sum is given")),
                (true, false) => return Err(err(line, 4, "missing while latency_count is given")),
                (false, false) => Some((number(line, 4, fields[4])?, number(line, 5, fields[5])?)),
            }
        } else {
            None
        };
        rows.push(Row {
            line,
            t,
            failed: false,
            version: version.to_string(),
            requests,
            errors,
            latency,
        });
    }
    let Some(baseline) = baseline else {
        return Err(err(
            rows.last().map_or(header_line + 1, |r| r.line),
            if rows.is_empty() { 0 } else { 1 },
            "no data rows after the header (failed reads only say when the source was down)",
        ));
    };
    Ok(Trace {
        rows,
        baseline,
        candidate,
        has_latency,
    })
}

/// Checks the header names and returns the number of columns (4 or 6).
fn check_header(line: usize, header: &str) -> Result<usize, TraceError> {
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    for (i, name) in names.iter().enumerate() {
        match COLUMNS.get(i) {
            Some(want) if want == name => {}
            Some(want) => {
                return Err(err(
                    line,
                    i,
                    format!(
                        "header names {name:?} where {want:?} belongs; the header is {}[,{}]",
                        COLUMNS[..4].join(","),
                        COLUMNS[4..].join(",")
                    ),
                ))
            }
            None => {
                return Err(err(
                    line,
                    i,
                    format!("unexpected header column {name:?} after latency_count"),
                ))
            }
        }
    }
    match names.len() {
        4 | 6 => Ok(names.len()),
        n => Err(err(
            line,
            n,
            format!(
                "missing in the header: {} are required, {} come as a pair",
                COLUMNS[..4].join(","),
                COLUMNS[4..].join(" and ")
            ),
        )),
    }
}

/// A finite, non-negative number.
fn number(line: usize, column: usize, text: &str) -> Result<f64, TraceError> {
    if text.is_empty() {
        return Err(err(line, column, "missing: empty field"));
    }
    let x: f64 = text
        .parse()
        .map_err(|_| err(line, column, format!("{text:?} is not a number")))?;
    if !x.is_finite() {
        return Err(err(
            line,
            column,
            format!("{text:?} is not a finite number (NaN and Inf are garbage, never evidence)"),
        ));
    }
    if x < 0.0 {
        return Err(err(
            line,
            column,
            format!("{text} is negative; counters and times are 0 or more"),
        ));
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "t_seconds,version,requests,errors,latency_sum,latency_count\n";

    fn located(text: &str) -> (usize, usize, &'static str, String) {
        let e = parse(text).expect_err(text);
        (e.line, e.column, e.name, e.to_string())
    }

    #[test]
    fn parses_rows_populations_and_optional_latency() {
        let t = parse(
            "# recorded by hand\n\
             t_seconds,version,requests,errors\r\n\
             0,v1,100,1\n\
             \n\
             1.5, v1 ,150,2\n\
             2.5,v2,10,5\n\
             2.5,v1,200,2\n",
        )
        .unwrap();
        assert_eq!(t.baseline, "v1");
        assert_eq!(t.candidate.as_deref(), Some("v2"));
        assert!(!t.has_latency);
        assert_eq!(t.rows.len(), 4);
        assert_eq!((t.rows[1].line, t.rows[1].t), (5, 1.5));
        assert_eq!(t.rows[1].version, "v1");
        let t = parse(&format!(
            "{HEADER}0,v1,10,0,0.1,10\n1,v1,20,0,,\n2,,,,,\n3,v1,30,0,,\n"
        ))
        .unwrap();
        assert!(t.rows[2].failed && !t.rows[3].failed);
        assert_eq!((t.rows[2].line, t.rows[2].t), (4, 2.0));
        assert!(t.has_latency);
        assert_eq!(t.rows[0].latency, Some((0.1, 10.0)));
        assert_eq!(t.rows[1].latency, None);
    }

    #[test]
    fn every_error_names_its_line_and_column() {
        let cases: [(String, usize, usize, &str); 20] = [
            (String::new(), 1, 1, "empty"),
            ("t,version,requests,errors\n".into(), 1, 1, "\"t\""),
            (
                "t_seconds,version,requests\n".into(),
                1,
                4,
                "missing in the header",
            ),
            (
                "t_seconds,version,requests,errors,latency_sum\n".into(),
                1,
                6,
                "pair",
            ),
            (
                format!("{}x\n", HEADER.trim_end().to_owned() + ","),
                1,
                7,
                "unexpected header",
            ),
            (
                "t_seconds,version,requests,errors\n".into(),
                2,
                1,
                "no data rows",
            ),
            (format!("{HEADER}0,v1,10,0,0.1\n"), 2, 6, "missing"),
            (format!("{HEADER}0,v1,10,0,0.1,1,9\n"), 2, 7, "7 fields"),
            (
                format!("{HEADER}0,v1,ten,0,,\n"),
                2,
                3,
                "\"ten\" is not a number",
            ),
            (format!("{HEADER}0,v1,10,-1,,\n"), 2, 4, "negative"),
            (format!("{HEADER}0,v1,10,NaN,,\n"), 2, 4, "garbage"),
            (format!("{HEADER}0,v1,inf,0,,\n"), 2, 3, "not a finite"),
            (
                format!("{HEADER}5,v1,10,0,,\n4,v1,11,0,,\n"),
                3,
                1,
                "backwards",
            ),
            (format!("{HEADER}0,,10,0,,\n"), 2, 2, "empty version"),
            (
                format!("{HEADER}0,v1,10,0,,\n0,v1,11,0,,\n"),
                3,
                2,
                "second row",
            ),
            (
                format!("{HEADER}0,v1,10,0,,\n1,v2,1,0,,\n2,v3,1,0,,\n"),
                4,
                2,
                "third version",
            ),
            (
                format!("{HEADER}0,v1,10,0,,\n1,,,,,\n1,v1,11,0,,\n"),
                4,
                2,
                "recorded a failed read",
            ),
            (
                format!("{HEADER}0,v1,10,0,,\n1,v1,11,0,,\n1,,,,,\n"),
                4,
                2,
                "beside data rows",
            ),
            (format!("{HEADER}0,,,,,\n"), 2, 2, "no data rows"),
            (
                format!("{HEADER}0,v1,10,0,,3\n"),
                2,
                5,
                "missing while latency_count",
            ),
        ];
        for (text, line, column, needle) in cases {
            let (l, c, name, msg) = located(&text);
            assert_eq!((l, c), (line, column), "{text:?}: {msg}");
            assert!(msg.contains(needle), "{text:?}: {msg}");
            assert!(
                msg.starts_with(&format!("line {line}, column {column} ({name}): ")),
                "{msg}"
            );
        }
    }
}
