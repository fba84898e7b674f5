//! The HTTP API: target status, events and rollback records for people and dashboards; CI deploy
//! registration, pause/resume and manual rollback for people and pipelines. Every mutating
//! request (any method but GET/HEAD, on any path) is checked for the bearer token before its
//! path or body is looked at; reads are open unless configured otherwise. Bodies are read under a
//! size cap and a deadline, parsed as JSON whatever their `Content-Type` says, and their strings
//! capped. Handlers only translate HTTP to watcher commands — decisions stay in the watcher — and
//! answer with the watcher's outcome, or `503 busy` when its queue is full (nothing changed).
//! Connection-level limits live in [`crate::server`].

mod canary;
#[cfg(test)]
mod props;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::store::{now_ms, DeployRecord, RollbackRecord, Store, Trigger};
use crate::tag::Tag;
use crate::target::{Env, TargetId};
use crate::watch::{Command, StatusBoard, COMMAND_QUEUE};

#[derive(Clone)]
pub struct ApiState {
    pub board: StatusBoard,
    pub store: Store,
    pub commands: Arc<HashMap<TargetId, mpsc::Sender<Command>>>,
    /// The digest of the configured token; `None` refuses every mutating request.
    pub token: Option<TokenDigest>,
    pub reads_need_token: bool,
    pub metrics: Arc<crate::telemetry::Metrics>,
    pub alert_window_ms: i64,
    /// The runners of canary targets (deploys, promote, abort).
    pub canaries: Arc<HashMap<TargetId, crate::canary::handle::CanaryHandle>>,
    /// Orders are taken only while this instance leads; a follower names the leader.
    pub lease: Arc<dyn crate::lease::Lease>,
}

/// Longest strings accepted in an order's fields.
pub const MAX_TAG: usize = 128;
pub const MAX_URL: usize = 2048;
pub const MAX_REASON: usize = 1024;
/// env, role and the commit SHA (40 hex digits; checked exactly afterwards).
pub const MAX_NAME: usize = 64;
/// Bodies of orders (a few short fields) and of Alertmanager notifications (many alerts).
const ORDER_BODY_LIMIT: usize = 64 * 1024;
const ALERT_BODY_LIMIT: usize = 1024 * 1024;
/// A body must have arrived this long after its head: a client trickling one slowly is cut off.
const BODY_WAIT: Duration = Duration::from_secs(10);
/// Reads, `/healthz` and `/metrics` end within this, whatever the store or the client does.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many reads touch the store at once: a flood of reads queues here instead of
/// starving the watchers' writes. `/healthz` and `/metrics` are outside the limit.
const READ_CONCURRENCY: usize = 32;
/// How long a rollback order waits for the watcher's outcome before answering `202 running`.
const ROLLBACK_WAIT: Duration = Duration::from_secs(600);
/// A backstop on every order; above [`ROLLBACK_WAIT`] so that a rollback answers itself first.
const ORDER_TIMEOUT: Duration = Duration::from_secs(660);
/// How long pause, resume and a CI deploy wait for the watcher to store the change before
/// answering 202: a watcher in the middle of a rollback takes the order when that rollback ends.
const COMMAND_WAIT: Duration = Duration::from_secs(10);
/// Told to clients whose order met a full queue (seconds).
const RETRY_AFTER_SECS: u64 = 5;
/// An alert order the watcher dropped unanswered within this gives its episode back.
const ALERT_OUTCOME_WAIT: Duration = Duration::from_secs(3600);

pub fn router(state: ApiState) -> Router {
    let open = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics));
    let reads = Router::new()
        .route("/api/v1/targets", get(targets))
        .route("/api/v1/events", get(events))
        .route("/api/v1/rollbacks", get(rollbacks))
        .route("/api/v1/incidents", get(rollbacks))
        .route("/api/v1/canaries", get(canary::canaries))
        .layer(GlobalConcurrencyLimitLayer::new(READ_CONCURRENCY));
    let orders = Router::new()
        .route("/api/v1/deploys", post(deploy))
        .route("/api/v1/alertmanager", post(alertmanager))
        .route("/api/v1/targets/{env}/{role}/pause", post(pause))
        .route("/api/v1/targets/{env}/{role}/resume", post(resume))
        .route("/api/v1/targets/{env}/{role}/rollback", post(rollback))
        .route(
            "/api/v1/targets/{env}/{role}/promote",
            post(canary::promote),
        )
        .route("/api/v1/targets/{env}/{role}/abort", post(canary::abort))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            ORDER_TIMEOUT,
        ));
    Router::new()
        .merge(open.merge(reads).layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            READ_TIMEOUT,
        )))
        .merge(orders)
        .fallback(not_found)
        // Outermost, so it runs before routing, path and body extraction, for every path.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state)
}

