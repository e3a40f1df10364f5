//! The response's work that waits on others: a CIBA step-up (request,
//! then poll until answered) and lease revocations. Each looks in the log
//! first, so a worker started again after a restart picks up where the
//! log says the last one stopped, and records each answer as evidence.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value as J};

use super::ciba::{Ciba, CibaError, Polled, SLOW_DOWN_STEP};
use super::evidence::{self, Evidence};
use super::fold::{RevokeOrder, StepUpRequest};
use super::vault::Vault;
use crate::event::PIPELINE_AGENT;
use crate::pipeline::Pipeline;
use crate::shutdown::Stop;

/// Attempts at a request the provider or Vault did not answer.
const ATTEMPTS: u32 = 6;
/// First wait between attempts (doubling).
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between polls after errors.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long past `expires_in` polling goes on (the provider's clock).
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// Why recording evidence failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The pipeline refused or failed.
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    /// The event was answered without a receipt.
    #[error("the evidence event {0} got no receipt")]
    NoReceipt(String),
}

/// Whether the log already holds the pipeline's event `event_id`.
pub fn in_log(pipeline: &Pipeline, event_id: &str) -> bool {
    matches!(
        pipeline.view().find_receipt(PIPELINE_AGENT, event_id),
        Ok(Some(_))
    )
}

/// Records evidence unless the log already holds it.
pub async fn record(pipeline: &Pipeline, e: &Evidence) -> Result<(), RecordError> {
    if in_log(pipeline, &e.event_id) {
        return Ok(());
    }
    let result = pipeline.append_own(e.action, e.fields()).await?;
    result
        .receipt
        .ok_or_else(|| RecordError::NoReceipt(e.event_id.clone()))?;
    let outcome = ["outcome", "status", "result", "action"]
        .iter()
        .find_map(|k| e.attributes.get(k).and_then(serde_json::Value::as_str))
        .unwrap_or("recorded");
    let action = e.action.strip_prefix("vigil.").unwrap_or(e.action);
    crate::telemetry::metrics()
        .responses
        .inc(&[action, outcome]);
    Ok(())
}

/// Records, retrying while the pipeline is busy; logs what it cannot.
async fn record_or_log(pipeline: &Pipeline, e: &Evidence) {
    for attempt in 1..=ATTEMPTS {
        match record(pipeline, e).await {
            Ok(()) => return,
            Err(err) => {
                tracing::error!(event = %e.event_id, attempt, "Cannot record the response's evidence: {err}");
                tokio::time::sleep(FIRST_BACKOFF * 2u32.pow(attempt - 1)).await;
            }
        }
    }
}

fn failed(what: &str, e: &dyn std::fmt::Display) {
    crate::telemetry::metrics()
        .response_failures_total
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!("{what}: {e}");
}

/// The `auth_req_id` and `expires_in` of a request the log shows was sent.
fn logged_request(pipeline: &Pipeline, anomaly_id: &str) -> Option<(String, u64)> {
    let id = evidence::step_up_requested_id(anomaly_id);
    let rec = pipeline.view().find_receipt(PIPELINE_AGENT, &id).ok()??;
    let v: J = serde_json::from_slice(&rec.event).ok()?;
    let a = &v["attributes"];
    Some((
        a["auth_req_id"].as_str()?.to_string(),
        a["expires_in"].as_u64()?,
    ))
}

/// Asks for a step-up (unless the log shows it was asked), polls until
/// it is answered, and records the outcome. Stops with `stop`.
pub async fn step_up(pipeline: Arc<Pipeline>, ciba: Arc<Ciba>, r: StepUpRequest, mut stop: Stop) {
    tokio::select! {
        _ = stop.stopped() => {}
        _ = step_up_until_answered(&pipeline, &ciba, &r) => {}
    }
}

async fn step_up_until_answered(pipeline: &Pipeline, ciba: &Ciba, r: &StepUpRequest) {
    if in_log(pipeline, &evidence::step_up_result_id(&r.anomaly_id)) {
        return;
    }
    let (auth_req_id, expires_in, interval) = match logged_request(pipeline, &r.anomaly_id) {
        Some((id, exp)) => (id, exp, super::ciba::DEFAULT_INTERVAL),
        None => match ask(pipeline, ciba, r).await {
            Ok(s) => (s.auth_req_id, s.expires_in, s.interval),
            Err(e) => {
                outcome(pipeline, r, "failed", Some(e.to_string())).await;
                return;
            }
        },
    };
    let deadline = Instant::now() + Duration::from_secs(expires_in) + EXPIRY_MARGIN;
    let (result, detail) = poll(ciba, &auth_req_id, interval, deadline).await;
    outcome(pipeline, r, result, detail).await;
}

