//! The field rules of contract section 1; a broken rule is `rejected:schema`.

use super::{signature, Event, EVENT_SPEC, MAX_EVENT_BYTES};
use crate::json::Value;
use crate::time::Timestamp;

/// Deepest nesting an event may have.
pub const MAX_DEPTH: usize = 32;
/// Longest id (`event_id`, `agent_id`, `key_id`, `correlation_id`).
pub const MAX_ID_CHARS: usize = 128;
/// Largest `bytes` / `records` value (2^53 - 1).
pub const MAX_COUNT: f64 = 9_007_199_254_740_991.0;

/// [`EVENT_SPEC`] quoted, and how to set it (checked in the tests).
const SPEC_QUOTED: &str = "\"vigil.event/v1\"";
const SET_SPEC: &str = "set it to \"vigil.event/v1\"";

/// What a schema-valid event yields for the later checks.
#[derive(Debug, Clone)]
pub struct Checked {
    /// `occurred_at`, parsed.
    pub occurred_at: Timestamp,
    /// The decoded 64-byte signature.
    pub signature: [u8; 64],
}

/// A broken field rule: what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    /// The event's bytes as sent (their length) exceed [`MAX_EVENT_BYTES`].
    #[error("the event is {0} bytes; events are at most {MAX_EVENT_BYTES} bytes as sent")]
    TooLarge(usize),
    /// The event nests deeper (its depth) than [`MAX_DEPTH`].
    #[error("the event nests {0} levels deep; at most {MAX_DEPTH} are allowed")]
    TooDeep(usize),
    /// A required member is missing.
    #[error("{name} is missing; {fix}")]
    Missing {
        /// The member.
        name: &'static str,
        /// What to give it.
        fix: &'static str,
    },
    /// A member holds something else than it must.
    #[error("{name} must be {expected}, not {found}")]
    Wrong {
        /// The member.
        name: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What it is (a short string or a JSON type).
        found: String,
    },
    /// An id is empty or longer than [`MAX_ID_CHARS`].
    #[error("{name} must be 1 to {MAX_ID_CHARS} characters long")]
    IdLength {
        /// The id's name.
        name: String,
    },
    /// An id holds a character ids may not.
    #[error("{name} contains {bad:?}; ids use only letters, digits and . _ : @ # / + = -")]
    IdCharacter {
        /// The id's name.
        name: String,
        /// The first character not allowed.
        bad: char,
    },
    /// A trace or span id is not lowercase hex of its length.
    #[error("{name} must be {len} lowercase hex digits (W3C Trace Context)")]
    Hex {
        /// The member.
        name: &'static str,
        /// Its length in hex digits.
        len: usize,
    },
    /// A time is not the contract's UTC form.
    #[error(
        "{name} {value:?} is not a UTC time like 2026-11-02T09:15:00.000Z \
         (YYYY-MM-DDTHH:MM:SS, up to 9 fraction digits, then Z)"
    )]
    Time {
        /// The member.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// A value outside its member's list.
    #[error("{name} {value:?} is not one of {allowed}")]
    NotOneOf {
        /// The member.
        name: &'static str,
        /// Its value.
        value: String,
        /// The values allowed, comma-separated.
        allowed: String,
    },
    /// The signature member does not decode.
    #[error(transparent)]
    Signature(#[from] signature::SignatureEncodingError),
}

/// Checks `event` (whose bytes as sent were `raw_len` long) against the
/// contract's rules; the error names the field and how to fix it.
pub fn check(event: &Event, raw_len: usize) -> Result<Checked, SchemaError> {
    if raw_len > MAX_EVENT_BYTES {
        return Err(SchemaError::TooLarge(raw_len));
    }
    let depth = event.value.depth();
    if depth > MAX_DEPTH {
        return Err(SchemaError::TooDeep(depth));
    }
    let v = &event.value;
    match v.get("spec") {
        Some(Value::String(s)) if s == EVENT_SPEC => {}
        Some(other) => return Err(wrong("spec", SPEC_QUOTED, other)),
        None => {
            return Err(SchemaError::Missing {
                name: "spec",
                fix: SET_SPEC,
            })
        }
    }
    for name in ["event_id", "agent_id", "key_id", "correlation_id"] {
        let s = required_str(v, name)?;
        check_id(name, s)?;
    }
    required_str(v, "action")?;
    let occurred_at = time_field(v, "occurred_at")?.ok_or(SchemaError::Missing {
        name: "occurred_at",
        fix: "give the time the agent acted, like 2026-11-02T09:15:00.000Z",
    })?;
    for name in [
        "session_id",
        "principal",
        "resource",
        "lease_id",
        "source_ip",
        "justification",
    ] {
        optional_str(v, name)?;
    }
    if let Some(t) = optional_str(v, "trace_id")? {
        check_hex("trace_id", t, 32)?;
    }
    if let Some(s) = optional_str(v, "span_id")? {
        check_hex("span_id", s, 16)?;
    }
    time_field(v, "lease_expires_at")?;
    one_of(v, "sensitivity", &["low", "medium", "high", "critical"])?;
    one_of(v, "outcome", &["success", "failure", "denied"])?;
    check_shapes(v)?;
    let signature = match v.get("signature") {
        Some(Value::String(s)) => signature::decode_signature(s)?,
        Some(other) => return Err(wrong("signature", "a string", other)),
        None => {
            return Err(SchemaError::Missing {
                name: "signature",
                fix: "sign the JCS form of the event with the agent's key (vigil sign does it)",
            })
        }
    };
    Ok(Checked {
        occurred_at,
        signature,
    })
}

/// The counts, `delegation` and `attributes`.
fn check_shapes(v: &Value) -> Result<(), SchemaError> {
    for name in ["bytes", "records"] {
        match v.get(name) {
            None => {}
            Some(Value::Number(n)) if n.fract() == 0.0 && (0.0..=MAX_COUNT).contains(n) => {}
            Some(other) => return Err(wrong(name, "a whole number from 0 to 2^53-1", other)),
        }
    }
    match v.get("delegation") {
        None => {}
        Some(Value::Array(items)) if items.iter().all(|i| matches!(i, Value::String(_))) => {}
        Some(other) => {
            return Err(wrong(
                "delegation",
                "an array of agent id strings, outermost first",
                other,
            ))
        }
    }
    match v.get("attributes") {
        None | Some(Value::Object(_)) => Ok(()),
        Some(other) => Err(wrong("attributes", "an object", other)),
    }
}

fn wrong(name: &'static str, expected: &'static str, found: &Value) -> SchemaError {
    SchemaError::Wrong {
        name,
        expected,
        found: show(found),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) if s.chars().count() <= 40 => format!("{s:?}"),
        Value::String(_) => "a long string".into(),
        other => other.type_name().into(),
    }
}

