//! Receipt bodies (contract section 3).

use serde::{Deserialize, Serialize};

use crate::event::{sha256, Hash};
use crate::json::write_jcs_string;

/// The `spec` of every receipt.
pub const RECEIPT_SPEC: &str = "vigil.receipt/v1";

/// Why an event was rejected (the `rejected:<reason>` verdicts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Breaks a field rule of contract section 1.
    Schema,
    /// No key with this `kid` for this agent (or agent `vigil` from outside).
    UnknownKey,
    /// The signature does not verify strictly.
    BadSignature,
    /// `occurred_at` is before the key's `nbf`.
    KeyNotValidYet,
    /// `occurred_at` is at or after the key's `exp`.
    KeyExpired,
    /// The key was revoked before `occurred_at`, or too long ago.
    KeyRevoked,
    /// `occurred_at` is too far after the receipt time.
    ClockSkew,
    /// The agent is suspended or decommissioned.
    AgentNotActive,
    /// The same agent and event id were accepted with other content.
    Conflict,
}

impl Reason {
    /// Every reason, in the contract's check order.
    pub const ALL: [Reason; 9] = [
        Reason::Schema,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::KeyNotValidYet,
        Reason::KeyExpired,
        Reason::KeyRevoked,
        Reason::ClockSkew,
        Reason::AgentNotActive,
        Reason::Conflict,
    ];

    /// The bare reason (`bad_signature`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Schema => "schema",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::KeyNotValidYet => "key_not_valid_yet",
            Reason::KeyExpired => "key_expired",
            Reason::KeyRevoked => "key_revoked",
            Reason::ClockSkew => "clock_skew",
            Reason::AgentNotActive => "agent_not_active",
            Reason::Conflict => "conflict",
        }
    }
}

/// The verdict a receipt records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The event passed every check.
    Accepted,
    /// The first check that failed.
    Rejected(Reason),
}

impl Verdict {
    /// The verdict as written in a receipt (`accepted`, `rejected:schema`).
    pub fn as_string(self) -> String {
        match self {
            Verdict::Accepted => "accepted".into(),
            Verdict::Rejected(r) => format!("rejected:{}", r.as_str()),
        }
    }

    /// Parses a receipt's verdict string.
    pub fn parse(s: &str) -> Option<Verdict> {
        if s == "accepted" {
            return Some(Verdict::Accepted);
        }
        let reason = s.strip_prefix("rejected:")?;
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str() == reason)
            .map(Verdict::Rejected)
    }
}

/// A receipt body: what the log's leaf hash covers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptBody {
    /// Always [`RECEIPT_SPEC`].
    pub spec: String,
    /// The log's origin.
    pub log: String,
    /// Zero-based position in the log.
    pub index: u64,
    /// Copied from the event.
    pub event_id: String,
    /// Copied from the event.
    pub agent_id: String,
    /// Copied from the event (`""` when absent).
    pub key_id: String,
    /// Copied from the event (`""` when absent).
    pub correlation_id: String,
    /// Hex SHA-256 of JCS(whole event).
    pub event_hash: String,
    /// When the pipeline received the event (`YYYY-MM-DDTHH:MM:SS.sssZ`).
    pub received_at: String,
    /// `accepted` or `rejected:<reason>`.
    pub verdict: String,
    /// Hex chain hash of the previous receipt (64 zeros at index 0).
    pub prev: String,
}

impl ReceiptBody {
    /// The body's JCS bytes. All members are strings except `index`, and the
    /// member names are ASCII, so their order is fixed.
    pub fn to_jcs(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(420);
        let mut field = |name: &str, value: &str, first: bool| {
            out.extend_from_slice(if first { b"{\"" } else { b",\"" });
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            write_jcs_string(value, &mut out);
        };
        field("agent_id", &self.agent_id, true);
        field("correlation_id", &self.correlation_id, false);
        field("event_hash", &self.event_hash, false);
        field("event_id", &self.event_id, false);
        out.extend_from_slice(b",\"index\":");
        out.extend_from_slice(self.index.to_string().as_bytes());
        let mut field = |name: &str, value: &str| {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            write_jcs_string(value, &mut out);
        };
        field("key_id", &self.key_id);
        field("log", &self.log);
        field("prev", &self.prev);
        field("received_at", &self.received_at);
        field("spec", &self.spec);
        field("verdict", &self.verdict);
        out.push(b'}');
        out
    }

