//! Agent hygiene findings (contract section 6a), from evidence in the log:
//! the keys it logged (`vigil.key.*` events, with their validity and
//! agent records) and the accepted events of each agent. No I/O here;
//! [`stage`] feeds it the log, and findings are judged against the wall
//! clock whenever they are asked for.
//!
//! Kinds found: `stale_key`, `key_without_expiry`, `zombie_agent`,
//! `ownerless_agent`, `static_credentials`, and from the admin routes'
//! `vigil.agent.registered` (the actions its role may take) and
//! `vigil.agent.attested` events, `unused_privilege` and
//! `unattested_agent`.

pub mod stage;
pub mod tables;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::{Event, Fields, PIPELINE_AGENT};
use crate::keys::history::{KeyHistory, KEY_REMOVED, PIPELINE_KEY};
use crate::keys::jwks::parse_key;
use crate::keys::AgentStatus;
use crate::log::receipt::{ReceiptBody, Verdict};
use crate::store::view::LogRecord;
use crate::time::Timestamp;

const DAY_MS: f64 = 86_400_000.0;
/// Log indices kept as evidence of static credentials.
const EVIDENCE_MAX: usize = 10;
/// Distinct actions whose last use is remembered per agent.
const USED_MAX: usize = 64;
/// The admin event that registers an agent (with the actions its role
/// may take).
pub const REGISTERED: &str = "vigil.agent.registered";
/// The admin event that records an owner's attestation.
pub const ATTESTED: &str = "vigil.agent.attested";

/// `[hygiene]`: the thresholds of findings (contract section 9). Days may
/// be fractional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// A key older than this (from its `nbf`, else from when Vigil first
    /// saw it) is stale.
    pub max_key_age_days: f64,
    /// An agent known this long with no accepted event this recent is a
    /// zombie.
    pub zombie_after_days: f64,
    /// An action its role allows unused this long is standing privilege
    /// (not judged yet).
    pub unused_after_days: f64,
    /// How often an owner must attest an agent (not judged yet).
    pub attest_every_days: f64,
    /// Roles whose agents must use leases: every event a `lease_id`.
    pub lease_required_roles: Vec<String>,
    /// Owners who have left: their agents are `ownerless_agent` too.
    pub departed_owners: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_key_age_days: 90.0,
            zombie_after_days: 30.0,
            unused_after_days: 30.0,
            attest_every_days: 90.0,
            lease_required_roles: Vec::new(),
            departed_owners: Vec::new(),
        }
    }
}

/// One finding, as the contract gives it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    /// Stable for the same kind, agent and key.
    pub finding_id: String,
    /// What is wrong.
    pub kind: &'static str,
    /// The agent.
    pub agent_id: String,
    /// `low`, `medium` or `high`.
    pub severity: &'static str,
    /// One sentence.
    pub summary: String,
    /// Log indices of the records that show it.
    pub evidence: Vec<u64>,
    /// What to do.
    pub fix: String,
    /// Since when it holds.
    pub since: String,
}

/// A key as the log established it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyFacts {
    nbf_ms: Option<i64>,
    exp_ms: Option<i64>,
    revoked: bool,
    first_seen_ms: i64,
    index: u64,
}

/// A run of accepted events without a lease.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Unleased {
    count: u64,
    first_ms: i64,
    indices: Vec<u64>,
}

/// A registration through the admin routes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Registration {
    at_ms: i64,
    index: u64,
    actions: Vec<String>,
}

/// What the log says of one agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AgentFacts {
    registered: Option<Registration>,
    attested: Option<(i64, u64)>,
    /// The latest `occurred_at` of each action it took (bounded).
    used: BTreeMap<String, i64>,
    first_seen_ms: i64,
    role: Option<String>,
    owner: Option<String>,
    status: AgentStatus,
    record_index: u64,
    keys: BTreeMap<String, KeyFacts>,
    last_accepted: Option<(i64, u64)>,
    unleased: Unleased,
}

impl Default for AgentFacts {
    fn default() -> Self {
        AgentFacts {
            registered: None,
            attested: None,
            used: BTreeMap::new(),
            first_seen_ms: 0,
            role: None,
            owner: None,
            // An agent seen only through events (no key logged) is judged
            // by nothing until its key record says what it is.
            status: AgentStatus::Decommissioned,
            record_index: 0,
            keys: BTreeMap::new(),
            last_accepted: None,
            unleased: Unleased::default(),
        }
    }
}

