//! A real headless Chromium for end-to-end tests of served pages, driven through
//! tests/browser/driver.mjs (playwright-core, installed by scripts/setup). The driver answers one
//! JSON line per command; every command carries a deadline, and the driver and its Chromium go
//! away with the `Browser`, pass or fail.

use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Deadline of a command that names none (the driver applies the same).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Chromium starts in about 0.3 s; a loaded 2-core machine running other tests is slower.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for an answer to travel back after the driver's own deadline has passed.
const SLACK: Duration = Duration::from_secs(5);

/// One answer line: `value` is the command's result, `at_ms` (epoch ms) when the awaited
/// condition held, for the commands that wait or act.
#[derive(Debug, Clone)]
pub struct Reply {
    pub value: Value,
    pub at_ms: Option<i64>,
    /// A wait's condition already held when the wait began: `at_ms` is then that moment, an
    /// upper bound of when it became true.
    pub already: bool,
}

/// When a wait's condition held, by the page's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub at_ms: i64,
    /// It held at the first check: `at_ms` is when the wait began, not when it became true.
    pub already: bool,
}

/// A cookie as the browser holds it, flags included.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub domain: String,
    pub path: String,
    /// Epoch seconds; -1 for a session cookie.
    pub expires: f64,
    pub http_only: bool,
    pub secure: bool,
    /// "Strict", "Lax" or "None".
    pub same_site: String,
}

/// An answer to `Browser::request`. Header names are lower case.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpReply {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

pub struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    next_id: u64,
    /// The Chromium version the driver reported.
    pub version: String,
}

fn driver_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/driver.mjs")
}

/// Keeps the last part of the driver's stderr, for error messages.
fn collect_stderr(mut from: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut s = into.lock().unwrap_or_else(|e| e.into_inner());
            s.push_str(&String::from_utf8_lossy(&buf[..n]));
            if s.len() > 16_384 {
                let cut = s.len() - 8_192;
                let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                s.drain(..cut);
            }
        }
    });
}

