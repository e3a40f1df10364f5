//! The detection stage: follows the log's durable cursor, feeds every
//! record to the [`Detector`], shows anomalies on the [`Board`] and
//! receipts each published version as a `vigil.anomaly` event of agent
//! `vigil` in the same log. Analysts' verdicts are `vigil.anomaly_feedback`
//! events in the log, applied when the cursor reaches them, so a replay
//! teaches exactly what living through it taught.
//!
//! Its state is derived from the log and saved in `DIR/index/detect.json`
//! (format [`FORMAT`]) with the log position it covers, every few seconds
//! and at stop. After a crash it resumes from the saved position: the
//! records after it are judged again, giving the same anomalies (ids are
//! derived from the triggering event), and versions already in the log
//! are not appended twice. A missing or unreadable file, or one of another
//! format, is rebuilt by judging the log from its first record.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::anomaly::{Anomaly, Feedback};
use super::baseline::Baseline;
use super::board::{Board, SavedBoard};
use super::{Detector, Observation};
use crate::event::PIPELINE_AGENT;
use crate::json::Value;
use crate::pipeline::Pipeline;
use crate::shutdown::Stop;
use crate::store::view::LogRecord;
use crate::time::Timestamp;

/// Version of the saved state's format.
pub const FORMAT: u32 = 1;
/// The action of an anomaly's event.
pub const ANOMALY_ACTION: &str = "vigil.anomaly";
/// The action of an analyst's verdict's event.
pub const FEEDBACK_ACTION: &str = "vigil.anomaly_feedback";
/// How often the state is saved while the log grows.
const SAVE_EVERY: Duration = Duration::from_secs(5);
/// Records judged in a row before stop and saves are looked at again.
const DRAIN_MAX: usize = 4096;

#[derive(Serialize, Deserialize)]
struct Saved {
    format: u32,
    position: u64,
    detector: Detector,
    board: SavedBoard,
}

/// What the API shares with the stage: the board, and a way to ask for
/// an agent's baseline.
#[derive(Debug)]
pub struct Detection {
    board: Mutex<Board>,
    asks: tokio::sync::mpsc::Sender<Ask>,
}

/// A request for an agent's baseline, answered by the stage between
/// records (it owns the detector).
#[derive(Debug)]
struct Ask {
    agent_id: String,
    reply: tokio::sync::oneshot::Sender<Option<Baseline>>,
}

/// Detection is not running (`[detection] enabled = false`, or stopping).
#[derive(Debug, thiserror::Error)]
#[error(
    "detection is not running, so no baseline is learnt; enable it with [detection] enabled = true"
)]
pub struct DetectionOff;

impl Detection {
    /// The learnt baseline of `agent_id` as it stands after the records
    /// judged so far (`None` when it has had no accepted event).
    pub async fn baseline(&self, agent_id: &str) -> Result<Option<Baseline>, DetectionOff> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let ask = Ask {
            agent_id: agent_id.to_string(),
            reply,
        };
        self.asks.send(ask).await.map_err(|_| DetectionOff)?;
        answer.await.map_err(|_| DetectionOff)
    }

    /// The board, locked.
    pub fn board(&self) -> MutexGuard<'_, Board> {
        self.board
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The stage, ready to run.
pub struct Stage {
    shared: Arc<Detection>,
    asks: tokio::sync::mpsc::Receiver<Ask>,
    detector: Detector,
    position: u64,
    path: PathBuf,
    /// Anomaly versions being receipted; all are finished before a save,
    /// so a saved position never skips an anomaly that is not in the log.
    publishing: tokio::task::JoinSet<()>,
    /// Where anomalies are also published (`vigil.anomalies`), if Kafka is
    /// configured.
    kafka: Option<crate::ingest::kafka::KafkaSink>,
    /// The queue of receipted anomalies to the Kafka publisher, while
    /// running with Kafka: a slow or absent broker never holds up
    /// detection.
    announce: Option<tokio::sync::mpsc::Sender<Anomaly>>,
    /// The save running in the background, if any, and how long its
    /// copy of the state took.
    saving: Option<(tokio::task::JoinHandle<Duration>, Duration)>,
    /// When the next save is due.
    pace: crate::store::fsutil::SavePace,
    /// The wall-clock time written as `detected_at`.
    now_text: crate::time::MillisText,
}

/// The Kafka topic anomalies are published to.
pub const ANOMALY_TOPIC: &str = "vigil.anomalies";

