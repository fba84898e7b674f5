//! The browser driver (tests/browser/driver.mjs through tests/harness/browser.rs) against a tiny
//! page this test serves on loopback, so the status-page tests can trust what it reports:
//! timings, cookies and their flags, requests that carry the browser's cookies, screenshots.
//! The page has a Content-Security-Policy without inline scripts or eval, as a status page
//! should: the driver must work under one.

mod harness;

use harness::browser::{Browser, Seen};
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PAGE: &str = r#"<!doctype html>
<html><head><title>driver test</title></head><body>
<h1 id="title">Driver test</h1>
<button id="add">Add row</button>
<ul id="rows"></ul>
<form id="form"><input id="name" name="name"><button id="send" type="submit">Send</button></form>
<p id="out"></p>
<a id="link" href="/elsewhere" data-kind="nav">elsewhere</a>
<script src="/app.js"></script>
</body></html>"#;

const APP_JS: &str = r#"
window.__marker = Math.random();
document.getElementById('add').addEventListener('click', () => {
  window.__clicked_at = Date.now();
  setTimeout(() => {
    const li = document.createElement('li');
    li.className = 'row';
    li.textContent = 'row';
    document.getElementById('rows').appendChild(li);
    window.__added_at = Date.now();
  }, 300);
});
document.getElementById('form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const r = await fetch('/echo', { method: 'POST', body: document.getElementById('name').value });
  document.getElementById('out').textContent = await r.text();
  window.__shown_at = Date.now();
});
"#;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    cookie: Option<String>,
    body: String,
}

/// Serves PAGE, APP_JS and POST /echo (after 250 ms) on a loopback port, one request per connection, and
/// notes every request. The accept thread ends with the test binary.
fn serve() -> (u16, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("local addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || {
                let _ = answer(conn, &log);
            });
        }
    });
    (port, seen)
}

fn answer(conn: TcpStream, log: &Mutex<Vec<Request>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = String::new();
    reader.read_line(&mut head)?;
    let mut parts = head.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let (mut length, mut cookie) = (0usize, None);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "cookie" => cookie = Some(value.trim().to_string()),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length.min(1 << 16)];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).into_owned();
    let (status, kind, extra, content) = match (method.as_str(), path.as_str()) {
        ("GET", "/") => (
            "200 OK",
            "text/html",
            "Content-Security-Policy: default-src 'self'\r\n\
             Set-Cookie: s=1; Path=/; HttpOnly; SameSite=Strict\r\n",
            PAGE.to_string(),
        ),
        // No CSP: the page's own policy would refuse other hosts before the driver could.
        ("GET", "/open") => ("200 OK", "text/html", "", "<p id=\"open\">open</p>".into()),
        ("GET", "/app.js") => ("200 OK", "text/javascript", "", APP_JS.to_string()),
        ("POST", "/echo") => {
            // Late enough that a wait begun after the click sees the page change.
            std::thread::sleep(Duration::from_millis(250));
            ("200 OK", "text/plain", "", format!("got {body}"))
        }
        _ => ("404 Not Found", "text/plain", "", "not found".to_string()),
    };
    log.lock().expect("request log").push(Request {
        method,
        path,
        cookie,
        body,
    });
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         {extra}Connection: close\r\n\r\n{content}",
        content.len()
    )
}

/// The driver re-checks on every DOM change: when the change came after the wait began, it
/// reports the moment the page's script made it. The row comes 300 ms after its click and the
/// echo 250 ms after its, time enough for the wait to begin first, unless the machine stalls.
fn assert_seen_at(seen: Seen, changed_at: i64, what: &str) {
    if seen.already {
        assert!(
            seen.at_ms >= changed_at,
            "{what} at {changed_at}, seen {seen:?}"
        );
    } else {
        assert!(
            (changed_at..changed_at + 50).contains(&seen.at_ms),
            "{what} at {changed_at}, wait reported {seen:?}"
        );
    }
}

/// A time the page's script noted in `window[name]` (epoch ms).
fn page_ms(b: &mut Browser, name: &str) -> i64 {
    let v = b.eval(&format!("window.{name}")).expect("eval page time");
    v.as_i64()
        .unwrap_or_else(|| panic!("window.{name} is not a time: {v}"))
}

