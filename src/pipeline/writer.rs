//! The log writer: one thread that sequences judged items in order,
//! settles duplicates and conflicts, appends receipts with group commit
//! (one fdatasync for everything that arrived while the last one ran),
//! updates the duplicate index, and answers only after that sync. Durable
//! records then go to the checkpointer, which tiles and checkpoints them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use super::checkpointer::{DurableGroup, ToCheckpointer};
use super::health::Health;
use super::judge::Judgement;
use super::{Committed, ItemResult, PipelineError};
use crate::event::{Event, Hash, Summary};
use crate::log::merkle::leaf_hash;
use crate::log::receipt::{chain_hash, Reason, ReceiptBody, ServedReceipt, Verdict, RECEIPT_SPEC};
use crate::log::record;
use crate::store::dedupe::{keys_of, Dedupe, Key};
use crate::store::quarantine::{Quarantine, QuarantineEntry};
use crate::store::segments::SegmentWriter;
use crate::store::view::{served, LogRecord, LogView};
use crate::telemetry::{metrics, Outcome, Source};
use crate::time::Timestamp;

/// How long the writer waits idle before marking its last group synced.
const IDLE_MARK_AFTER: Duration = Duration::from_millis(50);
/// Most items sequenced into one group.
const GROUP_MAX_ITEMS: usize = 50_000;

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

/// Where the answers to a batch go.
pub type Reply = oneshot::Sender<Result<Vec<ItemResult>, PipelineError>>;

/// A batch of judged items for the writer.
pub struct Batch {
    /// The items, in input order.
    pub items: Vec<Judged>,
    /// When the batch was received.
    pub received_at: Timestamp,
    /// When the batch arrived (for the latency metric).
    pub arrived: Instant,
    /// Where the answers go.
    pub reply: Reply,
}

/// What the writer is asked to do.
pub enum Request {
    /// Receipt (or quarantine) a batch and answer per item.
    Batch(Batch),
    /// Answer everything received so far, then stop.
    Shutdown,
}

/// The writer stopped taking events for good: the pipeline's recorded
/// failure (what failed and how to recover), which every unanswered batch
/// gets.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
struct Halted(String);

/// Answers every batch with the pipeline's failure.
fn refuse_all(batches: Vec<Batch>, why: &str) {
    for b in batches {
        let _ = b.reply.send(Err(PipelineError::Failed(why.to_string())));
    }
}

/// The writer's resources.
pub struct Writer {
    /// The log's origin (every receipt's `log`).
    pub origin: String,
    /// Appends segments.
    pub segments: SegmentWriter,
    /// The duplicate index.
    pub dedupe: Arc<Dedupe>,
    /// Reads earlier records (duplicates' receipts).
    pub view: LogView,
    /// Quarantine store.
    pub quarantine: Quarantine,
    /// Set once when the log cannot be written any more.
    pub health: Health,
    /// The next record's index.
    pub next: u64,
    /// The chain hash of the last record.
    pub prev: Hash,
    /// Publishes the durable size.
    pub durable: watch::Sender<u64>,
    /// Durable groups go here to be tiled and checkpointed.
    pub checkpointer: std::sync::mpsc::SyncSender<ToCheckpointer>,
    /// Publishes the first index of each segment sealed.
    pub sealed: watch::Sender<Option<u64>>,
    /// The bytes of the last group, kept to be reused: a fresh buffer of a
    /// few hundred KB per group costs page faults on every commit.
    pub buffer: Vec<u8>,
}

/// An accepted (agent, event id) met while sequencing.
#[derive(Debug, Clone, Copy)]
struct Claim {
    index: u64,
    content_hash: Hash,
    event_hash: Hash,
}

