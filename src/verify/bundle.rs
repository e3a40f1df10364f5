//! `vigil verify --bundle DIR`: checks an export bundle offline (README
//! "Export bundles"). Every file against the manifest's SHA-256; the
//! checkpoint's signature (with `--vkey`, else the bundle's own key, and
//! it says which); each receipt in its served form, its chain to the one
//! before, and its event (hash, ids, schema, signature with the key
//! history the bundle carries, applied as the range's key events come);
//! the range's leaves, with the hashes of everything before it, up to the
//! checkpoint's root through the consistency proof; and that the Parquet
//! copies hold the same receipts and events as the NDJSON.

use std::path::Path;

use bytes::Bytes;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::UInt64Type;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value as J;

use super::check::{check_record, CheckContext, Checked};
use super::{first_pipeline_key, invalid, VerifyError};
use crate::audit::export::{BUNDLE_FILES, BUNDLE_SPEC, INVENTORY_FILE, OCSF_FILES};
use crate::event::tables::TableCache;
use crate::event::Hash;
use crate::keys::history::KeyHistory;
use crate::log::merkle::{leaf_hash, verify_consistency, CompactRange};
use crate::log::note::{verify_checkpoint, CheckpointBody, NoteVerifier};
use crate::log::receipt::{chain_hash, ReceiptBody, ServedReceipt, Verdict};
use crate::store::walk::WalkRecord;

/// What a valid bundle holds.
#[derive(Debug, Clone)]
pub struct BundleReport {
    /// The log's origin.
    pub origin: String,
    /// The first record's index.
    pub first: u64,
    /// One past the last record's index.
    pub end: u64,
    /// The checkpoint's size.
    pub tree_size: u64,
    /// Accepted events whose signatures were checked.
    pub signatures: u64,
    /// Whether the checkpoint was checked with a key the caller pinned.
    pub pinned: bool,
}

/// The manifest's members a verifier relies on.
struct Manifest {
    origin: String,
    first: u64,
    end: u64,
    tree_size: u64,
    files: serde_json::Map<String, J>,
}

/// Checks the bundle in `dir`; `vkeys` pins the log's verifier key(s).
pub fn verify_bundle(dir: &Path, vkeys: &[String]) -> Result<BundleReport, VerifyError> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| invalid(name, format!("cannot read it: {e}")))
    };
    let m = manifest(&read("manifest.json")?)?;
    for name in BUNDLE_FILES {
        let want =
            m.files.get(name).and_then(J::as_str).ok_or_else(|| {
                invalid("manifest.json", format!("it lists no SHA-256 for {name}"))
            })?;
        let got = crate::hexenc::encode(crate::event::sha256(&read(name)?));
        if got != want {
            return Err(invalid(
                name,
                format!("its SHA-256 is {got}, the manifest says {want}: the file was changed"),
            ));
        }
    }
    if let Some(want) = m.files.get(INVENTORY_FILE).and_then(J::as_str) {
        let got = crate::hexenc::encode(crate::event::sha256(&read(INVENTORY_FILE)?));
        if got != want {
            return Err(invalid(
                INVENTORY_FILE,
                format!("its SHA-256 is {got}, the manifest says {want}: the file was changed"),
            ));
        }
    }
    check_ocsf(&m, &read)?;
    let (cp, pinned) = checkpoint(&read("checkpoint.txt")?, &read("log-key.txt")?, vkeys)?;
    if cp.origin != m.origin || cp.size != m.tree_size {
        return Err(invalid(
            "checkpoint.txt",
            format!(
                "it is of {:?} at size {}, the manifest says {:?} at {}",
                cp.origin, cp.size, m.origin, m.tree_size
            ),
        ));
    }
    let keys: J = serde_json::from_slice(&read("keys.json")?)
        .map_err(|e| invalid("keys.json", format!("not JSON: {e}")))?;
    let keys = KeyHistory::from_json(&keys).map_err(|e| invalid("keys.json", e.to_string()))?;
    let proof = RangeProof::parse(&read("proof.json")?, &m)?;
    let walked = walk(
        &read("receipts.ndjson")?,
        &read("events.ndjson")?,
        &m,
        keys,
        proof.before,
    )?;
    if !verify_consistency(m.end, cp.size, &walked.root, &cp.root, &proof.consistency) {
        return Err(invalid(
            "proof.json",
            format!(
                "the records {}..{} with the hashes before them do not lead to the checkpoint's root at size {}",
                m.first, m.end, cp.size
            ),
        ));
    }
    check_parquet(
        &read("receipts.parquet")?,
        &read("events.parquet")?,
        &walked,
    )?;
    Ok(BundleReport {
        origin: m.origin,
        first: m.first,
        end: m.end,
        tree_size: cp.size,
        signatures: walked.signatures,
        pinned,
    })
}