/// An error answer: the status and `{"error": "..."}` (plus any detail), with `Retry-After`
/// when retrying later can work.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: serde_json::Value,
    retry_after: Option<u64>,
}

impl ApiError {
    /// The status and the refusal in words, for the status page.
    pub(crate) fn describe(&self) -> (StatusCode, String) {
        let words: Vec<&str> = ["error", "why"]
            .iter()
            .filter_map(|k| self.body.get(*k).and_then(|v| v.as_str()))
            .collect();
        (self.status, words.join(": "))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, s.into());
        }
        r
    }
}

fn reject(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        body: json!({ "error": message.into() }),
        retry_after: None,
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    reject(status, message).into_response()
}

/// The watcher's queue is full: nothing was queued, nothing changed.
fn busy(target: &TargetId) -> ApiError {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        body: json!({
            "error": "busy",
            "why": format!("the watcher of {target} already holds {COMMAND_QUEUE} orders (a rollback is probably in flight); nothing was changed, retry later"),
        }),
        retry_after: Some(RETRY_AFTER_SECS),
    }
}

fn shutting_down() -> ApiError {
    reject(
        StatusCode::SERVICE_UNAVAILABLE,
        "controller is shutting down",
    )
}

/// Puts an order in the target's queue without waiting for room.
pub(crate) fn enqueue(
    target: &TargetId,
    tx: &mpsc::Sender<Command>,
    cmd: Command,
) -> Result<(), ApiError> {
    match tx.try_send(cmd) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(_)) => Err(busy(target)),
        Err(TrySendError::Closed(_)) => Err(shutting_down()),
    }
}

/// The SHA-256 digest of a token. Digests of the expected and the given token are compared, so
/// the comparison takes the same time whatever the given token's length or content.
#[derive(Clone)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> TokenDigest {
        let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(d.as_ref());
        TokenDigest(bytes)
    }

    pub fn matches(&self, given: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(TokenDigest::of(given).0.ct_eq(&self.0))
    }
}

