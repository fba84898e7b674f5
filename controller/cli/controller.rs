//! The CLI's side of talking to a running controller: is one there, and sending it an order
//! that may find its watcher busy.

use std::time::Duration;

/// How long `rollwatch rollback` waits for a controller's `/healthz` before deciding. A
/// controller that accepts the connection but has not answered by then is alive and slow: the
/// CLI refuses rather than roll back beside it (two rollbacks of one target at once).
pub const HEALTH_WAIT: Duration = Duration::from_secs(10);
/// Orders answered 503 busy are sent again this many times, after the `Retry-After` the
/// controller gave (at most [`MAX_RETRY_AFTER`] each).
const BUSY_RETRIES: usize = 3;
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// What answered on `controller.listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// Nothing listens (connection refused): no controller, the CLI may act by itself.
    Down,
    /// `/healthz` answered 2xx.
    Up,
    /// Something accepted the connection but did not answer 2xx within [`HEALTH_WAIT`].
    Unresponsive(String),
}

pub async fn liveness(base: &str) -> Liveness {
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(HEALTH_WAIT)
        .build()
    {
        Ok(c) => c,
        Err(e) => return Liveness::Unresponsive(format!("cannot build an HTTP client: {e}")),
    };
    match client.get(format!("{base}/healthz")).send().await {
        Ok(r) if r.status().is_success() => Liveness::Up,
        Ok(r) => Liveness::Unresponsive(format!("/healthz answered {}", r.status())),
        Err(e) if e.is_connect() && !e.is_timeout() => Liveness::Down,
        Err(e) if e.is_timeout() => Liveness::Unresponsive(format!(
            "/healthz did not answer within {}",
            humantime::format_duration(HEALTH_WAIT)
        )),
        Err(e) => Liveness::Unresponsive(format!("/healthz failed: {e}")),
    }
}

/// Sends the request `make` builds; on 503 busy (the watcher's queue is full, nothing was
/// changed) waits out `Retry-After` and sends it again, [`BUSY_RETRIES`] times at most. Returns
/// the last answer.
pub async fn send_retrying_busy(
    make: impl Fn() -> reqwest::RequestBuilder,
) -> reqwest::Result<reqwest::Response> {
    let mut tries = 0;
    loop {
        let resp = make().send().await?;
        let follower = resp.headers().contains_key(crate::api::FOLLOWER_HEADER);
        if resp.status() != reqwest::StatusCode::SERVICE_UNAVAILABLE
            || follower
            || tries >= BUSY_RETRIES
        {
            return Ok(resp);
        }
        tries += 1;
        let wait = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Duration::from_secs(1), Duration::from_secs)
            .min(MAX_RETRY_AFTER);
        tell!(
            "the controller is busy (its queue is full; nothing changed); trying again in {}",
            humantime::format_duration(wait)
        );
        tokio::time::sleep(wait).await;
    }
}
