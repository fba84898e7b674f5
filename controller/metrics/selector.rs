//! Series selectors for scraped metrics, in PromQL's syntax: `name{label="v",code=~"5.."}`.

use regex::Regex;

use super::parse::{is_metric_name, Sample};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("selector {selector:?}: {message} (expected name{{label=\"value\",label=~\"regex\"}})")]
pub struct SelectorError {
    pub selector: String,
    pub message: String,
}

#[derive(Debug, Clone)]
enum Matcher {
    Eq(String, String),
    Ne(String, String),
    Re(String, Regex),
    NotRe(String, Regex),
}

impl Matcher {
    fn label(&self) -> &str {
        match self {
            Matcher::Eq(k, _) | Matcher::Ne(k, _) | Matcher::Re(k, _) | Matcher::NotRe(k, _) => k,
        }
    }
}

/// A metric name plus label matchers; regexes are anchored, as in PromQL.
#[derive(Debug, Clone)]
pub struct Selector {
    pub text: String,
    pub name: String,
    matchers: Vec<Matcher>,
}

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let fail = |m: &str| SelectorError {
            selector: text.to_string(),
            message: m.to_string(),
        };
        let text_trim = text.trim();
        let (name, rest) = match text_trim.find('{') {
            Some(i) => (&text_trim[..i], Some(&text_trim[i..])),
            None => (text_trim, None),
        };
        let name = name.trim();
        if !is_metric_name(name) {
            return Err(fail("not a metric name"));
        }
        let mut matchers = Vec::new();
        if let Some(rest) = rest {
            let inner = rest
                .strip_prefix('{')
                .and_then(|r| r.strip_suffix('}'))
                .ok_or_else(|| fail("unbalanced braces"))?;
            for part in split_matchers(inner).map_err(|m| fail(&m))? {
                let (key, op, value) = part;
                let m = match op.as_str() {
                    "=" => Matcher::Eq(key, value),
                    "!=" => Matcher::Ne(key, value),
                    "=~" | "!~" => {
                        let re = Regex::new(&format!("^(?:{value})$"))
                            .map_err(|e| fail(&format!("bad regex {value:?}: {e}")))?;
                        if op == "=~" {
                            Matcher::Re(key, re)
                        } else {
                            Matcher::NotRe(key, re)
                        }
                    }
                    _ => return Err(fail(&format!("unknown operator {op}"))),
                };
                matchers.push(m);
            }
        }
        Ok(Selector {
            text: text.to_string(),
            name: name.to_string(),
            matchers,
        })
    }

    /// The `_sum` and `_count` series of the histogram (or summary) `base` names: a metric name,
    /// optionally with label matchers (`http_request_duration_seconds{route="/"}`). Refused: a
    /// name that already ends in `_sum`, `_count` or `_bucket` (the series read would be
    /// `x_sum_sum`, which never exists), and an `le` matcher (only `_bucket` series carry `le`).
    pub fn histogram(base: &str) -> Result<(Selector, Selector), SelectorError> {
        let sel = Selector::parse(base)?;
        let fail = |message: String| SelectorError {
            selector: base.to_string(),
            message,
        };
        for suffix in ["_sum", "_count", "_bucket"] {
            if let Some(stem) = sel.name.strip_suffix(suffix) {
                return Err(fail(format!(
                    "give the histogram's base name ({stem}), not one of its series: rollwatch reads {stem}_sum and {stem}_count"
                )));
            }
        }
        if sel.matchers.iter().any(|m| m.label() == "le") {
            return Err(fail(
                "only the _bucket series have an le label; _sum and _count would match nothing"
                    .into(),
            ));
        }
        let labels = &base.trim()[sel.name.len()..];
        let with = |suffix: &str| Selector {
            text: format!("{}{suffix}{labels}", sel.name),
            name: format!("{}{suffix}", sel.name),
            matchers: sel.matchers.clone(),
        };
        Ok((with("_sum"), with("_count")))
    }

    pub fn matches(&self, s: &Sample) -> bool {
        s.name == self.name
            && self.matchers.iter().all(|m| match m {
                Matcher::Eq(k, v) => s.label(k).unwrap_or("") == v,
                Matcher::Ne(k, v) => s.label(k).unwrap_or("") != v,
                Matcher::Re(k, re) => re.is_match(s.label(k).unwrap_or("")),
                Matcher::NotRe(k, re) => !re.is_match(s.label(k).unwrap_or("")),
            })
    }

    /// The sum of every matching sample, `None` when no series matches (a missing series is a
    /// broken source, not zero traffic).
    pub fn sum(&self, samples: &[Sample]) -> Option<f64> {
        let mut found = false;
        let total = samples
            .iter()
            .filter(|s| self.matches(s))
            .inspect(|_| found = true)
            .map(|s| s.value)
            .sum();
        found.then_some(total)
    }
}

/// The expression inside a PromQL query that is one outer `sum`: `sum(X)`, `sum by (..) (X)`,
/// `sum without (..) (X)`, `sum(X) by (..)`. Asked for `X` instead, Prometheus answers one
/// series per process, whose resets rollwatch handles one by one before summing them itself
/// ([`super::counters`]); the grouping does not matter, every series is summed. Any other
/// query (`sum(x) + sum(y)`, a recording rule) is evaluated as written.
pub fn inner_of_sum(expr: &str) -> Option<&str> {
    let t = expr.trim();
    let rest = strip_keyword(t, "sum")?;
    let rest = skip_grouping(rest).unwrap_or(rest);
    let (inner, after) = parenthesized(rest)?;
    let after = after.trim_start();
    let tail_ok = after.is_empty()
        || skip_grouping(after)
            .and_then(|r| r.trim().is_empty().then_some(()))
            .is_some();
    (tail_ok && !inner.trim().is_empty()).then(|| inner.trim())
}