    /// The parsed verdict, when it is one the contract names.
    pub fn verdict(&self) -> Option<Verdict> {
        Verdict::parse(&self.verdict)
    }
}

/// How a stored receipt body disagrees with its place in the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Its `index` is not where it stands.
    #[error("the receipt says index {says} but stands at index {at}")]
    Index {
        /// The index the body gives.
        says: u64,
        /// Where it stands.
        at: u64,
    },
    /// Another `spec` than the receipt's.
    #[error("the receipt's spec is {0:?}")]
    Spec(String),
    /// Another log's origin.
    #[error("the receipt names log {names:?}, not {origin:?}")]
    Log {
        /// The origin it names.
        names: String,
        /// This log's.
        origin: String,
    },
    /// `prev` is not the chain hash of the record before.
    #[error("the receipt's prev {prev} is not the chain hash of the record before it ({want})")]
    Prev {
        /// The `prev` it gives.
        prev: String,
        /// The chain hash before it, in hex.
        want: String,
    },
    /// A verdict the contract does not name.
    #[error("the receipt's verdict {0:?} is not one the contract names")]
    Verdict(String),
    /// Not in canonical (JCS) form.
    #[error("the stored receipt body is not in canonical (JCS) form")]
    NotCanonical,
}

/// Checks a stored receipt body against its place in the log: its index,
/// spec, log, chain link and verdict (its canonical form is
/// [`check_canonical`]'s).
pub fn check_body(
    body: &ReceiptBody,
    index: u64,
    origin: &str,
    prev: &Hash,
) -> Result<(), BodyError> {
    if body.index != index {
        return Err(BodyError::Index {
            says: body.index,
            at: index,
        });
    }
    if body.spec != RECEIPT_SPEC {
        return Err(BodyError::Spec(body.spec.clone()));
    }
    if body.log != origin {
        return Err(BodyError::Log {
            names: body.log.clone(),
            origin: origin.to_string(),
        });
    }
    let want = crate::hexenc::encode(prev);
    if body.prev != want {
        return Err(BodyError::Prev {
            prev: body.prev.clone(),
            want,
        });
    }
    if body.verdict().is_none() {
        return Err(BodyError::Verdict(body.verdict.clone()));
    }
    Ok(())
}

/// Checks that a stored receipt body is in canonical (JCS) form.
pub fn check_canonical(body: &ReceiptBody, jcs: &[u8]) -> Result<(), BodyError> {
    if body.to_jcs() != jcs {
        return Err(BodyError::NotCanonical);
    }
    Ok(())
}

/// RFC 9162 leaf hash of a receipt body's JCS bytes.
pub fn leaf_hash(body_jcs: &[u8]) -> Hash {
    crate::log::merkle::leaf_hash(body_jcs)
}

/// The chain hash: SHA-256(prev || leaf_hash).
pub fn chain_hash(prev: &Hash, leaf: &Hash) -> Hash {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(prev);
    buf[32..].copy_from_slice(leaf);
    sha256(&buf)
}

/// A receipt as served: the body's members plus `leaf_hash` and `chain`,
/// as JSON text made straight from the body's JCS bytes (the answer to a
/// batch holds one per item, so nothing is parsed or cloned to make it,
/// nor parsed again to check it: JCS bytes with two more string members
/// are JSON by construction).
#[derive(Debug, Clone)]
pub struct ServedReceipt(Box<str>);

impl ServedReceipt {
    /// The served form of a body given its JCS bytes, leaf hash and chain.
    pub fn from_jcs(body_jcs: &[u8], leaf: &Hash, chain: &Hash) -> ServedReceipt {
        debug_assert!(body_jcs.last() == Some(&b'}'));
        let mut out = String::with_capacity(body_jcs.len() + 160);
        out.push_str(
            std::str::from_utf8(&body_jcs[..body_jcs.len() - 1]).expect("JCS output is UTF-8"),
        );
        out.push_str(",\"chain\":\"");
        crate::hexenc::encode_into(chain, &mut out);
        out.push_str("\",\"leaf_hash\":\"");
        crate::hexenc::encode_into(leaf, &mut out);
        out.push_str("\"}");
        ServedReceipt(out.into_boxed_str())
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        &self.0
    }
}

impl Serialize for ServedReceipt {
    /// As raw JSON (checked again here: batch answers are written by hand,
    /// this is for the odd answer made with serde).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_json::value::RawValue::from_string(self.0.to_string())
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}
