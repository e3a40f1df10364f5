//! The key history the log itself establishes (contract section 6a): every
//! agent key first seen, each change of its validity or agent record, and
//! each removal is an event of agent `vigil` in the log, signed with the
//! pipeline's key, so that the keys an auditor checks signatures with are
//! covered by the same checkpoints as the actions. The pipeline's own key
//! is established by a `vigil.pipeline_key` event, itself signed with that
//! key (trusted because the checkpoints cover it).
//!
//! No I/O here: the server diffs the keys it loads against the history
//! and logs the changes before putting them in force; `vigil verify`
//! rebuilds the history as it walks the log, and judges each accepted
//! event by the keys as they stood at its place in the log.

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;
use serde_json::{json, Value as J};

use super::jwks::parse_key;
use super::{AgentKey, AgentRecord, AgentStatus, KeySet};
use crate::event::signature::{b64url, b64url_decode, parse_public_key};
use crate::event::{Event, PIPELINE_AGENT};
use crate::json::{write_jcs, Value};

/// The action of an event that logs a key first seen.
pub const KEY_ADDED: &str = "vigil.key.added";
/// The action of an event that logs a change of a key's validity or record.
pub const KEY_CHANGED: &str = "vigil.key.changed";
/// The action of an event that logs a key no longer loaded.
pub const KEY_REMOVED: &str = "vigil.key.removed";
/// The action of the event that establishes the pipeline's own key.
pub const PIPELINE_KEY: &str = "vigil.pipeline_key";

/// One change to log: its action and the key as it now stands.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyChange {
    /// [`KEY_ADDED`], [`KEY_CHANGED`], [`KEY_REMOVED`] or [`PIPELINE_KEY`].
    pub action: &'static str,
    /// The public JWK with the agent record members.
    pub jwk: J,
}

impl KeyChange {
    /// The members of the `vigil` event that logs it.
    pub fn event_fields(&self) -> Vec<(String, Value)> {
        let agent = self.jwk["agent_id"].as_str().unwrap_or("");
        let kid = self.jwk["kid"].as_str().unwrap_or("");
        let key = crate::json::parse(self.jwk.to_string().as_bytes()).expect("a JWK is I-JSON");
        vec![
            (
                "resource".into(),
                Value::String(format!("key:{agent}/{kid}")),
            ),
            (
                "attributes".into(),
                Value::Object(vec![("key".into(), key)]),
            ),
        ]
    }
}

/// Why a set of keys cannot be logged or a key event not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// The log already names another public key for this (agent, kid).
    #[error("key {kid:?} of agent {agent_id:?} was logged with public key {logged}, and is now given as {given}; a kid names one key for good: give the new key a new kid")]
    Conflict {
        /// The agent.
        agent_id: String,
        /// The key id.
        kid: String,
        /// `x` as logged.
        logged: String,
        /// `x` as given now.
        given: String,
    },
    /// A key event that does not hold a usable key.
    #[error("a {action} event holds no usable key: {why}")]
    BadEvent {
        /// Its action.
        action: String,
        /// What is wrong.
        why: String,
    },
}

/// A key as the history has it.
#[derive(Debug, Clone)]
pub struct LoggedKey {
    /// The key and its validity bounds.
    pub key: AgentKey,
    /// The agent record it carried.
    pub record: AgentRecord,
    /// Whether it was removed (no longer loaded).
    pub removed: bool,
}

/// The keys the log establishes, as of some point in it.
#[derive(Debug, Clone, Default)]
pub struct KeyHistory {
    keys: BTreeMap<(String, String), LoggedKey>,
    pipeline: BTreeMap<String, VerifyingKey>,
}

/// The public JWK and agent record of a key, with only the members the
/// contract names (what the history logs).
pub fn logged_jwk(key: &AgentKey, record: &AgentRecord) -> J {
    let mut j = json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "kid": key.kid,
        "x": b64url(key.key.as_bytes()),
        "agent_id": key.agent_id,
    });
    for name in ["nbf", "exp", "revoked_at"] {
        if let Some(v) = key.jwk.get(name).filter(|v| v.is_number()) {
            j[name] = v.clone();
        }
    }
    if let Some(r) = &record.role {
        j["role"] = J::String(r.clone());
    }
    if let Some(o) = &record.owner {
        j["owner"] = J::String(o.clone());
    }
    if record.status != AgentStatus::Active {
        j["status"] = J::String(record.status.as_str().into());
    }
    j
}

