//! The response stage: follows the log's durable cursor, folds each
//! record into the [`Responder`], and carries out what it says: records
//! the evidence, changes postures (the book the API reads, the suspended
//! set the judge reads, `vigil.enforcement` on Kafka), and starts the
//! workers that talk to the OpenID provider and Vault.
//!
//! Its state is saved in `DIR/index/respond.json` (format [`FORMAT`])
//! with the log position it covers; after a crash it resumes from there,
//! and step-ups and revocations in flight start again from what the log
//! says they reached. A missing or unreadable file is rebuilt from the
//! log's first record.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ciba::Ciba;
use super::evidence;
use super::fold::{Context, Effect, Responder, Trigger};
use super::policy::Policy;
use super::posture::{Book, Posture, State};
use super::vault::Vault;
use super::workers;
use crate::detect::stage::Detection;
use crate::event::PIPELINE_AGENT;
use crate::log::receipt::Verdict;
use crate::pipeline::Pipeline;
use crate::shutdown::Stop;
use crate::store::view::LogRecord;

/// Version of the saved state's format.
pub const FORMAT: u32 = 1;
/// The Kafka topic posture changes are published to.
pub const ENFORCEMENT_TOPIC: &str = "vigil.enforcement";
/// How often the state is saved while the log grows.
const SAVE_EVERY: Duration = Duration::from_secs(5);
/// Records read in a row before stop and saves are looked at again.
const DRAIN_MAX: usize = 4096;

#[derive(Serialize, Deserialize)]
struct Saved {
    format: u32,
    position: u64,
    responder: Responder,
}

/// The identity services and the policy.
#[derive(Debug)]
pub struct Services {
    /// The OpenID provider, if configured.
    pub ciba: Option<Arc<Ciba>>,
    /// Vault, if configured.
    pub vault: Option<Arc<Vault>>,
    /// The Shared Signals receiver, if configured.
    pub signals: Option<Arc<super::signals::Signals>>,
    /// The response policy (SIGHUP replaces it).
    pub policy: crate::live::Live<Policy>,
}

/// The stage, ready to run.
pub struct Stage {
    responder: Responder,
    position: u64,
    path: PathBuf,
    book: Arc<Book>,
    services: Arc<Services>,
    detection: Arc<Detection>,
    kafka: Option<crate::ingest::kafka::KafkaSink>,
    /// Records from here on were written while this process runs, so
    /// their posture changes are news (published to Kafka).
    live_from: u64,
    workers: tokio::task::JoinSet<String>,
    running: HashSet<String>,
    saving: Option<tokio::task::JoinHandle<()>>,
}

impl Stage {
    /// Loads the saved state (or starts from the log's first record) and
    /// puts the saved postures in force at once, before anything is
    /// judged.
    pub fn open(
        path: PathBuf,
        services: Services,
        pipeline: &Pipeline,
        detection: Arc<Detection>,
    ) -> (Stage, Arc<Book>) {
        let saved = std::fs::read(&path)
            .ok()
            .and_then(|b| match serde_json::from_slice::<Saved>(&b) {
                Ok(s) if s.format == FORMAT => Some(s),
                _ => {
                    tracing::warn!(path = %path.display(), "Response state missing, unreadable or of another format: rebuilding it from the log");
                    None
                }
            });
        let (responder, position) = saved.map(|s| (s.responder, s.position)).unwrap_or_default();
        let book = Arc::new(Book::default());
        for p in responder.postures() {
            put_in_force(&book, pipeline, p);
        }
        let stage = Stage {
            responder,
            position,
            path,
            book: book.clone(),
            services: Arc::new(services),
            detection,
            kafka: None,
            live_from: pipeline.size(),
            workers: tokio::task::JoinSet::new(),
            running: HashSet::new(),
            saving: None,
        };
        (stage, book)
    }

    /// The services and policy the stage runs with (a reload replaces the
    /// policy in them).
    pub fn services(&self) -> Arc<Services> {
        self.services.clone()
    }

    /// Also publishes posture changes to `vigil.enforcement`.
    pub fn publish_to(&mut self, sink: crate::ingest::kafka::KafkaSink) {
        self.kafka = Some(sink);
    }

