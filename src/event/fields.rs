//! The members of an accepted event that detection, hygiene and the
//! response stage read, taken from the parsed event or straight from its
//! bytes (only those members are parsed).

use crate::json::Value;
use crate::time::Timestamp;

/// An accepted event's fields used by the detectors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields {
    /// `occurred_at`, in milliseconds since the epoch.
    pub occurred_ms: i64,
    /// `action`.
    pub action: String,
    /// `resource`.
    pub resource: Option<String>,
    /// `principal`.
    pub principal: Option<String>,
    /// `source_ip`.
    pub source_ip: Option<String>,
    /// `outcome` is `failure` or `denied`.
    pub failed: bool,
    /// `sensitivity` is `high` or `critical`.
    pub sensitive: bool,
    /// `sensitivity`: 0 low (the default), 1 medium, 2 high, 3 critical.
    pub sensitivity: u8,
    /// `bytes` + `records`, when either is given.
    pub volume: Option<f64>,
    /// `lease_id`.
    pub lease_id: Option<String>,
    /// `lease_expires_at`, in milliseconds since the epoch.
    pub lease_expires_ms: Option<i64>,
    /// Length of `delegation`.
    pub depth: u8,
}

/// The members [`Fields`] reads.
const WANTED: [&str; 12] = [
    "occurred_at",
    "action",
    "resource",
    "principal",
    "source_ip",
    "outcome",
    "sensitivity",
    "bytes",
    "records",
    "lease_id",
    "lease_expires_at",
    "delegation",
];

impl Fields {
    /// The fields of a parsed event (`None` without a valid `occurred_at`).
    pub fn of(e: &Value) -> Option<Fields> {
        fields(e)
    }

    /// The fields of an accepted event's bytes, parsing only the members
    /// detection reads (the others, `attributes` above all, are skipped).
    pub fn of_bytes(raw: &[u8]) -> Option<Fields> {
        let mut picked = Vec::with_capacity(WANTED.len());
        for m in crate::json::object_members(raw).ok()? {
            let quoted = &raw[m.name.clone()];
            let name = if quoted.contains(&b'\\') {
                match crate::json::parse(quoted).ok()?.as_str() {
                    Some(s) => s.to_string(),
                    None => continue,
                }
            } else {
                std::str::from_utf8(quoted.get(1..quoted.len() - 1)?)
                    .ok()?
                    .to_string()
            };
            if WANTED.contains(&name.as_str()) {
                picked.push((name, crate::json::parse(&raw[m.value.clone()]).ok()?));
            }
        }
        fields(&Value::Object(picked))
    }
}

fn fields(e: &Value) -> Option<Fields> {
    let str_field = |name: &str| e.get(name).and_then(Value::as_str).unwrap_or("");
    let text = |name: &str| match e.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let number = |name: &str| match e.get(name) {
        Some(Value::Number(n)) => Some(*n),
        _ => None,
    };
    let volume = match (number("bytes"), number("records")) {
        (None, None) => None,
        (b, r) => Some(b.unwrap_or(0.0) + r.unwrap_or(0.0)),
    };
    let depth = match e.get("delegation") {
        Some(Value::Array(a)) => a.len().min(255) as u8,
        _ => 0,
    };
    Some(Fields {
        occurred_ms: millis(Timestamp::parse_event_time(str_field("occurred_at"))?),
        action: str_field("action").to_string(),
        resource: text("resource"),
        principal: text("principal"),
        source_ip: text("source_ip"),
        failed: matches!(str_field("outcome"), "failure" | "denied"),
        sensitive: matches!(str_field("sensitivity"), "high" | "critical"),
        sensitivity: match str_field("sensitivity") {
            "medium" => 1,
            "high" => 2,
            "critical" => 3,
            _ => 0,
        },
        volume,
        lease_id: text("lease_id"),
        lease_expires_ms: text("lease_expires_at")
            .and_then(|t| Timestamp::parse_event_time(&t))
            .map(millis),
        depth,
    })
}

/// Milliseconds since the epoch.
pub(crate) fn millis(t: Timestamp) -> i64 {
    (t.0 / 1_000_000) as i64
}
