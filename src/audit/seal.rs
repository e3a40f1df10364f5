//! Sealed segments as Parquet: `DIR/parquet/<table>/<first index, 20
//! digits>.parquet`, one file per table and sealed log segment.
//!
//! A file is written whole in memory, then durably (temporary name,
//! fdatasync, rename, directory sync), so a crash leaves either the whole
//! file or none. The `receipts` file is written last: a segment counts as
//! sealed into Parquet once it exists. Files are derived from the log and
//! never trusted over it: a missing or unreadable one is written again.
//! Rows are sorted by agent and time and cut into row groups of
//! [`ROW_GROUP_ROWS`] with page statistics, and Bloom filters on the id
//! columns, so that filters on agent, time and ids skip most of a file.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::{lexsort_to_indices, take_record_batch, SortColumn};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::schema::types::ColumnPath;

use super::tables::{Rows, Table};
use super::AuditError;
use crate::store::fsutil::{create_dir_durably, write_file_durably};
use crate::store::layout::Layout;
use crate::store::walk::Walker;

/// Rows per Parquet row group.
pub const ROW_GROUP_ROWS: usize = 16 * 1024;

/// The audit store's directory: `DIR/parquet`.
pub fn root(layout: &Layout) -> PathBuf {
    layout.root().join("parquet")
}

/// The file of `table` for the segment starting at `first`.
pub fn file(layout: &Layout, table: Table, first: u64) -> PathBuf {
    root(layout)
        .join(table.name())
        .join(format!("{first:020}.parquet"))
}

/// Where the sealed Parquet files end: the first index not covered by a
/// contiguous run of sealed segments from the log's start. `firsts` are
/// the log's segments; the last one is active and never sealed.
pub fn sealed_upto(layout: &Layout, firsts: &[u64]) -> u64 {
    let Some((&active, sealed)) = firsts.split_last() else {
        return 0;
    };
    sealed
        .iter()
        .copied()
        .find(|&first| !file(layout, Table::Receipts, first).is_file())
        .unwrap_or(active)
}

/// The sealed files of `table` below `upto`, in log order.
pub fn files(layout: &Layout, table: Table, firsts: &[u64], upto: u64) -> Vec<PathBuf> {
    firsts
        .iter()
        .take_while(|&&f| f < upto)
        .map(|&f| file(layout, table, f))
        .filter(|p| p.is_file())
        .collect()
}

/// Reads every record of segment `firsts[seg]` into rows.
pub fn read_segment(layout: &Layout, firsts: &[u64], seg: usize) -> Result<Rows, AuditError> {
    let first = firsts[seg];
    let end = firsts.get(seg + 1).copied().unwrap_or(u64::MAX);
    let mut walker = Walker::new(
        layout,
        firsts.to_vec(),
        seg,
        crate::log::record::HEADER_LEN as u64,
        first,
    );
    let mut rows = Rows::default();
    while walker.next_index() < end {
        let Some(rec) = walker.next_record().map_err(AuditError::read(first))? else {
            break;
        };
        let body = super::body_of(&rec)?;
        rows.push(&body, &rec.event);
    }
    Ok(rows)
}

/// Writes the Parquet files of sealed segment `firsts[seg]`; returns the
/// bytes written.
pub fn seal_segment(layout: &Layout, firsts: &[u64], seg: usize) -> Result<u64, AuditError> {
    let first = firsts[seg];
    let mut rows = read_segment(layout, firsts, seg)?;
    let mut bytes = 0;
    for (table, batch) in rows.finish() {
        if batch.num_rows() == 0 && table != Table::Receipts {
            continue;
        }
        let path = file(layout, table, first);
        let dir = path.parent().expect("a table file has a directory");
        create_dir_durably(&root(layout)).map_err(AuditError::write(dir))?;
        create_dir_durably(dir).map_err(AuditError::write(dir))?;
        let data = encode(table, &sorted(table, &batch)?)?;
        bytes += data.len() as u64;
        write_file_durably(&path, &data, 0o644).map_err(AuditError::write(&path))?;
    }
    Ok(bytes)
}

/// Seals every sealed segment that has no Parquet files yet (all but the
/// last of `firsts`), until `stopping` says so; returns how many it wrote.
pub fn catch_up(
    layout: &Layout,
    firsts: &[u64],
    stopping: &dyn Fn() -> bool,
) -> Result<usize, AuditError> {
    let mut written = 0;
    for seg in 0..firsts.len().saturating_sub(1) {
        if stopping() {
            break;
        }
        if !file(layout, Table::Receipts, firsts[seg]).is_file() {
            seal_segment(layout, firsts, seg)?;
            written += 1;
        }
    }
    Ok(written)
}

/// The batch sorted by the table's sort columns.
pub fn sorted(table: Table, batch: &RecordBatch) -> Result<RecordBatch, AuditError> {
    let keys: Vec<SortColumn> = table
        .sort_columns()
        .iter()
        .map(|c| SortColumn {
            values: batch
                .column_by_name(c)
                .expect("sort columns are in the schema")
                .clone(),
            options: None,
        })
        .collect();
    let indices = lexsort_to_indices(&keys, None)?;
    Ok(take_record_batch(batch, &indices)?)
}

/// One Parquet file of a table's rows.
pub fn encode(table: Table, batch: &RecordBatch) -> Result<Vec<u8>, AuditError> {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    for c in table.bloom_columns() {
        props = props.set_column_bloom_filter_enabled(ColumnPath::from(*c), true);
    }
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, Arc::clone(&batch.schema()), Some(props.build()))?;
    w.write(batch)?;
    w.close()?;
    Ok(out)
}
