//! Browser sessions for the SOC dashboard (contract section 5, `GET /`):
//! a person signs in with a token once (`POST /v1/session`), the browser
//! keeps an HttpOnly, SameSite=Strict cookie, and every request that
//! changes something carries the session's CSRF token in `X-CSRF-Token`.
//! Sessions live in memory (a restart signs everyone out) for
//! [`SESSION_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::auth::{Role, TokenEntry, Tokens};
use super::error::ApiError;
use super::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "vigil_session";
/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept (the oldest go first).
const MAX_SESSIONS: usize = 10_000;

struct Session {
    caller: TokenEntry,
    csrf: String,
    expires: Instant,
}

/// Every signed-in browser, by the SHA-256 of its cookie.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<[u8; 32], Session>>);

fn random_hex() -> String {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).expect("the system has randomness");
    crate::hexenc::encode(b)
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session for `caller`; returns the cookie value and the CSRF token.
    fn open(&self, caller: TokenEntry) -> (String, String) {
        let (id, csrf) = (random_hex(), random_hex());
        let mut map = self.lock();
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        let session = Session {
            caller,
            csrf: csrf.clone(),
            expires: now + SESSION_TTL,
        };
        map.insert(crate::event::sha256(id.as_bytes()), session);
        (id, csrf)
    }

    /// The caller and CSRF token of the session the request's cookie names.
    pub fn find(&self, headers: &HeaderMap) -> Option<(TokenEntry, String)> {
        let id = cookie(headers)?;
        let map = self.lock();
        let s = map.get(&crate::event::sha256(id.as_bytes()))?;
        (s.expires > Instant::now()).then(|| (s.caller.clone(), s.csrf.clone()))
    }

    fn close(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers) {
            self.lock().remove(&crate::event::sha256(id.as_bytes()));
        }
    }
}

/// The session cookie's value, if the request carries one.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

fn set_cookie(value: &str, max_age: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    ))
    .expect("a cookie of hex digits is a header value")
}

/// Refuses a request that changes something with a session cookie but
/// without the session's CSRF token (requests with a bearer token are not
/// affected: browsers do not add those by themselves).
pub async fn csrf(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    // Only a request that authenticates with a bearer token skips the
    // check: any other Authorization header falls back to the cookie.
    let bearer = Tokens::presented(req.headers(), false).is_some();
    let login = req.uri().path() == "/v1/session" && req.method() == Method::POST;
    if !safe && !bearer && !login {
        if let Some((_, want)) = app.sessions.find(req.headers()) {
            let got = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            let ok = got.is_some_and(|g| {
                bool::from(subtle::ConstantTimeEq::ct_eq(g.as_bytes(), want.as_bytes()))
            });
            if !ok {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    format!("a request with the session cookie must carry the session's {CSRF_HEADER} header (GET /v1/session gives it)"),
                )
                .into_response();
            }
        }
    }
    next.run(req).await
}

fn about(caller: &TokenEntry, csrf: &str) -> serde_json::Value {
    let roles: Vec<String> = caller
        .roles
        .iter()
        .map(|r| format!("{r:?}").to_lowercase())
        .collect();
    json!({ "name": caller.name, "roles": roles, "csrf": csrf })
}

/// `POST /v1/session` with `{"token": "..."}`: signs a browser in. The
/// body must be sent as `application/json`, which an HTML form on another
/// site cannot do (no login CSRF).
pub async fn sign_in(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "send the token as Content-Type: application/json",
        ));
    }
    let j: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not JSON ({e}); send {{\"token\":\"...\"}}"
        ))
    })?;
    let token = j["token"].as_str().map(str::trim).filter(|t| !t.is_empty());
    let all = [
        Role::Ingest,
        Role::Audit,
        Role::Soc,
        Role::Posture,
        Role::Metrics,
        Role::Admin,
    ];
    let caller = app
        .tokens
        .check(token, &all)
        .map_err(|_| ApiError::unauthenticated())?;
    let (id, csrf) = app.sessions.open(caller.clone());
    let mut r = Json(about(&caller, &csrf)).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&id, SESSION_TTL.as_secs()));
    Ok(r)
}

/// `GET /v1/session`: who is signed in, and the CSRF token (401 if nobody).
pub async fn current(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (caller, csrf) = app
        .sessions
        .find(&headers)
        .ok_or_else(ApiError::unauthenticated)?;
    Ok(Json(about(&caller, &csrf)).into_response())
}

/// `DELETE /v1/session`: signs out.
pub async fn sign_out(State(app): State<AppState>, headers: HeaderMap) -> Response {
    app.sessions.close(&headers);
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie("", 0));
    r
}

/// The caller a request names: its bearer token, else its session.
pub fn caller(
    app: &AppState,
    headers: &HeaderMap,
    roles: &[Role],
) -> Result<TokenEntry, super::auth::Denied> {
    let bearer = Tokens::presented(headers, false);
    if bearer.is_none() {
        if let Some((caller, _)) = app.sessions.find(headers) {
            let granted = caller.roles.contains(&Role::Admin)
                || caller.roles.iter().any(|r| roles.contains(r));
            return if granted {
                Ok(caller)
            } else {
                Err(super::auth::Denied::Forbidden)
            };
        }
    }
    app.tokens.check(bearer, roles)
}
