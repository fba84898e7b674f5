//! Health probes: one GET of a target's `/health` URL, judged by the rule in DESIGN.md — a pass is a
//! 2xx answer within the timeout whose JSON `status` field, if the body has one, equals `"ok"`.
//! The judgement is a pure function; the HTTP edges are [`Prober`] (shared, reqwest) and
//! [`HealthProbe`] (one keep-alive connection per target).

use std::time::{Duration, Instant};

use url::Url;

mod conn;
mod http1;

pub use conn::HealthProbe;

/// Why a probe failed, kept small and bounded so it can become a metric label later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    /// Connection refused, reset, DNS: nothing answered.
    Unreachable(String),
    Timeout,
    /// A non-2xx HTTP status.
    Status(u16),
    /// 2xx, but the JSON body's `status` was not `"ok"` (the value is kept for the record).
    NotOk(String),
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeFailure::Unreachable(e) => write!(f, "unreachable ({e})"),
            ProbeFailure::Timeout => write!(f, "timed out"),
            ProbeFailure::Status(s) => write!(f, "HTTP {s}"),
            ProbeFailure::NotOk(s) => write!(f, "status={s}"),
        }
    }
}

/// Judges an answer. Bodies that are not JSON, or JSON without `status`, pass on a 2xx alone:
/// plenty of services answer `OK` in plain text.
pub fn judge(http_status: u16, body: &[u8]) -> Result<(), ProbeFailure> {
    if !(200..300).contains(&http_status) {
        return Err(ProbeFailure::Status(http_status));
    }
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return Ok(());
    };
    match map.get("status") {
        None => Ok(()),
        Some(serde_json::Value::String(s)) if s == "ok" => Ok(()),
        Some(serde_json::Value::String(s)) => {
            Err(ProbeFailure::NotOk(s.chars().take(64).collect()))
        }
        Some(other) => Err(ProbeFailure::NotOk(
            other.to_string().chars().take(64).collect(),
        )),
    }
}

/// One probe's result with its latency, for the watch window and metrics.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub outcome: Result<(), ProbeFailure>,
    pub latency: Duration,
}

/// The HTTP edge. Proxies are disabled: health URLs are direct addresses of the service.
///
/// Connections are kept alive between probes: at 1,000 targets a second, a TCP handshake and
/// teardown per probe was most of rollwatch's CPU (and the health servers'). A service that was
/// redeployed closed its side, and the pool does not hand out a connection it has seen closed;
/// one reset in flight is one failed probe, and a verdict needs `failures` in a row.
#[derive(Clone)]
pub struct Prober {
    client: reqwest::Client,
}

/// An idle connection is dropped after this: several intervals, so steady probing reuses it.
const IDLE_KEEP: Duration = Duration::from_secs(30);

impl Prober {
    pub fn new() -> Result<Prober, reqwest::Error> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_idle_timeout(IDLE_KEEP)
            .build()?;
        Ok(Prober { client })
    }

    pub async fn probe(&self, url: &Url, timeout: Duration) -> ProbeResult {
        let started = Instant::now();
        let outcome = async {
            let resp = self
                .client
                .get(url.clone())
                .timeout(timeout)
                .send()
                .await
                .map_err(classify)?;
            let status = resp.status().as_u16();
            let body = resp.bytes().await.map_err(classify)?;
            judge(status, &body)
        }
        .await;
        ProbeResult {
            outcome,
            latency: started.elapsed(),
        }
    }

    /// Probes every `interval` until one passes or `within` has elapsed; returns the time it took,
    /// or the last failure.
    pub async fn wait_healthy(
        &self,
        url: &Url,
        timeout: Duration,
        interval: Duration,
        within: Duration,
    ) -> Result<Duration, ProbeFailure> {
        let started = Instant::now();
        loop {
            let result = self.probe(url, timeout).await;
            match result.outcome {
                Ok(()) => return Ok(started.elapsed()),
                Err(e) if started.elapsed() + interval >= within => return Err(e),
                Err(_) => tokio::time::sleep(interval).await,
            }
        }
    }
}

fn classify(e: reqwest::Error) -> ProbeFailure {
    if e.is_timeout() {
        ProbeFailure::Timeout
    } else {
        ProbeFailure::Unreachable(crate::root_cause(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_status_passes() {
        assert_eq!(judge(200, br#"{"status":"ok","version":"v1"}"#), Ok(()));
    }

    #[test]
    fn non_ok_status_field_fails_with_value() {
        assert_eq!(
            judge(200, br#"{"status":"degraded"}"#),
            Err(ProbeFailure::NotOk("degraded".into()))
        );
        assert_eq!(
            judge(200, br#"{"status":false}"#),
            Err(ProbeFailure::NotOk("false".into()))
        );
    }

    #[test]
    fn non_2xx_fails_whatever_the_body() {
        assert_eq!(
            judge(503, br#"{"status":"ok"}"#),
            Err(ProbeFailure::Status(503))
        );
        assert_eq!(judge(301, b""), Err(ProbeFailure::Status(301)));
    }

    #[test]
    fn plain_text_or_statusless_json_passes_on_2xx() {
        assert_eq!(judge(200, b"OK"), Ok(()));
        assert_eq!(judge(204, b""), Ok(()));
        assert_eq!(judge(200, br#"{"healthy":true}"#), Ok(()));
        assert_eq!(judge(200, br#"["status"]"#), Ok(()));
    }
}
