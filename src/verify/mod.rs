//! The offline auditor: `vigil verify` re-checks a whole data directory
//! with nothing but its files, and keys and a checkpoint the auditor
//! trusts (contract section 8).
//!
//! One walk of the log ([`crate::store::walk`]) checks, in order: every
//! record's framing and CRC, every receipt body (index, spec, log,
//! canonical form) and the hash chain through `prev`, every event's bytes
//! against its receipt's `event_hash` and ids, the signature of every
//! accepted event with the key the log's own key history (or `--keys`)
//! establishes before it, valid at its `occurred_at`, that no (agent,
//! event id) is accepted twice; every stored checkpoint's signature, and
//! its root against the log's records at its size (which makes successive
//! checkpoints consistent); the tiles and the duplicate index against the
//! records; and the log's length and root against a trusted checkpoint.
//! Signatures are checked in parallel on every core.
//!
//! It reads the data directory's files through [`crate::store`] and the
//! formats of [`crate::log`]; it does not depend on the server's runtime.

pub mod bundle;
mod check;
mod claims;
mod keys;
mod tiles;

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use crate::event::tables::TableCache;
use crate::event::{Hash, PIPELINE_AGENT};
use crate::keys::history::{KeyHistory, PIPELINE_KEY};
use crate::log::merkle::CompactRange;
use crate::log::note::{verify_checkpoint, CheckpointBody, NoteError, NoteVerifier};
use crate::log::receipt::{chain_hash, check_body, Verdict};
use crate::store::checkpoints::{read_checkpoints, BadRecord};
use crate::store::datadir::read_verifier_keys;
use crate::store::dedupe::Dedupe;
use crate::store::layout::Layout;
use crate::store::walk::{WalkEnd, WalkRecord, Walker};
use check::{check_record, CheckContext, Checked, RecordError};
use claims::Claims;
use tiles::TileCheck;

/// Records checked in parallel at a time.
const CHUNK: usize = 4096;
/// Memory for per-key verification tables (an offline run can afford
/// more than the server: about 8,000 keys).
const VERIFY_TABLE_BYTES: usize = 256 << 20;

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The data directory.
    pub data: PathBuf,
    /// JWKS files (or JSON lines of JWKs) with agent keys the auditor trusts.
    pub keys: Vec<PathBuf>,
    /// A checkpoint the auditor trusts (signed note file).
    pub checkpoint: Option<PathBuf>,
    /// The log's verifier keys, when the auditor pins them (else the keys
    /// recorded in the data directory are used).
    pub vkeys: Vec<String>,
    /// Print progress to stderr.
    pub progress: bool,
    /// Collect every accepted (agent, event id, event hash) for cross-log checks.
    pub collect_accepted: bool,
}

/// One accepted receipt, for cross-log checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The agent.
    pub agent_id: String,
    /// The event id.
    pub event_id: String,
    /// The event hash (hex).
    pub event_hash: String,
    /// Its index in the log.
    pub index: u64,
}

/// What a successful verification found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Records in the log.
    pub records: u64,
    /// Accepted receipts.
    pub accepted: u64,
    /// Rejection receipts.
    pub rejected: u64,
    /// Stored checkpoints checked.
    pub checkpoints: usize,
    /// The latest checkpoint's size.
    pub latest_size: u64,
    /// Root of the whole log.
    pub root: [u8; 32],
    /// Tiles compared with the records.
    pub tiles_checked: u64,
    /// Records whose duplicate-index entries were checked.
    pub index_checked: u64,
    /// Key events (keys added, changed, removed) in the log.
    pub key_events: u64,
    /// Each key event, one line: its index, action, agent/kid, validity
    /// and agent record.
    pub key_history: Vec<String>,
    /// Whether a trusted checkpoint or a pinned log key anchored the check
    /// (else it checked internal consistency only).
    pub anchored: bool,
    /// Notes that do not make the log invalid (a torn unacknowledged tail).
    pub warnings: Vec<String>,
    /// With `collect_accepted`: every accepted receipt.
    pub accepted_ids: Vec<Accepted>,
}

/// An (agent, event id) accepted by more than one log.
#[derive(Debug, Clone)]
pub struct CrossLogDuplicate {
    /// The agent.
    pub agent_id: String,
    /// The event id.
    pub event_id: String,
    /// Each acceptance.
    pub places: Vec<Place>,
}

/// One log's acceptance of an (agent, event id).
#[derive(Debug, Clone)]
pub struct Place {
    /// The log's name (its data directory, as given).
    pub log: String,
    /// The receipt there.
    pub accepted: Accepted,
}

