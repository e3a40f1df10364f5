//! `GET /v1/findings?agent_id=&kind=` (roles admin, soc, audit): the agent
//! hygiene findings as of now (contract section 6a).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::auth::Role;
use super::error::ApiError;
use super::AppState;

/// The kinds a finding may have.
const KINDS: [&str; 7] = [
    "stale_key",
    "key_without_expiry",
    "zombie_agent",
    "ownerless_agent",
    "static_credentials",
    "unused_privilege",
    "unattested_agent",
];

/// Lists the findings, filtered by agent and kind.
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, &[Role::Soc, Role::Audit])?;
    if let Some(k) = q.get("kind").filter(|k| !KINDS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "kind {k:?} is not a finding kind; use one of {}",
            KINDS.join(", ")
        )));
    }
    let (mut findings, _) = app.hygiene.findings();
    findings.retain(|f| {
        q.get("agent_id").is_none_or(|a| *a == f.agent_id)
            && q.get("kind").is_none_or(|k| k == f.kind)
    });
    Ok(Json(json!({ "findings": findings })).into_response())
}
