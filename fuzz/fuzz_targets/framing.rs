//! Request framing: NDJSON, JSON arrays, concatenated Splunk HEC envelopes
//! and gzip bodies never panic, and never return more items than asked.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use vigil::ingest::{body, gunzip_limited, hec};

const MAX: usize = 64;

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    for ct in [Some("application/x-ndjson"), Some("application/json"), None] {
        if let Ok(items) = body::split_body(body.clone(), ct, MAX) {
            assert!(items.len() <= MAX);
        }
    }
    if let Ok(batch) = hec::split_hec(&body, MAX) {
        assert!(batch.items.len() <= MAX + 1);
    }
    if let Ok(out) = gunzip_limited(data, 1 << 20) {
        assert!(out.len() <= 1 << 20);
    }
});