pub(crate) fn authorized(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.token else {
        return Err(reject(
            StatusCode::UNAUTHORIZED,
            "no API token is configured on the controller; set it to enable this endpoint",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if expected.matches(g) => Ok(()),
        _ => Err(reject(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        )),
    }
}

/// Whether a request needs the token: every mutating one, and reads when so configured
/// (`/healthz` and `/metrics` stay open for probes and scrapers).
fn needs_token(method: &Method, path: &str, reads_need_token: bool) -> bool {
    let read = matches!(*method, Method::GET | Method::HEAD);
    !read || (reads_need_token && !matches!(path, "/healthz" | "/metrics"))
}

/// The first thing every request meets: a stranger gets 401 JSON before any path, query or
/// body of theirs is parsed.
async fn authorize(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if needs_token(
        request.method(),
        request.uri().path(),
        state.reads_need_token,
    ) {
        if let Err(e) = authorized(&state, request.headers()) {
            return e.into_response();
        }
    }
    let order = !matches!(*request.method(), Method::GET | Method::HEAD);
    if order && !state.lease.is_leader() {
        let mut r = not_the_leader(state.lease.as_ref()).into_response();
        r.headers_mut()
            .insert(FOLLOWER_HEADER, header::HeaderValue::from_static("1"));
        return r;
    }
    next.run(request).await
}

/// A follower takes no orders: changing state here would race the leader. The answer names
/// the leader (when known) so a client or a load balancer can go there; Alertmanager, pointed
/// at every instance, retries here and is answered by the leader meanwhile.
fn not_the_leader(lease: &dyn crate::lease::Lease) -> ApiError {
    let leader = lease.leader_address();
    let message = match &leader {
        Some(a) => format!("this rollwatch instance follows and takes no orders; send them to the leader at {a}"),
        None if lease.fence().is_some() => "this rollwatch instance is taking over as leader (finishing what the previous one left); retry shortly".to_string(),
        None => "this rollwatch instance does not lead now (no leader is known: the store may be unreachable); retry shortly".to_string(),
    };
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        body: json!({ "error": message, "leader": leader, "state": lease.describe() }),
        retry_after: Some(RETRY_AFTER_SECS),
    }
}

/// Marks a follower's 503 apart from a full queue's, for clients that retry the latter.
pub const FOLLOWER_HEADER: &str = "x-rollwatch-follower";

async fn not_found(request: Request) -> ApiError {
    reject(
        StatusCode::NOT_FOUND,
        format!("no endpoint {} {}", request.method(), request.uri().path()),
    )
}

/// What is wrong with an order's body.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is over {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body did not arrive within {}", humantime::format_duration(*.0))]
    TooSlow(Duration),
    #[error("cannot read the body: {0}")]
    Read(String),
    #[error("Content-Type {0:?} is not JSON: send the body as application/json (or without a Content-Type)")]
    NotJson(String),
    #[error("the body is not valid JSON for this order: {0}")]
    Malformed(String),
    #[error("a JSON body is required")]
    Missing,
    #[error("field {field} is {len} bytes long; the limit is {limit}")]
    TooLong {
        field: &'static str,
        len: usize,
        limit: usize,
    },
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> ApiError {
        let status = match e {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TooSlow(_) => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_REQUEST,
        };
        reject(status, e.to_string())
    }
}

/// Reads a whole body of at most `limit` bytes within [`BODY_WAIT`].
async fn read_body(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    match tokio::time::timeout(BODY_WAIT, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(BodyError::TooSlow(BODY_WAIT)),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let e = e.into_inner();
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(BodyError::TooLarge { limit })
            } else {
                Err(BodyError::Read(e.to_string()))
            }
        }
    }
}

/// Refuses a body declared as something other than JSON. No `Content-Type` is fine: curl and
/// scripts often send JSON without one, and ignoring such a body once rolled back to the wrong tag.
fn check_json_type(content_type: Option<&[u8]>) -> Result<(), BodyError> {
    let Some(raw) = content_type else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(raw);
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(BodyError::NotJson(text.into_owned()))
    }
}

/// An order's body: `None` when empty, else JSON of `T` with every string within its cap.
pub fn parse_order<T: DeserializeOwned + Capped>(
    content_type: Option<&[u8]>,
    body: &[u8],
) -> Result<Option<T>, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    check_json_type(content_type)?;
    // The path of a wrongly typed value is part of the message: `tag: invalid type: ...`.
    let order: T =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))
            .map_err(|e| BodyError::Malformed(e.to_string()))?;
    order.check()?;
    Ok(Some(order))
}

/// Orders whose strings have length caps.
pub trait Capped {
    fn check(&self) -> Result<(), BodyError>;
}

fn cap(field: &'static str, value: Option<&str>, limit: usize) -> Result<(), BodyError> {
    match value {
        Some(v) if v.len() > limit => Err(BodyError::TooLong {
            field,
            len: v.len(),
            limit,
        }),
        _ => Ok(()),
    }
}

fn content_type(headers: &HeaderMap) -> Option<&[u8]> {
    headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes())
}

