//! The framing of log segments, without I/O: what the writer appends and
//! what every reader (recovery, `vigil verify`, cursors) decodes.
//!
//! ```text
//! header  "VIGILSEG" | u32 version | u64 first index | u32 CRC-32 of the 20 bytes before
//! record  u32 payload length | u32 CRC-32 of payload | payload
//! payload 1 (receipt) | u32 body length | receipt body JCS | event bytes as sent
//!       | 2 (sync mark) | u64 this record's offset | u64 records before it
//! ```
//!
//! All integers are little-endian. Version 2 segments carry sync marks:
//! the writer starts every group it appends after an fdatasync with a
//! mark, so a mark at offset M says "every byte before M was synced" (and
//! an idle writer appends a lone mark after its last group). Recovery uses
//! that to tell a torn write (only bytes after the last mark can be torn)
//! from damage (a bad record with a valid mark after it). Version 1
//! segments (written before marks existed) are read, never appended to.

/// The segment magic.
pub const MAGIC: &[u8; 8] = b"VIGILSEG";
/// The version this build writes.
pub const VERSION: u32 = 2;
/// Bytes in a segment header.
pub const HEADER_LEN: usize = 24;
/// Bytes in a record header (length and CRC).
pub const RECORD_HEADER_LEN: usize = 8;
const KIND_RECEIPT: u8 = 1;
const KIND_MARK: u8 = 2;
const MARK_PAYLOAD_LEN: usize = 17;
/// Bytes in a framed sync mark.
pub const MARK_LEN: usize = RECORD_HEADER_LEN + MARK_PAYLOAD_LEN;

/// A segment header for `first_index`, in the current version.
pub fn header(first_index: u64) -> [u8; HEADER_LEN] {
    header_of(VERSION, first_index)
}

