//! The page's live updates: Server-Sent Events carrying rendered HTML. A new event is sent
//! as its timeline entry the moment a watcher broadcasts it; the targets rows are re-rendered
//! every [`ROWS_EVERY`] and sent when they changed (a watch window's progress moves every second,
//! and a state can change without an event of its own).
//!
//! Nothing is lost between the page and the stream: a page passes the newest event it has
//! (`after`) and the stream first sends, oldest first, what the store holds after it; when the
//! broadcast outruns a slow stream, the stream reads what it missed from the store the same way.
//! A stream opened with a session ends when that session does.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, OwnedSemaphorePermit};

use super::chart::Mark;
use super::{pages, viewer, UiState};
use crate::store::{EventFilter, EventRecord, Sample, Store, StoreError};
use crate::target::{Env, TargetId};

/// How often the targets rows are re-rendered for an open page.
const ROWS_EVERY: Duration = Duration::from_secs(1);
/// Events read from the store at a time when catching up.
const CATCH_UP: usize = 200;

/// What a page follows: its target (all with `None`), the newest event it shows, whether its
/// timeline is live (only the first page of it is), and which page of targets it shows.
pub struct Follows<'a> {
    pub target: Option<&'a TargetId>,
    pub newest: Option<i64>,
    pub timeline: bool,
    pub page: usize,
}

impl Follows<'_> {
    pub fn url(&self) -> String {
        let mut url = format!(
            "/ui/stream?after={}&timeline={}&page={}",
            self.newest.unwrap_or(0),
            u8::from(self.timeline),
            self.page
        );
        if let Some(t) = self.target {
            url.push_str(&format!("&env={}&role={}", t.env.as_str(), t.role));
        }
        url
    }
}

#[derive(Deserialize)]
pub struct StreamQuery {
    after: Option<i64>,
    env: Option<String>,
    role: Option<String>,
    timeline: Option<u8>,
    page: Option<usize>,
}

pub async fn stream(
    State(state): State<UiState>,
    headers: HeaderMap,
    q: Result<Query<StreamQuery>, QueryRejection>,
) -> Response {
    let viewer = viewer(&state, &headers);
    if !viewer.may_read {
        return (
            StatusCode::UNAUTHORIZED,
            "log in to follow this controller\n",
        )
            .into_response();
    }
    let Ok(Query(q)) = q else {
        return (StatusCode::BAD_REQUEST, "bad stream query\n").into_response();
    };
    let filter = match (q.env.as_deref(), q.role.as_deref()) {
        (None, None) => None,
        (Some(env), Some(role)) => match Env::parse(env) {
            Some(env) => Some(TargetId {
                env,
                role: role.to_string(),
            }),
            None => return (StatusCode::BAD_REQUEST, "unknown env\n").into_response(),
        },
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                "give both env and role, or neither\n",
            )
                .into_response()
        }
    };
    let Ok(permit) = state.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many status pages are open on this controller; close one and reload\n",
        )
            .into_response();
    };
    // Only a stream that a session authorised depends on it: open reads and the bearer token
    // do not expire with a logout.
    let session = if state.api.reads_need_token && !super::bearer_ok(&state, &headers) {
        viewer.session.clone()
    } else {
        None
    };
    let timeline = q.timeline != Some(0);
    let mut tick = tokio::time::interval(ROWS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let follow = Follow {
        // Subscribed before the catch-up read: an event can then come twice (skipped by id)
        // but cannot fall between the two.
        rx: timeline.then(|| state.events.subscribe()),
        state,
        filter,
        session,
        tick,
        backlog: Vec::new().into_iter(),
        last_id: q.after.unwrap_or(0),
        catching_up: timeline && q.after.is_some(),
        last_rows: None,
        page: q.page.unwrap_or(0),
        _permit: permit,
    };
    Sse::new(follow.into_stream())
        .keep_alive(KeepAlive::default())
        .into_response()
}

struct Follow {
    state: UiState,
    filter: Option<TargetId>,
    /// The session this stream lives on, if one authorised it.
    session: Option<String>,
    /// `None` when the page's timeline is not live (an older page of it).
    rx: Option<broadcast::Receiver<EventRecord>>,
    tick: tokio::time::Interval,
    backlog: std::vec::IntoIter<EventRecord>,
    /// The newest event sent (or shown by the page).
    last_id: i64,
    /// Events after `last_id` may be in the store and not sent yet.
    catching_up: bool,
    last_rows: Option<String>,
    page: usize,
    _permit: OwnedSemaphorePermit,
}

