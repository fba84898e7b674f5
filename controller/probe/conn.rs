//! A target's own keep-alive HTTP/1.1 connection to its `http://` health URL, used from the
//! watcher's task. Through the shared [`Prober`] each probe went through reqwest's pool, its
//! layers and a separate connection task: at 1,000 targets a second that path was a third of
//! rollwatch's CPU, and hyper's connection API over a per-target socket still ~30% (profiled).
//! Here one prepared request is written and one answer read ([`super::http1`]) on a connection
//! only this target uses. `https://` URLs, and answers that redirect, still go through the
//! [`Prober`], so the verdict on an endpoint does not depend on which path probed it.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use url::Url;

use super::http1::{self, Answer, WireError};
use super::{judge, ProbeFailure, ProbeResult, Prober};

/// An open connection and its read buffer, kept between probes.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Where a plain-HTTP health URL points, parsed once.
struct Plain {
    /// `host:port` to connect to (resolved on each connect).
    addr: String,
    /// The whole request, written as is every probe.
    request: Vec<u8>,
}

/// One target's health probe.
pub struct HealthProbe {
    url: Url,
    timeout: Duration,
    plain: Option<Plain>,
    conn: Option<Conn>,
    fallback: Prober,
}

impl HealthProbe {
    pub fn new(url: &Url, timeout: Duration, fallback: Prober) -> HealthProbe {
        HealthProbe {
            plain: plain(url),
            url: url.clone(),
            timeout,
            conn: None,
            fallback,
        }
    }

    pub async fn probe(&mut self) -> ProbeResult {
        if self.plain.is_none() {
            return self.fallback.probe(&self.url, self.timeout).await;
        }
        let started = Instant::now();
        let outcome = match tokio::time::timeout(self.timeout, self.exchange()).await {
            // Redirects are followed the way the shared client follows them, and a 2xx body too
            // large to read here is read whole there: its `status` field may say not ok.
            Ok(Ok(answer))
                if (300..400).contains(&answer.status)
                    || ((200..300).contains(&answer.status) && !answer.whole) =>
            {
                return self.fallback.probe(&self.url, self.timeout).await;
            }
            Ok(Ok(answer)) => judge(answer.status, &answer.body),
            Ok(Err(failure)) => Err(failure),
            Err(_) => Err(ProbeFailure::Timeout),
        };
        if outcome.is_err() {
            // A connection that failed or timed out mid-answer is in an unknown state.
            self.conn = None;
        }
        ProbeResult {
            outcome,
            latency: started.elapsed(),
        }
    }

    /// One exchange, and one more on a fresh connection if a reused one did not answer at all.
    async fn exchange(&mut self) -> Result<Answer, ProbeFailure> {
        // An idle connection with bytes waiting (an unsolicited 408, a stale duplicate answer)
        // or already closed is not reused: its next bytes would be read as this probe's answer.
        if self
            .conn
            .as_ref()
            .is_some_and(|c| !idle_and_clean(&c.stream))
        {
            self.conn = None;
        }
        let reused = self.conn.is_some();
        match self.once().await {
            Err(WireError::NoAnswer(_)) if reused => {
                self.conn = None;
                self.once().await.map_err(into_failure)
            }
            other => other.map_err(into_failure),
        }
    }

    /// One request on the current connection (opened first if there is none); the connection
    /// is kept only when the answer ended cleanly and the server did not ask to close it.
    async fn once(&mut self) -> Result<Answer, WireError> {
        let Some(plain) = &self.plain else {
            return Err(WireError::Broken("not an http URL".into()));
        };
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => connect(&plain.addr).await?,
        };
        let answer = http1::exchange(&mut conn.stream, &mut conn.buf, &plain.request).await?;
        if answer.reusable {
            self.conn = Some(conn);
        }
        Ok(answer)
    }
}

async fn connect(addr: &str) -> Result<Conn, WireError> {
    // Not `NoAnswer`: a refused connect is the service's answer, not a stale connection.
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| WireError::Broken(crate::root_cause(&e)))?;
    let _ = stream.set_nodelay(true);
    Ok(Conn {
        stream,
        buf: Vec::new(),
    })
}

/// True while nothing is readable on an idle connection (no data, no EOF, no error).
fn idle_and_clean(stream: &TcpStream) -> bool {
    let mut one = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut one);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    stream.poll_peek(&mut cx, &mut buf).is_pending()
}

fn into_failure(e: WireError) -> ProbeFailure {
    match e {
        WireError::NoAnswer(why) | WireError::Broken(why) => ProbeFailure::Unreachable(why),
    }
}

/// The connection details of an `http://` URL; `None` for anything else (it uses the fallback).
fn plain(url: &Url) -> Option<Plain> {
    // Credentials in the URL: reqwest sends them as Basic auth; leave those to it.
    if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let host_header = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    Some(Plain {
        // `host_str` keeps IPv6 brackets, which is the form `connect` parses.
        addr: format!("{host}:{port}"),
        request: http1::request(&target, &host_header),
    })
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
