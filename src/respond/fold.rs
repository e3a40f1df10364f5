//! The response as a fold over the log: which leases each agent holds
//! (from accepted events only), the postures, the step-ups pending, and
//! what to do next. No I/O: each record goes in, [`Effect`]s come out,
//! and the stage carries them out.
//!
//! Posture changes are decided when the anomaly (or the answer) is read
//! from the log, so replaying the log rebuilds the same postures.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as J};

use super::evidence::{self, Evidence, Logged};
use super::policy::{Action, Policy, Subject};
use super::posture::{Posture, Revocation, State, StepUp};
use crate::detect::anomaly::{Anomaly, Response};

/// Leases remembered per agent (the most recently used).
const LEASES_PER_AGENT: usize = 64;
/// Anomalies whose response is remembered (so a revision does not act twice).
const DECIDED_MAX: usize = 50_000;
/// Longest binding message, in characters.
const BINDING_MAX: usize = 120;

/// What the fold needs from outside.
pub struct Context<'a> {
    /// The response policy.
    pub policy: &'a Policy,
    /// Lease prefixes by role, when Vault is configured.
    pub prefixes: Option<&'a BTreeMap<String, Vec<String>>>,
    /// The `type` of the RFC 9396 authorization details sent.
    pub details_type: &'a str,
    /// The agent's role.
    pub role_of: &'a dyn Fn(&str) -> Option<String>,
    /// The action and resource of an agent's accepted event, by event id
    /// (read from the log).
    pub trigger_of: &'a dyn Fn(&str, &str) -> Option<Trigger>,
}

/// What a triggering event did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trigger {
    /// Its `action`.
    pub action: String,
    /// Its `resource`, if any.
    pub resource: Option<String>,
}

/// A CIBA request to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepUpRequest {
    /// The anomaly that asks.
    pub anomaly_id: String,
    /// The agent.
    pub agent_id: String,
    /// Whom to ask (`login_hint`).
    pub principal: String,
    /// The anomaly's correlation id.
    pub correlation_id: String,
    /// What the person reads on the phone.
    pub binding_message: String,
    /// RFC 9396 `authorization_details`.
    pub authorization_details: J,
}

/// Leases to revoke for an anomaly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevokeOrder {
    /// The anomaly.
    pub anomaly_id: String,
    /// The agent.
    pub agent_id: String,
    /// The anomaly's correlation id.
    pub correlation_id: String,
    /// Leases within the role's prefixes, not yet revoked.
    pub leases: Vec<String>,
}

/// Something the stage must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Record this evidence in the log (before anything else is done).
    Record(Evidence),
    /// Send this CIBA request (unless the log shows it was sent), then
    /// poll it until it is answered.
    AskStepUp(StepUpRequest),
    /// Revoke these leases.
    Revoke(RevokeOrder),
    /// A posture changed.
    Posture(Posture),
    /// What was done about an anomaly (shown on the board).
    Respond {
        /// The anomaly.
        anomaly_id: String,
        /// What was done.
        response: Response,
    },
    /// The principal approved: these anomalies of the agent were
    /// legitimate (the baseline learns them).
    Legitimate {
        /// The agent.
        agent_id: String,
        /// Who approved.
        principal: String,
        /// The anomalies.
        anomaly_ids: Vec<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    request: StepUpRequest,
    joined: Vec<String>,
}

/// The fold's state, saved with the log position it covers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Responder {
    postures: BTreeMap<String, Posture>,
    /// Leases used by each agent, the most recent last.
    leases: HashMap<String, VecDeque<SeenLease>>,
    /// Step-ups pending, by agent and principal.
    pending: BTreeMap<String, Pending>,
    /// Revocations not yet answered, by anomaly.
    revoking: BTreeMap<String, RevokeOrder>,
    decided: HashMap<String, Action>,
    decided_order: VecDeque<String>,
}

/// A lease an agent used, and where in the log the agent first used it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SeenLease {
    id: String,
    first: u64,
}

