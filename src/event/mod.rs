//! The agent action event (`vigil.event/v1`, contract section 1).
//!
//! An [`Event`] is a parsed I-JSON object with its canonical bytes and
//! hashes. [`schema::check`] applies the contract's field rules;
//! [`signature`] holds the strict Ed25519 rules. No I/O here.

pub mod edwards;
pub mod fields;
pub mod schema;
pub mod signature;
pub mod tables;

use sha2::{Digest, Sha256};

use crate::json::{self, Canonical, Value};

pub use fields::Fields;

/// The `spec` value of every event.
pub const EVENT_SPEC: &str = "vigil.event/v1";
/// The agent id reserved for the pipeline's own events.
pub const PIPELINE_AGENT: &str = "vigil";
/// Largest event accepted, in bytes as sent.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Hash {
    Sha256::digest(data).into()
}

/// A parsed event object with its canonical forms and hashes.
#[derive(Debug, Clone)]
pub struct Event {
    /// The object as parsed (members in input order).
    pub value: Value,
    /// JCS of the event without `signature` (the signed message), and whole.
    pub canonical: Canonical,
    /// SHA-256 of JCS(event without signature).
    pub content_hash: Hash,
    /// SHA-256 of JCS(whole event).
    pub event_hash: Hash,
}

/// What the log writer and the answers need of a judged event: its
/// identity, its hashes and, once accepted, the fields detection reads.
///
/// Judging reduces each [`Event`] to this on the thread that parsed it, so
/// the parsed tree is freed where it was allocated, and the writer (one
/// thread for the whole pipeline) moves a few strings instead of a tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// `event_id`.
    pub event_id: String,
    /// `agent_id`.
    pub agent_id: String,
    /// `key_id`, `""` when absent.
    pub key_id: String,
    /// `correlation_id`, `""` when absent.
    pub correlation_id: String,
    /// `trace_id`, `""` when absent.
    pub trace_id: String,
    /// `span_id`, `""` when absent.
    pub span_id: String,
    /// SHA-256 of JCS(event without signature).
    pub content_hash: Hash,
    /// SHA-256 of JCS(whole event).
    pub event_hash: Hash,
    /// The detection fields, when `with_fields` was asked (accepted events).
    pub fields: Option<Fields>,
}

impl Summary {
    /// Reduces `event`, taking its strings out of the tree rather than
    /// copying them; the fields are read only when `with_fields`.
    pub fn of(event: Event, with_fields: bool) -> Summary {
        let fields = if with_fields {
            Fields::of(&event.value)
        } else {
            None
        };
        let mut members = event.value.into_members().unwrap_or_default();
        let mut take = |name: &str| {
            members
                .iter_mut()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| match v {
                    Value::String(s) => Some(std::mem::take(s)),
                    _ => None,
                })
                .unwrap_or_default()
        };
        Summary {
            event_id: take("event_id"),
            agent_id: take("agent_id"),
            key_id: take("key_id"),
            correlation_id: take("correlation_id"),
            trace_id: take("trace_id"),
            span_id: take("span_id"),
            content_hash: event.content_hash,
            event_hash: event.event_hash,
            fields,
        }
    }
}

/// Why an input cannot be receipted: it is answered and quarantined instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unidentifiable {
    /// Not I-JSON, not an object, or without a string `event_id`.
    Unparseable(String),
    /// Without a string `agent_id`, or naming an agent with no key at all.
    UnknownAgent(String),
}

impl Unidentifiable {
    /// The bare reason the contract names (`unparseable`, `unknown_agent`).
    pub fn reason(&self) -> &'static str {
        match self {
            Unidentifiable::Unparseable(_) => "unparseable",
            Unidentifiable::UnknownAgent(_) => "unknown_agent",
        }
    }

    /// The human-readable explanation.
    pub fn message(&self) -> &str {
        match self {
            Unidentifiable::Unparseable(m) | Unidentifiable::UnknownAgent(m) => m,
        }
    }
}

impl Event {
    /// Parses raw bytes into an event that can be receipted: I-JSON, an
    /// object, with string `event_id` and `agent_id`. Whether the agent is
    /// known is the caller's question.
    pub fn parse(raw: &[u8]) -> Result<Event, Unidentifiable> {
        let value = json::parse(raw).map_err(|e| {
            Unidentifiable::Unparseable(format!("not I-JSON: {e}; send one JSON object per event"))
        })?;
        Event::from_value(value)
    }

    /// Wraps an already parsed value; see [`Event::parse`].
    pub fn from_value(value: Value) -> Result<Event, Unidentifiable> {
        let Value::Object(members) = &value else {
            return Err(Unidentifiable::Unparseable(format!(
                "the event is {}, not a JSON object",
                value.type_name()
            )));
        };
        match value.get("event_id") {
            Some(Value::String(_)) => {}
            Some(other) => {
                return Err(Unidentifiable::Unparseable(format!(
                    "event_id is {}; it must be a string (a UUIDv7 is recommended)",
                    other.type_name()
                )))
            }
            None => {
                return Err(Unidentifiable::Unparseable(
                    "the event has no event_id; every event needs a unique string event_id".into(),
                ))
            }
        }
        match value.get("agent_id") {
            Some(Value::String(_)) => {}
            Some(other) => {
                return Err(Unidentifiable::UnknownAgent(format!(
                    "agent_id is {}; it must be the string id of a registered agent",
                    other.type_name()
                )))
            }
            None => {
                return Err(Unidentifiable::UnknownAgent(
                    "the event has no agent_id; name the agent that signed it".into(),
                ))
            }
        }
        let canonical = Canonical::of_object(members, "signature");
        let content_hash = sha256(&canonical.without);
        let event_hash = sha256(&canonical.whole);
        Ok(Event {
            value,
            canonical,
            content_hash,
            event_hash,
        })
    }

    /// A string member, or `""` when it is absent or not a string.
    pub fn str_field(&self, name: &str) -> &str {
        self.value.get(name).and_then(Value::as_str).unwrap_or("")
    }

    /// The event id (always a string once parsed).
    pub fn event_id(&self) -> &str {
        self.str_field("event_id")
    }

    /// The agent id (always a string once parsed).
    pub fn agent_id(&self) -> &str {
        self.str_field("agent_id")
    }

    /// The signing key's id, `""` when absent.
    pub fn key_id(&self) -> &str {
        self.str_field("key_id")
    }

    /// The correlation id, `""` when absent.
    pub fn correlation_id(&self) -> &str {
        self.str_field("correlation_id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_keeps_what_is_receipted_and_answered() {
        let raw = br#"{"spec":"vigil.event/v1","event_id":"e1","agent_id":"a1","key_id":"k1",
            "correlation_id":"c1","trace_id":"t1","occurred_at":"2026-11-02T09:15:10Z",
            "action":"hr.read","resource":"emp/42","signature":"x"}"#;
        let event = Event::parse(raw).unwrap();
        let (content_hash, event_hash) = (event.content_hash, event.event_hash);
        let fields = Fields::of(&event.value);
        let s = Summary::of(event.clone(), true);
        assert_eq!(
            [
                &s.event_id,
                &s.agent_id,
                &s.key_id,
                &s.correlation_id,
                &s.trace_id,
                &s.span_id
            ],
            ["e1", "a1", "k1", "c1", "t1", ""]
        );
        assert_eq!((s.content_hash, s.event_hash), (content_hash, event_hash));
        assert_eq!(s.fields, fields);
        assert_eq!(s.fields.unwrap().resource.as_deref(), Some("emp/42"));
        assert_eq!(Summary::of(event, false).fields, None);
    }
}
