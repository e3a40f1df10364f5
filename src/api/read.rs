//! Read-only routes: receipts, checkpoints, proofs, keys, quarantine,
//! metrics and health.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::auth::Role;
use super::error::ApiError;
use super::AppState;
use crate::log::tiles;
use crate::store::quarantine;
use crate::store::view::ViewError;
use crate::telemetry::metrics as all_metrics;

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

pub(super) async fn receipt(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(event_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, &[Role::Audit])?;
    let agent = q.get("agent_id").filter(|a| !a.is_empty()).ok_or_else(|| {
        ApiError::bad_request("agent_id is required: GET /v1/receipts/{event_id}?agent_id=<agent>")
    })?;
    match app.pipeline.receipt(agent, &event_id) {
        Ok(Some(found)) => Ok(Json(found).into_response()),
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no receipt for event {event_id:?} of agent {agent:?}: it has not arrived, or it was quarantined without a receipt (see GET /v1/quarantine)"
            ),
        )),
        Err(e) => Err(ApiError::unavailable(format!("the receipt could not be read from the log: {e}"))),
    }
}

pub(super) async fn checkpoint(State(app): State<AppState>) -> Response {
    text(app.pipeline.checkpoint())
}

pub(super) async fn consistency(
    State(app): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let size = |name: &str| -> Result<u64, ApiError> {
        q.get(name).and_then(|v| v.parse().ok()).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name} is required and must be a checkpointed tree size"
            ))
        })
    };
    let (from, to) = (size("from")?, size("to")?);
    let hashes = app.pipeline.consistency(from, to).map_err(|e| match e {
        ViewError::Refused(why) => ApiError::bad_request(why),
        e => ApiError::unavailable(format!("the proof could not be read from the log: {e}")),
    })?;
    let hashes: Vec<String> = hashes.iter().map(hex::encode).collect();
    Ok(Json(json!({ "from": from, "to": to, "hashes": hashes })).into_response())
}

/// `GET /tile/...`: the log as C2SP tlog-tiles. Full tiles are immutable
/// and cacheable for a year; partial ones are too (a width never changes),
/// but are deleted once their full tile exists.
pub(super) async fn tile(
    State(app): State<AppState>,
    Path(rest): Path<String>,
) -> Result<Response, ApiError> {
    let path = format!("tile/{rest}");
    let id = tiles::parse_path(&path).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{path} is not a tile path (tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>])"),
        )
    })?;
    let view = app.pipeline.view().clone();
    let bytes = tokio::task::spawn_blocking(move || view.tile(&id))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{path} does not exist (yet)"),
            )
        })?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        bytes,
    )
        .into_response())
}

/// `GET /checkpoint`: the latest checkpoint, for tlog-tiles clients.
pub(super) async fn tlog_checkpoint(State(app): State<AppState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        app.pipeline.checkpoint(),
    )
        .into_response()
}

pub(super) async fn log_key(State(app): State<AppState>) -> Response {
    text(app.pipeline.verifier_keys().join("\n") + "\n")
}

pub(super) async fn pipeline_keys(State(app): State<AppState>) -> Response {
    Json(app.pipeline.pipeline_jwks()).into_response()
}

pub(super) async fn quarantine(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, &[Role::Audit])?;
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=10_000).contains(l))
            .ok_or_else(|| ApiError::bad_request("limit must be 1 to 10000"))?,
    };
    let dir = app.pipeline.data_dir().root.join("quarantine");
    let (entries, dropped) = tokio::task::spawn_blocking(move || quarantine::list(&dir, limit))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .map_err(|e| ApiError::unavailable(format!("the quarantine could not be read: {e}")))?;
    Ok(Json(json!({ "entries": entries, "dropped": dropped })).into_response())
}

pub(super) async fn metrics(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.authorize(&headers, &[Role::Metrics])?;
    Ok(metrics_open().await)
}

pub(super) async fn metrics_open() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        all_metrics().render(),
    )
        .into_response()
}

pub(super) async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

pub(super) async fn readyz(State(app): State<AppState>) -> Response {
    if app
        .kafka_assigned
        .as_ref()
        .is_some_and(|a| !a.load(std::sync::atomic::Ordering::Relaxed))
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "waiting", "message": "no Kafka partitions are assigned yet", "log_size": app.pipeline.size() })),
        )
            .into_response();
    }
    match app.pipeline.failure() {
        None => Json(json!({
            "status": "ready",
            "log_size": app.pipeline.size(),
            "checkpoint_age_s": crate::telemetry::metrics().checkpoint_age_seconds(),
        }))
        .into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "failed", "message": why })),
        )
            .into_response(),
    }
}

/// The API's OpenAPI 3.1 description (`schemas/openapi.json`), as built in.
pub(super) async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../schemas/openapi.json"),
    )
        .into_response()
}

pub(super) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see the README for the API",
    )
}
