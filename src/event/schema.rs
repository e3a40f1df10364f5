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

/// What a schema-valid event yields for the later checks.
#[derive(Debug, Clone)]
pub struct Checked {
    /// `occurred_at`, parsed.
    pub occurred_at: Timestamp,
    /// The decoded 64-byte signature.
    pub signature: [u8; 64],
}

/// Checks `event` (whose bytes as sent were `raw_len` long) against the
/// contract's rules; the error names the field and how to fix it.
pub fn check(event: &Event, raw_len: usize) -> Result<Checked, String> {
    if raw_len > MAX_EVENT_BYTES {
        return Err(format!(
            "the event is {raw_len} bytes; events are at most {MAX_EVENT_BYTES} bytes as sent"
        ));
    }
    let depth = event.value.depth();
    if depth > MAX_DEPTH {
        return Err(format!(
            "the event nests {depth} levels deep; at most {MAX_DEPTH} are allowed"
        ));
    }
    let v = &event.value;
    match v.get("spec") {
        Some(Value::String(s)) if s == EVENT_SPEC => {}
        Some(other) => {
            return Err(format!(
                "spec must be \"{EVENT_SPEC}\", not {}",
                show(other)
            ))
        }
        None => return Err(format!("spec is missing; set it to \"{EVENT_SPEC}\"")),
    }
    for name in ["event_id", "agent_id", "key_id", "correlation_id"] {
        let s = required_str(v, name)?;
        check_id(name, s)?;
    }
    required_str(v, "action")?;
    let occurred_at = time_field(v, "occurred_at")?.ok_or_else(|| {
        "occurred_at is missing; give the time the agent acted, like 2026-11-02T09:15:00.000Z"
            .to_string()
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
    for name in ["bytes", "records"] {
        match v.get(name) {
            None => {}
            Some(Value::Number(n)) if n.fract() == 0.0 && (0.0..=MAX_COUNT).contains(n) => {}
            Some(other) => {
                return Err(format!(
                    "{name} must be a whole number from 0 to 2^53-1, not {}",
                    show(other)
                ))
            }
        }
    }
    match v.get("delegation") {
        None => {}
        Some(Value::Array(items)) if items.iter().all(|i| matches!(i, Value::String(_))) => {}
        Some(other) => {
            return Err(format!(
                "delegation must be an array of agent id strings, outermost first, not {}",
                show(other)
            ))
        }
    }
    match v.get("attributes") {
        None | Some(Value::Object(_)) => {}
        Some(other) => return Err(format!("attributes must be an object, not {}", show(other))),
    }
    let sig = match v.get("signature") {
        Some(Value::String(s)) => s,
        Some(other) => return Err(format!("signature must be a string, not {}", show(other))),
        None => {
            return Err(
                "signature is missing; sign the JCS form of the event with the agent's key \
                        (vigil sign does it)"
                    .into(),
            )
        }
    };
    let signature = signature::decode_signature(sig)?;
    Ok(Checked {
        occurred_at,
        signature,
    })
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) if s.chars().count() <= 40 => format!("{s:?}"),
        Value::String(_) => "a long string".into(),
        other => other.type_name().into(),
    }
}

fn required_str<'a>(v: &'a Value, name: &str) -> Result<&'a str, String> {
    match v.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!("{name} must be a string, not {}", show(other))),
        None => Err(format!("{name} is missing; it is required")),
    }
}

fn optional_str<'a>(v: &'a Value, name: &str) -> Result<Option<&'a str>, String> {
    match v.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("{name} must be a string, not {}", show(other))),
    }
}

/// Checks an id (`agent_id`, `kid`, `event_id`...): 1 to 128 characters
/// of letters, digits and `._:@#/+=-`.
pub fn check_id(name: &str, s: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._:@#/+=-".contains(c);
    if s.is_empty() || s.chars().count() > MAX_ID_CHARS {
        return Err(format!(
            "{name} must be 1 to {MAX_ID_CHARS} characters long"
        ));
    }
    if let Some(bad) = s.chars().find(|&c| !allowed(c)) {
        return Err(format!(
            "{name} contains {bad:?}; ids use only letters, digits and . _ : @ # / + = -"
        ));
    }
    Ok(())
}

fn check_hex(name: &str, s: &str, len: usize) -> Result<(), String> {
    if s.len() != len || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "{name} must be {len} lowercase hex digits (W3C Trace Context)"
        ));
    }
    Ok(())
}

fn time_field(v: &Value, name: &str) -> Result<Option<Timestamp>, String> {
    match optional_str(v, name)? {
        None => Ok(None),
        Some(s) => Timestamp::parse_event_time(s).map(Some).ok_or_else(|| {
            format!(
                "{name} {s:?} is not a UTC time like 2026-11-02T09:15:00.000Z \
                 (YYYY-MM-DDTHH:MM:SS, up to 9 fraction digits, then Z)"
            )
        }),
    }
}

fn one_of(v: &Value, name: &str, allowed: &[&str]) -> Result<(), String> {
    match optional_str(v, name)? {
        Some(s) if !allowed.contains(&s) => {
            Err(format!("{name} {s:?} is not one of {}", allowed.join(", ")))
        }
        _ => Ok(()),
    }
}
