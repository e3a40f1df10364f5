//! The contract's JSON errors: `{"error": "<code>", "message": "<sentence>"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Short machine-readable code.
    pub code: &'static str,
    /// A sentence a person can act on.
    pub message: String,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401.
    pub fn unauthenticated() -> ApiError {
        crate::telemetry::metrics()
            .http_unauthorized_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid bearer token is required: send Authorization: Bearer <token> (see admin.token in the data directory when no tokens are configured)",
        )
    }

    /// 403 naming the roles the route needs.
    pub fn forbidden(roles: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this token lacks the role this route needs ({roles}); use a token that has it"
            ),
        )
    }

    /// 413 with the limit.
    pub fn too_large(limit: usize) -> ApiError {
        crate::telemetry::metrics()
            .http_body_too_large_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than max_body_bytes ({limit} bytes); split it into smaller batches"),
        )
    }

    /// 503 with a reason.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, code = self.code, message = %self.message, "Request failed");
        }
        (
            self.status,
            Json(serde_json::json!({ "error": self.code, "message": self.message })),
        )
            .into_response()
    }
}

/// Gives every error answer the contract's JSON form: extractor
/// rejections (a path that is not UTF-8, a body over `max_body`) and empty
/// error answers come out of axum as plain text or nothing.
pub async fn json_errors(
    axum::extract::State(max_body): axum::extract::State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    // Plain text or nothing is axum's; JSON, HTML (the dashboard's
    // sign-in page) and the rest are answers of ours.
    let plain = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.starts_with("text/plain"));
    if status.as_u16() < 400 || !plain {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let or_reason = |text: String| {
        if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_string()
        } else {
            text
        }
    };
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "too_large",
            format!("the body is larger than max_body_bytes ({max_body} bytes); send less"),
        ),
        StatusCode::NOT_FOUND => ("not_found", "nothing is at this path".to_string()),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this path does not take this method; see GET /v1/openapi.json".to_string(),
        ),
        s if s.is_client_error() => ("bad_request", or_reason(text)),
        _ => ("internal", or_reason(text)),
    };
    let mut out = ApiError::new(status, code, message).into_response();
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(name, value.clone());
        }
    }
    out
}