/// The triggering event's action and resource, when known.
#[derive(Debug, Clone, Copy)]
struct Named<'a> {
    action: Option<&'a str>,
    resource: Option<&'a str>,
}

fn pending_key(agent: &str, principal: &str) -> String {
    format!("{agent}\n{principal}")
}

impl Responder {
    /// Every posture a response changed.
    pub fn postures(&self) -> impl Iterator<Item = &Posture> {
        self.postures.values()
    }

    /// What to start again after a restart: step-ups not answered,
    /// revocations not finished.
    pub fn resume(&self) -> Vec<Effect> {
        let mut out: Vec<Effect> = self
            .pending
            .values()
            .map(|p| Effect::AskStepUp(p.request.clone()))
            .collect();
        out.extend(self.revoking.values().cloned().map(Effect::Revoke));
        out
    }

    /// An agent's accepted event at log index `index` used this lease.
    pub fn lease_seen(&mut self, agent_id: &str, lease_id: &str, index: u64) {
        let leases = self.leases.entry(agent_id.to_string()).or_default();
        let first = match leases.iter().position(|l| l.id == lease_id) {
            Some(i) => leases.remove(i).map_or(index, |l| l.first),
            None => index,
        };
        if leases.len() == LEASES_PER_AGENT {
            leases.pop_front();
        }
        leases.push_back(SeenLease {
            id: lease_id.to_string(),
            first,
        });
    }

    /// Whether another agent used `lease` before `agent` did: then it is
    /// that agent's, and a response to `agent` must not revoke it (a
    /// compromised agent naming a victim's lease cannot get it revoked).
    fn foreign(&self, agent: &str, lease: &SeenLease) -> bool {
        self.leases.iter().any(|(other, ring)| {
            other != agent
                && ring
                    .iter()
                    .any(|l| l.id == lease.id && l.first < lease.first)
        })
    }

    /// A pipeline event read from the log, received at `at`.
    pub fn logged(&mut self, e: &Logged, at: &str, ctx: &Context<'_>) -> Vec<Effect> {
        match e.action.as_str() {
            crate::detect::stage::ANOMALY_ACTION => {
                match serde_json::from_value::<Anomaly>(e.attributes["anomaly"].clone()) {
                    Ok(a) => self.anomaly(&a, at, ctx),
                    Err(_) => Vec::new(),
                }
            }
            evidence::STEP_UP_RESULT => self.step_up_result(e, at, ctx),
            evidence::REVOCATION => self.revocation(e),
            evidence::RESTORE | evidence::SUSPEND => self.admin(e, at),
            _ => Vec::new(),
        }
    }

    fn anomaly(&mut self, a: &Anomaly, at: &str, ctx: &Context<'_>) -> Vec<Effect> {
        let role = (ctx.role_of)(&a.agent_id);
        let trigger = a
            .event_ids
            .first()
            .and_then(|id| (ctx.trigger_of)(&a.agent_id, id));
        let action = trigger.as_ref().map(|t| t.action.clone());
        let resource = trigger.and_then(|t| t.resource);
        let subject = Subject {
            score: a.score,
            severity: &a.severity,
            kinds: &a.kinds,
            role: role.as_deref(),
            action: action.as_deref(),
            has_principal: a.principal.is_some(),
        };
        let decision = ctx.policy.decide(&subject, a.from_rejected);
        let before = self.decided.get(&a.anomaly_id).copied();
        if before.is_some_and(|b| b >= decision.action) || decision.action == Action::None {
            return Vec::new();
        }
        self.remember(&a.anomaly_id, decision.action);
        let why = format!("{} ({})", a.summary, decision.why);
        match (decision.action, &a.principal) {
            (Action::StepUp, Some(p)) => {
                let what = Named {
                    action: action.as_deref(),
                    resource: resource.as_deref(),
                };
                self.step_up(a, p, what, at, ctx, &why)
            }
            (Action::StepUp, None) => Vec::new(),
            _ => self.revoke(a, at, ctx, &why),
        }
    }

