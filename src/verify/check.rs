//! The checks of one record that need nothing but the record and the keys
//! in force at its place in the log: run in parallel.

use crate::event::schema::check as check_schema;
use crate::event::tables::TableCache;
use crate::event::{Event, Hash, PIPELINE_AGENT};
use crate::keys::history::KeyHistory;
use crate::log::merkle::leaf_hash;
use crate::log::receipt::{check_canonical, ReceiptBody, Verdict};
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
    pub index_problem: Option<String>,
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
pub fn check_record(rec: &WalkRecord, ctx: &CheckContext<'_>) -> Result<Checked, String> {
    let (keys, index) = (ctx.keys, ctx.index);
    let body: ReceiptBody = serde_json::from_slice(&rec.body)
        .map_err(|e| format!("the receipt body is not a receipt: {e}"))?;
    let verdict = body.verdict().ok_or_else(|| {
        format!(
            "the receipt's verdict {:?} is not one the contract names",
            body.verdict
        )
    })?;
    check_canonical(&body, &rec.body)?;
    let event = Event::parse(&rec.event)
        .map_err(|u| format!("the stored event does not parse: {}", u.message()))?;
    if crate::hexenc::encode(event.event_hash) != body.event_hash {
        return Err(format!(
            "the stored event hashes to {}, not the receipt's event_hash {}",
            crate::hexenc::encode(event.event_hash),
            body.event_hash
        ));
    }
    for (name, in_body) in [
        ("event_id", &body.event_id),
        ("agent_id", &body.agent_id),
        ("key_id", &body.key_id),
        ("correlation_id", &body.correlation_id),
    ] {
        if event.str_field(name) != in_body {
            return Err(format!(
                "the receipt's {name} {in_body:?} is not the event's {:?}",
                event.str_field(name)
            ));
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
fn check_index(index: &Dedupe, at: u64, keys: &[Key]) -> Result<(), String> {
    for (n, k) in keys.iter().enumerate() {
        let got = index
            .get_for(k, at)
            .map_err(|e| format!("cannot read the duplicate index: {e}"))?;
        let ok = match got {
            Some(i) if n == 0 && keys.len() == 2 => i >= at,
            Some(i) => i == at,
            None => false,
        };
        if !ok {
            return Err(format!(
                "the duplicate index (DIR/index) disagrees with the log at this record ({got:?}); \
                 delete DIR/index and start vigil to rebuild it from the log"
            ));
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
) -> Result<(), String> {
    let checked = check_schema(event, raw_len)
        .map_err(|e| format!("an accepted event breaks the event schema: {e}"))?;
    let (agent, kid) = (&body.agent_id, &body.key_id);
    let key = if agent == PIPELINE_AGENT {
        keys.pipeline_key(kid).copied()
    } else {
        keys.key(agent, kid).map(|k| k.key.key)
    };
    let key = key.ok_or_else(|| {
        format!(
            "no key {kid:?} of agent {agent:?} is established before this accepted event (by the log's key history or --keys); \
             for a log written before key history was logged, pass the agent's JWKS with --keys"
        )
    })?;
    if !tables.verify(&key, &event.canonical.without, &checked.signature) {
        return Err(format!(
            "the accepted event's signature does not verify with key {kid:?} of agent {agent:?}"
        ));
    }
    if let Some(k) = keys.key(agent, kid) {
        check_validity(&k.key, checked.occurred_at, kid)?;
    }
    Ok(())
}

fn check_validity(key: &crate::keys::AgentKey, at: Timestamp, kid: &str) -> Result<(), String> {
    let show = |t: Timestamp| t.to_rfc3339_millis();
    if let Some(nbf) = key.nbf.filter(|&n| at < n) {
        return Err(format!(
            "the accepted event occurred at {} before key {kid:?} was valid ({})",
            show(at),
            show(nbf)
        ));
    }
    if let Some(exp) = key.exp.filter(|&e| at >= e) {
        return Err(format!(
            "the accepted event occurred at {} after key {kid:?} expired ({})",
            show(at),
            show(exp)
        ));
    }
    if let Some(r) = key.revoked_at.filter(|&r| at >= r) {
        return Err(format!(
            "the accepted event occurred at {} after key {kid:?} was revoked ({})",
            show(at),
            show(r)
        ));
    }
    Ok(())
}
