//! One log record as detection sees it: the receipt's verdict and the
//! event's fields that features are made of.

use crate::event::fields::millis;
use crate::log::receipt::Verdict;
use crate::store::view::LogRecord;
use crate::time::Timestamp;

pub use crate::event::Fields;

/// What the record says about the event.
#[derive(Debug, Clone, PartialEq)]
pub enum Judged {
    /// Accepted: the event teaches baselines unless it is flagged.
    Accepted(Fields),
    /// Rejected for this bare reason (`bad_signature`, ...): never teaches.
    Rejected(String),
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

impl Observation {
    /// Reads a record of the log (its fields are parsed once for every
    /// reader of a shared record). `None` for records detection does not
    /// look at: the pipeline's own events and events it cannot read.
    pub fn of(rec: &LogRecord, role: Option<String>) -> Option<Self> {
        let body = &rec.body;
        if body.agent_id == crate::event::PIPELINE_AGENT {
            return None;
        }
        let received_ms = millis(Timestamp::parse_event_time(&body.received_at)?);
        let judged = match Verdict::parse(&body.verdict)? {
            Verdict::Accepted => Judged::Accepted(rec.fields()?.clone()),
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
