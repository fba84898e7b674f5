//! The page's live updates: Server-Sent Events carrying rendered HTML. A new event is sent
//! as its timeline entry the moment a watcher broadcasts it; the targets table is re-rendered
//! every [`ROWS_EVERY`] and sent when it changed (a watch window's progress moves every second,
//! and a state can change without an event of its own).
//!
//! A page passes the newest event it has (`after`): the stream first sends what the store
//! holds after it, so nothing that happened between rendering the page and connecting is lost.

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

use super::chart::Mark;
use super::{pages, viewer, UiState};
use crate::store::{now_ms, EventRecord, Store, StoreError};
use crate::target::{Env, TargetId};

/// How often the targets table is re-rendered for an open page.
const ROWS_EVERY: Duration = Duration::from_secs(1);
/// Events replayed from the store to a page that connects.
const CATCH_UP: usize = 200;

/// The stream URL of a page on `target` (all targets with `None`) that shows events up to `newest`.
pub fn stream_url(target: Option<&TargetId>, newest: Option<i64>) -> String {
    let mut url = format!("/ui/stream?after={}", newest.unwrap_or(0));
    if let Some(t) = target {
        url.push_str(&format!("&env={}&role={}", t.env.as_str(), t.role));
    }
    url
}

#[derive(Deserialize)]
pub struct StreamQuery {
    after: Option<i64>,
    env: Option<String>,
    role: Option<String>,
}

pub async fn stream(
    State(state): State<UiState>,
    headers: HeaderMap,
    q: Result<Query<StreamQuery>, QueryRejection>,
) -> Response {
    if !viewer(&state, &headers).may_read {
        return (
            StatusCode::UNAUTHORIZED,
            "log in to follow this controller\n",
        )
            .into_response();
    }
    let q = q.ok().map(|Query(q)| q);
    let filter = q.as_ref().and_then(|q| {
        Some(TargetId {
            env: Env::parse(q.env.as_deref()?)?,
            role: q.role.clone()?,
        })
    });
    let after = q.and_then(|q| q.after);
    // Subscribed before the catch-up read: an event can come twice (the page skips a known
    // id) but cannot fall between the two.
    let rx = state.events.subscribe();
    let mut backlog = match after {
        Some(after) => state
            .api
            .store
            .events(filter.clone(), Some(after), None, CATCH_UP)
            .await
            .unwrap_or_default(),
        None => Vec::new(),
    };
    backlog.reverse();
    let mut tick = tokio::time::interval(ROWS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let follow = Follow {
        state,
        filter,
        rx,
        tick,
        backlog: backlog.into_iter(),
        last_rows: None,
    };
    Sse::new(follow.into_stream())
        .keep_alive(KeepAlive::default())
        .into_response()
}

struct Follow {
    state: UiState,
    filter: Option<TargetId>,
    rx: tokio::sync::broadcast::Receiver<EventRecord>,
    tick: tokio::time::Interval,
    backlog: std::vec::IntoIter<EventRecord>,
    last_rows: Option<String>,
}

impl Follow {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        stream::unfold(self, |mut f| async move {
            let event = f.next().await?;
            Some((Ok(event), f))
        })
    }

    /// The next message, or `None` when the controller shuts down.
    async fn next(&mut self) -> Option<Event> {
        if let Some(e) = self.backlog.next() {
            return Some(item(&e));
        }
        loop {
            tokio::select! {
                _ = self.state.shutdown.cancelled() => return None,
                r = self.rx.recv() => match r {
                    Ok(e) if self.filter.as_ref().is_none_or(|t| *t == e.target) => {
                        return Some(item(&e));
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                },
                _ = self.tick.tick() => {
                    let statuses: Vec<_> = self
                        .state
                        .api
                        .board
                        .all()
                        .into_iter()
                        .filter(|s| self.filter.as_ref().is_none_or(|t| *t == s.target))
                        .collect();
                    let rows = pages::target_rows(&statuses, now_ms());
                    if self.last_rows.as_ref() != Some(&rows) {
                        self.last_rows = Some(rows.clone());
                        return Some(message("targets", &rows));
                    }
                }
            }
        }
    }
}

fn item(e: &EventRecord) -> Event {
    message("event", &pages::event_item(e))
}

/// An SSE message; a carriage return would end the field early, so none is sent.
fn message(name: &str, html: &str) -> Event {
    Event::default().event(name).data(html.replace('\r', ""))
}

/// The verdicts and rollbacks to mark on the chart of the window that opened at `window`.
pub async fn marks(
    store: &Store,
    target: &TargetId,
    window: Option<i64>,
) -> Result<Vec<Mark>, StoreError> {
    let Some(window) = window else {
        return Ok(Vec::new());
    };
    // Events of the window: after it opened, before the next deploy of this target.
    let events = store.events(Some(target.clone()), None, None, 500).await?;
    let mut marks = Vec::new();
    let mut chronological: Vec<&EventRecord> =
        events.iter().filter(|e| e.at_ms >= window).collect();
    chronological.reverse();
    for e in chronological {
        if e.kind == "deploy" && e.at_ms > window + 1000 {
            break;
        }
        if matches!(
            e.kind.as_str(),
            "regressed" | "promoted" | "rollback" | "rollback_failed"
        ) {
            marks.push(Mark {
                at_ms: e.at_ms,
                label: e.kind.clone(),
            });
        }
    }
    Ok(marks)
}
