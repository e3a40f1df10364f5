//! `vigil export`: a time range of the log as a self-contained bundle an
//! auditor checks offline with `vigil verify --bundle` (README "Export
//! bundles" documents every file).
//!
//! The range is contiguous in the log: from the first record received at
//! or after `--from` up to (not including) the first received at or after
//! `--to`, within the latest checkpoint. Its proof is the compact range of
//! every leaf before it (the peaks' hashes) and a consistency proof from
//! its end to the checkpoint: with the bundle's receipts, that gives the
//! checkpoint's root, so no record can be added, dropped, changed or
//! reordered without the bundle failing.

use std::path::{Path, PathBuf};

use serde_json::{json, Value as J};

use super::seal::encode;
use super::tables::{Rows, Table};
use super::AuditError;
use crate::event::{Event, PIPELINE_AGENT};
use crate::keys::history::KeyHistory;
use crate::log::merkle::{consistency_proof, leaf_hash, CompactRange};
use crate::log::note::{split_note, CheckpointBody};
use crate::log::receipt::{ReceiptBody, Verdict};
use crate::store::checkpoints::read_checkpoints;
use crate::store::datadir::read_verifier_keys;
use crate::store::fsutil::{create_dir_durably, write_file_durably};
use crate::store::layout::Layout;
use crate::store::tiles::TileReader;
use crate::store::view::served;
use crate::store::walk::Walker;
use crate::time::Timestamp;

/// The `spec` of a bundle's manifest.
pub const BUNDLE_SPEC: &str = "vigil.bundle/v1";

/// The files of a bundle besides `manifest.json`, in the order written.
pub const BUNDLE_FILES: [&str; 8] = [
    "events.ndjson",
    "receipts.ndjson",
    "events.parquet",
    "receipts.parquet",
    "checkpoint.txt",
    "log-key.txt",
    "keys.json",
    "proof.json",
];

/// The hygiene findings as of the range's end, in every new bundle
/// (checked against the manifest when present).
pub const INVENTORY_FILE: &str = "findings.json";

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The data directory.
    pub data: PathBuf,
    /// Records received at or after this (default: the log's start).
    pub from: Option<Timestamp>,
    /// Records received before this (default: the latest checkpoint).
    pub to: Option<Timestamp>,
    /// The bundle's directory (new or empty).
    pub out: PathBuf,
    /// Also write the records as OCSF ([`OCSF_FILES`]).
    pub ocsf: bool,
}

/// The optional OCSF files: API Activity for agents' events, Detection
/// Finding for anomalies (derived from the NDJSON; `verify --bundle`
/// renders them again and compares).
pub const OCSF_FILES: [&str; 2] = ["events.ocsf.ndjson", "findings.ocsf.ndjson"];

/// Why a bundle cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Nothing to export, or a bad option.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read or written.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The rows could not be encoded.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExportError {
    let what = what.into();
    move |source| ExportError::Io { what, source }
}

/// What was exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The first record's index.
    pub first: u64,
    /// One past the last record's index.
    pub end: u64,
    /// The size of the checkpoint the bundle is proven against.
    pub tree_size: u64,
}

/// The range's contents, gathered in one walk of the log.
#[derive(Default)]
struct Gathered {
    first: Option<u64>,
    end: Option<u64>,
    before: CompactRange,
    keys: KeyHistory,
    inventory: crate::hygiene::Inventory,
    events: Vec<u8>,
    receipts: Vec<u8>,
    rows: Rows,
}

/// Writes the bundle; returns its range.
pub fn export(opts: &ExportOptions) -> Result<Exported, ExportError> {
    let layout = Layout::new(&opts.data);
    let (note, cp) = latest_checkpoint(&layout)?;
    let g = gather(&layout, opts, cp.size)?;
    let first = g.first.unwrap_or(cp.size);
    let end = g.end.unwrap_or(cp.size);
    if first >= end {
        return Err(ExportError::Usage(format!(
            "no record of {} was received in that range (the latest checkpoint covers {} records)",
            opts.data.display(),
            cp.size
        )));
    }
    let tiles = TileReader::new(&layout, 64);
    let consistency = if end < cp.size {
        consistency_proof(&tiles.at(cp.size), end, cp.size).map_err(io("read the tiles"))?
    } else {
        Vec::new()
    };
    let proof = json!({
        "first": first,
        "end": end,
        "tree_size": cp.size,
        "before": g.before.hashes().iter().map(hex::encode).collect::<Vec<_>>(),
        "consistency": consistency.iter().map(hex::encode).collect::<Vec<_>>(),
    });
    let ocsf = if opts.ocsf {
        let o = crate::ocsf::bundle_files(&g.receipts, &g.events)
            .map_err(|e| ExportError::Usage(format!("cannot render the records as OCSF: {e}")))?;
        vec![(OCSF_FILES[0], o.activities), (OCSF_FILES[1], o.findings)]
    } else {
        Vec::new()
    };
    let mut rows = g.rows;
    let mut files: Vec<(&str, Vec<u8>)> =
        vec![("events.ndjson", g.events), ("receipts.ndjson", g.receipts)];
    files.extend(ocsf);
    for (table, batch) in rows.finish() {
        match table {
            Table::Events => files.push(("events.parquet", encode(table, &batch)?)),
            Table::Receipts => files.push(("receipts.parquet", encode(table, &batch)?)),
            _ => {}
        }
    }
    let vkeys = read_verifier_keys(&opts.data).join("\n") + "\n";
    files.push(("checkpoint.txt", note.into_bytes()));
    files.push(("log-key.txt", vkeys.into_bytes()));
    files.push(("keys.json", pretty(&g.keys.to_json())));
    files.push(("proof.json", pretty(&proof)));
    // The hygiene findings as of the range's end (default thresholds):
    // judgements, not evidence, so hashed but not proven.
    let as_of = opts.to.unwrap_or_else(Timestamp::now);
    let findings = g.inventory.findings(
        (as_of.0 / 1_000_000) as i64,
        &crate::hygiene::Policy::default(),
    );
    let findings =
        json!({"as_of": as_of.to_rfc3339_millis(), "thresholds": "defaults", "findings": findings});
    files.push((INVENTORY_FILE, pretty(&findings)));
    let manifest = json!({
        "spec": BUNDLE_SPEC,
        "origin": cp.origin,
        "from": opts.from.map(|t| t.to_rfc3339_millis()),
        "to": opts.to.map(|t| t.to_rfc3339_millis()),
        "first_index": first,
        "end_index": end,
        "records": end - first,
        "tree_size": cp.size,
        "files": files.iter().map(|(n, b)| (n.to_string(), J::String(crate::hexenc::encode(crate::event::sha256(b))))).collect::<serde_json::Map<_, _>>(),
    });
    files.push(("manifest.json", pretty(&manifest)));
    write_bundle(&opts.out, &files)?;
    Ok(Exported {
        first,
        end,
        tree_size: cp.size,
    })
}

