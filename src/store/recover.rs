//! Recovery at start: make durable everything the server is about to rely
//! on, then find where the log ends, cutting only a torn last group.
//!
//! A process killed between a segment write and its fdatasync leaves those
//! bytes in the page cache: readable, but not on disk. A failed fdatasync
//! can leave pages marked clean that never reached the disk. So before it
//! signs, serves or answers anything, recovery calls fdatasync on the last
//! segment (writing back what a killed process left), then drops that
//! file's cached pages (so what it reads next is what the disk holds), and
//! only then reads it; it also syncs `checkpoints.log`, the quarantine
//! files and the directories. Any error there is fatal: the server does not
//! start on a log it cannot make durable.
//!
//! Only the last segment can hold bytes that were never synced (the writer
//! syncs a segment before it starts the next), so recovery reads only that
//! segment: start-up does not grow with the log.

use std::fs::{File, OpenOptions};
use std::path::Path;

use super::fsutil::sync_dir;
use super::layout::Layout;
pub use super::segments::ActiveSegment;
use super::tiles::TileReader;
use super::walk::{WalkEnd, Walker};
use crate::event::Hash;
use crate::log::receipt::{chain_hash, leaf_hash, ReceiptBody};
use crate::log::record::{self, HEADER_LEN};

/// Why the log cannot be opened as it is on disk.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// A file operation failed (including making a file durable).
    #[error("cannot {what} {path}: {source}; fix the disk problem and start vigil again")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Damage that a crash cannot cause: the server refuses to run on it.
    #[error("the receipt log is damaged at {file}, {position}: {why}. A crash cannot cause this; \
             run `vigil verify --data DIR` to see what is wrong and restore the data directory from a copy")]
    Damaged {
        /// The file.
        file: String,
        /// Where in it.
        position: String,
        /// What is wrong.
        why: String,
    },
}

/// Where the log ends, after recovery.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// Every segment's first index, ascending.
    pub segments: Vec<u64>,
    /// The last segment, if any.
    pub active: Option<ActiveSegment>,
    /// Records in the log (the next record's index).
    pub size: u64,
    /// The chain hash of the last record (zeros for an empty log).
    pub prev: Hash,
    /// What was cut, for the log.
    pub cut: Option<String>,
}

fn io(
    what: &'static str,
    layout: &Layout,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> RecoverError {
    let path = layout.relative(path);
    move |source| RecoverError::Io { what, path, source }
}

/// Syncs a file's data, then drops its cached pages, so that later reads
/// come from the disk.
fn sync_and_drop_cache(layout: &Layout, path: &Path) -> Result<(), RecoverError> {
    let f = File::open(path).map_err(io("open", layout, path))?;
    f.sync_data().map_err(io("fdatasync", layout, path))?;
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)
        .map_err(|e| io("drop the cached pages of", layout, path)(e.into()))
}

/// Makes the data directory's files durable before anything relies on
/// them: the last segment, `checkpoints.log`, every quarantine file and
/// every directory.
pub fn make_durable(layout: &Layout) -> Result<(), RecoverError> {
    let segments = layout
        .list_segments()
        .map_err(io("list", layout, &layout.log_dir()))?;
    if let Some(&last) = segments.last() {
        sync_and_drop_cache(layout, &layout.segment(last))?;
    }
    let cp = layout.checkpoints();
    if cp.exists() {
        sync_and_drop_cache(layout, &cp)?;
    }
    let qdir = layout.quarantine_dir();
    if let Ok(entries) = std::fs::read_dir(&qdir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "q") {
                sync_and_drop_cache(layout, &p)?;
            }
        }
    }
    for dir in [
        layout.root().to_path_buf(),
        layout.log_dir(),
        qdir,
        layout.tlog(),
    ] {
        if dir.is_dir() {
            sync_dir(&dir).map_err(io("fsync the directory", layout, &dir))?;
        }
    }
    Ok(())
}

/// What recovery checks the last segment's records against.
pub struct Expect<'a> {
    /// Records the latest checkpoint covers.
    pub checkpointed: u64,
    /// The tiles of that checkpoint, when they agree with its root: each
    /// covered record's leaf hash must be the tiles' (a record edited after
    /// it was checkpointed is found at start, not only by `vigil verify`).
    pub tiles: Option<&'a TileReader>,
}