/// What one group commit is building.
struct Group {
    /// The bytes to append (a sync mark, then framed records).
    framed: Vec<u8>,
    /// Where `framed` lands in the segment.
    base_offset: u64,
    /// Offsets of the new records.
    offsets: Vec<u64>,
    /// Index of the group's first new record.
    base: u64,
    /// JCS bytes and leaf hash of each new record.
    bodies: Vec<Vec<u8>>,
    leaves: Vec<Hash>,
    /// Index keys of each new record.
    keys: Vec<Vec<Key>>,
    /// Claims and rejections made in this group (not in the index yet).
    claims: HashMap<Key, Claim>,
    seen: HashMap<Key, u64>,
    /// Quarantine entries to append.
    quarantined: Vec<(QuarantineEntry, Bytes)>,
    /// The new records as readers get them once they are durable.
    records: Vec<Arc<LogRecord>>,
}

impl Group {
    /// Keeps an item with no receipt in the group's quarantine entries.
    fn quarantine(
        &mut self,
        u: &crate::event::Unidentifiable,
        source: String,
        raw: Bytes,
        received: &str,
    ) {
        let entry = QuarantineEntry {
            received_at: received.to_string(),
            source,
            reason: u.reason().to_string(),
            error: u.message().to_string(),
            sha256: crate::hexenc::encode(crate::event::sha256(&raw)),
            size: raw.len() as u64,
            raw_b64: String::new(),
        };
        self.quarantined.push((entry, raw));
    }
}

struct Pending {
    results: Vec<ItemResult>,
    reply: Reply,
    arrived: Instant,
}

impl Writer {
    /// Runs until a shutdown request or every sender is gone.
    pub fn run(mut self, mut rx: mpsc::Receiver<Request>, rt: tokio::runtime::Handle) {
        loop {
            let first =
                rt.block_on(async { tokio::time::timeout(IDLE_MARK_AFTER, rx.recv()).await });
            let mut requests = match first {
                Ok(Some(r)) => vec![r],
                Ok(None) => break,
                Err(_) => {
                    self.mark_idle();
                    continue;
                }
            };
            let mut items = 0;
            while items < GROUP_MAX_ITEMS {
                match rx.try_recv() {
                    Ok(r) => {
                        if let Request::Batch(b) = &r {
                            items += b.items.len();
                        }
                        requests.push(r);
                    }
                    Err(_) => break,
                }
            }
            let stop = requests.iter().any(|r| matches!(r, Request::Shutdown));
            let batches: Vec<Batch> = requests
                .into_iter()
                .filter_map(|r| match r {
                    Request::Batch(b) => Some(b),
                    Request::Shutdown => None,
                })
                .collect();
            if let Some(why) = self.health.failure() {
                for b in batches {
                    let _ = b.reply.send(Err(PipelineError::Failed(why.clone())));
                }
            } else if !batches.is_empty() {
                self.commit(batches);
            }
            if stop {
                break;
            }
        }
        rx.close();
        self.mark_idle();
        if let Err(e) = self.dedupe.close() {
            tracing::warn!(error = %e, "Could not save the duplicate index at shutdown; it is caught up from the log at the next start");
        }
        let _ = self.checkpointer.send(ToCheckpointer::Shutdown);
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) -> Halted {
        Halted(self.health.fail(format!(
            "{what}: {e}; the receipt log stops taking events (nothing unanswered was acknowledged). \
             Fix the disk problem and restart vigil: it recovers from what is durable"
        )))
    }

    fn mark_idle(&mut self) {
        if self.health.failure().is_none() {
            if let Err(e) = self.segments.mark_idle(self.next) {
                self.fail("cannot write a sync mark to the receipt log", e);
            }
        }
    }