fn header_of(version: u32, first_index: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12..20].copy_from_slice(&first_index.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The version of a segment whose header is `bytes`, if it is a valid
/// header for `first_index`.
pub fn header_version(bytes: &[u8], first_index: u64) -> Option<u32> {
    let h = bytes.get(..HEADER_LEN)?;
    [1, VERSION]
        .into_iter()
        .find(|&v| h == header_of(v, first_index))
}

fn frame(payload_parts: &[&[u8]], out: &mut Vec<u8>) -> usize {
    let len: usize = payload_parts.iter().map(|p| p.len()).sum();
    let start = out.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    for p in payload_parts {
        out.extend_from_slice(p);
    }
    let crc = crc32fast::hash(&out[start + RECORD_HEADER_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// Appends a framed receipt record to `out`; returns its framed length.
pub fn encode_receipt(body: &[u8], event: &[u8], out: &mut Vec<u8>) -> u64 {
    let body_len = (body.len() as u32).to_le_bytes();
    frame(&[&[KIND_RECEIPT], &body_len, body, event], out) as u64
}

/// Appends a framed sync mark that will stand at `offset` in its segment,
/// after `records` records of the log.
pub fn encode_mark(offset: u64, records: u64, out: &mut Vec<u8>) {
    frame(
        &[&[KIND_MARK], &offset.to_le_bytes(), &records.to_le_bytes()],
        out,
    );
}

/// One decoded record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// A receipt and the event it is for.
    Receipt {
        /// The receipt body's JCS bytes (what the leaf hash covers).
        body: &'a [u8],
        /// The event's bytes as received.
        event: &'a [u8],
    },
    /// A sync mark: every byte before it was synced.
    Mark {
        /// Records in the log before it.
        records: u64,
    },
}

/// Why the bytes at an offset are not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    /// Offset of the record header.
    pub offset: usize,
    /// What is wrong.
    pub why: String,
}

/// Decodes the record at `offset` of `data`, bytes of a segment that start
/// at byte `base` of the file; returns it and the offset (in `data`) of
/// the next one.
pub fn decode_at(data: &[u8], offset: usize, base: u64) -> Result<(Item<'_>, usize), Bad> {
    let bad = |why: String| Bad { offset, why };
    let rest = &data[offset..];
    if rest.len() < RECORD_HEADER_LEN {
        return Err(bad(format!(
            "a record header cut short ({} bytes)",
            rest.len()
        )));
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    let Some(payload) = rest.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len) else {
        return Err(bad(format!(
            "a record of {len} bytes with only {} present",
            rest.len() - RECORD_HEADER_LEN
        )));
    };
    if crc32fast::hash(payload) != crc {
        return Err(bad("the record's CRC-32 does not match its bytes".into()));
    }
    let next = offset + RECORD_HEADER_LEN + len;
    match payload.first() {
        Some(&KIND_RECEIPT) if payload.len() >= 5 => {
            let body_len = u32::from_le_bytes(payload[1..5].try_into().expect("4 bytes")) as usize;
            if 5 + body_len > payload.len() {
                return Err(bad("the receipt body length runs past the record".into()));
            }
            let item = Item::Receipt {
                body: &payload[5..5 + body_len],
                event: &payload[5 + body_len..],
            };
            Ok((item, next))
        }
        Some(&KIND_MARK) if payload.len() == MARK_PAYLOAD_LEN => {
            let at = u64::from_le_bytes(payload[1..9].try_into().expect("8 bytes"));
            let here = base + offset as u64;
            if at != here {
                return Err(bad(format!(
                    "a sync mark for offset {at} stands at offset {here}"
                )));
            }
            let records = u64::from_le_bytes(payload[9..17].try_into().expect("8 bytes"));
            Ok((Item::Mark { records }, next))
        }
        _ => Err(bad("the record payload has an unknown kind".into())),
    }
}

/// Whether a valid sync mark stands anywhere in `data` (bytes of a segment
/// from file offset `base`) after `from`: proof that the bytes before it
/// were synced, so a bad record before it is damage, not a torn write.
pub fn mark_after(data: &[u8], from: usize, base: u64) -> Option<usize> {
    let len = (MARK_PAYLOAD_LEN as u32).to_le_bytes();
    let mut at = from + 1;
    while at + MARK_LEN <= data.len() {
        if data[at..at + 4] == len && data[at + RECORD_HEADER_LEN] == KIND_MARK {
            if let Ok((Item::Mark { .. }, _)) = decode_at(data, at, base) {
                return Some(at);
            }
        }
        at += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_marks_round_trip() {
        let mut seg = header(5).to_vec();
        assert_eq!(header_version(&seg, 5), Some(2));
        assert_eq!(header_version(&seg, 6), None);
        let first = seg.len();
        encode_receipt(b"body", b"event", &mut seg);
        let mark_at = seg.len();
        encode_mark(mark_at as u64, 6, &mut seg);
        let (item, next) = decode_at(&seg, first, 0).unwrap();
        assert_eq!(
            item,
            Item::Receipt {
                body: b"body",
                event: b"event"
            }
        );
        assert_eq!(next, mark_at);
        let (item, next) = decode_at(&seg, mark_at, 0).unwrap();
        assert_eq!(item, Item::Mark { records: 6 });
        assert_eq!(next, seg.len());
        assert_eq!(mark_after(&seg, first, 0), Some(mark_at));
        assert_eq!(mark_after(&seg, mark_at, 0), None);
        // A mark copied to another offset is not a mark there.
        let copy = seg[mark_at..].to_vec();
        seg.extend_from_slice(&copy);
        assert!(decode_at(&seg, mark_at + MARK_LEN, 0).is_err());
        assert_eq!(mark_after(&seg, mark_at, 0), None);
    }

    #[test]
    fn damage_is_described() {
        let mut seg = header(0).to_vec();
        encode_receipt(b"body", b"event", &mut seg);
        let mut flipped = seg.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(decode_at(&flipped, HEADER_LEN, 0)
            .unwrap_err()
            .why
            .contains("CRC"));
        assert!(decode_at(&seg[..seg.len() - 2], HEADER_LEN, 0)
            .unwrap_err()
            .why
            .contains("only"));
    }
}
