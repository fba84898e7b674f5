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
    serve_with(move |head, _| {
        let path = head.split(' ').nth(1).unwrap_or("");
        let (response, close) = answer(path);
        (vec![(0, response.into_bytes())], close)
    })
    .await
}

/// The verdicts on `url` of the old path (the shared reqwest client) and of a target's own
/// connection, in that order. An unreachable service's message is the client's own wording,
/// so only that it was unreachable is compared.
async fn both_paths(
    url: &Url,
    timeout: Duration,
) -> (Result<(), ProbeFailure>, Result<(), ProbeFailure>) {
    let verdict = |r: Result<(), ProbeFailure>| {
        r.map_err(|f| match f {
            ProbeFailure::Unreachable(_) => ProbeFailure::Unreachable(String::new()),
            other => other,
        })
    };
    let old = Prober::new().unwrap().probe(url, timeout).await.outcome;
    let new = HealthProbe::new(url, timeout, Prober::new().unwrap())
        .probe()
        .await
        .outcome;
    (verdict(old), verdict(new))
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
        "/health" => (
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: /health/\r\nContent-Length: 0\r\n\r\n"
                .into(),
            false,
        ),
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
async fn an_oversized_body_goes_to_the_shared_client_and_the_connection_is_dropped() {
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
    assert!(
        p.conn.is_none(),
        "a connection with an unread body is not kept"
    );
    assert_eq!(p.probe().await.outcome, Ok(()));
    // Per probe: our connection, dropped, and the shared client's (pooled after the first).
    assert!(accepted.load(Ordering::SeqCst) >= 3);
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

// Cases where a hand-written client could judge differently from reqwest (the old path).

/// What the server writes for one request: (delay ms, bytes) in order.
type Plan = Vec<(u64, Vec<u8>)>;

/// Serves `f(request head, request number)` = (writes, close after them) on a fresh loopback
/// port; returns the port and the connections accepted.
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
                    let k = reqs.fetch_add(1, Ordering::SeqCst);
                    let (plan, close) = f(&text, k);
                    for (delay, bytes) in plan {
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        if socket.write_all(&bytes).await.is_err() {
                            return;
                        }
                        let _ = socket.flush().await;
                    }
                    if close {
                        return;
                    }
                }
            });
        }
    });
    (port, accepted)
}

fn ok_bytes() -> Vec<u8> {
    ok_json("").0.into_bytes()
}

#[tokio::test]
async fn late_answer_after_timeout_is_not_the_next_probes_answer() {
    // Request 0: answered 503 after 400 ms (probe timeout 150 ms). Later requests: 200 ok.
    let (port, accepted) = serve_with(|_, k| {
        if k == 0 {
            (
                vec![(
                    400,
                    b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n".to_vec(),
                )],
                false,
            )
        } else {
            (vec![(0, ok_bytes())], false)
        }
    })
    .await;
    let mut p = probe_for(port, "/health", 150);
    assert_eq!(p.probe().await.outcome, Err(ProbeFailure::Timeout));
    tokio::time::sleep(Duration::from_millis(400)).await; // the stale 503 is on the old socket by now
    assert_eq!(p.probe().await.outcome, Ok(()));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "timed-out connection dropped"
    );
}

