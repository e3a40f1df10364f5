//! Agent posture for gateways, an agent's learnt baseline for the SOC,
//! and the admin routes that suspend an agent or end its suspension
//! (contract section 5). Suspending and restoring
//! are `vigil` events in the log, applied by the response stage when it
//! reads them, so the log says who changed what and when.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::auth::Role;
use super::error::ApiError;
use super::AppState;
use crate::respond::evidence;
use crate::respond::posture::Posture;

/// How long an admin route waits for the response stage to apply its
/// change before answering with what the log holds.
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn known(app: &AppState, agent_id: &str) -> Result<(), ApiError> {
    if app.pipeline.keys().current().agent(agent_id).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_agent",
            format!("agent {agent_id:?} has no registered key, so Vigil cannot vouch for it: register its key first"),
        ));
    }
    Ok(())
}

/// `GET /v1/agents/{agent_id}/posture` (roles `posture`, `soc`; `soc`
/// also sees the step-up and the revocations).
pub async fn get_posture(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(agent_id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = app.authorize(&headers, &[Role::Posture, Role::Soc])?;
    let soc = caller
        .roles
        .iter()
        .any(|r| matches!(r, Role::Soc | Role::Admin));
    known(&app, &agent_id)?;
    let posture = app
        .postures
        .get(&agent_id)
        .unwrap_or_else(|| Posture::active(&agent_id, app.postures.started()));
    let shown = if soc { posture } else { posture.for_gateway() };
    Ok(Json(shown).into_response())
}

/// `GET /v1/agents` (roles `admin`, `soc`): every agent with a key in
/// force, its record, its public keys and when it last acted (the latest
/// `occurred_at` of its accepted events).
pub async fn list_agents(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.authorize(&headers, &[Role::Soc])?;
    let set = app.pipeline.keys().current();
    let mut by_agent: std::collections::BTreeMap<&str, Vec<serde_json::Value>> =
        std::collections::BTreeMap::new();
    for k in set
        .keys()
        .filter(|k| k.agent_id != crate::event::PIPELINE_AGENT)
    {
        by_agent.entry(&k.agent_id).or_default().push(k.jwk.clone());
    }
    let agents: Vec<serde_json::Value> = by_agent
        .into_iter()
        .map(|(id, keys)| {
            let record = set.agent(id).cloned().unwrap_or_default();
            let mut a = json!({
                "agent_id": id, "role": record.role, "owner": record.owner,
                "status": record.status.as_str(), "keys": keys,
            });
            if let Some(ms) = app.hygiene.last_seen_ms(id) {
                a["last_seen"] =
                    json!(crate::time::Timestamp(i128::from(ms) * 1_000_000).to_rfc3339_millis());
            }
            a
        })
        .collect();
    Ok(Json(json!({ "agents": agents })).into_response())
}

/// `GET /v1/agents/{agent_id}/baseline` (role `soc`): what detection has
/// learnt of the agent so far, in event time (the dashboard draws its
/// activity against it).
pub async fn get_baseline(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(agent_id): Path<String>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, &[Role::Soc])?;
    known(&app, &agent_id)?;
    let baseline = app
        .detection
        .baseline(&agent_id)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    match baseline {
        Some(b) => Ok(Json(b).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_baseline",
            format!("no accepted event of agent {agent_id:?} has been judged yet, so it has no baseline"),
        )),
    }
}

/// `POST /v1/agents/{agent_id}/restore` (admin): ends a suspension.
pub async fn restore(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(agent_id): Path<String>,
) -> Result<Response, ApiError> {
    change(app, headers, agent_id, evidence::RESTORE).await
}

/// `POST /v1/agents/{agent_id}/suspend` (admin): suspends an agent.
pub async fn suspend(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(agent_id): Path<String>,
) -> Result<Response, ApiError> {
    change(app, headers, agent_id, evidence::SUSPEND).await
}

async fn change(
    app: AppState,
    headers: HeaderMap,
    agent_id: String,
    action: &'static str,
) -> Result<Response, ApiError> {
    let by = app.authorize(&headers, &[Role::Admin])?.name.clone();
    known(&app, &agent_id)?;
    let e = evidence::Evidence {
        event_id: uuid::Uuid::now_v7().to_string(),
        correlation_id: format!("admin:{agent_id}"),
        action,
        agent_id: agent_id.clone(),
        attributes: json!({"agent_id": agent_id, "by": format!("token {by}")}),
    };
    let result = app
        .pipeline
        .append_own(action, e.fields())
        .await
        .map_err(|err| ApiError::unavailable(format!("the change could not be logged: {err}")))?;
    // The stage applies it when its cursor reaches it; wait (briefly) for
    // that, so that the answer shows the new posture.
    let index = result
        .receipt
        .as_ref()
        .and_then(|r| serde_json::from_str::<serde_json::Value>(r.json()).ok())
        .and_then(|r| r["index"].as_u64());
    let deadline = tokio::time::Instant::now() + APPLY_WAIT;
    while index.is_some_and(|i| app.postures.read_through() <= i)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let posture = app.postures.get(&agent_id);
    Ok(Json(json!({
        "agent_id": agent_id,
        "posture": posture,
        "receipt": result.receipt,
    }))
    .into_response())
}