/// The OCSF files, when the manifest lists them: their hashes, and that
/// they are exactly the rendering of the bundle's records.
fn check_ocsf(
    m: &Manifest,
    read: &dyn Fn(&str) -> Result<Vec<u8>, VerifyError>,
) -> Result<(), VerifyError> {
    if !OCSF_FILES.iter().any(|f| m.files.contains_key(*f)) {
        return Ok(());
    }
    let rendered = crate::ocsf::bundle_files(&read("receipts.ndjson")?, &read("events.ndjson")?)
        .map_err(|e| invalid("receipts.ndjson and events.ndjson", e))?;
    for (name, want) in OCSF_FILES
        .iter()
        .zip([rendered.activities, rendered.findings])
    {
        let got = read(name)?;
        let listed = m.files.get(*name).and_then(J::as_str).unwrap_or_default();
        if crate::hexenc::encode(crate::event::sha256(&got)) != listed {
            return Err(invalid(
                *name,
                "its SHA-256 is not the manifest's: the file was changed",
            ));
        }
        if got != want {
            let line = got
                .split(|&b| b == b'\n')
                .zip(want.split(|&b| b == b'\n'))
                .position(|(a, b)| a != b)
                .map_or(0, |i| i + 1);
            return Err(invalid(
                format!("{name} line {line}"),
                "it is not the OCSF rendering of the bundle's records",
            ));
        }
    }
    Ok(())
}

fn manifest(bytes: &[u8]) -> Result<Manifest, VerifyError> {
    let bad = |why: String| invalid("manifest.json", why);
    let j: J = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    if j["spec"] != BUNDLE_SPEC {
        return Err(bad(format!(
            "its spec is {}, not {BUNDLE_SPEC:?}",
            j["spec"]
        )));
    }
    let num = |name: &str| {
        j[name]
            .as_u64()
            .ok_or_else(|| bad(format!("it has no number {name}")))
    };
    let (first, end, tree_size) = (num("first_index")?, num("end_index")?, num("tree_size")?);
    if first >= end || end > tree_size {
        return Err(bad(format!(
            "first_index {first}, end_index {end} and tree_size {tree_size} are not in order"
        )));
    }
    Ok(Manifest {
        origin: j["origin"].as_str().unwrap_or_default().to_string(),
        first,
        end,
        tree_size,
        files: j["files"].as_object().cloned().unwrap_or_default(),
    })
}

/// The checkpoint, checked with the pinned keys or else the bundle's own.
fn checkpoint(
    note: &[u8],
    bundled: &[u8],
    pinned: &[String],
) -> Result<(CheckpointBody, bool), VerifyError> {
    let note = std::str::from_utf8(note).map_err(|_| invalid("checkpoint.txt", "not UTF-8"))?;
    let bundled: Vec<String> = String::from_utf8_lossy(bundled)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect();
    let keys = if pinned.is_empty() { &bundled } else { pinned };
    let mut why = String::from("no verifier key");
    for k in keys {
        let v = NoteVerifier::parse(k)
            .map_err(|e| VerifyError::Usage(format!("the verifier key {k:?}: {e}")))?;
        match verify_checkpoint(note, &v) {
            Ok(cp) => return Ok((cp, !pinned.is_empty())),
            Err(e) => why = e.to_string(),
        }
    }
    Err(invalid(
        "checkpoint.txt",
        format!("its signature does not verify: {why}"),
    ))
}

/// proof.json: the hashes before the range and the consistency proof.
struct RangeProof {
    before: CompactRange,
    consistency: Vec<Hash>,
}

