//! Reading a target's counters from its metrics source, with a timeout. Both kinds answer the
//! same [`Reading`]: cumulative request and error counts and, when configured, the latency
//! histogram's cumulative sum and count — one reading per scraped endpoint, or one for a
//! Prometheus server. Counter resets are handled per series before anything is summed
//! ([`super::counters`]), so a reading's counters only ever grow and one process restarting
//! never books the others' lifetime counts as one interval.
//!
//! Prometheus semantics: an errors query (or selector) with no series beside requests that have
//! some is 0 errors — client libraries create the 5xx series at the first 5xx; no request series
//! at all is a broken source. NaN or ±Inf anywhere in what is read is garbage: the read fails
//! (inconclusive), it never becomes a verdict.

use std::collections::BTreeMap;
use std::time::Duration;

use url::Url;

use super::counters::{valid_counter, Counter, Origins, Series};
use super::parse::{parse, Sample};
use super::selector::{inner_of_sum, Selector};
use crate::config::{MetricsConfig, MetricsKind};

/// Cumulative counters of one endpoint at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub requests: f64,
    pub errors: f64,
    /// `(sum of seconds, count)` of the latency histogram.
    pub latency: Option<(f64, f64)>,
    /// The version (tag) this endpoint says it serves, when `version_metric` is configured.
    pub version: Option<String>,
}

/// Why a source gave no evidence; bounded kinds (`kind()`) for metrics labels.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("metrics source {url} unreachable: {message}")]
    Unreachable { url: String, message: String },
    #[error("metrics source {url} timed out after {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("metrics source {url} answered HTTP {status}")]
    Http { url: String, status: u16 },
    #[error("metrics source {url} answered something that is not metrics: {message}")]
    Garbage { url: String, message: String },
    #[error("metrics source {url} has no series for {selector}")]
    Missing { url: String, selector: String },
}

impl SourceError {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceError::Unreachable { .. } => "unreachable",
            SourceError::Timeout { .. } => "timeout",
            SourceError::Http { .. } => "http_error",
            SourceError::Garbage { .. } => "garbage",
            SourceError::Missing { .. } => "missing_series",
        }
    }
}

/// A configured source, with its selectors parsed once, and the per-series memory that turns
/// raw counters into reset-free ones.
pub struct MetricsSource {
    kind: Kind,
    client: reqwest::Client,
    timeout: Duration,
    /// One per scraped URL, or one for the Prometheus server.
    counters: Vec<Counters>,
}

/// What to read from each scraped endpoint.
struct ScrapeSpec {
    requests: Selector,
    errors: Selector,
    /// `(_sum, _count)` selectors of the latency histogram.
    latency: Option<(Selector, Selector)>,
    /// `(metric, label)` naming the version an endpoint serves, e.g. `build_info{version=".."}`.
    version: Option<(String, String)>,
}

/// A PromQL query as configured, and the one sent: the inside of its outer `sum`, so the
/// answer is one series per process (see [`inner_of_sum`]).
///
/// Why not ask Prometheus for `sum(increase(x[Δ]))` instead: `increase()` extrapolates to the
/// window's edges (fractional counts, over- or under-counting at a series' start and end), needs
/// Δ of at least two scrape intervals that rollwatch does not know, and its windows would not
/// line up with rollwatch's reads, so intervals would overlap or leave gaps and one could span a
/// deploy. Raw per-series counters at one `time=` give exact counts between two reads.
struct Query {
    configured: String,
    sent: String,
}

impl Query {
    fn new(expr: &str) -> Query {
        Query {
            configured: expr.to_string(),
            sent: inner_of_sum(expr).unwrap_or(expr).to_string(),
        }
    }
}

enum Kind {
    Scrape {
        urls: Vec<Url>,
        spec: ScrapeSpec,
    },
    Prometheus {
        url: Url,
        requests: Query,
        errors: Query,
        latency: Option<(Query, Query)>,
        auth: Option<String>,
    },
}

