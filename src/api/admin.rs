//! The admin routes that change agents and keys (contract sections 5 and
//! 6a): register or update an agent, add a key, revoke a key, decommission
//! an agent, record an owner's attestation.
//!
//! Keys and records set here live in one more JWKS document,
//! `DIR/admin-keys.jwks.json`, written durably and then reloaded like any
//! JWKS source: every change it brings is logged as a `vigil.key.*` event
//! before it is in force, so the key history stays in the log. A revoke of
//! a key from an operator's JWKS file adds the same key with `revoked_at`
//! to this document (merging takes the most restrictive validity); a
//! record set here (role, owner, status) is carried by an entry for each
//! of the agent's keys and overrides the operator's files.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value as J};

use super::auth::Role;
use super::error::ApiError;
use super::AppState;
use crate::keys::KeySet;
use crate::store::fsutil::write_file_durably;
use crate::store::layout::Layout;
use crate::time::Timestamp;

/// One edit of the admin document at a time.
static EDITING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The record members a key carries.
const RECORD: [&str; 3] = ["role", "owner", "status"];

fn body_json(body: &Bytes, example: &str) -> Result<J, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_slice(body) {
        Ok(j @ J::Object(_)) => Ok(j),
        Ok(_) => Err(ApiError::bad_request(format!(
            "the body is not a JSON object; send {example}"
        ))),
        Err(e) => Err(ApiError::bad_request(format!(
            "the body is not JSON ({e}); send {example}"
        ))),
    }
}

/// Checks the ids a route names (`agent_id`, `kid`): 400 with why.
fn check_ids(ids: &[(&str, &str)]) -> Result<(), ApiError> {
    for (name, id) in ids {
        crate::event::schema::check_id(name, id)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if *name == "agent_id" && *id == crate::event::PIPELINE_AGENT {
            return Err(ApiError::bad_request("agent vigil is the pipeline's own"));
        }
    }
    Ok(())
}

/// Checks a registration's body (the whole record, as PUT replaces it):
/// `role` and `owner` non-empty strings, `purpose` a string, `actions` an
/// array of strings.
fn registration(b: &J) -> Result<(), ApiError> {
    let example = r#"{"role":"hr-assistant","owner":"owner@example.com","purpose":"...","actions":["hr.read"]}"#;
    for m in ["role", "owner"] {
        if b[m].as_str().is_none_or(|s| s.trim().is_empty()) {
            return Err(ApiError::bad_request(format!(
                "{m} is required and must be a non-empty string: send {example}"
            )));
        }
    }
    if !(b["purpose"].is_null() || b["purpose"].is_string()) {
        return Err(ApiError::bad_request(format!(
            "purpose must be a string: send {example}"
        )));
    }
    let actions_ok = match &b["actions"] {
        J::Null => true,
        J::Array(a) => a.iter().all(J::is_string),
        _ => false,
    };
    if !actions_ok {
        return Err(ApiError::bad_request(format!(
            "actions must be an array of strings: send {example}"
        )));
    }
    Ok(())
}

fn unknown_agent(agent: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_agent",
        format!("agent {agent:?} has no key; add one with POST /v1/agents/{{agent_id}}/keys"),
    )
}

fn conflict(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "conflict", message)
}

/// Sets `agent`'s record in the admin document: on its pending
/// registration, and on an entry for every key it has (from any source:
/// the admin document's records override the operator's files).
fn set_record(doc: &mut J, set: &KeySet, agent: &str, record: &J) {
    doc["agents"][agent] = record.clone();
    let keys = doc["keys"].as_array_mut().expect("the document has keys");
    for k in set.keys().filter(|k| k.agent_id == agent) {
        keys.retain(|e| !(e["agent_id"] == agent && e["kid"] == k.kid.as_str()));
        keys.push(with_record(k.jwk.clone(), record));
    }
    for e in keys.iter_mut().filter(|e| e["agent_id"] == agent) {
        *e = with_record(e.clone(), record);
    }
}

