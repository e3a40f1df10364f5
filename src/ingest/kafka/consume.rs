//! The consume loop: batches read in order, made durable in tasks of their
//! own (at most [`IN_FLIGHT`] at once), and their offsets recorded in the
//! order they were read (see the parent module's docs).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::{
    client, copy_rejected, count_key_mismatch, describe, message_item, Durable, KafkaIngestError,
    KafkaSink, VigilContext, BATCH_MAX, BATCH_WAIT, IN_FLIGHT,
};
use crate::pipeline::{Item, Pipeline, Status};
use crate::shutdown::Stop;
use crate::telemetry::metrics;

/// The number of batches handed to the pipeline whose offsets the
/// committer has not settled yet (recorded as durable, or given up at stop
/// or on an error).
#[derive(Default)]
pub(super) struct Flights {
    open: Mutex<usize>,
    settled: Condvar,
}

impl Flights {
    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.open
            .lock()
            .expect("the flights lock is never poisoned")
    }

    pub(super) fn take_off(&self) {
        *self.lock() += 1;
    }

    pub(super) fn land(&self) {
        *self.lock() -= 1;
        self.settled.notify_all();
    }

    /// Waits until no batch is in flight, at most `timeout`; returns how
    /// many still are.
    fn wait_landed(&self, timeout: Duration) -> usize {
        let guard = self.lock();
        let (guard, _) = self
            .settled
            .wait_timeout_while(guard, timeout, |open| *open > 0)
            .expect("the flights lock is never poisoned");
        *guard
    }

    /// [`Flights::wait_landed`] from a rebalance callback, which runs
    /// inside the consume loop's poll: on a multi-threaded runtime the
    /// worker is handed over for the wait so that the batches' tasks go on;
    /// on a single-threaded one they could not, so it does not wait.
    pub(super) fn wait_from_callback(&self, timeout: Duration) -> usize {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| self.wait_landed(timeout))
            }
            Ok(_) => *self.lock(),
            Err(_) => self.wait_landed(timeout),
        }
    }
}

/// The consume loop's resources.
pub(super) struct Consume {
    pub(super) consumer: Arc<StreamConsumer<VigilContext>>,
    pub(super) durable: Arc<Durable>,
    pub(super) flights: Arc<Flights>,
    pub(super) work: BatchWork,
    pub(super) stop: Stop,
}

impl Consume {
    /// Consumes batches until the stop signal, waits for the batches in
    /// flight, then commits what is durable and leaves the group.
    pub(super) async fn run(mut self) -> Result<(), KafkaIngestError> {
        let (to_committer, landing) = tokio::sync::mpsc::unbounded_channel();
        let committer = Committer {
            consumer: self.consumer.clone(),
            durable: self.durable.clone(),
            flights: self.flights.clone(),
        };
        let mut committing = tokio::spawn(committer.run(landing));
        let (fed, ended) = self.feed(&to_committer, &mut committing).await;
        drop(to_committer);
        let committed = match ended {
            Some(ended) => ended,
            None => committing.await,
        };
        let commit = self.durable.tpl(None);
        if commit.count() > 0 {
            if let Err(e) = self.consumer.commit(&commit, CommitMode::Sync) {
                tracing::warn!(error = %e, "Could not commit the last durable offsets at shutdown");
            }
        }
        self.consumer.unsubscribe();
        fed?;
        committed.unwrap_or_else(|e| {
            Err(KafkaIngestError::Committer(format!(
                "the offset committer ended abnormally: {e}"
            )))
        })
    }

