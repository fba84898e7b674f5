//! A parser for the Prometheus text exposition format (0.0.4), written here because the crates on
//! offer mis-handle label values with commas, braces or escapes and names with colons. It accepts
//! everything the format allows and answers anything else with an error naming the line — it
//! never panics, whatever the input (property-tested and fuzzed).

use std::fmt;

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// In the order written; duplicates are refused.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metrics line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Parses a whole exposition. `# HELP`, `# TYPE` and other comments are skipped (their syntax is
/// still checked for HELP/TYPE so a truncated body is noticed).
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let err = |message: String| ParseError {
            line: i + 1,
            message,
        };
        let trimmed = line.trim_start_matches([' ', '\t']);
        if trimmed.is_empty() {
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            check_comment(comment).map_err(err)?;
            continue;
        }
        out.push(parse_sample(trimmed).map_err(err)?);
    }
    Ok(out)
}

fn check_comment(comment: &str) -> Result<(), String> {
    let mut words = comment
        .trim_start_matches([' ', '\t'])
        .splitn(3, [' ', '\t']);
    match words.next() {
        Some("TYPE") => {
            let name = words.next().unwrap_or("");
            if !is_metric_name(name) {
                return Err(format!("# TYPE names no valid metric: {name:?}"));
            }
            let kind = words.next().unwrap_or("").trim();
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(format!("# TYPE {name}: unknown type {kind:?}"));
            }
            Ok(())
        }
        Some("HELP") => {
            let name = words.next().unwrap_or("");
            if is_metric_name(name) {
                Ok(())
            } else {
                Err(format!("# HELP names no valid metric: {name:?}"))
            }
        }
        _ => Ok(()),
    }
}

pub fn is_metric_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

fn is_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A cursor over one line; all indexing goes through `peek`/`bump`, which never slice mid-char.
struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.rest.chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.rest = &self.rest[c.len_utf8()..];
        Some(c)
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let end = self
            .rest
            .char_indices()
            .find(|(_, c)| !f(*c))
            .map(|(i, _)| i)
            .unwrap_or(self.rest.len());
        let (head, tail) = self.rest.split_at(end);
        self.rest = tail;
        head
    }

    fn skip_blanks(&mut self) {
        self.take_while(|c| c == ' ' || c == '\t');
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let mut cur = Cursor { rest: line };
    let name = cur.take_while(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if !is_metric_name(name) {
        return Err(format!("expected a metric name at {:?}", truncate(line)));
    }
    let mut labels: Vec<(String, String)> = Vec::new();
    let blanks = cur.take_while(|c| c == ' ' || c == '\t');
    let mut spaced = !blanks.is_empty();
    if cur.peek() == Some('{') {
        cur.bump();
        loop {
            cur.skip_blanks();
            if cur.peek() == Some('}') {
                cur.bump();
                break;
            }
            let key = cur.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
            if !is_label_name(key) {
                return Err(format!(
                    "{name}: expected a label name or '}}' at {:?}",
                    truncate(cur.rest)
                ));
            }
            cur.skip_blanks();
            if cur.bump() != Some('=') {
                return Err(format!("{name}: expected '=' after label {key}"));
            }
            cur.skip_blanks();
            if cur.bump() != Some('"') {
                return Err(format!(
                    "{name}: value of label {key} must be in double quotes"
                ));
            }
            let value = quoted(&mut cur).map_err(|e| format!("{name}: label {key}: {e}"))?;
            if labels.iter().any(|(k, _)| k == key) {
                return Err(format!("{name}: label {key} given twice"));
            }
            labels.push((key.to_string(), value));
            cur.skip_blanks();
            match cur.bump() {
                Some(',') => continue,
                Some('}') => break,
                _ => return Err(format!("{name}: expected ',' or '}}' after label {key}")),
            }
        }
        spaced = matches!(cur.peek(), Some(' ') | Some('\t'));
    }
    if !spaced {
        return Err(format!("{name}: expected a space before the value"));
    }
    cur.skip_blanks();
    let value_text = cur.take_while(|c| c != ' ' && c != '\t');
    let value =
        parse_value(value_text).ok_or_else(|| format!("{name}: {value_text:?} is not a number"))?;
    cur.skip_blanks();
    let ts_text = cur.take_while(|c| c != ' ' && c != '\t');
    let timestamp_ms = if ts_text.is_empty() {
        None
    } else {
        Some(
            ts_text
                .parse::<i64>()
                .map_err(|_| format!("{name}: timestamp {ts_text:?} is not an integer"))?,
        )
    };
    cur.skip_blanks();
    if !cur.rest.is_empty() {
        return Err(format!(
            "{name}: unexpected {:?} after the sample",
            truncate(cur.rest)
        ));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
        timestamp_ms,
    })
}