fn required_str<'a>(v: &'a Value, name: &'static str) -> Result<&'a str, SchemaError> {
    match v.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(wrong(name, "a string", other)),
        None => Err(SchemaError::Missing {
            name,
            fix: "it is required",
        }),
    }
}

fn optional_str<'a>(v: &'a Value, name: &'static str) -> Result<Option<&'a str>, SchemaError> {
    match v.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong(name, "a string", other)),
    }
}

/// Checks an id (`agent_id`, `kid`, `event_id`...): 1 to 128 characters
/// of letters, digits and `._:@#/+=-`.
pub fn check_id(name: &str, s: &str) -> Result<(), SchemaError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._:@#/+=-".contains(c);
    if s.is_empty() || s.chars().count() > MAX_ID_CHARS {
        return Err(SchemaError::IdLength { name: name.into() });
    }
    if let Some(bad) = s.chars().find(|&c| !allowed(c)) {
        return Err(SchemaError::IdCharacter {
            name: name.into(),
            bad,
        });
    }
    Ok(())
}

fn check_hex(name: &'static str, s: &str, len: usize) -> Result<(), SchemaError> {
    if s.len() != len || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(SchemaError::Hex { name, len });
    }
    Ok(())
}

fn time_field(v: &Value, name: &'static str) -> Result<Option<Timestamp>, SchemaError> {
    match optional_str(v, name)? {
        None => Ok(None),
        Some(s) => Timestamp::parse_event_time(s)
            .map(Some)
            .ok_or_else(|| SchemaError::Time {
                name,
                value: s.to_string(),
            }),
    }
}

fn one_of(v: &Value, name: &'static str, allowed: &[&str]) -> Result<(), SchemaError> {
    match optional_str(v, name)? {
        Some(s) if !allowed.contains(&s) => Err(SchemaError::NotOneOf {
            name,
            value: s.to_string(),
            allowed: allowed.join(", "),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_member_and_the_fix() {
        assert_eq!(SPEC_QUOTED, format!("\"{EVENT_SPEC}\""));
        assert_eq!(SET_SPEC, format!("set it to \"{EVENT_SPEC}\""));
        let event = |json: &str| Event::parse(json.as_bytes()).unwrap();
        let ids = r#""event_id":"e-1","agent_id":"a-1""#;
        let cases = [
            (
                format!(r#"{{{ids},"spec":"v0"}}"#),
                "spec must be \"vigil.event/v1\", not \"v0\"",
            ),
            (
                format!(r#"{{{ids}}}"#),
                "spec is missing; set it to \"vigil.event/v1\"",
            ),
            (
                format!(r#"{{{ids},"spec":"vigil.event/v1","key_id":7}}"#),
                "key_id must be a string, not a number",
            ),
            (
                r#"{"spec":"vigil.event/v1","event_id":"a b","agent_id":"a"}"#.to_string(),
                "event_id contains ' '; ids use only letters, digits and . _ : @ # / + = -",
            ),
        ];
        for (json, want) in cases {
            assert_eq!(
                check(&event(&json), json.len()).unwrap_err().to_string(),
                want
            );
        }
    }
}
