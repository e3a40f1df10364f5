//! The one walk of the log: records in order from a position, across
//! segments, with the rule that tells a torn tail from damage. Recovery,
//! index and tile catch-up, `vigil verify` and cursors all read the log
//! through it.
//!
//! A bad record in a sealed segment is damage. In the last segment, a bad
//! record followed by a valid sync mark is damage too (the mark proves the
//! bytes before it were synced); one with no mark after it lies in the
//! last, unsynced group, and is a torn write that a crash can leave (even
//! a page of zeros in the middle of that group). Segments written before
//! sync marks existed (version 1) keep the older rule: only a bad record
//! at the very end, or a run of zeros to the end, is torn.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::layout::Layout;
use crate::log::record::{self, Item, HEADER_LEN};

/// Bytes read from a segment at a time.
const CHUNK: usize = 4 << 20;

/// One record met on the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkRecord {
    /// Its index in the log.
    pub index: u64,
    /// The first index of its segment.
    pub segment: u64,
    /// Its offset in the segment.
    pub offset: u64,
    /// The receipt body's JCS bytes.
    pub body: Vec<u8>,
    /// The event's bytes as received.
    pub event: Vec<u8>,
}

/// How a walk ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkEnd {
    /// Every byte belonged to a good record.
    Clean,
    /// An incomplete last group, as a crash leaves: safe to cut at
    /// `offset` of the last segment when nothing after it was acknowledged.
    Torn {
        /// The segment (first index).
        segment: u64,
        /// Where the torn bytes start.
        offset: u64,
        /// What is incomplete.
        why: String,
    },
    /// Damage a crash cannot cause.
    Damaged {
        /// The segment (first index).
        segment: u64,
        /// Where.
        offset: u64,
        /// What is wrong.
        why: String,
    },
}

/// A sequential reader of records from a given index on.
pub struct Walker {
    layout: Layout,
    firsts: Vec<u64>,
    seg: usize,
    file: Option<File>,
    version: u32,
    file_len: u64,
    buf: Vec<u8>,
    buf_start: u64,
    offset: u64,
    index: u64,
    end: Option<WalkEnd>,
}

impl Walker {
    /// A walk over the segments `firsts` starting at record `index`, which
    /// stands at `offset` of segment `firsts[seg]` (use
    /// [`Walker::from_start`] to walk everything).
    pub fn new(layout: &Layout, firsts: Vec<u64>, seg: usize, offset: u64, index: u64) -> Walker {
        Walker {
            layout: layout.clone(),
            firsts,
            seg,
            file: None,
            version: 0,
            file_len: 0,
            buf: Vec::new(),
            buf_start: 0,
            offset,
            index,
            end: None,
        }
    }

    /// A walk over every segment from the first record.
    pub fn from_start(layout: &Layout, firsts: Vec<u64>) -> Walker {
        let index = firsts.first().copied().unwrap_or(0);
        Walker::new(layout, firsts, 0, HEADER_LEN as u64, index)
    }

    /// The index the next record will have.
    pub fn next_index(&self) -> u64 {
        self.index
    }

    /// How the walk ended (after [`Walker::next_record`] returned `None`).
    pub fn end(&self) -> Option<&WalkEnd> {
        self.end.as_ref()
    }

    /// The segment being read and the offset of the next byte.
    pub fn position(&self) -> (u64, u64) {
        (self.firsts.get(self.seg).copied().unwrap_or(0), self.offset)
    }

    /// The next record; `None` at the end (see [`Walker::end`]).
    pub fn next_record(&mut self) -> std::io::Result<Option<WalkRecord>> {
        loop {
            if self.end.is_some() || self.seg >= self.firsts.len() {
                self.end.get_or_insert(WalkEnd::Clean);
                return Ok(None);
            }
            if self.file.is_none() && !self.open_segment()? {
                return Ok(None);
            }
            if self.offset >= self.file_len {
                self.next_segment();
                continue;
            }
            match self.decode()? {
                Some((Some(rec), next)) => {
                    self.offset = next;
                    self.index += 1;
                    return Ok(Some(rec));
                }
                Some((None, next)) => self.offset = next,
                None => return Ok(None),
            }
        }
    }