impl RangeProof {
    fn parse(bytes: &[u8], m: &Manifest) -> Result<RangeProof, VerifyError> {
        let bad = |why: String| invalid("proof.json", why);
        let j: J = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        if j["first"] != m.first || j["end"] != m.end || j["tree_size"] != m.tree_size {
            return Err(bad("its range is not the manifest's".into()));
        }
        let hashes = |name: &str| -> Result<Vec<Hash>, VerifyError> {
            j[name]
                .as_array()
                .ok_or_else(|| bad(format!("it has no list {name}")))?
                .iter()
                .map(|h| {
                    h.as_str()
                        .and_then(|s| hex::decode(s).ok())
                        .and_then(|b| Hash::try_from(b).ok())
                        .ok_or_else(|| bad(format!("{name} holds {h}, not a hex SHA-256")))
                })
                .collect()
        };
        let before = CompactRange::from_hashes(m.first, &hashes("before")?).ok_or_else(|| {
            bad(format!(
                "before does not hold one hash per complete subtree of the first {} leaves",
                m.first
            ))
        })?;
        Ok(RangeProof {
            before,
            consistency: hashes("consistency")?,
        })
    }
}

/// What walking the range found.
struct Walked {
    root: Hash,
    signatures: u64,
    /// Each receipt's place and ids, in order (to compare the Parquet copies).
    receipts: Vec<Listed>,
}

/// A receipt as the Parquet copies must list it.
struct Listed {
    index: u64,
    event_hash: String,
    event_id: String,
}

/// A receipt line, checked.
struct Line {
    body: ReceiptBody,
    jcs: Vec<u8>,
    chain: Hash,
}

fn walk(
    receipts: &[u8],
    events: &[u8],
    m: &Manifest,
    mut keys: KeyHistory,
    mut range: CompactRange,
) -> Result<Walked, VerifyError> {
    let tables = TableCache::new(0);
    let receipt_lines: Vec<&[u8]> = lines(receipts);
    let event_lines: Vec<&[u8]> = lines(events);
    let want = (m.end - m.first) as usize;
    for (name, n) in [
        ("receipts.ndjson", receipt_lines.len()),
        ("events.ndjson", event_lines.len()),
    ] {
        if n != want {
            return Err(invalid(
                name,
                format!("it has {n} lines, the manifest says {want} records"),
            ));
        }
    }
    let mut prev: Option<Hash> = None;
    let mut out = Walked {
        root: [0; 32],
        signatures: 0,
        receipts: Vec::with_capacity(want),
    };
    for (i, (r, e)) in receipt_lines.iter().zip(&event_lines).enumerate() {
        let index = m.first + i as u64;
        let place = |file: &str| format!("{file} line {} (log index {index})", i + 1);
        let Line { body, jcs, chain } =
            served_receipt(r, index, prev).map_err(|w| invalid(place("receipts.ndjson"), w))?;
        let rec = WalkRecord {
            index,
            segment: 0,
            offset: 0,
            body: jcs,
            event: e.to_vec(),
        };
        let ctx = CheckContext {
            keys: &keys,
            tables: &tables,
            index: None,
        };
        let checked: Checked = match check_record(&rec, &ctx) {
            Err(e) if body.agent_id == crate::event::PIPELINE_AGENT => {
                first_pipeline_key(&ctx, &rec).ok_or(e)
            }
            other => other,
        }
        .map_err(|w| invalid(place("events.ndjson"), w))?;
        if checked.verdict == Verdict::Accepted {
            out.signatures += 1;
            if let Some(change) = checked.event.as_ref().and_then(KeyHistory::change_in) {
                keys.apply(&change)
                    .map_err(|w| invalid(place("events.ndjson"), w.to_string()))?;
            }
        }
        range.push(checked.leaf);
        prev = Some(chain);
        out.receipts.push(Listed {
            index,
            event_hash: body.event_hash,
            event_id: body.event_id,
        });
    }
    out.root = range.root();
    Ok(out)
}

fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect()
}