/// Sends the request (retrying transport errors) and records it.
async fn ask(
    pipeline: &Pipeline,
    ciba: &Ciba,
    r: &StepUpRequest,
) -> Result<super::ciba::Started, CibaError> {
    let mut attempt = 1;
    let started = loop {
        match ciba.request(r).await {
            Ok(s) => break s,
            Err(e @ CibaError::Refused { .. }) => {
                failed("The OpenID provider refused the step-up request", &e);
                return Err(e);
            }
            Err(e) if attempt >= ATTEMPTS => {
                failed("The OpenID provider cannot be reached", &e);
                return Err(e);
            }
            Err(e) => {
                failed("The step-up request failed; retrying", &e);
                tokio::time::sleep(FIRST_BACKOFF * 2u32.pow(attempt - 1)).await;
                attempt += 1;
            }
        }
    };
    crate::telemetry::metrics()
        .step_ups_requested_total
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let e = Evidence {
        event_id: evidence::step_up_requested_id(&r.anomaly_id),
        correlation_id: r.correlation_id.clone(),
        action: evidence::STEP_UP_REQUESTED,
        agent_id: r.agent_id.clone(),
        attributes: json!({
            "anomaly_id": r.anomaly_id, "agent_id": r.agent_id, "principal": r.principal,
            "auth_req_id": started.auth_req_id, "expires_in": started.expires_in,
            "interval_s": started.interval.as_secs(),
            "binding_message": r.binding_message,
            "authorization_details": r.authorization_details,
        }),
    };
    record_or_log(pipeline, &e).await;
    Ok(started)
}

