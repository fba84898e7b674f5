//! Hostile and careless use of the status page, driven through the router in-process (from a
//! fresh-eyes review: each test failed on the first version of the page).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::api::{ApiState, TokenDigest};
use crate::store::{EventRecord, Store};
use crate::target::{Env, TargetId};
use crate::watch::{StatusBoard, TargetStatus};

const TOKEN: &str = "review-token";

pub struct Ui {
    pub router: axum::Router,
    pub store: Store,
    pub events: broadcast::Sender<EventRecord>,
    pub _dir: tempfile::TempDir,
    pub _rx: mpsc::Receiver<crate::watch::Command>,
}

pub fn backend() -> TargetId {
    TargetId {
        env: Env::Staging,
        role: "backend".into(),
    }
}

pub fn ui(reads_need_token: bool) -> Ui {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).unwrap();
    let board = StatusBoard::default();
    board.slot(&backend(), || TargetStatus {
        state: "stable".into(),
        running_tag: Some("v1.0.0".into()),
        known_good_tag: Some("v1.0.0".into()),
        since_ms: 1,
        ..TargetStatus::new(backend(), false)
    });
    let (tx, rx) = mpsc::channel(16);
    let mut commands = HashMap::new();
    commands.insert(backend(), tx);
    let api = ApiState {
        board,
        store: store.clone(),
        commands: Arc::new(commands),
        token: Some(TokenDigest::of(TOKEN)),
        reads_need_token,
        metrics: Arc::new(crate::telemetry::Metrics::new()),
        alert_window_ms: 0,
        canaries: Arc::default(),
        lease: Arc::new(crate::lease::SoleInstance),
    };
    let (events, _) = broadcast::channel(1024);
    let shutdown = CancellationToken::new();
    Ui {
        router: super::router(api, events.clone(), shutdown.clone()),
        store,
        events,
        _dir: dir,
        _rx: rx,
    }
}

impl Ui {
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> axum::response::Response {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.router
            .clone()
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap()
    }

    pub async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
        let r = self.call("GET", uri, headers, "").await;
        let status = r.status();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// A form POST, with the session cookie when given.
    pub async fn post_form(
        &self,
        uri: &str,
        cookie: Option<&str>,
        body: &str,
    ) -> axum::response::Response {
        let form = ("content-type", "application/x-www-form-urlencoded");
        match cookie {
            Some(c) => self.call("POST", uri, &[("cookie", c), form], body).await,
            None => self.call("POST", uri, &[form], body).await,
        }
    }

    /// Logs in: (cookie, csrf).
    pub async fn login(&self) -> (String, String) {
        let r = self
            .post_form("/ui/login", None, &format!("token={TOKEN}"))
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
        let cookie = set.split(';').next().unwrap().to_string();
        let (_, page) = self.get("/", &[("cookie", &cookie)]).await;
        let csrf = page
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_string();
        (cookie, csrf)
    }

    /// One sample of `tag`'s window opened at `window_ms`.
    pub async fn sample(&self, window_ms: i64, tag: &str, failures: u32) {
        let sample = crate::store::Sample {
            target: backend(),
            window_ms,
            tag: tag.into(),
            at_ms: window_ms + 500,
            latency_ms: Some(3),
            probes: 1,
            failures,
            candidate: None,
            baseline: None,
        };
        self.store.save_samples(vec![sample]).await.unwrap();
    }

    /// A health rollback from `from` to v1.0.0, as an incident: its id.
    pub async fn rollback_from(&self, from: &str) -> i64 {
        let intent = crate::store::RollbackIntent {
            target: backend(),
            trigger: crate::store::Trigger::Health,
            reason: "probe failures".into(),
            from_tag: Some(from.into()),
            from_image: None,
            to_tag: crate::tag::Tag::parse("v1.0.0").unwrap(),
            dry_run: false,
            fence: crate::lease::Fence::sole(),
        };
        self.store.begin_rollback(intent).await.unwrap()
    }

    pub async fn event(&self, message: &str) -> i64 {
        let id = self
            .store
            .record_event(backend(), "docker", None, message.into())
            .await
            .unwrap();
        let e = self
            .store
            .events(None, Some(id - 1), None, 1)
            .await
            .unwrap()
            .remove(0);
        let _ = self.events.send(e);
        id
    }
}

/// The SSE text that arrives within `wait` (or until the stream ends).
pub async fn read_stream(body: Body, wait: Duration) -> (String, bool) {
    let mut body = body;
    let mut out = String::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    out.push_str(&String::from_utf8_lossy(d));
                }
            }
            Ok(_) => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

