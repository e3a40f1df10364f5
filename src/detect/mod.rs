//! Detection: per-agent baselines and explained anomalies, in event time
//! (contract section 6). No I/O here; [`stage`] runs it over the log.
//!
//! Each log record becomes an [`Observation`]. Accepted events are judged
//! by the detectors in [`rules`] against the agent's own [`Profile`] (or its
//! role's, while the agent has fewer than [`rules::WARM_EVENTS`] events),
//! and then teach both, unless they scored as an alert or fall within ten
//! minutes (event time) after one: flagged windows never teach. Rejected
//! events never teach: they only count towards a burst of forged or
//! refused events for that agent, an anomaly marked `from_rejected`.
//!
//! Event time: each agent has its own clock, the latest `occurred_at` it
//! showed. An event more than [`REORDER_MS`] behind it is late: it is
//! judged by the point detectors (rare values, leases, hours) but not the
//! window ones, and teaches nothing. Agents never wait for each other.
//!
//! Alerts of one agent within [`MERGE_MS`] of its open anomaly, with the
//! same correlation id or a kind in common, are merged into it; a merge
//! that changes its kinds or severity is a new revision, published again.

pub mod agent;
pub mod anomaly;
pub mod baseline;
pub mod board;
pub mod model;
pub mod observation;
pub mod profile;
pub mod rules;
pub mod simple;
pub mod stage;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use agent::{AgentState, Windows};
use anomaly::{Anomaly, Signal, ALERT_SCORE, MAX_EVENT_IDS};
pub use observation::{Fields, Judged, Observation};
use profile::{fingerprint, resource_pattern, Lesson, Profile, AGENT_CAPS, ROLE_CAPS};

/// How far behind an agent's clock an event may be and still count in
/// its windows.
pub const REORDER_MS: i64 = 10 * 60_000;
/// How close in time alerts must be to merge.
pub const MERGE_MS: i64 = 10 * 60_000;
/// How long after an alert an agent learns nothing.
pub const FLAG_MS: i64 = 10 * 60_000;
/// Scores below this are not reported at all.
pub const CONTEXT_SCORE: u8 = 30;
/// Rejected events in a minute that make a burst.
pub const REJECTED_BURST: usize = 5;
/// Leases whose owner is remembered.
const MAX_LEASES: usize = 100_000;
/// Anomalies whose triggering event can still be taught by feedback.
const MAX_LESSONS: usize = 4096;

/// An anomaly to show, and whether this version is to be published (a
/// new anomaly, or a revision that changed its kinds or severity).
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    /// The anomaly as it now stands.
    pub anomaly: Anomaly,
    /// Whether to publish (receipt) this version.
    pub publish: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct LeaseUse {
    agent_id: String,
    last_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Taught {
    anomaly_id: String,
    agent_id: String,
    lesson: Lesson,
}

/// The detection state of every agent and role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Detector {
    /// Shared with a snapshot being saved until either changes it (a
    /// snapshot of 10,000 agents is then a copy of pointers, not ~30 ms of
    /// cloning on the runtime).
    #[serde(with = "crate::snapshot::arc_values")]
    agents: HashMap<String, Arc<AgentState>>,
    roles: HashMap<String, Profile>,
    leases: HashMap<u64, LeaseUse>,
    lessons: VecDeque<Taught>,
    /// Whether the multivariate model judges (it always learns).
    #[serde(skip, default = "yes")]
    model: bool,
}

/// An agent's state, made when missing, and no longer shared with a
/// snapshot (copied first if it is).
fn agent_mut<'a>(
    agents: &'a mut HashMap<String, Arc<AgentState>>,
    agent_id: &str,
) -> &'a mut AgentState {
    if !agents.contains_key(agent_id) {
        agents.insert(agent_id.to_string(), Arc::default());
    }
    Arc::make_mut(agents.get_mut(agent_id).expect("inserted when missing"))
}

fn yes() -> bool {
    true
}

impl Default for Detector {
    fn default() -> Self {
        Detector {
            agents: HashMap::new(),
            roles: HashMap::new(),
            leases: HashMap::new(),
            lessons: VecDeque::new(),
            model: true,
        }
    }
}

/// Excess negative log-likelihood from which the model signals.
const MODEL_EXCESS: f32 = 5.0;

impl Detector {
    /// Looks at one record; returns the anomaly it made or revised.
    /// `now` is the wall-clock time written as `detected_at`.
    pub fn observe(&mut self, obs: &Observation, now: &str) -> Option<Emitted> {
        match &obs.judged {
            Judged::Accepted(f) => self.accepted(obs, f, now),
            Judged::Rejected(reason) => self.rejected(obs, reason, now),
        }
    }