    /// Reads batches and hands each to a task of its own (at most
    /// [`IN_FLIGHT`] at once) until the stop signal, an error, or the end
    /// of the committer (whose result is then returned).
    async fn feed(
        &mut self,
        to_committer: &tokio::sync::mpsc::UnboundedSender<Flight>,
        committing: &mut tokio::task::JoinHandle<Result<(), KafkaIngestError>>,
    ) -> (Result<(), KafkaIngestError>, Option<Committed>) {
        let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        loop {
            let permit = tokio::select! {
                _ = self.stop.stopped() => return (Ok(()), None),
                ended = &mut *committing => return (Ok(()), Some(ended)),
                p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
            let epoch = self.consumer.context().epoch.load(Ordering::SeqCst);
            let batch = match self.next_batch().await {
                Ok(Some(batch)) => batch,
                Ok(None) => return (Ok(()), None),
                Err(e) => return (Err(e), None),
            };
            let spans = spans(&batch);
            let work = self.work.clone();
            self.flights.take_off();
            let task = tokio::spawn(async move {
                let durable = work.ingest(&batch).await;
                drop(permit);
                durable
            });
            let flight = Flight { task, spans, epoch };
            if to_committer.send(flight).is_err() {
                self.flights.land();
                return (Ok(()), None);
            }
        }
    }

    /// The next batch (up to [`BATCH_MAX`] messages or [`BATCH_WAIT`] after
    /// the first) of partitions this instance still owns; `None` once the
    /// stop signal fires.
    async fn next_batch(&mut self) -> Result<Option<Vec<OwnedMessage>>, KafkaIngestError> {
        loop {
            let first = tokio::select! {
                _ = self.stop.stopped() => return Ok(None),
                m = self.consumer.recv() => m,
            };
            let epoch = self.consumer.context().epoch.load(Ordering::SeqCst);
            let mut batch: Vec<OwnedMessage> = Vec::new();
            match first {
                Ok(m) => batch.push(m.detach()),
                Err(e) => {
                    tracing::warn!(error = %e, "Kafka consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            while batch.len() < BATCH_MAX {
                match tokio::time::timeout(BATCH_WAIT, self.consumer.recv()).await {
                    Ok(Ok(m)) => batch.push(m.detach()),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "Kafka consumer error");
                        break;
                    }
                    Err(_) => break,
                }
            }
            if self.consumer.context().epoch.load(Ordering::SeqCst) != epoch {
                self.drop_revoked(&mut batch)?;
            }
            if !batch.is_empty() {
                return Ok(Some(batch));
            }
        }
    }

    /// A rebalance happened while the batch was being read: keeps only
    /// messages of partitions this instance still owns.
    fn drop_revoked(&self, batch: &mut Vec<OwnedMessage>) -> Result<(), KafkaIngestError> {
        let owned = owned_partitions(&self.consumer)?;
        let before = batch.len();
        batch.retain(|m| owned.contains(&(m.topic(), m.partition())));
        if batch.len() != before {
            tracing::info!(
                dropped = before - batch.len(),
                "Dropped fetched messages of revoked partitions; their new owner reads them"
            );
        }
        Ok(())
    }
}

/// The partitions assigned to this instance now.
fn owned_partitions(consumer: &StreamConsumer<VigilContext>) -> Result<Owned, KafkaIngestError> {
    let tpl = consumer
        .assignment()
        .map_err(client("read the assignment"))?;
    Ok(Owned(
        tpl.elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect(),
    ))
}

/// Assigned (topic, partition) pairs.
struct Owned(Vec<(String, i32)>);

impl Owned {
    fn contains(&self, (topic, partition): &(&str, i32)) -> bool {
        self.0.iter().any(|(t, p)| t == topic && p == partition)
    }
}

/// The messages of one partition in a batch: what the committer records
/// once the batch is durable.
struct Span {
    topic: String,
    partition: i32,
    first: i64,
    last: i64,
    count: usize,
}

/// The spans of a batch, one per partition.
fn spans(batch: &[OwnedMessage]) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    for m in batch {
        let o = m.offset();
        match out
            .iter_mut()
            .find(|s| s.partition == m.partition() && s.topic == m.topic())
        {
            Some(s) => {
                s.first = s.first.min(o);
                s.last = s.last.max(o);
                s.count += 1;
            }
            None => out.push(Span {
                topic: m.topic().to_string(),
                partition: m.partition(),
                first: o,
                last: o,
                count: 1,
            }),
        }
    }
    out
}

/// `partition:first-last(count)` of each span, for logs.
fn describe_spans(spans: &[Span]) -> String {
    let parts: Vec<String> = spans
        .iter()
        .map(|s| format!("{}:{}-{}({})", s.partition, s.first, s.last, s.count))
        .collect();
    parts.join(",")
}

/// A batch handed to the pipeline, as the committer sees it.
struct Flight {
    /// The batch's task: whether all of it is durable and its copies
    /// acknowledged.
    task: tokio::task::JoinHandle<Result<bool, KafkaIngestError>>,
    spans: Vec<Span>,
    /// The rebalance epoch when the batch was read.
    epoch: u64,
}

/// How the committer ended.
type Committed = Result<Result<(), KafkaIngestError>, tokio::task::JoinError>;

/// Takes the batches in the order they were read and records their offsets
/// as durable once each is.
struct Committer {
    consumer: Arc<StreamConsumer<VigilContext>>,
    durable: Arc<Durable>,
    flights: Arc<Flights>,
}

impl Committer {
    /// Settles every flight it is sent. After a batch that is not durable
    /// (stopped while its copies were retried) or a pipeline error, later
    /// batches are waited for but not recorded: an offset must not pass a
    /// message that is not durable.
    async fn run(
        self,
        mut landing: tokio::sync::mpsc::UnboundedReceiver<Flight>,
    ) -> Result<(), KafkaIngestError> {
        let mut failed = None;
        let mut recording = true;
        while let Some(Flight { task, spans, epoch }) = landing.recv().await {
            match task.await {
                Ok(Ok(true)) if recording => self.record(&spans, epoch),
                Ok(Ok(_)) => recording = false,
                Ok(Err(e)) => {
                    recording = false;
                    failed.get_or_insert(e);
                }
                Err(e) => {
                    recording = false;
                    failed.get_or_insert(KafkaIngestError::Committer(format!(
                        "a batch's task ended abnormally: {e}"
                    )));
                }
            }
            self.flights.land();
        }
        failed.map_or(Ok(()), Err)
    }

