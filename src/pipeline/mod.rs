//! The ingest pipeline shared by every source (HTTP, HEC, Kafka).
//!
//! Life of an event: a source hands [`Pipeline::ingest`] a batch of raw
//! items; they are judged in parallel on the verification pool
//! ([`judge`]); the single log writer ([`writer`]) settles duplicates and
//! conflicts in input order, appends receipts and quarantine entries, syncs
//! once for the whole group, and only then answers. Checkpoints are signed
//! by the writer over durable records at least every `checkpoint_interval`.
//! Later stages (detection, response) will subscribe to durable, accepted
//! events from here; the pipeline's own events enter through
//! [`Pipeline::append_own`].

pub mod health;
pub mod judge;
pub mod state;
pub mod writer;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rayon::prelude::*;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::event::signature::{b64url, sign};
use crate::event::{Event, Unidentifiable, EVENT_SPEC, PIPELINE_AGENT};
use crate::json::{self, Value};
use crate::keys::registry::KeyError;
use crate::keys::{KeyRegistry, KeySet, TimeRules};
use crate::log::note::NoteSigner;
use crate::log::proof::build_proof;
use crate::log::receipt::{ServedReceipt, Verdict};
use crate::store::checkpoints::{read_checkpoints, CheckpointWriter};
use crate::store::datadir::{DataDir, DataDirError};
use crate::store::quarantine::Quarantine;
use crate::store::segments::{SegmentReader, SegmentWriter};
use crate::time::Timestamp;
use health::Health;
use judge::Judgement;
use state::{id_key, LogState, RecoverError};
use writer::{Judged, Request, Writer};

/// How to open a pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The data directory.
    pub data: PathBuf,
    /// The origin to create the log with (or check against).
    pub origin: Option<String>,
    /// A log key file to use instead of `DIR/log.key`.
    pub log_key_file: Option<PathBuf>,
    /// JWKS sources.
    pub jwks: Vec<String>,
    /// Revocation grace and clock skew.
    pub rules: TimeRules,
    /// Longest time between checkpoints while the log grows.
    pub checkpoint_interval: Duration,
    /// Bound of the quarantine.
    pub quarantine_max_entries: u64,
    /// Size at which a log segment is closed and a new one started.
    pub segment_max_bytes: u64,
    /// Threads that verify signatures (0 = one per core).
    pub verify_threads: usize,
}

impl PipelineConfig {
    /// Defaults for a data directory.
    pub fn new(data: PathBuf) -> PipelineConfig {
        PipelineConfig {
            data,
            origin: None,
            log_key_file: None,
            jwks: Vec::new(),
            rules: TimeRules::default(),
            checkpoint_interval: Duration::from_secs(1),
            quarantine_max_entries: 10_000,
            segment_max_bytes: 64 << 20,
            verify_threads: 0,
        }
    }
}

/// Why the pipeline cannot start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory is unusable.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// Keys could not be loaded.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The log on disk is damaged.
    #[error(transparent)]
    Recover(#[from] RecoverError),
    /// Another file problem.
    #[error("{0}")]
    Io(String),
}

/// Why a batch was not answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PipelineError {
    /// The log cannot be written any more.
    #[error("{0}")]
    Failed(String),
    /// The pipeline is shutting down.
    #[error("vigil is shutting down; send the batch again to another instance or after restart")]
    ShuttingDown,
}

/// One raw input item and where it came from.
#[derive(Debug, Clone)]
pub struct Item {
    /// The bytes as received.
    pub raw: Bytes,
    /// Where it came from (`http`, `hec`, `kafka:topic/partition@offset`).
    pub source: String,
    /// Already known not to be receiptable (a framing error).
    pub preset: Option<Unidentifiable>,
}

impl Item {
    /// An item to judge.
    pub fn new(raw: Bytes, source: impl Into<String>) -> Item {
        Item {
            raw,
            source: source.into(),
            preset: None,
        }
    }
}

/// The status of one item in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A new accepted receipt.
    Accepted,
    /// The same event was accepted before; its receipt is returned.
    Duplicate,
    /// A rejection receipt, or quarantined without a receipt.
    Rejected,
}

/// The answer for one item (contract section 5, `results`).
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
}

impl ItemResult {
    fn quarantined(u: &Unidentifiable) -> ItemResult {
        ItemResult {
            event_id: None,
            agent_id: None,
            status: Status::Rejected,
            reason: Some(u.reason().to_string()),
            receipt: None,
            error: Some(u.message().to_string()),
        }
    }