    /// Applies an analyst's verdict: a false positive teaches the agent
    /// what its triggering event did, and ends its flagged window.
    pub fn feedback(&mut self, anomaly_id: &str, verdict: &str) {
        if verdict != "false_positive" {
            return;
        }
        let Some(t) = self.lessons.iter().find(|t| t.anomaly_id == anomaly_id) else {
            return;
        };
        if let Some(state) = self.agents.get_mut(&t.agent_id).map(Arc::make_mut) {
            state.profile.learn(&t.lesson, 5, AGENT_CAPS);
            state.flagged_until_ms = 0;
        }
    }

    /// Turns the multivariate model's judgement on or off (for
    /// measuring what it adds).
    pub fn use_model(&mut self, on: bool) {
        self.model = on;
    }

    /// The learnt baseline of `agent_id`, if it has had an accepted event.
    pub fn baseline(&self, agent_id: &str) -> Option<baseline::Baseline> {
        self.agents
            .get(agent_id)
            .map(|s| baseline::Baseline::of(agent_id, s))
    }

    /// Agents with state.
    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }

    /// The largest and the mean memory of one agent's state, in bytes.
    pub fn agent_memory(&self) -> (usize, f64) {
        let sizes: Vec<usize> = self.agents.values().map(|s| s.memory_bytes()).collect();
        let max = sizes.iter().copied().max().unwrap_or(0);
        let mean = sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64;
        (max, mean)
    }

    fn accepted(&mut self, obs: &Observation, f: &Fields, now: &str) -> Option<Emitted> {
        let lease = self.lease_owner(f, &obs.agent_id);
        let role = obs.role.as_ref().and_then(|r| self.roles.get(r));
        let state = agent_mut(&mut self.agents, &obs.agent_id);
        let t = f.occurred_ms;
        let late = t < state.clock_ms - REORDER_MS;
        let resource = f.resource.as_deref().map(|r| fingerprint("resource", r));
        if t - state.open_last_ms > MERGE_MS {
            state.open = None;
        }
        let idle_ms = (state.clock_ms > 0 && !late).then(|| t - state.clock_ms);
        let windows = state.record(t, resource, f.failed, f.sensitive);
        let lesson = lesson(f, state.last_action, windows);
        let cx = rules::Context {
            agent: &state.profile,
            role,
            fields: f,
            lesson: &lesson,
            failures: windows.failures,
            late,
            idle_ms,
        };
        let mut signals = rules::judge(&cx);
        signals.extend(lease);
        let x = features(f, windows);
        if self.model && !late {
            signals.extend(state.model.surprise(&x).and_then(|s| model_signal(&s, &x)));
        }
        state.last_action = Some(lesson.action);
        let score = anomaly::combine(&signals);
        if !late && score < ALERT_SCORE && t >= state.flagged_until_ms {
            state.profile.learn(&lesson, 1, AGENT_CAPS);
            state
                .model
                .learn(x, fingerprint("agent", &obs.agent_id) as u32);
            if let Some(r) = &obs.role {
                self.roles
                    .entry(r.clone())
                    .or_default()
                    .learn(&lesson, 1, ROLE_CAPS);
            }
        }
        if score >= ALERT_SCORE {
            state.flagged_until_ms = state.flagged_until_ms.max(t + FLAG_MS);
        }
        if score < CONTEXT_SCORE {
            return None;
        }
        let found = Found {
            obs,
            principal: f.principal.clone(),
            time_ms: t,
            signals,
            now,
            from_rejected: false,
        };
        let emitted = merge_or_open(&mut state.open, &mut state.open_last_ms, found)?;
        self.remember(&emitted.anomaly, &obs.agent_id, lesson);
        Some(emitted)
    }

    fn rejected(&mut self, obs: &Observation, reason: &str, now: &str) -> Option<Emitted> {
        let state = agent_mut(&mut self.agents, &obs.agent_id);
        let n = state.record_rejected(obs.received_ms);
        if n < REJECTED_BURST {
            return None;
        }
        let forged = matches!(reason, "bad_signature" | "unknown_key" | "conflict");
        let signal = Signal {
            kind: if forged {
                "forged_events"
            } else {
                "rejected_events"
            },
            feature: "rejected_per_minute",
            observed: json!(format!("{n} rejected in a minute, the latest {reason}")),
            expected: json!(format!("fewer than {REJECTED_BURST}")),
            score: (55.0 + 4.0 * (n - REJECTED_BURST) as f64).min(80.0),
            says: format!("was named by {n} events in a minute that Vigil rejected ({reason})"),
        };
        let found = Found {
            obs,
            principal: None,
            time_ms: obs.received_ms,
            signals: vec![signal],
            now,
            from_rejected: true,
        };
        merge_or_open(
            &mut state.open_rejected,
            &mut state.open_rejected_last_ms,
            found,
        )
    }

    /// Remembers a lease's first agent; a use by another is a signal.
    fn lease_owner(&mut self, f: &Fields, agent_id: &str) -> Option<Signal> {
        let lease = f.lease_id.as_ref()?;
        let fp = fingerprint("lease", lease);
        if let Some(owner) = self.leases.get_mut(&fp) {
            if owner.agent_id != agent_id {
                return Some(Signal {
                    kind: "foreign_lease",
                    feature: "lease_owner",
                    observed: json!(agent_id),
                    expected: json!(owner.agent_id),
                    score: 90.0,
                    says: format!("used lease {lease}, which belongs to {}", owner.agent_id),
                });
            }
            owner.last_ms = owner.last_ms.max(f.occurred_ms);
            return None;
        }
        if self.leases.len() >= MAX_LEASES {
            self.forget_oldest_leases();
        }
        let owner = LeaseUse {
            agent_id: agent_id.to_string(),
            last_ms: f.occurred_ms,
        };
        self.leases.insert(fp, owner);
        None
    }

    fn forget_oldest_leases(&mut self) {
        let mut by_age: Vec<(i64, u64)> =
            self.leases.iter().map(|(k, v)| (v.last_ms, *k)).collect();
        by_age.sort_unstable();
        for (_, k) in by_age.iter().take(MAX_LEASES / 2) {
            self.leases.remove(k);
        }
    }

    fn remember(&mut self, a: &Anomaly, agent_id: &str, lesson: Lesson) {
        if self.lessons.iter().any(|t| t.anomaly_id == a.anomaly_id) {
            return;
        }
        if self.lessons.len() >= MAX_LESSONS {
            self.lessons.pop_front();
        }
        self.lessons.push_back(Taught {
            anomaly_id: a.anomaly_id.clone(),
            agent_id: agent_id.to_string(),
            lesson,
        });
    }
}