/// `s` without a leading keyword (any case) followed by a non-identifier character.
fn strip_keyword<'a>(s: &'a str, keyword: &str) -> Option<&'a str> {
    let head = s.get(..keyword.len())?;
    let rest = &s[keyword.len()..];
    let boundary = rest
        .chars()
        .next()
        .is_some_and(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'));
    (head.eq_ignore_ascii_case(keyword) && boundary).then(|| rest.trim_start())
}

/// `s` after a leading `by (..)` or `without (..)`.
fn skip_grouping(s: &str) -> Option<&str> {
    let rest = strip_keyword(s, "by").or_else(|| strip_keyword(s, "without"))?;
    parenthesized(rest).map(|(_, after)| after.trim_start())
}

/// For `s` starting with `(`: what is inside the matching `)`, and what follows it. Quotes
/// (`"`, `'`, `` ` ``) are skipped, so a `)` inside a label value does not close anything.
fn parenthesized(s: &str) -> Option<(&str, &str)> {
    if !s.starts_with('(') {
        return None;
    }
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' && q != '`' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some((&s[1..i], &s[i + 1..]));
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits `a="x",b=~"y"` into (name, operator, unescaped value) triples.
fn split_matchers(inner: &str) -> Result<Vec<(String, String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while chars
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
        {
            key.extend(chars.next());
        }
        if key.is_empty() {
            return Err("expected a label name".into());
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut op = String::new();
        while chars.peek().is_some_and(|c| matches!(c, '=' | '!' | '~')) {
            op.extend(chars.next());
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('"') {
            return Err(format!("value of {key} must be in double quotes"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                None => return Err(format!("unterminated value of {key}")),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated value of {key}")),
                },
                Some(c) => value.push(c),
            }
        }
        out.push((key, op, value));
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::*;

    #[test]
    fn selects_by_name_and_labels() {
        let samples = parse(
            "http_requests_total{code=\"200\"} 90\nhttp_requests_total{code=\"500\"} 7\nhttp_requests_total{code=\"503\"} 3\nother 1\n",
        )
        .unwrap();
        assert_eq!(
            Selector::parse("http_requests_total")
                .unwrap()
                .sum(&samples),
            Some(100.0)
        );
        assert_eq!(
            Selector::parse(r#"http_requests_total{code=~"5.."}"#)
                .unwrap()
                .sum(&samples),
            Some(10.0)
        );
        assert_eq!(
            Selector::parse(r#"http_requests_total{code!="200"}"#)
                .unwrap()
                .sum(&samples),
            Some(10.0)
        );
        assert_eq!(
            Selector::parse(r#"http_requests_total{code="404"}"#)
                .unwrap()
                .sum(&samples),
            None
        );
    }

    #[test]
    fn the_outer_sum_of_a_promql_query_is_found_in_every_spelling() {
        let x = r#"http_requests_total{job="x",path=~"/a(b)?"}"#;
        for q in [
            format!("sum({x})"),
            format!(" sum ( {x} ) "),
            format!("SUM({x})"),
            format!("sum by (code) ({x})"),
            format!("sum without(instance)({x})"),
            format!("sum({x}) by (code)"),
        ] {
            assert_eq!(inner_of_sum(&q), Some(x), "{q}");
        }
        for q in [
            x.to_string(),
            format!("sum({x}) + sum({x})"),
            format!("sum({x}) > 0"),
            "summary_total".to_string(),
            "sum_total{a=\"(\"}".to_string(),
            "sum()".to_string(),
            "sum(x".to_string(),
        ] {
            assert_eq!(inner_of_sum(&q), None, "{q}");
        }
    }

    #[test]
    fn histogram_base_names_give_sum_and_count_selectors() {
        let samples = parse(
            "h_sum{route=\"/\"} 2.5\nh_count{route=\"/\"} 10\nh_sum{route=\"/x\"} 9\nh_count{route=\"/x\"} 1\n",
        )
        .unwrap();
        let (sum, count) = Selector::histogram(r#"h{route="/"}"#).unwrap();
        assert_eq!(
            (sum.sum(&samples), count.sum(&samples)),
            (Some(2.5), Some(10.0))
        );
        assert_eq!(sum.text, r#"h_sum{route="/"}"#);
        let (sum, count) = Selector::histogram("h").unwrap();
        assert_eq!(
            (sum.sum(&samples), count.sum(&samples)),
            (Some(11.5), Some(11.0))
        );
        for bad in ["h_sum", "h_count", "h_bucket", r#"h{le="0.5"}"#, "h{", "9h"] {
            assert!(Selector::histogram(bad).is_err(), "{bad}");
        }
        let e = Selector::histogram("http_request_duration_seconds_sum").unwrap_err();
        assert!(
            e.to_string()
                .contains("base name (http_request_duration_seconds)"),
            "{e}"
        );
    }

    #[test]
    fn bad_selectors_are_refused_with_the_text() {
        for bad in ["9x", r#"x{code="5"#, r#"x{code=~"("}"#, "x{code=5}"] {
            let e = Selector::parse(bad).unwrap_err();
            assert_eq!(e.selector, bad);
        }
    }
}