    fn open_segment(&mut self) -> std::io::Result<bool> {
        let first = self.firsts[self.seg];
        let file = File::open(self.layout.segment(first))?;
        self.file_len = file.metadata()?.len();
        let mut head = vec![0u8; HEADER_LEN.min(self.file_len as usize)];
        file.read_exact_at(&mut head, 0)?;
        let Some(version) = record::header_version(&head, first) else {
            let torn = self.seg + 1 == self.firsts.len() && head.iter().all(|&b| b == 0);
            self.finish(
                torn,
                0,
                "the segment header is not a Vigil segment header for its first index".into(),
            );
            return Ok(false);
        };
        if first != self.index && self.offset == HEADER_LEN as u64 {
            self.finish(
                false,
                0,
                format!(
                    "the segment starts at index {first}, but the records before it end at index {}",
                    self.index
                ),
            );
            return Ok(false);
        }
        self.version = version;
        self.file = Some(file);
        self.buf.clear();
        self.buf_start = self.offset;
        Ok(true)
    }

    fn next_segment(&mut self) {
        self.seg += 1;
        self.file = None;
        self.offset = HEADER_LEN as u64;
    }

    fn is_last(&self) -> bool {
        self.seg + 1 == self.firsts.len()
    }

    /// Makes `[offset, offset + n)` readable from the buffer (as much of
    /// it as the file holds).
    fn fill(&mut self, n: usize) -> std::io::Result<()> {
        let have_end = self.buf_start + self.buf.len() as u64;
        let want_end = (self.offset + n as u64).min(self.file_len);
        if self.offset >= self.buf_start && want_end <= have_end {
            return Ok(());
        }
        let read_end = want_end.max(self.offset + CHUNK as u64).min(self.file_len);
        // The buffer is reused: a fresh one per chunk costs page faults.
        self.buf.resize((read_end - self.offset) as usize, 0);
        self.file
            .as_ref()
            .expect("a segment is open")
            .read_exact_at(&mut self.buf, self.offset)?;
        self.buf_start = self.offset;
        Ok(())
    }

    /// Decodes the item at `offset`: a record (or `None` for a mark) and
    /// the next offset; `None` when the walk ends here.
    fn decode(&mut self) -> std::io::Result<Option<(Option<WalkRecord>, u64)>> {
        self.fill(record::RECORD_HEADER_LEN)?;
        let at = (self.offset - self.buf_start) as usize;
        let need = match self.buf.get(at..at + 4) {
            Some(l) => {
                record::RECORD_HEADER_LEN
                    + u32::from_le_bytes(l.try_into().expect("4 bytes")) as usize
            }
            None => record::RECORD_HEADER_LEN,
        };
        self.fill(need)?;
        let at = (self.offset - self.buf_start) as usize;
        match record::decode_at(&self.buf, at, self.buf_start) {
            Ok((Item::Receipt { body, event }, next)) => {
                let rec = WalkRecord {
                    index: self.index,
                    segment: self.firsts[self.seg],
                    offset: self.offset,
                    body: body.to_vec(),
                    event: event.to_vec(),
                };
                Ok(Some((Some(rec), self.buf_start + next as u64)))
            }
            Ok((Item::Mark { records }, next)) => {
                if records != self.index {
                    let why = format!(
                        "a sync mark says {records} records came before it, but {} did",
                        self.index
                    );
                    self.finish(false, self.offset, why);
                    return Ok(None);
                }
                Ok(Some((None, self.buf_start + next as u64)))
            }
            Err(bad) => {
                let torn = self.is_torn()?;
                self.finish(torn, self.offset, bad.why);
                Ok(None)
            }
        }
    }

