//! Splunk HEC: `POST /services/collector[/event]`, `GET /services/collector/health`.
//! Errors use HEC's own `{"text", "code"}` form.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::auth::{Denied, Role, Tokens};
use super::events::{read_body, too_many, MAX_ITEMS};
use super::AppState;
use crate::ingest::hec::split_hec;

fn hec(status: StatusCode, text: &str, code: u32) -> Response {
    (status, Json(json!({ "text": text, "code": code }))).into_response()
}

pub(super) async fn post_hec(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match app
        .tokens
        .check(Tokens::presented(&headers, true), &[Role::Ingest])
    {
        Ok(_) => {}
        Err(Denied::Unauthenticated) if Tokens::presented(&headers, true).is_none() => {
            return hec(StatusCode::UNAUTHORIZED, "Token is required", 2)
        }
        Err(Denied::Unauthenticated) => return hec(StatusCode::FORBIDDEN, "Invalid token", 4),
        Err(Denied::Forbidden) => {
            return hec(
                StatusCode::FORBIDDEN,
                "Invalid token: it lacks the ingest role",
                4,
            )
        }
    }
    let Ok(_intake) = app.intake.admit(&headers).await else {
        return hec(
            StatusCode::SERVICE_UNAVAILABLE,
            "Server is busy: too many bodies in flight; retry later",
            9,
        );
    };
    let bytes = match read_body(&headers, body, app.max_body_bytes).await {
        Ok(b) => b,
        Err(e) if e.status == StatusCode::PAYLOAD_TOO_LARGE => {
            return hec(StatusCode::PAYLOAD_TOO_LARGE, &e.message, 27);
        }
        Err(e) => return hec(StatusCode::BAD_REQUEST, &e.message, 6),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return hec(StatusCode::BAD_REQUEST, "No data", 6);
    }
    let batch = match split_hec(&bytes, MAX_ITEMS) {
        Ok(b) => b,
        Err(e) => return hec(StatusCode::PAYLOAD_TOO_LARGE, &too_many(e).message, 27),
    };
    let items = super::events::linked(batch.items, &headers);
    if let Err(e) = app.pipeline.ingest(items).await {
        return hec(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("Server is busy: {e}"),
            9,
        );
    }
    match batch.framing_error {
        None => hec(StatusCode::OK, "Success", 0),
        Some((n, why)) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "text": format!("Invalid data format: {why}"), "code": 6, "invalid-event-number": n })),
        )
            .into_response(),
    }
}

pub(super) async fn health(State(app): State<AppState>) -> Response {
    match app.pipeline.failure() {
        None => hec(StatusCode::OK, "HEC is healthy", 17),
        Some(_) => hec(
            StatusCode::SERVICE_UNAVAILABLE,
            "HEC is unhealthy: the receipt log cannot be written",
            18,
        ),
    }
}
