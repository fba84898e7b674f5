//! `rollwatch tags` against registries whose `Link` headers loop or point at another host: the
//! listing ends within its deadline and no request leaves the registry's host.

mod harness;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::*;

/// Answers every request with one `tags/list` page and the `Link` that `link(n)` makes for the
/// n-th request (counted). Serves at most `max` requests or 60 s, whichever comes first.
fn registry_stub(
    link: impl Fn(usize) -> String + Send + 'static,
    max: usize,
) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stub");
    let port = listener.local_addr().expect("stub address").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let count = Arc::new(AtomicUsize::new(0));
    let served = count.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && served.load(Ordering::SeqCst) < max {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let n = served.fetch_add(1, Ordering::SeqCst) + 1;
            let body = format!("{{\"name\":\"app/backend\",\"tags\":[\"v1.0.{n}\"]}}");
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLink: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                link(n),
                body.len()
            );
        }
    });
    (port, count)
}

/// A listener on another loopback address that only counts connections.
fn recorder() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let port = listener.local_addr().expect("address").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if listener.accept().is_ok() {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    (port, count)
}

fn config(dir: &std::path::Path, registry_port: u16) -> std::path::PathBuf {
    offline_config(dir, &format!("127.0.0.1:{registry_port}/app"), "")
}

/// `rollwatch tags staging backend`: (exit code, stderr, seconds taken).
fn tags(config: &std::path::Path) -> (i32, String, f64) {
    let started = Instant::now();
    let out = rollwatch(config)
        .args(["tags", "staging", "backend"])
        .output()
        .expect("run rollwatch tags");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
        started.elapsed().as_secs_f64(),
    )
}

#[test]
fn a_self_referencing_link_ends_the_listing_with_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, served) = registry_stub(
        |_| "</v2/app/backend/tags/list?n=1000>; rel=\"next\"".into(),
        1_000,
    );
    let (code, err, took) = tags(&config(dir.path(), port));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("a page already read"), "{err}");
    assert_eq!(served.load(Ordering::SeqCst), 1, "no page is fetched twice");
    assert!(took < 60.0, "took {took:.1}s");
}

#[test]
fn a_link_that_never_ends_stops_at_the_page_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, served) = registry_stub(
        |n| format!("</v2/app/backend/tags/list?last=v1.0.{n}&n=1000>; rel=\"next\""),
        1_000,
    );
    let (code, err, _) = tags(&config(dir.path(), port));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("more than 100 pages"), "{err}");
    assert_eq!(served.load(Ordering::SeqCst), 100);
}

#[test]
fn a_foreign_host_link_is_never_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (other, seen) = recorder();
    for link in [
        format!("<http://127.0.0.2:{other}/v2/app/backend/tags/list?last=x>; rel=\"next\""),
        format!("<//127.0.0.2:{other}/v2/app/backend/tags/list>; rel=\"next\""),
    ] {
        let (port, served) = registry_stub(move |_| link.clone(), 1_000);
        let (code, err, _) = tags(&config(dir.path(), port));
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("points away from http://127.0.0.1"), "{err}");
        assert_eq!(served.load(Ordering::SeqCst), 1);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "a request reached the other host"
    );
}
