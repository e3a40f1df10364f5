//! The checkpoint file: every signed checkpoint, in order, each durable
//! before it is served.
//!
//! `DIR/checkpoints.log` holds records `u32 length | u32 CRC-32 | note text`
//! (little-endian). Beside it, `DIR/checkpoints.idx` holds the offset and
//! tree size of each (16 bytes each): it finds the latest checkpoint
//! without reading them all (start-up does not grow with the log's age)
//! and answers "is this size checkpointed?" for consistency proofs. The
//! index is derived: after a crash it may lag, and the records after its
//! last entry are read to catch it up. Only a torn last record (a crash
//! while appending, so never served) may be cut on start.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::fsutil::{sync_dir, write_file_durably};
use super::layout::Layout;
use crate::log::note::{split_note, CheckpointBody};

/// A stored checkpoint and where it is.
#[derive(Debug, Clone)]
pub struct StoredCheckpoint {
    /// Position in the checkpoint file (0 = first).
    pub ordinal: usize,
    /// The signed note text.
    pub note: String,
}

/// What reading the whole checkpoint file found (for `vigil verify`).
#[derive(Debug, Default)]
pub struct CheckpointScan {
    /// Every good checkpoint, in order.
    pub checkpoints: Vec<StoredCheckpoint>,
    /// Length of the good prefix of the file.
    pub good_len: u64,
    /// A torn final record.
    pub torn: Option<BadRecord>,
    /// A bad record followed by more data: damage.
    pub corrupt: Option<BadRecord>,
}

/// A checkpoint record that does not read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// Where it starts in the file.
    pub offset: u64,
    /// What is wrong.
    pub why: String,
}

enum Next {
    Record(String, usize),
    Torn(String),
    Corrupt(String),
    End,
}

fn next_record(data: &[u8], pos: usize) -> Next {
    let rest = &data[pos..];
    if rest.is_empty() {
        return Next::End;
    }
    if rest.len() < 8 || rest.iter().all(|&b| b == 0) {
        return Next::Torn("an incomplete checkpoint record at the end".into());
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    if 8 + len > rest.len() {
        return Next::Torn("a checkpoint record cut short at the end".into());
    }
    let text = &rest[8..8 + len];
    let why = if crc32fast::hash(text) != crc {
        Some("the checkpoint record's CRC-32 does not match".to_string())
    } else {
        std::str::from_utf8(text)
            .err()
            .map(|_| "the checkpoint is not UTF-8".to_string())
    };
    match why {
        Some(why) if 8 + len == rest.len() => Next::Torn(why),
        Some(why) => Next::Corrupt(why),
        None => Next::Record(
            String::from_utf8(text.to_vec()).expect("checked above"),
            pos + 8 + len,
        ),
    }
}

/// Reads every checkpoint in the file (missing file = none).
pub fn read_checkpoints(path: &Path) -> std::io::Result<CheckpointScan> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(CheckpointScan::default()),
        Err(e) => return Err(e),
    };
    let mut scan = CheckpointScan::default();
    let mut pos = 0usize;
    loop {
        match next_record(&data, pos) {
            Next::Record(note, next) => {
                scan.checkpoints.push(StoredCheckpoint {
                    ordinal: scan.checkpoints.len(),
                    note,
                });
                pos = next;
                scan.good_len = pos as u64;
            }
            Next::Torn(why) => {
                scan.torn = Some(BadRecord {
                    offset: pos as u64,
                    why,
                });
                break;
            }
            Next::Corrupt(why) => {
                scan.corrupt = Some(BadRecord {
                    offset: pos as u64,
                    why,
                });
                break;
            }
            Next::End => break,
        }
    }
    Ok(scan)
}

/// The latest checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latest {
    /// The signed note, served as is.
    pub note: String,
    /// Its tree size.
    pub size: u64,
    /// Its root hash.
    pub root: [u8; 32],
}

/// Why the checkpoint file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file operation failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Damage a crash cannot cause.
    #[error("checkpoints.log is damaged at byte {offset}: {why}. A crash cannot cause this; run `vigil verify --data DIR`")]
    Damaged {
        /// Where.
        offset: u64,
        /// What is wrong.
        why: String,
    },
}

/// Appends checkpoints durably, and knows the latest.
pub struct CheckpointLog {
    file: File,
    idx: File,
    len: u64,
    latest: Option<Latest>,
    tlog_checkpoint: std::path::PathBuf,
}

fn io<'a>(
    layout: &'a Layout,
    what: &'static str,
    p: &'a Path,
) -> impl FnOnce(std::io::Error) -> CheckpointError + 'a {
    move |source| CheckpointError::Io {
        what,
        path: layout.relative(p),
        source,
    }
}

/// Cuts the index after its last entry that lies within the checkpoint
/// file, and returns where that entry's record starts (0 if none): the
/// records from there on are read again.
fn keep_index_within(layout: &Layout, idx: &File, file_len: u64) -> Result<u64, CheckpointError> {
    let idx_path = layout.checkpoints_index();
    let mut entries = idx.metadata().map_err(io(layout, "read", &idx_path))?.len() / 16;
    let mut start = 0u64;
    let mut buf = [0u8; 16];
    while entries > 0 {
        entries -= 1;
        idx.read_exact_at(&mut buf, entries * 16)
            .map_err(io(layout, "read", &idx_path))?;
        let off = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
        if off < file_len {
            start = off;
            break;
        }
    }
    idx.set_len(entries * 16)
        .map_err(io(layout, "cut", &idx_path))?;
    Ok(start)
}