fn pretty(j: &J) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(j).expect("JSON serialises");
    v.push(b'\n');
    v
}

/// The latest checkpoint's note and body.
fn latest_checkpoint(layout: &Layout) -> Result<(String, CheckpointBody), ExportError> {
    let scan = read_checkpoints(&layout.checkpoints())
        .map_err(io(format!("read {}", layout.checkpoints().display())))?;
    let note = scan
        .checkpoints
        .last()
        .map(|c| c.note.clone())
        .ok_or_else(|| {
            ExportError::Usage(format!(
                "{} has no checkpoint yet: start vigil serve on it until it signs one",
                layout.root().display()
            ))
        })?;
    let body = split_note(&note)
        .ok()
        .and_then(|(body, _)| CheckpointBody::parse(body).ok())
        .ok_or_else(|| {
            ExportError::Usage("the latest checkpoint does not parse: run `vigil verify`".into())
        })?;
    Ok((note, body))
}

/// One walk of the log up to `size`: the compact range and key history
/// before the range, and the range's lines and rows.
fn gather(layout: &Layout, opts: &ExportOptions, size: u64) -> Result<Gathered, ExportError> {
    let firsts = layout
        .list_segments()
        .map_err(io("list the log's segments"))?;
    let mut walker = Walker::from_start(layout, firsts);
    let mut g = Gathered::default();
    let from = opts.from.map(|t| t.to_rfc3339_millis());
    let to = opts.to.map(|t| t.to_rfc3339_millis());
    while walker.next_index() < size {
        let Some(rec) = walker.next_record().map_err(io("read the log"))? else {
            break;
        };
        let body = super::body_of(&rec)?;
        // Receipt times have one fixed format, so text order is time order.
        if !(g.first.is_some() && to.as_ref().is_some_and(|t| &body.received_at >= t)) {
            g.inventory.observe_bytes(rec.index, &body, &rec.event);
        }
        if g.first.is_none() && from.as_ref().is_none_or(|f| &body.received_at >= f) {
            g.first = Some(rec.index);
        }
        if g.first.is_some() && to.as_ref().is_some_and(|t| &body.received_at >= t) {
            g.end = Some(rec.index);
            break;
        }
        if g.first.is_none() {
            g.before.push(leaf_hash(&rec.body));
            learn_keys(&mut g.keys, &body, &rec.event);
            continue;
        }
        g.events.extend(
            rec.event
                .iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
        );
        g.events.push(b'\n');
        g.receipts
            .extend_from_slice(served(&body, &rec.body).json().as_bytes());
        g.receipts.push(b'\n');
        g.rows.push(&body, &rec.event);
    }
    Ok(g)
}

/// Applies a key event of the log (an accepted event of agent `vigil`).
fn learn_keys(keys: &mut KeyHistory, body: &ReceiptBody, event: &[u8]) {
    if body.agent_id != PIPELINE_AGENT || body.verdict() != Some(Verdict::Accepted) {
        return;
    }
    if let Some(change) = Event::parse(event)
        .ok()
        .as_ref()
        .and_then(KeyHistory::change_in)
    {
        if let Err(e) = keys.apply(&change) {
            tracing::warn!(index = body.index, error = %e, "A key event does not apply; `vigil verify` names it");
        }
    }
}

fn write_bundle(out: &Path, files: &[(&str, Vec<u8>)]) -> Result<(), ExportError> {
    if out.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        return Err(ExportError::Usage(format!(
            "{} is not empty; give a new directory for the bundle",
            out.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(io(format!("create {}", out.display())))?;
    create_dir_durably(out).map_err(io(format!("create {}", out.display())))?;
    for (name, bytes) in files {
        let path = out.join(name);
        write_file_durably(&path, bytes, 0o644).map_err(io(format!("write {}", path.display())))?;
    }
    Ok(())
}