/// Every agent's facts, fed record by record in log order.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Inventory {
    /// Shared with a snapshot being saved until either changes it.
    #[serde(with = "crate::snapshot::arc_values")]
    agents: BTreeMap<String, Arc<AgentFacts>>,
    position: u64,
}

fn ms(t: Timestamp) -> i64 {
    (t.0 / 1_000_000) as i64
}

fn at(ms: i64) -> String {
    Timestamp(i128::from(ms) * 1_000_000).to_rfc3339_millis()
}

impl Inventory {
    /// The next log index it expects.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Agents it knows.
    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }

    /// The `occurred_at` (ms) of `agent_id`'s latest accepted event.
    pub fn last_seen_ms(&self, agent_id: &str) -> Option<i64> {
        self.agents.get(agent_id)?.last_accepted.map(|(t, _)| t)
    }

    /// An agent's facts, made when missing, and no longer shared with a
    /// snapshot (copied first if they are).
    fn agent_mut(&mut self, agent_id: &str) -> &mut AgentFacts {
        if !self.agents.contains_key(agent_id) {
            self.agents.insert(agent_id.to_string(), Arc::default());
        }
        Arc::make_mut(
            self.agents
                .get_mut(agent_id)
                .expect("inserted when missing"),
        )
    }

    /// Takes in a record of the log.
    pub fn observe(&mut self, rec: &LogRecord) {
        if self.read_as_accepted(rec.index, &rec.body, &rec.event) {
            if let Some(f) = rec.fields() {
                self.accepted(rec.index, &rec.body.agent_id, f);
            }
        }
    }

    /// Takes in record `index` from its receipt body and event bytes.
    pub fn observe_bytes(&mut self, index: u64, body: &ReceiptBody, event: &[u8]) {
        if self.read_as_accepted(index, body, event) {
            if let Some(f) = Fields::of_bytes(event) {
                self.accepted(index, &body.agent_id, &f);
            }
        }
    }

    /// Moves past record `index`, taking in the pipeline's own events;
    /// whether it is an agent's accepted event, to be read further.
    fn read_as_accepted(&mut self, index: u64, body: &ReceiptBody, event: &[u8]) -> bool {
        self.position = index + 1;
        if body.agent_id == PIPELINE_AGENT {
            self.key_event(index, body, event);
            return false;
        }
        body.verdict() == Some(Verdict::Accepted)
    }

    fn accepted(&mut self, index: u64, agent_id: &str, f: &Fields) {
        let agent = self.agent_mut(agent_id);
        if agent.last_accepted.is_none_or(|(t, _)| f.occurred_ms >= t) {
            agent.last_accepted = Some((f.occurred_ms, index));
        }
        if let Some(t) = agent.used.get_mut(&f.action) {
            *t = (*t).max(f.occurred_ms);
        } else if agent.used.len() < USED_MAX {
            agent.used.insert(f.action.clone(), f.occurred_ms);
        }
        if f.lease_id.is_none() {
            let u = &mut agent.unleased;
            if u.count == 0 || f.occurred_ms < u.first_ms {
                u.first_ms = f.occurred_ms;
            }
            u.count += 1;
            if u.indices.len() < EVIDENCE_MAX {
                u.indices.push(index);
            }
        }
    }

    fn key_event(&mut self, index: u64, body: &ReceiptBody, event: &[u8]) {
        let Ok(event) = Event::parse(event) else {
            return;
        };
        let Some(change) = KeyHistory::change_in(&event) else {
            self.admin_event(index, body, &event);
            return;
        };
        if change.action == PIPELINE_KEY {
            return;
        }
        let Ok((key, record)) = parse_key(&change.jwk) else {
            return;
        };
        let seen = Timestamp::parse_event_time(&body.received_at).map_or(0, ms);
        let agent = self.agent_mut(&key.agent_id);
        if agent.first_seen_ms == 0 {
            agent.first_seen_ms = seen;
        }
        if change.action == KEY_REMOVED {
            agent.keys.remove(&key.kid);
            return;
        }
        agent.role = record.role;
        agent.owner = record.owner;
        agent.status = record.status;
        agent.record_index = index;
        let first_seen_ms = agent.keys.get(&key.kid).map_or(seen, |k| k.first_seen_ms);
        agent.keys.insert(
            key.kid.clone(),
            KeyFacts {
                nbf_ms: key.nbf.map(ms),
                exp_ms: key.exp.map(ms),
                revoked: key.revoked_at.is_some(),
                first_seen_ms,
                index,
            },
        );
    }

    /// A registration or an attestation.
    fn admin_event(&mut self, index: u64, body: &ReceiptBody, event: &Event) {
        let action = event.str_field("action");
        if action != REGISTERED && action != ATTESTED {
            return;
        }
        let attrs = event.value.get("attributes");
        let Some(agent_id) = attrs
            .and_then(|a| a.get("agent_id"))
            .and_then(|v| v.as_str())
        else {
            return;
        };
        let at_ms = Timestamp::parse_event_time(&body.received_at).map_or(0, ms);
        let agent = self.agent_mut(agent_id);
        if agent.first_seen_ms == 0 {
            agent.first_seen_ms = at_ms;
        }
        if action == ATTESTED {
            agent.attested = Some((at_ms, index));
            return;
        }
        let actions = match attrs.and_then(|a| a.get("actions")) {
            Some(crate::json::Value::Array(list)) => list
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .take(USED_MAX)
                .collect(),
            _ => Vec::new(),
        };
        agent.registered = Some(Registration {
            at_ms,
            index,
            actions,
        });
    }

    /// The findings as of `now_ms` (wall clock), by agent then kind.
    pub fn findings(&self, now_ms: i64, policy: &Policy) -> Vec<Finding> {
        let mut out = Vec::new();
        for (id, a) in &self.agents {
            a.findings(id, now_ms, policy, &mut out);
        }
        out
    }
}

