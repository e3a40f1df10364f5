//! The ingest pipeline shared by every source (HTTP, HEC, Kafka).
//!
//! Life of an event: a source hands [`Pipeline::ingest`] a batch of raw
//! items; they are judged in parallel on the verification pool
//! ([`judge`]); the single log writer ([`writer`]) settles duplicates and
//! conflicts in input order, appends receipts and quarantine entries, syncs
//! once for the whole group, updates the duplicate index, and only then
//! answers. The [`checkpointer`] follows the durable records, writes the
//! tree's tiles and signs a checkpoint at least every
//! `checkpoint_interval`. Everything that reads the log goes through its
//! read side ([`crate::store::view::LogView`], [`Pipeline::view`]): later
//! stages (detection, Parquet sealing) follow it with a durable cursor.
//! The pipeline's own events enter through [`Pipeline::append_own`].

pub mod checkpointer;
pub mod health;
pub mod judge;
mod keylog;
mod open;
mod results;
pub mod traced;
pub mod writer;

pub use crate::store::view::ReceiptLookup;
pub use results::{write_batch_answer, Committed, ItemResult, Status};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rayon::prelude::*;
use tokio::sync::{mpsc, oneshot, watch};

use crate::event::signature::{b64url, sign};
use crate::event::tables::TableCache;
use crate::event::{Event, Summary, Unidentifiable, EVENT_SPEC, PIPELINE_AGENT};
use crate::json::{self, Value};
use crate::keys::registry::KeyError;
use crate::keys::{KeyRegistry, TimeRules};
use crate::log::receipt::Verdict;
use crate::store::checkpoints::CheckpointError;
use crate::store::datadir::{DataDir, DataDirError};
use crate::store::dedupe::DedupeError;
use crate::store::recover::RecoverError;
use crate::store::view::{LogView, ViewError};
use crate::time::Timestamp;
use checkpointer::ToCheckpointer;
use health::Health;
use judge::Judgement;
use writer::{Batch, Judged, Request};

/// How to open a pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The data directory.
    pub data: PathBuf,
    /// The origin to create the log with (or check against).
    pub origin: Option<String>,
    /// A log key file to use instead of `DIR/log.key`.
    pub log_keys: crate::store::datadir::LogKeys,
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
    /// Size of the duplicate index's Bloom filter, in bytes.
    pub dedupe_filter_bytes: usize,
    /// Hash tiles kept in memory for proofs (8 KiB each).
    pub tile_cache_tiles: usize,
    /// Memory for per-key verification tables, in bytes (0: none).
    pub verify_table_bytes: usize,
}

