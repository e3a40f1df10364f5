//! Kafka ingestion as a consumer group (contract section 7), and the Kafka
//! sink the pipeline publishes through (`<topic>.rejected` now; the
//! anomaly and enforcement topics later).
//!
//! The consume loop takes a batch of messages (up to [`BATCH_MAX`] or
//! [`BATCH_WAIT`]) and hands it to the same pipeline HTTP uses, in a task of
//! its own that also publishes the `.rejected` copies with `acks=all` and
//! waits for them. Up to [`IN_FLIGHT`] batches are in the pipeline at once,
//! so the next batch is verified while the previous one waits for its
//! fdatasync. A committer takes the finished batches in the order they were
//! read and only then records their offsets as durable and commits them:
//! an offset is never committed before every earlier message of its
//! partition is durable. Nothing is fetched beyond librdkafka's bounded
//! queue and the batches in flight, so a slow log pauses consumption
//! instead of buffering without bound.
//!
//! On a graceful rebalance the revoke callback waits until the batches in
//! flight are durable, commits what is durable before the partitions are
//! released, and messages of revoked partitions that were fetched but not
//! yet handed to the pipeline are dropped (their new owner reads them from
//! the committed offset): across graceful rebalances every message gets
//! exactly one receipt among the instances.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::config::{ConfigError, KafkaConfig};
use crate::pipeline::{Item, Pipeline, PipelineError, Status};
use crate::shutdown::Stop;
use crate::telemetry::metrics;

mod consume;

use consume::{BatchWork, Consume, Flights};

/// Most messages handed to the pipeline at once.
pub const BATCH_MAX: usize = 1000;
/// Longest wait for more messages once a batch has one.
pub const BATCH_WAIT: Duration = Duration::from_millis(5);
/// Batches in the pipeline at once: the next is read and verified while
/// the previous waits for the log's fdatasync.
pub const IN_FLIGHT: usize = 3;
/// Longest wait of the revoke callback for the batches in flight; past it
/// their offsets stay uncommitted and the partitions' next owner receipts
/// them again.
const REVOKE_WAIT: Duration = Duration::from_secs(60);

/// librdkafka properties Vigil owns: offsets are committed only when durable.
const OWNED: [&str; 4] = [
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
];

/// Why Kafka ingestion cannot start or go on.
#[derive(Debug, thiserror::Error)]
pub enum KafkaIngestError {
    /// `[kafka]` is refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// librdkafka refused an operation.
    #[error("cannot {what}: {source}")]
    Client {
        /// What was being done.
        what: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// The pipeline failed or is stopping.
    #[error("the pipeline cannot take the batch: {0}")]
    Pipeline(#[from] PipelineError),
    /// Offsets can no longer be recorded.
    #[error("{0}; consumption stops, and what is not committed is read again at restart")]
    Committer(String),
}

fn client(what: impl Into<String>) -> impl FnOnce(KafkaError) -> KafkaIngestError {
    let what = what.into();
    move |source| KafkaIngestError::Client { what, source }
}

/// Checks the pass-through properties: the ones Vigil owns are refused.
pub fn check_passthrough(cfg: &KafkaConfig) -> Result<(), ConfigError> {
    let invalid = |why: String| Err(ConfigError::Invalid(why));
    if let Some(k) = cfg.librdkafka.keys().find(|k| OWNED.contains(&k.as_str())) {
        return invalid(format!(
            "[kafka.librdkafka] sets {k:?}, which Vigil owns (offsets are committed only once receipts are durable); \
             remove it (the group is [kafka] group)"
        ));
    }
    if cfg.brokers.trim().is_empty() {
        return invalid("[kafka] brokers is empty; give host:port[,host:port]".into());
    }
    if cfg.topic.trim().is_empty() || cfg.group.trim().is_empty() {
        return invalid("[kafka] topic and group must not be empty".into());
    }
    Ok(())
}

fn base_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in &cfg.librdkafka {
        c.set(k, v);
    }
    c
}

/// Offsets that are durable (receipted or quarantined, `.rejected` copies
/// acknowledged) but not known committed, by (topic, partition): the next
/// offset to read.
#[derive(Default)]
struct Durable(Mutex<HashMap<(String, i32), i64>>);

impl Durable {
    fn tpl(&self, only: Option<&TopicPartitionList>) -> TopicPartitionList {
        let map = self
            .0
            .lock()
            .expect("the durable offsets lock is never poisoned");
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in map.iter() {
            let wanted = only.is_none_or(|l| {
                l.elements()
                    .iter()
                    .any(|e| e.topic() == t && e.partition() == *p)
            });
            if wanted {
                let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
            }
        }
        tpl
    }
}

/// The consumer's callbacks: commit durable offsets before partitions go.
pub struct VigilContext {
    durable: Arc<Durable>,
    flights: Arc<Flights>,
    epoch: AtomicU64,
    assigned: Arc<AtomicBool>,
}

impl ClientContext for VigilContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(facility = fac, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(facility = fac, "librdkafka: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(facility = fac, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(facility = fac, "librdkafka: {message}"),
        }
    }
}

