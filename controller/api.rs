//! The HTTP API: target status, events and rollback records for people and dashboards; CI deploy
//! registration, pause/resume and manual rollback for people and pipelines. Mutating endpoints
//! need the bearer token; reads are open unless configured otherwise. Handlers only translate
//! HTTP to watcher commands — decisions stay in the watcher.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::store::{now_ms, DeployRecord, Store, Trigger};
use crate::tag::Tag;
use crate::target::{Env, TargetId};
use crate::watch::{Command, StatusBoard};

#[derive(Clone)]
pub struct ApiState {
    pub board: StatusBoard,
    pub store: Store,
    pub commands: Arc<HashMap<TargetId, mpsc::Sender<Command>>>,
    pub token: Option<String>,
    pub reads_need_token: bool,
    pub metrics: Arc<crate::telemetry::Metrics>,
    pub alert_window_ms: i64,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/v1/targets", get(targets))
        .route("/api/v1/events", get(events))
        .route("/api/v1/rollbacks", get(rollbacks))
        .route("/api/v1/incidents", get(rollbacks))
        .route("/api/v1/deploys", post(deploy))
        .route("/api/v1/alertmanager", post(alertmanager))
        .route("/api/v1/targets/{env}/{role}/pause", post(pause))
        .route("/api/v1/targets/{env}/{role}/resume", post(resume))
        .route("/api/v1/targets/{env}/{role}/rollback", post(rollback))
        .with_state(state)
}

/// An error answer: the status and a sentence, sent as `{"error": "..."}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn reject(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError(status, message.into())
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    reject(status, message).into_response()
}

/// Compares in time independent of where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.token else {
        return Err(reject(
            StatusCode::UNAUTHORIZED,
            "no API token is configured on the controller; set it to enable this endpoint",
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(reject(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        )),
    }
}

fn read_allowed(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.reads_need_token {
        authorized(state, headers)
    } else {
        Ok(())
    }
}

fn parse_target(
    state: &ApiState,
    env: &str,
    role: &str,
) -> Result<(TargetId, mpsc::Sender<Command>), ApiError> {
    let env = Env::parse(env).ok_or_else(|| {
        reject(
            StatusCode::NOT_FOUND,
            format!("unknown env {env:?}: staging or production"),
        )
    })?;
    let id = TargetId {
        env,
        role: role.to_string(),
    };
    let tx = state.commands.get(&id).cloned().ok_or_else(|| {
        reject(
            StatusCode::NOT_FOUND,
            format!("no target {id} is configured"),
        )
    })?;
    Ok((id, tx))
}

async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn targets(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(r) = read_allowed(&state, &headers) {
        return r.into_response();
    }
    let list: Vec<_> = state
        .board
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    Json(list).into_response()
}

#[derive(Deserialize)]
struct EventQuery {
    env: Option<String>,
    role: Option<String>,
    after: Option<i64>,
    limit: Option<usize>,
}

fn query_target(
    q_env: &Option<String>,
    q_role: &Option<String>,
) -> Result<Option<TargetId>, ApiError> {
    match (q_env, q_role) {
        (Some(e), Some(r)) => {
            let env = Env::parse(e)
                .ok_or_else(|| reject(StatusCode::BAD_REQUEST, format!("unknown env {e:?}")))?;
            Ok(Some(TargetId {
                env,
                role: r.clone(),
            }))
        }
        (None, None) => Ok(None),
        _ => Err(reject(
            StatusCode::BAD_REQUEST,
            "give both env and role, or neither",
        )),
    }
}

/// The common part of the read endpoints: access check and the optional env/role filter.
fn read_query(
    state: &ApiState,
    headers: &HeaderMap,
    q: &EventQuery,
) -> Result<Option<TargetId>, ApiError> {
    read_allowed(state, headers)?;
    query_target(&q.env, &q.role)
}

fn json_or_500<T: serde::Serialize>(result: Result<T, crate::store::StoreError>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<EventQuery>,
) -> Response {
    match read_query(&state, &headers, &q) {
        Ok(target) => json_or_500(
            state
                .store
                .events(target, q.after, q.limit.unwrap_or(100).min(1000))
                .await,
        ),
        Err(r) => r.into_response(),
    }
}

async fn rollbacks(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<EventQuery>,
) -> Response {
    match read_query(&state, &headers, &q) {
        Ok(target) => json_or_500(
            state
                .store
                .rollbacks(target, q.limit.unwrap_or(50).min(1000))
                .await,
        ),
        Err(r) => r.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    env: String,
    role: String,
    tag: String,
    commit_sha: Option<String>,
    pipeline_url: Option<String>,
}

async fn deploy(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<DeployBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r.into_response();
    }
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("malformed deploy body: {}", e.body_text()),
            )
        }
    };
    let (id, tx) = match parse_target(&state, &body.env, &body.role) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let tag = match Tag::parse(&body.tag) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if let Some(sha) = &body.commit_sha {
        if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("commit_sha {sha:?} is not a 40-hex commit SHA"),
            );
        }
    }
    let record = DeployRecord {
        tag: tag.to_string(),
        commit_sha: body.commit_sha,
        pipeline_url: body.pipeline_url,
        at_ms: now_ms(),
    };
    if tx.send(Command::Deploy(record)).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "controller is shutting down",
        );
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({ "target": id.to_string(), "tag": tag.to_string(), "status": "registered" })),
    )
        .into_response()
}