    fn remember(&mut self, anomaly_id: &str, action: Action) {
        if self
            .decided
            .insert(anomaly_id.to_string(), action)
            .is_none()
        {
            self.decided_order.push_back(anomaly_id.to_string());
            if self.decided_order.len() > DECIDED_MAX {
                if let Some(old) = self.decided_order.pop_front() {
                    self.decided.remove(&old);
                }
            }
        }
    }

    fn posture(&self, agent: &str, at: &str) -> Posture {
        self.postures
            .get(agent)
            .cloned()
            .unwrap_or_else(|| Posture::active(agent, at))
    }

    fn set_posture(&mut self, p: Posture, out: &mut Vec<Effect>) {
        self.postures.insert(p.agent_id.clone(), p.clone());
        out.push(Effect::Posture(p));
    }

    fn step_up(
        &mut self,
        a: &Anomaly,
        principal: &str,
        trigger: Named<'_>,
        at: &str,
        ctx: &Context<'_>,
        why: &str,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        let current = self.posture(&a.agent_id, at);
        if current.state == State::Suspended {
            out.push(respond(&a.anomaly_id, "step_up", "agent_already_suspended"));
            return out;
        }
        let key = pending_key(&a.agent_id, principal);
        if let Some(p) = self.pending.get_mut(&key) {
            p.joined.push(a.anomaly_id.clone());
            let status = format!("joined_{}", p.request.anomaly_id);
            out.push(respond(&a.anomaly_id, "step_up", &status));
            return out;
        }
        let request = step_up_request(a, principal, trigger, ctx.details_type);
        out.push(decision(
            a,
            Action::StepUp,
            json!({
                "principal": principal, "why": why,
                "binding_message": request.binding_message,
                "authorization_details": request.authorization_details,
            }),
        ));
        self.pending.insert(
            key,
            Pending {
                request: request.clone(),
                joined: Vec::new(),
            },
        );
        out.push(Effect::AskStepUp(request));
        let posture = Posture {
            state: State::StepUpRequired,
            reason: format!("waiting for {principal} to approve on their device: {why}"),
            since: at.to_string(),
            anomaly_id: Some(a.anomaly_id.clone()),
            step_up: Some(StepUp {
                status: "requested".into(),
                principal: principal.to_string(),
                detail: None,
            }),
            ..current
        };
        self.set_posture(posture, &mut out);
        out.push(respond(&a.anomaly_id, "step_up", "requested"));
        out
    }

    fn revoke(&mut self, a: &Anomaly, at: &str, ctx: &Context<'_>, why: &str) -> Vec<Effect> {
        let mut out = Vec::new();
        let role = (ctx.role_of)(&a.agent_id);
        let revocations: Vec<Revocation> = self
            .leases
            .get(&a.agent_id)
            .into_iter()
            .flatten()
            .map(|lease| Revocation {
                lease_id: lease.id.clone(),
                status: if self.foreign(&a.agent_id, lease) {
                    "foreign_lease"
                } else {
                    lease_status(&lease.id, role.as_deref(), ctx.prefixes)
                }
                .into(),
                error: None,
            })
            .collect();
        let order = RevokeOrder {
            anomaly_id: a.anomaly_id.clone(),
            agent_id: a.agent_id.clone(),
            correlation_id: correlation(a),
            leases: revocations
                .iter()
                .filter(|r| r.status == "pending")
                .map(|r| r.lease_id.clone())
                .collect(),
        };
        out.push(decision(
            a,
            Action::Revoke,
            json!({
                "why": why, "suspend": true, "leases": revocations,
                "tokens": "not_supported: Vigil holds no tokens of the agent; revoke them at their issuer",
            }),
        ));
        if !order.leases.is_empty() {
            self.revoking.insert(a.anomaly_id.clone(), order.clone());
            out.push(Effect::Revoke(order));
        }
        let current = self.posture(&a.agent_id, at);
        let step_up = current.step_up.clone();
        let posture = Posture {
            agent_id: a.agent_id.clone(),
            state: State::Suspended,
            reason: format!("suspended and its leases revoked: {why}"),
            since: at.to_string(),
            anomaly_id: Some(a.anomaly_id.clone()),
            step_up,
            revocations,
        };
        self.set_posture(posture, &mut out);
        out.push(respond(&a.anomaly_id, "revoke", "suspended"));
        out
    }

