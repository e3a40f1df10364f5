//! Receipt log segments on disk: the appending side (group commit with
//! sync marks, rolling and sealing) and random reads by record index.
//!
//! The framing is [`crate::log::record`]. A sealed segment gets a
//! `.idx` file with the offset of each of its records (8 bytes each,
//! little-endian), written durably before the next segment is used; the
//! active segment's offsets are held in memory (at most a segment's worth).
//! Reading record `i` is a binary search over the segments' first indices
//! and one read of 8 bytes, then one of the record: nothing per record of
//! the whole log is held in memory.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, RwLock};

use super::fsutil::{sync_dir, write_file_durably};
use super::layout::Layout;
use crate::log::record::{self, Item, HEADER_LEN, RECORD_HEADER_LEN};

/// Where a record is: the first index of its segment and its byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// First index of the segment.
    pub segment: u64,
    /// Offset of the record header in the segment file.
    pub offset: u64,
}

/// A record read back: its two parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The receipt body's JCS bytes (what the leaf hash covers).
    pub body: Vec<u8>,
    /// The event's bytes as received.
    pub event: Vec<u8>,
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No durable record has this index.
    #[error("the log has no record {0} yet")]
    Missing(u64),
    /// The operating system failed.
    #[error("cannot read record {index} from {file}: {source}")]
    Io {
        /// The record.
        index: u64,
        /// The segment file.
        file: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The bytes there are not a receipt record.
    #[error("record {index} in {file} at byte {offset} is damaged ({why}); run `vigil verify`")]
    Damaged {
        /// The record.
        index: u64,
        /// The segment file.
        file: String,
        /// Its offset.
        offset: u64,
        /// What is wrong.
        why: String,
    },
}

struct Segment {
    first: u64,
    file: Arc<File>,
    /// `Some` for a sealed segment: its `.idx` file.
    sealed_offsets: Option<Arc<File>>,
}

/// The active (last) segment as recovery left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSegment {
    /// Its first index.
    pub first: u64,
    /// Its good length in bytes.
    pub len: u64,
    /// Its framing version.
    pub version: u32,
    /// The offset of each of its records.
    pub offsets: Vec<u64>,
}

/// Every segment, for reading; shared by the writer (which adds segments
/// and makes records visible once durable) and the readers.
pub struct SegmentSet {
    layout: Layout,
    segments: RwLock<Vec<Segment>>,
    /// Offsets of the active segment's durable records.
    active_offsets: RwLock<Vec<u64>>,
}

impl SegmentSet {
    /// Opens the segments `firsts` (ascending): every one but the last is
    /// sealed and must have its offsets file (see [`ensure_offsets`]); the
    /// last one's durable record offsets are `active_offsets`.
    pub fn open(
        layout: &Layout,
        firsts: &[u64],
        active_offsets: Vec<u64>,
    ) -> std::io::Result<SegmentSet> {
        let mut segments = Vec::with_capacity(firsts.len());
        for (n, &first) in firsts.iter().enumerate() {
            let sealed_offsets = if n + 1 < firsts.len() {
                Some(Arc::new(File::open(layout.segment_offsets(first))?))
            } else {
                None
            };
            segments.push(Segment {
                first,
                file: Arc::new(File::open(layout.segment(first))?),
                sealed_offsets,
            });
        }
        Ok(SegmentSet {
            layout: layout.clone(),
            segments: RwLock::new(segments),
            active_offsets: RwLock::new(active_offsets),
        })
    }

    /// The first index of every segment, ascending.
    pub fn firsts(&self) -> Vec<u64> {
        self.read_segments().iter().map(|s| s.first).collect()
    }

    fn read_segments(&self) -> std::sync::RwLockReadGuard<'_, Vec<Segment>> {
        self.segments
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Where record `index` is, if it is durable.
    pub fn position(&self, index: u64) -> Result<Position, ReadError> {
        let segments = self.read_segments();
        let n = segments.partition_point(|s| s.first <= index);
        let seg = n
            .checked_sub(1)
            .map(|i| &segments[i])
            .ok_or(ReadError::Missing(index))?;
        let k = index - seg.first;
        let offset = match &seg.sealed_offsets {
            Some(idx) => {
                if n < segments.len() && index >= segments[n].first {
                    return Err(ReadError::Missing(index));
                }
                let mut b = [0u8; 8];
                idx.read_exact_at(&mut b, k * 8)
                    .map_err(|source| ReadError::Io {
                        index,
                        file: self
                            .layout
                            .relative(&self.layout.segment_offsets(seg.first)),
                        source,
                    })?;
                u64::from_le_bytes(b)
            }
            None => *self
                .active_offsets
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(k as usize)
                .ok_or(ReadError::Missing(index))?,
        };
        Ok(Position {
            segment: seg.first,
            offset,
        })
    }

    /// Reads durable record `index`.
    pub fn read(&self, index: u64) -> Result<Record, ReadError> {
        let pos = self.position(index)?;
        self.read_at(index, pos)
    }