    fn commit(&mut self, batches: Vec<Batch>) {
        match self.segments.roll_if_full(self.next) {
            Ok(Some(sealed)) => {
                let _ = self.sealed.send(Some(sealed));
            }
            Ok(None) => {}
            Err(e) => {
                let why = self.fail("cannot start a new log segment", e);
                return refuse_all(batches, &why.0);
            }
        }
        let sequenced = std::time::SystemTime::now();
        let mut group = Group {
            framed: std::mem::take(&mut self.buffer),
            base_offset: 0,
            offsets: Vec::new(),
            base: self.next,
            bodies: Vec::new(),
            leaves: Vec::new(),
            keys: Vec::new(),
            claims: HashMap::new(),
            seen: HashMap::new(),
            quarantined: Vec::new(),
            records: Vec::new(),
        };
        group.base_offset = self.segments.begin_group(self.next, &mut group.framed);
        let (next, prev) = (self.next, self.prev);
        let mut pending = Vec::with_capacity(batches.len());
        let mut ordered = Ok(());
        for b in batches {
            let received = b.received_at.to_rfc3339_millis();
            let mut results = Vec::with_capacity(b.items.len());
            for item in b.items {
                if ordered.is_err() {
                    break;
                }
                match self.sequence(&mut group, item, &received) {
                    Ok(r) => results.push(r),
                    Err(why) => ordered = Err(why),
                }
            }
            pending.push(Pending {
                results,
                reply: b.reply,
                arrived: b.arrived,
            });
        }
        let writing = std::time::SystemTime::now();
        let outcome = match ordered {
            Ok(()) => self.make_durable(&mut group),
            Err(why) => {
                // Nothing of the group was written: the log continues
                // (after a restart) from where it was.
                (self.next, self.prev) = (next, prev);
                Err(why)
            }
        };
        let committed = crate::telemetry::trace::enabled().then(|| Committed {
            sequenced,
            writing,
            durable: std::time::SystemTime::now(),
        });
        self.answer(pending, outcome, committed);
        self.buffer = std::mem::take(&mut group.framed);
    }

    /// Appends the group and its quarantine entries durably, indexes them,
    /// publishes the new size and hands the records to the checkpointer.
    fn make_durable(&mut self, group: &mut Group) -> Result<(), Halted> {
        if !group.offsets.is_empty() {
            let t = Instant::now();
            if let Err(e) = self.segments.append_durably(&group.framed, &group.offsets) {
                // The records were sequenced but never made durable.
                return Err(self.fail("cannot write the receipt log", e));
            }
            metrics()
                .log_sync_seconds
                .observe(t.elapsed().as_secs_f64());
            metrics().log_commits_total.fetch_add(1, Ordering::Relaxed);
        }
        if !group.quarantined.is_empty() {
            self.quarantine_durably(&group.quarantined)?;
        }
        for (i, keys) in group.keys.iter().enumerate() {
            if let Err(e) = self.dedupe.apply(group.base + i as u64, keys) {
                return Err(self.fail("cannot write the duplicate index", e));
            }
        }
        self.view.recent().push(std::mem::take(&mut group.records));
        let _ = self.durable.send(self.next);
        metrics()
            .log_size_records
            .store(self.next, Ordering::Relaxed);
        if !group.leaves.is_empty() {
            let durable = DurableGroup {
                first: group.base,
                leaves: std::mem::take(&mut group.leaves),
                bodies: std::mem::take(&mut group.bodies),
            };
            if self
                .checkpointer
                .send(ToCheckpointer::Durable(durable))
                .is_err()
            {
                return Err(self.fail("the checkpointer stopped", "its channel is closed"));
            }
        }
        Ok(())
    }

    fn quarantine_durably(&mut self, entries: &[(QuarantineEntry, Bytes)]) -> Result<(), Halted> {
        let refs: Vec<(QuarantineEntry, &[u8])> = entries
            .iter()
            .map(|(e, r)| (e.clone(), r.as_ref()))
            .collect();
        if let Err(e) = self.quarantine.append_durably(&refs) {
            return Err(self.fail("cannot write the quarantine", e));
        }
        let m = metrics();
        for (e, _) in entries {
            let c = if e.reason == "unparseable" {
                &m.quarantined_unparseable_total
            } else {
                &m.quarantined_unknown_agent_total
            };
            c.fetch_add(1, Ordering::Relaxed);
        }
        m.quarantine_dropped_total
            .store(self.quarantine.dropped(), Ordering::Relaxed);
        Ok(())
    }

    fn answer(
        &self,
        pending: Vec<Pending>,
        outcome: Result<(), Halted>,
        committed: Option<Committed>,
    ) {
        for mut p in pending {
            let answer = match &outcome {
                Ok(()) => {
                    metrics()
                        .ingest_ack_seconds
                        .observe(p.arrived.elapsed().as_secs_f64());
                    if committed.is_some() {
                        p.results.iter_mut().for_each(|r| r.committed = committed);
                    }
                    Ok(p.results)
                }
                Err(why) => Err(PipelineError::Failed(why.0.clone())),
            };
            let _ = p.reply.send(answer);
        }
    }

