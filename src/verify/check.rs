//! The checks of one record that need nothing but the record and the keys
//! in force at its place in the log: run in parallel.

use crate::event::schema::{check as check_schema, SchemaError};
use crate::event::tables::TableCache;
use crate::event::{Event, Hash, PIPELINE_AGENT};
use crate::keys::history::KeyHistory;
use crate::log::merkle::leaf_hash;
use crate::log::receipt::{check_canonical, BodyError, ReceiptBody, Verdict};
use crate::store::dedupe::{keys_of, Dedupe, Key};
use crate::store::walk::WalkRecord;
use crate::time::Timestamp;

/// What the sequential checks need of a record that passed these.
pub struct Checked {
    /// The parsed receipt body.
    pub body: ReceiptBody,
    /// Its verdict.
    pub verdict: Verdict,
    /// Its leaf hash.
    pub leaf: Hash,
    /// The fingerprint of its (agent, event id) claim, when accepted.
    pub claim: Option<Key>,
    /// The parsed event, kept when it is a `vigil` event (for key events).
    pub event: Option<Event>,
    /// How the duplicate index disagrees with this record, if it does
    /// (reported after the checks that say more about the record itself).
    pub index_problem: Option<RecordError>,
}

/// What is wrong with a record: the verifier reports it with the record's
/// place.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    /// The receipt body does not parse as a receipt (the parser's reason).
    #[error("the receipt body is not a receipt: {0}")]
    NotAReceipt(String),
    /// The body disagrees with its place or is not canonical.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// The stored event does not parse (why).
    #[error("the stored event does not parse: {0}")]
    EventUnparseable(String),
    /// The stored event's hash is not the body's `event_hash`.
    #[error("the stored event hashes to {stored}, not the receipt's event_hash {body}")]
    EventHash {
        /// The stored event's hash.
        stored: String,
        /// The body's.
        body: String,
    },
    /// An id of the body is not the event's.
    #[error("the receipt's {name} {body:?} is not the event's {event:?}")]
    Id {
        /// The id's member name.
        name: &'static str,
        /// The body's value.
        body: String,
        /// The event's.
        event: String,
    },
    /// An accepted event breaks the event schema.
    #[error("an accepted event breaks the event schema: {0}")]
    Schema(#[source] SchemaError),
    /// No key established before this accepted event signs it.
    #[error(
        "no key {kid:?} of agent {agent:?} is established before this accepted event (by the log's key history or --keys); \
         for a log written before key history was logged, pass the agent's JWKS with --keys"
    )]
    NoKey {
        /// The key id.
        kid: String,
        /// The agent.
        agent: String,
    },
    /// The accepted event's signature does not verify.
    #[error("the accepted event's signature does not verify with key {kid:?} of agent {agent:?}")]
    BadSignature {
        /// The key id.
        kid: String,
        /// The agent.
        agent: String,
    },
    /// The accepted event falls outside its key's validity.
    #[error("the accepted event occurred at {at} {when} key {kid:?} {what} ({limit})")]
    OutsideValidity {
        /// When it occurred.
        at: String,
        /// "before" or "after".
        when: &'static str,
        /// The key id.
        kid: String,
        /// "was valid", "expired" or "was revoked".
        what: &'static str,
        /// The limit it crossed.
        limit: String,
    },
    /// The same event of the same agent is accepted twice.
    #[error("event {event_id:?} of agent {agent_id:?} is accepted a second time")]
    AcceptedTwice {
        /// The event id.
        event_id: String,
        /// The agent.
        agent_id: String,
    },
    /// The duplicate index cannot be read (why).
    #[error("cannot read the duplicate index: {0}")]
    IndexUnreadable(String),
    /// The duplicate index disagrees with the log (what it holds).
    #[error(
        "the duplicate index (DIR/index) disagrees with the log at this record ({0}); \
         delete DIR/index and start vigil to rebuild it from the log"
    )]
    IndexDisagrees(String),
    /// A tile disagrees with the log.
    #[error(transparent)]
    Tile(#[from] super::tiles::TileError),
}

/// What checking a record needs besides it: the keys in force at its place,
/// the verification tables, and the duplicate index to compare (if any).
#[derive(Clone, Copy)]
pub struct CheckContext<'a> {
    /// The key history as of the record's place in the log.
    pub keys: &'a KeyHistory,
    /// Per-key tables for faster verification.
    pub tables: &'a TableCache,
    /// The duplicate index, when the directory has one.
    pub index: Option<&'a Dedupe>,
}