/// Edits the admin document with `change`, writes it durably, reloads the
/// keys (logging their changes) and checks `took` of the set in force; a
/// change the reload refused is undone and answered 409 with why.
async fn edit(
    app: &AppState,
    change: impl FnOnce(&mut J, &KeySet) -> Result<(), ApiError>,
    took: impl Fn(&KeySet) -> bool,
) -> Result<(), ApiError> {
    let _one = EDITING.lock().await;
    let path = Layout::new(&app.pipeline.data_dir().root).admin_keys();
    let before = std::fs::read(&path).ok();
    let mut doc: J = before
        .as_deref()
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_else(|| json!({"keys": [], "agents": {}}));
    change(&mut doc, &app.pipeline.keys().current())?;
    let write = |bytes: Vec<u8>| {
        write_file_durably(&path, &bytes, 0o644)
            .map_err(|e| ApiError::unavailable(format!("cannot write {}: {e}", path.display())))
    };
    write(serde_json::to_vec_pretty(&doc).expect("JSON serialises"))?;
    let notes = app.pipeline.reload_keys().await;
    if took(&app.pipeline.keys().current()) {
        return Ok(());
    }
    write(before.unwrap_or_else(|| br#"{"keys": [], "agents": {}}"#.to_vec()))?;
    app.pipeline.reload_keys().await;
    let why: Vec<String> = notes
        .into_iter()
        .map(|n| match n {
            crate::keys::registry::ReloadNote::Info(s)
            | crate::keys::registry::ReloadNote::Warning(s) => s,
        })
        .collect();
    Err(conflict(format!(
        "the change was not taken: {}",
        why.join("; ")
    )))
}

/// The agent's record as the admin document or the key set holds it.
fn record_of(doc: &J, set: &KeySet, agent: &str) -> J {
    if let Some(r) = set.agent(agent) {
        return json!({"role": r.role, "owner": r.owner, "status": r.status.as_str()});
    }
    doc["agents"]
        .get(agent)
        .cloned()
        .unwrap_or_else(|| json!({}))
}

fn with_record(mut jwk: J, record: &J) -> J {
    for m in RECORD {
        match record.get(m).filter(|v| !v.is_null()) {
            Some(v) => jwk[m] = v.clone(),
            None => {
                jwk.as_object_mut().map(|o| o.remove(m));
            }
        }
    }
    jwk
}

/// The agent as it now stands.
fn answer(app: &AppState, agent: &str) -> Response {
    let set = app.pipeline.keys().current();
    let keys: Vec<J> = set
        .keys()
        .filter(|k| k.agent_id == agent)
        .map(|k| k.jwk.clone())
        .collect();
    let path = Layout::new(&app.pipeline.data_dir().root).admin_keys();
    let doc: J = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(J::Null);
    Json(json!({"agent_id": agent, "record": record_of(&doc, &set, agent), "keys": keys}))
        .into_response()
}

/// `PUT /v1/agents/{agent_id}` `{"role","owner","purpose"?,"actions"?}`.
pub async fn put_agent(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(agent): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let by = app.authorize(&headers, &[Role::Admin])?.name.clone();
    check_ids(&[("agent_id", &agent)])?;
    let b = body_json(&body, r#"{"role":"...","owner":"..."}"#)?;
    registration(&b)?;
    let record = json!({"role": b["role"], "owner": b["owner"], "status": "active"});
    let want = record.clone();
    let id = agent.clone();
    edit(
        &app,
        |doc, set| {
            set_record(doc, set, &id, &want);
            Ok(())
        },
        |set| {
            set.agent(&agent)
                .is_none_or(|r| r.owner.as_deref() == record["owner"].as_str())
        },
    )
    .await?;
    let attributes = json!({"agent_id": agent, "role": b["role"], "owner": b["owner"],
        "purpose": b["purpose"], "actions": b["actions"], "by": format!("token {by}")});
    log_admin(&app, crate::hygiene::REGISTERED, &agent, attributes).await?;
    Ok(answer(&app, &agent))
}

/// `POST /v1/agents/{agent_id}/keys` with a public JWK.
pub async fn add_key(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(agent): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    app.authorize(&headers, &[Role::Admin])?;
    let example = r#"{"kid":"...","x":"<base64url Ed25519 public key>","exp":1767225600}"#;
    let b = body_json(&body, example)?;
    let (Some(kid), Some(x)) = (b["kid"].as_str(), b["x"].as_str()) else {
        return Err(ApiError::bad_request(format!(
            "the key needs kid and x: send {example}"
        )));
    };
    check_ids(&[("agent_id", &agent), ("kid", kid)])?;
    if let Some(k) = app.pipeline.keys().current().key(&agent, kid) {
        if k.jwk["x"] != x {
            return Err(conflict(format!(
                "key {kid:?} of agent {agent:?} exists with another public key: a kid names one key for good; give the new key a new kid"
            )));
        }
    }
    let mut jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x, "agent_id": agent});
    for m in ["nbf", "exp"] {
        if !b[m].is_null() {
            jwk[m] = b[m].clone();
        }
    }
    crate::keys::jwks::parse_key(&jwk)
        .map_err(|why| ApiError::bad_request(format!("the key is refused: {why}")))?;
    let (a, k) = (agent.clone(), kid.to_string());
    edit(
        &app,
        |doc, set| {
            let entry = with_record(jwk, &record_of(doc, set, &a));
            let keys = doc["keys"].as_array_mut().expect("the document has keys");
            keys.retain(|e| !(e["agent_id"] == a.as_str() && e["kid"] == k.as_str()));
            keys.push(entry);
            Ok(())
        },
        |set| set.key(&agent, kid).is_some(),
    )
    .await?;
    Ok(answer(&app, &agent))
}

/// `POST /v1/agents/{agent_id}/keys/{kid}/revoke` `{"revoked_at"?}`.
pub async fn revoke_key(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((agent, kid)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    app.authorize(&headers, &[Role::Admin])?;
    let b = body_json(&body, r#"{"revoked_at":1767225600}"#)?;
    let at = match &b["revoked_at"] {
        J::Null => Timestamp::now().secs(),
        v => v
            .as_f64()
            .filter(|f| (0.0..=253_402_300_799.0).contains(f))
            .map(|f| f as i64)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "revoked_at must be a NumericDate (seconds since 1970, at most year 9999)",
                )
            })?,
    };
    let Some(key) = app.pipeline.keys().current().key(&agent, &kid).cloned() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_key",
            format!("agent {agent:?} has no key {kid:?}"),
        ));
    };
    let (a, k) = (agent.clone(), kid.clone());
    edit(
        &app,
        |doc, set| {
            let mut entry = with_record(key.jwk.clone(), &record_of(doc, set, &a));
            entry["revoked_at"] = json!(at);
            let keys = doc["keys"].as_array_mut().expect("the document has keys");
            keys.retain(|e| !(e["agent_id"] == a.as_str() && e["kid"] == k.as_str()));
            keys.push(entry);
            Ok(())
        },
        |set| {
            set.key(&agent, &kid)
                .is_some_and(|k| k.revoked_at.is_some())
        },
    )
    .await?;
    Ok(answer(&app, &agent))
}