impl ConsumerContext for VigilContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let open = self.flights.wait_from_callback(REVOKE_WAIT);
            if open > 0 {
                tracing::warn!(
                    batches = open,
                    "Partitions are revoked while batches are still being made durable; their offsets stay uncommitted and the next owner receipts them again"
                );
            }
            let commit = self.durable.tpl(Some(tpl));
            if commit.count() > 0 {
                match consumer.commit(&commit, CommitMode::Sync) {
                    Ok(()) => tracing::info!(
                        offsets = %describe(&commit),
                        "Committed durable offsets before the partitions are released"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "Could not commit durable offsets at revocation; their messages will be read again and answered as duplicates where they land in this log")
                    }
                }
            }
            let mut map = self
                .durable
                .0
                .lock()
                .expect("the durable offsets lock is never poisoned");
            for e in tpl.elements() {
                map.remove(&(e.topic().to_string(), e.partition()));
            }
            self.assigned.store(false, Ordering::Relaxed);
        }
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::info!(partitions = %describe(tpl), "Kafka partitions assigned");
            self.assigned.store(tpl.count() > 0, Ordering::Relaxed);
        }
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

/// `topic/partition` (and `@offset` where one is set) of each element, for
/// logs.
fn describe(tpl: &TopicPartitionList) -> String {
    let parts: Vec<String> = tpl
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => format!("{}/{}@{o}", e.topic(), e.partition()),
            _ => format!("{}/{}", e.topic(), e.partition()),
        })
        .collect();
    parts.join(",")
}

/// Publishes to Kafka with `acks=all` (the `.rejected` copies now; anomaly
/// and enforcement objects later).
#[derive(Clone)]
pub struct KafkaSink {
    producer: FutureProducer,
}

impl KafkaSink {
    /// A producer for the cluster in `cfg`.
    pub fn new(cfg: &KafkaConfig) -> Result<KafkaSink, KafkaIngestError> {
        let mut c = base_config(cfg);
        c.set("acks", "all")
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "2");
        let producer = c.create().map_err(client("create the Kafka producer"))?;
        Ok(KafkaSink { producer })
    }

    /// Publishes one message and waits until the brokers acknowledge it.
    pub async fn publish(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<(), KafkaError> {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        let mut record = FutureRecord::to(topic).payload(payload).headers(h);
        if let Some(k) = key {
            record = record.key(k);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }
}

/// Whether a produce error means the message can never be published as it
/// is (too large for the producer or the topic), so that retrying it is
/// pointless.
fn is_too_large(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::MessageBatchTooLarge
        )
    )
}

/// A running consumer's handles.
pub struct KafkaConsumer {
    /// Whether partitions are assigned (for `/readyz`).
    pub assigned: Arc<AtomicBool>,
    /// The stop signal the consumer obeys (for tasks that follow it).
    pub stop: Stop,
}

/// Starts the consume loop and the lag watcher; the returned task ends
/// when `stop` fires, after committing what is durable and leaving the
/// group.
pub fn start(
    cfg: &KafkaConfig,
    pipeline: Arc<Pipeline>,
    stop: Stop,
) -> Result<(KafkaConsumer, tokio::task::JoinHandle<()>), KafkaIngestError> {
    check_passthrough(cfg)?;
    let durable = Arc::new(Durable::default());
    let flights = Arc::new(Flights::default());
    let assigned = Arc::new(AtomicBool::new(false));
    let ctx = VigilContext {
        durable: durable.clone(),
        flights: flights.clone(),
        epoch: AtomicU64::new(0),
        assigned: assigned.clone(),
    };
    let mut c = base_config(cfg);
    c.set("group.id", &cfg.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("queued.max.messages.kbytes", "65536");
    if !cfg.librdkafka.contains_key("auto.offset.reset") {
        c.set("auto.offset.reset", "earliest");
    }
    let consumer: StreamConsumer<VigilContext> = c
        .create_with_context(ctx)
        .map_err(client("create the Kafka consumer"))?;
    consumer
        .subscribe(&[&cfg.topic])
        .map_err(client(format!("subscribe to {}", cfg.topic)))?;
    let sink = KafkaSink::new(cfg)?;
    let rejected_topic = format!("{}.rejected", cfg.topic);
    let consumer = Arc::new(consumer);
    let lag = watch_lag(consumer.clone(), durable.clone(), stop.clone());
    let loop_ = Consume {
        consumer,
        durable,
        flights,
        work: BatchWork {
            pipeline,
            sink,
            rejected_topic: rejected_topic.into(),
            stop: stop.clone(),
        },
        stop: stop.clone(),
    };
    let handle = tokio::spawn(async move {
        let (result, ()) = tokio::join!(loop_.run(), lag);
        if let Err(e) = result {
            tracing::error!(error = %e, "Kafka consumption stopped");
        }
    });
    Ok((KafkaConsumer { assigned, stop }, handle))
}

/// The pipeline item of one message.
fn message_item(m: &OwnedMessage) -> Item {
    let source = format!("kafka:{}/{}@{}", m.topic(), m.partition(), m.offset());
    let item = match m.payload() {
        Some(p) if !p.is_empty() => Item::new(Bytes::copy_from_slice(p), source),
        _ => Item::unparseable(
            Bytes::new(),
            source,
            "the Kafka message has no value; send one event JSON per message".into(),
        ),
    };
    if !crate::telemetry::trace::enabled() {
        return item;
    }
    let link = m.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == "traceparent")
            .and_then(|h| std::str::from_utf8(h.value?).ok())
            .and_then(crate::telemetry::trace::TraceContext::from_traceparent)
    });
    item.linked(link)
}

