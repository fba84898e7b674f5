//! The status page `rollwatch run` serves on `controller.listen`: the targets, their timeline,
//! evidence charts and incidents, server-rendered HTML that is complete without JavaScript and
//! kept live by Server-Sent Events from the watchers' event broadcast.
//!
//! Reads follow the API's rule (`api_reads_need_token`), accepting the session cookie as well as
//! the bearer token. Actions accept only the session cookie plus the session's CSRF token, so a
//! page on another site can neither read nor act through a logged-in browser.

mod chart;
mod forms;
#[cfg(test)]
mod hostile_tests;
mod html;
mod live;
mod pages;
mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use tokio::sync::{broadcast, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::api::{self, ApiState};
use crate::store::{now_ms, EventRecord};
use crate::target::{Env, TargetId};
use html::Frame;
use session::Sessions;

/// A page is rendered within this, whatever the store does.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pages rendered at once; more wait (they read the store, as the API's reads do).
const PAGE_CONCURRENCY: usize = 16;
/// A login or an action form is a few short fields.
const FORM_LIMIT: usize = 16 * 1024;
/// How long a rollback ordered from the page is waited for before the page answers "running";
/// inside [`PAGE_TIMEOUT`], so the answer is always the page's own (one second in unit tests,
/// which play a watcher slower than that).
const ROLLBACK_WAIT: Duration = Duration::from_secs(if cfg!(test) { 1 } else { 25 });
const _: () = assert!(ROLLBACK_WAIT.as_secs() < PAGE_TIMEOUT.as_secs());
/// Live streams open at once; each re-renders its rows every second.
const MAX_STREAMS: usize = 64;

#[derive(Clone)]
pub struct UiState {
    api: ApiState,
    sessions: Arc<Sessions>,
    events: broadcast::Sender<EventRecord>,
    shutdown: CancellationToken,
    streams: Arc<Semaphore>,
    logins: Arc<session::LoginThrottle>,
}

pub fn router(
    api: ApiState,
    events: broadcast::Sender<EventRecord>,
    shutdown: CancellationToken,
) -> Router {
    let state = UiState {
        api,
        sessions: Arc::new(Sessions::default()),
        events,
        shutdown,
        streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        logins: Arc::new(session::LoginThrottle::default()),
    };
    let pages = Router::new()
        .route("/", get(home))
        .route("/ui/targets/{env}/{role}", get(target_page))
        .route("/ui/incidents/{id}", get(incident_page))
        .route("/ui/login", get(forms::login_page).post(forms::login))
        .route("/ui/logout", post(forms::logout))
        .route("/ui/targets/{env}/{role}/{action}", post(forms::action))
        .route("/ui/assets/app.css", get(css))
        .route("/ui/assets/app.js", get(js))
        .layer(DefaultBodyLimit::max(FORM_LIMIT))
        .layer(GlobalConcurrencyLimitLayer::new(PAGE_CONCURRENCY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            PAGE_TIMEOUT,
        ));
    // The live stream lasts as long as the page is open: outside the timeout and the limit.
    let live = Router::new().route("/ui/stream", get(live::stream));
    pages.merge(live).with_state(state)
}

/// Who is looking: their session id and its CSRF token when logged in.
struct Viewer {
    session: Option<String>,
    csrf: Option<String>,
    /// May read the pages (reads are open, or a session or the bearer token says so).
    may_read: bool,
}

fn viewer(state: &UiState, headers: &HeaderMap) -> Viewer {
    let session = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session::from_cookie_header)
        .map(String::from);
    let csrf = session.as_deref().and_then(|s| state.sessions.csrf(s));
    let session = session.filter(|_| csrf.is_some());
    let may_read = !state.api.reads_need_token || csrf.is_some() || bearer_ok(state, headers);
    Viewer {
        session,
        csrf,
        may_read,
    }
}

/// The request carries the API's bearer token.
fn bearer_ok(state: &UiState, headers: &HeaderMap) -> bool {
    api::authorized(&state.api, headers).is_ok()
}