/// One read of one endpoint (or server), series by series, before any sum.
#[derive(Debug, Default)]
struct Raw {
    requests: Vec<Series>,
    errors: Vec<Series>,
    latency: Option<(Vec<Series>, Vec<Series>)>,
}

impl Raw {
    fn origins(&self) -> Origins {
        let latency = self.latency.iter().flat_map(|(s, c)| s.iter().chain(c));
        self.requests
            .iter()
            .chain(&self.errors)
            .chain(latency)
            .map(|s| s.origin.clone())
            .collect()
    }
}

/// The reset-free counters of one endpoint (or server), and the origins of its last read.
#[derive(Debug, Default)]
struct Counters {
    requests: Counter,
    errors: Counter,
    latency_sum: Counter,
    latency_count: Counter,
    before: Option<Origins>,
}

impl Counters {
    /// The reading after `raw`; refused when its series, each a valid counter, sum to more than
    /// an `f64` holds (an infinite count is garbage, never evidence).
    fn reading(&mut self, raw: &Raw, version: Option<String>) -> Result<Reading, String> {
        let before = self.before.as_ref();
        let requests = self.requests.advance(&raw.requests, before);
        let errors = self.errors.advance(&raw.errors, before);
        let latency = raw.latency.as_ref().map(|(sum, count)| {
            (
                self.latency_sum.advance(sum, before),
                self.latency_count.advance(count, before),
            )
        });
        self.before = Some(raw.origins());
        let (sum, count) = latency.unwrap_or_default();
        for (what, total) in [
            ("requests", requests),
            ("errors", errors),
            ("latency sum", sum),
            ("latency count", count),
        ] {
            if !valid_counter(total) {
                return Err(format!(
                    "the {what} counters sum to {total}, beyond what a counter can count"
                ));
            }
        }
        Ok(Reading {
            requests,
            errors,
            latency,
            version,
        })
    }
}

impl MetricsSource {
    /// Builds the source; selectors were validated when the config was loaded.
    pub fn new(config: &MetricsConfig) -> Result<MetricsSource, String> {
        let kind = match &config.source {
            MetricsKind::Scrape {
                urls,
                requests,
                errors,
                latency_histogram,
                version_metric,
                version_label,
            } => Kind::Scrape {
                urls: urls.clone(),
                spec: ScrapeSpec {
                    requests: Selector::parse(requests).map_err(|e| e.to_string())?,
                    errors: Selector::parse(errors).map_err(|e| e.to_string())?,
                    latency: latency_histogram
                        .as_deref()
                        .map(Selector::histogram)
                        .transpose()
                        .map_err(|e| e.to_string())?,
                    version: version_metric
                        .clone()
                        .map(|m| (m, version_label.clone().unwrap_or_else(|| "version".into()))),
                },
            },
            MetricsKind::Prometheus {
                url,
                requests,
                errors,
                latency_sum,
                latency_count,
                auth_header_env,
            } => Kind::Prometheus {
                url: url.clone(),
                requests: Query::new(requests),
                errors: Query::new(errors),
                latency: latency_sum
                    .as_deref()
                    .zip(latency_count.as_deref())
                    .map(|(s, c)| (Query::new(s), Query::new(c))),
                auth: auth_header_env.as_ref().and_then(|v| std::env::var(v).ok()),
            },
        };
        let endpoints = match &kind {
            Kind::Scrape { urls, .. } => urls.len(),
            Kind::Prometheus { .. } => 1,
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(MetricsSource {
            kind,
            client,
            timeout: config.timeout,
            counters: (0..endpoints).map(|_| Counters::default()).collect(),
        })
    }

    /// One reading per endpoint; the first failing endpoint fails the whole read (partial
    /// evidence would bias the error ratio).
    pub async fn read(&mut self) -> Result<Vec<Reading>, SourceError> {
        match &self.kind {
            Kind::Scrape { urls, spec } => {
                let mut raws = Vec::with_capacity(urls.len());
                for url in urls {
                    raws.push(self.scrape(url, spec).await?);
                }
                urls.iter()
                    .zip(raws)
                    .zip(&mut self.counters)
                    .map(|((url, (raw, version)), c)| {
                        c.reading(&raw, version)
                            .map_err(|message| SourceError::Garbage {
                                url: redact(url),
                                message,
                            })
                    })
                    .collect()
            }
            Kind::Prometheus {
                url,
                requests,
                errors,
                latency,
                auth,
            } => {
                let auth = auth.as_deref();
                // One evaluation instant for every query: requests and errors describe the
                // same moment, whatever Prometheus scraped between two HTTP calls.
                let at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| format!("{:.3}", d.as_secs_f64()))
                    .unwrap_or_default();
                let raw = Raw {
                    requests: self.promql(url, requests, &at, auth).await?,
                    errors: self.promql(url, errors, &at, auth).await?,
                    latency: match latency {
                        Some((sum, count)) => Some((
                            self.promql(url, sum, &at, auth).await?,
                            self.promql(url, count, &at, auth).await?,
                        )),
                        None => None,
                    },
                };
                let missing = |q: &Query| SourceError::Missing {
                    url: redact(url),
                    selector: q.configured.clone(),
                };
                if raw.requests.is_empty() {
                    return Err(missing(requests));
                }
                if let (Some((s, c)), Some((sq, cq))) = (&raw.latency, latency) {
                    if s.is_empty() || c.is_empty() {
                        return Err(missing(if s.is_empty() { sq } else { cq }));
                    }
                }
                let reading = self.counters[0].reading(&raw, None).map_err(|message| {
                    SourceError::Garbage {
                        url: redact(url),
                        message,
                    }
                })?;
                Ok(vec![reading])
            }
        }
    }

