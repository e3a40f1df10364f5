//! Ingest sources: turning what arrives into pipeline items.
//!
//! - [`body`]: `POST /v1/events` bodies (one event, a JSON array, NDJSON).
//! - [`hec`]: Splunk HEC bodies (concatenated envelopes, gzip).
//!
//! Each source only frames input; judging and receipts are the pipeline's.

pub mod body;
pub mod hec;
#[cfg(feature = "server")]
pub mod kafka;

use std::io::Read;

/// Decompresses a gzip body, refusing more than `limit` bytes of output
/// (a small body can inflate to gigabytes).
pub fn gunzip_limited(data: &[u8], limit: usize) -> Result<Vec<u8>, GunzipError> {
    let mut out = Vec::new();
    let mut dec = flate2::read::GzDecoder::new(data).take(limit as u64 + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| GunzipError::Invalid(e.to_string()))?;
    if out.len() > limit {
        return Err(GunzipError::TooLarge(limit));
    }
    Ok(out)
}

/// Why a gzip body was refused.
#[derive(Debug, thiserror::Error)]
pub enum GunzipError {
    /// Not gzip.
    #[error("the body is not valid gzip ({0}); send it uncompressed or fix Content-Encoding")]
    Invalid(String),
    /// Inflates beyond the limit.
    #[error("the body inflates to more than {0} bytes; send smaller batches")]
    TooLarge(usize),
}