fn finding_id(kind: &str, agent: &str, subject: &str) -> String {
    let mut h = Sha256::new();
    for part in [kind, agent, subject] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    format!("f-{}", crate::hexenc::encode(&h.finalize()[..8]))
}

impl AgentFacts {
    /// Keys valid now: not revoked, not expired.
    fn live_keys(&self, now_ms: i64) -> impl Iterator<Item = (&String, &KeyFacts)> {
        self.keys
            .iter()
            .filter(move |(_, k)| !k.revoked && k.exp_ms.is_none_or(|e| e > now_ms))
    }

    fn findings(&self, id: &str, now_ms: i64, policy: &Policy, out: &mut Vec<Finding>) {
        if self.status != AgentStatus::Active {
            return;
        }
        let days = |d: f64| (d * DAY_MS) as i64;
        for (kid, k) in self.live_keys(now_ms) {
            let born = k.nbf_ms.unwrap_or(k.first_seen_ms);
            let stale_at = born + days(policy.max_key_age_days);
            if now_ms >= stale_at {
                out.push(Finding {
                    finding_id: finding_id("stale_key", id, kid),
                    kind: "stale_key",
                    agent_id: id.into(),
                    severity: "medium",
                    summary: format!("Key {kid} of agent {id} is older than {} days (since {}).", policy.max_key_age_days, at(born)),
                    evidence: vec![k.index],
                    fix: format!("Rotate: add a new key for {id} with an exp, move the agent to it, then set exp on {kid}."),
                    since: at(stale_at),
                });
            }
            if k.exp_ms.is_none() {
                out.push(Finding {
                    finding_id: finding_id("key_without_expiry", id, kid),
                    kind: "key_without_expiry",
                    agent_id: id.into(),
                    severity: "low",
                    summary: format!("Key {kid} of agent {id} never expires."),
                    evidence: vec![k.index],
                    fix: format!(
                        "Give {kid} an exp (NumericDate) at most {} days after its nbf.",
                        policy.max_key_age_days
                    ),
                    since: at(k.first_seen_ms),
                });
            }
        }
        self.agent_findings(id, now_ms, policy, out);
    }