/// Counts an accepted message whose key is not its event's agent.
fn count_key_mismatch(m: &OwnedMessage, r: &crate::pipeline::ItemResult) {
    if let (Some(key), Status::Accepted | Status::Duplicate) = (m.key(), r.status) {
        if r.agent_id.as_ref().is_some_and(|a| a.as_bytes() != key) {
            metrics()
                .kafka_key_mismatch_total
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Most bytes of the original value kept in a copy that is too large to
/// publish whole (an event is at most 64 KiB, so this keeps any event).
pub const TRUNCATED_COPY_BYTES: usize = 64 * 1024;

/// Publishes the `.rejected` copy of one message, with header
/// `vigil-reason`. A value the producer can never publish whole (too
/// large) is copied truncated to what fits (halving from
/// [`TRUNCATED_COPY_BYTES`]), with headers `vigil-truncated` (the full
/// length) and `vigil-sha256` (of the full value). Other failures are
/// transient (the broker is away) and retried with backoff; the caller
/// stops waiting on the stop signal.
async fn copy_rejected(sink: &KafkaSink, topic: &str, m: &OwnedMessage, reason: String) {
    let value = m.payload().unwrap_or(b"");
    let full_len = value.len().to_string();
    let sha = crate::hexenc::encode(crate::event::sha256(value));
    let mut keep = value.len();
    let mut delay = Duration::from_millis(100);
    loop {
        let truncated = keep < value.len();
        let mut headers = vec![("vigil-reason", reason.as_str())];
        if truncated {
            headers.extend([
                ("vigil-truncated", full_len.as_str()),
                ("vigil-sha256", sha.as_str()),
            ]);
        }
        match sink.publish(topic, m.key(), &value[..keep], &headers).await {
            Ok(()) => {
                if truncated {
                    metrics()
                        .kafka_rejected_truncated_total
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        topic,
                        bytes = value.len(),
                        kept = keep,
                        "A rejected message was too large to copy whole; published its first bytes"
                    );
                }
                return;
            }
            Err(e) if is_too_large(&e) && keep > 0 => {
                keep = (keep / 2).min(TRUNCATED_COPY_BYTES);
            }
            Err(e) => {
                metrics()
                    .kafka_rejected_retries_total
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "Publishing a .rejected copy failed; retrying (offsets wait for it)");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Updates the lag gauges every 2 s, off the consume loop (watermark
/// queries block on the broker).
async fn watch_lag(
    consumer: Arc<StreamConsumer<VigilContext>>,
    durable: Arc<Durable>,
    mut stop: Stop,
) {
    loop {
        tokio::select! {
            _ = stop.stopped() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let (c, d) = (consumer.clone(), durable.clone());
        let _ = tokio::task::spawn_blocking(move || update_lag(&c, &d)).await;
    }
}

fn update_lag(consumer: &StreamConsumer<VigilContext>, durable: &Durable) {
    let positions: Vec<((String, i32), i64)> = durable
        .0
        .lock()
        .expect("the durable offsets lock is never poisoned")
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let mut lags = Vec::new();
    for ((topic, partition), next) in positions {
        if let Ok((_, high)) =
            consumer.fetch_watermarks(&topic, partition, Duration::from_millis(500))
        {
            lags.push((format!("{topic}/{partition}"), (high - next).max(0)));
        }
    }
    metrics().set_kafka_lag(lags);
}
