//! The bounded quarantine: input that got no receipt (unparseable, unknown
//! agent), kept with its raw bytes' SHA-256 for auditors.
//!
//! Files `DIR/quarantine/<sequence, 12 digits>.q` hold records `u32 length |
//! u32 CRC-32 | u32 meta length | meta JSON | raw bytes` (little-endian; raw
//! bytes cut to [`MAX_RAW_BYTES`]). When the entries exceed the bound, the
//! oldest file goes and `DIR/quarantine/dropped` counts what it held.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fsutil::{create_dir_durably, sync_dir, write_file_durably};

/// Raw bytes kept per entry (the SHA-256 always covers all of them).
pub const MAX_RAW_BYTES: usize = 64 * 1024;
const FILES: u64 = 8;

/// One quarantined input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    /// When it arrived (`YYYY-MM-DDTHH:MM:SS.sssZ`).
    pub received_at: String,
    /// Where it came from (`http`, `hec`, `kafka:<topic>/<partition>@<offset>`).
    pub source: String,
    /// `unparseable` or `unknown_agent`.
    pub reason: String,
    /// What was wrong and where.
    pub error: String,
    /// Hex SHA-256 of all of the raw bytes.
    pub sha256: String,
    /// Length of the raw bytes.
    pub size: u64,
    /// The raw bytes (at most [`MAX_RAW_BYTES`]), base64.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub raw_b64: String,
}

/// The quarantine store (owned by the log writer; listing opens files anew).
pub struct Quarantine {
    dir: PathBuf,
    per_file: u64,
    files: Vec<(u64, u64)>,
    active: Option<File>,
    dropped: u64,
}

fn file_name(seq: u64) -> String {
    format!("{seq:012}.q")
}

/// Reads a file's good entries and the length of its good prefix.
fn read_file(path: &Path) -> std::io::Result<(Vec<QuarantineEntry>, u64)> {
    let data = std::fs::read(path)?;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().expect("4 bytes"));
        let Some(payload) = data.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc || payload.len() < 4 {
            break;
        }
        let meta_len = u32::from_le_bytes(payload[..4].try_into().expect("4 bytes")) as usize;
        let Some(meta) = payload.get(4..4 + meta_len) else {
            break;
        };
        let Ok(mut entry) = serde_json::from_slice::<QuarantineEntry>(meta) else {
            break;
        };
        entry.raw_b64 = crate::event::signature::b64(&payload[4 + meta_len..]);
        out.push(entry);
        pos += 8 + len;
    }
    Ok((out, pos as u64))
}

fn list_files(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let name = e?.file_name();
                if let Some(seq) = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(".q"))
                    .and_then(|s| s.parse().ok())
                {
                    seqs.push(seq);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    seqs.sort();
    Ok(seqs)
}

impl Quarantine {
    /// Opens (creating) the quarantine in `dir`, bounded to about `max_entries`.
    pub fn open(dir: &Path, max_entries: u64) -> std::io::Result<Quarantine> {
        create_dir_durably(dir)?;
        let mut files = Vec::new();
        let seqs = list_files(dir)?;
        for (n, &seq) in seqs.iter().enumerate() {
            let path = dir.join(file_name(seq));
            let (entries, good_len) = read_file(&path)?;
            let f = OpenOptions::new().write(true).open(&path)?;
            let len = f.metadata()?.len();
            if len != good_len {
                // Only the file being appended to when a crash came can
                // hold a torn last entry (never answered): cut it there.
                // Anywhere else a bad entry is damage, not a crash.
                if n + 1 != seqs.len() {
                    return Err(std::io::Error::other(format!(
                        "the quarantine file {} is damaged at byte {good_len} (a crash only leaves a torn end \
                         in the last file); move it out of the data directory (it is not part of the receipt log) \
                         and start vigil again",
                        path.display()
                    )));
                }
                f.set_len(good_len)?;
                f.sync_all()?;
            }
            files.push((seq, entries.len() as u64));
        }
        let dropped = std::fs::read_to_string(dir.join("dropped"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        Ok(Quarantine {
            dir: dir.to_path_buf(),
            per_file: (max_entries / FILES).max(1),
            files,
            active: None,
            dropped,
        })
    }

    /// Entries dropped to keep the bound, since the data directory was made.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Entries held now.
    pub fn len(&self) -> u64 {
        self.files.iter().map(|(_, n)| n).sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends entries (meta plus raw bytes) and makes them durable.
    pub fn append_durably(&mut self, entries: &[(QuarantineEntry, &[u8])]) -> std::io::Result<()> {
        for (meta, raw) in entries {
            let full = self.files.last().is_none_or(|&(_, n)| n >= self.per_file);
            if full || self.active.is_none() {
                if full {
                    self.start_file()?;
                } else {
                    let (seq, _) = *self.files.last().expect("not full means a file exists");
                    let path = self.dir.join(file_name(seq));
                    self.active = Some(OpenOptions::new().append(true).open(path)?);
                }
            }
            let meta_json = serde_json::to_vec(meta).expect("an entry always serialises");
            let raw = &raw[..raw.len().min(MAX_RAW_BYTES)];
            let mut payload = Vec::with_capacity(4 + meta_json.len() + raw.len());
            payload.extend_from_slice(&(meta_json.len() as u32).to_le_bytes());
            payload.extend_from_slice(&meta_json);
            payload.extend_from_slice(raw);
            let mut rec = Vec::with_capacity(payload.len() + 8);
            rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            rec.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            rec.extend_from_slice(&payload);
            self.active
                .as_mut()
                .expect("a file is open")
                .write_all(&rec)?;
            self.files.last_mut().expect("a file is open").1 += 1;
        }
        if let Some(f) = &self.active {
            f.sync_data()?;
        }
        Ok(())
    }

    fn start_file(&mut self) -> std::io::Result<()> {
        if let Some(f) = self.active.take() {
            f.sync_data()?;
        }
        let seq = self.files.last().map_or(0, |(s, _)| s + 1);
        let path = self.dir.join(file_name(seq));
        self.active = Some(
            OpenOptions::new()
                .append(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)?,
        );
        sync_dir(&self.dir)?;
        self.files.push((seq, 0));
        while self.files.len() as u64 > FILES {
            let (old, n) = self.files.remove(0);
            self.dropped += n;
            write_file_durably(
                &self.dir.join("dropped"),
                format!("{}\n", self.dropped).as_bytes(),
                0o644,
            )?;
            std::fs::remove_file(self.dir.join(file_name(old)))?;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// Lists quarantined entries, newest first, at most `limit`.
pub fn list(dir: &Path, limit: usize) -> std::io::Result<(Vec<QuarantineEntry>, u64)> {
    let dropped = std::fs::read_to_string(dir.join("dropped"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut out = Vec::new();
    for seq in list_files(dir)?.into_iter().rev() {
        let (mut entries, _) = read_file(&dir.join(file_name(seq)))?;
        entries.reverse();
        for e in entries {
            if out.len() == limit {
                return Ok((out, dropped));
            }
            out.push(e);
        }
    }
    Ok((out, dropped))
}
