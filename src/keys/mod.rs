//! The agent key registry (contract section 2).
//!
//! [`jwks`] parses and checks one JWKS document (no I/O); [`KeySet`] is an
//! immutable merged view used to judge events; [`registry`] loads documents
//! from files, reloads them on change and on SIGHUP, keeps the last good set
//! in force when a document is refused, and records every key it has ever
//! used in the data directory's key snapshot for offline verification.

pub mod jwks;
pub mod private;
pub mod registry;

use std::collections::HashMap;
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;

use crate::log::receipt::Reason;
use crate::time::Timestamp;

pub use jwks::{parse_jwks, KeyDoc};
pub use registry::KeyRegistry;

/// An agent's lifecycle status, from its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStatus {
    /// May act.
    Active,
    /// Temporarily barred; its events are `rejected:agent_not_active`.
    Suspended,
    /// Retired for good; its events are `rejected:agent_not_active`.
    Decommissioned,
}

impl AgentStatus {
    /// Parses the JWK `status` member.
    pub fn parse(s: &str) -> Option<AgentStatus> {
        match s {
            "active" => Some(AgentStatus::Active),
            "suspended" => Some(AgentStatus::Suspended),
            "decommissioned" => Some(AgentStatus::Decommissioned),
            _ => None,
        }
    }
}

/// The agent record carried by each of an agent's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// The agent's cohort (used later for cold-start baselines).
    pub role: Option<String>,
    /// Who is responsible for the agent.
    pub owner: Option<String>,
    /// Lifecycle status; `active` when the keys say nothing.
    pub status: AgentStatus,
}

/// One agent public key with its validity bounds.
#[derive(Debug, Clone)]
pub struct AgentKey {
    /// The agent the key belongs to.
    pub agent_id: String,
    /// The key id (`kid`) events name in `key_id`.
    pub kid: String,
    /// The parsed, checked public key.
    pub key: VerifyingKey,
    /// Not valid for events that occurred before this.
    pub nbf: Option<Timestamp>,
    /// Not valid for events that occurred at or after this.
    pub exp: Option<Timestamp>,
    /// Revoked from this time on.
    pub revoked_at: Option<Timestamp>,
    /// The JWK as given (public members only), for the key snapshot.
    pub jwk: serde_json::Value,
}

/// Rules for judging time against keys (contract section 2 defaults).
#[derive(Debug, Clone, Copy)]
pub struct TimeRules {
    /// How long after `revoked_at` events signed by a revoked key are still
    /// taken (their `occurred_at` being before `revoked_at`).
    pub revocation_grace_s: u64,
    /// How far `occurred_at` may be ahead of the receipt time.
    pub max_clock_skew_s: u64,
}

impl Default for TimeRules {
    fn default() -> Self {
        TimeRules {
            revocation_grace_s: 3600,
            max_clock_skew_s: 300,
        }
    }
}

impl AgentKey {
    /// Whether this key may vouch for an event that occurred at
    /// `occurred_at` and was received at `received_at`.
    pub fn check_validity(
        &self,
        occurred_at: Timestamp,
        received_at: Timestamp,
        rules: &TimeRules,
    ) -> Result<(), Reason> {
        if self.nbf.is_some_and(|nbf| occurred_at < nbf) {
            return Err(Reason::KeyNotValidYet);
        }
        if self.exp.is_some_and(|exp| occurred_at >= exp) {
            return Err(Reason::KeyExpired);
        }
        if let Some(revoked) = self.revoked_at {
            if occurred_at >= revoked || received_at > revoked.plus_secs(rules.revocation_grace_s) {
                return Err(Reason::KeyRevoked);
            }
        }
        Ok(())
    }
}

/// An immutable, merged set of agent keys and records.
#[derive(Debug, Default, Clone)]
pub struct KeySet {
    keys: HashMap<(String, String), Arc<AgentKey>>,
    agents: HashMap<String, AgentRecord>,
}

impl KeySet {
    /// Merges documents, refusing the merge when two disagree about a key
    /// (same agent and kid, different `x`) or about an agent's record.
    pub fn merge<'a>(docs: impl IntoIterator<Item = &'a KeyDoc>) -> Result<KeySet, String> {
        let mut set = KeySet::default();
        for doc in docs {
            for key in &doc.keys {
                let id = (key.agent_id.clone(), key.kid.clone());
                if let Some(existing) = set.keys.get(&id) {
                    if existing.key != key.key {
                        return Err(format!(
                            "key {:?} of agent {:?} has two different public keys ({} and {})",
                            key.kid, key.agent_id, existing.jwk["x"], key.jwk["x"]
                        ));
                    }
                    continue;
                }
                set.keys.insert(id, Arc::new(key.clone()));
            }
            for (agent, record) in &doc.agents {
                if let Some(existing) = set.agents.get(agent) {
                    if existing != record {
                        return Err(format!(
                            "agent {agent:?} has disagreeing records: {existing:?} and {record:?}"
                        ));
                    }
                } else {
                    set.agents.insert(agent.clone(), record.clone());
                }
            }
        }
        Ok(set)
    }

    /// The key with this `kid` belonging to this agent.
    pub fn key(&self, agent_id: &str, kid: &str) -> Option<&Arc<AgentKey>> {
        self.keys.get(&(agent_id.to_string(), kid.to_string()))
    }

    /// The record of an agent that has at least one key.
    pub fn agent(&self, agent_id: &str) -> Option<&AgentRecord> {
        self.agents.get(agent_id)
    }

    /// How many keys the set holds.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// How many agents the set knows.
    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }

    /// Every key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &Arc<AgentKey>> {
        self.keys.values()
    }
}