    /// Settles one judged item against the log in order: quarantine, a
    /// duplicate of an accepted event or of the same rejection, a conflict,
    /// or a new receipt framed into the group.
    fn sequence(
        &mut self,
        group: &mut Group,
        item: Judged,
        received: &str,
    ) -> Result<ItemResult, Halted> {
        let source = Source::of(&item.source);
        let (mut event, mut verdict, mut error) = match item.judgement {
            Judgement::Quarantine(u) => {
                metrics().by_source.inc(source, Outcome::Quarantined);
                group.quarantine(&u, item.source, item.raw, received);
                return Ok(ItemResult::quarantined(&u));
            }
            Judgement::Receipt {
                event,
                verdict,
                error,
            } => (event, verdict, error),
        };
        if crate::failpoint::hit("writer-panic", &event.event_id) {
            panic!("failpoint writer-panic fired on event {:?}", event.event_id);
        }
        let (agent, id) = (event.agent_id.as_str(), event.event_id.as_str());
        let claim_key = Key::accepted(agent, id);
        if let Some(claim) = self.claim(group, &claim_key, agent, id)? {
            let same_content = claim.content_hash == event.content_hash;
            if same_content
                && (verdict == Verdict::Accepted || claim.event_hash == event.event_hash)
            {
                metrics()
                    .events_duplicate_total
                    .fetch_add(1, Ordering::Relaxed);
                metrics().by_source.inc(source, Outcome::Duplicate);
                return Ok(ItemResult::duplicate(
                    &event,
                    self.served_at(group, claim.index),
                ));
            }
            if verdict == Verdict::Accepted {
                verdict = Verdict::Rejected(Reason::Conflict);
                error = Some(format!(
                    "event_id {id:?} of agent {agent:?} was already accepted with other content (receipt index {}); \
                     give every distinct action its own event_id",
                    claim.index
                ));
            }
        }
        if verdict != Verdict::Accepted {
            let seen = Key::rejection(agent, id, &event.event_hash, verdict);
            if let Some(index) = self.seen(group, &seen, &event, verdict)? {
                metrics().by_source.inc(source, Outcome::Duplicate);
                return Ok(ItemResult::rejected(
                    &event,
                    verdict,
                    error,
                    self.served_at(group, index),
                ));
            }
        }
        let served = self.append(group, &mut event, verdict, &item.raw, received, claim_key);
        Ok(match verdict {
            Verdict::Accepted => {
                metrics()
                    .events_accepted_total
                    .fetch_add(1, Ordering::Relaxed);
                metrics().by_source.inc(source, Outcome::Accepted);
                ItemResult::accepted(&event, served)
            }
            Verdict::Rejected(r) => {
                metrics().rejected(r);
                metrics().by_source.inc(source, Outcome::Rejected);
                ItemResult::rejected(&event, verdict, error, Some(served))
            }
        })
    }

