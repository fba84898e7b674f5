//! A target's own keep-alive HTTP/1.1 connection to its `http://` health URL, driven inside the
//! watcher's task. Through the shared [`Prober`] each probe went through reqwest's pool, its
//! layers and a separate connection task; at 1,000 targets a second that path was a third of
//! rollwatch's CPU (profiled). Here one request is written and one response read on a
//! connection only this target uses. `https://` URLs, and answers that redirect, still go
//! through the [`Prober`], so the verdict on an endpoint does not depend on which path probed it.

use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::{header, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use url::Url;

use super::{judge, ProbeFailure, ProbeResult, Prober};

/// Bodies beyond this are not read: the answer is judged on its status and the connection
/// dropped (a health body is a few hundred bytes; an unbounded read is a memory risk).
const MAX_BODY: usize = 64 * 1024;

type Driver = Pin<Box<Connection<TokioIo<TcpStream>, Empty<Bytes>>>>;

struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    /// Polled only while a probe is in flight; between probes the socket just sits idle.
    driver: Driver,
}

/// Where a plain-HTTP health URL points, parsed once.
struct Plain {
    /// `host:port` to connect to (resolved on each connect).
    addr: String,
    /// The `Host` header.
    host: String,
    /// Path and query, the request target.
    target: Uri,
}

/// One target's health probe.
pub struct HealthProbe {
    url: Url,
    timeout: Duration,
    plain: Option<Plain>,
    conn: Option<Conn>,
    fallback: Prober,
}

/// Why one exchange failed, before it becomes a [`ProbeFailure`].
enum Failed {
    /// Nothing came back on the connection: on a reused one, the server may have closed it
    /// while it sat idle, so one more try on a fresh connection is owed.
    NoAnswer(String),
    Other(ProbeFailure),
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
            Ok(Ok((status, _))) if (300..400).contains(&status) => {
                // Redirects are followed the way the shared client follows them.
                return self.fallback.probe(&self.url, self.timeout).await;
            }
            Ok(Ok((status, body))) => judge(status, &body),
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

    async fn exchange(&mut self) -> Result<(u16, Bytes), ProbeFailure> {
        let reused = self.conn.as_ref().is_some_and(|c| !c.sender.is_closed());
        match self.once().await {
            Err(Failed::NoAnswer(_)) if reused => {
                self.conn = None;
                self.once().await.map_err(Failed::into_failure)
            }
            other => other.map_err(Failed::into_failure),
        }
    }

    /// One request on the current connection (opened first if there is none).
    async fn once(&mut self) -> Result<(u16, Bytes), Failed> {
        let Some(plain) = &self.plain else {
            return Err(Failed::Other(ProbeFailure::Unreachable(
                "not an http URL".into(),
            )));
        };
        if self.conn.as_ref().is_none_or(|c| c.sender.is_closed()) {
            self.conn = Some(connect(&plain.addr).await?);
        }
        let Some(Conn { sender, driver }) = self.conn.as_mut() else {
            return Err(Failed::NoAnswer("no connection".into()));
        };
        let request = Request::get(plain.target.clone())
            .header(header::HOST, plain.host.as_str())
            .header(
                header::USER_AGENT,
                concat!("rollwatch/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|e| Failed::Other(ProbeFailure::Unreachable(e.to_string())))?;
        let (result, reusable) = {
            let answer = async {
                sender.ready().await.map_err(no_answer)?;
                let response = sender.send_request(request).await.map_err(no_answer)?;
                let status = response.status().as_u16();
                let (body, complete) = read_body(response.into_body()).await?;
                Ok((status, body, complete))
            };
            tokio::pin!(answer);
            let ended = tokio::select! {
                biased;
                r = &mut answer => Ok(r),
                r = driver => Err(match r {
                    Ok(()) => "connection closed".to_string(),
                    Err(e) => innermost(&e),
                }),
            };
            match ended {
                Ok(r) => (r, true),
                // The server may hang up right after answering: what it sent still counts. The
                // driver is gone, so the answer completes (or fails) without waiting.
                Err(why) => (answer.await.map_err(|_| Failed::NoAnswer(why)), false),
            }
        };
        if !reusable || !matches!(result, Ok((_, _, true))) {
            self.conn = None;
        }
        result.map(|(status, body, _)| (status, body))
    }
}

/// The body up to [`MAX_BODY`], and whether it was read whole.
async fn read_body(mut body: hyper::body::Incoming) -> Result<(Bytes, bool), Failed> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Failed::Other(ProbeFailure::Unreachable(innermost(&e))))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_BODY {
                return Ok((Bytes::from(out), false));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok((Bytes::from(out), true))
}

async fn connect(addr: &str) -> Result<Conn, Failed> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| Failed::Other(ProbeFailure::Unreachable(innermost(&e))))?;
    let _ = stream.set_nodelay(true);
    let (sender, driver) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failed::Other(ProbeFailure::Unreachable(innermost(&e))))?;
    Ok(Conn {
        sender,
        driver: Box::pin(driver),
    })
}

fn no_answer(e: hyper::Error) -> Failed {
    Failed::NoAnswer(innermost(&e))
}

impl Failed {
    fn into_failure(self) -> ProbeFailure {
        match self {
            Failed::NoAnswer(why) => ProbeFailure::Unreachable(why),
            Failed::Other(f) => f,
        }
    }
}