pub(crate) fn parse_target(
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

/// The `{env}/{role}` of an order's path, or a JSON 400.
fn target_path(
    state: &ApiState,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(TargetId, mpsc::Sender<Command>), ApiError> {
    let Path((env, role)) = path.map_err(|e| reject(StatusCode::BAD_REQUEST, e.body_text()))?;
    cap("role", Some(&role), MAX_NAME)?;
    parse_target(state, &env, &role)
}

/// Rendered on a blocking thread: at 10,000 targets it takes long enough to delay the probes
/// sharing an async worker.
async fn metrics(State(state): State<ApiState>) -> Response {
    let metrics = state.metrics.clone();
    let Ok(text) = tokio::task::spawn_blocking(move || metrics.render()).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response()
}

async fn targets(State(state): State<ApiState>) -> Response {
    Json(state.board.all()).into_response()
}

#[derive(Deserialize)]
struct EventQuery {
    env: Option<String>,
    role: Option<String>,
    after: Option<i64>,
    limit: Option<usize>,
}

/// The optional env/role filter of the read endpoints.
fn query_target(
    q: Result<Query<EventQuery>, QueryRejection>,
) -> Result<(Option<TargetId>, EventQuery), ApiError> {
    let Query(q) = q.map_err(|e| reject(StatusCode::BAD_REQUEST, e.body_text()))?;
    let target = match (&q.env, &q.role) {
        (Some(e), Some(r)) => {
            let env = Env::parse(e)
                .ok_or_else(|| reject(StatusCode::BAD_REQUEST, format!("unknown env {e:?}")))?;
            Some(TargetId {
                env,
                role: r.clone(),
            })
        }
        (None, None) => None,
        _ => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "give both env and role, or neither",
            ))
        }
    };
    Ok((target, q))
}

fn json_or_500<T: serde::Serialize>(result: Result<T, crate::store::StoreError>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn events(
    State(state): State<ApiState>,
    q: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (target, q) = query_target(q)?;
    Ok(json_or_500(
        state
            .store
            .events(target, q.after, None, q.limit.unwrap_or(100).min(1000))
            .await,
    ))
}

async fn rollbacks(
    State(state): State<ApiState>,
    q: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (target, q) = query_target(q)?;
    Ok(json_or_500(
        state
            .store
            .rollbacks(target, q.limit.unwrap_or(50).min(1000))
            .await,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    env: String,
    role: String,
    tag: String,
    commit_sha: Option<String>,
    pipeline_url: Option<String>,
    /// `replace` (register a deploy CI made) or `canary` (rollwatch makes it); unset: the
    /// target's configured strategy.
    strategy: Option<String>,
}

impl Capped for DeployBody {
    fn check(&self) -> Result<(), BodyError> {
        cap("env", Some(&self.env), MAX_NAME)?;
        cap("role", Some(&self.role), MAX_NAME)?;
        cap("tag", Some(&self.tag), MAX_TAG)?;
        cap("commit_sha", self.commit_sha.as_deref(), MAX_NAME)?;
        cap("strategy", self.strategy.as_deref(), MAX_NAME)?;
        cap("pipeline_url", self.pipeline_url.as_deref(), MAX_URL)
    }
}

impl DeployBody {
    /// The tag to deploy, once it and the commit SHA are well formed; a 400 naming them if not.
    fn checked_tag(&self) -> Result<Tag, ApiError> {
        let tag =
            Tag::parse(&self.tag).map_err(|e| reject(StatusCode::BAD_REQUEST, e.to_string()))?;
        if let Some(sha) = &self.commit_sha {
            if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(reject(
                    StatusCode::BAD_REQUEST,
                    format!("commit_sha {sha:?} is not a 40-hex commit SHA"),
                ));
            }
        }
        Ok(tag)
    }
}

async fn deploy(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body, ORDER_BODY_LIMIT).await?;
    let body: DeployBody =
        parse_order(content_type(&headers), &bytes)?.ok_or(BodyError::Missing)?;
    let (id, tx) = parse_target(&state, &body.env, &body.role)?;
    let tag = body.checked_tag()?;
    let canary = state.canaries.get(&id);
    match (body.strategy.as_deref(), canary) {
        (None | Some("canary"), Some(handle)) => {
            let order = crate::canary::handle::DeployOrder {
                tag,
                commit_sha: body.commit_sha,
                pipeline_url: body.pipeline_url,
            };
            return canary::deploy(&id, handle, order).await;
        }
        (None | Some("replace"), None) => {}
        (Some("canary"), None) => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                format!("strategy \"canary\": {id} is configured with strategy \"replace\"; set strategy = \"canary\" and its [targets.canary] table, or leave strategy out"),
            ))
        }
        (Some("replace"), Some(_)) => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                format!("strategy \"replace\": {id} is configured with strategy \"canary\", so rollwatch makes its deploys; leave strategy out (or say \"canary\")"),
            ))
        }
        (Some(other), _) => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                format!("strategy {other:?}: use \"replace\" or \"canary\""),
            ))
        }
    }
    let record = DeployRecord {
        tag: tag.to_string(),
        commit_sha: body.commit_sha,
        pipeline_url: body.pipeline_url,
        at_ms: now_ms(),
    };
    let (done, stored) = oneshot::channel();
    enqueue(&id, &tx, Command::Deploy { record, done })?;
    let status = match tokio::time::timeout(COMMAND_WAIT, stored).await {
        Ok(Ok(Ok(()))) => "registered",
        Ok(Ok(Err(e))) => return Err(reject(StatusCode::INTERNAL_SERVER_ERROR, e)),
        Ok(Err(_)) => return Err(shutting_down()),
        Err(_) => "queued",
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "target": id.to_string(), "tag": tag.to_string(), "status": status })),
    )
        .into_response())
}