    fn step_up_result(&mut self, e: &Logged, at: &str, ctx: &Context<'_>) -> Vec<Effect> {
        let (Some(anomaly), Some(outcome)) = (e.text("anomaly_id"), e.text("outcome")) else {
            return Vec::new();
        };
        let Some(key) = self
            .pending
            .iter()
            .find(|(_, p)| p.request.anomaly_id == anomaly)
            .map(|(k, _)| k.clone())
        else {
            return Vec::new();
        };
        let p = self.pending.remove(&key).expect("found above");
        let (agent, principal) = (p.request.agent_id.clone(), p.request.principal.clone());
        let mut out = Vec::new();
        let mut all = vec![p.request.anomaly_id.clone()];
        all.extend(p.joined.iter().cloned());
        let mut posture = self.posture(&agent, at);
        posture.step_up = Some(StepUp {
            status: outcome.to_string(),
            principal: principal.clone(),
            detail: e.text("detail").map(str::to_string),
        });
        match outcome {
            "approved" => {
                for id in &all {
                    out.push(respond(id, "step_up", "approved"));
                }
                out.push(Effect::Legitimate {
                    agent_id: agent.clone(),
                    principal: principal.clone(),
                    anomaly_ids: all,
                });
                let others = self.pending.values().any(|p| p.request.agent_id == agent);
                if posture.state == State::StepUpRequired && !others {
                    posture.state = State::Active;
                    posture.reason = format!("{principal} approved the step-up");
                    posture.since = at.to_string();
                }
                self.set_posture(posture, &mut out);
            }
            "denied" | "expired" => {
                self.set_posture(posture, &mut out);
                let anomaly = escalated(&p.request, outcome);
                for id in &all {
                    self.remember(id, Action::Revoke);
                }
                let why = format!("the step-up of {principal} was {outcome}");
                out.extend(self.revoke(&anomaly, at, ctx, &why));
            }
            _ => {
                out.push(respond(&p.request.anomaly_id, "step_up", "failed"));
                self.set_posture(posture, &mut out);
            }
        }
        out
    }

    fn revocation(&mut self, e: &Logged) -> Vec<Effect> {
        let (Some(anomaly), Some(lease), Some(outcome)) =
            (e.text("anomaly_id"), e.text("lease_id"), e.text("outcome"))
        else {
            return Vec::new();
        };
        let mut agent = None;
        if let Some(order) = self.revoking.get_mut(anomaly) {
            order.leases.retain(|l| l != lease);
            agent = Some(order.agent_id.clone());
            if order.leases.is_empty() {
                self.revoking.remove(anomaly);
            }
        }
        let agent = agent.or_else(|| e.text("agent_id").map(str::to_string));
        let Some(p) = agent.and_then(|a| self.postures.get_mut(&a)) else {
            return Vec::new();
        };
        if let Some(r) = p.revocations.iter_mut().find(|r| r.lease_id == lease) {
            r.status = outcome.to_string();
            r.error = e.text("error").map(str::to_string);
            return vec![Effect::Posture(p.clone())];
        }
        Vec::new()
    }

    fn admin(&mut self, e: &Logged, at: &str) -> Vec<Effect> {
        let Some(agent) = e.text("agent_id").map(str::to_string) else {
            return Vec::new();
        };
        let by = e.text("by").unwrap_or("an administrator");
        let mut out = Vec::new();
        let mut posture = self.posture(&agent, at);
        if e.action == evidence::RESTORE {
            self.pending.retain(|_, p| p.request.agent_id != agent);
            self.revoking.retain(|_, o| o.agent_id != agent);
            posture.state = State::Active;
            posture.reason = format!("restored by {by}");
        } else {
            posture.state = State::Suspended;
            posture.reason = format!("suspended by {by}");
        }
        posture.since = at.to_string();
        posture.anomaly_id = None;
        self.set_posture(posture, &mut out);
        out
    }
}