fn stream_of(page: &str) -> String {
    page.split("data-stream=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .replace("&amp;", "&")
}

/// An older page of the timeline (`?before=`) follows the stream from its own newest event, so
/// the catch-up prepends every newer event to "page 2": the page is no longer the page asked for.
#[tokio::test]
async fn an_older_timeline_page_is_not_filled_with_newer_events_by_the_stream() {
    let ui = ui(false);
    let mut ids = Vec::new();
    for i in 0..120 {
        ids.push(ui.event(&format!("event {i}")).await);
    }
    let (_, first) = ui.get("/", &[]).await;
    let older = first
        .split("href=\"/?before=")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("an Older events link")
        .to_string();
    let (status, page) = ui.get(&format!("/?before={older}"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains(&format!("id=\"event-{older}\"")));
    let newest = *ids.last().unwrap();
    let r = ui.call("GET", &stream_of(&page), &[], "").await;
    let (sse, _) = read_stream(r.into_body(), Duration::from_millis(300)).await;
    assert!(
        !sse.contains(&format!("id=\"event-{newest}\"")),
        "page ?before={older} is sent the newest event {newest} as a live timeline row"
    );
}

/// A stream authorised by a session outlives the session: after logout (or expiry) it keeps
/// sending events and rows to whoever holds the connection.
#[tokio::test]
async fn logging_out_ends_the_sessions_stream() {
    let ui = ui(true);
    let (cookie, csrf) = ui.login().await;
    let r = ui
        .call("GET", "/ui/stream?after=0", &[("cookie", &cookie)], "")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.into_body();
    let out = ui
        .post_form("/ui/logout", Some(&cookie), &format!("csrf={csrf}"))
        .await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let (status, _) = ui.get("/", &[("cookie", &cookie)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the session is over");
    let id = ui.event("after logout: <b>secret</b>").await;
    let (sse, ended) = read_stream(body, Duration::from_millis(1500)).await;
    assert!(
        ended && !sse.contains(&format!("event-{id}")),
        "the stream of an ended session still sent event {id}: {sse}"
    );
}

/// The incident page charts "the window open when the rollback started", whatever tag it was
/// of: a rollback of v2.0.0 whose window was not sampled (probation after a restart, or pruned)
/// is shown the evidence of an older window of v1.0.0, titled as that window but on v2.0.0's
/// incident.
#[tokio::test]
async fn an_incident_is_not_shown_the_chart_of_another_tags_window() {
    let ui = ui(false);
    ui.sample(1_000, "v1.0.0", 0).await;
    let id = ui.rollback_from("v2.0.0").await;
    let (status, page) = ui.get(&format!("/ui/incidents/{id}"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !page.contains("watch window of <code>v1.0.0</code>"),
        "incident #{id} (from v2.0.0) charts v1.0.0's window"
    );
}

/// Guessing the token through the login form costs nothing: 500 wrong tokens in a few ms, every
/// one answered 401, none slowed or refused (the bearer API is the same, but the form is the
/// one a browser on any page can be scripted against).
#[tokio::test]
async fn wrong_logins_are_throttled() {
    let ui = ui(false);
    let mut limited = 0;
    for i in 0..500 {
        let r = ui
            .post_form("/ui/login", None, &format!("token=guess{i}"))
            .await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
        }
    }
    assert!(limited > 0, "500 wrong logins, none throttled");
}

/// "Roll back to a chosen known-good tag": the page offers only known-good tags, but the
/// handler forwards any well-formed tag (here one that was never known-good, on a target with
/// none at all) to the watcher as a manual rollback.
#[tokio::test]
async fn a_rollback_from_the_page_is_only_to_a_known_good_tag() {
    let mut ui = ui(false);
    let (cookie, csrf) = ui.login().await;
    let r = ui
        .post_form(
            "/ui/targets/staging/backend/rollback",
            Some(&cookie),
            &format!("csrf={csrf}&confirm=yes&tag=v9.9.9"),
        )
        .await;
    let _ = r.status();
    let ordered = ui._rx.try_recv().ok().map(|c| match c {
        crate::watch::Command::Rollback { tag, .. } => format!("rollback to {tag:?}"),
        _ => "another command".into(),
    });
    assert_eq!(ordered, None, "an unknown tag reached the watcher");
}

/// "Page weight under 200 KB": about 700 bytes a row, so the table is paged; at 1,000 targets
/// in their windows a page of rows (also every 1 s `targets` SSE message) stays light, and the
/// targets needing attention come first.
#[test]
fn the_targets_rows_of_1000_targets_stay_under_200_kb() {
    let now = crate::store::now_ms();
    let statuses: Vec<TargetStatus> = (0..1000)
        .map(|i| TargetStatus {
            state: "watching".into(),
            running_tag: Some("v1.2.3".into()),
            known_good_tag: Some("v1.2.2".into()),
            since_ms: now,
            last_deploy_ms: Some(now),
            last_probe: Some("200 in 3 ms".into()),
            window: Some(crate::watch::WindowProgress {
                since_ms: now - 5_000,
                bake_ms: 300_000,
                failures: 0,
                failures_limit: 3,
                metrics: Some("candidate 0.1% vs baseline 0.1% (1200 requests)".into()),
            }),
            metrics_up: Some(true),
            ..TargetStatus::new(
                TargetId {
                    env: Env::Production,
                    role: format!("service-{i:04}"),
                },
                false,
            )
        })
        .collect();
    let mut statuses = statuses;
    statuses[999].state = "regressed".into();
    let (shown, total) = super::pages::targets_page(statuses, 0);
    assert_eq!(total, 1000);
    assert_eq!(
        shown[0].target.role, "service-0999",
        "the regressed one first"
    );
    let rows = super::pages::target_rows(&shown, now);
    assert!(rows.len() < 200 * 1024, "{} bytes", rows.len());
}

/// A rollback ordered from the page was waited for up to 120 s, but the pages' timeout (30 s)
/// answered first with a bare 408 and the result was never shown. The page now waits less than
/// its timeout (25 s; 1 s under test) and then says the rollback is still running.
#[tokio::test]
async fn a_rollback_slower_than_30_s_still_answers_with_its_result() {
    let mut ui = ui(false);
    let good = crate::tag::Tag::parse("v1.0.0").unwrap();
    ui.store
        .record_known_good(backend(), good, None)
        .await
        .unwrap();
    let (cookie, csrf) = ui.login().await;
    let (_tx, rx) = mpsc::channel(1);
    let mut rx = std::mem::replace(&mut ui._rx, rx);
    tokio::spawn(async move {
        while let Some(c) = rx.recv().await {
            if let crate::watch::Command::Rollback { reply, .. } = c {
                tokio::time::sleep(Duration::from_secs(31)).await;
                let _ = reply.send(Err("validation failed".into()));
            }
        }
    });
    let r = ui
        .post_form(
            "/ui/targets/staging/backend/rollback",
            Some(&cookie),
            &format!("csrf={csrf}&confirm=yes&tag=v1.0.0"),
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "answered before the rollback's result"
    );
}

/// The chart's verdict marks come from the target's newest 500 events only (live::marks): an
/// incident whose window is older than that (a target whose later events number 500 or more)
/// is charted without its verdict.
#[tokio::test]
async fn an_older_incidents_chart_keeps_its_verdict_mark() {
    let ui = ui(false);
    let window = crate::store::now_ms() - 10_000;
    ui.sample(window, "v2.0.0", 1).await;
    ui.store
        .record_event(
            backend(),
            "regressed",
            Some("v2.0.0".into()),
            "3 failures".into(),
        )
        .await
        .unwrap();
    let id = ui.rollback_from("v2.0.0").await;
    let (_, page) = ui.get(&format!("/ui/incidents/{id}"), &[]).await;
    assert!(
        page.contains("data-verdict=\"regressed\""),
        "fresh incident has its mark"
    );
    for i in 0..500 {
        ui.store
            .record_event(backend(), "docker", None, format!("flap {i}"))
            .await
            .unwrap();
    }
    let (_, page) = ui.get(&format!("/ui/incidents/{id}"), &[]).await;
    assert!(
        page.contains("data-verdict=\"regressed\""),
        "after 500 later events incident #{id}'s chart lost its verdict mark"
    );
}

/// A burst of more events than the broadcast holds (1,024) makes the stream skip the lagged
/// ones silently (`RecvError::Lagged(_) => continue`): the open page never shows them and
/// nothing tells it to reload.
#[tokio::test]
async fn a_lagging_stream_does_not_silently_drop_events() {
    let ui = ui(false);
    let r = ui.call("GET", "/ui/stream", &[], "").await;
    let mut body = r.into_body();
    let _ = tokio::time::timeout(Duration::from_millis(100), body.frame()).await;
    let mut first = None;
    for i in 0..1100 {
        let id = ui.event(&format!("burst {i}")).await;
        first.get_or_insert(id);
    }
    let (sse, _) = read_stream(body, Duration::from_millis(800)).await;
    let first = first.unwrap();
    assert!(
        sse.contains(&format!("id=\"event-{first}\"")) || sse.contains("event: reload"),
        "event {first} was dropped without a word; {} events sent",
        sse.matches("event: event").count()
    );
}

/// The catch-up after `after=` reads the newest 200 events after it (ORDER BY id DESC LIMIT),
/// so with more than 200 the oldest ones are skipped: the page shows a gap.
#[tokio::test]
async fn catch_up_after_more_than_200_events_leaves_no_gap() {
    let ui = ui(false);
    let after = ui.event("seen by the page").await;
    for i in 0..250 {
        ui.store
            .record_event(backend(), "docker", None, format!("missed {i}"))
            .await
            .unwrap();
    }
    let r = ui
        .call("GET", &format!("/ui/stream?after={after}"), &[], "")
        .await;
    let (sse, _) = read_stream(r.into_body(), Duration::from_millis(500)).await;
    assert!(
        sse.contains(&format!("id=\"event-{}\"", after + 1)) || sse.contains("event: reload"),
        "event {} (the first after the page's newest) was never sent",
        after + 1
    );
}
