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
            Ok(Ok(answer)) if (300..400).contains(&answer.status) => {
                // Redirects are followed the way the shared client follows them.
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
        if self.conn.as_ref().is_some_and(|c| !idle_and_clean(&c.stream)) {
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
        .map_err(|e| WireError::Broken(innermost(&e)))?;
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
            let body = "x".repeat(http1::MAX_BODY + 1000);
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
        assert_eq!(p.addr, "svc.local:8080");
        let request = String::from_utf8(p.request).unwrap();
        assert!(
            request.starts_with("GET /health?deep=1 HTTP/1.1\r\nHost: svc.local:8080\r\n"),
            "{request}"
        );
        let p = plain(&Url::parse("http://[::1]/h").unwrap()).unwrap();
        assert_eq!(p.addr, "[::1]:80");
        assert!(String::from_utf8(p.request)
            .unwrap()
            .contains("Host: [::1]\r\n"));
        assert!(plain(&Url::parse("https://svc/health").unwrap()).is_none());
    }

    // ---------------- review tests ----------------

    /// Each request head (whole text) and its overall number -> writes (delay ms, bytes), then
    /// whether to close; after the writes, `after` writes (delay, bytes) while idle.
    type Plan = Vec<(u64, Vec<u8>)>;
    async fn serve_with<F>(f: F) -> (u16, Arc<AtomicUsize>)
    where
        F: Fn(&str, usize) -> (Plan, bool) + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let reqs = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let f = f.clone();
                let reqs = reqs.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut head = Vec::new();
                    loop {
                        let Ok(n) = socket.read(&mut buf).await else { return };
                        if n == 0 { return; }
                        head.extend_from_slice(&buf[..n]);
                        let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                        let text = String::from_utf8_lossy(&head[..end]).to_string();
                        head.drain(..end + 4);
                        let k = reqs.fetch_add(1, Ordering::SeqCst);
                        let (plan, close) = f(&text, k);
                        for (delay, bytes) in plan {
                            if delay > 0 { tokio::time::sleep(Duration::from_millis(delay)).await; }
                            if socket.write_all(&bytes).await.is_err() { return; }
                            let _ = socket.flush().await;
                        }
                        if close { return; }
                    }
                });
            }
        });
        (port, accepted)
    }

    fn ok_bytes() -> Vec<u8> { ok_json("").0.into_bytes() }

    #[tokio::test]
    async fn review_late_answer_after_timeout_is_not_the_next_probes_answer() {
        // Request 0: answered 503 after 400 ms (probe timeout 150 ms). Later requests: 200 ok.
        let (port, accepted) = serve_with(|_, k| {
            if k == 0 {
                (vec![(400, b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n".to_vec())], false)
            } else {
                (vec![(0, ok_bytes())], false)
            }
        }).await;
        let mut p = probe_for(port, "/health", 150);
        assert_eq!(p.probe().await.outcome, Err(ProbeFailure::Timeout));
        tokio::time::sleep(Duration::from_millis(400)).await; // the stale 503 is on the old socket by now
        assert_eq!(p.probe().await.outcome, Ok(()));
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "timed-out connection dropped");
    }

    #[tokio::test]
    async fn review_unsolicited_408_on_idle_connection_is_not_a_failed_probe() {
        // Like servers that answer an idle keep-alive connection's timeout with a 408 and close.
        let (port, _) = serve_with(|_, _| {
            (vec![(0, ok_bytes()), (50, b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".to_vec())], true)
        }).await;
        let url = Url::parse(&format!("http://127.0.0.1:{port}/health")).unwrap();
        // The old path (reqwest) on the same server, same schedule:
        let old = Prober::new().unwrap();
        assert_eq!(old.probe(&url, Duration::from_secs(2)).await.outcome, Ok(()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let old_second = old.probe(&url, Duration::from_secs(2)).await.outcome;
        // The new path:
        let mut p = probe_for(port, "/health", 2000);
        assert_eq!(p.probe().await.outcome, Ok(()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let new_second = p.probe().await.outcome;
        assert_eq!((old_second, new_second), (Ok(()), Ok(())));
    }

    #[tokio::test]
    async fn review_stale_extra_answer_on_idle_connection_masks_a_failure() {
        // A buggy server writes its answer twice (second copy in a later segment); the service
        // then turns unhealthy. The next probe must see the 503, not the stale 200.
        let (port, _) = serve_with(|_, k| {
            if k == 0 {
                (vec![(0, ok_bytes()), (30, ok_bytes())], false)
            } else {
                (vec![(0, b"HTTP/1.1 503 Down\r\nContent-Length: 0\r\n\r\n".to_vec())], false)
            }
        }).await;
        let mut p = probe_for(port, "/health", 2000);
        assert_eq!(p.probe().await.outcome, Ok(()));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(p.probe().await.outcome, Err(ProbeFailure::Status(503)));
    }

    #[tokio::test]
    async fn review_oversized_json_body_judged_like_reqwest() {
        let (port, _) = serve_with(|_, _| {
            let body = format!(r#"{{"status":"degraded","pad":"{}"}}"#, "x".repeat(70 * 1024));
            (vec![(0, format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes())], false)
        }).await;
        let url = Url::parse(&format!("http://127.0.0.1:{port}/health")).unwrap();
        let old = Prober::new().unwrap().probe(&url, Duration::from_secs(2)).await.outcome;
        let new = probe_for(port, "/health", 2000).probe().await.outcome;
        assert_eq!(new, old, "old path (reqwest) = {old:?}");
    }

    #[tokio::test]
    async fn review_userinfo_in_url_is_sent_like_reqwest() {
        let (port, _) = serve_with(|head, _| {
            let authed = head.to_ascii_lowercase().contains("\r\nauthorization: basic ");
            let r = if authed { ok_bytes() } else { b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_vec() };
            (vec![(0, r)], false)
        }).await;
        let url = Url::parse(&format!("http://probe:secret@127.0.0.1:{port}/health")).unwrap();
        let old = Prober::new().unwrap().probe(&url, Duration::from_secs(2)).await.outcome;
        let new = HealthProbe::new(&url, Duration::from_secs(2), Prober::new().unwrap()).probe().await.outcome;
        assert_eq!(new, old, "old path (reqwest) = {old:?}");
    }

    #[tokio::test]
    async fn review_many_headers_judged_like_reqwest() {
        let (port, _) = serve_with(|_, _| {
            let mut h = String::from("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n");
            for i in 0..70 { h.push_str(&format!("X-H{i}: v\r\n")); }
            h.push_str("\r\nOK");
            (vec![(0, h.into_bytes())], false)
        }).await;
        let url = Url::parse(&format!("http://127.0.0.1:{port}/health")).unwrap();
        let old = Prober::new().unwrap().probe(&url, Duration::from_secs(2)).await.outcome;
        let new = probe_for(port, "/health", 2000).probe().await.outcome;
        assert_eq!(new, old, "old path (reqwest) = {old:?}");
    }

    #[tokio::test]
    async fn review_body_in_many_small_segments_and_http10_close_delimited() {
        let (port, _) = serve_with(|_, _| {
            let body = br#"{"status":"degraded"}"#;
            let mut plan = vec![(0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec())];
            for b in body { plan.push((2, format!("1\r\n{}\r\n", *b as char).into_bytes())); }
            plan.push((2, b"0\r\nX-Trailer: 1\r\n".to_vec()));
            plan.push((2, b"\r\n".to_vec()));
            (plan, false)
        }).await;
        let mut p = probe_for(port, "/health", 2000);
        assert_eq!(p.probe().await.outcome, Err(ProbeFailure::NotOk("degraded".into())));
        let (port, _) = serve_with(|_, _| {
            (vec![(0, b"HTTP/1.0 200 OK\r\n\r\n{\"status\":".to_vec()), (20, b"\"degraded\"}".to_vec())], true)
        }).await;
        let mut p = probe_for(port, "/health", 2000);
        assert_eq!(p.probe().await.outcome, Err(ProbeFailure::NotOk("degraded".into())));
        assert_eq!(p.probe().await.outcome, Err(ProbeFailure::NotOk("degraded".into())));
    }

    #[tokio::test]
    async fn review_localhost_and_ipv6_and_query() {
        let (port, _) = serve_with(|head, _| {
            let ok = head.starts_with("GET /h%20x?a=b%26c HTTP/1.1\r\n");
            (vec![(0, if ok { ok_bytes() } else { b"HTTP/1.1 404 NF\r\nContent-Length: 0\r\n\r\n".to_vec() })], false)
        }).await;
        let url = Url::parse(&format!("http://localhost:{port}/h%20x?a=b%26c#frag")).unwrap();
        let mut p = HealthProbe::new(&url, Duration::from_secs(2), Prober::new().unwrap());
        assert_eq!(p.probe().await.outcome, Ok(()));
        if let Ok(l6) = TcpListener::bind("[::1]:0").await {
            let port6 = l6.local_addr().unwrap().port();
            tokio::spawn(async move {
                let (mut s, _) = l6.accept().await.unwrap();
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b).await;
                s.write_all(&ok_bytes()).await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            });
            let url = Url::parse(&format!("http://[::1]:{port6}/health")).unwrap();
            let mut p = HealthProbe::new(&url, Duration::from_secs(2), Prober::new().unwrap());
            assert_eq!(p.probe().await.outcome, Ok(()));
        }
    }

    #[tokio::test]
    async fn review_reset_idle_connection_retries_once() {
        // Server answers then resets the connection (SO_LINGER 0) while idle.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 1024];
                    let _ = s.read(&mut b).await;
                    s.write_all(&ok_bytes()).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let _ = s.set_linger(Some(Duration::ZERO));
                    drop(s);
                });
            }
        });
        let mut p = probe_for(port, "/health", 2000);
        for _ in 0..3 {
            assert_eq!(p.probe().await.outcome, Ok(()));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test]
    async fn review_head_then_close_on_reused_connection_is_not_retried_away() {
        // conn 1: request 0 ok; request 1 gets a 503 head (body promised) and the server dies.
        // A fresh connection then answers 200. The 503 was an answer: no silent retry.
        let (port, _) = serve_with(|_, k| match k {
            0 => (vec![(0, ok_bytes())], false),
            1 => (vec![(0, b"HTTP/1.1 503 Down\r\nContent-Length: 10\r\n\r\n".to_vec())], true),
            _ => (vec![(0, ok_bytes())], false),
        }).await;
        let mut p = probe_for(port, "/health", 2000);
        assert_eq!(p.probe().await.outcome, Ok(()));
        let second = p.probe().await.outcome;
        assert_ne!(second, Ok(()), "a 503 that broke off was retried into a pass");
    }

    #[tokio::test]
    async fn review_stale_extra_answer_old_path() {
        let (port, _) = serve_with(|_, k| {
            if k == 0 {
                (vec![(0, ok_bytes()), (30, ok_bytes())], false)
            } else {
                (vec![(0, b"HTTP/1.1 503 Down\r\nContent-Length: 0\r\n\r\n".to_vec())], false)
            }
        }).await;
        let url = Url::parse(&format!("http://127.0.0.1:{port}/health")).unwrap();
        let old = Prober::new().unwrap();
        assert_eq!(old.probe(&url, Duration::from_secs(2)).await.outcome, Ok(()));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(old.probe(&url, Duration::from_secs(2)).await.outcome, Err(ProbeFailure::Status(503)));
    }

    #[tokio::test]
    async fn review_compare_framing_variants() {
        let variants: Vec<&'static str> = vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nOK",
            "HTTP/1.1 200 OK\nContent-Length: 2\n\nOK",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nOK\n0\n\n",
            "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nOK",
            "HTTP/1.1 200 OK\r\nContent-Length: 21\r\nConnection: close\r\n\r\n{\"status\":\"degraded\"}",
            "HTTP/1.1 200 OK\r\ncontent-length:  21 \r\n\r\n{\"status\":\"degraded\"}",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n15\r\n{\"status\":\"degraded\"}\r\n0\r\nX-T: 1\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\n{\"status\":\"degraded\"}",
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\n{\"status\":\"degraded\"}",
            "HTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\n\u{feff}{\"status\":\"x\"}",
        ];
        for v in variants {
            let leaked: &'static str = v;
            let (port, _) = serve_with(move |_, _| (vec![(0, leaked.as_bytes().to_vec())], true)).await;
            let url = Url::parse(&format!("http://127.0.0.1:{port}/health")).unwrap();
            let old = Prober::new().unwrap().probe(&url, Duration::from_millis(500)).await.outcome;
            let new = probe_for(port, "/health", 500).probe().await.outcome;
            println!("{} | old={old:?} | new={new:?} | {:?}", if old == new {"SAME"} else {"DIFF"}, v);
        }
    }
}
