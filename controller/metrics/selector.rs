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
    fn bad_selectors_are_refused_with_the_text() {
        for bad in ["9x", r#"x{code="5"#, r#"x{code=~"("}"#, "x{code=5}"] {
            let e = Selector::parse(bad).unwrap_err();
            assert_eq!(e.selector, bad);
        }
    }
}