/// Reads a label value after its opening quote, resolving `\\`, `\"` and `\n`.
fn quoted(cur: &mut Cursor<'_>) -> Result<String, String> {
    let mut out = String::new();
    loop {
        match cur.bump() {
            None => return Err("unterminated quoted value".into()),
            Some('"') => return Ok(out),
            Some('\\') => match cur.bump() {
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some('n') => out.push('\n'),
                Some(c) => return Err(format!("unknown escape \\{c}")),
                None => return Err("unterminated escape".into()),
            },
            Some(c) => out.push(c),
        }
    }
}

/// Go's ParseFloat spellings the format allows, including `NaN`, `+Inf` and `-Inf`.
fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ if s.is_empty()
            || s.contains(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E') =>
        {
            None
        }
        _ => s.parse::<f64>().ok(),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Writes samples back in the text format (used by the round-trip property tests and fixtures).
pub struct Exposition<'a>(pub &'a [Sample]);

impl fmt::Display for Exposition<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in self.0 {
            f.write_str(&s.name)?;
            if !s.labels.is_empty() {
                f.write_str("{")?;
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    let escaped = v
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    write!(f, "{k}=\"{escaped}\"")?;
                }
                f.write_str("}")?;
            }
            let value = if s.value.is_nan() {
                "NaN".to_string()
            } else if s.value == f64::INFINITY {
                "+Inf".to_string()
            } else if s.value == f64::NEG_INFINITY {
                "-Inf".to_string()
            } else {
                format!("{:?}", s.value)
            };
            write!(f, " {value}")?;
            if let Some(ts) = s.timestamp_ms {
                write!(f, " {ts}")?;
            }
            f.write_str("\n")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_awkward_cases() {
        let text = "# HELP http_requests_total Requests, by code.\n\
                    # TYPE http_requests_total counter\n\
                    http_requests_total{code=\"500\",path=\"/a,b{c}\",q=\"say \\\"hi\\\"\\n\\\\\"} 12 1700000000000\n\
                    job:errors:rate5m{env=\"staging\",} 0.25\n\
                    up NaN\n\
                    le_test_bucket{le=\"+Inf\"} +Inf\n\
                    neg -Inf\n\
                    \tindented 1e3  \r\n\
                    \n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 6);
        assert_eq!(s[0].label("path"), Some("/a,b{c}"));
        assert_eq!(s[0].label("q"), Some("say \"hi\"\n\\"));
        assert_eq!(s[0].timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(s[1].name, "job:errors:rate5m");
        assert!(s[2].value.is_nan());
        assert_eq!(s[3].value, f64::INFINITY);
        assert_eq!(s[4].value, f64::NEG_INFINITY);
        assert_eq!(s[5].value, 1000.0);
    }

    #[test]
    fn malformed_lines_name_the_line() {
        for (text, line) in [
            ("ok 1\nbad{code=\"5} 1\n", 2),
            ("a{b=c} 1", 1),
            ("a 1 2 3", 1),
            ("a{b=\"1\",b=\"2\"} 1", 1),
            ("a zero", 1),
            ("# TYPE a countr", 1),
            ("9a 1", 1),
            ("a{b=\"\\x\"} 1", 1),
            ("a{b=\"1\"}1", 1),
            ("a 1 1.5", 1),
            ("a infinity", 1),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
        }
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}"
    }

    fn sample() -> impl Strategy<Value = Sample> {
        let labels =
            proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,10}", any::<String>(), 0..5)
                .prop_map(|m| m.into_iter().collect::<Vec<_>>());
        let value = prop_oneof![
            any::<f64>(),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::NAN),
            -1e9f64..1e9
        ];
        (name(), labels, value, proptest::option::of(any::<i64>())).prop_map(
            |(name, labels, value, timestamp_ms)| Sample {
                name,
                labels,
                value,
                timestamp_ms,
            },
        )
    }

    fn same(a: &Sample, b: &Sample) -> bool {
        a.name == b.name
            && a.labels == b.labels
            && a.timestamp_ms == b.timestamp_ms
            && (a.value == b.value || (a.value.is_nan() && b.value.is_nan()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn written_samples_parse_back_identically(samples in proptest::collection::vec(sample(), 0..8)) {
            let text = Exposition(&samples).to_string();
            let back = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(back.len(), samples.len());
            for (a, b) in samples.iter().zip(&back) {
                prop_assert!(same(a, b), "{:?} != {:?}", a, b);
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let _ = parse(&text);
        }

        #[test]
        fn mutated_valid_text_never_panics(samples in proptest::collection::vec(sample(), 1..4), cut in any::<usize>(), insert in any::<char>()) {
            let mut text = Exposition(&samples).to_string();
            let mut at = cut % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.insert(at, insert);
            let _ = parse(&text);
            text.truncate(at);
            let _ = parse(&text);
        }
    }
}