    /// Frames a new receipt into the group; returns it as served.
    fn append(
        &mut self,
        group: &mut Group,
        event: &mut Summary,
        verdict: Verdict,
        raw: &[u8],
        received: &str,
        claim_key: Key,
    ) -> ServedReceipt {
        let index = self.next;
        let (agent, id) = (event.agent_id.as_str(), event.event_id.as_str());
        let body = ReceiptBody {
            spec: RECEIPT_SPEC.to_string(),
            log: self.origin.clone(),
            index,
            event_id: id.to_string(),
            agent_id: agent.to_string(),
            key_id: event.key_id.clone(),
            correlation_id: event.correlation_id.clone(),
            event_hash: crate::hexenc::encode(event.event_hash),
            received_at: received.to_string(),
            verdict: verdict.as_string(),
            prev: crate::hexenc::encode(self.prev),
        };
        let jcs = body.to_jcs();
        group
            .offsets
            .push(group.base_offset + group.framed.len() as u64);
        record::encode_receipt(&jcs, raw, &mut group.framed);
        let leaf = leaf_hash(&jcs);
        let chain = chain_hash(&self.prev, &leaf);
        let keys = match verdict {
            Verdict::Accepted => vec![claim_key],
            Verdict::Rejected(_) => keys_of(&body),
        };
        match verdict {
            Verdict::Accepted => {
                let claim = Claim {
                    index,
                    content_hash: event.content_hash,
                    event_hash: event.event_hash,
                };
                group.claims.insert(claim_key, claim);
            }
            Verdict::Rejected(_) => {
                group
                    .seen
                    .insert(Key::rejection(agent, id, &event.event_hash, verdict), index);
            }
        }
        let served = ServedReceipt::from_jcs(&jcs, &leaf, &chain);
        let mut record = LogRecord::new(index, body, jcs.clone(), raw.to_vec());
        if verdict == Verdict::Accepted {
            record = record.with_fields(event.fields.take());
        }
        group.records.push(Arc::new(record));
        group.keys.push(keys);
        group.bodies.push(jcs);
        group.leaves.push(leaf);
        self.prev = chain;
        self.next += 1;
        served
    }

    /// The accepted claim on (agent, event id): made in this group, or in
    /// the log (the index hit confirmed against its record).
    fn claim(
        &self,
        group: &Group,
        key: &Key,
        agent: &str,
        id: &str,
    ) -> Result<Option<Claim>, Halted> {
        if let Some(c) = group.claims.get(key) {
            return Ok(Some(*c));
        }
        let found = self
            .view
            .lookup(key, agent, id, |b| b.verdict() == Some(Verdict::Accepted))
            .map_err(|e| self.index_failed(e))?;
        Ok(found.and_then(|rec| {
            let event = Event::parse(&rec.event).ok()?;
            Some(Claim {
                index: rec.index,
                content_hash: event.content_hash,
                event_hash: event.event_hash,
            })
        }))
    }

    /// The index of an earlier rejection of this event with this verdict.
    fn seen(
        &self,
        group: &Group,
        key: &Key,
        event: &Summary,
        verdict: Verdict,
    ) -> Result<Option<u64>, Halted> {
        if let Some(&i) = group.seen.get(key) {
            return Ok(Some(i));
        }
        let hash = crate::hexenc::encode(event.event_hash);
        let found = self
            .view
            .lookup(key, &event.agent_id, &event.event_id, |b| {
                b.event_hash == hash && b.verdict() == Some(verdict)
            })
            .map_err(|e| self.index_failed(e))?;
        Ok(found.map(|r| r.index))
    }

    /// The duplicate index cannot be read or names the wrong record: the
    /// log cannot tell duplicates any more. Fails the pipeline (never
    /// guessing), and moves a damaged index aside so that the next start
    /// rebuilds it from the log.
    fn index_failed(&self, e: crate::store::view::ViewError) -> Halted {
        if matches!(e, crate::store::view::ViewError::IndexDamaged { .. }) {
            let dir = self.view.layout().index_dir();
            let aside = dir.with_file_name(format!("index.damaged-{}", Timestamp::now().secs()));
            let moved = std::fs::rename(&dir, &aside).is_ok();
            return self.fail(
                "the duplicate index disagrees with the log",
                format!(
                    "{e}; {}",
                    if moved {
                        format!(
                            "it was moved to {} and is rebuilt from the log at the next start",
                            aside.display()
                        )
                    } else {
                        "delete DIR/index: it is rebuilt from the log at the next start".to_string()
                    }
                ),
            );
        }
        self.fail("cannot read the duplicate index or the record it names", e)
    }

    /// The served receipt of an earlier record: from this group's new
    /// records, or read back from the log.
    fn served_at(&self, group: &Group, index: u64) -> Option<ServedReceipt> {
        if index >= group.base {
            let i = (index - group.base) as usize;
            let jcs = group.bodies.get(i)?;
            let body: ReceiptBody = serde_json::from_slice(jcs).ok()?;
            return Some(served(&body, jcs));
        }
        self.view.record(index).ok().map(|r| r.served())
    }
}
