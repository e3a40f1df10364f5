//! Sealed segments as Parquet: one file per table and sealed log segment,
//! encoded whole in memory and written to the [`ParquetStore`] (a local
//! folder, durably, or a bucket). The `receipts` file is written last: a
//! segment counts as sealed into Parquet once it exists. Files are
//! derived from the log and never trusted over it: a missing one is
//! written again.
//! Rows are sorted by agent and time and cut into row groups of
//! [`ROW_GROUP_ROWS`] with page statistics, and Bloom filters on the id
//! columns, so that filters on agent, time and ids skip most of a file.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::{lexsort_to_indices, take_record_batch, SortColumn};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::schema::types::ColumnPath;

use super::objects::ParquetStore;
use super::tables::{Rows, Table};
use super::AuditError;
use crate::shutdown::Stop;
use crate::store::layout::Layout;
use crate::store::walk::Walker;

/// Rows per Parquet row group.
pub const ROW_GROUP_ROWS: usize = 16 * 1024;

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
        rows.push_row(&super::row_of(&rec)?, &rec.event);
    }
    Ok(rows)
}

/// The Parquet files of sealed segment `firsts[seg]`, `receipts` last
/// (its file marks the segment sealed). Tables with no rows have no file,
/// but for `receipts`.
pub fn encode_segment(
    layout: &Layout,
    firsts: &[u64],
    seg: usize,
) -> Result<Vec<(Table, Vec<u8>)>, AuditError> {
    let mut files = Vec::new();
    for (table, batch) in read_segment(layout, firsts, seg)?.finish() {
        if batch.num_rows() > 0 || table == Table::Receipts {
            files.push((table, encode(table, &sorted(table, &batch)?)?));
        }
    }
    files.sort_by_key(|(t, _)| *t == Table::Receipts);
    Ok(files)
}

/// Writes the files of every sealed segment (all but the last of
/// `firsts`) that has none yet, until `stop`; returns how many segments
/// it wrote.
pub async fn catch_up(
    store: &ParquetStore,
    layout: &Layout,
    firsts: &[u64],
    stop: &Stop,
) -> Result<usize, AuditError> {
    let listing = store.list(&[Table::Receipts]).await?;
    let mut written = 0;
    for seg in 0..firsts.len().saturating_sub(1) {
        if stop.is_stopped() {
            break;
        }
        if listing.is_sealed(firsts[seg]) {
            continue;
        }
        let (l, f) = (layout.clone(), firsts.to_vec());
        let files = tokio::task::spawn_blocking(move || encode_segment(&l, &f, seg))
            .await
            .map_err(|e| AuditError::Read {
                segment: firsts[seg],
                source: std::io::Error::other(e),
            })??;
        for (table, data) in files {
            store.put(table, firsts[seg], data).await?;
        }
        written += 1;
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