/// Finds where the log ends: walks the last segment, checks its records
/// (framing, index, chain, and the tiles' leaf hashes for those a
/// checkpoint covers), cuts a torn last group (never one a checkpoint
/// covers), and returns what the writer continues from. Call after
/// [`make_durable`].
pub fn recover(layout: &Layout, expect: &Expect<'_>) -> Result<Recovered, RecoverError> {
    let mut segments = layout
        .list_segments()
        .map_err(io("list", layout, &layout.log_dir()))?;
    let mut cut = None;
    while let Some(&last) = segments.last() {
        let scan = scan_last(layout, last, expect)?;
        let size = last + scan.offsets.len() as u64;
        let len = match scan.end {
            // Every byte is a good record or mark.
            WalkEnd::Clean => file_len(layout, last)?,
            WalkEnd::Damaged {
                segment,
                offset,
                why,
            } => return Err(damaged(layout, segment, offset, why)),
            WalkEnd::Torn { offset, why, .. } => {
                let torn = Torn {
                    first: last,
                    offset,
                    size,
                    why,
                };
                cut = Some(cut_torn(layout, &torn, expect)?);
                if offset == 0 {
                    segments.pop();
                    continue;
                }
                offset
            }
        };
        if size < expect.checkpointed {
            return Err(damaged(
                layout,
                last,
                len,
                removed(size, expect.checkpointed),
            ));
        }
        let prev = match scan.chain {
            Some(chain) => chain,
            None => previous_chain(layout, &segments)?,
        };
        let active = ActiveSegment {
            first: last,
            len,
            version: segment_version(layout, last)?,
            offsets: scan.offsets,
        };
        return Ok(Recovered {
            segments,
            active: Some(active),
            size,
            prev,
            cut,
        });
    }
    if expect.checkpointed > 0 {
        return Err(damaged(
            layout,
            0,
            0,
            format!(
                "the log has no segment, but a checkpoint covers {} records",
                expect.checkpointed
            ),
        ));
    }
    Ok(Recovered {
        segments,
        active: None,
        size: 0,
        prev: [0; 32],
        cut,
    })
}

/// The length of segment `first`'s file.
fn file_len(layout: &Layout, first: u64) -> Result<u64, RecoverError> {
    let path = layout.segment(first);
    Ok(std::fs::metadata(&path)
        .map_err(io("read", layout, &path))?
        .len())
}

/// Why a log shorter than its checkpoint is refused.
fn removed(size: u64, checkpointed: u64) -> String {
    format!(
        "the log holds {size} records but a checkpoint covers {checkpointed}: records were removed"
    )
}

/// A torn write at the end of the last segment.
struct Torn {
    /// The segment's first index.
    first: u64,
    /// Where the torn bytes start.
    offset: u64,
    /// Records before them (the log's size once they are cut).
    size: u64,
    why: String,
}

/// Cuts a torn last group, which no checkpoint may cover (a segment torn
/// in its header is removed), and says what was cut.
fn cut_torn(layout: &Layout, torn: &Torn, expect: &Expect<'_>) -> Result<String, RecoverError> {
    let Torn {
        first,
        offset,
        size,
        why,
    } = torn;
    if *size < expect.checkpointed {
        return Err(damaged(
            layout,
            *first,
            *offset,
            format!(
                "{why}, but a checkpoint covers {} records",
                expect.checkpointed
            ),
        ));
    }
    let path = layout.segment(*first);
    let note = format!(
        "{} from byte {offset} (index {size}): {why}",
        layout.relative(&path)
    );
    if *offset == 0 {
        // A segment whose header never became durable.
        std::fs::remove_file(&path).map_err(io("remove", layout, &path))?;
        let dir = layout.log_dir();
        sync_dir(&dir).map_err(io("fsync the directory", layout, &dir))?;
    } else {
        cut_to(layout, *first, *offset)?;
    }
    Ok(note)
}

/// What walking the last segment found.
struct LastScan {
    offsets: Vec<u64>,
    /// The chain hash of its last record, if it has one.
    chain: Option<Hash>,
    end: WalkEnd,
}