/// Checks one record on its own: the body parses and is canonical, the
/// stored event parses and hashes to the body's `event_hash`, its ids are
/// the body's, and an accepted event is schema-valid and signed by a key
/// the history holds, valid at its `occurred_at`.
pub fn check_record(rec: &WalkRecord, ctx: &CheckContext<'_>) -> Result<Checked, RecordError> {
    let (keys, index) = (ctx.keys, ctx.index);
    let body: ReceiptBody =
        serde_json::from_slice(&rec.body).map_err(|e| RecordError::NotAReceipt(e.to_string()))?;
    let verdict = body
        .verdict()
        .ok_or_else(|| BodyError::Verdict(body.verdict.clone()))?;
    check_canonical(&body, &rec.body)?;
    let event = Event::parse(&rec.event)
        .map_err(|u| RecordError::EventUnparseable(u.message().to_string()))?;
    let stored = crate::hexenc::encode(event.event_hash);
    if stored != body.event_hash {
        return Err(RecordError::EventHash {
            stored,
            body: body.event_hash.clone(),
        });
    }
    for (name, in_body) in [
        ("event_id", &body.event_id),
        ("agent_id", &body.agent_id),
        ("key_id", &body.key_id),
        ("correlation_id", &body.correlation_id),
    ] {
        if event.str_field(name) != in_body {
            return Err(RecordError::Id {
                name,
                body: in_body.clone(),
                event: event.str_field(name).to_string(),
            });
        }
    }
    if verdict == Verdict::Accepted {
        check_signature(&event, rec.event.len(), &body, keys, ctx.tables)?;
    }
    let index_problem = index
        .filter(|i| body.index < i.covered())
        .and_then(|i| check_index(i, body.index, &keys_of(&body)).err());
    let vigil = body.agent_id == PIPELINE_AGENT;
    Ok(Checked {
        leaf: leaf_hash(&rec.body),
        claim: (verdict == Verdict::Accepted)
            .then(|| Key::accepted(&body.agent_id, &body.event_id)),
        body,
        verdict,
        event: vigil.then_some(event),
        index_problem,
    })
}

/// The duplicate index holds this record's entries: its claim or
/// rejection seen at this index, its latest rejection at this index or
/// later.
fn check_index(index: &Dedupe, at: u64, keys: &[Key]) -> Result<(), RecordError> {
    for (n, k) in keys.iter().enumerate() {
        let got = index
            .get_for(k, at)
            .map_err(|e| RecordError::IndexUnreadable(e.to_string()))?;
        let ok = match got {
            Some(i) if n == 0 && keys.len() == 2 => i >= at,
            Some(i) => i == at,
            None => false,
        };
        if !ok {
            return Err(RecordError::IndexDisagrees(format!("{got:?}")));
        }
    }
    Ok(())
}

fn check_signature(
    event: &Event,
    raw_len: usize,
    body: &ReceiptBody,
    keys: &KeyHistory,
    tables: &TableCache,
) -> Result<(), RecordError> {
    let checked = check_schema(event, raw_len).map_err(RecordError::Schema)?;
    let (agent, kid) = (&body.agent_id, &body.key_id);
    let key = if agent == PIPELINE_AGENT {
        keys.pipeline_key(kid).copied()
    } else {
        keys.key(agent, kid).map(|k| k.key.key)
    };
    let key = key.ok_or_else(|| RecordError::NoKey {
        kid: kid.clone(),
        agent: agent.clone(),
    })?;
    if !tables.verify(&key, &event.canonical.without, &checked.signature) {
        return Err(RecordError::BadSignature {
            kid: kid.clone(),
            agent: agent.clone(),
        });
    }
    if let Some(k) = keys.key(agent, kid) {
        check_validity(&k.key, checked.occurred_at, kid)?;
    }
    Ok(())
}

fn check_validity(
    key: &crate::keys::AgentKey,
    at: Timestamp,
    kid: &str,
) -> Result<(), RecordError> {
    let outside = |when, what, limit: Timestamp| RecordError::OutsideValidity {
        at: at.to_rfc3339_millis(),
        when,
        kid: kid.to_string(),
        what,
        limit: limit.to_rfc3339_millis(),
    };
    if let Some(nbf) = key.nbf.filter(|&n| at < n) {
        return Err(outside("before", "was valid", nbf));
    }
    if let Some(exp) = key.exp.filter(|&e| at >= e) {
        return Err(outside("after", "expired", exp));
    }
    if let Some(r) = key.revoked_at.filter(|&r| at >= r) {
        return Err(outside("after", "was revoked", r));
    }
    Ok(())
}