    /// Reads the record that is at `pos` (it should be record `index`).
    pub fn read_at(&self, index: u64, pos: Position) -> Result<Record, ReadError> {
        let file = {
            let segments = self.read_segments();
            let i = segments.partition_point(|s| s.first < pos.segment);
            match segments.get(i) {
                Some(s) if s.first == pos.segment => s.file.clone(),
                _ => return Err(ReadError::Missing(index)),
            }
        };
        let name = || self.layout.relative(&self.layout.segment(pos.segment));
        let io = |source| ReadError::Io {
            index,
            file: name(),
            source,
        };
        let mut head = [0u8; RECORD_HEADER_LEN];
        file.read_exact_at(&mut head, pos.offset).map_err(io)?;
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let mut framed = head.to_vec();
        framed.resize(RECORD_HEADER_LEN + len, 0);
        file.read_exact_at(
            &mut framed[RECORD_HEADER_LEN..],
            pos.offset + RECORD_HEADER_LEN as u64,
        )
        .map_err(io)?;
        match record::decode_at(&framed, 0, pos.offset) {
            Ok((Item::Receipt { body, event }, _)) => Ok(Record {
                body: body.to_vec(),
                event: event.to_vec(),
            }),
            Ok((Item::Mark { .. }, _)) => Err(ReadError::Damaged {
                index,
                file: name(),
                offset: pos.offset,
                why: "a sync mark stands where the record should be".into(),
            }),
            Err(bad) => Err(ReadError::Damaged {
                index,
                file: name(),
                offset: pos.offset,
                why: bad.why,
            }),
        }
    }

    fn publish_active(&self, offsets: &[u64]) {
        self.active_offsets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(offsets);
    }
}

/// Writes the offsets file of a sealed segment, durably.
pub fn write_offsets(layout: &Layout, first: u64, offsets: &[u64]) -> std::io::Result<()> {
    let bytes: Vec<u8> = offsets.iter().flat_map(|o| o.to_le_bytes()).collect();
    write_file_durably(&layout.segment_offsets(first), &bytes, 0o644)
}

/// Makes sure every sealed segment (all of `firsts` but the last) has an
/// offsets file of the right length, rebuilding a missing or short one by
/// scanning its segment (a crash between sealing and writing it). Returns
/// how many were rebuilt.
pub fn ensure_offsets(layout: &Layout, firsts: &[u64]) -> std::io::Result<usize> {
    let mut rebuilt = 0;
    for w in firsts.windows(2) {
        let (first, next) = (w[0], w[1]);
        let want = (next - first) * 8;
        let ok = std::fs::metadata(layout.segment_offsets(first)).is_ok_and(|m| m.len() == want);
        if ok {
            continue;
        }
        let data = std::fs::read(layout.segment(first))?;
        let mut offsets = Vec::new();
        let mut at = HEADER_LEN;
        while at < data.len() {
            match record::decode_at(&data, at, 0) {
                Ok((Item::Receipt { .. }, next_at)) => {
                    offsets.push(at as u64);
                    at = next_at;
                }
                Ok((Item::Mark { .. }, next_at)) => at = next_at,
                Err(bad) => {
                    return Err(std::io::Error::other(format!(
                        "{} is damaged at byte {} ({}); run `vigil verify`",
                        layout.relative(&layout.segment(first)),
                        bad.offset,
                        bad.why
                    )))
                }
            }
        }
        if offsets.len() as u64 != next - first {
            return Err(std::io::Error::other(format!(
                "{} holds {} records but the next segment starts at index {next}; run `vigil verify`",
                layout.relative(&layout.segment(first)),
                offsets.len()
            )));
        }
        write_offsets(layout, first, &offsets)?;
        rebuilt += 1;
    }
    Ok(rebuilt)
}

/// The appending side of the segments (owned by the log writer).
pub struct SegmentWriter {
    layout: Layout,
    set: Arc<SegmentSet>,
    active: File,
    first: u64,
    len: u64,
    /// Offsets of the active segment's records, durable or not.
    offsets: Vec<u64>,
    max_bytes: u64,
    /// Whether the last bytes appended end with a sync mark.
    ends_with_mark: bool,
}