    async fn get(&self, url: Url, auth: Option<&str>) -> Result<String, SourceError> {
        let name = redact(&url);
        let mut req = self.client.get(url).timeout(self.timeout);
        if let Some(a) = auth {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| classify(&name, self.timeout, e))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(SourceError::Http { url: name, status });
        }
        resp.text()
            .await
            .map_err(|e| classify(&name, self.timeout, e))
    }

    /// One endpoint's series, and the version it says it serves.
    async fn scrape(
        &self,
        url: &Url,
        spec: &ScrapeSpec,
    ) -> Result<(Raw, Option<String>), SourceError> {
        let name = redact(url);
        let body = self.get(url.clone(), None).await?;
        let samples = parse(&body).map_err(|e| SourceError::Garbage {
            url: name.clone(),
            message: e.to_string(),
        })?;
        let raw = scraped(&samples, spec, url.as_str()).map_err(|e| match e {
            Scraped::Missing(selector) => SourceError::Missing {
                url: name.clone(),
                selector,
            },
            Scraped::Garbage(message) => SourceError::Garbage {
                url: name.clone(),
                message,
            },
        })?;
        let version = spec.version.as_ref().and_then(|(metric, label)| {
            samples
                .iter()
                .find(|s| s.name == *metric)
                .and_then(|s| s.label(label))
                .map(String::from)
        });
        Ok((raw, version))
    }

    /// Evaluates an instant PromQL query at `at` (Unix seconds): its series, each a counter.
    async fn promql(
        &self,
        base: &Url,
        query: &Query,
        at: &str,
        auth: Option<&str>,
    ) -> Result<Vec<Series>, SourceError> {
        let mut url = base.clone();
        url.set_path(&format!(
            "{}/api/v1/query",
            base.path().trim_end_matches('/')
        ));
        url.query_pairs_mut()
            .clear()
            .append_pair("query", &query.sent)
            .append_pair("time", at);
        let body = self.get(url, auth).await?;
        promql_series(&body, &query.configured).map_err(|message| SourceError::Garbage {
            url: redact(base),
            message,
        })
    }
}

/// Why an endpoint's samples gave no reading.
#[derive(Debug, PartialEq)]
enum Scraped {
    Missing(String),
    Garbage(String),
}

