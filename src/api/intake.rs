//! Bounds the request bodies being read, framed and judged at once, so that
//! many concurrent large bodies cannot take memory without bound: each
//! ingest request holds permits for its size (its `Content-Length`, or the
//! whole `max_body_bytes` when the length is unknown or the body is
//! compressed) until it is answered. A request that cannot be admitted
//! within [`ADMIT_WAIT`] is answered 503.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a request waits for room before it is answered busy.
pub const ADMIT_WAIT: Duration = Duration::from_secs(30);

/// Permits are counted in KiB.
const UNIT: usize = 1024;

/// The shared bound on bytes in flight.
#[derive(Debug, Clone)]
pub struct Intake {
    permits: Arc<Semaphore>,
    total_units: usize,
    max_body_bytes: usize,
}

/// No room for another body within [`ADMIT_WAIT`].
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("too many request bodies are being processed at once; retry in a moment")]
pub struct Busy;

impl Intake {
    /// A bound of `max_inflight_bytes` for bodies of at most `max_body_bytes`.
    pub fn new(max_inflight_bytes: usize, max_body_bytes: usize) -> Intake {
        let total_units = max_inflight_bytes.max(max_body_bytes).div_ceil(UNIT);
        Intake {
            permits: Arc::new(Semaphore::new(total_units)),
            total_units,
            max_body_bytes,
        }
    }

    /// Waits for room for the body a request announces; the permit is held
    /// until dropped (when the request is answered).
    pub async fn admit(&self, headers: &HeaderMap) -> Result<OwnedSemaphorePermit, Busy> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let compressed = headers.contains_key(header::CONTENT_ENCODING);
        let bytes = match declared {
            Some(n) if !compressed => n.min(self.max_body_bytes),
            _ => self.max_body_bytes,
        };
        let units = bytes.div_ceil(UNIT).clamp(1, self.total_units) as u32;
        tokio::time::timeout(ADMIT_WAIT, self.permits.clone().acquire_many_owned(units))
            .await
            .map_err(|_| Busy)?
            .map_err(|_| Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_intake_answers_busy_and_frees_room_when_answered() {
        let intake = Intake::new(4096, 2048);
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, "2048".parse().unwrap());
        let a = intake.admit(&h).await.unwrap();
        let _b = intake.admit(&h).await.unwrap();
        assert!(intake.admit(&h).await.is_err(), "no room after the wait");
        drop(a);
        assert!(intake.admit(&h).await.is_ok());
    }
}