#[tokio::test]
async fn unsolicited_408_on_idle_connection_is_not_a_failed_probe() {
    // Like servers that answer an idle keep-alive connection's timeout with a 408 and close.
    let (port, _) = serve_with(|_, _| {
        (vec![(0, ok_bytes()), (50, b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".to_vec())], true)
    }).await;
    let url = Url::parse(&format!("http://127.0.0.1:{port}/health")).unwrap();
    // The old path (reqwest) on the same server, same schedule:
    let old = Prober::new().unwrap();
    assert_eq!(
        old.probe(&url, Duration::from_secs(2)).await.outcome,
        Ok(())
    );
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
async fn stale_extra_answer_on_idle_connection_masks_a_failure() {
    // A buggy server writes its answer twice (second copy in a later segment); the service
    // then turns unhealthy. The next probe must see the 503, not the stale 200.
    let (port, _) = serve_with(|_, k| {
        if k == 0 {
            (vec![(0, ok_bytes()), (30, ok_bytes())], false)
        } else {
            (
                vec![(
                    0,
                    b"HTTP/1.1 503 Down\r\nContent-Length: 0\r\n\r\n".to_vec(),
                )],
                false,
            )
        }
    })
    .await;
    let mut p = probe_for(port, "/health", 2000);
    assert_eq!(p.probe().await.outcome, Ok(()));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(p.probe().await.outcome, Err(ProbeFailure::Status(503)));
}

#[tokio::test]
async fn oversized_json_body_judged_like_reqwest() {
    let (port, _) = serve_with(|_, _| {
        let body = format!(
            r#"{{"status":"degraded","pad":"{}"}}"#,
            "x".repeat(70 * 1024)
        );
        (
            vec![(
                0,
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            )],
            false,
        )
    })
    .await;
    let url = Url::parse(&format!("http://127.0.0.1:{port}/health")).unwrap();
    let (old, new) = both_paths(&url, Duration::from_secs(2)).await;
    assert_eq!(new, old, "old path (reqwest) = {old:?}");
}

#[tokio::test]
async fn userinfo_in_url_is_sent_like_reqwest() {
    let (port, _) = serve_with(|head, _| {
        let authed = head
            .to_ascii_lowercase()
            .contains("\r\nauthorization: basic ");
        let r = if authed {
            ok_bytes()
        } else {
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_vec()
        };
        (vec![(0, r)], false)
    })
    .await;
    let url = Url::parse(&format!("http://probe:secret@127.0.0.1:{port}/health")).unwrap();
    let (old, new) = both_paths(&url, Duration::from_secs(2)).await;
    assert_eq!(new, old, "old path (reqwest) = {old:?}");
}

#[tokio::test]
async fn many_headers_judged_like_reqwest() {
    let (port, _) = serve_with(|_, _| {
        let mut h = String::from("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n");
        for i in 0..70 {
            h.push_str(&format!("X-H{i}: v\r\n"));
        }
        h.push_str("\r\nOK");
        (vec![(0, h.into_bytes())], false)
    })
    .await;
    let url = Url::parse(&format!("http://127.0.0.1:{port}/health")).unwrap();
    let (old, new) = both_paths(&url, Duration::from_secs(2)).await;
    assert_eq!(new, old, "old path (reqwest) = {old:?}");
}

#[tokio::test]
async fn body_in_many_small_segments_and_http10_close_delimited() {
    let (port, _) = serve_with(|_, _| {
        let body = br#"{"status":"degraded"}"#;
        let mut plan = vec![(
            0,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
        )];
        for b in body {
            plan.push((2, format!("1\r\n{}\r\n", *b as char).into_bytes()));
        }
        plan.push((2, b"0\r\nX-Trailer: 1\r\n".to_vec()));
        plan.push((2, b"\r\n".to_vec()));
        (plan, false)
    })
    .await;
    let mut p = probe_for(port, "/health", 2000);
    assert_eq!(
        p.probe().await.outcome,
        Err(ProbeFailure::NotOk("degraded".into()))
    );
    let (port, _) = serve_with(|_, _| {
        (
            vec![
                (0, b"HTTP/1.0 200 OK\r\n\r\n{\"status\":".to_vec()),
                (20, b"\"degraded\"}".to_vec()),
            ],
            true,
        )
    })
    .await;
    let mut p = probe_for(port, "/health", 2000);
    assert_eq!(
        p.probe().await.outcome,
        Err(ProbeFailure::NotOk("degraded".into()))
    );
    assert_eq!(
        p.probe().await.outcome,
        Err(ProbeFailure::NotOk("degraded".into()))
    );
}

#[tokio::test]
async fn localhost_and_ipv6_and_query() {
    let (port, _) = serve_with(|head, _| {
        let ok = head.starts_with("GET /h%20x?a=b%26c HTTP/1.1\r\n");
        (
            vec![(
                0,
                if ok {
                    ok_bytes()
                } else {
                    b"HTTP/1.1 404 NF\r\nContent-Length: 0\r\n\r\n".to_vec()
                },
            )],
            false,
        )
    })
    .await;
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
async fn reset_idle_connection_retries_once() {
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
                // Zero linger: the close is a reset (no blocking on drop with zero).
                #[allow(deprecated)]
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
async fn head_then_close_on_reused_connection_is_not_retried_away() {
    // conn 1: request 0 ok; request 1 gets a 503 head (body promised) and the server dies.
    // A fresh connection then answers 200. The 503 was an answer: no silent retry.
    let (port, _) = serve_with(|_, k| match k {
        0 => (vec![(0, ok_bytes())], false),
        1 => (
            vec![(
                0,
                b"HTTP/1.1 503 Down\r\nContent-Length: 10\r\n\r\n".to_vec(),
            )],
            true,
        ),
        _ => (vec![(0, ok_bytes())], false),
    })
    .await;
    let mut p = probe_for(port, "/health", 2000);
    assert_eq!(p.probe().await.outcome, Ok(()));
    let second = p.probe().await.outcome;
    assert_ne!(
        second,
        Ok(()),
        "a 503 that broke off was retried into a pass"
    );
}

#[tokio::test]
async fn compare_framing_variants() {
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
        let (old, new) = both_paths(&url, Duration::from_millis(500)).await;
        assert_eq!(new, old, "old path (reqwest) = {old:?} for {v:?}");
    }
}
