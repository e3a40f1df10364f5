//! `vigil bench query`: builds an audit store of `--receipts` synthetic
//! records as sealed Parquet files (the same rows, sorting and encoding
//! the server's sealer writes, one file per table and 100k-record
//! segment), then times the typical questions an auditor asks, each run
//! `--runs` times: one correlation id across agents in time order, one
//! agent's actions on a resource in a time range, and counts by agent and
//! verdict per hour (over one day, and over everything). Reports the
//! store's size on disk per receipt.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use rayon::prelude::*;

use crate::audit::objects::ParquetStore;
use crate::audit::query::{run, Limits, Snapshot};
use crate::audit::seal::{encode, sorted};
use crate::audit::tables::{Rows, Table, LOG_TABLES};
use crate::audit::tail::Tail;
use crate::log::receipt::{ReceiptBody, RECEIPT_SPEC};
use crate::store::layout::Layout;
use crate::time::Timestamp;

/// `vigil bench query` options.
#[derive(Args, Debug, Clone)]
pub struct QueryBenchArgs {
    /// Receipts in the store.
    #[arg(long, default_value_t = 10_000_000)]
    pub receipts: u64,
    /// Where to build it (kept, and reused when it already holds a store
    /// of this size).
    #[arg(long, default_value = "target/bench-query")]
    pub dir: PathBuf,
    /// Runs of each question.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// More SQL to time over the same store (repeatable).
    #[arg(long)]
    pub sql: Vec<String>,
    /// Build the Parquet files in this bucket (`s3://bucket/prefix`,
    /// endpoint and credentials from `AWS_*`) instead of `--dir`.
    #[arg(long)]
    pub store: Option<String>,
}

/// Records per synthetic segment.
const SEGMENT: u64 = 100_000;
/// Agents, and the log's time span (10 days).
const AGENTS: u64 = 1000;
const SPAN_MS: i64 = 10 * 86_400_000;
const START_MS: i64 = 1_790_000_000_000;

fn at(ms: i64) -> String {
    Timestamp(ms as i128 * 1_000_000).to_rfc3339_millis()
}

/// Record `i` of `n`: its time, agent, correlation id (workflows local in
/// time, five interleaved), resource and action.
fn record(i: u64, n: u64) -> (ReceiptBody, Vec<u8>) {
    let ms = START_MS + (i as i128 * SPAN_MS as i128 / n as i128) as i64;
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let agent = format!("agent-{:04}", h % AGENTS);
    let corr = format!("corr-{:09}", (i / 50) * 5 + (h >> 20) % 5);
    let event_id = format!("e-{i:010}");
    let event = serde_json::json!({
        "spec": "vigil.event/v1", "event_id": event_id, "occurred_at": at(ms - 40),
        "agent_id": agent, "key_id": format!("{agent}#1"), "correlation_id": corr,
        "action": format!("tool.action_{}", (h >> 32) % 20),
        "resource": format!("db://t/{}", (h >> 40) % 50),
        "principal": format!("user-{}@example.com", (h >> 44) % 500),
        "bytes": (h >> 48) % 100_000, "signature": "A".repeat(86),
    });
    let bytes = serde_json::to_vec(&event).expect("an event serialises");
    let body = ReceiptBody {
        spec: RECEIPT_SPEC.into(),
        log: "bench.example/query".into(),
        index: i,
        event_id,
        agent_id: agent.clone(),
        key_id: format!("{agent}#1"),
        correlation_id: corr,
        event_hash: crate::hexenc::encode(crate::event::sha256(&bytes)),
        received_at: at(ms),
        verdict: if h.is_multiple_of(100) {
            "rejected:bad_signature"
        } else {
            "accepted"
        }
        .into(),
        prev: "0".repeat(64),
    };
    (body, bytes)
}

/// One segment's files, encoded.
fn segment_files(first: u64, n: u64) -> anyhow::Result<Vec<(Table, Vec<u8>)>> {
    let mut rows = Rows::default();
    for i in first..(first + SEGMENT).min(n) {
        let (body, event) = record(i, n);
        rows.push(&body, &event);
    }
    let mut files = Vec::new();
    for (table, batch) in rows.finish() {
        if batch.num_rows() > 0 {
            files.push((table, encode(table, &sorted(table, &batch)?)?));
        }
    }
    files.sort_by_key(|(t, _)| *t == Table::Receipts);
    Ok(files)
}

