//! Judging one item: everything about an event's verdict that does not
//! depend on the log (contract section 3's checks, except `conflict`).
//!
//! This is the CPU-heavy stage (canonicalisation, SHA-256, strict Ed25519),
//! run in parallel; the log writer then settles duplicates and conflicts in
//! order.

use crate::event::schema;
use std::sync::Arc;

use crate::event::tables::{Check, TableCache};
use crate::event::{Event, Summary, Unidentifiable, PIPELINE_AGENT};
use crate::keys::{AgentKey, AgentStatus, KeySet, TimeRules};
use crate::log::receipt::{Reason, Verdict};
use crate::time::Timestamp;

/// The result of judging one item.
#[derive(Debug)]
pub enum Judgement {
    /// No receipt: answered with an error and quarantined.
    Quarantine(Unidentifiable),
    /// A receipt will be written (unless it is a duplicate).
    Receipt {
        /// What is receipted and answered of the event.
        event: Box<Summary>,
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
    judge_all(&[raw], ctx)
        .pop()
        .expect("one judgement for one item")
}

/// Judges each of `raws`, in order; the signatures of a batch are checked
/// together (they share the field inversion of table verification).
pub fn judge_all(raws: &[&[u8]], ctx: &Context<'_>) -> Vec<Judgement> {
    let staged: Vec<Staged> = raws
        .iter()
        .map(|raw| match Event::parse(raw) {
            Ok(event) => before_signature(event, raw.len(), ctx),
            Err(u) => Staged::Done(Judgement::Quarantine(u)),
        })
        .collect();
    let checks: Vec<Check> = staged
        .iter()
        .filter_map(|s| match s {
            Staged::Signed(p) => Some(Check {
                key: &p.key.key,
                msg: &p.event.canonical.without,
                sig: &p.signature,
            }),
            Staged::Done(_) => None,
        })
        .collect();
    let mut valid = ctx.tables.verify_all(&checks).into_iter();
    staged
        .into_iter()
        .map(|s| match s {
            Staged::Done(j) => j,
            Staged::Signed(p) => {
                let valid = valid.next().expect("one verdict per signature");
                after_signature(*p, valid, ctx)
            }
        })
        .collect()
}

/// An event judged up to its signature.
enum Staged<'a> {
    /// Judged already (quarantined, or rejected before the signature).
    Done(Judgement),
    /// Its signature is to be checked with `key`.
    Signed(Box<Pending<'a>>),
}

/// An event whose signature is checked next.
struct Pending<'a> {
    event: Event,
    key: &'a Arc<AgentKey>,
    signature: [u8; 64],
    occurred_at: Timestamp,
}

fn rejected(event: Event, reason: Reason, why: String) -> Judgement {
    Judgement::Receipt {
        event: Box::new(Summary::of(event, false)),
        verdict: Verdict::Rejected(reason),
        error: Some(why),
    }
}

/// Contract section 3's checks that come before the signature: the
/// agent, the schema, the key.
fn before_signature<'a>(event: Event, raw_len: usize, ctx: &Context<'a>) -> Staged<'a> {
    if crate::failpoint::hit("judge-panic", event.event_id()) {
        panic!(
            "failpoint judge-panic fired on event {:?}",
            event.event_id()
        );
    }
    let agent = event.agent_id();
    let claims_pipeline = agent == PIPELINE_AGENT;
    if !claims_pipeline && ctx.keys.agent(agent).is_none() {
        return Staged::Done(Judgement::Quarantine(Unidentifiable::UnknownAgent(format!(
            "agent {agent:?} has no registered key; register its public key in a JWKS the server loads"
        ))));
    }
    let checked = match schema::check(&event, raw_len) {
        Ok(c) => c,
        Err(why) => return Staged::Done(rejected(event, Reason::Schema, why.to_string())),
    };
    if claims_pipeline {
        let why = "agent \"vigil\" is reserved for the pipeline's own events; outside events cannot claim it";
        return Staged::Done(rejected(event, Reason::UnknownKey, why.into()));
    }
    let Some(key) = ctx.keys.key(event.agent_id(), event.key_id()) else {
        let why = format!(
            "agent {:?} has no key {:?}; sign with one of its registered keys or register this one",
            event.agent_id(),
            event.key_id()
        );
        return Staged::Done(rejected(event, Reason::UnknownKey, why));
    };
    Staged::Signed(Box::new(Pending {
        event,
        key,
        signature: checked.signature,
        occurred_at: checked.occurred_at,
    }))
}

/// The checks after the signature: the key's validity, the clock, the
/// agent's status.
fn after_signature(p: Pending<'_>, valid: bool, ctx: &Context<'_>) -> Judgement {
    let kid = p.event.key_id();
    if !valid {
        let why = format!(
            "the signature does not verify with key {kid:?}: sign JCS(event without signature) with that key, \
             and do not change members after signing"
        );
        return rejected(p.event, Reason::BadSignature, why);
    }
    match later_checks(&p, ctx) {
        Ok(()) => Judgement::Receipt {
            event: Box::new(Summary::of(p.event, true)),
            verdict: Verdict::Accepted,
            error: None,
        },
        Err((reason, why)) => rejected(p.event, reason, why),
    }
}

fn later_checks(p: &Pending<'_>, ctx: &Context<'_>) -> Result<(), (Reason, String)> {
    let (rules, received_at) = (ctx.rules, ctx.received_at);
    let (agent, kid) = (p.event.agent_id(), p.event.key_id());
    p.key
        .check_validity(p.occurred_at, received_at, rules)
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
    if p.occurred_at > received_at.plus_secs(rules.max_clock_skew_s) {
        return Err((
            Reason::ClockSkew,
            format!(
                "occurred_at is more than {} s after the receipt time {}; check the agent's clock",
                rules.max_clock_skew_s,
                received_at.to_rfc3339_millis()
            ),
        ));
    }
    let record = ctx
        .keys
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
