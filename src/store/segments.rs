//! Receipt log segments: framing, appending with fdatasync, scanning and
//! recovery, random reads.
//!
//! A segment is `DIR/log/<first index, 20 digits>.seg`:
//!
//! ```text
//! header  "VIGILSEG" | u32 version (1) | u64 first index | u32 CRC-32 of the 20 bytes before
//! record  u32 payload length | u32 CRC-32 of payload | payload
//! payload u8 kind (1 = receipt) | u32 body length | receipt body JCS | event bytes as sent
//! ```
//!
//! All integers are little-endian. A crash can leave a torn record only at
//! the very end of the last segment (a write is a prefix of what was asked);
//! [`scan_segment`] tells such a tail apart from damage in the middle.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::fsutil::sync_dir;

const MAGIC: &[u8; 8] = b"VIGILSEG";
const VERSION: u32 = 1;
/// Bytes in a segment header.
pub const HEADER_LEN: u64 = 24;
/// Bytes in a record header (length and CRC).
pub const RECORD_HEADER_LEN: u64 = 8;
const KIND_RECEIPT: u8 = 1;

/// Where a record lives: segment number (position in the segment list) and
/// byte offset of its record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef {
    /// Segment number, 0 for the first segment.
    pub segment: u32,
    /// Offset of the record header in the segment file.
    pub offset: u64,
}

/// A record's two parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The receipt body's JCS bytes (what the leaf hash covers).
    pub body: Vec<u8>,
    /// The event's bytes as received.
    pub event: Vec<u8>,
}

/// Appends the framed record to `out`; returns its framed length.
pub fn encode_record(body: &[u8], event: &[u8], out: &mut Vec<u8>) -> u64 {
    let payload_len = 1 + 4 + body.len() + event.len();
    let start = out.len();
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(KIND_RECEIPT);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(event);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    (out.len() - start) as u64
}

fn decode_payload(payload: &[u8]) -> Result<Record, String> {
    if payload.len() < 5 || payload[0] != KIND_RECEIPT {
        return Err("the record payload has an unknown kind".into());
    }
    let body_len = u32::from_le_bytes(payload[1..5].try_into().expect("4 bytes")) as usize;
    if 5 + body_len > payload.len() {
        return Err("the receipt body length runs past the record".into());
    }
    Ok(Record {
        body: payload[5..5 + body_len].to_vec(),
        event: payload[5 + body_len..].to_vec(),
    })
}

