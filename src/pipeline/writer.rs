//! The log writer: one thread that sequences judged items in order, settles
//! duplicates and conflicts, appends receipts with group commit (one
//! fdatasync for everything that arrived while the last one ran), answers
//! only after that sync, and signs checkpoints over durable records.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::health::Health;
use super::judge::Judgement;
use super::state::{id_key, rejection_key, LogState};
use super::{ItemResult, PipelineError, Status};
use crate::log::note::{CheckpointBody, NoteSigner};
use crate::log::receipt::{Reason, ReceiptBody, ServedReceipt, Verdict, RECEIPT_SPEC};
use crate::store::checkpoints::CheckpointWriter;
use crate::store::quarantine::{Quarantine, QuarantineEntry};
use crate::store::segments::{encode_record, SegmentReader, SegmentWriter};
use crate::telemetry::metrics;
use crate::time::Timestamp;

/// One judged item on its way to the log.
#[derive(Debug)]
pub struct Judged {
    /// The verdict so far.
    pub judgement: Judgement,
    /// The bytes as received.
    pub raw: Bytes,
    /// Where it came from, for quarantine entries.
    pub source: String,
}

/// What the writer is asked to do.
pub enum Request {
    /// Receipt (or quarantine) a batch and answer per item.
    Batch {
        /// The items, in input order.
        items: Vec<Judged>,
        /// When the batch was received.
        received_at: Timestamp,
        /// When the batch arrived (for the latency metric).
        arrived: Instant,
        /// Where the answers go.
        reply: oneshot::Sender<Result<Vec<ItemResult>, PipelineError>>,
    },
    /// Sign a checkpoint over everything durable now.
    Checkpoint {
        /// Where the checkpoint note goes.
        reply: oneshot::Sender<Result<String, PipelineError>>,
    },
    /// Answer everything received so far, write a last checkpoint, stop.
    Shutdown,
}

/// The writer's resources.
pub struct Writer {
    /// Shared with readers.
    pub state: Arc<RwLock<LogState>>,
    /// Appends segments.
    pub segments: SegmentWriter,
    /// Reads earlier records (for duplicates' receipts).
    pub reader: Arc<SegmentReader>,
    /// Appends checkpoints.
    pub checkpoints: CheckpointWriter,
    /// Quarantine store.
    pub quarantine: Quarantine,
    /// Signs checkpoints with the log key.
    pub signer: NoteSigner,
    /// Longest time between checkpoints while the log grows.
    pub interval: Duration,
    /// Set once when the log cannot be written any more.
    pub health: Health,
}

type Batch = (
    Vec<Judged>,
    Timestamp,
    Instant,
    oneshot::Sender<Result<Vec<ItemResult>, PipelineError>>,
);

/// What one group commit is building.
struct Group {
    /// Framed records to append.
    framed: Vec<u8>,
    /// Quarantine entries to append.
    quarantined: Vec<(QuarantineEntry, Bytes)>,
    /// JCS bytes of the records framed so far (index `base + i`).
    new_bodies: Vec<Vec<u8>>,
    /// Index of the group's first new record.
    base: u64,
    /// Where the next framed record lands.
    pos: crate::store::segments::RecordRef,
}

struct Pending {
    results: Vec<ItemResult>,
    reply: oneshot::Sender<Result<Vec<ItemResult>, PipelineError>>,
    arrived: Instant,
}

impl Writer {
    /// Runs until every sender is gone, then writes a last checkpoint.
    pub fn run(mut self, mut rx: mpsc::Receiver<Request>, rt: tokio::runtime::Handle) {
        let mut last_checkpoint = Instant::now();
        loop {
            let wait = self.interval.saturating_sub(last_checkpoint.elapsed());
            let first = rt.block_on(async { tokio::time::timeout(wait, rx.recv()).await });
            let mut requests = Vec::new();
            match first {
                Ok(Some(r)) => requests.push(r),
                Ok(None) => break,
                Err(_) => {}
            }
            let mut items = 0;
            while items < 50_000 {
                match rx.try_recv() {
                    Ok(r) => {
                        if let Request::Batch { items: i, .. } = &r {
                            items += i.len();
                        }
                        requests.push(r);
                    }
                    Err(_) => break,
                }
            }
            let mut checkpoint_replies = Vec::new();
            let mut batches = Vec::new();
            let mut stop = false;
            for r in requests {
                match r {
                    Request::Batch {
                        items,
                        received_at,
                        arrived,
                        reply,
                    } => batches.push((items, received_at, arrived, reply)),
                    Request::Checkpoint { reply } => checkpoint_replies.push(reply),
                    Request::Shutdown => stop = true,
                }
            }
            if let Some(why) = self.health.failure() {
                for (_, _, _, reply) in batches {
                    let _ = reply.send(Err(PipelineError::Failed(why.clone())));
                }
                for reply in checkpoint_replies {
                    let _ = reply.send(Err(PipelineError::Failed(why.clone())));
                }
                if stop {
                    break;
                }
                continue;
            }
            if !batches.is_empty() {
                self.commit(batches);
            }
            if stop {
                break;
            }
            if !checkpoint_replies.is_empty() || last_checkpoint.elapsed() >= self.interval {
                let result = self.checkpoint();
                last_checkpoint = Instant::now();
                for reply in checkpoint_replies {
                    let _ = reply.send(result.clone());
                }
            }
        }
        rx.close();
        if self.health.failure().is_none() {
            if let Err(e) = self.checkpoint() {
                tracing::error!(error = %e, "Could not write the last checkpoint at shutdown");
            }
        }
    }