impl UiState {
    /// On an instance that does not lead, every page says so first: what it shows is watched
    /// here, but orders and decisions are the leader's.
    fn follower_notice(&self) -> Option<(String, bool)> {
        let lease = &self.api.lease;
        if lease.is_leader() {
            return None;
        }
        Some((
            match lease.leader_address() {
                Some(a) => format!("This instance follows: it watches but does not act or take orders. The leader is at {a}."),
                None if lease.fence().is_some() => "This instance is taking over as leader: it finishes what the previous leader left, then acts.".into(),
                None => "This instance does not lead now and no leader is known (is the store reachable?): nothing is acted on here.".into(),
            },
            false,
        ))
    }

    fn frame<'a>(&self, title: &'a str, viewer: &'a Viewer) -> Frame<'a> {
        let notice = viewer
            .session
            .as_deref()
            .and_then(|s| self.sessions.take_notice(s))
            .or_else(|| self.follower_notice());
        Frame {
            title,
            stream: None,
            csrf: viewer.csrf.as_deref(),
            can_login: self.api.token.is_some(),
            notice,
        }
    }
}

/// Scripts, styles and connections only from this controller; no framing, no forms elsewhere:
/// an injected tag in an event message could run nothing even if escaping ever failed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "same-origin"),
        ],
        body,
    )
        .into_response()
}

/// A page that only says what was wrong (and, for a stranger, offers the login form).
fn refusal(state: &UiState, viewer: &Viewer, status: StatusCode, why: &str) -> Response {
    let frame = state.frame("Not done", viewer);
    let login = if status == StatusCode::UNAUTHORIZED && state.api.token.is_some() {
        pages::login_form(None)
    } else {
        String::new()
    };
    let body = format!(
        "<p class=\"notice failed\" role=\"alert\" id=\"refusal\">{}</p>{login}",
        html::esc(why)
    );
    html(status, html::page(&frame, &body))
}

/// Why a request is refused: the status and the sentence shown.
struct Refused(StatusCode, String);

fn must_read(viewer: &Viewer) -> Result<(), Refused> {
    if viewer.may_read {
        return Ok(());
    }
    Err(Refused(
        StatusCode::UNAUTHORIZED,
        "This controller shows its status only to people with its API token: log in.".into(),
    ))
}

fn store_failed(state: &UiState, viewer: &Viewer, e: impl std::fmt::Display) -> Response {
    refusal(
        state,
        viewer,
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("cannot read the store: {e}"),
    )
}

#[derive(Deserialize)]
struct PageQuery {
    /// The timeline page: events older than this id.
    before: Option<i64>,
    /// The page of the targets table.
    page: Option<usize>,
}

async fn home(
    State(state): State<UiState>,
    headers: HeaderMap,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let viewer = viewer(&state, &headers);
    if let Err(Refused(status, why)) = must_read(&viewer) {
        return refusal(&state, &viewer, status, &why);
    }
    let (before, page) = match q {
        Ok(Query(q)) => (q.before, q.page.unwrap_or(0)),
        Err(_) => (None, 0),
    };
    let events = match state
        .api
        .store
        .events(None, None, before, pages::TIMELINE_PAGE)
        .await
    {
        Ok(e) => e,
        Err(e) => return store_failed(&state, &viewer, e),
    };
    let (shown, total) = pages::targets_page(state.api.board.all(), page);
    let title = match total {
        1 => "1 target".to_string(),
        n => format!("{n} targets"),
    };
    let mut frame = state.frame(&title, &viewer);
    let follows = live::Follows {
        target: None,
        newest: events.first().map(|e| e.id),
        timeline: before.is_none(),
        page,
    };
    frame.stream = Some(follows.url());
    let body = format!(
        "{}{}{}",
        pages::targets_table(&pages::target_rows(&shown, crate::clock::steady_ms())),
        pages::pager(page, total),
        pages::timeline(&events, "/?", before.is_none())
    );
    html(StatusCode::OK, html::page(&frame, &body))
}