fn header(first_index: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_index.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The file name of the segment starting at `first_index`.
pub fn segment_name(first_index: u64) -> String {
    format!("{first_index:020}.seg")
}

/// Lists segment files in `dir`, ordered by first index.
pub fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(stem) = name.strip_suffix(".seg") {
            if let Ok(first) = stem.parse::<u64>() {
                out.push((first, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// How a segment scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every byte belonged to a good record.
    Clean,
    /// An incomplete record at the very end, as a crash leaves; nothing
    /// after it. Safe to cut when no acknowledged record is in it.
    Torn {
        /// Offset of the torn record.
        offset: u64,
        /// What is incomplete.
        why: String,
    },
    /// A bad record with data after it, or a bad header: damage or
    /// tampering, never the result of a crash.
    Corrupt {
        /// Offset of the bad record.
        offset: u64,
        /// What is wrong.
        why: String,
    },
}

/// Reads a whole segment and calls `visit(offset, record)` for each good
/// record, in order, until the end or the first bad record.
pub fn scan_segment(
    path: &Path,
    expect_first: u64,
    mut visit: impl FnMut(u64, Record) -> Result<(), String>,
) -> std::io::Result<(u64, ScanEnd)> {
    let data = std::fs::read(path)?;
    if data.len() < HEADER_LEN as usize || data[..HEADER_LEN as usize] != header(expect_first) {
        let why = if data.len() < HEADER_LEN as usize {
            format!(
                "the segment header is cut short ({} of {HEADER_LEN} bytes)",
                data.len()
            )
        } else {
            format!(
                "the segment header is not a Vigil segment header for first index {expect_first}"
            )
        };
        let end = if data.len() < HEADER_LEN as usize && data.iter().all(|&b| b == 0) {
            ScanEnd::Torn { offset: 0, why }
        } else {
            ScanEnd::Corrupt { offset: 0, why }
        };
        return Ok((0, end));
    }
    let mut pos = HEADER_LEN as usize;
    let mut count = 0;
    while pos < data.len() {
        let rest = &data[pos..];
        let torn = |why: String| ScanEnd::Torn {
            offset: pos as u64,
            why,
        };
        let corrupt = |why: String| ScanEnd::Corrupt {
            offset: pos as u64,
            why,
        };
        if rest.iter().all(|&b| b == 0) {
            return Ok((count, torn(format!("{} zero bytes at the end", rest.len()))));
        }
        if rest.len() < RECORD_HEADER_LEN as usize {
            return Ok((
                count,
                torn(format!("a record header cut short ({} bytes)", rest.len())),
            ));
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        let end = RECORD_HEADER_LEN as usize + len;
        if end > rest.len() {
            return Ok((
                count,
                torn(format!(
                    "a record of {len} bytes with only {} present",
                    rest.len() - 8
                )),
            ));
        }
        let payload = &rest[8..end];
        let at_end = end == rest.len();
        let bad = if crc32fast::hash(payload) != crc {
            Some("the record's CRC-32 does not match its bytes".to_string())
        } else {
            decode_payload(payload).err()
        };
        if let Some(why) = bad {
            return Ok((count, if at_end { torn(why) } else { corrupt(why) }));
        }
        let record = decode_payload(payload).expect("checked just above");
        if let Err(why) = visit(pos as u64, record) {
            return Ok((count, corrupt(why)));
        }
        count += 1;
        pos += end;
    }
    Ok((count, ScanEnd::Clean))
}

/// Shared read access to every segment file (for receipts and proofs).
#[derive(Debug, Default)]
pub struct SegmentReader {
    files: RwLock<Vec<Arc<File>>>,
}

impl SegmentReader {
    /// Reads the record at `r`.
    pub fn read(&self, r: RecordRef) -> std::io::Result<Record> {
        let file = self
            .files
            .read()
            .expect("the segment list lock is never poisoned")
            .get(r.segment as usize)
            .cloned()
            .ok_or_else(|| std::io::Error::other(format!("no segment {}", r.segment)))?;
        let mut head = [0u8; 8];
        file.read_exact_at(&mut head, r.offset)?;
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let mut payload = vec![0u8; len];
        file.read_exact_at(&mut payload, r.offset + RECORD_HEADER_LEN)?;
        decode_payload(&payload).map_err(std::io::Error::other)
    }

    fn push(&self, f: Arc<File>) {
        self.files
            .write()
            .expect("the segment list lock is never poisoned")
            .push(f);
    }
}

/// The appending side of the segment set (owned by the log writer).
pub struct SegmentWriter {
    dir: PathBuf,
    active: File,
    active_len: u64,
    segment_count: u32,
    max_bytes: u64,
    reader: Arc<SegmentReader>,
}

impl SegmentWriter {
    /// Opens the segments in `dir` for appending after recovery has
    /// checked them: `segments` is the list (possibly empty), `next_index`
    /// the index the next record gets, `active_len` the good length of the
    /// last segment (the file is cut to it).
    pub fn open(
        dir: &Path,
        segments: &[(u64, PathBuf)],
        next_index: u64,
        active_len: Option<u64>,
        max_bytes: u64,
    ) -> std::io::Result<SegmentWriter> {
        let reader = Arc::new(SegmentReader::default());
        for (_, path) in segments {
            reader.push(Arc::new(File::open(path)?));
        }
        let Some((_, last)) = segments.last() else {
            let (active, _) = create_segment(dir, next_index)?;
            reader.push(Arc::new(File::open(dir.join(segment_name(next_index)))?));
            return Ok(SegmentWriter {
                dir: dir.to_path_buf(),
                active,
                active_len: HEADER_LEN,
                segment_count: 1,
                max_bytes,
                reader,
            });
        };
        let active = OpenOptions::new().append(true).open(last)?;
        let len = active_len.expect("a length is given with existing segments");
        if active.metadata()?.len() != len {
            active.set_len(len)?;
            active.sync_all()?;
        }
        Ok(SegmentWriter {
            dir: dir.to_path_buf(),
            active,
            active_len: len,
            segment_count: segments.len() as u32,
            max_bytes,
            reader,
        })
    }

    /// The shared reader over the same files.
    pub fn reader(&self) -> Arc<SegmentReader> {
        self.reader.clone()
    }

    /// Starts a new segment at `next_index` when the active one is full.
    pub fn roll_if_full(&mut self, next_index: u64) -> std::io::Result<()> {
        if self.active_len < self.max_bytes {
            return Ok(());
        }
        self.active.sync_data()?;
        let (file, path) = create_segment(&self.dir, next_index)?;
        self.active = file;
        self.active_len = HEADER_LEN;
        self.segment_count += 1;
        self.reader.push(Arc::new(File::open(path)?));
        Ok(())
    }

    /// Where the next byte appended will go.
    pub fn position(&self) -> RecordRef {
        RecordRef {
            segment: self.segment_count - 1,
            offset: self.active_len,
        }
    }

    /// Appends framed records and makes them durable (fdatasync).
    pub fn append_durably(&mut self, framed: &[u8]) -> std::io::Result<()> {
        self.active.write_all(framed)?;
        self.active.sync_data()?;
        self.active_len += framed.len() as u64;
        Ok(())
    }
}

fn create_segment(dir: &Path, first_index: u64) -> std::io::Result<(File, PathBuf)> {
    let path = dir.join(segment_name(first_index));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&path)?;
    f.write_all(&header(first_index))?;
    f.sync_all()?;
    sync_dir(dir)?;
    Ok((f, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_records(dir: &Path, n: usize) -> PathBuf {
        let mut w = SegmentWriter::open(dir, &[], 0, None, 1 << 20).unwrap();
        let mut buf = Vec::new();
        for i in 0..n {
            encode_record(format!("body-{i}").as_bytes(), b"{\"event\":1}", &mut buf);
        }
        w.append_durably(&buf).unwrap();
        dir.join(segment_name(0))
    }

    fn scan(path: &Path) -> (u64, ScanEnd) {
        scan_segment(path, 0, |_, _| Ok(())).unwrap()
    }

    #[test]
    fn scans_clean_torn_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_records(dir.path(), 3);
        assert_eq!(scan(&path), (3, ScanEnd::Clean));
        let full = std::fs::read(&path).unwrap();
        // Cut in the middle of the last record: torn.
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        assert!(matches!(scan(&path), (2, ScanEnd::Torn { .. })));
        // Flip a byte in the first record: corrupt (records follow it).
        let mut bad = full.clone();
        bad[HEADER_LEN as usize + 10] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(scan(&path), (0, ScanEnd::Corrupt { .. })));
        // Zeros appended (a crash after the size grew): torn.
        let mut zeros = full.clone();
        zeros.extend_from_slice(&[0; 100]);
        std::fs::write(&path, &zeros).unwrap();
        assert!(matches!(scan(&path), (3, ScanEnd::Torn { .. })));
    }

    #[test]
    fn reads_back_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_records(dir.path(), 2);
        let mut refs = Vec::new();
        scan_segment(&path, 0, |off, _| {
            refs.push(off);
            Ok(())
        })
        .unwrap();
        let w = SegmentWriter::open(
            dir.path(),
            &[(0, path)],
            2,
            Some(
                std::fs::metadata(dir.path().join(segment_name(0)))
                    .unwrap()
                    .len(),
            ),
            1 << 20,
        )
        .unwrap();
        let r = w
            .reader()
            .read(RecordRef {
                segment: 0,
                offset: refs[1],
            })
            .unwrap();
        assert_eq!(r.body, b"body-1");
    }
}
