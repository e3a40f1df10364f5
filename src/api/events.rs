//! `POST /v1/events`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::auth::Role;
use super::error::ApiError;
use super::AppState;
use crate::ingest::body::{split_body, TooManyItems};
use crate::ingest::{gunzip_limited, GunzipError};
use crate::pipeline::{write_batch_answer, ItemResult, PipelineError};

/// Reads a request body, refusing more than `limit` bytes (compressed or
/// not) and undoing `Content-Encoding: gzip`.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(ApiError::too_large(limit));
        }
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(ApiError::too_large(limit))
        }
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "the request body could not be read: {e}"
            )))
        }
    };
    match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
    {
        None => Ok(bytes),
        Some(enc) if enc == "identity" => Ok(bytes),
        Some(enc) if enc == "gzip" || enc == "x-gzip" => match gunzip_limited(&bytes, limit) {
            Ok(b) => Ok(Bytes::from(b)),
            Err(GunzipError::TooLarge(_)) => Err(ApiError::too_large(limit)),
            Err(e) => Err(ApiError::bad_request(e.to_string())),
        },
        Some(enc) => Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding {enc:?} is not supported; send gzip or no encoding"),
        )),
    }
}

/// Most items one request may carry: each gets a result in the answer, so
/// a body of millions of tiny lines would make an answer of hundreds of MB.
/// Framing stops at the cap, before the items are all held.
pub const MAX_ITEMS: usize = 100_000;

/// 413 for a body with more than [`MAX_ITEMS`] items.
pub fn too_many(e: TooManyItems) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_events",
        e.to_string(),
    )
}

/// Maps a pipeline failure to 503.
pub fn unavailable(e: PipelineError) -> ApiError {
    ApiError::unavailable(e.to_string())
}

pub(super) async fn post_events(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    app.authorize(&headers, &[Role::Ingest])?;
    let _intake = app
        .intake
        .admit(&headers)
        .await
        .map_err(|busy| ApiError::unavailable(busy.to_string()))?;
    let bytes = read_body(&headers, body, app.max_body_bytes).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the body is empty; send one event, a JSON array of events, or NDJSON (one event per line)",
        ));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let items = split_body(bytes, ct, MAX_ITEMS).map_err(too_many)?;
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "the body holds no events; send at least one event object",
        ));
    }
    let items = linked(items, &headers);
    let results = app.pipeline.ingest(items).await.map_err(unavailable)?;
    Ok(batch_answer(&results))
}

/// Bytes an item's result usually takes in an answer (a receipt with its
/// hashes), to size the buffer once instead of doubling it a dozen times.
const ANSWER_BYTES_PER_ITEM: usize = 640;

/// The JSON answer to a batch, written into a buffer sized for its
/// results.
fn batch_answer(results: &[ItemResult]) -> Response {
    let mut out = Vec::with_capacity(128 + results.len() * ANSWER_BYTES_PER_ITEM);
    write_batch_answer(results, &mut out);
    ([(header::CONTENT_TYPE, "application/json")], out).into_response()
}

/// The items, linked (when tracing) to the request's W3C `traceparent`.
pub(super) fn linked(
    items: Vec<crate::pipeline::Item>,
    headers: &HeaderMap,
) -> Vec<crate::pipeline::Item> {
    let link = crate::telemetry::trace::enabled()
        .then(|| headers.get("traceparent")?.to_str().ok())
        .flatten()
        .and_then(crate::telemetry::trace::TraceContext::from_traceparent);
    match link {
        Some(l) => items.into_iter().map(|i| i.linked(Some(l))).collect(),
        None => items,
    }
}