    fn fail(&self, what: &str, e: std::io::Error) -> String {
        let why = format!(
            "{what}: {e}; the receipt log stops taking events (nothing unanswered was acknowledged). \
             Fix the disk problem and restart vigil: it recovers from what is durable"
        );
        self.health.fail(why)
    }

    fn commit(&mut self, batches: Vec<Batch>) {
        let next = self
            .state
            .read()
            .expect("the log state lock is never poisoned")
            .tree
            .size();
        if let Err(e) = self.segments.roll_if_full(next) {
            let why = self.fail("cannot start a new log segment", e);
            for (_, _, _, reply) in batches {
                let _ = reply.send(Err(PipelineError::Failed(why.clone())));
            }
            return;
        }
        let mut pending = Vec::with_capacity(batches.len());
        let mut group = Group {
            framed: Vec::with_capacity(64 * 1024),
            quarantined: Vec::new(),
            new_bodies: Vec::new(),
            base: next,
            pos: self.segments.position(),
        };
        {
            let mut st = self
                .state
                .write()
                .expect("the log state lock is never poisoned");
            for (items, received_at, arrived, reply) in batches {
                let received = received_at.to_rfc3339_millis();
                let results = items
                    .into_iter()
                    .map(|item| self.sequence(&mut st, &mut group, item, &received))
                    .collect();
                pending.push(Pending {
                    results,
                    reply,
                    arrived,
                });
            }
        }
        let Group {
            framed,
            quarantined,
            ..
        } = group;
        let io_result = (|| -> Result<(), String> {
            if !framed.is_empty() {
                let t = Instant::now();
                self.segments
                    .append_durably(&framed)
                    .map_err(|e| self.fail("cannot write the receipt log", e))?;
                metrics()
                    .log_sync_seconds
                    .observe(t.elapsed().as_secs_f64());
                metrics().log_commits_total.fetch_add(1, Ordering::Relaxed);
            }
            if !quarantined.is_empty() {
                let refs: Vec<(QuarantineEntry, &[u8])> = quarantined
                    .iter()
                    .map(|(e, r)| (e.clone(), r.as_ref()))
                    .collect();
                self.quarantine
                    .append_durably(&refs)
                    .map_err(|e| self.fail("cannot write the quarantine", e))?;
                let m = metrics();
                for (e, _) in &quarantined {
                    let c = if e.reason == "unparseable" {
                        &m.quarantined_unparseable_total
                    } else {
                        &m.quarantined_unknown_agent_total
                    };
                    c.fetch_add(1, Ordering::Relaxed);
                }
                m.quarantine_dropped_total
                    .store(self.quarantine.dropped(), Ordering::Relaxed);
            }
            Ok(())
        })();
        match io_result {
            Ok(()) => {
                let size = {
                    let mut st = self
                        .state
                        .write()
                        .expect("the log state lock is never poisoned");
                    st.durable_size = st.tree.size();
                    st.durable_size
                };
                metrics().log_size_records.store(size, Ordering::Relaxed);
                for p in pending {
                    metrics()
                        .ingest_ack_seconds
                        .observe(p.arrived.elapsed().as_secs_f64());
                    let _ = p.reply.send(Ok(p.results));
                }
            }
            Err(why) => {
                for p in pending {
                    let _ = p.reply.send(Err(PipelineError::Failed(why.clone())));
                }
            }
        }
    }