/// Walks the last segment, checking each record's body: its index, its
/// link to the record before it, and its leaf hash against the tiles.
fn scan_last(layout: &Layout, first: u64, expect: &Expect<'_>) -> Result<LastScan, RecoverError> {
    let path = layout.segment(first);
    let mut walker = Walker::new(layout, vec![first], 0, HEADER_LEN as u64, first);
    let mut offsets = Vec::new();
    let mut chain: Option<Hash> = None;
    while let Some(rec) = walker.next_record().map_err(io("read", layout, &path))? {
        let bad = |why: String| {
            damaged(
                layout,
                first,
                rec.offset,
                format!("record {}: {why}", rec.index),
            )
        };
        let body: ReceiptBody = serde_json::from_slice(&rec.body)
            .map_err(|e| bad(format!("the receipt body is not a receipt: {e}")))?;
        if body.index != rec.index {
            return Err(bad(format!("the receipt says index {}", body.index)));
        }
        let leaf = leaf_hash(&rec.body);
        if let Some(c) = chain.filter(|c| crate::hexenc::encode(c) != body.prev) {
            return Err(bad(format!(
                "its prev is not the chain hash of the record before it ({})",
                crate::hexenc::encode(c)
            )));
        }
        if let Some(tiles) = expect.tiles.filter(|_| rec.index < expect.checkpointed) {
            use crate::log::merkle::NodeSource;
            let want = tiles
                .at(expect.checkpointed)
                .node(0, rec.index)
                .map_err(io("read the tiles of", layout, &layout.tlog()))?;
            if want != leaf {
                return Err(bad("it is not the record the latest checkpoint covers (its leaf hash differs from the tiles')".into()));
            }
        }
        let prev: Hash = hex::decode(&body.prev)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("its prev is not a hash".into()))?;
        chain = Some(chain_hash(&prev, &leaf));
        offsets.push(rec.offset);
    }
    Ok(LastScan {
        offsets,
        chain,
        end: walker.end().cloned().unwrap_or(WalkEnd::Clean),
    })
}

/// An error for a walk that ended on damage or a torn tail where every
/// record should be whole (after recovery has cut what a crash may leave).
pub(crate) fn fail_on_walk_damage(
    layout: &Layout,
    end: Option<&WalkEnd>,
) -> Result<(), RecoverError> {
    match end {
        Some(WalkEnd::Damaged {
            segment,
            offset,
            why,
        })
        | Some(WalkEnd::Torn {
            segment,
            offset,
            why,
        }) => Err(damaged(layout, *segment, *offset, why.clone())),
        _ => Ok(()),
    }
}

fn damaged(layout: &Layout, segment: u64, offset: u64, why: String) -> RecoverError {
    RecoverError::Damaged {
        file: layout.relative(&layout.segment(segment)),
        position: format!("byte {offset}"),
        why,
    }
}

fn cut_to(layout: &Layout, first: u64, len: u64) -> Result<(), RecoverError> {
    let path = layout.segment(first);
    let f = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(io("open", layout, &path))?;
    f.set_len(len).map_err(io("cut", layout, &path))?;
    f.sync_all().map_err(io("fsync", layout, &path))
}

fn segment_version(layout: &Layout, first: u64) -> Result<u32, RecoverError> {
    let path = layout.segment(first);
    let mut head = [0u8; HEADER_LEN];
    use std::os::unix::fs::FileExt;
    File::open(&path)
        .and_then(|f| f.read_exact_at(&mut head, 0))
        .map_err(io("read", layout, &path))?;
    record::header_version(&head, first).ok_or_else(|| {
        damaged(
            layout,
            first,
            0,
            "the segment header is not a Vigil segment header".into(),
        )
    })
}

fn chain_of(layout: &Layout, segment: u64, body: &[u8]) -> Result<Hash, RecoverError> {
    let parsed: ReceiptBody = serde_json::from_slice(body).map_err(|e| {
        damaged(
            layout,
            segment,
            0,
            format!("the last receipt body is not a receipt: {e}"),
        )
    })?;
    let prev: Hash = hex::decode(&parsed.prev)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            damaged(
                layout,
                segment,
                0,
                "the last receipt's prev is not a hash".into(),
            )
        })?;
    Ok(chain_hash(&prev, &leaf_hash(body)))
}

/// The chain hash of the last record of the segment before the last one
/// (when the last segment holds no record yet).
fn previous_chain(layout: &Layout, segments: &[u64]) -> Result<Hash, RecoverError> {
    let Some(&before) = segments.iter().rev().nth(1) else {
        return Ok([0; 32]);
    };
    let mut walker = Walker::new(layout, vec![before], 0, HEADER_LEN as u64, before);
    let mut last = None;
    while let Some(rec) =
        walker
            .next_record()
            .map_err(io("read", layout, &layout.segment(before)))?
    {
        last = Some(rec.body);
    }
    fail_on_walk_damage(layout, walker.end())?;
    match last {
        Some(body) => chain_of(layout, before, &body),
        None => Ok([0; 32]),
    }
}