/// What became of a pause or resume order ([`order_and_wait`]).
pub(crate) enum Ack {
    /// The watcher stored the change.
    Stored,
    /// Queued behind a rollback in flight: it takes effect when that ends.
    Queued,
}

/// Queues a pause or resume and waits up to [`COMMAND_WAIT`] for the watcher to store it;
/// the API and the status page answer from this.
pub(crate) async fn order_and_wait(
    id: &TargetId,
    tx: &mpsc::Sender<Command>,
    cmd: fn(oneshot::Sender<()>) -> Command,
) -> Result<Ack, ApiError> {
    let (done, stored) = oneshot::channel();
    enqueue(id, tx, cmd(done))?;
    match tokio::time::timeout(COMMAND_WAIT, stored).await {
        Ok(Ok(())) => Ok(Ack::Stored),
        Ok(Err(_)) => Err(shutting_down()),
        Err(_) => Ok(Ack::Queued),
    }
}

/// What became of a rollback order ([`order_rollback`]).
pub(crate) enum RollbackAnswer {
    /// The rollback ran; the record says how it ended.
    Done(Box<RollbackRecord>),
    /// The watcher refused it, saying why.
    Refused(String),
    /// Still running after the wait.
    Running,
}

/// Queues a manual rollback and waits up to `wait` for the watcher's answer.
pub(crate) async fn order_rollback(
    id: &TargetId,
    tx: &mpsc::Sender<Command>,
    tag: Option<Tag>,
    reason: String,
    wait: Duration,
) -> Result<RollbackAnswer, ApiError> {
    let (reply, answer) = oneshot::channel();
    let cmd = Command::Rollback {
        tag,
        trigger: Trigger::Manual,
        reason,
        reply,
    };
    enqueue(id, tx, cmd)?;
    match tokio::time::timeout(wait, answer).await {
        Ok(Ok(Ok(record))) => Ok(RollbackAnswer::Done(Box::new(record))),
        Ok(Ok(Err(e))) => Ok(RollbackAnswer::Refused(e)),
        Ok(Err(_)) => Err(reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "controller stopped before answering",
        )),
        Err(_) => Ok(RollbackAnswer::Running),
    }
}

/// Pause or resume: answers 200 only once the change is stored, 202 when it is queued behind a
/// rollback in flight, 503 `busy` when the queue is full (then nothing will change).
async fn simple_command(
    state: ApiState,
    path: Result<Path<(String, String)>, PathRejection>,
    cmd: fn(oneshot::Sender<()>) -> Command,
    word: &str,
) -> Result<Response, ApiError> {
    let (id, tx) = target_path(&state, path)?;
    match order_and_wait(&id, &tx, cmd).await? {
        Ack::Stored => Ok(Json(json!({ "target": id.to_string(), "status": word })).into_response()),
        Ack::Queued => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "target": id.to_string(), "status": "queued", "why": "a rollback is in flight; the order takes effect when it ends" })),
        )
            .into_response()),
    }
}

async fn pause(
    State(state): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let cmd = |done| Command::Pause { done };
    simple_command(state, path, cmd, "paused").await
}