/// The `{env}/{role}` of a page's path, when that target is configured.
fn known_target(state: &UiState, env: &str, role: &str) -> Option<TargetId> {
    let id = TargetId {
        env: Env::parse(env)?,
        role: role.to_string(),
    };
    state.api.commands.contains_key(&id).then_some(id)
}

async fn target_page(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path((env, role)): Path<(String, String)>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let viewer = viewer(&state, &headers);
    if let Err(Refused(status, why)) = must_read(&viewer) {
        return refusal(&state, &viewer, status, &why);
    }
    let Some(id) = known_target(&state, &env, &role) else {
        let why = format!("no target {env}/{role} is configured");
        return refusal(&state, &viewer, StatusCode::NOT_FOUND, &why);
    };
    let before = q.ok().and_then(|Query(q)| q.before);
    let store = &state.api.store;
    let read = async {
        let events = store
            .events(Some(id.clone()), None, before, pages::TIMELINE_PAGE)
            .await?;
        let rollbacks = store.rollbacks(Some(id.clone()), 20).await?;
        let tags = store.known_good_tags(id.clone()).await?;
        let (samples, marks) = live::window_chart(store, &id, now_ms(), None).await?;
        Ok::<_, crate::store::StoreError>((events, rollbacks, tags, samples, marks))
    };
    let (events, rollbacks, tags, samples, marks) = match read.await {
        Ok(r) => r,
        Err(e) => return store_failed(&state, &viewer, e),
    };
    let statuses: Vec<_> = state
        .api
        .board
        .all()
        .into_iter()
        .filter(|s| s.target == id)
        .collect();
    let paused = statuses.iter().any(|s| s.paused);
    let tags: Vec<String> = tags.into_iter().map(|(t, _, _)| t).collect();
    let title = id.to_string();
    let mut frame = state.frame(&title, &viewer);
    let follows = live::Follows {
        target: Some(&id),
        newest: events.first().map(|e| e.id),
        timeline: before.is_none(),
        page: 0,
    };
    frame.stream = Some(follows.url());
    let body = format!(
        "{}{}{}{}{}",
        pages::targets_table(&pages::target_rows(&statuses, crate::clock::steady_ms())),
        pages::actions(&id, viewer.csrf.as_deref(), paused, &tags),
        pages::evidence(&samples, &marks),
        pages::rollback_list(&rollbacks),
        pages::timeline(
            &events,
            &format!("/ui/targets/{env}/{}?", html::esc(&role)),
            before.is_none()
        ),
    );
    html(StatusCode::OK, html::page(&frame, &body))
}

async fn incident_page(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let viewer = viewer(&state, &headers);
    if let Err(Refused(status, why)) = must_read(&viewer) {
        return refusal(&state, &viewer, status, &why);
    }
    let not_found = |why: String| refusal(&state, &viewer, StatusCode::NOT_FOUND, &why);
    let Ok(id) = id.parse::<i64>() else {
        return not_found(format!("{id:?} is not an incident number"));
    };
    let store = &state.api.store;
    let record = match store.rollback(id).await {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(format!("no incident #{id}")),
        Err(e) => return store_failed(&state, &viewer, e),
    };
    let read = async {
        let deploy = match &record.from_tag {
            Some(tag) => store.deploy_of(record.target.clone(), tag.clone()).await?,
            None => None,
        };
        // Only the window of the tag rolled back: an older window of another tag is not this
        // incident's evidence.
        let (samples, marks) = live::window_chart(
            store,
            &record.target,
            record.started_at_ms,
            record.from_tag.clone(),
        )
        .await?;
        Ok::<_, crate::store::StoreError>((deploy, samples, marks))
    };
    let (deploy, samples, marks) = match read.await {
        Ok(r) => r,
        Err(e) => return store_failed(&state, &viewer, e),
    };
    let title = format!("Incident #{id}: {}", record.target);
    let frame = state.frame(&title, &viewer);
    let chart = pages::evidence(&samples, &marks);
    let body = pages::incident(&record, deploy.as_ref(), &chart);
    html(StatusCode::OK, html::page(&frame, &body))
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/app.css"))
}

async fn js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}
