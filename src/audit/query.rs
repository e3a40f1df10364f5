//! Read-only SQL over the audit store with DataFusion: each log table is
//! its sealed Parquet files plus the tail in memory, so a query sees every
//! durable record; `quarantine` is read from the quarantine files.
//!
//! Only queries run: DDL, DML (`INSERT`, `COPY`) and statements (`SET`)
//! are refused. A query gets a time limit, a memory pool and a row limit;
//! going over any of them is an error that says which and how to narrow
//! the query, never a partial answer.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, UInt64Type};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::datasource::{provider_as_source, MemTable, TableProvider, ViewTable};
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::{CacheManager, CacheManagerConfig};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::{execute_stream, ExecutionPlan};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures_util::StreamExt;
use serde_json::Value as J;

use super::objects::{Listing, ParquetStore};
use super::quarantine_table;
use super::tables::{Table, LOG_TABLES};
use super::tail::Tail;
use crate::store::layout::Layout;
use crate::time::Timestamp;

/// What one query may use.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most rows in an answer.
    pub max_rows: usize,
    /// Longest a query may run.
    pub timeout: Duration,
    /// Most memory its operators may hold.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_rows: 10_000,
            timeout: Duration::from_secs(30),
            memory_bytes: 512 << 20,
        }
    }
}

/// A query's answer: column names and rows of JSON values (times as
/// `YYYY-MM-DDTHH:MM:SS.sssZ`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Answer {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows, each with one value per column.
    pub rows: Vec<Vec<J>>,
}

/// Why a query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Not a query, or not a valid one.
    #[error("{0}")]
    Refused(String),
    /// More rows than the limit.
    #[error(
        "the answer has more than {0} rows; add a LIMIT or narrower WHERE clause, or aggregate"
    )]
    TooManyRows(usize),
    /// It ran longer than the limit.
    #[error("the query ran longer than {0} s; narrow it by time (occurred_at, received_at) or agent_id, which the store prunes on")]
    TimedOut(u64),
    /// It needed more memory than the limit.
    #[error("the query needs more than the memory limit ({0}); aggregate, add a LIMIT or narrow the WHERE clause")]
    Memory(String),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] super::AuditError),
}

impl QueryError {
    /// Its error code in answers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::Refused(_) => "bad_query",
            QueryError::TooManyRows(_) => "row_limit",
            QueryError::TimedOut(_) => "time_limit",
            QueryError::Memory(_) => "memory_limit",
            QueryError::Store(_) => "store_unreadable",
        }
    }

    /// Whether the caller can fix it (400) rather than the server (500).
    pub fn is_callers(&self) -> bool {
        !matches!(self, QueryError::Store(_))
    }
}

fn refused(e: DataFusionError) -> QueryError {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(m) => QueryError::Memory(m.clone()),
        DataFusionError::External(inner) => QueryError::Refused(inner.to_string()),
        root => QueryError::Refused(root.to_string()),
    }
}

/// What a query reads: the sealed files the listing names below the
/// tail's start, and the tail's rows.
pub struct Snapshot<'a> {
    /// The data directory.
    pub layout: &'a Layout,
    /// Where the sealed files are.
    pub parquet: &'a ParquetStore,
    /// Which sealed files there are.
    pub listing: &'a Listing,
    /// The records after the sealed files.
    pub tail: &'a Tail,
    /// More tables, whole in memory (the inventory's).
    pub extra: &'a [(&'static str, RecordBatch)],
}

/// Runs one read-only SQL query.
pub async fn run(snap: &Snapshot<'_>, sql: &str, limits: Limits) -> Result<Answer, QueryError> {
    let ctx = context(snap, limits)?;
    let answer = async {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = ctx.sql_with_options(sql, options).await.map_err(refused)?;
        let columns: Vec<String> = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let plan = every_step_yields(df.create_physical_plan().await.map_err(refused)?)?;
        let mut stream = execute_stream(plan, ctx.task_ctx()).map_err(refused)?;
        let mut rows = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(refused)?;
            if rows.len() + batch.num_rows() > limits.max_rows {
                return Err(QueryError::TooManyRows(limits.max_rows));
            }
            push_rows(&batch, &mut rows);
        }
        Ok(Answer { columns, rows })
    };
    tokio::time::timeout(limits.timeout, answer)
        .await
        .map_err(|_| QueryError::TimedOut(limits.timeout.as_secs()))?
}

/// The plan with every operator's output made cooperative: after a tokio
/// budget of batches it yields, so that a cancelled query (a deadline
/// passed) stops at the next batch rather than after an operator's whole
/// loop (a cross join computes for minutes without yielding otherwise).
fn every_step_yields(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>, QueryError> {
    plan.transform_up(|node| {
        Ok(Transformed::yes(
            Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>
        ))
    })
    .map(|t| t.data)
    .map_err(refused)
}

/// The Parquet footers and file statistics read so far, kept across
/// queries (each query has its own runtime, for its memory limit): sealed
/// files never change under their name, and a bucket is then asked only
/// for the pages a query needs.
fn shared_caches() -> &'static CacheManagerConfig {
    static CACHES: OnceLock<CacheManagerConfig> = OnceLock::new();
    CACHES.get_or_init(|| {
        let config = CacheManagerConfig::default();
        match CacheManager::try_new(&config) {
            Ok(m) => config
                .with_file_metadata_cache(Some(m.get_file_metadata_cache()))
                .with_file_statistics_cache(m.get_file_statistic_cache()),
            Err(_) => config,
        }
    })
}