async fn resume(
    State(state): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let cmd = |done| Command::Resume { done };
    simple_command(state, path, cmd, "resumed").await
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    tag: Option<String>,
    reason: Option<String>,
}

impl Capped for RollbackBody {
    fn check(&self) -> Result<(), BodyError> {
        cap("tag", self.tag.as_deref(), MAX_TAG)?;
        cap("reason", self.reason.as_deref(), MAX_REASON)
    }
}

/// A manual rollback's body read: the tag asked for (none: the last known-good) and the reason.
fn rollback_order(
    content_type: Option<&[u8]>,
    bytes: &[u8],
) -> Result<(Option<Tag>, String), ApiError> {
    let body: RollbackBody = parse_order(content_type, bytes)?.unwrap_or_default();
    let tag = body
        .tag
        .as_deref()
        .map(Tag::parse)
        .transpose()
        .map_err(|e| reject(StatusCode::BAD_REQUEST, e.to_string()))?;
    let reason = body
        .reason
        .unwrap_or_else(|| "manual rollback through the API".into());
    Ok((tag, reason))
}

/// A manual rollback: answers with the record once the watcher has validated it, 409 with why
/// when the watcher refused, 202 when it is still running after [`ROLLBACK_WAIT`].
async fn rollback(
    State(state): State<ApiState>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let (id, tx) = target_path(&state, path)?;
    let bytes = read_body(body, ORDER_BODY_LIMIT).await?;
    let (tag, reason) = rollback_order(content_type(&headers), &bytes)?;
    match order_rollback(&id, &tx, tag, reason, ROLLBACK_WAIT).await? {
        RollbackAnswer::Done(record) => Ok(Json(record).into_response()),
        RollbackAnswer::Refused(e) => Err(reject(StatusCode::CONFLICT, e)),
        RollbackAnswer::Running => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "target": id.to_string(), "status": "running", "why": "the rollback is still running; see GET /api/v1/rollbacks" })),
        )
            .into_response()),
    }
}

/// What became of one alert's rollback order.
#[derive(Debug)]
enum AlertOrder {
    /// In the watcher's queue; the episode is claimed.
    Accepted,
    /// This episode already ordered a rollback.
    Duplicate,
    /// The queue is full; nothing claimed, nothing queued.
    Busy,
    Closed,
    Failed(String),
}

/// Claims the episode and queues the order as one step that a client hanging up cannot split:
/// room in the queue is reserved first, so the claim is only made when the order will be
/// queued, and the caller runs this in its own task. An order the watcher drops unanswered
/// (it stopped or panicked) gives the episode back for Alertmanager's next notification.
async fn order_alert_rollback(
    store: Store,
    tx: mpsc::Sender<Command>,
    target: TargetId,
    episode: String,
    reason: String,
) -> AlertOrder {
    let permit = match tx.try_reserve() {
        Ok(p) => p,
        Err(TrySendError::Full(())) => return AlertOrder::Busy,
        Err(TrySendError::Closed(())) => return AlertOrder::Closed,
    };
    match store
        .claim_alert_episode(target.clone(), episode.clone())
        .await
    {
        Ok(true) => {}
        Ok(false) => return AlertOrder::Duplicate,
        Err(e) => return AlertOrder::Failed(e.to_string()),
    }
    let (reply, answer) = oneshot::channel();
    permit.send(Command::Rollback {
        tag: None,
        trigger: Trigger::Alert,
        reason,
        reply,
    });
    tokio::spawn(async move {
        if let Ok(Err(_)) = tokio::time::timeout(ALERT_OUTCOME_WAIT, answer).await {
            tracing::warn!(target_id = %target, %episode, "alert order dropped unanswered; its episode is released for a retry");
            if let Err(e) = store.release_alert_episode(episode).await {
                tracing::error!(error = %e, "cannot release an alert episode");
            }
        }
    });
    AlertOrder::Accepted
}

