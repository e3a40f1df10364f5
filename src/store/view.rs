//! The read side of the log: receipts by (agent, event id), records by
//! index, proofs from tiles, the latest checkpoint, and a durable cursor.
//! It reads only what is durable: the writer publishes the durable size
//! after each fdatasync, the checkpointer the latest checkpoint once its
//! tiles and note are durable.
//!
//! Nothing here grows with the log: lookups go through the duplicate index
//! (confirmed against the record they name), records through the segment
//! offsets, proofs through a bounded cache of tiles.

use std::sync::{Arc, OnceLock};

use tokio::sync::watch;

use super::checkpoints::{is_checkpointed, Latest};
use super::dedupe::{Dedupe, Key};
use super::layout::Layout;
use super::recent::{Recent, DEFAULT_RECENT_BYTES};
use super::segments::{ReadError, Record, SegmentSet};
use super::tiles::{tile_path, TileReader};
use crate::event::{Fields, Hash};
use crate::log::merkle::{consistency_proof, inclusion_proof};
use crate::log::proof::build_proof;
use crate::log::receipt::{chain_hash, leaf_hash, ReceiptBody, ServedReceipt, Verdict};
use crate::log::tiles::TileId;

/// A receipt looked up by id, with its proof when a checkpoint covers it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReceiptLookup {
    /// The served receipt.
    pub receipt: ServedReceipt,
    /// The tlog-proof text to the latest checkpoint, or null.
    pub proof: Option<String>,
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// Reading a record failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Reading tiles or the index failed.
    #[error("cannot read {what}: {source}")]
    Io {
        /// What was being read.
        what: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A request the log cannot answer (bad sizes).
    #[error("{0}")]
    Refused(String),
    /// The duplicate index names a record of another event.
    #[error("the duplicate index names record {index} for event {event_id:?} of agent {agent_id:?}, but that record is of another event: the index is damaged")]
    IndexDamaged {
        /// The record it names.
        index: u64,
        /// The agent looked up.
        agent_id: String,
        /// The event looked up.
        event_id: String,
    },
}

/// A record with what is needed to serve it.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// Its index.
    pub index: u64,
    /// The receipt body, parsed.
    pub body: ReceiptBody,
    /// The receipt body's JCS bytes.
    pub body_jcs: Vec<u8>,
    /// The event's bytes as received.
    pub event: Vec<u8>,
    /// The event's fields, parsed at most once.
    fields: OnceLock<Option<Fields>>,
}

impl LogRecord {
    /// A record; its fields are parsed from `event` when first asked for.
    pub fn new(index: u64, body: ReceiptBody, body_jcs: Vec<u8>, event: Vec<u8>) -> LogRecord {
        LogRecord {
            index,
            body,
            body_jcs,
            event,
            fields: OnceLock::new(),
        }
    }

    /// The same record with its event's fields already known (the writer
    /// has the event parsed).
    pub fn with_fields(self, fields: Option<Fields>) -> LogRecord {
        let _ = self.fields.set(fields);
        self
    }

    /// The event's fields (see [`Fields::of_bytes`]), parsed once however
    /// many readers share the record; `None` without a valid
    /// `occurred_at`, which an accepted event always has.
    pub fn fields(&self) -> Option<&Fields> {
        self.fields
            .get_or_init(|| Fields::of_bytes(&self.event))
            .as_ref()
    }

    /// The event's fields if they were parsed already (by the writer, or
    /// an earlier reader): `None` when asking would parse them.
    pub fn known_fields(&self) -> Option<Option<&Fields>> {
        self.fields.get().map(Option::as_ref)
    }

    /// The receipt as served (body, leaf hash, chain).
    pub fn served(&self) -> ServedReceipt {
        served(&self.body, &self.body_jcs)
    }
}

/// The served form of a receipt body.
pub fn served(body: &ReceiptBody, body_jcs: &[u8]) -> ServedReceipt {
    let leaf = leaf_hash(body_jcs);
    let prev: Hash = hex::decode(&body.prev)
        .ok()
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; 32]);
    ServedReceipt::from_jcs(body_jcs, &leaf, &chain_hash(&prev, &leaf))
}

