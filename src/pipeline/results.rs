//! What a batch is answered with (contract section 5, `results`).

use serde::Serialize;

use crate::event::{Summary, Unidentifiable};
use crate::json::write_jcs_string;
use crate::log::receipt::{ServedReceipt, Verdict};

/// The status of one item in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A new accepted receipt.
    Accepted,
    /// The same event was accepted before; its receipt is returned.
    Duplicate,
    /// A rejection receipt, or quarantined without a receipt.
    Rejected,
}

impl Status {
    /// The status as an answer spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Duplicate => "duplicate",
            Status::Rejected => "rejected",
        }
    }
}

impl Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
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
    /// Appends the result as JSON: the bytes serde writes (same members,
    /// order and escapes), without serde's machinery or re-checking the
    /// receipt's text; a batch answer holds one per item.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        if let Some(id) = &self.event_id {
            out.extend_from_slice(b"\"event_id\":");
            write_jcs_string(id, out);
            out.push(b',');
        }
        out.extend_from_slice(b"\"status\":\"");
        out.extend_from_slice(self.status.as_str().as_bytes());
        out.push(b'"');
        if let Some(reason) = &self.reason {
            out.extend_from_slice(b",\"reason\":");
            write_jcs_string(reason, out);
        }
        if let Some(receipt) = &self.receipt {
            out.extend_from_slice(b",\"receipt\":");
            out.extend_from_slice(receipt.json().as_bytes());
        }
        if let Some(error) = &self.error {
            out.extend_from_slice(b",\"error\":");
            write_jcs_string(error, out);
        }
        out.push(b'}');
    }

    fn of(event: &Summary, status: Status) -> ItemResult {
        ItemResult {
            event_id: Some(event.event_id.clone()),
            agent_id: Some(event.agent_id.clone()),
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
    pub fn accepted(event: &Summary, receipt: ServedReceipt) -> ItemResult {
        ItemResult {
            receipt: Some(receipt),
            ..ItemResult::of(event, Status::Accepted)
        }
    }

    /// A duplicate of an accepted receipt.
    pub fn duplicate(event: &Summary, receipt: Option<ServedReceipt>) -> ItemResult {
        ItemResult {
            receipt,
            ..ItemResult::of(event, Status::Duplicate)
        }
    }

    /// A rejection, new or repeated.
    pub fn rejected(
        event: &Summary,
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

/// Appends the answer to a batch (contract section 5): how many items were
/// accepted, duplicates and rejected, then each item's result in order.
pub fn write_batch_answer(results: &[ItemResult], out: &mut Vec<u8>) {
    let count = |s: Status| results.iter().filter(|r| r.status == s).count();
    let head = format!(
        "{{\"accepted\":{},\"duplicates\":{},\"rejected\":{},\"results\":[",
        count(Status::Accepted),
        count(Status::Duplicate),
        count(Status::Rejected)
    );
    out.extend_from_slice(head.as_bytes());
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        r.write_json(out);
    }
    out.extend_from_slice(b"]}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The answer as serde wrote it before it was written by hand.
    #[derive(Serialize)]
    struct BatchAnswer<'a> {
        accepted: usize,
        duplicates: usize,
        rejected: usize,
        results: &'a [ItemResult],
    }

    fn status() -> impl Strategy<Value = Status> {
        prop_oneof![
            Just(Status::Accepted),
            Just(Status::Duplicate),
            Just(Status::Rejected)
        ]
    }

    fn item() -> impl Strategy<Value = ItemResult> {
        let text = || proptest::option::of(any::<String>());
        (status(), text(), text(), text(), any::<bool>()).prop_map(
            |(status, event_id, reason, error, with_receipt)| ItemResult {
                event_id,
                agent_id: Some("not in the answer".into()),
                status,
                reason,
                receipt: with_receipt.then(|| {
                    ServedReceipt::from_jcs(br#"{"a":"\u0001\n","b":[1,2]}"#, &[7; 32], &[9; 32])
                }),
                error,
                committed: None,
            },
        )
    }

    proptest! {
        #[test]
        fn the_hand_written_answer_is_what_serde_writes(
            items in proptest::collection::vec(item(), 0..6)
        ) {
            let mut ours = Vec::new();
            write_batch_answer(&items, &mut ours);
            let count = |s: Status| items.iter().filter(|r| r.status == s).count();
            let serde = serde_json::to_vec(&BatchAnswer {
                accepted: count(Status::Accepted),
                duplicates: count(Status::Duplicate),
                rejected: count(Status::Rejected),
                results: &items,
            })
            .expect("serialisable");
            prop_assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(serde).unwrap());
        }
    }
}