fn parse_latest(note: &str) -> Option<Latest> {
    let (body, _) = split_note(note).ok()?;
    let b = CheckpointBody::parse(body).ok()?;
    Some(Latest {
        note: note.to_string(),
        size: b.size,
        root: b.root,
    })
}

impl CheckpointLog {
    /// Opens the file after [`super::recover::make_durable`]: catches the
    /// index up with the records after its last entry and cuts a torn last
    /// record.
    pub fn open(layout: &Layout) -> Result<CheckpointLog, CheckpointError> {
        let path = layout.checkpoints();
        let idx_path = layout.checkpoints_index();
        let existed = path.exists();
        let options = |append: bool| {
            let mut o = OpenOptions::new();
            o.read(true).create(true).mode(0o644);
            if append {
                o.append(true);
            } else {
                o.write(true).truncate(false);
            }
            o
        };
        let file = options(true)
            .open(&path)
            .map_err(io(layout, "open", &path))?;
        let idx = options(false)
            .open(&idx_path)
            .map_err(io(layout, "open", &idx_path))?;
        if !existed {
            sync_dir(layout.root()).map_err(io(layout, "fsync the directory of", &path))?;
        }
        let file_len = file.metadata().map_err(io(layout, "read", &path))?.len();
        let start = keep_index_within(layout, &idx, file_len)?;
        let mut log = CheckpointLog {
            file,
            idx,
            len: start,
            latest: None,
            tlog_checkpoint: layout.tlog_checkpoint(),
        };
        log.catch_up(layout, start, file_len)?;
        if log.latest.is_none() && start > 0 {
            return Err(CheckpointError::Damaged {
                offset: start,
                why: "the last indexed checkpoint is missing".into(),
            });
        }
        Ok(log)
    }

    /// Reads the records from `start` (the last indexed one) to the end,
    /// indexing each, and cuts a torn last record.
    fn catch_up(
        &mut self,
        layout: &Layout,
        start: u64,
        file_len: u64,
    ) -> Result<(), CheckpointError> {
        let path = layout.checkpoints();
        let mut tail = vec![0u8; (file_len - start) as usize];
        self.file
            .read_exact_at(&mut tail, start)
            .map_err(io(layout, "read", &path))?;
        let mut pos = 0usize;
        loop {
            let offset = start + pos as u64;
            match next_record(&tail, pos) {
                Next::Record(note, next) => {
                    let latest = parse_latest(&note).ok_or_else(|| CheckpointError::Damaged {
                        offset,
                        why: "the checkpoint's body does not parse".into(),
                    })?;
                    self.index(offset, latest.size).map_err(io(
                        layout,
                        "write",
                        &layout.checkpoints_index(),
                    ))?;
                    self.latest = Some(latest);
                    pos = next;
                }
                Next::Torn(why) => {
                    tracing::warn!(
                        offset,
                        why,
                        "Cutting a torn checkpoint record left by a crash (it was never served)"
                    );
                    self.file
                        .set_len(offset)
                        .map_err(io(layout, "cut", &path))?;
                    self.file.sync_all().map_err(io(layout, "fsync", &path))?;
                    break;
                }
                Next::Corrupt(why) => return Err(CheckpointError::Damaged { offset, why }),
                Next::End => break,
            }
        }
        self.len = start + pos as u64;
        Ok(())
    }

    fn index(&mut self, offset: u64, size: u64) -> std::io::Result<()> {
        let mut e = [0u8; 16];
        e[..8].copy_from_slice(&offset.to_le_bytes());
        e[8..].copy_from_slice(&size.to_le_bytes());
        let at = self.idx.metadata()?.len();
        self.idx.write_all_at(&e, at)
    }

    /// The latest checkpoint, if any.
    pub fn latest(&self) -> Option<&Latest> {
        self.latest.as_ref()
    }

    /// Appends one signed checkpoint of `size` leaves and syncs it, then
    /// replaces `DIR/tlog/checkpoint` (durably) for tlog-tiles readers.
    pub fn append(&mut self, note: &str) -> std::io::Result<()> {
        let latest = parse_latest(note)
            .ok_or_else(|| std::io::Error::other("a checkpoint that does not parse"))?;
        let mut rec = Vec::with_capacity(note.len() + 8);
        rec.extend_from_slice(&(note.len() as u32).to_le_bytes());
        rec.extend_from_slice(&crc32fast::hash(note.as_bytes()).to_le_bytes());
        rec.extend_from_slice(note.as_bytes());
        self.file.write_all(&rec)?;
        self.file.sync_data()?;
        self.index(self.len, latest.size)?;
        self.len += rec.len() as u64;
        write_file_durably(&self.tlog_checkpoint, note.as_bytes(), 0o644)?;
        self.latest = Some(latest);
        Ok(())
    }
}

/// Whether a checkpoint of `size` leaves was signed (binary search of the
/// checkpoint index; sizes only grow).
pub fn is_checkpointed(layout: &Layout, size: u64) -> std::io::Result<bool> {
    let f = File::open(layout.checkpoints_index())?;
    let n = f.metadata()?.len() / 16;
    let (mut lo, mut hi) = (0, n);
    let mut buf = [0u8; 8];
    while lo < hi {
        let mid = (lo + hi) / 2;
        f.read_exact_at(&mut buf, mid * 16 + 8)?;
        let s = u64::from_le_bytes(buf);
        match s.cmp(&size) {
            std::cmp::Ordering::Equal => return Ok(true),
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
        }
    }
    Ok(false)
}