    /// Whether the bad record at `offset` is a torn write (see the module
    /// docs).
    fn is_torn(&mut self) -> std::io::Result<bool> {
        if !self.is_last() {
            return Ok(false);
        }
        let mut rest = vec![0u8; (self.file_len - self.offset) as usize];
        self.file
            .as_ref()
            .expect("a segment is open")
            .read_exact_at(&mut rest, self.offset)?;
        if self.version >= 2 {
            return Ok(record::mark_after(&rest, 0, self.offset).is_none());
        }
        if rest.iter().all(|&b| b == 0) {
            return Ok(true);
        }
        let framed_end = rest.get(..4).map(|l| {
            record::RECORD_HEADER_LEN + u32::from_le_bytes(l.try_into().expect("4 bytes")) as usize
        });
        Ok(framed_end.is_none_or(|e| e >= rest.len()))
    }

    fn finish(&mut self, torn: bool, offset: u64, why: String) {
        let segment = self.firsts[self.seg];
        self.end = Some(if torn {
            WalkEnd::Torn {
                segment,
                offset,
                why,
            }
        } else {
            WalkEnd::Damaged {
                segment,
                offset,
                why,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(layout: &Layout, first: u64, records: &[&[u8]], marks: bool) -> Vec<u64> {
        let mut data = record::header(first).to_vec();
        let mut offsets = Vec::new();
        for (i, body) in records.iter().enumerate() {
            if marks {
                record::encode_mark(data.len() as u64, first + i as u64, &mut data);
            }
            offsets.push(data.len() as u64);
            record::encode_receipt(body, b"event", &mut data);
        }
        std::fs::write(layout.segment(first), &data).unwrap();
        offsets
    }

    fn walk(layout: &Layout, firsts: Vec<u64>) -> (Vec<u64>, WalkEnd) {
        let mut w = Walker::from_start(layout, firsts);
        let mut seen = Vec::new();
        while let Some(r) = w.next_record().unwrap() {
            seen.push(r.index);
        }
        (seen, w.end().unwrap().clone())
    }

    #[test]
    fn torn_tails_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        std::fs::create_dir_all(layout.log_dir()).unwrap();
        segment(&layout, 0, &[b"a", b"b"], true);
        let offs = segment(&layout, 2, &[b"c", b"d", b"e"], true);
        assert_eq!(
            walk(&layout, vec![0, 2]),
            (vec![0, 1, 2, 3, 4], WalkEnd::Clean)
        );

        // The last record cut short, no mark after it: torn.
        let path = layout.segment(2);
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        let (seen, end) = walk(&layout, vec![0, 2]);
        assert_eq!(seen, [0, 1, 2, 3]);
        assert!(matches!(end, WalkEnd::Torn { offset, .. } if offset == offs[2]));

        // A bad record with a sync mark after it: damage.
        let mut bad = full.clone();
        bad[offs[1] as usize + 9] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(
            walk(&layout, vec![0, 2]).1,
            WalkEnd::Damaged { .. }
        ));

        // An inflated length in a record followed by a mark: damage.
        let mut inflated = full.clone();
        inflated[offs[0] as usize + 2] = 0x7f;
        std::fs::write(&path, &inflated).unwrap();
        assert!(matches!(
            walk(&layout, vec![0, 2]).1,
            WalkEnd::Damaged { .. }
        ));

        // Zeros in the middle of the last group, data after them: torn.
        let mut zeroed = full.clone();
        let last_mark = offs[2] as usize - record::MARK_LEN;
        zeroed.truncate(last_mark + record::MARK_LEN);
        zeroed.extend_from_slice(&[0u8; 100]);
        zeroed.extend_from_slice(b"more bytes written back before the zeros");
        std::fs::write(&path, &zeroed).unwrap();
        assert!(matches!(walk(&layout, vec![0, 2]).1, WalkEnd::Torn { .. }));

        // Damage in a sealed segment is damage.
        std::fs::write(&path, &full).unwrap();
        let first = layout.segment(0);
        let mut f0 = std::fs::read(&first).unwrap();
        let n = f0.len();
        f0.truncate(n - 2);
        std::fs::write(&first, &f0).unwrap();
        assert!(matches!(
            walk(&layout, vec![0, 2]).1,
            WalkEnd::Damaged { segment: 0, .. }
        ));
    }
}