impl Follow {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        stream::unfold(self, |mut f| async move {
            let event = f.next().await?;
            Some((Ok(event), f))
        })
    }

    fn session_alive(&self) -> bool {
        self.session
            .as_deref()
            .is_none_or(|s| self.state.sessions.csrf(s).is_some())
    }

    /// The next message, or `None` when the stream ends (shutdown, the session ended).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if !self.session_alive() {
                return None;
            }
            if let Some(e) = self.backlog.next() {
                self.last_id = e.id;
                return Some(item(&e));
            }
            if self.catching_up {
                self.catch_up().await;
                continue;
            }
            let recv = async {
                match self.rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.state.shutdown.cancelled() => return None,
                r = recv => match r {
                    Ok(e) if e.id > self.last_id
                        && self.filter.as_ref().is_none_or(|t| *t == e.target) =>
                    {
                        self.last_id = e.id;
                        return Some(item(&e));
                    }
                    Ok(_) => continue,
                    // Missed some: read them from the store, in order.
                    Err(RecvError::Lagged(_)) => self.catching_up = true,
                    Err(RecvError::Closed) => return None,
                },
                _ = self.tick.tick() => {
                    if let Some(rows) = self.changed_rows() {
                        return Some(message("targets", &rows));
                    }
                }
            }
        }
    }

    async fn catch_up(&mut self) {
        let read = self
            .state
            .api
            .store
            .events_matching(EventFilter {
                target: self.filter.clone(),
                after_id: Some(self.last_id),
                oldest_first: true,
                limit: CATCH_UP,
                ..EventFilter::default()
            })
            .await;
        match read {
            Ok(events) => {
                self.catching_up = events.len() == CATCH_UP;
                self.backlog = events.into_iter();
            }
            Err(e) => {
                tracing::warn!(error = %e, "status page stream cannot read missed events");
                self.catching_up = false;
            }
        }
    }

    fn changed_rows(&mut self) -> Option<String> {
        let statuses: Vec<_> = self
            .state
            .api
            .board
            .all()
            .into_iter()
            .filter(|s| self.filter.as_ref().is_none_or(|t| *t == s.target))
            .collect();
        let (shown, _) = pages::targets_page(statuses, self.page);
        let rows = pages::target_rows(&shown, crate::clock::steady_ms());
        if self.last_rows.as_ref() == Some(&rows) {
            return None;
        }
        self.last_rows = Some(rows.clone());
        Some(rows)
    }
}

fn item(e: &EventRecord) -> Event {
    message("event", &pages::event_item(e))
}

/// An SSE message; a carriage return would end the field early, so none is sent.
fn message(name: &str, html: &str) -> Event {
    Event::default().event(name).data(html.replace('\r', ""))
}

/// The samples and marks of the window of `target` open at `at_ms` (of `tag` when given): the
/// verdicts and rollbacks between its opening and the next deploy.
pub async fn window_chart(
    store: &Store,
    target: &TargetId,
    at_ms: i64,
    tag: Option<String>,
) -> Result<(Vec<Sample>, Vec<Mark>), StoreError> {
    let Some(window) = store.window_at(target.clone(), at_ms, tag).await? else {
        return Ok((Vec::new(), Vec::new()));
    };
    let samples = store.samples(target.clone(), window).await?;
    let events = store
        .events_matching(EventFilter {
            target: Some(target.clone()),
            from_ms: Some(window),
            oldest_first: true,
            limit: 500,
            ..EventFilter::default()
        })
        .await?;
    let mut marks = Vec::new();
    for e in events {
        if e.kind == "deploy" && e.at_ms > window + 1000 {
            break;
        }
        if matches!(
            e.kind.as_str(),
            "regressed" | "promoted" | "rollback" | "rollback_failed"
        ) {
            marks.push(Mark {
                at_ms: e.at_ms,
                label: e.kind,
            });
        }
    }
    Ok((samples, marks))
}