/// The model's features of an event.
fn features(f: &Fields, w: Windows) -> model::Vector {
    [
        w.rate.ln_1p() as f32,
        w.sweep.ln_1p() as f32,
        f.volume.unwrap_or(0.0).ln_1p() as f32,
        w.failures as f32 / 20.0,
        f32::from(f.sensitivity),
    ]
}

/// A signal from the model when the event is well beyond its training,
/// explained by the two features furthest from the nearest habit.
fn model_signal(s: &model::Surprise, x: &model::Vector) -> Option<Signal> {
    if s.excess < MODEL_EXCESS {
        return None;
    }
    let mut dims: Vec<usize> = (0..model::DIMS).collect();
    dims.sort_by(|a, b| s.z[*b].abs().total_cmp(&s.z[*a].abs()));
    let top = &dims[..2];
    let round = |v: f32| (f64::from(v) * 100.0).round() / 100.0;
    let observed: serde_json::Map<String, serde_json::Value> = top
        .iter()
        .map(|&d| (model::FEATURES[d].to_string(), json!(round(x[d]))))
        .collect();
    let expected: serde_json::Map<String, serde_json::Value> = top
        .iter()
        .map(|&d| (model::FEATURES[d].to_string(), json!(round(s.expected[d]))))
        .collect();
    Some(Signal {
        kind: "multivariate",
        feature: "window_features",
        observed: serde_json::Value::Object(observed),
        expected: serde_json::Value::Object(expected),
        score: f64::from((50.0 + 3.0 * (s.excess - MODEL_EXCESS)).min(80.0)),
        says: format!(
            "behaved unlike any of its habits ({} and {} together)",
            model::FEATURES[top[0]],
            model::FEATURES[top[1]]
        ),
    })
}

fn lesson(f: &Fields, last_action: Option<u64>, w: Windows) -> Lesson {
    let action = fingerprint("action", &f.action);
    let hour = {
        let secs = f.occurred_ms.div_euclid(1000);
        // 1970-01-01 was a Thursday: shift so that 0 is Monday 00:00.
        let hours = secs.div_euclid(3600) + 3 * 24;
        hours.rem_euclid(profile::HOURS_OF_WEEK as i64) as u16
    };
    Lesson {
        action,
        resource: f
            .resource
            .as_deref()
            .map(|r| fingerprint("pattern", &resource_pattern(r))),
        principal: f.principal.as_deref().map(|p| fingerprint("principal", p)),
        ip: f.source_ip.as_deref().map(|p| fingerprint("ip", p)),
        transition: last_action.map(|prev| prev.rotate_left(17) ^ action),
        hour,
        rate: w.rate,
        sweep: w.sweep,
        sensitive: if f.sensitive { w.sensitive } else { 0.0 },
        volume: f.volume.map(f64::ln_1p),
        depth: f.depth,
    }
}