/// `POST /v1/agents/{agent_id}/decommission`: the leaver step.
pub async fn decommission(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(agent): Path<String>,
) -> Result<Response, ApiError> {
    app.authorize(&headers, &[Role::Admin])?;
    check_ids(&[("agent_id", &agent)])?;
    if app.pipeline.keys().current().agent(&agent).is_none() {
        return Err(unknown_agent(&agent));
    }
    let id = agent.clone();
    edit(
        &app,
        |doc, set| {
            let mut record = record_of(doc, set, &id);
            record["status"] = json!("decommissioned");
            set_record(doc, set, &id, &record);
            Ok(())
        },
        |set| {
            set.agent(&agent)
                .is_none_or(|r| r.status == crate::keys::AgentStatus::Decommissioned)
        },
    )
    .await?;
    Ok(answer(&app, &agent))
}

/// `POST /v1/agents/{agent_id}/attest` `{"needed": true/false, "by"}`.
pub async fn attest(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(agent): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token = app.authorize(&headers, &[Role::Admin])?.name.clone();
    let b = body_json(&body, r#"{"needed":true,"by":"owner@example.com"}"#)?;
    let (Some(needed), Some(by)) = (b["needed"].as_bool(), b["by"].as_str()) else {
        return Err(ApiError::bad_request(
            r#"send {"needed":true|false,"by":"who attests"}"#,
        ));
    };
    if app.pipeline.keys().current().agent(&agent).is_none() {
        return Err(unknown_agent(&agent));
    }
    let attributes = json!({"agent_id": agent, "needed": needed, "by": by, "recorded_by": format!("token {token}")});
    let receipt = log_admin(&app, crate::hygiene::ATTESTED, &agent, attributes).await?;
    Ok(
        Json(json!({"agent_id": agent, "needed": needed, "by": by, "receipt": receipt}))
            .into_response(),
    )
}

/// Logs an admin event of agent `vigil` about `agent` (the same shape as
/// the response stage's evidence); returns its receipt.
async fn log_admin(
    app: &AppState,
    action: &'static str,
    agent: &str,
    attributes: J,
) -> Result<J, ApiError> {
    let e = crate::respond::evidence::Evidence {
        event_id: uuid::Uuid::now_v7().to_string(),
        correlation_id: format!("admin:{agent}"),
        action,
        agent_id: agent.to_string(),
        attributes,
    };
    let result = app
        .pipeline
        .append_own(action, e.fields())
        .await
        .map_err(|e| ApiError::unavailable(format!("the change could not be logged: {e}")))?;
    Ok(result
        .receipt
        .as_ref()
        .and_then(|r| serde_json::from_str(r.json()).ok())
        .unwrap_or(J::Null))
}