/// A verified log's report under the name it was given.
#[derive(Debug)]
pub struct LogReport {
    /// The log's name (its data directory, as given).
    pub log: String,
    /// What verifying it found.
    pub report: VerifyReport,
}

impl CrossLogDuplicate {
    /// Whether every log accepted the same bytes (a failover re-delivery)
    /// rather than different content under one id.
    pub fn same_event(&self) -> bool {
        self.places
            .windows(2)
            .all(|w| w[0].accepted.event_hash == w[1].accepted.event_hash)
    }
}

/// Finds (agent, event id) pairs accepted by more than one of the logs.
pub fn cross_log_duplicates(logs: &[LogReport]) -> Vec<CrossLogDuplicate> {
    let mut seen: HashMap<(&str, &str), Vec<Place>> = HashMap::new();
    for LogReport { log, report } in logs {
        for a in &report.accepted_ids {
            seen.entry((&a.agent_id, &a.event_id))
                .or_default()
                .push(Place {
                    log: log.clone(),
                    accepted: a.clone(),
                });
        }
    }
    let mut out: Vec<CrossLogDuplicate> = seen
        .into_iter()
        .filter(|(_, places)| places.len() > 1)
        .map(|((agent, id), places)| CrossLogDuplicate {
            agent_id: agent.to_string(),
            event_id: id.to_string(),
            places,
        })
        .collect();
    out.sort_by(|a, b| (&a.agent_id, &a.event_id).cmp(&(&b.agent_id, &b.event_id)));
    out
}

/// Why verification failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VerifyError {
    /// The log is not valid: the first bad place and what is wrong (exit 1).
    #[error("INVALID at {place}: {what}")]
    Invalid {
        /// File and index.
        place: String,
        /// What is wrong.
        what: String,
    },
    /// The verifier could not run (exit 2).
    #[error("{0}")]
    Usage(String),
}

fn invalid(place: impl Into<String>, what: impl std::fmt::Display) -> VerifyError {
    VerifyError::Invalid {
        place: place.into(),
        what: what.to_string(),
    }
}

struct Progress {
    enabled: bool,
    last: Instant,
    started: Instant,
}

impl Progress {
    fn tick(&mut self, records: u64, total_bytes: u64) {
        if self.enabled && self.last.elapsed().as_secs_f64() >= 1.0 {
            self.last = Instant::now();
            let rate = records as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            let _ = writeln!(
                std::io::stderr(),
                "vigil verify: {records} records checked ({rate:.0}/s) of a log of {total_bytes} bytes"
            );
        }
    }
}

/// The trusted anchors and what the data directory says of itself.
struct Anchors {
    origin: String,
    /// Every stored checkpoint, in order.
    checkpoints: Vec<Root>,
    trusted: Option<CheckpointBody>,
}

fn anchors(
    opts: &VerifyOptions,
    layout: &Layout,
    report: &mut VerifyReport,
) -> Result<Anchors, VerifyError> {
    if !layout.log_dir().is_dir() {
        return Err(VerifyError::Usage(format!(
            "{} is not a Vigil data directory (no log/)",
            opts.data.display()
        )));
    }
    let origin = std::fs::read_to_string(layout.origin())
        .map_err(|e| {
            invalid(
                "origin",
                format!(
                    "the log's origin file cannot be read ({e}); a data directory always has one"
                ),
            )
        })?
        .trim_end()
        .to_string();
    let verifiers = verifiers(opts, layout, &origin)?;
    let checkpoints = stored_checkpoints(layout, &verifiers, report)?;
    let trusted =
        match &opts.checkpoint {
            Some(path) => {
                let note = std::fs::read_to_string(path).map_err(|e| {
                    VerifyError::Usage(format!("cannot read --checkpoint {}: {e}", path.display()))
                })?;
                Some(checkpoint_with_any(&note, &verifiers).map_err(|e| {
                    invalid(format!("the trusted checkpoint {}", path.display()), e)
                })?)
            }
            None => None,
        };
    report.anchored = trusted.is_some() || !opts.vkeys.is_empty();
    Ok(Anchors {
        origin,
        checkpoints,
        trusted,
    })
}