/// Builds the store's files (unless they are all there); returns the
/// segments' first indexes.
async fn build(store: &ParquetStore, n: u64) -> anyhow::Result<Vec<u64>> {
    let firsts: Vec<u64> = (0..n.div_ceil(SEGMENT)).map(|s| s * SEGMENT).collect();
    let listing = store.list(&[Table::Receipts]).await?;
    let missing: Vec<u64> = firsts
        .iter()
        .copied()
        .filter(|&f| !listing.is_sealed(f))
        .collect();
    // Encoded on every core, a few segments at a time.
    for chunk in missing.chunks(rayon::current_num_threads() * 2) {
        let encoded = chunk
            .par_iter()
            .map(|&first| segment_files(first, n).map(|files| (first, files)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (first, files) in encoded {
            for (table, data) in files {
                store.put(table, first, data).await?;
            }
        }
    }
    Ok(firsts)
}

/// Runs the benchmark and prints its figures.
pub fn run_bench(args: QueryBenchArgs) -> anyhow::Result<()> {
    let layout = Layout::new(&args.dir);
    std::fs::create_dir_all(layout.root())
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let parquet = ParquetStore::open(args.store.as_deref(), &layout)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let t = Instant::now();
    let mut firsts = rt.block_on(build(&parquet, args.receipts))?;
    println!(
        "store: {} receipts in {} segments at {}, ready in {:.1} s",
        args.receipts,
        firsts.len(),
        parquet.describe(),
        t.elapsed().as_secs_f64()
    );
    let listing = rt.block_on(parquet.list(&LOG_TABLES))?;
    let bytes = listing.bytes();
    println!(
        "size on disk: {:.1} MiB, {:.1} bytes per receipt (receipts and events tables)",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / args.receipts as f64
    );
    // The tail starts after the last sealed segment (empty here).
    firsts.push(args.receipts.div_ceil(SEGMENT) * SEGMENT);
    let tail = Tail::new(*firsts.last().expect("a segment"));
    let snap = Snapshot {
        layout: &layout,
        parquet: &parquet,
        listing: &listing,
        tail: &tail,
        extra: &[],
    };
    let limits = Limits {
        max_rows: usize::MAX,
        timeout: std::time::Duration::from_secs(600),
        memory_bytes: 2 << 30,
    };
    let mut questions: Vec<(&str, String)> = questions(args.receipts).into();
    questions.extend(args.sql.iter().map(|q| ("--sql", q.clone())));
    for (what, sql) in questions {
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..args.runs {
            let t = Instant::now();
            let answer = rt.block_on(run(&snap, &sql, limits))?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            rows = answer.rows.len();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{what}: {rows} rows; ms min {:.0}, median {:.0}, max {:.0}",
            times[0],
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
    Ok(())
}

/// The questions timed: (what, SQL).
fn questions(receipts: u64) -> [(&'static str, String); 4] {
    let mid = START_MS + SPAN_MS / 2;
    let corr = format!("corr-{:09}", (receipts / 2 / 50) * 5 + 2);
    [
        (
            "one correlation id, across agents, in time order",
            format!("SELECT agent_id, event_id, occurred_at, action FROM events WHERE correlation_id = '{corr}' ORDER BY occurred_at"),
        ),
        (
            "one agent's actions on a resource over 2 days",
            format!("SELECT occurred_at, action, principal FROM events WHERE agent_id = 'agent-0042' AND resource = 'db://t/7' AND occurred_at >= '{}' AND occurred_at < '{}' ORDER BY occurred_at", at(mid), at(mid + 2 * 86_400_000)),
        ),
        (
            "counts by agent and verdict per hour, one day",
            format!("SELECT agent_id, verdict, date_trunc('hour', received_at) AS hour, count(*) FROM receipts WHERE received_at >= '{}' AND received_at < '{}' GROUP BY 1, 2, 3", at(mid), at(mid + 86_400_000)),
        ),
        (
            "counts by agent and verdict per hour, all 10 days",
            "SELECT agent_id, verdict, date_trunc('hour', received_at) AS hour, count(*) FROM receipts GROUP BY 1, 2, 3".to_string(),
        ),
    ]
}
