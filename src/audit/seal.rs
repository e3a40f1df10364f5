//! Sealed segments as Parquet: one file per table and sealed log segment,
//! encoded whole in memory and written to the [`ParquetStore`] (a local
//! folder, durably, or a bucket). The `receipts` file is written last: a
//! segment counts as sealed into Parquet once it exists. Files are
//! derived from the log and never trusted over it: a missing one is
//! written again.
//! Rows are sorted by agent and time and cut into row groups of
//! [`ROW_GROUP_ROWS`] with page statistics, and Bloom filters on the id
//! columns, so that filters on agent, time and ids skip most of a file.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::TimestampMillisecondType;
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
    let mut rows = Rows::with_capacity(match firsts.get(seg + 1) {
        Some(next) => usize::try_from(next - first).unwrap_or(0),
        None => 0,
    });
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
        let files = crate::background::run("vigil-seal", move || encode_segment(&l, &f, seg))
            .await
            .map_err(|source| AuditError::Read {
                segment: firsts[seg],
                source,
            })??;
        for (table, data) in files {
            store.put(table, firsts[seg], data).await?;
        }
        written += 1;
    }
    Ok(written)
}

/// The batch sorted by the table's sort columns (an agent id, then a
/// time; nulls first, ties in log order). Agent ids are ranked once, so
/// the sort compares integers instead of strings.
pub fn sorted(table: Table, batch: &RecordBatch) -> Result<RecordBatch, AuditError> {
    let [by, then] = table.sort_columns();
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .expect("sort columns are in the schema")
    };
    let agents = column(by).as_string::<i32>();
    let times = column(then).as_primitive::<TimestampMillisecondType>();
    let mut distinct: Vec<&str> = agents.iter().flatten().collect();
    distinct.sort_unstable();
    distinct.dedup();
    let rank: HashMap<&str, u32> = distinct.iter().zip(1..).map(|(a, r)| (*a, r)).collect();
    let mut keys: Vec<(u32, Option<i64>, u32)> = (0..batch.num_rows())
        .map(|i| {
            let agent = agents.is_valid(i).then(|| rank[agents.value(i)]);
            let time = times.is_valid(i).then(|| times.value(i));
            (agent.unwrap_or(0), time, i as u32)
        })
        .collect();
    keys.sort_unstable();
    let indices = UInt32Array::from_iter_values(keys.into_iter().map(|(_, _, i)| i));
    Ok(take_record_batch(batch, &indices)?)
}

/// One Parquet file of a table's rows.
pub fn encode(table: Table, batch: &RecordBatch) -> Result<Vec<u8>, AuditError> {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, StringArray, TimestampMillisecondArray, UInt64Array};
    use datafusion::arrow::compute::{lexsort_to_indices, take, SortColumn};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use proptest::prelude::*;

    proptest! {
        /// The ranked sort orders the sort columns as Arrow's lexsort
        /// does (nulls first), keeping ties in log order.
        #[test]
        fn ranked_sort_is_a_lexsort(
            rows in proptest::collection::vec(
                (proptest::option::of(0u8..6), proptest::option::of(0i64..4)),
                0..60,
            ),
        ) {
            let agents: StringArray = rows.iter().map(|(a, _)| a.map(|a| format!("agent-{a}"))).collect();
            let times: TimestampMillisecondArray = rows.iter().map(|(_, t)| *t).collect();
            let index = UInt64Array::from_iter_values(0..rows.len() as u64);
            let schema = Schema::new(vec![
                Field::new("log_index", DataType::UInt64, false),
                Field::new("agent_id", DataType::Utf8, true),
                Field::new("received_at", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            ]);
            let columns: Vec<ArrayRef> = vec![Arc::new(index), Arc::new(agents), Arc::new(times)];
            let batch = RecordBatch::try_new(Arc::new(schema), columns).unwrap();
            let got = sorted(Table::Receipts, &batch).unwrap();
            let keys: Vec<SortColumn> = ["agent_id", "received_at"]
                .iter()
                .map(|c| SortColumn { values: batch.column_by_name(c).unwrap().clone(), options: None })
                .collect();
            let want = lexsort_to_indices(&keys, None).unwrap();
            for c in ["agent_id", "received_at"] {
                let expected = take(batch.column_by_name(c).unwrap(), &want, None).unwrap();
                prop_assert_eq!(got.column_by_name(c).unwrap(), &expected);
            }
            let order = got.column_by_name("log_index").unwrap().as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
            for i in 1..got.num_rows() {
                let same = |c: &str| {
                    let col = got.column_by_name(c).unwrap();
                    col.slice(i - 1, 1) == col.slice(i, 1)
                };
                if same("agent_id") && same("received_at") {
                    prop_assert!(order.value(i - 1) < order.value(i), "ties keep log order");
                }
            }
        }
    }
}