/// The series of one scraped endpoint that the spec selects, all from origin `origin`. No
/// request series is a broken source; no error series (none happened yet) is an empty list.
fn scraped(samples: &[Sample], spec: &ScrapeSpec, origin: &str) -> Result<Raw, Scraped> {
    let select = |sel: &Selector| -> Result<Vec<Series>, Scraped> {
        samples
            .iter()
            .filter(|s| sel.matches(s))
            .map(|s| {
                let key = series_key(
                    std::iter::once(("__name__", s.name.as_str()))
                        .chain(s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                );
                if valid_counter(s.value) {
                    Ok(Series {
                        key,
                        origin: origin.to_string(),
                        value: s.value,
                    })
                } else {
                    Err(Scraped::Garbage(format!(
                        "{key} is {}, not a counter value",
                        s.value
                    )))
                }
            })
            .collect()
    };
    let requests = select(&spec.requests)?;
    if requests.is_empty() {
        return Err(Scraped::Missing(spec.requests.text.clone()));
    }
    let errors = select(&spec.errors)?;
    let latency = match &spec.latency {
        Some((sum, count)) => {
            let (s, c) = (select(sum)?, select(count)?);
            if s.is_empty() || c.is_empty() {
                return Err(Scraped::Missing(format!("{}/{}", sum.text, count.text)));
            }
            Some((s, c))
        }
        None => None,
    };
    Ok(Raw {
        requests,
        errors,
        latency,
    })
}

/// `{k="v",...}` with the labels sorted: the identity of a series.
fn series_key<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let sorted: BTreeMap<&str, &str> = labels.collect();
    let inner: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(","))
}

/// The series of a Prometheus instant-query answer. What restarts together is a scrape target
/// (`job` and `instance`); a series without them is its own origin. An empty vector is no
/// series (0 for a counter beside others, missing for requests: the caller decides).
fn promql_series(body: &str, expr: &str) -> Result<Vec<Series>, String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    if v["status"] != "success" {
        return Err(match (&v["status"], &v["error"]) {
            (_, error @ serde_json::Value::String(_)) => format!("query {expr:?} failed: {error}"),
            (serde_json::Value::Null, _) => {
                format!("query {expr:?} was answered without a status: not a Prometheus API answer")
            }
            (status, _) => {
                format!("query {expr:?} failed with status {status} and no error message")
            }
        });
    }
    let number = |value: &serde_json::Value, key: &str| -> Result<f64, String> {
        value[1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|f| valid_counter(*f))
            .ok_or_else(|| {
                format!(
                    "query {expr:?} returned {} for {key}, not a counter value",
                    value[1]
                )
            })
    };
    match v["data"]["resultType"].as_str() {
        Some("scalar") => Ok(vec![Series {
            key: "scalar".into(),
            origin: "scalar".into(),
            value: number(&v["data"]["result"], "its scalar")?,
        }]),
        Some("vector") => {
            let result = v["data"]["result"]
                .as_array()
                .ok_or_else(|| format!("query {expr:?} answered a vector without a result"))?;
            result
                .iter()
                .map(|r| {
                    let labels: Vec<(&str, &str)> = r["metric"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()))
                                .collect()
                        })
                        .unwrap_or_default();
                    let key = series_key(labels.iter().copied());
                    let target: Vec<(&str, &str)> = labels
                        .iter()
                        .copied()
                        .filter(|(k, _)| *k == "job" || *k == "instance")
                        .collect();
                    let origin = if target.is_empty() {
                        key.clone()
                    } else {
                        series_key(target.into_iter())
                    };
                    Ok(Series {
                        value: number(&r["value"], &key)?,
                        key,
                        origin,
                    })
                })
                .collect()
        }
        Some(other) => Err(format!(
            "query {expr:?} returned a {other:?}, expected a vector or a scalar"
        )),
        None => Err(format!(
            "query {expr:?} was answered without data.resultType: not a Prometheus API answer"
        )),
    }
}

/// The URL without credentials, for messages and logs.
fn redact(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.set_query(None);
    u.to_string()
}

