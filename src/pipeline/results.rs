//! What a batch is answered with (contract section 5, `results`).

use serde::Serialize;

use crate::event::{Event, Unidentifiable};
use crate::log::receipt::{ServedReceipt, Verdict};

/// The status of one item in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A new accepted receipt.
    Accepted,
    /// The same event was accepted before; its receipt is returned.
    Duplicate,
    /// A rejection receipt, or quarantined without a receipt.
    Rejected,
}

/// The answer for one item.
#[derive(Debug, Clone, Serialize)]
pub struct ItemResult {
    /// The event's id, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The event's agent, when it had one (not part of the answer).
    #[serde(skip)]
    pub agent_id: Option<String>,
    /// What happened.
    pub status: Status,
    /// The bare reason of a rejection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The receipt, when the item has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<ServedReceipt>,
    /// What was wrong and how to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When its group was sequenced and made durable (only while tracing).
    #[serde(skip)]
    pub committed: Option<Committed>,
}

/// When a group commit ran, for the `append` and `fsync` spans.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    /// The writer began sequencing the group.
    pub sequenced: std::time::SystemTime,
    /// It began writing the group durably.
    pub writing: std::time::SystemTime,
    /// The group (records, quarantine, index) was durable.
    pub durable: std::time::SystemTime,
}

impl ItemResult {
    fn of(event: &Event, status: Status) -> ItemResult {
        ItemResult {
            event_id: Some(event.event_id().to_string()),
            agent_id: Some(event.agent_id().to_string()),
            status,
            reason: None,
            receipt: None,
            error: None,
            committed: None,
        }
    }

    /// Quarantined without a receipt.
    pub fn quarantined(u: &Unidentifiable) -> ItemResult {
        ItemResult {
            event_id: None,
            agent_id: None,
            status: Status::Rejected,
            reason: Some(u.reason().to_string()),
            receipt: None,
            error: Some(u.message().to_string()),
            committed: None,
        }
    }

    /// A new accepted receipt.
    pub fn accepted(event: &Event, receipt: ServedReceipt) -> ItemResult {
        ItemResult {
            receipt: Some(receipt),
            ..ItemResult::of(event, Status::Accepted)
        }
    }

    /// A duplicate of an accepted receipt.
    pub fn duplicate(event: &Event, receipt: Option<ServedReceipt>) -> ItemResult {
        ItemResult {
            receipt,
            ..ItemResult::of(event, Status::Duplicate)
        }
    }

    /// A rejection, new or repeated.
    pub fn rejected(
        event: &Event,
        verdict: Verdict,
        error: Option<String>,
        receipt: Option<ServedReceipt>,
    ) -> ItemResult {
        let reason = match verdict {
            Verdict::Rejected(r) => Some(r.as_str().to_string()),
            Verdict::Accepted => None,
        };
        ItemResult {
            reason,
            receipt,
            error,
            ..ItemResult::of(event, Status::Rejected)
        }
    }
}