/// What is wrong with a line of `receipts.ndjson`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not a JSON object (the parser's reason).
    #[error("not a JSON object: {0}")]
    NotAnObject(String),
    /// A hash member missing or not hex SHA-256.
    #[error("no hex {0}")]
    NoHash(&'static str),
    /// The members are not a receipt's (the parser's reason).
    #[error("not a receipt: {0}")]
    NotAReceipt(String),
    /// `leaf_hash` is not the body's.
    #[error("its leaf_hash is not the hash of its body (RFC 9162: SHA-256(0x00 || JCS(body)))")]
    LeafHash,
    /// Not byte for byte the served form.
    #[error("the line is not the receipt's canonical served form")]
    NotServedForm,
    /// Another index than its place.
    #[error("its index is {found}, expected {want}")]
    Index {
        /// The index it gives.
        found: u64,
        /// Its place.
        want: u64,
    },
    /// `prev` is not hex SHA-256.
    #[error("its prev is not a hex SHA-256")]
    PrevNotHex,
    /// `prev` is not the chain hash before it.
    #[error("its prev is not the chain hash of the receipt before it")]
    Prev,
    /// `chain` is not `SHA-256(prev || leaf_hash)`.
    #[error("its chain is not SHA-256(prev || leaf_hash)")]
    Chain,
}

/// 32 bytes of hex, if `s` is that.
fn hex_hash(s: &str) -> Option<Hash> {
    hex::decode(s).ok().and_then(|b| Hash::try_from(b).ok())
}

/// A receipt line: exactly the served form of its body, at `index`,
/// chained to `prev`.
fn served_receipt(line: &[u8], index: u64, prev: Option<Hash>) -> Result<Line, LineError> {
    let mut j: serde_json::Map<String, J> =
        serde_json::from_slice(line).map_err(|e| LineError::NotAnObject(e.to_string()))?;
    let mut hash = |name: &'static str| {
        j.remove(name)
            .and_then(|v| v.as_str().and_then(hex_hash))
            .ok_or(LineError::NoHash(name))
    };
    let (chain, leaf) = (hash("chain")?, hash("leaf_hash")?);
    let body: ReceiptBody =
        serde_json::from_value(J::Object(j)).map_err(|e| LineError::NotAReceipt(e.to_string()))?;
    let jcs = body.to_jcs();
    if leaf_hash(&jcs) != leaf {
        return Err(LineError::LeafHash);
    }
    if ServedReceipt::from_jcs(&jcs, &leaf, &chain)
        .json()
        .as_bytes()
        != line
    {
        return Err(LineError::NotServedForm);
    }
    if body.index != index {
        return Err(LineError::Index {
            found: body.index,
            want: index,
        });
    }
    let prev_hash = hex_hash(&body.prev).ok_or(LineError::PrevNotHex)?;
    if prev.is_some_and(|p| p != prev_hash) {
        return Err(LineError::Prev);
    }
    if chain != chain_hash(&prev_hash, &leaf) {
        return Err(LineError::Chain);
    }
    Ok(Line { body, jcs, chain })
}

fn batches(bytes: &[u8], name: &str) -> Result<Vec<RecordBatch>, VerifyError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::copy_from_slice(bytes))
        .and_then(|b| b.build())
        .map_err(|e| invalid(name, format!("not a readable Parquet file: {e}")))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(name, format!("not a readable Parquet file: {e}")))
}

/// The Parquet copies hold the NDJSON's receipts and events, in order.
fn check_parquet(receipts: &[u8], events: &[u8], walked: &Walked) -> Result<(), VerifyError> {
    for (name, bytes, column) in [
        ("receipts.parquet", receipts, "event_hash"),
        ("events.parquet", events, "event_id"),
    ] {
        let mut rows: Vec<(u64, String)> = Vec::new();
        for b in batches(bytes, name)? {
            let (Some(idx), Some(val)) = (b.column_by_name("log_index"), b.column_by_name(column))
            else {
                return Err(invalid(
                    name,
                    format!("it has no log_index or {column} column"),
                ));
            };
            let (idx, val) = (idx.as_primitive::<UInt64Type>(), val.as_string::<i32>());
            rows.extend((0..b.num_rows()).map(|i| (idx.value(i), val.value(i).to_string())));
        }
        let want: Vec<(u64, String)> = walked
            .receipts
            .iter()
            .map(|r| {
                let v = if column == "event_hash" {
                    &r.event_hash
                } else {
                    &r.event_id
                };
                (r.index, v.clone())
            })
            .collect();
        if rows != want {
            let at = rows
                .iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .unwrap_or(rows.len().min(want.len()));
            return Err(invalid(
                name,
                format!("row {} is not the NDJSON's record (log_index and {column}), or the row counts differ ({} vs {})", at + 1, rows.len(), want.len()),
            ));
        }
    }
    Ok(())
}