/// Anomaly versions receipted at once before detection waits for one.
const PUBLISHING_MAX: usize = 64;

impl Stage {
    /// Loads the saved state (or starts from the log's first record);
    /// `model` turns the multivariate model's judgement on.
    pub fn open(path: PathBuf, model: bool) -> (Stage, Arc<Detection>) {
        let saved = std::fs::read(&path).ok().and_then(|b| {
            match serde_json::from_slice::<Saved>(&b) {
                Ok(s) if s.format == FORMAT => Some(s),
                Ok(s) => {
                    tracing::warn!(path = %path.display(), format = s.format, "Detection state of another format: rebuilding it from the log");
                    None
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "Detection state unreadable ({e}): rebuilding it from the log");
                    None
                }
            }
        });
        let (mut detector, position, board) = match saved {
            Some(s) => (s.detector, s.position, Board::restore(s.board)),
            None => (Detector::default(), 0, Board::default()),
        };
        detector.use_model(model);
        let (asks_tx, asks) = tokio::sync::mpsc::channel(64);
        let shared = Arc::new(Detection {
            board: Mutex::new(board),
            asks: asks_tx,
        });
        let stage = Stage {
            shared: shared.clone(),
            asks,
            detector,
            position,
            path,
            publishing: tokio::task::JoinSet::new(),
            kafka: None,
            announce: None,
            saving: None,
            pace: crate::store::fsutil::SavePace::new(SAVE_EVERY),
            now_text: crate::time::MillisText::default(),
        };
        (stage, shared)
    }

    /// Also publishes each receipted anomaly version to Kafka.
    pub fn publish_to(&mut self, sink: crate::ingest::kafka::KafkaSink) {
        self.kafka = Some(sink);
    }

    /// Follows the log until `stop` fires (or the log closes), then saves.
    pub async fn run(mut self, pipeline: Arc<Pipeline>, mut stop: Stop) {
        let announcer = self.kafka.take().map(|sink| {
            let (tx, rx) = tokio::sync::mpsc::channel(ANNOUNCE_QUEUE);
            self.announce = Some(tx);
            tokio::spawn(announce(sink, rx))
        });
        let mut cursor = pipeline.view().tail(self.position);
        let mut saved_at = self.position;
        let save_tick = tokio::time::sleep(SAVE_EVERY);
        tokio::pin!(save_tick);
        loop {
            let first = tokio::select! {
                _ = stop.stopped() => break,
                _ = &mut save_tick => None,
                Some(ask) = self.asks.recv() => {
                    let _ = ask.reply.send(self.detector.baseline(&ask.agent_id));
                    continue;
                }
                r = cursor.next() => match r {
                    None => break,
                    Some(r) => Some(r),
                },
            };
            for r in first.into_iter().chain(cursor.ready(DRAIN_MAX)) {
                match r {
                    Ok(rec) => self.judged(&pipeline, &rec).await,
                    Err(e) => {
                        tracing::error!(
                            "Detection cannot read the next record: {e}; retrying in 1 s"
                        );
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            if save_tick.is_elapsed() {
                save_tick
                    .as_mut()
                    .reset(tokio::time::Instant::now() + SAVE_EVERY);
            }
            self.save_finished().await;
            if self.position != saved_at && self.pace.due() && self.save_in_background() {
                saved_at = self.position;
            }
        }
        self.save_last().await;
        // Every publication task is done: dropping the last sender closes
        // the queue, and the publisher ends once it has sent what is in it.
        self.announce = None;
        if let Some(mut task) = announcer {
            if tokio::time::timeout(KAFKA_STOP_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
                tracing::warn!("Stopping before every anomaly reached the Kafka topic {ANOMALY_TOPIC}; they are receipted in the log and served by GET /v1/anomalies");
            }
        }
    }

    /// Judges one record and moves the position past it.
    async fn judged(&mut self, pipeline: &Arc<Pipeline>, rec: &LogRecord) {
        self.handle(pipeline, rec).await;
        self.position = rec.index + 1;
        crate::telemetry::metrics()
            .detection_position_records
            .store(self.position, std::sync::atomic::Ordering::Relaxed);
    }

    async fn handle(&mut self, pipeline: &Arc<Pipeline>, rec: &LogRecord) {
        if rec.body.agent_id == PIPELINE_AGENT {
            self.pipeline_event(rec);
            return;
        }
        let role = pipeline
            .keys()
            .current()
            .agent(&rec.body.agent_id)
            .and_then(|r| r.role.clone());
        let Some(obs) = Observation::of(rec, role) else {
            return;
        };
        let now = Timestamp::now();
        let started = std::time::SystemTime::now();
        let emitted = self.detector.observe(&obs, self.now_text.of(now));
        if crate::telemetry::trace::enabled() {
            traced(
                rec,
                started,
                emitted.as_ref().map(|e| e.anomaly.anomaly_id.as_str()),
            );
        }
        let m = crate::telemetry::metrics();
        let lag_ms = (now.0 / 1_000_000) as i64 - obs.received_ms;
        m.detection_lag_seconds
            .observe(lag_ms.max(0) as f64 / 1000.0);
        let Some(emitted) = emitted else {
            return;
        };
        self.shared.board().show(emitted.anomaly.clone());
        m.anomalies_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for kind in &emitted.anomaly.kinds {
            m.anomaly_kinds
                .inc(&[kind.as_str(), emitted.anomaly.severity.as_str()]);
        }
        if emitted.publish {
            if self.publishing.len() >= PUBLISHING_MAX {
                self.publishing.join_next().await;
            }
            let (pipeline, anomaly) = (pipeline.clone(), emitted.anomaly);
            let announce = self.announce.clone();
            self.publishing.spawn(async move {
                match publish(&pipeline, &anomaly).await {
                    Ok(true) => {
                        if let Some(queue) = announce {
                            let id = anomaly.anomaly_id.clone();
                            if queue.try_send(anomaly).is_err() {
                                tracing::warn!(anomaly = %id, "The Kafka topic {ANOMALY_TOPIC} is {ANNOUNCE_QUEUE} anomalies behind (is the broker up and the topic created?); this one is not published there. It is receipted in the log and served by GET /v1/anomalies");
                            }
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(anomaly = %anomaly.anomaly_id, "Cannot receipt the anomaly: {e}")
                    }
                }
            });
        }
    }

    /// Applies an analyst's verdict found in the log.
    fn pipeline_event(&mut self, rec: &LogRecord) {
        let Ok(event) = crate::event::Event::parse(&rec.event) else {
            return;
        };
        if event.str_field("action") != FEEDBACK_ACTION {
            return;
        }
        let attrs = event.value.get("attributes");
        let field = |n: &str| attrs.and_then(|a| a.get(n)).and_then(Value::as_str);
        let (Some(id), Some(verdict)) = (field("anomaly_id"), field("verdict")) else {
            return;
        };
        self.detector.feedback(id, verdict);
        let feedback = Feedback {
            verdict: verdict.to_string(),
            note: field("note").map(str::to_string),
            index: rec.index,
        };
        self.shared.board().feedback(id, feedback);
    }

    /// Starts saving the state as it is now, unless a save is still
    /// running. The save first waits for the anomaly versions being
    /// receipted (so the saved position never skips one that is not in
    /// the log), then writes durably; detection goes on meanwhile.
    fn save_in_background(&mut self) -> bool {
        if self.saving.is_some() {
            return false;
        }
        let started = self.pace.started();
        let pending = std::mem::take(&mut self.publishing);
        // The agents' parts are shared (copy on write), but the map of
        // 10,000 agents is still copied: the runtime's other tasks (HTTP
        // answers) move to another thread meanwhile.
        let saved = crate::background::off_the_runtime(|| self.snapshot());
        let path = self.path.clone();
        let task = tokio::spawn(write_state(pending, saved, path));
        self.saving = Some((task, started.elapsed()));
        true
    }

    /// Tells the pace what the background save took, once it is done.
    async fn save_finished(&mut self) {
        if !self.saving.as_ref().is_some_and(|(h, _)| h.is_finished()) {
            return;
        }
        let (task, copying) = self.saving.take().expect("a finished save");
        let writing = task.await.unwrap_or_default();
        self.pace.finished(copying + writing);
    }

    /// Saves at stop: waits for the running save, then saves the end.
    async fn save_last(&mut self) {
        if let Some((h, _)) = self.saving.take() {
            let _ = h.await;
        }
        let pending = std::mem::take(&mut self.publishing);
        write_state(pending, self.snapshot(), self.path.clone()).await;
    }

    fn snapshot(&self) -> Saved {
        Saved {
            format: FORMAT,
            position: self.position,
            detector: self.detector.clone(),
            board: self.shared.board().save(),
        }
    }
}

/// Writes the state once the anomalies it counts are receipted; returns
/// how long the writing took.
async fn write_state(
    mut pending: tokio::task::JoinSet<()>,
    saved: Saved,
    path: PathBuf,
) -> Duration {
    while pending.join_next().await.is_some() {}
    let started = Instant::now();
    crate::store::fsutil::save_derived_state(path, "detection state", saved).await;
    started.elapsed()
}

/// The log's event id of an anomaly's version.
pub fn version_event_id(a: &Anomaly) -> String {
    if a.revision == 0 {
        a.anomaly_id.clone()
    } else {
        format!("{}.r{}", a.anomaly_id, a.revision)
    }
}

/// Why an anomaly could not be receipted.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The pipeline refused or failed.
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    /// The event was answered without a receipt.
    #[error("the anomaly's event got no receipt")]
    NoReceipt,
}

/// How long a stopping stage still waits for the anomalies queued for
/// Kafka (the producer waits up to 30 s for a broker, three times).
const KAFKA_STOP_GRACE: Duration = Duration::from_secs(2);

/// Most receipted anomalies waiting for Kafka; beyond that, new ones skip
/// Kafka (they are in the log).
const ANNOUNCE_QUEUE: usize = 1024;

/// Publishes the queued anomalies to Kafka, one after another, until the
/// queue closes (the stage stops it, bounded by [`KAFKA_STOP_GRACE`]).
async fn announce(
    sink: crate::ingest::kafka::KafkaSink,
    mut queue: tokio::sync::mpsc::Receiver<Anomaly>,
) {
    while let Some(a) = queue.recv().await {
        to_kafka(&sink, &a).await;
    }
}

/// Publishes a receipted version to Kafka (key: the agent), trying three
/// times. A crash between the receipt and this loses the Kafka copy (the
/// log has it; a replay does not publish versions the log already has).
async fn to_kafka(sink: &crate::ingest::kafka::KafkaSink, a: &Anomaly) {
    let json = serde_json::to_vec(a).expect("an anomaly serialises");
    for attempt in 1..=3 {
        match sink
            .publish(ANOMALY_TOPIC, Some(a.agent_id.as_bytes()), &json, &[])
            .await
        {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(anomaly = %a.anomaly_id, attempt, "Cannot publish the anomaly to {ANOMALY_TOPIC}: {e}");
                tokio::time::sleep(Duration::from_secs(attempt)).await;
            }
        }
    }
}

/// Receipts a version of an anomaly, unless the log already has it;
/// returns whether it was receipted now.
async fn publish(pipeline: &Pipeline, a: &Anomaly) -> Result<bool, PublishError> {
    let event_id = version_event_id(a);
    if let Ok(Some(_)) = pipeline.view().find_receipt(PIPELINE_AGENT, &event_id) {
        return Ok(false);
    }
    let json = serde_json::to_vec(a).expect("an anomaly serialises");
    let object = crate::json::parse(&json).expect("an anomaly is I-JSON");
    let fields = vec![
        ("event_id".to_string(), Value::String(event_id)),
        (
            "correlation_id".into(),
            Value::String(a.correlation_id.clone().unwrap_or(a.anomaly_id.clone())),
        ),
        (
            "resource".into(),
            Value::String(format!("agent:{}", a.agent_id)),
        ),
        (
            "attributes".into(),
            Value::Object(vec![("anomaly".into(), object)]),
        ),
    ];
    let result = pipeline.append_own(ANOMALY_ACTION, fields).await?;
    result.receipt.map(|_| true).ok_or(PublishError::NoReceipt)
}

/// Records the `detect` span of an agent's event (tracing is on).
fn traced(rec: &LogRecord, started: std::time::SystemTime, anomaly: Option<&str>) {
    use crate::telemetry::trace::{record_stage, TraceContext};
    let Ok(event) = crate::event::Event::parse(&rec.event) else {
        return;
    };
    let own = (event.str_field("trace_id"), event.str_field("span_id"));
    let parent = TraceContext::of_event(event.agent_id(), event.event_id(), Some(own));
    let mut attributes = crate::pipeline::traced::event_attributes(
        event.agent_id(),
        event.event_id(),
        event.correlation_id(),
    );
    attributes.push(("vigil.index", rec.index.to_string()));
    if let Some(id) = anomaly {
        attributes.push(("vigil.anomaly_id", id.to_string()));
    }
    record_stage("detect", parent, started, attributes);
}
