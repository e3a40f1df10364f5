//! The checkpoint file: every signed checkpoint, in order, each durable
//! before it is served.
//!
//! `DIR/checkpoints.log` holds records `u32 length | u32 CRC-32 | note text`
//! (little-endian). Only a torn last record (a crash while appending, so
//! never served) may be cut on start.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::fsutil::sync_dir;

/// A stored checkpoint and where it is.
#[derive(Debug, Clone)]
pub struct StoredCheckpoint {
    /// Position in the checkpoint file (0 = first).
    pub ordinal: usize,
    /// The signed note text.
    pub note: String,
}

/// What reading the checkpoint file found.
#[derive(Debug, Default)]
pub struct CheckpointScan {
    /// Every good checkpoint, in order.
    pub checkpoints: Vec<StoredCheckpoint>,
    /// Length of the good prefix of the file.
    pub good_len: u64,
    /// A torn final record (offset, what), cut on start.
    pub torn: Option<(u64, String)>,
    /// A bad record followed by more data (offset, what): damage.
    pub corrupt: Option<(u64, String)>,
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
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < 8 || rest.iter().all(|&b| b == 0) {
            scan.torn = Some((
                pos as u64,
                "an incomplete checkpoint record at the end".into(),
            ));
            break;
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if 8 + len > rest.len() {
            scan.torn = Some((
                pos as u64,
                "a checkpoint record cut short at the end".into(),
            ));
            break;
        }
        let text = &rest[8..8 + len];
        let why = if crc32fast::hash(text) != crc {
            Some("the checkpoint record's CRC-32 does not match".to_string())
        } else {
            std::str::from_utf8(text)
                .err()
                .map(|_| "the checkpoint is not UTF-8".to_string())
        };
        if let Some(why) = why {
            if 8 + len == rest.len() {
                scan.torn = Some((pos as u64, why));
            } else {
                scan.corrupt = Some((pos as u64, why));
            }
            break;
        }
        scan.checkpoints.push(StoredCheckpoint {
            ordinal: scan.checkpoints.len(),
            note: String::from_utf8(text.to_vec()).expect("checked above"),
        });
        pos += 8 + len;
        scan.good_len = pos as u64;
    }
    Ok(scan)
}

/// Appends checkpoints durably.
pub struct CheckpointWriter {
    path: PathBuf,
    file: File,
}

impl CheckpointWriter {
    /// Opens the file for appending, cutting it to `good_len` first.
    pub fn open(path: &Path, good_len: u64) -> std::io::Result<CheckpointWriter> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)?;
        if file.metadata()?.len() != good_len {
            file.set_len(good_len)?;
            file.sync_all()?;
        }
        if !existed {
            sync_dir(path.parent().unwrap_or(Path::new(".")))?;
        }
        let mut w = CheckpointWriter {
            path: path.to_path_buf(),
            file,
        };
        use std::io::Seek;
        w.file.seek(std::io::SeekFrom::End(0))?;
        Ok(w)
    }

    /// Appends one signed checkpoint and syncs it.
    pub fn append(&mut self, note: &str) -> std::io::Result<()> {
        let mut rec = Vec::with_capacity(note.len() + 8);
        rec.extend_from_slice(&(note.len() as u32).to_le_bytes());
        rec.extend_from_slice(&crc32fast::hash(note.as_bytes()).to_le_bytes());
        rec.extend_from_slice(note.as_bytes());
        self.file.write_all(&rec)?;
        self.file.sync_data()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
