//! Agent posture (contract section 5): what a gateway asks before acting,
//! and the book the API reads it from.

use std::collections::HashMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

/// An agent's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// May act.
    Active,
    /// A step-up of its principal is pending: gateways should hold risky
    /// actions.
    StepUpRequired,
    /// Barred: its events are `rejected:agent_not_active`.
    Suspended,
}

/// Where a step-up stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepUp {
    /// `requested`, `pending`, `approved`, `denied`, `expired` or `failed`.
    pub status: String,
    /// Whom it asks.
    pub principal: String,
    /// What went wrong, for `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One lease revocation's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revocation {
    /// The lease.
    pub lease_id: String,
    /// `pending`, `revoked`, `failed`, `outside_prefixes`, `foreign_lease`
    /// (another agent used it first) or `not_configured`.
    pub status: String,
    /// What went wrong, for `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An agent's posture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Posture {
    /// The agent.
    pub agent_id: String,
    /// Its state.
    pub state: State,
    /// Why, in a sentence.
    pub reason: String,
    /// Since when (the receipt time of the record that changed it).
    pub since: String,
    /// The anomaly that led to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly_id: Option<String>,
    /// The latest step-up (shown to `soc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_up: Option<StepUp>,
    /// Lease revocations of the latest revoke (shown to `soc`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revocations: Vec<Revocation>,
}

impl Posture {
    /// An agent no response has touched.
    pub fn active(agent_id: &str, since: &str) -> Posture {
        Posture {
            agent_id: agent_id.to_string(),
            state: State::Active,
            reason: "no response has changed this agent's posture".into(),
            since: since.to_string(),
            anomaly_id: None,
            step_up: None,
            revocations: Vec::new(),
        }
    }

    /// What a gateway (role `posture`) is shown: without the step-up and
    /// revocation details.
    pub fn for_gateway(&self) -> Posture {
        Posture {
            step_up: None,
            revocations: Vec::new(),
            ..self.clone()
        }
    }
}

/// The postures in force, shared by the response stage (writer) and the
/// API (readers).
#[derive(Debug)]
pub struct Book {
    postures: RwLock<HashMap<String, Posture>>,
    started: String,
    /// Log records the response stage has read (its cursor).
    read: std::sync::atomic::AtomicU64,
}

impl Default for Book {
    fn default() -> Self {
        Book {
            postures: RwLock::default(),
            started: crate::time::Timestamp::now().to_rfc3339_millis(),
            read: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Book {
    /// When this process started keeping postures (the `since` of agents
    /// no response has touched).
    pub fn started(&self) -> &str {
        &self.started
    }

    /// The posture of `agent_id`, if a response ever changed it.
    pub fn get(&self, agent_id: &str) -> Option<Posture> {
        self.postures
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(agent_id)
            .cloned()
    }

    /// How many log records the response stage has read (every posture
    /// change they hold is in force).
    pub fn read_through(&self) -> u64 {
        self.read.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records the response stage's position.
    pub fn set_read_through(&self, position: u64) {
        self.read
            .store(position, std::sync::atomic::Ordering::Release);
    }

    /// Sets a posture.
    pub fn set(&self, posture: Posture) {
        self.postures
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(posture.agent_id.clone(), posture);
    }
}