/// The log's verifier keys: those given (`--vkey`), else the directory's
/// `log-keys.txt`; each must name the log's origin.
fn verifiers(
    opts: &VerifyOptions,
    layout: &Layout,
    origin: &str,
) -> Result<Vec<NoteVerifier>, VerifyError> {
    let texts = if opts.vkeys.is_empty() {
        read_verifier_keys(layout.root())
    } else {
        opts.vkeys.clone()
    };
    if texts.is_empty() {
        return Err(invalid("log-keys.txt", "no log verifier key: log-keys.txt is missing or empty; pass --vkey with the log's verifier key"));
    }
    let mut verifiers = Vec::new();
    for t in texts {
        let v = NoteVerifier::parse(&t)
            .map_err(|e| VerifyError::Usage(format!("bad verifier key {t:?}: {e}")))?;
        if v.name != origin {
            return Err(invalid("origin", format!("the verifier key is for {:?}, but the data directory says its origin is {origin:?}", v.name)));
        }
        verifiers.push(v);
    }
    Ok(verifiers)
}

/// A checkpoint's tree size and root, and where it came from.
#[derive(Debug, Clone)]
struct Root {
    place: String,
    size: u64,
    root: Hash,
}

/// Every checkpoint of `checkpoints.log`, each signed by one of the
/// verifier keys, sizes never decreasing; at least one.
fn stored_checkpoints(
    layout: &Layout,
    verifiers: &[NoteVerifier],
    report: &mut VerifyReport,
) -> Result<Vec<Root>, VerifyError> {
    let scan = read_checkpoints(&layout.checkpoints())
        .map_err(|e| VerifyError::Usage(format!("cannot read checkpoints.log: {e}")))?;
    if let Some(BadRecord { offset, why }) = scan.corrupt {
        return Err(invalid(format!("checkpoints.log (byte {offset})"), why));
    }
    if let Some(BadRecord { offset, why }) = scan.torn {
        report.warnings.push(format!(
            "checkpoints.log: an incomplete last checkpoint at byte {offset} ({why}); never served"
        ));
    }
    let mut checkpoints: Vec<Root> = Vec::new();
    for cp in &scan.checkpoints {
        let place = format!("checkpoints.log, checkpoint {}", cp.ordinal);
        let body = checkpoint_with_any(&cp.note, verifiers).map_err(|e| invalid(&place, e))?;
        if let Some(p) = checkpoints.last().filter(|p| body.size < p.size) {
            return Err(invalid(
                place,
                format!(
                    "its size {} is smaller than the checkpoint before it ({})",
                    body.size, p.size
                ),
            ));
        }
        checkpoints.push(Root {
            place,
            size: body.size,
            root: body.root,
        });
    }
    if checkpoints.is_empty() {
        return Err(invalid(
            "checkpoints.log",
            "the log has no checkpoint at all; every log signs one at creation",
        ));
    }
    Ok(checkpoints)
}