    /// Records a durable batch's offsets and commits every durable offset
    /// (asynchronously; a failed commit is retried with the next). After a
    /// rebalance, offsets of partitions no longer assigned are left to
    /// their new owner.
    fn record(&self, spans: &[Span], epoch: u64) {
        let owned = if self.consumer.context().epoch.load(Ordering::SeqCst) != epoch {
            match owned_partitions(&self.consumer) {
                Ok(owned) => Some(owned),
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot read the assignment; the batch's offsets are committed with the next batch");
                    return;
                }
            }
        } else {
            None
        };
        let mut commit = TopicPartitionList::new();
        {
            let mut map = self
                .durable
                .0
                .lock()
                .expect("the durable offsets lock is never poisoned");
            for s in spans {
                if owned
                    .as_ref()
                    .is_some_and(|o| !o.contains(&(s.topic.as_str(), s.partition)))
                {
                    continue;
                }
                let next = s.last + 1;
                let e = map.entry((s.topic.clone(), s.partition)).or_insert(next);
                *e = (*e).max(next);
            }
            for ((t, p), o) in map.iter() {
                let _ = commit.add_partition_offset(t, *p, Offset::Offset(*o));
            }
        }
        tracing::debug!(
            batch = %describe_spans(spans),
            offsets = %describe(&commit),
            "Committing durable offsets"
        );
        if let Err(e) = self.consumer.commit(&commit, CommitMode::Async) {
            tracing::warn!(error = %e, "Offset commit failed; it is retried with the next batch");
        }
        metrics()
            .kafka_commits_total
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// What a batch's task needs: the pipeline and where rejected copies go.
#[derive(Clone)]
pub(super) struct BatchWork {
    pub(super) pipeline: Arc<Pipeline>,
    pub(super) sink: KafkaSink,
    pub(super) rejected_topic: Arc<str>,
    pub(super) stop: Stop,
}

impl BatchWork {
    /// Receipts a batch and publishes the `.rejected` copies; returns
    /// whether all of it is durable and acknowledged (false when the stop
    /// signal came first: the batch is then left uncommitted).
    async fn ingest(mut self, batch: &[OwnedMessage]) -> Result<bool, KafkaIngestError> {
        let items: Vec<Item> = batch.iter().map(message_item).collect();
        metrics()
            .kafka_messages_total
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        let results = self.pipeline.ingest(items).await?;
        let mut copies = Vec::new();
        for (m, r) in batch.iter().zip(&results) {
            count_key_mismatch(m, r);
            if r.status == Status::Rejected {
                let reason = r.reason.clone().unwrap_or_else(|| "unparseable".into());
                copies.push(copy_rejected(&self.sink, &self.rejected_topic, m, reason));
            }
        }
        let n = copies.len() as u64;
        // Biased: a batch whose copies are all acknowledged (or that has
        // none) is committed even when the stop signal has fired meanwhile;
        // an unbiased choice left such a batch uncommitted half the time,
        // and the partition's next owner receipted it again.
        if !copies.is_empty() {
            tokio::select! {
                biased;
                _ = futures_util::future::join_all(copies) => {}
                _ = self.stop.stopped() => {
                    tracing::info!("Stopping while .rejected copies are retried; their offsets stay uncommitted");
                    return Ok(false);
                }
            }
        }
        metrics()
            .kafka_rejected_published_total
            .fetch_add(n, Ordering::Relaxed);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn message(partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            Some(b"{}".to_vec()),
            None,
            "agent-events".into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    #[test]
    fn spans_give_each_partition_its_range_and_count() {
        let batch: Vec<OwnedMessage> = [(1, 7), (0, 3), (1, 5), (1, 6), (0, 4)]
            .into_iter()
            .map(|(p, o)| message(p, o))
            .collect();
        let spans = spans(&batch);
        assert_eq!(describe_spans(&spans), "1:5-7(3),0:3-4(2)");
        assert!(spans.iter().all(|s| s.topic == "agent-events"));
    }

    #[test]
    fn flights_are_waited_for_until_they_land_or_the_timeout() {
        let flights = Arc::new(Flights::default());
        flights.take_off();
        flights.take_off();
        assert_eq!(flights.wait_landed(Duration::from_millis(20)), 2);
        let f = flights.clone();
        let lander = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            f.land();
            f.land();
        });
        assert_eq!(flights.wait_landed(Duration::from_secs(30)), 0);
        lander.join().expect("the lander does not panic");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_callback_on_a_worker_waits_while_tasks_land_the_flights() {
        let flights = Arc::new(Flights::default());
        flights.take_off();
        let f = flights.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            f.land();
        });
        assert_eq!(flights.wait_from_callback(Duration::from_secs(30)), 0);
    }

    #[tokio::test]
    async fn a_callback_on_a_single_threaded_runtime_does_not_wait() {
        let flights = Flights::default();
        flights.take_off();
        assert_eq!(flights.wait_from_callback(Duration::from_secs(30)), 1);
    }
}