    fn rejected(
        event: &Event,
        verdict: Verdict,
        error: Option<String>,
        receipt: Option<ServedReceipt>,
    ) -> ItemResult {
        let reason = match verdict {
            Verdict::Rejected(r) => Some(r.as_str().to_string()),
            Verdict::Accepted => None,
        };
        ItemResult {
            event_id: Some(event.event_id().to_string()),
            agent_id: Some(event.agent_id().to_string()),
            status: Status::Rejected,
            reason,
            receipt,
            error,
        }
    }
}

/// A receipt looked up by id, with its proof when a checkpoint covers it.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiptLookup {
    /// The served receipt.
    pub receipt: ServedReceipt,
    /// The tlog-proof text to the latest checkpoint, or null.
    pub proof: Option<String>,
}

/// Judges a batch in parallel on the current rayon pool.
fn judge_all(
    items: Vec<Item>,
    keys: &KeySet,
    rules: &TimeRules,
    received_at: Timestamp,
) -> Vec<Judged> {
    items
        .into_par_iter()
        .with_min_len(16)
        .map(|item| {
            let judgement = match item.preset {
                Some(u) => Judgement::Quarantine(u),
                None => judge::judge(&item.raw, keys, rules, received_at),
            };
            Judged {
                judgement,
                raw: item.raw,
                source: item.source,
            }
        })
        .collect()
}

/// A running pipeline over one data directory.
pub struct Pipeline {
    tx: mpsc::Sender<Request>,
    state: Arc<RwLock<LogState>>,
    reader: Arc<SegmentReader>,
    keys: Arc<KeyRegistry>,
    rules: TimeRules,
    pool: Arc<rayon::ThreadPool>,
    health: Health,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    data: Arc<DataDir>,
}