    /// Follows the log until `stop` fires, then saves.
    pub async fn run(mut self, pipeline: Arc<Pipeline>, mut stop: Stop) {
        let resumed = self.responder.resume();
        self.carry_out(&pipeline, resumed, &stop, false).await;
        let mut cursor = pipeline.view().tail(self.position);
        let mut saved = self.position;
        let mut tick = tokio::time::interval(SAVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let first = tokio::select! {
                _ = stop.stopped() => break,
                _ = tick.tick() => {
                    while let Some(Ok(key)) = self.workers.try_join_next() {
                        self.running.remove(&key);
                    }
                    if self.position != saved && self.save_in_background() {
                        saved = self.position;
                    }
                    continue;
                }
                r = cursor.next() => match r {
                    None => break,
                    Some(r) => Some(r),
                },
            };
            for r in first.into_iter().chain(cursor.ready(DRAIN_MAX)) {
                match r {
                    Ok(rec) => self.read(&pipeline, &rec, &stop).await,
                    Err(e) => {
                        tracing::error!(
                            "The response stage cannot read the next record: {e}; retrying in 1 s"
                        );
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            self.book.set_read_through(self.position);
            crate::telemetry::metrics()
                .response_position_records
                .store(self.position, std::sync::atomic::Ordering::Relaxed);
        }
        self.workers.shutdown().await;
        if let Some(h) = self.saving.take() {
            let _ = h.await;
        }
        write_state(self.snapshot(), self.path.clone()).await;
    }

    /// Folds one record, carries out what it asks, and moves past it.
    async fn read(&mut self, pipeline: &Arc<Pipeline>, rec: &LogRecord, stop: &Stop) {
        self.position = rec.index + 1;
        if rec.body.agent_id != PIPELINE_AGENT {
            if let Some(lease) = lease_of(rec) {
                self.responder
                    .lease_seen(&rec.body.agent_id, &lease, rec.index);
            }
            return;
        }
        let Some(logged) = evidence::read(&rec.body, &rec.event) else {
            return;
        };
        let started = std::time::SystemTime::now();
        let effects = {
            let keys = pipeline.keys().current();
            let role_of = |agent: &str| keys.agent(agent).and_then(|r| r.role.clone());
            let trigger_of = |agent: &str, event_id: &str| trigger(pipeline, agent, event_id);
            let services = &self.services;
            let policy = services.policy.get();
            let ctx = Context {
                policy: &policy,
                prefixes: services.vault.as_ref().map(|v| v.prefixes()),
                details_type: services
                    .ciba
                    .as_ref()
                    .map_or("vigil_agent_action", |c| c.details_type()),
                role_of: &role_of,
                trigger_of: &trigger_of,
            };
            self.responder.logged(&logged, &rec.body.received_at, &ctx)
        };
        if effects.iter().any(|e| matches!(e, Effect::Posture(_))) {
            if let Some(t) = crate::time::Timestamp::parse_event_time(&rec.body.received_at) {
                let lag = crate::time::Timestamp::now().0 - t.0;
                crate::telemetry::metrics()
                    .response_lag_seconds
                    .observe(lag.max(0) as f64 / 1e9);
            }
        }
        let live = rec.index >= self.live_from;
        let decided = effects.len();
        self.carry_out(pipeline, effects, stop, live).await;
        if decided > 0 && crate::telemetry::trace::enabled() {
            traced(pipeline, &logged, started, decided);
        }
    }

    async fn carry_out(
        &mut self,
        pipeline: &Arc<Pipeline>,
        effects: Vec<Effect>,
        stop: &Stop,
        live: bool,
    ) {
        for effect in effects {
            match effect {
                Effect::Record(e) => {
                    if let Err(err) = workers::record(pipeline, &e).await {
                        tracing::error!(event = %e.event_id, "Cannot record the response's decision: {err}");
                    }
                }
                Effect::Posture(p) => {
                    put_in_force(&self.book, pipeline, &p);
                    crate::telemetry::metrics()
                        .posture_changes_total
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if live {
                        self.signal(pipeline, &p, stop);
                        self.publish(&p).await;
                    }
                }
                Effect::Respond {
                    anomaly_id,
                    response,
                } => self.detection.board().respond(&anomaly_id, response),
                Effect::Legitimate {
                    agent_id,
                    principal,
                    anomaly_ids,
                } => legitimate(pipeline, &agent_id, &principal, &anomaly_ids).await,
                Effect::AskStepUp(r) => {
                    let Some(ciba) = self.services.ciba.clone() else {
                        continue;
                    };
                    if self.running.insert(r.anomaly_id.clone()) {
                        let (p, s, key) = (pipeline.clone(), stop.clone(), r.anomaly_id.clone());
                        self.workers.spawn(async move {
                            workers::step_up(p, ciba, r, s).await;
                            key
                        });
                    }
                }
                Effect::Revoke(order) => {
                    let Some(vault) = self.services.vault.clone() else {
                        continue;
                    };
                    let key = format!("{}.revoke", order.anomaly_id);
                    if self.running.insert(key.clone()) {
                        let (p, s) = (pipeline.clone(), stop.clone());
                        self.workers.spawn(async move {
                            workers::revoke(p, vault, order, s).await;
                            key
                        });
                    }
                }
            }
        }
    }

    /// Pushes the posture change as a Security Event Token, if it has one
    /// and a receiver is configured.
    fn signal(&mut self, pipeline: &Arc<Pipeline>, p: &Posture, stop: &Stop) {
        let Some(signals) = self.services.signals.clone() else {
            return;
        };
        let (pipeline, posture, stop) = (pipeline.clone(), p.clone(), stop.clone());
        let key = format!("signal {} {}", p.agent_id, p.since);
        if self.running.insert(key.clone()) {
            self.workers.spawn(async move {
                workers::signal(pipeline, signals, posture, stop).await;
                key
            });
        }
    }

    /// Publishes a posture change (key: the agent), trying three times.
    async fn publish(&self, p: &Posture) {
        let Some(sink) = &self.kafka else { return };
        let json = serde_json::to_vec(&p.for_gateway()).expect("a posture serialises");
        for attempt in 1..=3u64 {
            match sink
                .publish(ENFORCEMENT_TOPIC, Some(p.agent_id.as_bytes()), &json, &[])
                .await
            {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(agent = %p.agent_id, attempt, "Cannot publish the posture to {ENFORCEMENT_TOPIC}: {e}");
                    tokio::time::sleep(Duration::from_secs(attempt)).await;
                }
            }
        }
    }

    fn snapshot(&self) -> Saved {
        Saved {
            format: FORMAT,
            position: self.position,
            responder: self.responder.clone(),
        }
    }

    fn save_in_background(&mut self) -> bool {
        if self.saving.as_ref().is_some_and(|h| !h.is_finished()) {
            return false;
        }
        self.saving = Some(tokio::spawn(write_state(
            self.snapshot(),
            self.path.clone(),
        )));
        true
    }
}

/// The lease an accepted event used, if any. Most events name none: unless
/// the writer parsed them already, the bytes are searched first, and
/// parsed only when they may hold one (a member name written with escapes
/// is parsed too).
fn lease_of(rec: &LogRecord) -> Option<String> {
    if Verdict::parse(&rec.body.verdict) != Some(Verdict::Accepted) {
        return None;
    }
    if let Some(known) = rec.known_fields() {
        return known?.lease_id.clone();
    }
    let raw = &rec.event[..];
    let may =
        memchr::memmem::find(raw, b"lease_id").is_some() || memchr::memchr(b'\\', raw).is_some();
    if !may {
        return None;
    }
    rec.fields()?.lease_id.clone()
}

/// What an agent's accepted event did, read from the log.
fn trigger(pipeline: &Pipeline, agent: &str, event_id: &str) -> Option<Trigger> {
    let rec = pipeline.view().find_receipt(agent, event_id).ok()??;
    let f = crate::detect::Fields::of_bytes(&rec.event)?;
    Some(Trigger {
        action: f.action,
        resource: f.resource,
    })
}

/// Shows a posture to the judge, then to the API: once the API shows a
/// suspension, the judge already enforces it.
fn put_in_force(book: &Book, pipeline: &Pipeline, p: &Posture) {
    let suspended = pipeline.suspended();
    suspended.set(&p.agent_id, p.state == State::Suspended);
    crate::telemetry::metrics().agents_suspended.store(
        suspended.current().len() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    book.set(p.clone());
}

/// Tells detection the anomalies were legitimate (the principal approved).
async fn legitimate(pipeline: &Pipeline, agent_id: &str, principal: &str, ids: &[String]) {
    for id in ids {
        let e = evidence::Evidence {
            event_id: format!("{id}.feedback.step_up"),
            correlation_id: id.clone(),
            action: crate::detect::stage::FEEDBACK_ACTION,
            agent_id: agent_id.to_string(),
            attributes: serde_json::json!({
                "anomaly_id": id, "verdict": "false_positive",
                "note": format!("{principal} approved it in a CIBA step-up"),
            }),
        };
        if let Err(err) = workers::record(pipeline, &e).await {
            tracing::error!(anomaly = %id, "Cannot record the approval as feedback: {err}");
        }
    }
}

async fn write_state(saved: Saved, path: PathBuf) {
    crate::store::fsutil::save_derived_state(path, "response state", saved).await;
}

/// Records the `respond` span of a logged anomaly or answer that led to
/// effects (tracing is on), in the trace of the event that triggered it.
fn traced(
    pipeline: &Pipeline,
    logged: &evidence::Logged,
    started: std::time::SystemTime,
    effects: usize,
) {
    use crate::telemetry::trace::{record_stage, TraceContext};
    // An anomaly's event holds it under `anomaly`; answers and decisions
    // name the agent and anomaly at the top.
    let about = logged
        .attributes
        .get("anomaly")
        .unwrap_or(&logged.attributes);
    let text = |name: &str| about.get(name).and_then(|v| v.as_str());
    let agent = text("agent_id").unwrap_or("");
    let trigger = about["event_ids"]
        .as_array()
        .and_then(|ids| ids.last())
        .and_then(|id| id.as_str())
        .unwrap_or(&logged.correlation_id);
    let mut attributes = vec![
        ("vigil.agent_id", agent.to_string()),
        ("vigil.correlation_id", logged.correlation_id.clone()),
        ("vigil.action", logged.action.clone()),
        ("vigil.effects", effects.to_string()),
    ];
    if let Some(id) = text("anomaly_id") {
        attributes.push(("vigil.anomaly_id", id.to_string()));
    }
    // The trigger's own W3C context, as its other stages used.
    let event = pipeline
        .view()
        .find_receipt(agent, trigger)
        .ok()
        .flatten()
        .and_then(|rec| crate::event::Event::parse(&rec.event).ok());
    let own = event
        .as_ref()
        .map(|e| (e.str_field("trace_id"), e.str_field("span_id")));
    let parent = TraceContext::of_event(agent, trigger, own);
    record_stage("respond", parent, started, attributes);
}
