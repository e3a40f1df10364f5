//! The agent key registry (contract section 2).
//!
//! [`jwks`] parses and checks one JWKS document (no I/O); [`KeySet`] is an
//! immutable merged view used to judge events; [`registry`] loads documents
//! from files, reloads them on change and on SIGHUP, keeps the last good set
//! in force when a document is refused, and records every key it has ever
//! used in the data directory's key snapshot for offline verification.

pub mod history;
pub mod jwks;
pub mod private;
pub mod registry;
#[cfg(feature = "server")]
pub mod remote;
pub mod suspended;

use std::collections::HashMap;
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;

use crate::log::receipt::Reason;
use crate::time::Timestamp;

pub use jwks::{parse_jwks, KeyDoc};
pub use registry::KeyRegistry;

/// An agent's lifecycle status, from its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

    /// The JWK `status` member's value.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Active => "active",
            AgentStatus::Suspended => "suspended",
            AgentStatus::Decommissioned => "decommissioned",
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

impl Default for AgentRecord {
    fn default() -> Self {
        AgentRecord {
            role: None,
            owner: None,
            status: AgentStatus::Active,
        }
    }
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

/// Why documents cannot be merged into one key set (contract section 2:
/// the whole document is refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// One (agent, kid) with two different public keys.
    #[error("key {kid:?} of agent {agent_id:?} has two different public keys ({x1} and {x2}); a kid names one key for good: give the new key a new kid")]
    TwoKeys {
        /// The agent.
        agent_id: String,
        /// The key id.
        kid: String,
        /// One `x`.
        x1: String,
        /// The other `x`.
        x2: String,
    },
    /// One agent with two different records.
    #[error("agent {agent_id:?} has disagreeing records ({first} and {second}); make role, owner and status the same on every key of the agent")]
    TwoRecords {
        /// The agent.
        agent_id: String,
        /// One record.
        first: String,
        /// The other.
        second: String,
    },
}

/// An immutable, merged set of agent keys and records.
#[derive(Debug, Default, Clone)]
pub struct KeySet {
    keys: HashMap<(String, String), Arc<AgentKey>>,
    agents: HashMap<String, AgentRecord>,
    /// What merging tightened (entries for one key that differed only in
    /// validity), for the log.
    pub tightened: Vec<String>,
}

fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn earlier(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl AgentKey {
    /// This key with the most restrictive validity of it and `other` (the
    /// same key): the latest `nbf`, the earliest `exp`, the earliest
    /// `revoked_at`. The JWK's members follow.
    fn tightened_with(&self, other: &AgentKey) -> AgentKey {
        let mut k = self.clone();
        k.nbf = later(self.nbf, other.nbf);
        k.exp = earlier(self.exp, other.exp);
        k.revoked_at = earlier(self.revoked_at, other.revoked_at);
        let members = [
            ("nbf", self.nbf, k.nbf),
            ("exp", self.exp, k.exp),
            ("revoked_at", self.revoked_at, k.revoked_at),
        ];
        if let Some(obj) = k.jwk.as_object_mut() {
            for (name, mine, merged) in members {
                let source = if merged == mine {
                    &self.jwk
                } else {
                    &other.jwk
                };
                match source.get(name) {
                    Some(v) => obj.insert(name.to_string(), v.clone()),
                    None => obj.remove(name),
                };
            }
        }
        k
    }

    fn bounds(&self) -> (Option<Timestamp>, Option<Timestamp>, Option<Timestamp>) {
        (self.nbf, self.exp, self.revoked_at)
    }
}

impl KeySet {
    /// Merges documents. Entries for the same (agent, kid) and `x` merge
    /// toward the most restrictive validity (revoked if any entry revokes
    /// it, the latest `nbf`, the earliest `exp`), noted in
    /// [`KeySet::tightened`]; the merge is refused when two entries
    /// disagree about a key's `x` or about an agent's record.
    pub fn merge<'a>(docs: impl IntoIterator<Item = &'a KeyDoc>) -> Result<KeySet, MergeError> {
        let mut set = KeySet::default();
        for doc in docs {
            for (key, record) in &doc.keys {
                set.add_key(key)?;
                match set.agents.get(&key.agent_id) {
                    Some(existing) if existing != record => {
                        return Err(MergeError::TwoRecords {
                            agent_id: key.agent_id.clone(),
                            first: format!("{existing:?}"),
                            second: format!("{record:?}"),
                        })
                    }
                    Some(_) => {}
                    None => {
                        set.agents.insert(key.agent_id.clone(), record.clone());
                    }
                }
            }
        }
        Ok(set)
    }

    /// Merges `docs`, then `admin` (the admin routes' document): its keys
    /// merge the same way, and its agent records override the others' (an
    /// admin's change of an agent's role, owner or status stands over the
    /// operator's files).
    pub fn merge_with_admin<'a>(
        docs: impl IntoIterator<Item = &'a KeyDoc>,
        admin: Option<&KeyDoc>,
    ) -> Result<KeySet, MergeError> {
        let mut set = KeySet::merge(docs)?;
        for (key, record) in admin.into_iter().flat_map(|d| &d.keys) {
            set.add_key(key)?;
            set.agents.insert(key.agent_id.clone(), record.clone());
        }
        Ok(set)
    }

    fn add_key(&mut self, key: &AgentKey) -> Result<(), MergeError> {
        let id = (key.agent_id.clone(), key.kid.clone());
        let Some(existing) = self.keys.get(&id) else {
            self.keys.insert(id, Arc::new(key.clone()));
            return Ok(());
        };
        if existing.key != key.key {
            return Err(MergeError::TwoKeys {
                agent_id: key.agent_id.clone(),
                kid: key.kid.clone(),
                x1: existing.jwk["x"].as_str().unwrap_or("").to_string(),
                x2: key.jwk["x"].as_str().unwrap_or("").to_string(),
            });
        }
        if existing.bounds() != key.bounds() {
            let merged = existing.tightened_with(key);
            if merged.bounds() != existing.bounds() {
                self.tightened.push(format!(
                    "key {:?} of agent {:?} is listed more than once with different validity; \
                     taking the most restrictive (nbf {:?}, exp {:?}, revoked_at {:?})",
                    key.kid,
                    key.agent_id,
                    merged.nbf.map(|t| t.to_rfc3339_millis()),
                    merged.exp.map(|t| t.to_rfc3339_millis()),
                    merged.revoked_at.map(|t| t.to_rfc3339_millis()),
                ));
            }
            self.keys.insert(id, Arc::new(merged));
        }
        Ok(())
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

    /// Every key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &Arc<AgentKey>> {
        self.keys.values()
    }
}