impl SegmentWriter {
    /// Continues the active segment as recovery left it, or starts a new
    /// one at `next_index` when there is none or the active one is of an
    /// older version (it is sealed).
    pub fn open(
        layout: &Layout,
        set: Arc<SegmentSet>,
        active: Option<&ActiveSegment>,
        next_index: u64,
        max_bytes: u64,
    ) -> std::io::Result<SegmentWriter> {
        let offsets = set
            .active_offsets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match active {
            Some(a) if a.version == record::VERSION => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(layout.segment(a.first))?;
                Ok(SegmentWriter {
                    layout: layout.clone(),
                    set,
                    active: file,
                    first: a.first,
                    len: a.len,
                    offsets,
                    max_bytes,
                    ends_with_mark: false,
                })
            }
            Some(a) => {
                // An older segment: seal it and continue in a new one.
                write_offsets(layout, a.first, &offsets)?;
                SegmentWriter::start(layout, set, Some(a.first), next_index, max_bytes)
            }
            None => SegmentWriter::start(layout, set, None, next_index, max_bytes),
        }
    }

    fn start(
        layout: &Layout,
        set: Arc<SegmentSet>,
        sealing: Option<u64>,
        next_index: u64,
        max_bytes: u64,
    ) -> std::io::Result<SegmentWriter> {
        let file = create_segment(layout, next_index)?;
        {
            let mut segments = set
                .segments
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(sealed) = sealing {
                if let Some(s) = segments.iter_mut().find(|s| s.first == sealed) {
                    s.sealed_offsets = Some(Arc::new(File::open(layout.segment_offsets(sealed))?));
                }
            }
            segments.push(Segment {
                first: next_index,
                file: Arc::new(File::open(layout.segment(next_index))?),
                sealed_offsets: None,
            });
        }
        set.active_offsets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        Ok(SegmentWriter {
            layout: layout.clone(),
            set,
            active: file,
            first: next_index,
            len: HEADER_LEN as u64,
            offsets: Vec::new(),
            max_bytes,
            ends_with_mark: true,
        })
    }

    /// Begins a group in `buf`: a sync mark (everything before it is
    /// synced) unless the segment already ends with one. Returns the offset
    /// in the segment at which `buf`'s bytes will land.
    pub fn begin_group(&self, next_index: u64, buf: &mut Vec<u8>) -> u64 {
        buf.clear();
        if !self.ends_with_mark {
            record::encode_mark(self.len, next_index, buf);
        }
        self.len
    }

    /// Appends a group (begun with [`SegmentWriter::begin_group`]) whose
    /// records stand at `record_offsets`, and makes it durable; the records
    /// then become readable.
    pub fn append_durably(&mut self, group: &[u8], record_offsets: &[u64]) -> std::io::Result<()> {
        self.active.write_all(group)?;
        self.len += group.len() as u64;
        self.active.sync_data()?;
        self.offsets.extend_from_slice(record_offsets);
        self.set.publish_active(record_offsets);
        self.ends_with_mark = record_offsets.is_empty() && !group.is_empty();
        Ok(())
    }

    /// When idle after a group: appends a lone sync mark and syncs it, so
    /// that the last group is known synced (damage in it is then reported,
    /// never cut as a torn write).
    pub fn mark_idle(&mut self, next_index: u64) -> std::io::Result<()> {
        if self.ends_with_mark {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(record::MARK_LEN);
        record::encode_mark(self.len, next_index, &mut buf);
        self.active.write_all(&buf)?;
        self.len += buf.len() as u64;
        self.active.sync_data()?;
        self.ends_with_mark = true;
        Ok(())
    }

    /// Seals the active segment and starts a new one at `next_index` when
    /// it is full; returns the first index of the sealed segment.
    pub fn roll_if_full(&mut self, next_index: u64) -> std::io::Result<Option<u64>> {
        if self.len < self.max_bytes {
            return Ok(None);
        }
        self.active.sync_data()?;
        write_offsets(&self.layout, self.first, &self.offsets)?;
        let sealed = self.first;
        *self = SegmentWriter::start(
            &self.layout,
            self.set.clone(),
            Some(sealed),
            next_index,
            self.max_bytes,
        )?;
        Ok(Some(sealed))
    }

    /// The shared read side.
    pub fn set(&self) -> &Arc<SegmentSet> {
        &self.set
    }
}

fn create_segment(layout: &Layout, first: u64) -> std::io::Result<File> {
    let path = layout.segment(first);
    let mut f = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o644)
        .open(&path)?;
    f.write_all(&record::header(first))?;
    f.sync_all()?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_rolls_seals_and_reads_back_by_index() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        std::fs::create_dir_all(layout.log_dir()).unwrap();
        let set = Arc::new(SegmentSet::open(&layout, &[], Vec::new()).unwrap());
        let mut w = SegmentWriter::open(&layout, set.clone(), None, 0, 200).unwrap();
        let mut next = 0u64;
        for _ in 0..6 {
            if let Some(sealed) = w.roll_if_full(next).unwrap() {
                assert!(layout.segment_offsets(sealed).exists());
            }
            let mut buf = Vec::new();
            let mut at = w.begin_group(next, &mut buf);
            at += buf.len() as u64;
            let mut offsets = Vec::new();
            for _ in 0..2 {
                offsets.push(at);
                at += record::encode_receipt(format!("body-{next}").as_bytes(), b"ev", &mut buf);
                next += 1;
            }
            w.append_durably(&buf, &offsets).unwrap();
        }
        w.mark_idle(next).unwrap();
        assert!(set.firsts().len() > 1, "{:?}", set.firsts());
        for i in 0..next {
            assert_eq!(set.read(i).unwrap().body, format!("body-{i}").as_bytes());
        }
        assert!(matches!(set.read(next), Err(ReadError::Missing(_))));
        // A missing offsets file is rebuilt from its segment.
        let firsts = set.firsts();
        std::fs::remove_file(layout.segment_offsets(firsts[0])).unwrap();
        assert_eq!(ensure_offsets(&layout, &firsts).unwrap(), 1);
        let reopened = SegmentSet::open(&layout, &firsts, Vec::new()).unwrap();
        assert_eq!(reopened.read(1).unwrap().body, b"body-1");
    }
}
