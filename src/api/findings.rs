//! `GET /v1/findings?agent_id=&kind=` (roles admin, soc, audit): the agent
//! hygiene findings as of now (contract section 6a); and the access
//! certification report built on them.

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

/// `GET /v1/reports/access?from=&to=&owner=` (role audit): the access
/// certification report as JSON (`vigil report access` writes the same,
/// with CSV and HTML).
pub async fn access_report(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, &[Role::Audit])?;
    let (Some(from), Some(to)) = (q.get("from"), q.get("to")) else {
        return Err(ApiError::bad_request(
            "give the period: ?from=YYYY-MM-DDTHH:MM:SSZ&to=...",
        ));
    };
    let scope = crate::audit::report::Scope::new(from, to, q.get("owner").cloned())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut answers = Vec::new();
    for sql in scope.questions() {
        let inventory = app.hygiene.tables().map_err(|e| {
            ApiError::unavailable(format!("the inventory tables cannot be built: {e}"))
        })?;
        let answer = app
            .audit
            .query(sql, app.query_limits, inventory)
            .await
            .map_err(|e| ApiError::unavailable(format!("the report's query failed: {e}")))?;
        answers.push(answer);
    }
    let now = crate::time::Timestamp::now();
    Ok(Json(crate::audit::report::assemble(&scope, &answers, now)).into_response())
}