    /// Settles one judged item against the log in order: quarantine, a
    /// duplicate of an accepted event or of the same rejection, a conflict,
    /// or a new receipt framed into the group.
    fn sequence(
        &self,
        st: &mut LogState,
        group: &mut Group,
        item: Judged,
        received: &str,
    ) -> ItemResult {
        let (event, mut verdict, mut error) = match item.judgement {
            Judgement::Quarantine(u) => {
                group.quarantined.push((
                    QuarantineEntry {
                        received_at: received.to_string(),
                        source: item.source,
                        reason: u.reason().to_string(),
                        error: u.message().to_string(),
                        sha256: hex::encode(crate::event::sha256(&item.raw)),
                        size: item.raw.len() as u64,
                        raw_b64: String::new(),
                    },
                    item.raw,
                ));
                return ItemResult::quarantined(&u);
            }
            Judgement::Receipt {
                event,
                verdict,
                error,
            } => (event, verdict, error),
        };
        if crate::failpoint::hit("writer-panic", event.event_id()) {
            panic!(
                "failpoint writer-panic fired on event {:?}",
                event.event_id()
            );
        }
        let key = id_key(event.agent_id(), event.event_id());
        if let Some(claim) = st.accepted.get(&key).copied() {
            let same_content = claim.content_hash == event.content_hash;
            if same_content
                && (verdict == Verdict::Accepted || claim.event_hash == event.event_hash)
            {
                metrics()
                    .events_duplicate_total
                    .fetch_add(1, Ordering::Relaxed);
                return ItemResult {
                    event_id: Some(event.event_id().to_string()),
                    agent_id: Some(event.agent_id().to_string()),
                    status: Status::Duplicate,
                    reason: None,
                    receipt: self.served_at(st, claim.index, group),
                    error: None,
                };
            }
            if verdict == Verdict::Accepted {
                verdict = Verdict::Rejected(Reason::Conflict);
                error = Some(format!(
                    "event_id {:?} of agent {:?} was already accepted with other content (receipt index {}); \
                     give every distinct action its own event_id",
                    event.event_id(),
                    event.agent_id(),
                    claim.index
                ));
            }
        }
        if verdict != Verdict::Accepted {
            let seen = rejection_key(event.agent_id(), event.event_id(), &event.event_hash);
            if let Some((earlier, index)) = st.rejected_seen.get(&seen).copied() {
                if earlier == verdict {
                    return ItemResult::rejected(
                        &event,
                        verdict,
                        error,
                        self.served_at(st, index, group),
                    );
                }
            }
        }
        let index = st.tree.size();
        let body = ReceiptBody {
            spec: RECEIPT_SPEC.to_string(),
            log: st.origin.clone(),
            index,
            event_id: event.event_id().to_string(),
            agent_id: event.agent_id().to_string(),
            key_id: event.key_id().to_string(),
            correlation_id: event.correlation_id().to_string(),
            event_hash: hex::encode(event.event_hash),
            received_at: received.to_string(),
            verdict: verdict.as_string(),
            prev: hex::encode(st.prev()),
        };
        let jcs = body.to_jcs();
        let len = encode_record(&jcs, &item.raw, &mut group.framed);
        st.add(&body, &jcs, event.content_hash, event.event_hash, group.pos);
        group.pos.offset += len;
        let served = st.served(index, &jcs);
        group.new_bodies.push(jcs);
        match verdict {
            Verdict::Accepted => {
                metrics()
                    .events_accepted_total
                    .fetch_add(1, Ordering::Relaxed);
                ItemResult {
                    event_id: Some(event.event_id().to_string()),
                    agent_id: Some(event.agent_id().to_string()),
                    status: Status::Accepted,
                    reason: None,
                    receipt: Some(served),
                    error: None,
                }
            }
            Verdict::Rejected(r) => {
                metrics().rejected(r);
                ItemResult::rejected(&event, verdict, error, Some(served))
            }
        }
    }

    /// The served receipt of an earlier record: its body's JCS bytes come
    /// from this group's new records, or are read back from its segment.
    fn served_at(&self, st: &LogState, index: u64, group: &Group) -> Option<ServedReceipt> {
        if index >= group.base {
            return group
                .new_bodies
                .get((index - group.base) as usize)
                .map(|jcs| st.served(index, jcs));
        }
        let record = self.reader.read(st.positions[index as usize]).ok()?;
        Some(st.served(index, &record.body))
    }

    /// Signs and stores a checkpoint over the durable records when they grew
    /// since the last one (or when there is none yet); returns the latest.
    pub fn checkpoint(&mut self) -> Result<String, PipelineError> {
        let (size, root, origin, latest, latest_size) = {
            let st = self
                .state
                .read()
                .expect("the log state lock is never poisoned");
            (
                st.durable_size,
                st.tree.root(st.durable_size),
                st.origin.clone(),
                st.checkpoint.clone(),
                st.checkpoint_size,
            )
        };
        if !latest.is_empty() && size == latest_size {
            return Ok(latest);
        }
        let note = self
            .signer
            .sign(&CheckpointBody { origin, size, root }.to_text());
        if let Err(e) = self.checkpoints.append(&note) {
            return Err(PipelineError::Failed(
                self.fail("cannot write a checkpoint", e),
            ));
        }
        self.state
            .write()
            .expect("the log state lock is never poisoned")
            .set_checkpoint(note.clone(), size);
        let m = metrics();
        m.checkpoints_total.fetch_add(1, Ordering::Relaxed);
        m.checkpoint_size_records.store(size, Ordering::Relaxed);
        Ok(note)
    }
}