/// The read side of one log, shared by every reader.
#[derive(Clone)]
pub struct LogView {
    layout: Layout,
    segments: Arc<SegmentSet>,
    dedupe: Arc<Dedupe>,
    tiles: Arc<TileReader>,
    durable: watch::Receiver<u64>,
    latest: watch::Receiver<Arc<Latest>>,
    recent: Arc<Recent>,
}

impl LogView {
    /// A view over the log's parts; `durable` carries the durable size,
    /// `latest` the latest checkpoint.
    pub fn new(
        layout: &Layout,
        segments: Arc<SegmentSet>,
        dedupe: Arc<Dedupe>,
        tiles: Arc<TileReader>,
        durable: watch::Receiver<u64>,
        latest: watch::Receiver<Arc<Latest>>,
    ) -> LogView {
        LogView {
            layout: layout.clone(),
            segments,
            dedupe,
            tiles,
            durable,
            latest,
            recent: Arc::new(Recent::new(DEFAULT_RECENT_BYTES)),
        }
    }

    /// The first index of every segment, ascending (the last is active).
    pub fn segment_firsts(&self) -> Vec<u64> {
        self.segments.firsts()
    }

    /// The data directory's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Durable records in the log.
    pub fn size(&self) -> u64 {
        *self.durable.borrow()
    }

    /// The latest checkpoint.
    pub fn latest(&self) -> Arc<Latest> {
        self.latest.borrow().clone()
    }

    /// The duplicate index.
    pub fn dedupe(&self) -> &Arc<Dedupe> {
        &self.dedupe
    }

    /// Durable record `index`: the writer's own while it is among the
    /// recent ones, else read from its segment.
    pub fn record(&self, index: u64) -> Result<Arc<LogRecord>, ViewError> {
        if index >= self.size() {
            return Err(ReadError::Missing(index).into());
        }
        if let Some(r) = self.recent.get(index) {
            return Ok(r);
        }
        self.read_record(index).map(Arc::new)
    }

    /// The records the writer just made durable, for [`LogView::record`].
    pub fn recent(&self) -> &Recent {
        &self.recent
    }

    /// Durable record `index` read from its segment, never from the
    /// recent records.
    pub fn read_record(&self, index: u64) -> Result<LogRecord, ViewError> {
        let Record { body, event } = self.segments.read(index)?;
        let parsed: ReceiptBody =
            serde_json::from_slice(&body).map_err(|e| ReadError::Damaged {
                index,
                file: "log".into(),
                offset: 0,
                why: format!("the receipt body is not a receipt: {e}"),
            })?;
        if parsed.index != index {
            return Err(ReadError::Damaged {
                index,
                file: "log".into(),
                offset: 0,
                why: format!(
                    "the record read for index {index} says index {}",
                    parsed.index
                ),
            }
            .into());
        }
        Ok(LogRecord::new(index, parsed, body, event))
    }

    /// The record the index names under `key`, if it is the record of
    /// (agent, event id) and `check` accepts it (a hit is never believed
    /// without the record: a damaged index cannot make a receipt up).
    pub fn lookup(
        &self,
        key: &Key,
        agent_id: &str,
        event_id: &str,
        check: impl Fn(&ReceiptBody) -> bool,
    ) -> Result<Option<Arc<LogRecord>>, ViewError> {
        let Some(index) = self.dedupe.get(key).map_err(|source| ViewError::Io {
            what: "the duplicate index",
            source,
        })?
        else {
            return Ok(None);
        };
        let rec = match self.record(index) {
            Ok(r) => r,
            Err(ViewError::Read(ReadError::Missing(_))) => return Ok(None),
            Err(e) => return Err(e),
        };
        if rec.body.agent_id == agent_id && rec.body.event_id == event_id && check(&rec.body) {
            Ok(Some(rec))
        } else {
            Err(ViewError::IndexDamaged {
                index,
                agent_id: agent_id.to_string(),
                event_id: event_id.to_string(),
            })
        }
    }

    /// The accepted receipt of (agent, event id), else its latest rejection.
    pub fn find_receipt(
        &self,
        agent_id: &str,
        event_id: &str,
    ) -> Result<Option<Arc<LogRecord>>, ViewError> {
        let accepted = self.lookup(
            &Key::accepted(agent_id, event_id),
            agent_id,
            event_id,
            |b| b.verdict() == Some(Verdict::Accepted),
        )?;
        if accepted.is_some() {
            return Ok(accepted);
        }
        self.lookup(
            &Key::latest_rejection(agent_id, event_id),
            agent_id,
            event_id,
            |b| matches!(b.verdict(), Some(Verdict::Rejected(_))),
        )
    }

