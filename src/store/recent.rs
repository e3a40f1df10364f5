//! The newest durable records, kept in memory as the writer made them.
//!
//! Detection, hygiene and the response stage each follow the log a few
//! records behind the writer. Without this they would each read every
//! record back from its segment and parse its receipt again; with it they
//! share the writer's record (and the event fields the first of them
//! parses). A record enters only after its fdatasync, so a reader sees
//! exactly what the disk holds; older records are read from the disk as
//! before.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::view::LogRecord;

/// Memory the recent records may take by default.
pub const DEFAULT_RECENT_BYTES: usize = 16 << 20;

/// Bytes a record is counted for besides its body and event.
const RECORD_OVERHEAD: usize = 320;

/// The newest durable records, bounded by memory.
#[derive(Debug)]
pub struct Recent {
    ring: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    /// Index of `records[0]`.
    first: u64,
    records: VecDeque<Arc<LogRecord>>,
    bytes: usize,
    max_bytes: usize,
}

fn cost(r: &LogRecord) -> usize {
    r.body_jcs.len() + r.event.len() + RECORD_OVERHEAD
}

impl Recent {
    /// An empty set that keeps at most `max_bytes` of records (0 keeps
    /// none).
    pub fn new(max_bytes: usize) -> Recent {
        Recent {
            ring: Mutex::new(Ring {
                first: 0,
                records: VecDeque::new(),
                bytes: 0,
                max_bytes,
            }),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        // The ring holds no invariant a panicking holder could break
        // halfway that `push` does not repair.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds records that just became durable, in index order. Records that
    /// do not follow the newest one kept replace the whole set.
    pub fn push(&self, records: Vec<Arc<LogRecord>>) {
        let mut ring = self.ring();
        if ring.max_bytes == 0 {
            return;
        }
        for r in records {
            let next = ring.first + ring.records.len() as u64;
            if ring.records.is_empty() || r.index != next {
                ring.records.clear();
                ring.bytes = 0;
                ring.first = r.index;
            }
            ring.bytes += cost(&r);
            ring.records.push_back(r);
            while ring.bytes > ring.max_bytes {
                let Some(old) = ring.records.pop_front() else {
                    break;
                };
                ring.bytes -= cost(&old);
                ring.first += 1;
            }
        }
    }

    /// The record at `index`, when it is still kept.
    pub fn get(&self, index: u64) -> Option<Arc<LogRecord>> {
        let ring = self.ring();
        let at = index.checked_sub(ring.first)?;
        ring.records.get(usize::try_from(at).ok()?).cloned()
    }

    /// Records kept now.
    pub fn len(&self) -> usize {
        self.ring().records.len()
    }

    /// Whether none are kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::receipt::ReceiptBody;

    fn rec(index: u64, event_len: usize) -> Arc<LogRecord> {
        let body = ReceiptBody {
            index,
            ..ReceiptBody::default()
        };
        Arc::new(LogRecord::new(
            index,
            body,
            vec![b'x'; 80],
            vec![b'e'; event_len],
        ))
    }

    #[test]
    fn keeps_the_newest_records_within_its_bound_and_restarts_on_a_gap() {
        let per = cost(&rec(0, 600));
        let recent = Recent::new(per * 3);
        recent.push((0..5).map(|i| rec(i, 600)).collect());
        assert_eq!(recent.len(), 3);
        assert!(recent.get(1).is_none(), "evicted");
        assert_eq!(recent.get(4).map(|r| r.index), Some(4));
        assert!(recent.get(5).is_none(), "not written yet");
        recent.push(vec![rec(9, 600)]);
        assert_eq!(recent.len(), 1, "a gap starts over");
        assert!(recent.get(4).is_none());
        assert_eq!(recent.get(9).map(|r| r.index), Some(9));
    }

    #[test]
    fn a_zero_bound_keeps_nothing() {
        let recent = Recent::new(0);
        recent.push(vec![rec(0, 10)]);
        assert!(recent.is_empty());
        assert!(recent.get(0).is_none());
    }
}
