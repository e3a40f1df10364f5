//! The response's evidence: every decision, request and answer is an
//! event of agent `vigil` in the log, linked by the anomaly's correlation
//! id, so that an auditor can replay who was asked what, when, and what
//! happened. This module names those events and reads them back.
//!
//! Event ids are derived from the anomaly (`<anomaly_id>.step_up`,
//! `<anomaly_id>.revoke.<lease hash>`...), so a replay after a crash
//! never records one step twice.

use serde_json::{json, Value as J};
use sha2::{Digest, Sha256};

use crate::json::Value;
use crate::log::receipt::{ReceiptBody, Verdict};

/// A response decided for an anomaly (`attributes.action`: `step_up`,
/// `revoke`).
pub const DECISION: &str = "vigil.response.decision";
/// A CIBA request the provider accepted (`auth_req_id`, binding message,
/// authorization details).
pub const STEP_UP_REQUESTED: &str = "vigil.response.step_up_requested";
/// A step-up's outcome: `approved`, `denied`, `expired` or `failed`.
pub const STEP_UP_RESULT: &str = "vigil.response.step_up_result";
/// One lease's revocation: `revoked`, `failed`, `outside_prefixes` or
/// `not_configured`.
pub const REVOCATION: &str = "vigil.response.revocation";
/// A posture change pushed as a Security Event Token: `delivered` or
/// `failed`, with its `jti`.
pub const SIGNAL: &str = "vigil.response.signal";
/// An administrator ended a suspension (`POST /v1/agents/{id}/restore`).
pub const RESTORE: &str = "vigil.admin.restore";
/// An administrator suspended an agent (`POST /v1/agents/{id}/suspend`).
pub const SUSPEND: &str = "vigil.admin.suspend";

/// One event to record: its id, action and attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// Its event id (derived, so recording it twice is a duplicate).
    pub event_id: String,
    /// The anomaly's correlation id (or the anomaly id).
    pub correlation_id: String,
    /// One of the actions above.
    pub action: &'static str,
    /// The agent it is about.
    pub agent_id: String,
    /// What happened.
    pub attributes: J,
}

impl Evidence {
    /// The event's members, for `Pipeline::append_own`.
    pub fn fields(&self) -> Vec<(String, Value)> {
        let text = serde_json::to_vec(&self.attributes).expect("attributes serialise");
        let attributes = crate::json::parse(&text).expect("attributes are I-JSON");
        vec![
            ("event_id".into(), Value::String(self.event_id.clone())),
            (
                "correlation_id".into(),
                Value::String(self.correlation_id.clone()),
            ),
            (
                "resource".into(),
                Value::String(format!("agent:{}", self.agent_id)),
            ),
            ("attributes".into(), attributes),
        ]
    }
}

/// A short, stable name for a lease in event ids.
pub fn lease_tag(lease_id: &str) -> String {
    crate::hexenc::encode(&Sha256::digest(lease_id.as_bytes())[..8])
}

/// The event id of a step-up's result.
pub fn step_up_result_id(anomaly_id: &str) -> String {
    format!("{anomaly_id}.step_up.result")
}

/// The event id of a step-up's request.
pub fn step_up_requested_id(anomaly_id: &str) -> String {
    format!("{anomaly_id}.step_up.requested")
}

/// The event id of one lease's revocation.
pub fn revocation_id(anomaly_id: &str, lease_id: &str) -> String {
    format!("{anomaly_id}.revoke.{}", lease_tag(lease_id))
}

/// A pipeline event of the response read back from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// The event's action.
    pub action: String,
    /// Its correlation id.
    pub correlation_id: String,
    /// Its attributes.
    pub attributes: J,
}

impl Logged {
    /// A string attribute.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).and_then(J::as_str)
    }
}

/// Reads an accepted pipeline event whose action this stage acts on
/// (anomalies, the response's own evidence, admin changes).
pub fn read(body: &ReceiptBody, event: &[u8]) -> Option<Logged> {
    if body.agent_id != crate::event::PIPELINE_AGENT
        || Verdict::parse(&body.verdict) != Some(Verdict::Accepted)
    {
        return None;
    }
    let v: J = serde_json::from_slice(event).ok()?;
    let action = v.get("action")?.as_str()?;
    let wanted = action == crate::detect::stage::ANOMALY_ACTION
        || action.starts_with("vigil.response.")
        || action == RESTORE
        || action == SUSPEND;
    if !wanted {
        return None;
    }
    Some(Logged {
        action: action.to_string(),
        correlation_id: v
            .get("correlation_id")
            .and_then(J::as_str)
            .unwrap_or("")
            .to_string(),
        attributes: v.get("attributes").cloned().unwrap_or(json!({})),
    })
}
