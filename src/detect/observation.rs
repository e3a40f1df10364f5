//! One log record as detection sees it: the receipt's verdict and the
//! event's fields that features are made of.

use crate::json::Value;
use crate::log::receipt::{ReceiptBody, Verdict};
use crate::time::Timestamp;

/// What the record says about the event.
#[derive(Debug, Clone, PartialEq)]
pub enum Judged {
    /// Accepted: the event teaches baselines unless it is flagged.
    Accepted(Fields),
    /// Rejected for this bare reason (`bad_signature`, ...): never teaches.
    Rejected(String),
}

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

/// One record of the log, for detection.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Its index in the log.
    pub index: u64,
    /// The agent.
    pub agent_id: String,
    /// The event id.
    pub event_id: String,
    /// The correlation id (`""` when absent).
    pub correlation_id: String,
    /// When the pipeline received it, in milliseconds (from the receipt).
    pub received_ms: i64,
    /// The agent's role (cohort), when its record names one.
    pub role: Option<String>,
    /// Accepted with its fields, or rejected.
    pub judged: Judged,
}

fn millis(t: Timestamp) -> i64 {
    (t.0 / 1_000_000) as i64
}

impl Observation {
    /// Reads a record. `None` for records detection does not look at:
    /// the pipeline's own events and events it cannot read.
    pub fn from_record(body: &ReceiptBody, event: &[u8], role: Option<String>) -> Option<Self> {
        if body.agent_id == crate::event::PIPELINE_AGENT {
            return None;
        }
        let received_ms = millis(Timestamp::parse_event_time(&body.received_at)?);
        let judged = match Verdict::parse(&body.verdict)? {
            Verdict::Accepted => Judged::Accepted(Fields::of_bytes(event)?),
            Verdict::Rejected(reason) => Judged::Rejected(reason.as_str().to_string()),
        };
        Some(Observation {
            index: body.index,
            agent_id: body.agent_id.clone(),
            event_id: body.event_id.clone(),
            correlation_id: body.correlation_id.clone(),
            received_ms,
            role,
            judged,
        })
    }
}

/// The members detection reads.
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