impl PipelineConfig {
    /// Defaults for a data directory.
    pub fn new(data: PathBuf) -> PipelineConfig {
        PipelineConfig {
            data,
            origin: None,
            log_keys: Default::default(),
            jwks: Vec::new(),
            rules: TimeRules::default(),
            checkpoint_interval: Duration::from_secs(1),
            quarantine_max_entries: 10_000,
            segment_max_bytes: 64 << 20,
            verify_threads: 0,
            dedupe_filter_bytes: crate::store::dedupe::DEFAULT_FILTER_BYTES,
            tile_cache_tiles: 1024,
            verify_table_bytes: crate::event::tables::DEFAULT_TABLE_BYTES,
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
    /// The log on disk is damaged or cannot be made durable.
    #[error(transparent)]
    Recover(#[from] RecoverError),
    /// The checkpoint file is damaged or unreadable.
    #[error(transparent)]
    Checkpoints(#[from] CheckpointError),
    /// The duplicate index cannot be opened.
    #[error(transparent)]
    Dedupe(#[from] DedupeError),
    /// A record could not be read while catching up.
    #[error(transparent)]
    Read(#[from] crate::store::segments::ReadError),
    /// The first checkpoint (over every durable record) could not be made.
    #[error("cannot checkpoint the recovered log: {0}")]
    FirstCheckpoint(#[source] PipelineError),
    /// The verification threads could not be started.
    #[error("cannot start the verification threads: {0}")]
    Threads(#[from] rayon::ThreadPoolBuildError),
    /// The operating system refused a file or thread operation.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
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
    /// The incoming trace context it came with (an HTTP `traceparent`, a
    /// Kafka message's `traceparent` header), linked from its spans.
    pub link: Option<crate::telemetry::trace::TraceContext>,
}

impl Item {
    /// An item to judge.
    pub fn new(raw: Bytes, source: impl Into<String>) -> Item {
        Item {
            raw,
            source: source.into(),
            preset: None,
            link: None,
        }
    }

    /// An item known not to parse (a framing error), quarantined with `why`.
    pub fn unparseable(raw: Bytes, source: impl Into<String>, why: String) -> Item {
        Item {
            preset: Some(Unidentifiable::Unparseable(why)),
            ..Item::new(raw, source)
        }
    }

    /// The item, linked to an incoming trace context.
    pub fn linked(self, link: Option<crate::telemetry::trace::TraceContext>) -> Item {
        Item { link, ..self }
    }
}

/// Items judged together: their signatures share one field inversion.
const JUDGE_CHUNK: usize = 32;

/// Judges a batch in parallel on the current rayon pool, in chunks of
/// [`JUDGE_CHUNK`].
fn judge_all(items: Vec<Item>, ctx: &judge::Context<'_>) -> Vec<Judged> {
    let judgements: Vec<Judgement> = items
        .par_chunks(JUDGE_CHUNK)
        .flat_map_iter(|chunk| {
            let raws: Vec<&[u8]> = chunk
                .iter()
                .filter(|i| i.preset.is_none())
                .map(|i| &i.raw[..])
                .collect();
            let mut judged = judge::judge_all(&raws, ctx).into_iter();
            chunk
                .iter()
                .map(|i| match &i.preset {
                    Some(u) => Judgement::Quarantine(u.clone()),
                    None => judged.next().expect("one judgement per item judged"),
                })
                .collect::<Vec<_>>()
        })
        .collect();
    items
        .into_iter()
        .zip(judgements)
        .map(|(item, judgement)| Judged {
            judgement,
            raw: item.raw,
            source: item.source,
        })
        .collect()
}

/// Where the writer answers a queued batch.
type Answer = oneshot::Receiver<Result<Vec<ItemResult>, PipelineError>>;

/// A running pipeline over one data directory.
pub struct Pipeline {
    tx: mpsc::Sender<Request>,
    checkpointer: std::sync::mpsc::SyncSender<ToCheckpointer>,
    view: LogView,
    keys: Arc<KeyRegistry>,
    rules: TimeRules,
    tables: Arc<TableCache>,
    suspended: Arc<crate::keys::suspended::Suspended>,
    pool: Arc<rayon::ThreadPool>,
    health: Health,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    sealed: watch::Receiver<Option<u64>>,
    keylog: keylog::KeyLog,
    data: Arc<DataDir>,
}

impl Pipeline {
    /// Opens the data directory, makes what it holds durable, recovers the
    /// log (cutting a torn last group a crash left), catches the duplicate
    /// index and the tiles up with the records, signs a checkpoint over
    /// everything durable, and starts the writer and the checkpointer.
    /// Call from inside a tokio runtime.
    pub fn open(cfg: &PipelineConfig) -> Result<Pipeline, OpenError> {
        open::open(cfg)
    }

    /// Judges and receipts (or quarantines) a batch; answers, in input
    /// order, once everything it names is durable.
    pub async fn ingest(&self, items: Vec<Item>) -> Result<Vec<ItemResult>, PipelineError> {
        if let Some(why) = self.health.failure() {
            return Err(PipelineError::Failed(why));
        }
        let arrived = Instant::now();
        let arrived_at = std::time::SystemTime::now();
        let received_at = Timestamp::now();
        // Until the batch is queued to the writer (see `KeyLog::gate`).
        let judging = self.keylog.gate.read().await;
        let keys = self.keys.current();
        let rules = self.rules;
        let tables = self.tables.clone();
        let suspended = self.suspended.current();
        let links = crate::telemetry::trace::enabled()
            .then(|| items.iter().map(|i| i.link).collect::<Vec<_>>());
        let (jtx, jrx) = oneshot::channel();
        // A panic while judging fails the pipeline (a hook on the pool's
        // threads) before `jtx` is dropped.
        self.pool.spawn(move || {
            let ctx = judge::Context {
                keys: &keys,
                rules: &rules,
                tables: &tables,
                received_at,
                suspended: &suspended,
            };
            let _ = jtx.send(judge_all(items, &ctx));
        });
        let judged = jrx.await.map_err(|_| self.gone())?;
        let judged_at = Instant::now();
        crate::telemetry::metrics()
            .ingest_judge_seconds
            .observe((judged_at - arrived).as_secs_f64());
        let traced = links.map(|links| traced::traced(&judged, links));
        let times = traced::Times {
            arrived: arrived_at,
            judged: std::time::SystemTime::now(),
        };
        let queued = self.queue(judged, received_at, arrived).await;
        drop(judging);
        let results = match queued {
            Ok(rx) => self.answer(rx).await,
            Err(e) => Err(e),
        };
        if let (Some(items), Ok(r)) = (traced, &results) {
            traced::record(items, r, &times);
        }
        crate::telemetry::metrics()
            .log_commit_wait_seconds
            .observe(judged_at.elapsed().as_secs_f64());
        results
    }

    /// Queues judged items to the writer; answers once they are durable.
    async fn submit(
        &self,
        items: Vec<Judged>,
        received_at: Timestamp,
        arrived: Instant,
    ) -> Result<Vec<ItemResult>, PipelineError> {
        let rx = self.queue(items, received_at, arrived).await?;
        self.answer(rx).await
    }

    /// The writer's answer to a queued batch.
    async fn answer(&self, rx: Answer) -> Result<Vec<ItemResult>, PipelineError> {
        rx.await.map_err(|_| self.gone())?
    }

    /// Queues judged items to the writer (which sequences batches in the
    /// order they are queued); the receiver gets their results.
    async fn queue(
        &self,
        items: Vec<Judged>,
        received_at: Timestamp,
        arrived: Instant,
    ) -> Result<Answer, PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Batch(Batch {
                items,
                received_at,
                arrived,
                reply,
            }))
            .await
            .map_err(|_| self.gone())?;
        Ok(rx)
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
                event: Box::new(Summary::of(event, true)),
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
        self.checkpointer
            .send(ToCheckpointer::Now(reply))
            .map_err(|_| self.gone())?;
        rx.await.map_err(|_| self.gone())?
    }

    /// Signs `message` with the pipeline's event key (the key of agent
    /// `vigil`'s events, published at `GET /v1/pipeline-keys`).
    pub fn sign_as_pipeline(&self, message: &[u8]) -> [u8; 64] {
        sign(&self.data.pipeline_key.key, message)
    }

    /// The `kid` of the pipeline's event key.
    pub fn pipeline_kid(&self) -> &str {
        &self.data.pipeline_key.kid
    }

    /// Agents suspended through Vigil, whose events are rejected.
    pub fn suspended(&self) -> &crate::keys::suspended::Suspended {
        &self.suspended
    }

    /// The read side of the log.
    pub fn view(&self) -> &LogView {
        &self.view
    }

    /// The accepted receipt of (agent, event id), else its latest
    /// rejection, with its proof.
    pub fn receipt(
        &self,
        agent_id: &str,
        event_id: &str,
    ) -> Result<Option<ReceiptLookup>, ViewError> {
        self.view.receipt(agent_id, event_id)
    }

    /// The latest checkpoint note.
    pub fn checkpoint(&self) -> String {
        self.view.latest().note.clone()
    }

    /// The consistency proof between two checkpointed sizes.
    pub fn consistency(&self, from: u64, to: u64) -> Result<Vec<[u8; 32]>, ViewError> {
        self.view.consistency(from, to)
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
        self.view.size()
    }

    /// The first index of the latest segment sealed (for stages that
    /// follow sealed segments).
    pub fn sealed(&self) -> watch::Receiver<Option<u64>> {
        self.sealed.clone()
    }

    /// Why the log stopped taking events, if it did.
    pub fn failure(&self) -> Option<String> {
        self.health.failure()
    }

    /// The pipeline's health (to wait for a failure).
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The per-key verification tables (for their metrics).
    pub fn tables(&self) -> &Arc<TableCache> {
        &self.tables
    }

    /// Stops the writer after everything sent so far is answered, writes a
    /// last checkpoint and saves the duplicate index, and waits for it.
    /// Later batches get [`PipelineError::ShuttingDown`].
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Request::Shutdown).await;
        let threads: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
            .collect();
        // The writer first (it hands its last records to the checkpointer
        // and tells it to stop); the checkpointer is told again in case the
        // writer died.
        for (n, h) in threads.into_iter().enumerate() {
            if n == 1 {
                let _ = self.checkpointer.send(ToCheckpointer::Shutdown);
            }
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The durable cursor yields every record in order, each only once the
    /// writer has published it as durable (after its fdatasync), and waits
    /// for new ones; it resumes from any index.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cursor_follows_durable_records_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = Arc::new(Pipeline::open(&PipelineConfig::new(dir.path().join("data"))).unwrap());
        let start = p.size();
        let view = p.view().clone();
        let mut cursor = view.tail(start);
        let reader = tokio::spawn({
            let view = view.clone();
            async move {
                let mut seen = Vec::new();
                while seen.len() < 20 {
                    let rec = cursor.next().await.expect("open").expect("readable");
                    assert!(rec.index < view.size(), "yielded before it was durable");
                    let disk = view.read_record(rec.index).expect("on disk");
                    assert_eq!(
                        (&rec.body, &rec.body_jcs, &rec.event, rec.fields()),
                        (&disk.body, &disk.body_jcs, &disk.event, disk.fields()),
                        "the writer's record is the one on disk"
                    );
                    seen.push(rec.index);
                }
                seen
            }
        });
        for i in 0..20 {
            let r = p
                .append_own(
                    "vigil.test",
                    vec![("resource".into(), Value::String(format!("r-{i}")))],
                )
                .await
                .unwrap();
            assert!(r.receipt.is_some());
        }
        let seen = reader.await.unwrap();
        assert_eq!(seen, (start..start + 20).collect::<Vec<_>>());
        assert!(
            view.recent().len() >= 20,
            "the new records are kept in memory"
        );
        let mut again = view.tail(start + 7);
        assert_eq!(again.next().await.unwrap().unwrap().index, start + 7);
        p.shutdown().await;
    }
}