/// Alertmanager's webhook. Answers fast (Alertmanager times out): rollbacks are queued to the
/// target's watcher, not awaited. 200 with a per-alert account; 503 `busy` with `Retry-After`
/// when a watcher's queue is full (Alertmanager retries; that alert was not claimed);
/// 401/400/404 change nothing.
async fn alertmanager(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    use crate::alertmanager::{parse, plan, AlertAction};
    let bytes = read_body(body, ALERT_BODY_LIMIT).await?;
    check_json_type(content_type(&headers))?;
    let payload = parse(&bytes).map_err(|e| reject(StatusCode::BAD_REQUEST, e))?;
    let now = now_ms();
    let recent: HashMap<TargetId, bool> = state
        .board
        .all()
        .iter()
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
    let mut busy = false;
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
                let Some(tx) = state.commands.get(target) else {
                    return Err(shutting_down());
                };
                let order = tokio::spawn(order_alert_rollback(
                    state.store.clone(),
                    tx.clone(),
                    target.clone(),
                    episode.clone(),
                    reason.clone(),
                ))
                .await
                .unwrap_or_else(|e| AlertOrder::Failed(e.to_string()));
                match order {
                    AlertOrder::Accepted => {
                        json!({ "action": "rollback", "target": target.to_string() })
                    }
                    AlertOrder::Duplicate => {
                        json!({ "action": "duplicate", "target": target.to_string(), "why": "this alert episode already ordered a rollback" })
                    }
                    AlertOrder::Busy => {
                        busy = true;
                        json!({ "action": "busy", "target": target.to_string(), "why": "the watcher's queue is full; not ordered, retry" })
                    }
                    AlertOrder::Closed => return Err(shutting_down()),
                    AlertOrder::Failed(e) => {
                        return Err(reject(StatusCode::INTERNAL_SERVER_ERROR, e))
                    }
                }
            }
        };
        results.push(result);
    }
    if busy {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: json!({ "error": "busy", "group": payload.group_key, "results": results }),
            retry_after: Some(RETRY_AFTER_SECS),
        });
    }
    let status = if unknown > 0 && unknown == actions.len() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({ "group": payload.group_key, "status": payload.status, "results": results })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_digests_match_only_the_same_token() {
        let d = TokenDigest::of("secret");
        assert!(d.matches("secret"));
        assert!(!d.matches("secreT"));
        assert!(!d.matches("secret2"));
        assert!(!d.matches(""));
        assert!(!d.matches(&"s".repeat(10_000)));
    }

    #[test]
    fn every_mutating_method_needs_the_token_reads_only_when_configured() {
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert!(needs_token(&m, "/healthz", false), "{m}");
            assert!(needs_token(&m, "/no/such/path", false), "{m}");
        }
        assert!(!needs_token(&Method::GET, "/api/v1/rollbacks", false));
        assert!(needs_token(&Method::GET, "/api/v1/rollbacks", true));
        assert!(!needs_token(&Method::GET, "/healthz", true));
        assert!(!needs_token(&Method::GET, "/metrics", true));
    }

    #[test]
    fn a_json_body_without_content_type_is_parsed() {
        let b: RollbackBody = parse_order(None, br#"{"tag":"v1.0.0"}"#).unwrap().unwrap();
        assert_eq!(b.tag.as_deref(), Some("v1.0.0"));
        let b: RollbackBody = parse_order(
            Some(b"application/json; charset=utf-8"),
            br#"{"reason":"x"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(b.reason.as_deref(), Some("x"));
        assert!(parse_order::<RollbackBody>(None, b"").unwrap().is_none());
        assert!(parse_order::<RollbackBody>(Some(b"text/plain"), b"  \n")
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_non_json_body_is_refused_naming_the_problem() {
        let e =
            parse_order::<RollbackBody>(Some(b"text/plain"), br#"{"tag":"v1.0.0"}"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("Content-Type \"text/plain\" is not JSON"),
            "{e}"
        );
        let e = parse_order::<RollbackBody>(None, b"tag=v1.0.0").unwrap_err();
        assert!(matches!(e, BodyError::Malformed(_)), "{e}");
        let e = parse_order::<RollbackBody>(None, br#"{"tag":"v1","extra":1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `extra`"), "{e}");
        assert_eq!(ApiError::from(e).status, StatusCode::BAD_REQUEST);
    }

    /// Seen writing the property tests (issue 18), which require refusals to name the field: a
    /// wrongly typed value was refused as "invalid type: integer `1`, expected a string at line
    /// 1 column 42", not naming its field.
    #[test]
    fn a_wrongly_typed_field_is_named() {
        let e = parse_order::<DeployBody>(None, br#"{"env":"staging","role":"backend","tag":1}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "the body is not valid JSON for this order: tag: invalid type: integer `1`"
            ),
            "{e}"
        );
        let e = parse_order::<RollbackBody>(None, br#"{"reason":["x"]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("reason: invalid type: sequence"), "{e}");
    }

    #[test]
    fn oversized_fields_are_refused_with_field_and_limit() {
        let long = |n| "a".repeat(n);
        let body = format!(r#"{{"tag":"{}"}}"#, long(MAX_TAG + 1));
        let e = parse_order::<RollbackBody>(None, body.as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "field tag is 129 bytes long; the limit is 128"
        );
        let body = format!(r#"{{"reason":"{}"}}"#, long(MAX_REASON + 1));
        let e = parse_order::<RollbackBody>(None, body.as_bytes()).unwrap_err();
        assert!(
            e.to_string().starts_with("field reason is 1025 bytes"),
            "{e}"
        );
        let body = format!(
            r#"{{"env":"staging","role":"backend","tag":"v1","pipeline_url":"{}"}}"#,
            long(MAX_URL + 1)
        );
        let e = parse_order::<DeployBody>(None, body.as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "field pipeline_url is 2049 bytes long; the limit is 2048"
        );
        let ok = format!(r#"{{"reason":"{}"}}"#, long(MAX_REASON));
        assert!(parse_order::<RollbackBody>(None, ok.as_bytes()).is_ok());
    }

    #[test]
    fn a_full_queue_is_busy_with_retry_after_and_queues_nothing() {
        let (tx, mut rx) = mpsc::channel(1);
        let id = TargetId {
            env: Env::Staging,
            role: "backend".into(),
        };
        let pause = || Command::Pause {
            done: oneshot::channel().0,
        };
        assert!(enqueue(&id, &tx, pause()).is_ok());
        let e = enqueue(&id, &tx, pause()).unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.body["error"], "busy");
        assert_eq!(e.retry_after, Some(RETRY_AFTER_SECS));
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err(), "the refused order was not queued");
    }

    fn staging() -> TargetId {
        TargetId {
            env: Env::Staging,
            role: "backend".into(),
        }
    }

    async fn order(store: &Store, tx: &mpsc::Sender<Command>, episode: &str) -> AlertOrder {
        order_alert_rollback(
            store.clone(),
            tx.clone(),
            staging(),
            episode.into(),
            "alert".into(),
        )
        .await
    }

    #[tokio::test]
    async fn an_alert_episode_is_claimed_only_with_its_order_queued_and_released_if_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let (tx, mut rx) = mpsc::channel(2);
        for _ in 0..2 {
            let done = oneshot::channel().0;
            tx.try_send(Command::Pause { done }).unwrap();
        }
        // A full queue: nothing claimed, so the retry orders it.
        assert!(matches!(order(&store, &tx, "e1").await, AlertOrder::Busy));
        for _ in 0..2 {
            assert!(matches!(rx.recv().await, Some(Command::Pause { .. })));
        }
        assert!(matches!(
            order(&store, &tx, "e1").await,
            AlertOrder::Accepted
        ));
        assert!(matches!(
            order(&store, &tx, "e1").await,
            AlertOrder::Duplicate
        ));
        // The watcher answers: the episode stays claimed.
        let Some(Command::Rollback { reply, .. }) = rx.recv().await else {
            panic!("no rollback order queued");
        };
        let _ = reply.send(Err("withheld: in cooldown".into()));
        tokio::task::yield_now().await;
        assert!(!store
            .claim_alert_episode(staging(), "e1".into())
            .await
            .unwrap());
        // Dropped unanswered (the watcher stopped with it queued): given back.
        assert!(matches!(
            order(&store, &tx, "e2").await,
            AlertOrder::Accepted
        ));
        drop(rx.recv().await);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if store
                .claim_alert_episode(staging(), "e2".into())
                .await
                .unwrap()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "episode e2 never released"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