/// How long pause/resume wait for the watcher to store the change before answering 202: a
/// watcher in the middle of a rollback takes the order when that rollback has ended.
const COMMAND_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Pause or resume: answers 200 only once the change is stored, 202 when it is queued behind a
/// rollback in flight.
async fn simple_command(
    state: ApiState,
    headers: HeaderMap,
    env: String,
    role: String,
    cmd: fn(tokio::sync::oneshot::Sender<()>) -> Command,
    word: &str,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r.into_response();
    }
    let (id, tx) = match parse_target(&state, &env, &role) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let (done, stored) = tokio::sync::oneshot::channel();
    if tx.send(cmd(done)).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "controller is shutting down",
        );
    }
    match tokio::time::timeout(COMMAND_WAIT, stored).await {
        Ok(Ok(())) => Json(json!({ "target": id.to_string(), "status": word })).into_response(),
        Ok(Err(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "controller is shutting down",
        ),
        Err(_) => (
            StatusCode::ACCEPTED,
            Json(json!({ "target": id.to_string(), "status": "queued", "why": "a rollback is in flight; the order takes effect when it ends" })),
        )
            .into_response(),
    }
}

async fn pause(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((env, role)): Path<(String, String)>,
) -> Response {
    let cmd = |done| Command::Pause { done };
    simple_command(state, headers, env, role, cmd, "paused").await
}

async fn resume(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((env, role)): Path<(String, String)>,
) -> Response {
    let cmd = |done| Command::Resume { done };
    simple_command(state, headers, env, role, cmd, "resumed").await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    tag: Option<String>,
    reason: Option<String>,
}

async fn rollback(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((env, role)): Path<(String, String)>,
    body: Option<Json<RollbackBody>>,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r.into_response();
    }
    let (_, tx) = match parse_target(&state, &env, &role) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let tag = match body.tag.as_deref().map(Tag::parse).transpose() {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let (reply, answer) = oneshot::channel();
    let reason = body
        .reason
        .unwrap_or_else(|| "manual rollback through the API".into());
    if tx
        .send(Command::Rollback {
            tag,
            trigger: Trigger::Manual,
            reason,
            reply,
        })
        .await
        .is_err()
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "controller is shutting down",
        );
    }
    match answer.await {
        Ok(Ok(record)) => Json(record).into_response(),
        Ok(Err(e)) => error(StatusCode::CONFLICT, e),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "controller stopped before answering",
        ),
    }
}

/// Alertmanager's webhook. Answers fast (Alertmanager times out): rollbacks are queued to the
/// target's watcher, not awaited. 200 with a per-alert account; 401/400/404 change nothing.
async fn alertmanager(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    use crate::alertmanager::{parse, plan, AlertAction};
    if let Err(r) = authorized(&state, &headers) {
        return r.into_response();
    }
    let payload = match parse(&body) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let now = now_ms();
    let recent: HashMap<TargetId, bool> = state
        .board
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .map(|s| {
            (
                s.target.clone(),
                s.last_deploy_ms
                    .is_some_and(|d| now - d <= state.alert_window_ms),
            )
        })
        .collect();
    let actions = plan(
        &payload,
        |t| state.commands.contains_key(t),
        |t| recent.get(t).copied().unwrap_or(false),
    );
    let mut results = Vec::new();
    let mut unknown = 0;
    for action in &actions {
        let result = match action {
            AlertAction::Ignore { why } => json!({ "action": "ignored", "why": why }),
            AlertAction::UnknownTarget { env, role } => {
                unknown += 1;
                json!({ "action": "ignored", "why": format!("no target {env}/{role} is configured") })
            }
            AlertAction::RollBack {
                target,
                episode,
                reason,
            } => {
                match state
                    .store
                    .claim_alert_episode(target.clone(), episode.clone())
                    .await
                {
                    Ok(false) => {
                        json!({ "action": "duplicate", "target": target.to_string(), "why": "this alert episode already ordered a rollback" })
                    }
                    Ok(true) => {
                        let (reply, _ignored) = oneshot::channel();
                        let cmd = Command::Rollback {
                            tag: None,
                            trigger: Trigger::Alert,
                            reason: reason.clone(),
                            reply,
                        };
                        match state.commands.get(target) {
                            Some(tx) if tx.send(cmd).await.is_ok() => {
                                json!({ "action": "rollback", "target": target.to_string() })
                            }
                            _ => {
                                return error(
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "controller is shutting down",
                                )
                            }
                        }
                    }
                    Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                }
            }
        };
        results.push(result);
    }
    let status = if unknown > 0 && unknown == actions.len() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(json!({ "group": payload.group_key, "status": payload.status, "results": results })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
