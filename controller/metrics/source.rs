//! Reading a target's counters from its metrics source, with a timeout. Both kinds answer the
//! same [`Reading`]: cumulative request and error counts and, when configured, the latency
//! histogram's cumulative sum and count — one reading per scraped endpoint, so counter resets are
//! handled per process.

use std::time::Duration;

use url::Url;

use super::parse::parse;
use super::selector::Selector;
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

/// A configured source, with its selectors parsed once.
pub struct MetricsSource {
    kind: Kind,
    client: reqwest::Client,
    timeout: Duration,
}

/// What to read from each scraped endpoint.
struct ScrapeSpec {
    requests: Selector,
    errors: Selector,
    latency: Option<String>,
    /// `(metric, label)` naming the version an endpoint serves, e.g. `build_info{version=".."}`.
    version: Option<(String, String)>,
}

enum Kind {
    Scrape {
        urls: Vec<Url>,
        spec: ScrapeSpec,
    },
    Prometheus {
        url: Url,
        requests: String,
        errors: String,
        latency: Option<(String, String)>,
        auth: Option<String>,
    },
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
                    latency: latency_histogram.clone(),
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
                requests: requests.clone(),
                errors: errors.clone(),
                latency: latency_sum.clone().zip(latency_count.clone()),
                auth: auth_header_env.as_ref().and_then(|v| std::env::var(v).ok()),
            },
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(MetricsSource {
            kind,
            client,
            timeout: config.timeout,
        })
    }

    /// One reading per endpoint; the first failing endpoint fails the whole read (partial
    /// evidence would bias the error ratio).
    pub async fn read(&self) -> Result<Vec<Reading>, SourceError> {
        match &self.kind {
            Kind::Scrape { urls, spec } => {
                let mut out = Vec::with_capacity(urls.len());
                for url in urls {
                    out.push(self.scrape(url, spec).await?);
                }
                Ok(out)
            }
            Kind::Prometheus {
                url,
                requests,
                errors,
                latency,
                auth,
            } => {
                let auth = auth.as_deref();
                let requests = self.promql(url, requests, auth).await?;
                let errors = self.promql(url, errors, auth).await?;
                let latency = match latency {
                    Some((sum, count)) => Some((
                        self.promql(url, sum, auth).await?,
                        self.promql(url, count, auth).await?,
                    )),
                    None => None,
                };
                Ok(vec![Reading {
                    requests,
                    errors,
                    latency,
                    version: None,
                }])
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

    async fn scrape(&self, url: &Url, spec: &ScrapeSpec) -> Result<Reading, SourceError> {
        let ScrapeSpec {
            requests,
            errors,
            latency,
            version,
        } = spec;
        let name = redact(url);
        let body = self.get(url.clone(), None).await?;
        let samples = parse(&body).map_err(|e| SourceError::Garbage {
            url: name.clone(),
            message: e.to_string(),
        })?;
        let missing = |selector: &str| SourceError::Missing {
            url: name.clone(),
            selector: selector.to_string(),
        };
        let req = requests
            .sum(&samples)
            .ok_or_else(|| missing(&requests.text))?;
        // No error series yet is normal (no error happened since start): count it as zero, as
        // long as the request series exists.
        let err = errors.sum(&samples).unwrap_or(0.0);
        let latency = match latency.as_deref() {
            Some(h) => {
                let sum = Selector::parse(&format!("{h}_sum"))
                    .ok()
                    .and_then(|s| s.sum(&samples));
                let count = Selector::parse(&format!("{h}_count"))
                    .ok()
                    .and_then(|s| s.sum(&samples));
                Some(
                    sum.zip(count)
                        .ok_or_else(|| missing(&format!("{h}_sum/{h}_count")))?,
                )
            }
            None => None,
        };
        let version = version.as_ref().and_then(|(metric, label)| {
            samples
                .iter()
                .find(|s| s.name == *metric)
                .and_then(|s| s.label(label))
                .map(String::from)
        });
        Ok(Reading {
            requests: req,
            errors: err,
            latency,
            version,
        })
    }

    /// Evaluates an instant PromQL query that must return one number (a scalar or a one-element
    /// vector; an empty vector reads as 0, as `sum()` of nothing does).
    async fn promql(&self, base: &Url, expr: &str, auth: Option<&str>) -> Result<f64, SourceError> {
        let name = redact(base);
        let mut url = base.clone();
        url.set_path(&format!(
            "{}/api/v1/query",
            base.path().trim_end_matches('/')
        ));
        url.query_pairs_mut().clear().append_pair("query", expr);
        let body = self.get(url, auth).await?;
        let garbage = |message: String| SourceError::Garbage {
            url: name.clone(),
            message,
        };
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| garbage(format!("not JSON: {e}")))?;
        if v["status"] != "success" {
            return Err(garbage(format!("query {expr:?} failed: {}", v["error"])));
        }
        let value = match v["data"]["resultType"].as_str() {
            Some("scalar") => v["data"]["result"][1].as_str(),
            Some("vector") => match v["data"]["result"].as_array().map(Vec::len) {
                Some(0) => {
                    return Err(SourceError::Missing {
                        url: name,
                        selector: expr.to_string(),
                    })
                }
                Some(1) => v["data"]["result"][0]["value"][1].as_str(),
                _ => {
                    return Err(garbage(format!(
                        "query {expr:?} returned several series; wrap it in sum()"
                    )))
                }
            },
            other => {
                return Err(garbage(format!(
                    "query {expr:?} returned {other:?}, expected a number"
                )))
            }
        };
        value
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|f| f.is_finite())
            .ok_or_else(|| garbage(format!("query {expr:?} returned no finite number")))
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
    let mut cur: &dyn std::error::Error = &e;
    while let Some(inner) = cur.source() {
        cur = inner;
    }
    SourceError::Unreachable {
        url: url.to_string(),
        message: cur.to_string(),
    }
}