impl Browser {
    /// Starts the driver and waits until its Chromium runs. A missing node, playwright-core or
    /// Chromium is an error naming scripts/setup, never a skipped test.
    pub fn launch() -> Result<Self, String> {
        let mut child = Command::new("node")
            .arg(driver_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run node (run scripts/setup): {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("driver has no stdout")?;
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(err) = child.stderr.take() {
            collect_stderr(err, stderr.clone());
        }
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut browser = Browser {
            child,
            stdin,
            lines,
            stderr,
            next_id: 1,
            version: String::new(),
        };
        let ready = browser.next_line(Instant::now() + LAUNCH_TIMEOUT, "start")?;
        let ready: Value = serde_json::from_str(&ready)
            .map_err(|e| browser.failure(&format!("driver said {ready:?} ({e})")))?;
        if ready["ready"] != json!(true) {
            return Err(browser.failure(&format!("driver did not start: {ready}")));
        }
        browser.version = ready["version"].as_str().unwrap_or_default().to_string();
        Ok(browser)
    }

    /// The driver's process id (Chromium runs as its child).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn failure(&self, what: &str) -> String {
        let stderr = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        format!("browser driver: {what}; driver stderr: {}", stderr.trim())
    }

    fn next_line(&mut self, deadline: Instant, what: &str) -> Result<String, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => Err(self.failure(&format!("no answer to {what}"))),
            Err(RecvTimeoutError::Disconnected) => {
                // The stderr reader may still be copying the driver's last words.
                std::thread::sleep(Duration::from_millis(100));
                let status = self.child.try_wait().ok().flatten();
                Err(self.failure(&format!("driver exited ({status:?}) during {what}")))
            }
        }
    }

    /// Sends any driver command (`args` is a JSON object of its fields) and waits for its
    /// answer until `timeout` plus some slack. The driver applies `timeout` itself.
    pub fn command(&mut self, cmd: &str, args: Value, timeout: Duration) -> Result<Reply, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = match args {
            Value::Object(map) => map,
            Value::Null => Default::default(),
            other => return Err(format!("{cmd}: arguments must be an object, not {other}")),
        };
        msg.insert("id".into(), json!(id));
        msg.insert("cmd".into(), json!(cmd));
        msg.insert("timeout_ms".into(), json!(timeout.as_millis() as u64));
        let line = format!("{}\n", Value::Object(msg));
        let stdin = self
            .stdin
            .as_mut()
            .ok_or("browser driver: stdin already closed")?;
        if let Err(e) = stdin.write_all(line.as_bytes()).and_then(|_| stdin.flush()) {
            return Err(self.failure(&format!("cannot send {cmd}: {e}")));
        }
        let deadline = Instant::now() + timeout + SLACK;
        loop {
            let line = self.next_line(deadline, cmd)?;
            let answer: Value = serde_json::from_str(&line)
                .map_err(|e| self.failure(&format!("answer to {cmd} is not JSON ({e}): {line}")))?;
            // An answer to an earlier command that missed its deadline: not this one's.
            if answer["id"].as_u64().is_some_and(|a| a < id) {
                continue;
            }
            if answer["ok"] == json!(true) {
                return Ok(Reply {
                    value: answer["value"].clone(),
                    at_ms: answer["at_ms"].as_i64(),
                    already: answer["already"] == json!(true),
                });
            }
            let error = answer["error"].as_str().unwrap_or("no error message");
            return Err(format!("{cmd}: {error}"));
        }
    }

    fn value(&mut self, cmd: &str, args: Value) -> Result<Value, String> {
        self.command(cmd, args, DEFAULT_TIMEOUT).map(|r| r.value)
    }

    fn at_ms(cmd: &str, reply: Reply) -> Result<i64, String> {
        reply
            .at_ms
            .ok_or_else(|| format!("{cmd}: answer without at_ms"))
    }

    fn seen(cmd: &str, reply: Reply) -> Result<Seen, String> {
        let already = reply.already;
        Self::at_ms(cmd, reply).map(|at_ms| Seen { at_ms, already })
    }

    fn typed<T: serde::de::DeserializeOwned>(cmd: &str, v: Value) -> Result<T, String> {
        serde_json::from_value(v.clone()).map_err(|e| format!("{cmd}: unexpected answer {v} ({e})"))
    }

    /// Loads `url` and waits for its load event; returns the HTTP status.
    pub fn goto(&mut self, url: &str) -> Result<u16, String> {
        let v = self.value("goto", json!({ "url": url }))?;
        v["status"]
            .as_u64()
            .map(|s| s as u16)
            .ok_or_else(|| format!("goto {url}: no HTTP status in {v}"))
    }

    /// The JSON value of a JavaScript expression in the page (a promise is awaited).
    pub fn eval(&mut self, js: &str) -> Result<Value, String> {
        self.value("eval", json!({ "js": js }))
    }

    /// Waits until the first element the CSS `selector` matches is visible; returns when, by the
    /// page's clock: the page re-checks on every DOM change, so this is the moment its script
    /// showed the element, not the next poll (unless it was visible already: see `Seen`).
    pub fn wait_for(&mut self, selector: &str, timeout: Duration) -> Result<i64, String> {
        self.wait_for_state(selector, "visible", timeout)
    }

    /// Waits until `selector` is "attached", "detached", "visible" or "hidden"; returns when.
    pub fn wait_for_state(
        &mut self,
        selector: &str,
        state: &str,
        timeout: Duration,
    ) -> Result<i64, String> {
        self.wait_for_state_seen(selector, state, timeout)
            .map(|s| s.at_ms)
    }

    /// `wait_for_state`, telling also whether the state held before the wait began.
    pub fn wait_for_state_seen(
        &mut self,
        selector: &str,
        state: &str,
        timeout: Duration,
    ) -> Result<Seen, String> {
        let args = json!({ "selector": selector, "state": state });
        let reply = self.command("wait_for", args, timeout)?;
        Self::seen("wait_for", reply)
    }

    /// Waits until the expression `js` is truthy; returns when, by the page's clock: checked on
    /// every DOM change, and every 20 ms for what changes no DOM.
    pub fn wait_for_function(&mut self, js: &str, timeout: Duration) -> Result<i64, String> {
        self.wait_for_function_seen(js, timeout).map(|s| s.at_ms)
    }

    /// `wait_for_function`, telling also whether `js` was true before the wait began.
    pub fn wait_for_function_seen(&mut self, js: &str, timeout: Duration) -> Result<Seen, String> {
        let reply = self.command("wait_for_function", json!({ "js": js }), timeout)?;
        Self::seen("wait_for_function", reply)
    }

    /// Clicks the one element `selector` matches (more than one is an error); returns when.
    pub fn click(&mut self, selector: &str) -> Result<i64, String> {
        let reply = self.command("click", json!({ "selector": selector }), DEFAULT_TIMEOUT)?;
        Self::at_ms("click", reply)
    }

    pub fn fill(&mut self, selector: &str, value: &str) -> Result<(), String> {
        self.value("fill", json!({ "selector": selector, "value": value }))
            .map(drop)
    }

    /// The rendered text (innerText) of the one element `selector` matches.
    pub fn text(&mut self, selector: &str) -> Result<String, String> {
        let v = self.value("text", json!({ "selector": selector }))?;
        Self::typed("text", v)
    }

    /// How many elements match `selector` now, without waiting.
    pub fn count(&mut self, selector: &str) -> Result<usize, String> {
        let v = self.value("count", json!({ "selector": selector }))?;
        Self::typed("count", v)
    }

    /// An attribute of the one element `selector` matches; `None` when it has none.
    pub fn attr(&mut self, selector: &str, name: &str) -> Result<Option<String>, String> {
        let v = self.value("attr", json!({ "selector": selector, "name": name }))?;
        Self::typed("attr", v)
    }

    pub fn cookies(&mut self) -> Result<Vec<Cookie>, String> {
        let v = self.value("cookies", Value::Null)?;
        Self::typed("cookies", v)
    }

    /// An HTTP request with the browser's cookie jar (as a script or form of the page would
    /// send them) but nothing the page adds: no CSRF token, no Origin. Redirects are not
    /// followed; any status is an answer.
    pub fn request(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<HttpReply, String> {
        let headers: BTreeMap<&str, &str> = headers.iter().copied().collect();
        let args = json!({ "method": method, "url": url, "headers": headers, "body": body });
        let v = self.value("request", args)?;
        Self::typed("request", v)
    }

    /// Writes a PNG of the viewport, or of the whole page with `full_page`.
    pub fn screenshot(&mut self, path: &Path, full_page: bool) -> Result<(), String> {
        let args = json!({ "path": path, "full_page": full_page });
        self.value("screenshot", args).map(drop)
    }

    pub fn set_viewport(&mut self, width: u32, height: u32) -> Result<(), String> {
        self.value("set_viewport", json!({ "width": width, "height": height }))
            .map(drop)
    }

    /// The page's current URL.
    pub fn url(&mut self) -> Result<String, String> {
        let v = self.value("url", Value::Null)?;
        Self::typed("url", v)
    }

    /// Page errors, console errors and refused non-loopback requests seen so far.
    pub fn errors(&mut self) -> Result<Vec<String>, String> {
        let v = self.value("errors", Value::Null)?;
        Self::typed("errors", v)
    }

    /// Closes Chromium and waits for the driver to exit.
    pub fn close(mut self) -> Result<(), String> {
        self.value("close", Value::Null)?;
        self.stdin.take();
        self.wait_exit(DEFAULT_TIMEOUT)
            .then_some(())
            .ok_or_else(|| self.failure("did not exit after close"))
    }

    fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Browser {
    /// Closing stdin lets the driver close Chromium and its profile directory; a driver that
    /// does not exit within 3 s is killed, and Chromium, whose control pipe then closes,
    /// exits with it.
    fn drop(&mut self) {
        self.stdin.take();
        if !self.wait_exit(Duration::from_secs(3)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