/// What made an alert, before it is an anomaly.
struct Found<'a> {
    obs: &'a Observation,
    principal: Option<String>,
    time_ms: i64,
    signals: Vec<Signal>,
    now: &'a str,
    from_rejected: bool,
}

/// Opens an anomaly for what was found, or merges it into the open one
/// (close in time and related); `None` when the merge changed nothing to
/// show (the event's id is not kept, beyond the first
/// [`anomaly::MAX_EVENT_IDS`], and its signals add no kind and raise no
/// score): an agent flooding under an open anomaly adds no versions.
fn merge_or_open(
    slot: &mut Option<Box<Anomaly>>,
    last_ms: &mut i64,
    found: Found,
) -> Option<Emitted> {
    if let Some(open) = slot.as_mut() {
        let close = (found.time_ms - *last_ms).abs() <= MERGE_MS;
        let related = open.correlation_id.as_deref() == Some(found.obs.correlation_id.as_str())
            || found
                .signals
                .iter()
                .any(|s| open.kinds.iter().any(|k| k == s.kind));
        if close && related {
            *last_ms = (*last_ms).max(found.time_ms);
            let merged = merge(open, &found);
            return (merged.kept_event || merged.raised || merged.revised).then(|| Emitted {
                anomaly: (**open).clone(),
                publish: merged.revised,
            });
        }
    }
    *last_ms = found.time_ms;
    let anomaly = open_anomaly(&found);
    *slot = Some(Box::new(anomaly.clone()));
    Some(Emitted {
        anomaly,
        publish: true,
    })
}

fn open_anomaly(found: &Found) -> Anomaly {
    let obs = found.obs;
    let score = anomaly::combine(&found.signals);
    let mut kinds: Vec<String> = found.signals.iter().map(|s| s.kind.to_string()).collect();
    kinds.dedup();
    let event_time = crate::time::Timestamp(i128::from(found.time_ms) * 1_000_000);
    Anomaly {
        anomaly_id: anomaly::anomaly_id(&obs.agent_id, &obs.event_id),
        agent_id: obs.agent_id.clone(),
        principal: found.principal.clone(),
        correlation_id: (!obs.correlation_id.is_empty()).then(|| obs.correlation_id.clone()),
        detected_at: found.now.to_string(),
        event_time: event_time.to_rfc3339_millis(),
        score,
        severity: anomaly::severity(score).to_string(),
        kinds,
        event_ids: vec![obs.event_id.clone()],
        explanation: anomaly::explain(&found.signals, score),
        summary: anomaly::summary(&obs.agent_id, &found.signals),
        response: anomaly::Response {
            action: "none".into(),
            status: "none".into(),
        },
        from_rejected: found.from_rejected,
        feedback: None,
        revision: 0,
    }
}

/// What merging an event into an open anomaly did.
struct Merged {
    /// The event's id was added to the anomaly's.
    kept_event: bool,
    /// The score rose (within the same severity, not a revision).
    raised: bool,
    /// A new kind or a higher severity: a revision, to publish.
    revised: bool,
}

/// Merges a later alert into an open anomaly: keeps its event id (up to
/// [`MAX_EVENT_IDS`]), adds its kinds, takes a higher score.
fn merge(open: &mut Anomaly, found: &Found) -> Merged {
    let kept_event =
        open.event_ids.len() < MAX_EVENT_IDS && !open.event_ids.contains(&found.obs.event_id);
    if kept_event {
        open.event_ids.push(found.obs.event_id.clone());
    }
    let mut changed = false;
    for s in &found.signals {
        if !open.kinds.iter().any(|k| k == s.kind) {
            open.kinds.push(s.kind.to_string());
            changed = true;
        }
    }
    let score = anomaly::combine(&found.signals);
    let raised = score > open.score;
    if raised {
        let old = anomaly::severity(open.score);
        open.score = score;
        open.severity = anomaly::severity(score).to_string();
        open.explanation = anomaly::explain(&found.signals, score);
        open.summary = anomaly::summary(&open.agent_id, &found.signals);
        changed |= old != open.severity;
    }
    if changed {
        open.revision += 1;
        open.detected_at = found.now.to_string();
    }
    Merged {
        kept_event,
        raised,
        revised: changed,
    }
}

#[cfg(test)]
mod tests;