/// The checkpoint's body if one of the keys signed it; else why the last
/// one refused it.
fn checkpoint_with_any(
    note: &str,
    verifiers: &[NoteVerifier],
) -> Result<CheckpointBody, NoteError> {
    let mut last = NoteError::Layout("no log verifier key".into());
    for v in verifiers {
        match verify_checkpoint(note, v) {
            Ok(cp) => return Ok(cp),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The sequential state of the walk.
struct Fold {
    origin: String,
    prev: Hash,
    range: CompactRange,
    claimed: Claims,
    /// The keys in force at the walk's place (shared with the checks of
    /// the next chunk, which run while this one is folded).
    keys: Arc<KeyHistory>,
    tiles: Option<TileCheck>,
    index: Option<Arc<Dedupe>>,
    /// Checkpoints still to meet, by ascending size.
    roots: VecDeque<Root>,
    collect_accepted: bool,
}

impl Fold {
    /// Compares every checkpoint of the current size with the root.
    fn meet_checkpoints(&mut self) -> Result<(), VerifyError> {
        let size = self.range.size();
        while let Some(r) = self.roots.front().filter(|r| r.size == size) {
            if self.range.root() != r.root {
                return Err(invalid(&r.place, format!("its root does not match the log's first {size} records: records were altered, removed or reordered")));
            }
            self.roots.pop_front();
        }
        Ok(())
    }

    /// The checks that need the records before this one, in order.
    fn fold(
        &mut self,
        rec: &WalkRecord,
        c: &Checked,
        report: &mut VerifyReport,
    ) -> Result<(), RecordError> {
        check_body(&c.body, rec.index, &self.origin, &self.prev)?;
        if let Some(claim) = &c.claim {
            if !self.claimed.insert(claim.0) {
                return Err(RecordError::AcceptedTwice {
                    event_id: c.body.event_id.clone(),
                    agent_id: c.body.agent_id.clone(),
                });
            }
            report.accepted += 1;
        } else {
            report.rejected += 1;
        }
        if self.index.as_ref().is_some_and(|i| rec.index < i.covered()) {
            report.index_checked += 1;
        }
        if let Some(problem) = &c.index_problem {
            return Err(problem.clone());
        }
        let tiles = &mut self.tiles;
        let mut tile_err = None;
        self.range.push_with(c.leaf, |level, i, h| {
            if let Some(t) = tiles.as_mut() {
                if let Err(e) = t.node(level, i, h) {
                    tile_err.get_or_insert(e);
                }
            }
        });
        if let Some(t) = tiles.as_mut() {
            t.entry(rec.index, &rec.body)?;
        }
        if let Some(e) = tile_err {
            return Err(e.into());
        }
        self.prev = chain_hash(&self.prev, &c.leaf);
        Ok(())
    }

    /// Folds a checked chunk in order; a key event (a chunk of its own)
    /// then changes the keys.
    fn fold_chunk(
        &mut self,
        layout: &Layout,
        chunk: &Chunk,
        checked: Vec<Result<Checked, RecordError>>,
        report: &mut VerifyReport,
    ) -> Result<(), VerifyError> {
        for (rec, c) in chunk.records.iter().zip(checked) {
            let place = || {
                format!(
                    "{}, index {}",
                    layout.relative(&layout.segment(rec.segment)),
                    rec.index
                )
            };
            let c = c.map_err(|e| invalid(place(), e))?;
            self.fold(rec, &c, report)
                .map_err(|e| invalid(place(), e))?;
            if let Some(change) = c
                .event
                .as_ref()
                .filter(|_| c.verdict == Verdict::Accepted)
                .and_then(KeyHistory::change_in)
            {
                Arc::make_mut(&mut self.keys)
                    .apply(&change)
                    .map_err(|e| invalid(place(), e.to_string()))?;
                report.key_events += 1;
                report.key_history.push(key_line(rec.index, &change));
            }
            if self.collect_accepted && c.verdict == Verdict::Accepted {
                report.accepted_ids.push(Accepted {
                    agent_id: c.body.agent_id.clone(),
                    event_id: c.body.event_id.clone(),
                    event_hash: c.body.event_hash.clone(),
                    index: rec.index,
                });
            }
            self.meet_checkpoints()?;
        }
        Ok(())
    }
}

/// Records checked together: a run in which no key changes, or one event
/// of agent `vigil` alone (it may change the keys the next are checked
/// with).
struct Chunk {
    records: Vec<WalkRecord>,
    vigil: bool,
}

/// Reads chunks from the walk, holding back a `vigil` event met while a
/// run was filling.
struct Reader {
    walker: Walker,
    held: Option<WalkRecord>,
    /// Finds `"agent_id":"vigil"` in a receipt body.
    pipeline_agent: memchr::memmem::Finder<'static>,
}

impl Reader {
    fn new(walker: Walker) -> Reader {
        let needle = format!("\"agent_id\":\"{PIPELINE_AGENT}\"");
        Reader {
            walker,
            held: None,
            pipeline_agent: memchr::memmem::Finder::new(needle.as_bytes()).into_owned(),
        }
    }

    /// Whether a record may be an event of the pipeline (which may change
    /// the keys, so it is folded before the records after it are checked).
    /// A false positive costs only speed.
    fn is_pipeline_event(&self, rec: &WalkRecord) -> bool {
        self.pipeline_agent.find(&rec.body).is_some()
    }

    fn next_chunk(&mut self) -> Result<Option<Chunk>, VerifyError> {
        let mut records = Vec::with_capacity(CHUNK);
        if let Some(r) = self.held.take() {
            return Ok(Some(Chunk {
                records: vec![r],
                vigil: true,
            }));
        }
        while records.len() < CHUNK {
            let Some(rec) = self
                .walker
                .next_record()
                .map_err(|e| VerifyError::Usage(format!("cannot read the log: {e}")))?
            else {
                break;
            };
            if self.is_pipeline_event(&rec) {
                if records.is_empty() {
                    return Ok(Some(Chunk {
                        records: vec![rec],
                        vigil: true,
                    }));
                }
                self.held = Some(rec);
                break;
            }
            records.push(rec);
        }
        Ok((!records.is_empty()).then_some(Chunk {
            records,
            vigil: false,
        }))
    }
}

/// Checks every record of a chunk on its own, in parallel.
fn check_chunk(chunk: &Chunk, ctx: &CheckContext<'_>) -> Vec<Result<Checked, RecordError>> {
    chunk
        .records
        .par_iter()
        .map(|r| match check_record(r, ctx) {
            Err(e) if chunk.vigil => first_pipeline_key(ctx, r).ok_or(e),
            other => other,
        })
        .collect()
}

/// Chunks read ahead of the checks.
const READ_AHEAD: usize = 2;

/// Walks the log: a thread reads chunks ahead (reading, even from the
/// disk, is off the checks' path); the next chunk is checked in parallel
/// while the one before it is folded, unless that one may change the keys.
/// Returns the reader, whose walker knows how the walk ended.
fn walk(
    layout: &Layout,
    fold: &mut Fold,
    reader: Reader,
    report: &mut VerifyReport,
    progress: &mut Progress,
    total_bytes: u64,
) -> Result<Reader, VerifyError> {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD);
        let reading = scope.spawn(move || {
            let mut reader = reader;
            loop {
                let next = reader.next_chunk().transpose();
                let last = !matches!(next, Some(Ok(_)));
                if next.is_some_and(|n| tx.send(n).is_err()) || last {
                    return reader;
                }
            }
        });
        let walked = fold_chunks(layout, fold, &rx, report, progress, total_bytes);
        // Ends the reader if the walk stopped early.
        drop(rx);
        let reader = reading
            .join()
            .map_err(|_| VerifyError::Usage("the log reader thread failed".into()))?;
        walked.map(|()| reader)
    })
}

