//! The columnar audit store: sealed log segments as Parquet, queried with
//! DataFusion together with the tail not yet sealed (contract section 5,
//! `POST /v1/query`; section 8, `vigil query`).
//!
//! - [`tables`]: the tables' schemas and the rows a record adds.
//! - [`seal`]: a sealed segment's Parquet files.
//! - [`objects`]: where they live, a local folder or an S3 bucket.
//! - [`tail`]: the unsealed records as rows in memory.
//! - [`query`]: read-only SQL with time, memory and row limits.
//! - [`export`]: a time range as a bundle auditors verify offline.
//!
//! The store is derived from the log and never trusted over it: its files
//! can be deleted at any time and are written again from the segments.

pub mod export;
pub mod objects;
pub mod query;
pub mod report;
pub mod seal;
pub mod tables;
pub mod tail;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use datafusion::arrow::array::{Int64Builder, StringBuilder, TimestampMillisecondBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::datasource::MemTable;
use datafusion::parquet::errors::ParquetError;

use crate::log::receipt::ReceiptBody;
use crate::shutdown::Stop;
use crate::store::layout::Layout;
use crate::store::view::LogView;
use crate::store::walk::Walker;
use objects::ParquetStore;
use query::{Answer, Limits, QueryError, Snapshot};
use tables::LOG_TABLES;
use tail::Tail;

/// Why the audit store cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A log segment could not be read.
    #[error("cannot read log segment {segment}: {source}")]
    Read {
        /// The segment's first index.
        segment: u64,
        /// The error.
        source: std::io::Error,
    },
    /// A record's receipt body does not parse (the log is damaged: run
    /// `vigil verify`).
    #[error("record {index} has a receipt body that does not parse ({why}); run `vigil verify` on the data directory")]
    Record {
        /// Its index.
        index: u64,
        /// What is wrong.
        why: String,
    },
    /// A Parquet file could not be written.
    #[error("cannot write {path}: {source}; check the disk and the data directory's permissions")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Arrow refused the rows.
    #[error("cannot build the columns: {0}")]
    Arrow(#[from] ArrowError),
    /// The audit store's URL is not one Vigil can use.
    #[error("cannot use {url:?} as the audit store: {why}")]
    StoreUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// The object store refused a request.
    #[error(
        "cannot {what} {at}: {source}; check the bucket, its endpoint and the AWS_* credentials"
    )]
    Objects {
        /// The request: "list" or "write".
        what: &'static str,
        /// The object or folder.
        at: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// Parquet refused the rows.
    #[error("cannot encode Parquet: {0}")]
    Parquet(#[from] ParquetError),
}

impl AuditError {
    fn read(segment: u64) -> impl FnOnce(std::io::Error) -> AuditError {
        move |source| AuditError::Read { segment, source }
    }

    fn write(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
        move |source| AuditError::Write {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The row of a record's receipt, borrowed from its body's bytes.
fn row_of(rec: &crate::store::walk::WalkRecord) -> Result<tables::ReceiptRow<'_>, AuditError> {
    tables::ReceiptRow::parse(&rec.body).map_err(|e| AuditError::Record {
        index: rec.index,
        why: e.to_string(),
    })
}

/// The receipt body of a record walked from the log.
fn body_of(rec: &crate::store::walk::WalkRecord) -> Result<ReceiptBody, AuditError> {
    serde_json::from_slice(&rec.body).map_err(|e| AuditError::Record {
        index: rec.index,
        why: e.to_string(),
    })
}

/// Most quarantined entries the `quarantine` table shows (newest first).
const QUARANTINE_ROWS: usize = 1_000_000;

/// The `quarantine` table, read from the quarantine files.
fn quarantine_table(layout: &Layout) -> Result<MemTable, QueryError> {
    let (entries, _) = crate::store::quarantine::list(&layout.quarantine_dir(), QUARANTINE_ROWS)
        .map_err(|source| AuditError::Read { segment: 0, source })?;
    let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
    let schema = Arc::new(Schema::new(vec![
        Field::new("received_at", ts, true),
        Field::new("source", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("sha256", DataType::Utf8, false),
        Field::new("size", DataType::Int64, false),
    ]));
    let mut at = TimestampMillisecondBuilder::new();
    let mut text: [StringBuilder; 4] = Default::default();
    let mut size = Int64Builder::new();
    for e in &entries {
        at.append_option(
            crate::time::Timestamp::parse_event_time(&e.received_at)
                .map(|t| (t.0 / 1_000_000) as i64),
        );
        for (b, v) in text
            .iter_mut()
            .zip([&e.source, &e.reason, &e.error, &e.sha256])
        {
            b.append_value(v);
        }
        size.append_value(e.size as i64);
    }
    let mut columns: Vec<datafusion::arrow::array::ArrayRef> = vec![Arc::new(at.finish())];
    columns.extend(text.iter_mut().map(|b| Arc::new(b.finish()) as _));
    columns.push(Arc::new(size.finish()));
    let batch = datafusion::arrow::array::RecordBatch::try_new(schema.clone(), columns)
        .map_err(AuditError::from)?;
    MemTable::try_new(schema, vec![vec![batch]]).map_err(|e| QueryError::Refused(e.to_string()))
}

/// The runtime queries run on, apart from ingest's: two worker threads.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vigil-query")
            .enable_all()
            .build()
            .expect("the query runtime starts")
    })
}

/// A server's audit store: queries over its live log.
pub struct AuditStore {
    view: LogView,
    parquet: ParquetStore,
    tail: Arc<Mutex<Tail>>,
}

impl AuditStore {
    /// The store of the log `view` reads, with its sealed files in
    /// `parquet`.
    pub fn new(view: LogView, parquet: ParquetStore) -> AuditStore {
        AuditStore {
            view,
            parquet,
            tail: Arc::new(Mutex::new(Tail::new(0))),
        }
    }

    /// Where its sealed files are.
    pub fn parquet(&self) -> &ParquetStore {
        &self.parquet
    }

    /// Runs a read-only query over every durable record, on the query
    /// runtime.
    pub async fn query(
        &self,
        sql: String,
        limits: Limits,
        extra: Vec<(&'static str, datafusion::arrow::array::RecordBatch)>,
    ) -> Result<Answer, QueryError> {
        let (view, parquet, tail) = (self.view.clone(), self.parquet.clone(), self.tail.clone());
        let task = runtime().spawn(async move {
            let layout = view.layout().clone();
            // The durable size first: every segment holding records below
            // it is then in the list.
            let end = view.size();
            let firsts = view.segment_firsts();
            let listing = parquet.list(&LOG_TABLES).await?;
            let snapshot = {
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                let from = listing.sealed_upto(&firsts);
                if t.from() != from {
                    *t = Tail::new(from);
                }
                t.extend(&layout, &firsts, end)?;
                t.clone()
            };
            let snap = Snapshot {
                layout: &layout,
                parquet: &parquet,
                listing: &listing,
                tail: &snapshot,
                extra: &extra,
            };
            query::run(&snap, &sql, limits).await
        });
        // The deadline is kept here, on the caller's runtime: a query busy
        // on every query thread would not see its own timer fire.
        let started = std::time::Instant::now();
        let abort = task.abort_handle();
        let result = match tokio::time::timeout(limits.timeout, task).await {
            Ok(joined) => {
                joined.map_err(|e| QueryError::Refused(format!("the query stopped: {e}")))?
            }
            Err(_) => {
                abort.abort();
                Err(QueryError::TimedOut(limits.timeout.as_secs()))
            }
        };
        let m = crate::telemetry::metrics();
        m.query_seconds.observe(started.elapsed().as_secs_f64());
        m.queries
            .inc(&[result.as_ref().map_or_else(QueryError::code, |_| "ok")]);
        result
    }
}

/// Runs a query over a data directory on disk (`vigil query`): the sealed
/// files (in its `parquet/` folder, or at `store`) and every record after
/// them.
pub async fn query_dir(
    root: &Path,
    store: Option<&str>,
    sql: &str,
    limits: Limits,
) -> Result<Answer, QueryError> {
    let mut answers = query_dir_many(root, store, &[sql.to_string()], limits).await?;
    Ok(answers.remove(0))
}

/// Runs several queries over one snapshot of a data directory (one walk
/// of its tail, and of the whole log if one names an inventory table).
pub async fn query_dir_many(
    root: &Path,
    store: Option<&str>,
    sqls: &[String],
    limits: Limits,
) -> Result<Vec<Answer>, QueryError> {
    let layout = Layout::new(root);
    let parquet = ParquetStore::open(store, &layout)?;
    let firsts = layout
        .list_segments()
        .map_err(|source| AuditError::Read { segment: 0, source })?;
    let listing = parquet.list(&LOG_TABLES).await?;
    let mut tail = Tail::new(listing.sealed_upto(&firsts));
    tail.extend(&layout, &firsts, u64::MAX)?;
    let extra = inventory_tables(&layout, &firsts, &sqls.join("\n"))?;
    let snap = Snapshot {
        layout: &layout,
        parquet: &parquet,
        listing: &listing,
        tail: &tail,
        extra: &extra,
    };
    let mut answers = Vec::with_capacity(sqls.len());
    for sql in sqls {
        answers.push(query::run(&snap, sql, limits).await?);
    }
    Ok(answers)
}

/// The inventory's tables for an offline query, with the default
/// `[hygiene]` thresholds: built by one walk of the whole log, so only
/// when the query names one of them.
fn inventory_tables(
    layout: &Layout,
    firsts: &[u64],
    sql: &str,
) -> Result<Vec<(&'static str, datafusion::arrow::array::RecordBatch)>, AuditError> {
    let lower = sql.to_ascii_lowercase();
    if !["agents", "keys", "findings"]
        .iter()
        .any(|t| lower.contains(t))
    {
        return Ok(Vec::new());
    }
    let mut inv = crate::hygiene::Inventory::default();
    if let Some(&first) = firsts.first() {
        let header = crate::log::record::HEADER_LEN as u64;
        let mut walker = Walker::new(layout, firsts.to_vec(), 0, header, first);
        while let Some(rec) = walker.next_record().map_err(AuditError::read(first))? {
            inv.observe_bytes(rec.index, &body_of(&rec)?, &rec.event);
        }
    }
    let now = (crate::time::Timestamp::now().0 / 1_000_000) as i64;
    let findings = inv.findings(now, &crate::hygiene::Policy::default());
    Ok(crate::hygiene::tables::tables(&inv, &findings)?)
}

/// Writes the Parquet files of sealed segments as the writer seals them
/// (and, at start, of any sealed segment without them), until `stop`.
pub async fn run_sealer(
    view: LogView,
    parquet: ParquetStore,
    mut sealed: tokio::sync::watch::Receiver<Option<u64>>,
    mut stop: Stop,
) {
    loop {
        let done = seal::catch_up(&parquet, view.layout(), &view.segment_firsts(), &stop).await;
        match done {
            Ok(0) => {}
            Ok(n) => {
                crate::telemetry::metrics()
                    .parquet_segments_total
                    .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(segments = n, "Wrote sealed segments as Parquet")
            }
            Err(e) => {
                tracing::error!(error = %e, store = %parquet.describe(), "Could not write a sealed segment as Parquet; queries read it from the log until it is written (retried at the next seal)")
            }
        }
        tokio::select! {
            _ = stop.stopped() => return,
            changed = sealed.changed() => if changed.is_err() { return },
        }
    }
}
