//! The API of canary targets: a deploy (what CI calls instead of `up -d`), a person's promote
//! or abort, and the deploys on record. Handlers translate HTTP to the target's canary runner
//! ([`crate::canary::runner`]) and answer with its outcome.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{
    json_or_500, query_target, reject, target_path, ApiError, ApiState, EventQuery, ROLLBACK_WAIT,
};
use crate::canary::flow::Manual;
use crate::canary::handle::{CanaryHandle, DeployOrder, OrderError, Phase};
use crate::target::TargetId;

/// How long a deploy may take to be accepted (its slot site found, Docker and the balancer
/// read) before the API answers that the runner is busy.
const ACCEPT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn order_error(e: OrderError) -> ApiError {
    match e {
        OrderError::Busy | OrderError::Closed => {
            reject(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        OrderError::Deploying => reject(StatusCode::CONFLICT, e.to_string()),
    }
}

/// Runs a canary deploy of `order` on `id` and answers with its record: 200 once it ended
/// (promoted, aborted or failed: the record's `state` says), 202 with its id while it still
/// runs after [`ROLLBACK_WAIT`], 409 when it was refused (nothing changed).
pub(super) async fn deploy(
    id: &TargetId,
    handle: &CanaryHandle,
    order: DeployOrder,
) -> Result<Response, ApiError> {
    if let Phase::Deploying { tag, id: n } = handle.phase() {
        return Err(reject(
            StatusCode::CONFLICT,
            format!("canary deploy #{n} of {tag} is in flight on {id}; wait for it to end, or `rollwatch abort {} {}`", id.env, id.role),
        ));
    }
    let (accepted, done) = handle.deploy(order).map_err(order_error)?;
    let n = match tokio::time::timeout(ACCEPT_WAIT, accepted).await {
        Ok(Ok(Ok(n))) => n,
        Ok(Ok(Err(why))) => return Err(reject(StatusCode::CONFLICT, why)),
        Ok(Err(_)) => return Err(order_error(OrderError::Closed)),
        Err(_) => return Err(order_error(OrderError::Busy)),
    };
    match tokio::time::timeout(ROLLBACK_WAIT, done).await {
        Ok(Ok(record)) => Ok(Json(record).into_response()),
        Ok(Err(_)) => Err(order_error(OrderError::Closed)),
        Err(_) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "target": id.to_string(), "id": n, "status": "running", "why": "the canary deploy is still running; see GET /api/v1/canaries" })),
        )
            .into_response()),
    }
}

async fn manual(
    state: ApiState,
    path: Result<Path<(String, String)>, PathRejection>,
    what: Manual,
) -> Result<Response, ApiError> {
    let (id, _) = target_path(&state, path)?;
    let handle = state.canaries.get(&id).ok_or_else(|| {
        reject(
            StatusCode::CONFLICT,
            format!("{id} is not a canary target (strategy = \"replace\"): there is nothing to promote or abort; use rollback"),
        )
    })?;
    let answer = handle.manual(what).map_err(order_error)?;
    match tokio::time::timeout(ROLLBACK_WAIT, answer).await {
        Ok(Ok(Ok(said))) => {
            Ok(Json(json!({ "target": id.to_string(), "status": said })).into_response())
        }
        Ok(Ok(Err(why))) => Err(reject(StatusCode::CONFLICT, why)),
        Ok(Err(_)) => Err(order_error(OrderError::Closed)),
        Err(_) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "target": id.to_string(), "status": "running" })),
        )
            .into_response()),
    }
}

pub(super) async fn promote(
    State(state): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    manual(state, path, Manual::Promote).await
}

pub(super) async fn abort(
    State(state): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    manual(state, path, Manual::Abort(None)).await
}

/// Canary deploys, newest first, each with its steps, weights and reason.
pub(super) async fn canaries(
    State(state): State<ApiState>,
    q: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (target, q) = query_target(q)?;
    let limit = q.limit.unwrap_or(20).min(500);
    Ok(json_or_500(state.store.canaries(target, limit).await))
}