/// The next chunk from the reader; `None` at the end of the log.
fn receive(
    rx: &std::sync::mpsc::Receiver<Result<Chunk, VerifyError>>,
) -> Result<Option<Chunk>, VerifyError> {
    rx.recv().ok().transpose()
}

fn fold_chunks(
    layout: &Layout,
    fold: &mut Fold,
    rx: &std::sync::mpsc::Receiver<Result<Chunk, VerifyError>>,
    report: &mut VerifyReport,
    progress: &mut Progress,
    total_bytes: u64,
) -> Result<(), VerifyError> {
    let index = fold.index.clone();
    let tables = TableCache::new(VERIFY_TABLE_BYTES);
    let check = |chunk: Chunk, keys: &KeyHistory| {
        let ctx = CheckContext {
            keys,
            tables: &tables,
            index: index.as_deref(),
        };
        let checked = check_chunk(&chunk, &ctx);
        (chunk, checked)
    };
    let Some(first) = receive(rx)? else {
        return Ok(());
    };
    let (mut chunk, mut checked) = check(first, &fold.keys);
    loop {
        let next = receive(rx)?;
        let next = if chunk.vigil {
            fold.fold_chunk(layout, &chunk, checked, report)?;
            next.map(|n| check(n, &fold.keys))
        } else {
            let keys = fold.keys.clone();
            let (folded, next) = rayon::join(
                || fold.fold_chunk(layout, &chunk, checked, report),
                || next.map(|n| check(n, &keys)),
            );
            folded?;
            next
        };
        progress.tick(fold.range.size(), total_bytes);
        let Some(n) = next else { return Ok(()) };
        (chunk, checked) = n;
    }
}

/// Verifies a data directory; see the module docs for what is checked.
pub fn verify_log(opts: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
    let layout = Layout::new(&opts.data);
    let mut report = VerifyReport::default();
    let anchors = anchors(opts, &layout, &mut report)?;
    let segments = layout.list_segments().map_err(|e| {
        VerifyError::Usage(format!("cannot list {}: {e}", layout.log_dir().display()))
    })?;
    let total_bytes: u64 = segments
        .iter()
        .filter_map(|f| std::fs::metadata(layout.segment(*f)).ok())
        .map(|m| m.len())
        .sum();
    let latest_size = anchors.checkpoints.last().map_or(0, |c| c.size);
    let mut fold = start_fold(opts, &layout, &anchors, latest_size, &mut report)?;
    fold.meet_checkpoints()?;
    let mut progress = Progress {
        enabled: opts.progress,
        last: Instant::now(),
        started: Instant::now(),
    };
    let reader = walk(
        &layout,
        &mut fold,
        Reader::new(Walker::from_start(&layout, segments.clone())),
        &mut report,
        &mut progress,
        total_bytes,
    )?;
    end_of_walk(&layout, &reader.walker, &segments, &mut report)?;
    report.records = fold.range.size();
    report.root = fold.range.root();
    if let Some(r) = fold.roots.front() {
        return Err(invalid(&r.place, format!("it covers {} records but the log holds only {}: records were deleted or the log was truncated", r.size, report.records)));
    }
    report.checkpoints = anchors.checkpoints.len();
    report.latest_size = latest_size;
    report.tiles_checked = fold.tiles.as_ref().map_or(0, |t| t.checked);
    Ok(report)
}