fn same_terms(a: &LoggedKey, key: &AgentKey, record: &AgentRecord) -> bool {
    (a.key.nbf, a.key.exp, a.key.revoked_at) == (key.nbf, key.exp, key.revoked_at)
        && a.record == *record
}

impl KeyHistory {
    /// The logged key of (agent, kid), unless removed.
    pub fn key(&self, agent_id: &str, kid: &str) -> Option<&LoggedKey> {
        self.keys
            .get(&(agent_id.to_string(), kid.to_string()))
            .filter(|k| !k.removed)
    }

    /// The pipeline's key with this kid, if established.
    pub fn pipeline_key(&self, kid: &str) -> Option<&VerifyingKey> {
        self.pipeline.get(kid)
    }

    /// Whether the history holds any key at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.pipeline.is_empty()
    }

    /// The changes that make the history hold exactly `set` (every key of
    /// it, with its terms; no other key live), or the conflict that
    /// forbids it.
    pub fn diff(&self, set: &KeySet) -> Result<Vec<KeyChange>, HistoryError> {
        let mut changes = Vec::new();
        for key in set.keys() {
            let record = set.agent(&key.agent_id).cloned().unwrap_or_default();
            let jwk = logged_jwk(key, &record);
            match self.keys.get(&(key.agent_id.clone(), key.kid.clone())) {
                Some(h) if h.key.key != key.key => {
                    return Err(HistoryError::Conflict {
                        agent_id: key.agent_id.clone(),
                        kid: key.kid.clone(),
                        logged: b64url(h.key.key.as_bytes()),
                        given: b64url(key.key.as_bytes()),
                    })
                }
                Some(h) if h.removed => changes.push(KeyChange {
                    action: KEY_ADDED,
                    jwk,
                }),
                Some(h) if !same_terms(h, key, &record) => changes.push(KeyChange {
                    action: KEY_CHANGED,
                    jwk,
                }),
                Some(_) => {}
                None => changes.push(KeyChange {
                    action: KEY_ADDED,
                    jwk,
                }),
            }
        }
        for ((agent, kid), h) in &self.keys {
            if !h.removed && set.key(agent, kid).is_none() {
                changes.push(KeyChange {
                    action: KEY_REMOVED,
                    jwk: logged_jwk(&h.key, &h.record),
                });
            }
        }
        Ok(changes)
    }

    /// Applies a change (once its event is durable, or while walking).
    pub fn apply(&mut self, change: &KeyChange) -> Result<(), HistoryError> {
        let bad = |why: String| HistoryError::BadEvent {
            action: change.action.to_string(),
            why,
        };
        if change.action == PIPELINE_KEY {
            let kid = change.jwk["kid"]
                .as_str()
                .ok_or_else(|| bad("no kid".into()))?;
            let x = change.jwk["x"]
                .as_str()
                .and_then(b64url_decode)
                .ok_or_else(|| bad("no x".into()))?;
            let key = parse_public_key(&x).map_err(|e| bad(e.to_string()))?;
            self.pipeline.insert(kid.to_string(), key);
            return Ok(());
        }
        let (key, record) = parse_key(&change.jwk).map_err(|e| bad(e.to_string()))?;
        let id = (key.agent_id.clone(), key.kid.clone());
        if let Some(h) = self.keys.get(&id) {
            if h.key.key != key.key {
                return Err(HistoryError::Conflict {
                    agent_id: key.agent_id,
                    kid: key.kid,
                    logged: b64url(h.key.key.as_bytes()),
                    given: b64url(key.key.as_bytes()),
                });
            }
        }
        let removed = change.action == KEY_REMOVED;
        self.keys.insert(
            id,
            LoggedKey {
                key,
                record,
                removed,
            },
        );
        Ok(())
    }

    /// The key change an event logs, if it is a key event of agent `vigil`.
    pub fn change_in(event: &Event) -> Option<KeyChange> {
        if event.agent_id() != PIPELINE_AGENT {
            return None;
        }
        let action = match event.str_field("action") {
            KEY_ADDED => KEY_ADDED,
            KEY_CHANGED => KEY_CHANGED,
            KEY_REMOVED => KEY_REMOVED,
            PIPELINE_KEY => PIPELINE_KEY,
            _ => return None,
        };
        let key = event.value.get("attributes")?.get("key")?;
        let mut bytes = Vec::new();
        write_jcs(key, &mut bytes);
        let jwk: J = serde_json::from_slice(&bytes).ok()?;
        Some(KeyChange { action, jwk })
    }

    /// The history as JSON (for the server's copy in the index directory).
    pub fn to_json(&self) -> J {
        let keys: Vec<J> = self
            .keys
            .values()
            .map(|k| {
                let mut j = logged_jwk(&k.key, &k.record);
                if k.removed {
                    j["removed"] = J::Bool(true);
                }
                j
            })
            .collect();
        let pipeline: Vec<J> = self
            .pipeline
            .iter()
            .map(|(kid, k)| json!({"kid": kid, "x": b64url(k.as_bytes())}))
            .collect();
        json!({ "version": 1, "keys": keys, "pipeline": pipeline })
    }

    /// Reads [`KeyHistory::to_json`]'s form.
    pub fn from_json(j: &J) -> Result<KeyHistory, HistoryError> {
        let mut h = KeyHistory::default();
        for k in j["pipeline"].as_array().into_iter().flatten() {
            h.apply(&KeyChange {
                action: PIPELINE_KEY,
                jwk: k.clone(),
            })?;
        }
        for k in j["keys"].as_array().into_iter().flatten() {
            let action = if k["removed"] == J::Bool(true) {
                KEY_REMOVED
            } else {
                KEY_ADDED
            };
            let mut jwk = k.clone();
            if let Some(o) = jwk.as_object_mut() {
                o.remove("removed");
            }
            h.apply(&KeyChange { action, jwk })?;
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::jwks::parse_jwks;

    const X1: &str = "A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg";
    const X2: &str = "Kay64UG8yvCyLhqU000LxzYeUm0L_hLIl5S8kyKWbdc";

    fn set(keys: &str) -> KeySet {
        KeySet::merge([&parse_jwks(format!("{{\"keys\":[{keys}]}}").as_bytes()).unwrap()]).unwrap()
    }

    fn key(kid: &str, x: &str, extra: &str) -> String {
        format!(r#"{{"kty":"OKP","crv":"Ed25519","kid":"{kid}","x":"{x}","agent_id":"a"{extra}}}"#)
    }

    #[test]
    fn diffs_add_change_remove_and_refuse_a_new_x() {
        let mut h = KeyHistory::default();
        let first = set(&key("k1", X1, ""));
        let changes = h.diff(&first).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].action, KEY_ADDED);
        for c in &changes {
            h.apply(c).unwrap();
        }
        assert!(h.diff(&first).unwrap().is_empty());
        let revoked = set(&key("k1", X1, r#","revoked_at":100"#));
        let changes = h.diff(&revoked).unwrap();
        assert_eq!(changes[0].action, KEY_CHANGED);
        assert_eq!(changes[0].jwk["revoked_at"], 100);
        h.apply(&changes[0]).unwrap();
        let rotated = set(&key("k2", X2, ""));
        let actions: Vec<_> = h.diff(&rotated).unwrap().iter().map(|c| c.action).collect();
        assert_eq!(actions, [KEY_ADDED, KEY_REMOVED]);
        assert!(matches!(
            h.diff(&set(&key("k1", X2, ""))),
            Err(HistoryError::Conflict { .. })
        ));
        let again = KeyHistory::from_json(&h.to_json()).unwrap();
        assert!(again.key("a", "k1").is_some());
        assert!(again.diff(&revoked).unwrap().is_empty());
    }
}
