//! Judging one item: everything about an event's verdict that does not
//! depend on the log (contract section 3's checks, except `conflict`).
//!
//! This is the CPU-heavy stage (canonicalisation, SHA-256, strict Ed25519),
//! run in parallel; the log writer then settles duplicates and conflicts in
//! order.

use crate::event::schema;
use crate::event::tables::TableCache;
use crate::event::{Event, Unidentifiable, PIPELINE_AGENT};
use crate::keys::{AgentStatus, KeySet, TimeRules};
use crate::log::receipt::{Reason, Verdict};
use crate::time::Timestamp;

/// The result of judging one item.
#[derive(Debug)]
pub enum Judgement {
    /// No receipt: answered with an error and quarantined.
    Quarantine(Unidentifiable),
    /// A receipt will be written (unless it is a duplicate).
    Receipt {
        /// The parsed event.
        event: Box<Event>,
        /// The verdict before duplicate and conflict checks.
        verdict: Verdict,
        /// For a rejection, what was wrong and how to fix it.
        error: Option<String>,
    },
}

/// What judging needs besides the item: the keys in force, the time
/// rules, the verification tables, and when the batch was received.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The agent keys in force.
    pub keys: &'a KeySet,
    /// Revocation grace and clock skew.
    pub rules: &'a TimeRules,
    /// Per-key tables for faster verification.
    pub tables: &'a TableCache,
    /// When the batch was received.
    pub received_at: Timestamp,
    /// Agents suspended through Vigil (a response or an administrator).
    pub suspended: &'a std::collections::HashSet<String>,
}

/// Judges raw bytes.
pub fn judge(raw: &[u8], ctx: &Context<'_>) -> Judgement {
    let event = match Event::parse(raw) {
        Ok(e) => e,
        Err(u) => return Judgement::Quarantine(u),
    };
    judge_event(event, raw.len(), ctx)
}

/// Judges an already parsed event whose bytes as sent were `raw_len` long.
pub fn judge_event(event: Event, raw_len: usize, ctx: &Context<'_>) -> Judgement {
    if crate::failpoint::hit("judge-panic", event.event_id()) {
        panic!(
            "failpoint judge-panic fired on event {:?}",
            event.event_id()
        );
    }
    let agent = event.agent_id();
    let from_outside_as_pipeline = agent == PIPELINE_AGENT;
    if !from_outside_as_pipeline && ctx.keys.agent(agent).is_none() {
        return Judgement::Quarantine(Unidentifiable::UnknownAgent(format!(
            "agent {agent:?} has no registered key; register its public key in a JWKS the server loads"
        )));
    }
    let (verdict, error) = match verdict(&event, raw_len, ctx, from_outside_as_pipeline) {
        Ok(()) => (Verdict::Accepted, None),
        Err((reason, why)) => (Verdict::Rejected(reason), Some(why)),
    };
    Judgement::Receipt {
        event: Box::new(event),
        verdict,
        error,
    }
}

fn verdict(
    event: &Event,
    raw_len: usize,
    ctx: &Context<'_>,
    claims_pipeline: bool,
) -> Result<(), (Reason, String)> {
    let (keys, rules, received_at) = (ctx.keys, ctx.rules, ctx.received_at);
    let checked = schema::check(event, raw_len).map_err(|why| (Reason::Schema, why))?;
    if claims_pipeline {
        return Err((
            Reason::UnknownKey,
            "agent \"vigil\" is reserved for the pipeline's own events; outside events cannot claim it".into(),
        ));
    }
    let (agent, kid) = (event.agent_id(), event.key_id());
    let key = keys.key(agent, kid).ok_or_else(|| {
        (
            Reason::UnknownKey,
            format!("agent {agent:?} has no key {kid:?}; sign with one of its registered keys or register this one"),
        )
    })?;
    if !ctx
        .tables
        .verify(&key.key, &event.canonical.without, &checked.signature)
    {
        return Err((
            Reason::BadSignature,
            format!(
                "the signature does not verify with key {kid:?}: sign JCS(event without signature) with that key, \
                 and do not change members after signing"
            ),
        ));
    }
    key.check_validity(checked.occurred_at, received_at, rules)
        .map_err(|reason| {
            let why = match reason {
                Reason::KeyNotValidYet => {
                    format!("key {kid:?} is not valid yet at occurred_at (nbf is later)")
                }
                Reason::KeyExpired => format!(
                    "key {kid:?} had expired at occurred_at; sign with the agent's current key"
                ),
                _ => format!(
                    "key {kid:?} is revoked for this event; sign with the agent's current key"
                ),
            };
            (reason, why)
        })?;
    if checked.occurred_at > received_at.plus_secs(rules.max_clock_skew_s) {
        return Err((
            Reason::ClockSkew,
            format!(
                "occurred_at is more than {} s after the receipt time {}; check the agent's clock",
                rules.max_clock_skew_s,
                received_at.to_rfc3339_millis()
            ),
        ));
    }
    let record = keys
        .agent(agent)
        .expect("the agent has keys, so it has a record");
    if record.status != AgentStatus::Active {
        return Err((
            Reason::AgentNotActive,
            format!("agent {agent:?} is {:?}, not active", record.status),
        ));
    }
    if ctx.suspended.contains(agent) {
        return Err((
            Reason::AgentNotActive,
            format!(
                "agent {agent:?} is suspended by Vigil (see GET /v1/agents/{agent}/posture); \
                 an administrator lifts it with POST /v1/agents/{agent}/restore"
            ),
        ));
    }
    Ok(())
}