/// Polls until a final answer or the deadline: `approved`, `denied`,
/// `expired` or `failed`, with a detail.
async fn poll(
    ciba: &Ciba,
    auth_req_id: &str,
    mut interval: Duration,
    deadline: Instant,
) -> (&'static str, Option<String>) {
    let mut backoff = interval;
    loop {
        tokio::time::sleep(backoff).await;
        if Instant::now() > deadline {
            return (
                "expired",
                Some("no answer before the request expired".into()),
            );
        }
        backoff = interval;
        match ciba.poll(auth_req_id).await {
            Ok(Polled::Pending) => {}
            Ok(Polled::SlowDown) => {
                interval += SLOW_DOWN_STEP;
                backoff = interval;
            }
            Ok(Polled::Approved) => return ("approved", None),
            Ok(Polled::Denied(d)) => return ("denied", Some(d).filter(|d| !d.is_empty())),
            Ok(Polled::Expired) => return ("expired", None),
            Err(CibaError::Refused {
                error, description, ..
            }) if error == "invalid_grant" => {
                // The provider forgot it: expired (or answered before a restart).
                return ("expired", Some(format!("invalid_grant: {description}")));
            }
            Err(e @ CibaError::Refused { .. }) => return ("failed", Some(e.to_string())),
            Err(e) => {
                failed("Polling the OpenID provider failed; retrying", &e);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn outcome(pipeline: &Pipeline, r: &StepUpRequest, outcome: &str, detail: Option<String>) {
    let mut attributes = json!({
        "anomaly_id": r.anomaly_id, "agent_id": r.agent_id, "principal": r.principal,
        "outcome": outcome,
    });
    if let Some(d) = detail {
        attributes["detail"] = json!(d);
    }
    let e = Evidence {
        event_id: evidence::step_up_result_id(&r.anomaly_id),
        correlation_id: r.correlation_id.clone(),
        action: evidence::STEP_UP_RESULT,
        agent_id: r.agent_id.clone(),
        attributes,
    };
    record_or_log(pipeline, &e).await;
}

/// Revokes each lease of `order` not yet revoked in the log, retrying
/// what Vault did not answer, and records each outcome.
pub async fn revoke(
    pipeline: Arc<Pipeline>,
    vault: Arc<Vault>,
    order: RevokeOrder,
    mut stop: Stop,
) {
    for lease in &order.leases {
        let id = evidence::revocation_id(&order.anomaly_id, lease);
        if in_log(&pipeline, &id) {
            continue;
        }
        let done = tokio::select! {
            _ = stop.stopped() => return,
            r = revoke_one(&vault, lease) => r,
        };
        let mut attributes = json!({
            "anomaly_id": order.anomaly_id, "agent_id": order.agent_id, "lease_id": lease,
            "attempts": done.attempts,
            "outcome": if done.result.is_ok() { "revoked" } else { "failed" },
        });
        if let Err(e) = done.result {
            attributes["error"] = json!(e.to_string());
        }
        let e = Evidence {
            event_id: id,
            correlation_id: order.correlation_id.clone(),
            action: evidence::REVOCATION,
            agent_id: order.agent_id.clone(),
            attributes,
        };
        record_or_log(&pipeline, &e).await;
    }
}

/// How one lease's revocation ended.
struct Revocation {
    /// Revoked, or Vault's last error.
    result: Result<(), super::vault::VaultError>,
    /// Requests made.
    attempts: u32,
}

async fn revoke_one(vault: &Vault, lease: &str) -> Revocation {
    let mut attempt = 1;
    loop {
        match vault.revoke(lease).await {
            Ok(()) => {
                crate::telemetry::metrics()
                    .leases_revoked_total
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Revocation {
                    result: Ok(()),
                    attempts: attempt,
                };
            }
            Err(e) => {
                failed(&format!("Cannot revoke lease {lease}"), &e);
                if !e.is_transient() || attempt >= ATTEMPTS {
                    return Revocation {
                        result: Err(e),
                        attempts: attempt,
                    };
                }
                tokio::time::sleep(FIRST_BACKOFF * 2u32.pow(attempt - 1)).await;
                attempt += 1;
            }
        }
    }
}

/// Signs and pushes the Security Event Token of a posture change
/// (retrying what the receiver did not answer), and records the outcome.
pub async fn signal(
    pipeline: Arc<Pipeline>,
    signals: Arc<super::signals::Signals>,
    posture: super::posture::Posture,
    mut stop: Stop,
) {
    let jti = uuid::Uuid::now_v7().to_string();
    let settings = signals.settings();
    let origin = pipeline.data_dir().origin.clone();
    let issuer = if settings.issuer.is_empty() {
        origin.as_str()
    } else {
        &settings.issuer
    };
    let env = super::signals::Envelope {
        issuer,
        audience: &settings.audience,
        jti: &jti,
        iat: crate::time::Timestamp::now().secs(),
        kid: pipeline.pipeline_kid(),
    };
    let Some(set) = super::signals::token(&posture, env, |m| pipeline.sign_as_pipeline(m)) else {
        return;
    };
    let mut attempt = 1;
    let result = loop {
        let pushed = tokio::select! {
            _ = stop.stopped() => return,
            r = signals.push(&set) => r,
        };
        match pushed {
            Ok(()) => break Ok(()),
            Err(e) if !e.is_transient() || attempt >= ATTEMPTS => {
                failed("Cannot push the Security Event Token", &e);
                break Err(e.to_string());
            }
            Err(e) => {
                failed("Pushing the Security Event Token failed; retrying", &e);
                tokio::time::sleep(FIRST_BACKOFF * 2u32.pow(attempt - 1)).await;
                attempt += 1;
            }
        }
    };
    let mut attributes = json!({
        "agent_id": posture.agent_id, "jti": jti, "event_type": super::signals::SESSION_REVOKED,
        "receiver": settings.receiver, "attempts": attempt,
        "outcome": if result.is_ok() { "delivered" } else { "failed" },
    });
    if let Some(id) = &posture.anomaly_id {
        attributes["anomaly_id"] = json!(id);
    }
    if let Err(e) = result {
        attributes["error"] = json!(e);
    }
    let e = Evidence {
        event_id: format!("set-{jti}"),
        correlation_id: posture
            .anomaly_id
            .clone()
            .unwrap_or_else(|| format!("admin:{}", posture.agent_id)),
        action: evidence::SIGNAL,
        agent_id: posture.agent_id.clone(),
        attributes,
    };
    record_or_log(&pipeline, &e).await;
}