impl Pipeline {
    /// Opens the data directory, loads keys, recovers the log (cutting a
    /// torn tail a crash left), signs the size-0 checkpoint of a new log,
    /// and starts the writer. Call from inside a tokio runtime.
    pub fn open(cfg: &PipelineConfig) -> Result<Pipeline, OpenError> {
        let data = DataDir::open(
            &cfg.data,
            cfg.origin.as_deref(),
            cfg.log_key_file.as_deref(),
        )?;
        let keys = KeyRegistry::open(
            &cfg.jwks,
            &data.root.join("keys").join("snapshot.jsonl"),
            &[data.pipeline_key.public_jwk()],
        )?;
        crate::telemetry::metrics().keys_loaded.store(
            keys.current().key_count() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let cp_path = data.root.join("checkpoints.log");
        let io = |what: &str, e: std::io::Error| OpenError::Io(format!("{what}: {e}"));
        let scan = read_checkpoints(&cp_path).map_err(|e| io("cannot read checkpoints.log", e))?;
        if let Some((offset, why)) = &scan.corrupt {
            return Err(RecoverError::Damaged {
                file: "checkpoints.log".into(),
                position: format!("byte {offset}"),
                why: why.clone(),
            }
            .into());
        }
        if let Some((offset, why)) = &scan.torn {
            tracing::warn!(
                offset,
                why,
                "Cutting a torn checkpoint record left by a crash (it was never served)"
            );
        }
        let log_dir = data.root.join("log");
        let recovered = state::recover(&log_dir, &data.origin, &scan.checkpoints)?;
        if let Some(cut) = &recovered.cut {
            tracing::warn!(
                cut,
                "Cut a torn tail left by a crash; it was never acknowledged"
            );
        }
        let segments = SegmentWriter::open(
            &log_dir,
            &recovered.segments,
            recovered.state.tree.size(),
            recovered.active_len,
            cfg.segment_max_bytes,
        )
        .map_err(|e| io("cannot open the log segments", e))?;
        let checkpoints = CheckpointWriter::open(&cp_path, scan.good_len)
            .map_err(|e| io("cannot open checkpoints.log", e))?;
        let quarantine =
            Quarantine::open(&data.root.join("quarantine"), cfg.quarantine_max_entries)
                .map_err(|e| io("cannot open the quarantine", e))?;
        let size = recovered.state.tree.size();
        let state = Arc::new(RwLock::new(recovered.state));
        let health = Health::default();
        let reader = segments.reader();
        let mut writer = Writer {
            state: state.clone(),
            segments,
            reader: reader.clone(),
            checkpoints,
            quarantine,
            signer: NoteSigner::new(&data.origin, data.log_key.clone()),
            interval: cfg.checkpoint_interval,
            health: health.clone(),
        };
        // A new log gets its size-0 checkpoint; a recovered one a checkpoint
        // over everything recovered, so every durable record is covered.
        writer
            .checkpoint()
            .map_err(|e| OpenError::Io(e.to_string()))?;
        crate::telemetry::metrics()
            .log_size_records
            .store(size, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(64);
        let rt = tokio::runtime::Handle::current();
        let writer_health = health.clone();
        let handle = std::thread::Builder::new()
            .name("vigil-log-writer".into())
            .spawn(move || {
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    writer.run(rx, rt)
                }));
                if let Err(payload) = run {
                    writer_health.fail(format!(
                        "the log writer thread panicked ({}); vigil stops taking events. This is a bug: \
                         restart vigil (it recovers from what is durable) and report the log",
                        health::panic_message(&*payload)
                    ));
                }
            })
            .map_err(|e| io("cannot start the log writer thread", e))?;
        let threads = if cfg.verify_threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            cfg.verify_threads
        };
        let pool_health = health.clone();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("vigil-verify-{i}"))
            .panic_handler(move |payload| {
                pool_health.fail(format!(
                    "a verification thread panicked ({}); vigil stops taking events. This is a bug: \
                     restart vigil and report the log",
                    health::panic_message(&*payload)
                ));
            })
            .build()
            .map_err(|e| OpenError::Io(format!("cannot start the verification threads: {e}")))?;
        Ok(Pipeline {
            tx,
            state,
            reader,
            keys: Arc::new(keys),
            rules: cfg.rules,
            pool: Arc::new(pool),
            health,
            writer: std::sync::Mutex::new(Some(handle)),
            data: Arc::new(data),
        })
    }

    /// Judges and receipts (or quarantines) a batch; answers, in input
    /// order, once everything it names is durable.
    pub async fn ingest(&self, items: Vec<Item>) -> Result<Vec<ItemResult>, PipelineError> {
        if let Some(why) = self.health.failure() {
            return Err(PipelineError::Failed(why));
        }
        let arrived = Instant::now();
        let received_at = Timestamp::now();
        let keys = self.keys.current();
        let rules = self.rules;
        let (jtx, jrx) = oneshot::channel();
        let health = self.health.clone();
        self.pool.spawn(move || {
            let judging = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                judge_all(items, &keys, &rules, received_at)
            }));
            match judging {
                Ok(judged) => {
                    let _ = jtx.send(judged);
                }
                Err(payload) => {
                    // Failed before the sender is dropped, so the request
                    // is answered with the reason.
                    health.fail(format!(
                        "a verification thread panicked ({}); vigil stops taking events. This is a bug: \
                         restart vigil and report the log",
                        health::panic_message(&*payload)
                    ));
                }
            }
        });
        let judged = jrx.await.map_err(|_| self.gone())?;
        let judged_at = Instant::now();
        crate::telemetry::metrics()
            .ingest_judge_seconds
            .observe((judged_at - arrived).as_secs_f64());
        let results = self.submit(judged, received_at, arrived).await;
        crate::telemetry::metrics()
            .log_commit_wait_seconds
            .observe(judged_at.elapsed().as_secs_f64());
        results
    }

    async fn submit(
        &self,
        items: Vec<Judged>,
        received_at: Timestamp,
        arrived: Instant,
    ) -> Result<Vec<ItemResult>, PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Batch {
                items,
                received_at,
                arrived,
                reply,
            })
            .await
            .map_err(|_| self.gone())?;
        rx.await.map_err(|_| self.gone())?
    }

    /// Why a request got no answer: the pipeline failed, or it is stopping.
    fn gone(&self) -> PipelineError {
        match self.health.failure() {
            Some(why) => PipelineError::Failed(why),
            None => PipelineError::ShuttingDown,
        }
    }

    /// Appends an event of the pipeline itself (agent `vigil`), signed with
    /// the pipeline's event key: `fields` are merged over `spec`,
    /// `event_id`, `occurred_at`, `agent_id`, `key_id` and
    /// `correlation_id`, which are filled in when missing.
    pub async fn append_own(
        &self,
        action: &str,
        fields: Vec<(String, Value)>,
    ) -> Result<ItemResult, PipelineError> {
        let now = Timestamp::now();
        let key = &self.data.pipeline_key;
        let event_id = uuid::Uuid::now_v7().to_string();
        let mut members: Vec<(String, Value)> = vec![
            ("spec".into(), Value::String(EVENT_SPEC.into())),
            ("event_id".into(), Value::String(event_id.clone())),
            ("occurred_at".into(), Value::String(now.to_rfc3339_millis())),
            ("agent_id".into(), Value::String(PIPELINE_AGENT.into())),
            ("key_id".into(), Value::String(key.kid.clone())),
            ("correlation_id".into(), Value::String(event_id)),
            ("action".into(), Value::String(action.into())),
        ];
        for (k, v) in fields {
            members.retain(|(m, _)| *m != k);
            members.push((k, v));
        }
        members.retain(|(m, _)| m != "signature");
        let unsigned = json::Canonical::of_object(&members, "signature");
        let sig = sign(&key.key, &unsigned.without);
        members.push(("signature".into(), Value::String(b64url(&sig))));
        let event = Event::from_value(Value::Object(members))
            .map_err(|u| PipelineError::Failed(u.message().into()))?;
        let raw = Bytes::from(event.canonical.whole.clone());
        let judged = Judged {
            judgement: Judgement::Receipt {
                event: Box::new(event),
                verdict: Verdict::Accepted,
                error: None,
            },
            raw,
            source: "vigil".into(),
        };
        let mut results = self.submit(vec![judged], now, Instant::now()).await?;
        Ok(results.remove(0))
    }

    /// Signs a checkpoint over everything durable now (if it grew) and
    /// returns the latest checkpoint.
    pub async fn checkpoint_now(&self) -> Result<String, PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Checkpoint { reply })
            .await
            .map_err(|_| PipelineError::ShuttingDown)?;
        rx.await.map_err(|_| PipelineError::ShuttingDown)?
    }

    /// The accepted receipt of (agent, event id), else its latest rejection.
    pub fn receipt(
        &self,
        agent_id: &str,
        event_id: &str,
    ) -> std::io::Result<Option<ReceiptLookup>> {
        let key = id_key(agent_id, event_id);
        let (index, pos) = {
            let st = self.read_state();
            let index = match (st.accepted.get(&key), st.rejected.get(&key)) {
                (Some(c), _) => c.index,
                (None, Some(r)) => r.index,
                (None, None) => return Ok(None),
            };
            if index >= st.durable_size {
                return Ok(None);
            }
            (index, st.positions[index as usize])
        };
        let record = self.reader.read(pos)?;
        let st = self.read_state();
        let proof = (index < st.checkpoint_size).then(|| {
            let path = st.tree.inclusion_proof(index, st.checkpoint_size);
            build_proof(&record.body, index, &path, &st.checkpoint)
        });
        Ok(Some(ReceiptLookup {
            receipt: st.served(index, &record.body),
            proof,
        }))
    }

    /// The log state for reading. A writer that panicked while holding it
    /// leaves it poisoned; the pipeline is then failed and only durable
    /// records (below `durable_size`, which the writer moves last) are read.
    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, LogState> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The latest checkpoint note.
    pub fn checkpoint(&self) -> String {
        self.read_state().checkpoint.clone()
    }

    /// The consistency proof between two checkpointed sizes.
    pub fn consistency(&self, from: u64, to: u64) -> Result<Vec<[u8; 32]>, String> {
        let st = self.read_state();
        for s in [from, to] {
            if st.checkpoint_sizes.binary_search(&s).is_err() {
                return Err(format!("{s} is not the size of a checkpoint of this log; use sizes from GET /v1/checkpoint"));
            }
        }
        if from < 1 || from > to {
            return Err("from and to must satisfy 1 <= from <= to".into());
        }
        Ok(st.tree.consistency_proof(from, to))
    }

    /// The log's verifier keys, current first.
    pub fn verifier_keys(&self) -> Vec<String> {
        self.data.verifier_keys()
    }

    /// The JWKS of the pipeline's own event key(s).
    pub fn pipeline_jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.data.pipeline_key.public_jwk()] })
    }

    /// The key registry (for reloads).
    pub fn keys(&self) -> &Arc<KeyRegistry> {
        &self.keys
    }

    /// The open data directory.
    pub fn data_dir(&self) -> &DataDir {
        &self.data
    }

    /// Durable records in the log.
    pub fn size(&self) -> u64 {
        self.read_state().durable_size
    }

    /// Why the log stopped taking events, if it did.
    pub fn failure(&self) -> Option<String> {
        self.health.failure()
    }

    /// The pipeline's health (to wait for a failure).
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Stops the writer after everything sent so far is answered, writes a
    /// last checkpoint, and waits for it. Later batches get
    /// [`PipelineError::ShuttingDown`].
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Request::Shutdown).await;
        let handle = self
            .writer
            .lock()
            .expect("the writer handle lock is never poisoned")
            .take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}
