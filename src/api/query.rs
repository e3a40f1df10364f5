//! `POST /v1/query` (roles `audit`, `soc`): read-only SQL over the audit
//! store (contract section 5). Every limit it hits is a 400 that says
//! which and how to narrow the query.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::auth::Role;
use super::error::ApiError;
use super::AppState;

/// Longest SQL text accepted.
const MAX_SQL_BYTES: usize = 64 * 1024;

/// `POST /v1/query` with `{"sql": "..."}`.
pub(super) async fn post_query(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    app.authorize(&headers, &[Role::Audit, Role::Soc])?;
    let j: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not JSON ({e}); send {{\"sql\":\"SELECT ...\"}}"
        ))
    })?;
    let Some(sql) = j["sql"].as_str() else {
        return Err(ApiError::bad_request(
            "the body has no \"sql\" string; send {\"sql\":\"SELECT ...\"}",
        ));
    };
    if sql.len() > MAX_SQL_BYTES {
        return Err(ApiError::bad_request(format!(
            "the SQL text is longer than {MAX_SQL_BYTES} bytes"
        )));
    }
    let inventory = app
        .hygiene
        .tables()
        .map_err(|e| ApiError::unavailable(format!("the inventory tables cannot be built: {e}")))?;
    match app
        .audit
        .query(sql.to_string(), app.query_limits, inventory)
        .await
    {
        Ok(answer) => Ok(Json(answer).into_response()),
        Err(e) if e.is_callers() => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            e.code(),
            e.to_string(),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_unreadable",
            e.to_string(),
        )),
    }
}