    /// The receipt of (agent, event id) with its proof to the latest
    /// checkpoint (null while none covers it).
    pub fn receipt(
        &self,
        agent_id: &str,
        event_id: &str,
    ) -> Result<Option<ReceiptLookup>, ViewError> {
        let Some(rec) = self.find_receipt(agent_id, event_id)? else {
            return Ok(None);
        };
        let latest = self.latest();
        let proof = if rec.index < latest.size {
            let path = inclusion_proof(&self.tiles.at(latest.size), rec.index, latest.size)
                .map_err(|source| ViewError::Io {
                    what: "the tiles",
                    source,
                })?;
            Some(build_proof(&rec.body_jcs, rec.index, &path, &latest.note))
        } else {
            None
        };
        Ok(Some(ReceiptLookup {
            receipt: rec.served(),
            proof,
        }))
    }

    /// The consistency proof between two checkpointed sizes.
    pub fn consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>, ViewError> {
        if from < 1 || from > to {
            return Err(ViewError::Refused(
                "from and to must satisfy 1 <= from <= to".into(),
            ));
        }
        let latest = self.latest();
        for s in [from, to] {
            let checkpointed = s <= latest.size
                && is_checkpointed(&self.layout, s).map_err(|source| ViewError::Io {
                    what: "checkpoints.idx",
                    source,
                })?;
            if !checkpointed {
                return Err(ViewError::Refused(format!(
                    "{s} is not the size of a checkpoint of this log; use sizes from GET /v1/checkpoint"
                )));
            }
        }
        consistency_proof(&self.tiles.at(latest.size), from, to).map_err(|source| ViewError::Io {
            what: "the tiles",
            source,
        })
    }

    /// The bytes of a tile the latest checkpoint covers (full tiles never
    /// change; partial ones only for widths a checkpoint needed).
    /// Tiles beyond it are not served: they may not be durable yet.
    pub fn tile(&self, tile: &TileId) -> Result<Option<Vec<u8>>, ViewError> {
        if !tile.covered_by(self.latest().size) {
            return Ok(None);
        }
        match std::fs::read(tile_path(&self.layout, tile)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ViewError::Io {
                what: "a tile",
                source,
            }),
        }
    }

    /// A cursor over durable records from `from_index` on.
    pub fn tail(&self, from_index: u64) -> Cursor {
        Cursor {
            view: self.clone(),
            next: from_index,
        }
    }
}

/// Durable records in order, waiting for new ones: never yields a record
/// before its fdatasync.
pub struct Cursor {
    view: LogView,
    next: u64,
}

impl Cursor {
    /// The index of the next record it yields.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The next durable record if there is one now, without waiting.
    pub fn try_next(&mut self) -> Option<Result<Arc<LogRecord>, ViewError>> {
        if self.next >= self.view.size() {
            return None;
        }
        let r = self.view.record(self.next);
        if r.is_ok() {
            self.next += 1;
        }
        Some(r)
    }

    /// The next durable record, waiting until there is one; `None` once the
    /// log is closed.
    pub async fn next(&mut self) -> Option<Result<Arc<LogRecord>, ViewError>> {
        let want = self.next;
        if self
            .view
            .durable
            .wait_for(|&size| size > want)
            .await
            .is_err()
        {
            return None;
        }
        let r = self.view.record(want);
        if r.is_ok() {
            self.next += 1;
        }
        Some(r)
    }

    /// The records already durable, without waiting, at most `max`,
    /// ending after a read error. After [`Cursor::next`], a follower reads
    /// these too, so that it pays one wake-up per group commit rather than
    /// per record.
    pub fn ready(&mut self, max: usize) -> Ready<'_> {
        Ready {
            cursor: self,
            left: max,
            failed: false,
        }
    }
}

/// Records already durable; see [`Cursor::ready`].
pub struct Ready<'a> {
    cursor: &'a mut Cursor,
    left: usize,
    failed: bool,
}

impl Iterator for Ready<'_> {
    type Item = Result<Arc<LogRecord>, ViewError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.left == 0 {
            return None;
        }
        let r = self.cursor.try_next()?;
        self.left -= 1;
        self.failed = r.is_err();
        Some(r)
    }
}