#[test]
fn driver_sees_timings_cookies_requests_and_screenshots() {
    let (port, seen) = serve();
    let base = format!("http://127.0.0.1:{port}");
    let mut b = Browser::launch().expect("launch the browser driver");

    assert_eq!(b.goto(&format!("{base}/")).expect("goto"), 200);
    let marker = b.eval("window.__marker").expect("eval marker");
    assert!(marker.is_f64(), "the page's script ran: marker {marker}");
    assert_eq!(b.text("#title").expect("text"), "Driver test");
    assert_eq!(
        b.attr("#link", "data-kind").expect("attr"),
        Some("nav".into())
    );
    assert_eq!(b.attr("#link", "data-none").expect("attr"), None);

    // A row appears 300 ms after the click: wait_for reports when, by the same clock.
    assert_eq!(b.count(".row").expect("count"), 0);
    b.click("#add").expect("click");
    let row = b
        .wait_for_state_seen(".row", "visible", Duration::from_secs(5))
        .expect("row appears");
    let (clicked, added) = (
        page_ms(&mut b, "__clicked_at"),
        page_ms(&mut b, "__added_at"),
    );
    assert!(
        added >= clicked + 300,
        "the page's timer: {clicked} -> {added}"
    );
    assert_seen_at(row, added, "row added");
    assert_eq!(b.count(".row").expect("count"), 1);
    let err = b
        .wait_for(".never", Duration::from_millis(300))
        .expect_err("a selector that never appears times out");
    assert!(
        err.contains("300"),
        "timeout error names the deadline: {err}"
    );

    // The form posts through the page's own fetch, which carries the cookie too.
    b.fill("#name", "hello").expect("fill");
    b.click("#send").expect("click send");
    let done = b
        .wait_for_function_seen(
            "document.getElementById('out').textContent === 'got hello'",
            Duration::from_secs(5),
        )
        .expect("echo shown");
    assert_seen_at(done, page_ms(&mut b, "__shown_at"), "echo shown");
    let title = b
        .wait_for_state_seen("#title", "visible", Duration::from_secs(1))
        .expect("title");
    assert!(title.already, "the title was there before the wait");
    assert_eq!(b.text("#out").expect("text"), "got hello");
    assert_eq!(
        b.eval("window.__marker").expect("marker again"),
        marker,
        "the page never reloaded"
    );

    let cookies = b.cookies().expect("cookies");
    let s = cookies
        .iter()
        .find(|c| c.name == "s")
        .expect("cookie s set");
    assert_eq!(
        (s.value.as_str(), s.http_only, s.same_site.as_str()),
        ("1", true, "Strict")
    );
    assert_eq!(
        b.eval("document.cookie").expect("document.cookie"),
        "",
        "HttpOnly hides it from scripts"
    );

    // A request from the browser's context carries the cookie, and nothing the page would add.
    let reply = b
        .request(
            "POST",
            &format!("{base}/echo"),
            &[("x-test", "1")],
            Some("raw"),
        )
        .expect("request");
    assert_eq!((reply.status, reply.body.as_str()), (200, "got raw"));
    let log = seen.lock().expect("request log").clone();
    let posts: Vec<_> = log
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/echo")
        .collect();
    assert_eq!(posts.len(), 2, "form post and request: {log:?}");
    for p in &posts {
        assert_eq!(p.cookie.as_deref(), Some("s=1"), "cookie sent with {p:?}");
    }
    assert_eq!(
        (posts[0].body.as_str(), posts[1].body.as_str()),
        ("hello", "raw")
    );

    // Screenshots are PNGs of the viewport size asked for.
    let dir = tempfile::tempdir().expect("temp dir");
    let shot = dir.path().join("page.png");
    b.set_viewport(400, 300).expect("viewport");
    b.screenshot(&shot, false).expect("screenshot");
    let png = std::fs::read(&shot).expect("screenshot file");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG magic");
    let dim = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("4 bytes"));
    assert_eq!((dim(16), dim(20)), (400, 300), "IHDR width and height");

    assert_eq!(
        b.errors().expect("errors"),
        Vec::<String>::new(),
        "no page or console errors"
    );
    b.close().expect("close");
}

#[test]
fn driver_reports_failures_and_refuses_other_hosts() {
    let (port, _) = serve();
    let mut b = Browser::launch().expect("launch the browser driver");
    b.goto(&format!("http://127.0.0.1:{port}/open"))
        .expect("goto");

    let err = b
        .eval("nosuch.field")
        .expect_err("a throwing expression is an error");
    assert!(err.contains("nosuch"), "{err}");
    let short = Duration::from_millis(300);
    let err = b.command("click", json!({ "selector": "#missing" }), short);
    let err = err.expect_err("clicking nothing fails after its deadline");
    assert!(err.contains("#missing"), "{err}");
    let slow = b.command("eval", json!({ "js": "new Promise(() => {})" }), short);
    assert!(slow
        .expect_err("a promise that never settles hits the deadline")
        .contains("300 ms"));
    assert!(b
        .goto("http://192.0.2.1/")
        .expect_err("goto elsewhere")
        .contains("loopback"));
    assert!(b.request("GET", "http://192.0.2.1/", &[], None).is_err());

    // The page itself cannot reach past loopback: the request is refused inside the browser.
    let fetched = b
        .eval("fetch('http://192.0.2.1/').then(() => 'reached', () => 'refused')")
        .expect("fetch outcome");
    assert_eq!(fetched, "refused");
    let errors = b.errors().expect("errors");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("blocked request to http://192.0.2.1/")),
        "{errors:?}"
    );

    // The driver still answers after all that, and dropping it ends it and its Chromium.
    assert_eq!(b.count("#open").expect("count"), 1);
    let pid = b.pid();
    let chromium = children(pid);
    assert!(!chromium.is_empty(), "Chromium runs under the driver {pid}");
    drop(b);
    assert!(!alive(pid), "driver {pid} gone after drop");
    harness::wait_for(Duration::from_secs(5), "Chromium to exit", || {
        chromium.iter().all(|&c| !alive(c)).then_some(())
    });
}

fn alive(pid: u32) -> bool {
    // A zombie has exited; only its parent's wait is missing.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// The processes whose parent is `pid`, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                s.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}