    /// Standing privilege and attestation: from the admin routes' events.
    fn admin_findings(&self, id: &str, now_ms: i64, policy: &Policy, out: &mut Vec<Finding>) {
        let days = |d: f64| (d * DAY_MS) as i64;
        if let Some(reg) = &self.registered {
            for action in &reg.actions {
                let last = self.used.get(action).copied();
                let idle_from = last.unwrap_or(reg.at_ms).max(reg.at_ms);
                let due = idle_from + days(policy.unused_after_days);
                if now_ms < due {
                    continue;
                }
                let used = last.map_or("never used it".to_string(), |t| {
                    format!("last used it at {}", at(t))
                });
                out.push(Finding {
                    finding_id: finding_id("unused_privilege", id, action),
                    kind: "unused_privilege",
                    agent_id: id.into(),
                    severity: "low",
                    summary: format!("Agent {id} may take {action} but {used}: not in {} days.", policy.unused_after_days),
                    evidence: vec![reg.index],
                    fix: format!("Drop {action} from what {id}'s role allows (PUT /v1/agents/{id} with the actions it uses), or find out why it stopped."),
                    since: at(due),
                });
            }
        }
        let base = self
            .attested
            .map_or(self.first_seen_ms, |(t, _)| t.max(self.first_seen_ms));
        let due = base + days(policy.attest_every_days);
        if now_ms >= due {
            let last = self
                .attested
                .map_or("has never been attested".to_string(), |(t, _)| {
                    format!("was last attested at {}", at(t))
                });
            out.push(Finding {
                finding_id: finding_id("unattested_agent", id, ""),
                kind: "unattested_agent",
                agent_id: id.into(),
                severity: "medium",
                summary: format!("Agent {id} {last}: its owner must confirm every {} days that it is still needed.", policy.attest_every_days),
                evidence: vec![self.attested.map_or(self.record_index, |(_, i)| i)],
                fix: format!("Ask {id}'s owner to attest it (vigil agents attest {id} --needed --by ...), or decommission it."),
                since: at(due),
            });
        }
    }

    fn agent_findings(&self, id: &str, now_ms: i64, policy: &Policy, out: &mut Vec<Finding>) {
        self.admin_findings(id, now_ms, policy, out);
        let zombie_ms = (policy.zombie_after_days * DAY_MS) as i64;
        let live: Vec<u64> = self.live_keys(now_ms).map(|(_, k)| k.index).collect();
        let last = self.last_accepted.map(|(t, _)| t);
        let quiet_since = last.unwrap_or(self.first_seen_ms).max(self.first_seen_ms);
        if !live.is_empty()
            && now_ms - self.first_seen_ms >= zombie_ms
            && now_ms - quiet_since >= zombie_ms
        {
            let mut evidence = live.clone();
            evidence.extend(self.last_accepted.map(|(_, i)| i));
            let acted = last.map_or("has never acted".to_string(), |t| {
                format!("last acted at {}", at(t))
            });
            out.push(Finding {
                finding_id: finding_id("zombie_agent", id, ""),
                kind: "zombie_agent",
                agent_id: id.into(),
                severity: "high",
                summary: format!("Agent {id} has a valid key but {acted}: nothing accepted in {} days.", policy.zombie_after_days),
                evidence,
                fix: format!("Decommission {id} (status decommissioned, or revoke its keys) if it is no longer needed; if it is, find out why it stopped acting."),
                since: at(quiet_since + zombie_ms),
            });
        }
        let owner = self.owner.as_deref().filter(|o| !o.is_empty());
        let departed = owner.filter(|o| policy.departed_owners.iter().any(|d| d == o));
        if owner.is_none() || departed.is_some() {
            let summary = match departed {
                Some(o) => format!("Agent {id}'s owner {o} has left: nobody answers for it."),
                None => format!("Agent {id} has no owner: nobody answers for it."),
            };
            out.push(Finding {
                finding_id: finding_id("ownerless_agent", id, ""),
                kind: "ownerless_agent",
                agent_id: id.into(),
                severity: "medium",
                summary,
                evidence: vec![self.record_index],
                fix: format!("Set owner on {id}'s keys: the person or team responsible for it."),
                since: at(self.first_seen_ms),
            });
        }
        let role = self.role.as_deref().unwrap_or("");
        if self.unleased.count > 0 && policy.lease_required_roles.iter().any(|r| r == role) {
            out.push(Finding {
                finding_id: finding_id("static_credentials", id, ""),
                kind: "static_credentials",
                agent_id: id.into(),
                severity: "medium",
                summary: format!("Agent {id} of role {role}, which requires leases, acted {} times without a lease_id.", self.unleased.count),
                evidence: self.unleased.indices.clone(),
                fix: format!("Give {id} short-lived leases and put lease_id on every event, as role {role} requires."),
                since: at(self.unleased.first_ms),
            });
        }
    }
}