fn classify(url: &str, timeout: Duration, e: reqwest::Error) -> SourceError {
    if e.is_timeout() {
        return SourceError::Timeout {
            url: url.to_string(),
            timeout,
        };
    }
    SourceError::Unreachable {
        url: url.to_string(),
        message: crate::root_cause(&e),
    }
}

#[cfg(test)]
#[path = "source_props.rs"]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    /// A Prometheus answer with one `http_requests_total` series per `(instance, code, value)`.
    fn answer(series: &[(&str, &str, &str)]) -> String {
        let result: Vec<String> = series
            .iter()
            .map(|(instance, code, value)| {
                format!(
                    r#"{{"metric":{{"__name__":"http_requests_total","job":"demo","instance":"{instance}","code":"{code}"}},"value":[1700000000.5,"{value}"]}}"#
                )
            })
            .collect();
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            result.join(",")
        )
    }

    fn series(body: &str) -> Vec<Series> {
        promql_series(body, "sum(http_requests_total)").unwrap()
    }

    /// Feeds one Prometheus answer per query to the counters, as `read` does.
    fn read(c: &mut Counters, requests: &str, errors: &str) -> Reading {
        let raw = Raw {
            requests: series(requests),
            errors: series(errors),
            latency: None,
        };
        c.reading(&raw, None).unwrap()
    }

    #[test]
    fn promql_series_are_keyed_by_labels_and_grouped_by_target() {
        let s = series(&answer(&[("a:1", "200", "10"), ("b:2", "200", "4")]));
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0].key,
            r#"{__name__="http_requests_total",code="200",instance="a:1",job="demo"}"#
        );
        assert_eq!(s[0].origin, r#"{instance="a:1",job="demo"}"#);
        assert_eq!(s[1].value, 4.0);
        let scalar =
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"7"]}}"#;
        assert_eq!(series(scalar)[0].value, 7.0);
    }

    #[test]
    fn nan_or_infinite_promql_values_are_garbage() {
        for bad in ["NaN", "+Inf", "-Inf", "-3"] {
            let e = promql_series(&answer(&[("a:1", "500", bad)]), "q").unwrap_err();
            assert!(e.contains("not a counter value"), "{bad}: {e}");
        }
        let failed = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(promql_series(failed, "q")
            .unwrap_err()
            .contains("parse error"));
        assert!(promql_series("<html>", "q").is_err());
    }

    /// Seen writing the property tests (issue 18), which require finite readings and refusals
    /// without Debug text: huge but finite values summed to +inf, and an answer without a status
    /// or of another result type was refused with `null` or a Debug `Some("matrix")` for a reason.
    #[test]
    fn huge_sums_and_odd_answers_are_refused_in_words() {
        let huge = answer(&[("a:1", "200", "1e308"), ("b:2", "200", "1e308")]);
        let raw = Raw {
            requests: series(&huge),
            ..Raw::default()
        };
        let e = Counters::default().reading(&raw, None).unwrap_err();
        assert!(e.contains("requests counters sum to inf"), "{e}");
        let e = promql_series("[]", "q").unwrap_err();
        assert_eq!(
            e,
            "query \"q\" was answered without a status: not a Prometheus API answer"
        );
        let e = promql_series(r#"{"status":"fail"}"#, "q").unwrap_err();
        assert!(e.contains("failed with status \"fail\""), "{e}");
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        let e = promql_series(matrix, "q").unwrap_err();
        assert!(
            e.contains("returned a \"matrix\", expected a vector") && !e.contains("Some"),
            "{e}"
        );
        let e = promql_series(r#"{"status":"success"}"#, "q").unwrap_err();
        assert!(e.contains("without data.resultType"), "{e}");
    }

    #[test]
    fn an_empty_errors_vector_beside_requests_is_zero_errors() {
        let mut c = Counters::default();
        let empty = answer(&[]);
        let r = read(&mut c, &answer(&[("a:1", "200", "100")]), &empty);
        assert_eq!((r.requests, r.errors), (100.0, 0.0));
        let r = read(&mut c, &answer(&[("a:1", "200", "150")]), &empty);
        assert_eq!((r.requests, r.errors), (150.0, 0.0));
        // The first 5xx creates the series: its 2 errors are this interval's.
        let r = read(
            &mut c,
            &answer(&[("a:1", "200", "198"), ("a:1", "500", "2")]),
            &answer(&[("a:1", "500", "2")]),
        );
        assert_eq!((r.requests, r.errors), (200.0, 2.0));
    }

    #[test]
    fn an_instance_restarting_under_a_summed_query_counts_only_the_real_increase() {
        let mut c = Counters::default();
        let reqs = |a: &str, b: Option<&str>| {
            let mut s = vec![("a:1", "200", a)];
            s.extend(b.map(|b| ("b:2", "200", b)));
            answer(&s)
        };
        let errs = |a: &str, b: Option<&str>| {
            let mut s = vec![("a:1", "500", a)];
            s.extend(b.map(|b| ("b:2", "500", b)));
            answer(&s)
        };
        let r0 = read(
            &mut c,
            &reqs("50000", Some("40000")),
            &errs("500", Some("400")),
        );
        let r1 = read(
            &mut c,
            &reqs("50100", Some("40100")),
            &errs("501", Some("401")),
        );
        assert_eq!(
            (r1.requests - r0.requests, r1.errors - r0.errors),
            (200.0, 2.0)
        );
        // b is restarting: stale in Prometheus, absent from the answer.
        let r2 = read(&mut c, &reqs("50200", None), &errs("502", None));
        assert_eq!(
            (r2.requests - r1.requests, r2.errors - r1.errors),
            (100.0, 1.0)
        );
        // b is back from zero.
        let r3 = read(&mut c, &reqs("50300", Some("60")), &errs("503", Some("0")));
        assert_eq!(
            (r3.requests - r2.requests, r3.errors - r2.errors),
            (160.0, 1.0)
        );
        // The old code read sum() = 50,300 + 60 after 90,200: a "reset" booking 50,360 requests.
    }

    fn spec(latency: Option<&str>) -> ScrapeSpec {
        ScrapeSpec {
            requests: Selector::parse("http_requests_total").unwrap(),
            errors: Selector::parse(r#"http_requests_total{code=~"5.."}"#).unwrap(),
            latency: latency.map(|h| Selector::histogram(h).unwrap()),
            version: None,
        }
    }

    #[test]
    fn a_scraped_endpoint_without_error_series_has_zero_errors() {
        let samples = parse("http_requests_total{code=\"200\"} 90\n").unwrap();
        let raw = scraped(&samples, &spec(None), "e").unwrap();
        assert_eq!(raw.requests.len(), 1);
        assert!(raw.errors.is_empty());
        let mut c = Counters::default();
        assert_eq!(c.reading(&raw, None).unwrap().errors, 0.0);
        assert_eq!(
            scraped(&parse("other 1\n").unwrap(), &spec(None), "e").unwrap_err(),
            Scraped::Missing("http_requests_total".into())
        );
    }

    #[test]
    fn nan_in_a_selected_scraped_series_is_garbage_but_not_elsewhere() {
        let body = "http_requests_total{code=\"200\"} 90\nhttp_requests_total{code=\"500\"} NaN\n";
        let e = scraped(&parse(body).unwrap(), &spec(None), "e").unwrap_err();
        assert!(matches!(e, Scraped::Garbage(m) if m.contains("NaN")));
        // A NaN quantile of an unrelated summary is normal exporter output.
        let body = "http_requests_total 90\ngo_gc_duration_seconds{quantile=\"0.5\"} NaN\nh_sum +Inf\nh_count 3\n";
        assert!(scraped(&parse(body).unwrap(), &spec(None), "e").is_ok());
        assert!(matches!(
            scraped(&parse(body).unwrap(), &spec(Some("h")), "e"),
            Err(Scraped::Garbage(_))
        ));
    }
}