/// The evidence of a decision about `a`: `details` plus the anomaly,
/// the agent and the action, under the event id `<anomaly>.<action>`.
fn decision(a: &Anomaly, action: Action, mut details: J) -> Effect {
    details["anomaly_id"] = json!(a.anomaly_id);
    details["agent_id"] = json!(a.agent_id);
    details["action"] = json!(action.as_str());
    Effect::Record(Evidence {
        event_id: format!("{}.{}", a.anomaly_id, action.as_str()),
        correlation_id: correlation(a),
        action: evidence::DECISION,
        agent_id: a.agent_id.clone(),
        attributes: details,
    })
}

fn correlation(a: &Anomaly) -> String {
    a.correlation_id.clone().unwrap_or(a.anomaly_id.clone())
}

fn response(action: &str, status: &str) -> Response {
    Response {
        action: action.into(),
        status: status.into(),
    }
}

fn respond(anomaly_id: &str, action: &str, status: &str) -> Effect {
    Effect::Respond {
        anomaly_id: anomaly_id.to_string(),
        response: response(action, status),
    }
}

/// `pending` when the lease may be revoked, else why not.
fn lease_status(
    lease: &str,
    role: Option<&str>,
    prefixes: Option<&BTreeMap<String, Vec<String>>>,
) -> &'static str {
    let Some(prefixes) = prefixes else {
        return "not_configured";
    };
    let allowed = role
        .and_then(|r| prefixes.get(r))
        .is_some_and(|ps| ps.iter().any(|p| lease.starts_with(p.as_str())));
    if allowed {
        "pending"
    } else {
        "outside_prefixes"
    }
}

/// The anomaly a denied or expired step-up escalates (its id and agent).
fn escalated(r: &StepUpRequest, outcome: &str) -> Anomaly {
    Anomaly {
        anomaly_id: r.anomaly_id.clone(),
        agent_id: r.agent_id.clone(),
        principal: Some(r.principal.clone()),
        correlation_id: Some(r.correlation_id.clone()),
        detected_at: String::new(),
        event_time: String::new(),
        score: 0,
        severity: String::new(),
        kinds: Vec::new(),
        event_ids: Vec::new(),
        explanation: Vec::new(),
        summary: format!("step-up {outcome}"),
        response: response("revoke", "pending"),
        from_rejected: false,
        feedback: None,
        revision: 0,
    }
}

/// The CIBA request for an anomaly: a message a person can read on a
/// phone, and the action as RFC 9396 details.
fn step_up_request(
    a: &Anomaly,
    principal: &str,
    trigger: Named<'_>,
    details_type: &str,
) -> StepUpRequest {
    let what = trigger.action.unwrap_or("act");
    let n = a.event_ids.len();
    let mut message = format!(
        "Vigil: agent {} wants to {what} ({n} event{}). Approve?",
        a.agent_id,
        if n == 1 { "" } else { "s" }
    );
    if message.chars().count() > BINDING_MAX {
        message = message.chars().take(BINDING_MAX - 3).collect::<String>() + "...";
    }
    let mut detail = json!({
        "type": details_type,
        "actions": [what],
        "agent_id": a.agent_id,
        "event_count": n,
        "anomaly_id": a.anomaly_id,
        "summary": a.summary,
    });
    if let Some(r) = trigger.resource {
        detail["identifier"] = json!(r);
    }
    let details = json!([detail]);
    StepUpRequest {
        anomaly_id: a.anomaly_id.clone(),
        agent_id: a.agent_id.clone(),
        principal: principal.to_string(),
        correlation_id: correlation(a),
        binding_message: message,
        authorization_details: details,
    }
}

#[cfg(test)]
#[path = "fold_tests.rs"]
mod tests;
