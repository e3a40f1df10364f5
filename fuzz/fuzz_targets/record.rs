//! The log's record decoder: a segment's bytes are walked record by record
//! as recovery and `vigil verify` do, and the input is also framed with a
//! correct length and CRC so that the payload decoding is reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::log::record::{decode_at, header_version, mark_after, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    // A segment starts with its file header, then records.
    let mut at = if header_version(data, 0).is_some() {
        HEADER_LEN
    } else {
        0
    };
    while at < data.len() {
        match decode_at(data, at, 0) {
            Ok((_, next)) => {
                assert!(next > at, "decoding always moves forward");
                at = next;
            }
            Err(_) => break,
        }
    }
    let _ = mark_after(data, 0, 0);
    let mut framed = Vec::with_capacity(data.len() + 8);
    framed.extend_from_slice(&(data.len() as u32).to_le_bytes());
    framed.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    framed.extend_from_slice(data);
    let _ = decode_at(&framed, 0, 0);
});
