//! The anomaly routes (contract section 5): the list, the live stream as
//! Server-Sent Events (resumable with `Last-Event-ID`), and analysts'
//! feedback, which is receipted in the log before it is applied.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::json;

use super::auth::Role;
use super::error::ApiError;
use super::AppState;
use crate::detect::board::{Filter, Version};
use crate::detect::stage::FEEDBACK_ACTION;
use crate::json::Value;

/// Most anomalies one list returns.
const MAX_LIMIT: usize = 10_000;

fn filter(q: &HashMap<String, String>) -> Result<Filter, ApiError> {
    let limit = match q.get("limit") {
        None => 100,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}"
                ))
            })?,
    };
    let min_score = match q.get("min_score") {
        None => 0,
        Some(v) => v.parse::<u8>().ok().filter(|s| *s <= 100).ok_or_else(|| {
            ApiError::bad_request("min_score must be a whole number from 0 to 100")
        })?,
    };
    let since = match q.get("since") {
        None => None,
        Some(s) => {
            let t = crate::time::Timestamp::parse_event_time(s).ok_or_else(|| {
                ApiError::bad_request("since must be a UTC time like 2026-11-30T09:00:00Z")
            })?;
            Some(t.to_rfc3339_millis())
        }
    };
    Ok(Filter {
        agent_id: q.get("agent_id").cloned(),
        since,
        min_score,
        limit,
    })
}

/// `GET /v1/anomalies`: the latest version of each, newest first.
pub(super) async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, &[Role::Soc])?;
    let f = filter(&q)?;
    let anomalies = app.detection.board().list(&f);
    if ocsf(&q)? {
        let findings: Vec<_> = anomalies
            .iter()
            .map(crate::ocsf::detection_finding)
            .collect();
        return Ok(Json(json!({ "anomalies": findings })).into_response());
    }
    Ok(Json(json!({ "anomalies": anomalies })).into_response())
}

/// Whether `format=ocsf` asks for OCSF Detection Findings (the default
/// is the contract's anomaly objects, `format=vigil`).
fn ocsf(q: &HashMap<String, String>) -> Result<bool, ApiError> {
    match q.get("format").map(String::as_str) {
        None | Some("vigil") => Ok(false),
        Some("ocsf") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "format {other:?} is not known; use format=ocsf (OCSF 1.3.0 Detection Finding) or leave it out"
        ))),
    }
}

fn sse_event(v: &Version, ocsf: bool) -> Result<SseEvent, Infallible> {
    let data = if ocsf {
        crate::ocsf::detection_finding(&v.anomaly).to_string()
    } else {
        serde_json::to_string(&v.anomaly).expect("an anomaly serialises")
    };
    Ok(SseEvent::default()
        .id(v.seq.to_string())
        .event("anomaly")
        .data(data))
}

/// `GET /v1/anomalies/stream`: every version after `Last-Event-ID` still
/// kept (none without it), then live ones.
pub(super) async fn stream(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    app.authorize(&headers, &[Role::Soc])?;
    let ocsf = ocsf(&q)?;
    // Without Last-Event-ID the stream starts with what comes next; with
    // it, with the versions after that one that the board still keeps.
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    let (past, rx) = app.detection.board().follow(after);
    let last_past = past.last().map_or(0, |v| v.seq);
    // A reader that falls behind (broadcast lag) or outlives the board
    // gets the end of the stream; it reconnects with its Last-Event-ID and
    // gets the missed versions from the board.
    let live = stream::unfold(rx, |mut rx| async move {
        let v = rx.recv().await.ok()?;
        Some((v, rx))
    })
    .filter(move |v| std::future::ready(v.seq > last_past));
    let events = stream::iter(past)
        .chain(live)
        .map(move |v| sse_event(&v, ocsf));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// `POST /v1/anomalies/{id}/feedback`: receipts the verdict as an event of
/// agent `vigil`; detection applies it when it reaches it in the log.
pub(super) async fn feedback(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    app.authorize(&headers, &[Role::Soc])?;
    let j: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not JSON ({e}); send {{\"verdict\":\"false_positive\"|\"confirmed\",\"note\":\"...\"}}"
        ))
    })?;
    let verdict = j["verdict"].as_str().unwrap_or("");
    if !matches!(verdict, "false_positive" | "confirmed") {
        return Err(ApiError::bad_request(
            "verdict must be \"false_positive\" or \"confirmed\"",
        ));
    }
    let note = j["note"].as_str().unwrap_or("");
    if note.len() > 4096 {
        return Err(ApiError::bad_request("note is at most 4096 bytes"));
    }
    let Some(agent) = app.detection.board().get(&id).map(|a| a.agent_id.clone()) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no anomaly {id:?}: list them with GET /v1/anomalies"),
        ));
    };
    let attributes = Value::Object(vec![
        ("anomaly_id".into(), Value::String(id.clone())),
        ("verdict".into(), Value::String(verdict.into())),
        ("note".into(), Value::String(note.into())),
    ]);
    let fields = vec![
        (
            "resource".to_string(),
            Value::String(format!("agent:{agent}")),
        ),
        ("attributes".into(), attributes),
    ];
    let result = app
        .pipeline
        .append_own(FEEDBACK_ACTION, fields)
        .await
        .map_err(|e| ApiError::unavailable(format!("the feedback could not be logged: {e}")))?;
    Ok(Json(json!({
        "anomaly_id": id,
        "verdict": verdict,
        "receipt": result.receipt,
    }))
    .into_response())
}
