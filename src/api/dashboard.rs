//! The SOC dashboard at `GET /`: one page and its script and style,
//! embedded in the binary (no CDN; it works offline). The page holds no
//! data: it signs in (`POST /v1/session`) and reads the API with the
//! session cookie, sending the CSRF header on every POST. `GET /` answers
//! 401 (with the sign-in page) without a session, 403 without role `soc`.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::auth::Role;
use super::AppState;

const INDEX: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");

fn html(status: StatusCode) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
            ),
        ],
        INDEX,
    )
        .into_response()
}

/// `GET /`: the dashboard (200 with role `soc`, else the sign-in page with
/// 401, or 403 when signed in without the role).
pub(super) async fn page(State(app): State<AppState>, headers: HeaderMap) -> Response {
    match super::session::caller(&app, &headers, &[Role::Soc]) {
        Ok(_) => html(StatusCode::OK),
        Err(super::auth::Denied::Forbidden) => html(StatusCode::FORBIDDEN),
        Err(super::auth::Denied::Unauthenticated) => html(StatusCode::UNAUTHORIZED),
    }
}

/// `GET /assets/{name}`: the page's script and style.
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