/// The walk's starting state: the checkpoints to meet, the keys given, the
/// tiles and the index to compare (when the directory has them).
fn start_fold(
    opts: &VerifyOptions,
    layout: &Layout,
    anchors: &Anchors,
    latest_size: u64,
    report: &mut VerifyReport,
) -> Result<Fold, VerifyError> {
    let mut roots = anchors.checkpoints.clone();
    if let Some(t) = &anchors.trusted {
        roots.push(Root {
            place: "the trusted checkpoint".into(),
            size: t.size,
            root: t.root,
        });
        roots.sort_by_key(|r| r.size);
    }
    let tiles_present = layout.tlog().join("tile").is_dir() || latest_size == 0;
    if !tiles_present {
        report.warnings.push("there are no tiles (DIR/tlog): written by a version before tiles; they are made at the next start".into());
    }
    let index = layout
        .index_dir()
        .join("manifest.json")
        .is_file()
        .then(|| Dedupe::open(&layout.index_dir(), 0))
        .transpose()
        .map_err(|e| invalid("index", e.to_string()))?
        .map(Arc::new);
    Ok(Fold {
        origin: anchors.origin.clone(),
        prev: [0; 32],
        range: CompactRange::new(),
        // Sized for the checkpointed records, which are nearly all of them.
        claimed: Claims::with_capacity(latest_size as usize),
        keys: Arc::new(keys::given_keys(&opts.keys)?),
        tiles: tiles_present.then(|| TileCheck::new(layout, latest_size)),
        index,
        roots: roots.into(),
        collect_accepted: opts.collect_accepted,
    })
}

/// Checks a `vigil.pipeline_key` event that establishes the first
/// pipeline key: signed with the key it carries. `None` when the record is
/// not such an event or does not check with that key (the caller reports
/// its first finding).
pub(crate) fn first_pipeline_key(ctx: &CheckContext<'_>, rec: &WalkRecord) -> Option<Checked> {
    let keys = ctx.keys;
    let event = crate::event::Event::parse(&rec.event).ok()?;
    let change = KeyHistory::change_in(&event).filter(|c| c.action == PIPELINE_KEY)?;
    let body: crate::log::receipt::ReceiptBody = serde_json::from_slice(&rec.body).ok()?;
    if keys.pipeline_key(&body.key_id).is_some() {
        return None;
    }
    let mut with_it = keys.clone();
    with_it.apply(&change).ok()?;
    check_record(
        rec,
        &CheckContext {
            keys: &with_it,
            ..*ctx
        },
    )
    .ok()
}

fn end_of_walk(
    layout: &Layout,
    walker: &Walker,
    segments: &[u64],
    report: &mut VerifyReport,
) -> Result<(), VerifyError> {
    match walker.end().cloned().unwrap_or(WalkEnd::Clean) {
        WalkEnd::Clean => Ok(()),
        WalkEnd::Torn {
            segment,
            offset,
            why,
        } if Some(&segment) == segments.last() => {
            report.warnings.push(format!(
                "{}: an incomplete last group at byte {offset} after index {} ({why}); a crash leaves this, \
                 nothing in it was acknowledged, and vigil cuts it on its next start",
                layout.relative(&layout.segment(segment)),
                walker.next_index().saturating_sub(1)
            ));
            Ok(())
        }
        WalkEnd::Torn {
            segment,
            offset,
            why,
        }
        | WalkEnd::Damaged {
            segment,
            offset,
            why,
        } => Err(invalid(
            format!(
                "{}, index {} (byte {offset})",
                layout.relative(&layout.segment(segment)),
                walker.next_index()
            ),
            why,
        )),
    }
}

/// One line of the key history: where, what, and the key as it stands.
fn key_line(index: u64, change: &crate::keys::history::KeyChange) -> String {
    let j = &change.jwk;
    let member = |m: &str| match &j[m] {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    format!(
        "{index} {} {}/{} nbf={} exp={} revoked_at={} role={} owner={} status={}",
        change.action,
        member("agent_id"),
        member("kid"),
        member("nbf"),
        member("exp"),
        member("revoked_at"),
        member("role"),
        member("owner"),
        member("status"),
    )
}
