//! The records after the sealed Parquet files, as rows in memory, so that
//! queries see the whole log up to its durable end. Bounded by one active
//! segment; read incrementally, one walk from where the last read ended.

use datafusion::arrow::array::RecordBatch;

use super::tables::{Rows, Table};
use super::AuditError;
use crate::store::layout::Layout;
use crate::store::walk::Walker;

/// Rows of the records from `from` (a segment's first index) on.
#[derive(Clone)]
pub struct Tail {
    from: u64,
    next: u64,
    position: (u64, u64),
    batches: Vec<(Table, RecordBatch)>,
}

impl Tail {
    /// An empty tail starting at `from`, the first index of a segment.
    pub fn new(from: u64) -> Tail {
        Tail {
            from,
            next: from,
            position: (from, crate::log::record::HEADER_LEN as u64),
            batches: Vec::new(),
        }
    }

    /// Where it starts.
    pub fn from(&self) -> u64 {
        self.from
    }

    /// Adds the records from where it ended up to `end` (exclusive; the
    /// durable size, or `u64::MAX` to read to the end of the files).
    pub fn extend(&mut self, layout: &Layout, firsts: &[u64], end: u64) -> Result<(), AuditError> {
        let Some(seg) = firsts.iter().position(|&f| f == self.position.0) else {
            return Ok(()); // no segment yet
        };
        if self.next >= end {
            return Ok(());
        }
        let mut walker = Walker::new(layout, firsts.to_vec(), seg, self.position.1, self.next);
        let mut rows = Rows::default();
        while walker.next_index() < end {
            let Some(rec) = walker
                .next_record()
                .map_err(AuditError::read(self.position.0))?
            else {
                break; // the end of what is written (a torn tail is not read)
            };
            rows.push_row(&super::row_of(&rec)?, &rec.event);
            self.next = rec.index + 1;
            self.position = walker.position();
        }
        if !rows.is_empty() {
            self.batches.extend(rows.finish());
        }
        Ok(())
    }

    /// Its batches of `table`.
    pub fn batches(&self, table: Table) -> Vec<RecordBatch> {
        self.batches
            .iter()
            .filter(|(t, b)| *t == table && b.num_rows() > 0)
            .map(|(_, b)| b.clone())
            .collect()
    }
}