/// The innermost cause ("Connection refused") is what a person needs to read.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source = e;
    while let Some(inner) = source.source() {
        source = inner;
    }
    source.to_string()
}

/// The connection details of an `http://` URL; `None` for anything else (it uses the fallback).
fn plain(url: &Url) -> Option<Plain> {
    if url.scheme() != "http" {
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
        host: host_header,
        target: target.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    //! Against real loopback servers that answer the way real services do: chunked, without a
    //! Content-Type, closing idle connections, redirecting, hanging.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// What the test server writes for a request path, and whether it then closes the socket.
    type Answer = fn(&str) -> (String, bool);

    /// Serves `answer` on a fresh loopback port; returns the port and the connections accepted.
    async fn serve(answer: Answer) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut head = Vec::new();
                    loop {
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        head.extend_from_slice(&buf[..n]);
                        let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let text = String::from_utf8_lossy(&head[..end]).to_string();
                        head.drain(..end + 4);
                        let path = text.split(' ').nth(1).unwrap_or("").to_string();
                        let (response, close) = answer(&path);
                        if socket.write_all(response.as_bytes()).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        (port, accepted)
    }

    fn probe_for(port: u16, path: &str, timeout_ms: u64) -> HealthProbe {
        let url = Url::parse(&format!("http://127.0.0.1:{port}{path}")).unwrap();
        HealthProbe::new(
            &url,
            Duration::from_millis(timeout_ms),
            Prober::new().unwrap(),
        )
    }

    fn ok_json(_: &str) -> (String, bool) {
        let body = r#"{"status":"ok"}"#;
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
        (head + body, false)
    }

    #[tokio::test]
    async fn reuses_one_connection_across_probes() {
        let (port, accepted) = serve(ok_json).await;
        let mut p = probe_for(port, "/health", 2000);
        for _ in 0..3 {
            assert_eq!(p.probe().await.outcome, Ok(()));
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one keep-alive connection"
        );
    }

    #[tokio::test]
    async fn a_server_closing_idle_connections_costs_no_failed_probe() {
        // Answers without `Connection: close`, then hangs up: the next probe finds a dead socket.
        let (port, accepted) = serve(|p| (ok_json(p).0, true)).await;
        let mut p = probe_for(port, "/health", 2000);
        for _ in 0..3 {
            assert_eq!(p.probe().await.outcome, Ok(()));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn chunked_json_without_content_type_is_judged_on_its_status_field() {
        let (port, _) = serve(|_| {
            let body = r#"{"status":"degraded"}"#;
            let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
            (
                format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}"),
                false,
            )
        })
        .await;
        let mut p = probe_for(port, "/health", 2000);
        assert_eq!(
            p.probe().await.outcome,
            Err(ProbeFailure::NotOk("degraded".into()))
        );
        let (port, _) = serve(|_| {
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK".into(),
                false,
            )
        })
        .await;
        assert_eq!(
            probe_for(port, "/health", 2000).probe().await.outcome,
            Ok(())
        );
    }

    #[tokio::test]
    async fn non_2xx_fails_with_its_status() {
        let (port, _) = serve(|_| {
            (
                "HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n".into(),
                false,
            )
        })
        .await;
        let mut p = probe_for(port, "/health", 2000);
        assert_eq!(p.probe().await.outcome, Err(ProbeFailure::Status(503)));
    }

    #[tokio::test]
    async fn a_redirect_is_followed_like_the_shared_client_does() {
        let (port, _) = serve(|path| match path {
            "/health" => ("HTTP/1.1 307 Temporary Redirect\r\nLocation: /health/\r\nContent-Length: 0\r\n\r\n".into(), false),
            _ => ok_json(path),
        })
        .await;
        assert_eq!(
            probe_for(port, "/health", 2000).probe().await.outcome,
            Ok(())
        );
    }

    #[tokio::test]
    async fn a_hanging_server_is_a_timeout_and_a_refusing_port_unreachable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        });
        let r = probe_for(port, "/health", 300).probe().await;
        assert_eq!(r.outcome, Err(ProbeFailure::Timeout));
        assert!(r.latency < Duration::from_secs(2), "{:?}", r.latency);

        let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        match probe_for(port, "/health", 2000).probe().await.outcome {
            Err(ProbeFailure::Unreachable(why)) => assert!(why.contains("refused"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_oversized_body_is_judged_on_its_status_and_the_connection_dropped() {
        let (port, accepted) = serve(|_| {
            let body = "x".repeat(MAX_BODY + 1000);
            (
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ),
                false,
            )
        })
        .await;
        let mut p = probe_for(port, "/health", 2000);
        assert_eq!(p.probe().await.outcome, Ok(()));
        assert_eq!(p.probe().await.outcome, Ok(()));
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "an unread body is not reused"
        );
    }

    #[test]
    fn only_plain_http_urls_get_their_own_connection() {
        let p = plain(&Url::parse("http://svc.local:8080/health?deep=1").unwrap()).unwrap();
        assert_eq!(
            (p.addr.as_str(), p.host.as_str()),
            ("svc.local:8080", "svc.local:8080")
        );
        assert_eq!(p.target, "/health?deep=1");
        let p = plain(&Url::parse("http://[::1]/h").unwrap()).unwrap();
        assert_eq!((p.addr.as_str(), p.host.as_str()), ("[::1]:80", "[::1]"));
        assert!(plain(&Url::parse("https://svc/health").unwrap()).is_none());
    }
}