/// A session with the tables registered.
fn context(snap: &Snapshot<'_>, limits: Limits) -> Result<SessionContext, QueryError> {
    // No spilling: a query that needs more than its memory is refused
    // rather than writing temporary files beside the log.
    let runtime = RuntimeEnvBuilder::new()
        .with_cache_manager(shared_caches().clone())
        .with_memory_limit(limits.memory_bytes, 1.0)
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()
        .map_err(refused)?;
    let mut config = SessionConfig::new().with_target_partitions(2);
    let parquet = &mut config.options_mut().execution.parquet;
    parquet.pushdown_filters = true;
    parquet.reorder_filters = true;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    snap.parquet.register(&ctx);
    for table in LOG_TABLES {
        let provider = log_table(snap, table)?;
        ctx.register_table(table.name(), provider)
            .map_err(refused)?;
    }
    for (name, batch) in snap.extra {
        let table =
            MemTable::try_new(batch.schema(), vec![vec![batch.clone()]]).map_err(refused)?;
        ctx.register_table(*name, Arc::new(table))
            .map_err(refused)?;
    }
    let quarantine = quarantine_table(snap.layout)?;
    ctx.register_table("quarantine", Arc::new(quarantine))
        .map_err(refused)?;
    Ok(ctx)
}

/// A log table: its sealed files and the tail, as one view.
fn log_table(snap: &Snapshot<'_>, table: Table) -> Result<Arc<dyn TableProvider>, QueryError> {
    let schema = table.schema();
    let tail =
        MemTable::try_new(schema.clone(), vec![snap.tail.batches(table)]).map_err(refused)?;
    let files = snap.listing.files(table, snap.tail.from());
    if files.is_empty() {
        return Ok(Arc::new(tail));
    }
    let urls = files
        .iter()
        .map(|&first| snap.parquet.url(table, first))
        .collect::<Result<Vec<_>, _>>()?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    let sealed = ListingTable::try_new(config).map_err(refused)?;
    let plan = LogicalPlanBuilder::scan(
        format!("{}_sealed", table.name()),
        provider_as_source(Arc::new(sealed)),
        None,
    )
    .and_then(|b| {
        let tail_plan = LogicalPlanBuilder::scan(
            format!("{}_tail", table.name()),
            provider_as_source(Arc::new(tail)),
            None,
        )?
        .build()?;
        b.union(tail_plan)?.build()
    })
    .map_err(refused)?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// Appends a batch's rows as JSON values.
fn push_rows(batch: &RecordBatch, rows: &mut Vec<Vec<J>>) {
    let columns: Vec<Vec<J>> = batch.columns().iter().map(column_values).collect();
    for i in 0..batch.num_rows() {
        rows.push(columns.iter().map(|c| c[i].clone()).collect());
    }
}

/// One column as JSON values: numbers as numbers, times as contract
/// timestamps, anything else as its display text.
fn column_values(array: &ArrayRef) -> Vec<J> {
    let n = array.len();
    // Nulls of the array the values come from: a cast turns what does not
    // fit into null, and a NullArray's nulls are only logical.
    let mut source = array.clone();
    let ty = array.data_type();
    let values: Vec<J> = if matches!(ty, DataType::UInt64) {
        let a = array.as_primitive::<UInt64Type>();
        (0..n).map(|i| J::from(a.value(i))).collect()
    } else if ty.is_integer() {
        source = cast(array, &DataType::Int64).expect("integers cast to Int64");
        let a = source.as_primitive::<Int64Type>();
        (0..n).map(|i| J::from(a.value(i))).collect()
    } else if ty.is_floating() || ty.is_decimal() {
        source = cast(array, &DataType::Float64).expect("numbers cast to Float64");
        let a = source.as_primitive::<Float64Type>();
        (0..n)
            .map(|i| serde_json::Number::from_f64(a.value(i)).map_or(J::Null, J::Number))
            .collect()
    } else if matches!(ty, DataType::Boolean) {
        let a = array.as_boolean();
        (0..n).map(|i| J::Bool(a.value(i))).collect()
    } else if matches!(ty, DataType::Timestamp(_, _)) {
        let ms = DataType::Timestamp(TimeUnit::Millisecond, None);
        source = cast(array, &ms).expect("times cast to milliseconds");
        let a = source.as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
        (0..n)
            .map(|i| J::String(Timestamp(a.value(i) as i128 * 1_000_000).to_rfc3339_millis()))
            .collect()
    } else {
        let fmt = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())
            .expect("every type has a display form");
        (0..n)
            .map(|i| J::String(fmt.value(i).to_string()))
            .collect()
    };
    let nulls = source.logical_nulls();
    let is_null = |i: usize| nulls.as_ref().is_some_and(|b| b.is_null(i));
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| if is_null(i) { J::Null } else { v })
        .collect()
}

/// An answer as aligned text: a header, a rule, one line per row (`NULL`
/// for nulls, strings unquoted).
pub fn table_text(answer: &Answer) -> String {
    let cell = |v: &J| match v {
        J::Null => "NULL".to_string(),
        J::String(s) => s.clone(),
        other => other.to_string(),
    };
    let rows: Vec<Vec<String>> = answer
        .rows
        .iter()
        .map(|r| r.iter().map(cell).collect())
        .collect();
    let mut widths: Vec<usize> = answer.columns.iter().map(|c| c.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join(" | ").trim_end().to_string()
    };
    let mut out = vec![line(&answer.columns)];
    out.push(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-"),
    );
    out.extend(rows.iter().map(|r| line(r)));
    out.push(format!("({} rows)", rows.len()));
    out.join("\n")
}
