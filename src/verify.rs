//! The offline auditor: `vigil verify` re-checks a whole data directory
//! with nothing but its files (and, optionally, keys and a checkpoint the
//! auditor trusts), as contract section 8 says.
//!
//! It checks, in order: every record's framing and CRC, every receipt
//! body (index, spec, log, canonical form) and the hash chain through
//! `prev`, every event's bytes against its receipt's `event_hash` and ids,
//! the signature of every accepted event, that no (agent, event id) is
//! accepted twice, every stored checkpoint's signature and root, the
//! consistency of successive checkpoints, and the log's length and root
//! against a trusted checkpoint.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ed25519_dalek::VerifyingKey;

use crate::event::schema::check as check_schema;
use crate::event::signature::{b64url_decode, parse_public_key, verify as verify_sig};
use crate::event::Event;
use crate::log::merkle::{verify_consistency, Tree};
use crate::log::note::{verify_checkpoint, CheckpointBody, NoteVerifier};
use crate::log::receipt::{ReceiptBody, Verdict};
use crate::pipeline::state::{check_body, id_key};
use crate::store::checkpoints::read_checkpoints;
use crate::store::datadir::read_verifier_keys;
use crate::store::segments::{list_segments, scan_segment, ScanEnd};

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The data directory.
    pub data: PathBuf,
    /// Extra JWKS files with agent keys.
    pub keys: Vec<PathBuf>,
    /// A checkpoint the auditor trusts (signed note file).
    pub checkpoint: Option<PathBuf>,
    /// The log's verifier key, when the auditor pins it (else the keys
    /// recorded in the data directory are used).
    pub vkey: Option<String>,
    /// Print progress to stderr.
    pub progress: bool,
    /// Collect every accepted (agent, event id, event hash) for cross-log checks.
    pub collect_accepted: bool,
}

/// What a successful verification found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Records in the log.
    pub records: u64,
    /// Accepted receipts.
    pub accepted: u64,
    /// Rejection receipts.
    pub rejected: u64,
    /// Stored checkpoints checked.
    pub checkpoints: usize,
    /// The latest checkpoint's size.
    pub latest_size: u64,
    /// Root of the whole log.
    pub root: [u8; 32],
    /// Notes that do not make the log invalid (a torn unacknowledged tail).
    pub warnings: Vec<String>,
    /// With `collect_accepted`: (agent, event id, event hash, index) of
    /// every accepted receipt.
    pub accepted_ids: Vec<(String, String, String, u64)>,
}

/// An (agent, event id) accepted by more than one log.
#[derive(Debug, Clone)]
pub struct CrossLogDuplicate {
    /// The agent.
    pub agent_id: String,
    /// The event id.
    pub event_id: String,
    /// Each acceptance.
    pub places: Vec<Place>,
}

/// Where a log accepted an event: (log directory, index, event hash).
pub type Place = (String, u64, String);

impl CrossLogDuplicate {
    /// Whether every log accepted the same bytes (a failover re-delivery)
    /// rather than different content under one id.
    pub fn same_event(&self) -> bool {
        self.places.windows(2).all(|w| w[0].2 == w[1].2)
    }
}

/// Finds (agent, event id) pairs accepted by more than one of the logs.
pub fn cross_log_duplicates(logs: &[(String, &VerifyReport)]) -> Vec<CrossLogDuplicate> {
    let mut seen: HashMap<(&str, &str), Vec<Place>> = HashMap::new();
    for (name, report) in logs {
        for (agent, id, hash, index) in &report.accepted_ids {
            seen.entry((agent, id))
                .or_default()
                .push((name.clone(), *index, hash.clone()));
        }
    }
    let mut out: Vec<CrossLogDuplicate> = seen
        .into_iter()
        .filter(|(_, places)| places.len() > 1)
        .map(|((agent, id), places)| CrossLogDuplicate {
            agent_id: agent.to_string(),
            event_id: id.to_string(),
            places,
        })
        .collect();
    out.sort_by(|a, b| (&a.agent_id, &a.event_id).cmp(&(&b.agent_id, &b.event_id)));
    out
}

/// Why verification failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VerifyError {
    /// The log is not valid: the first bad place and what is wrong (exit 1).
    #[error("INVALID at {place}: {what}")]
    Invalid {
        /// File and index.
        place: String,
        /// What is wrong.
        what: String,
    },
    /// The verifier could not run (exit 2).
    #[error("{0}")]
    Usage(String),
}

fn invalid(place: impl Into<String>, what: impl Into<String>) -> VerifyError {
    VerifyError::Invalid {
        place: place.into(),
        what: what.into(),
    }
}

/// Agent keys by (agent, kid); several when a kid was reused over time.
#[derive(Default)]
struct KeyBook(HashMap<(String, String), Vec<VerifyingKey>>);

impl KeyBook {
    fn add_jwk(&mut self, jwk: &serde_json::Value) {
        let (Some(agent), Some(kid), Some(x)) = (
            jwk["agent_id"].as_str(),
            jwk["kid"].as_str(),
            jwk["x"].as_str(),
        ) else {
            return;
        };
        let Some(key) = b64url_decode(x).and_then(|b| parse_public_key(&b).ok()) else {
            return;
        };
        let entry = self
            .0
            .entry((agent.to_string(), kid.to_string()))
            .or_default();
        if !entry.contains(&key) {
            entry.push(key);
        }
    }
}

fn load_keys(opts: &VerifyOptions) -> Result<KeyBook, VerifyError> {
    let mut book = KeyBook::default();
    let snap = opts.data.join("keys").join("snapshot.jsonl");
    if let Ok(text) = std::fs::read_to_string(&snap) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Ok(j) = serde_json::from_str::<serde_json::Value>(line) {
                book.add_jwk(&j);
            }
        }
    }
    for path in &opts.keys {
        let text = std::fs::read(path).map_err(|e| {
            VerifyError::Usage(format!("cannot read --keys {}: {e}", path.display()))
        })?;
        let doc: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
            VerifyError::Usage(format!("--keys {} is not JSON: {e}", path.display()))
        })?;
        for jwk in doc["keys"].as_array().into_iter().flatten() {
            book.add_jwk(jwk);
        }
    }
    Ok(book)
}

fn load_verifiers(opts: &VerifyOptions, origin: &str) -> Result<Vec<NoteVerifier>, VerifyError> {
    let texts = match &opts.vkey {
        Some(v) => vec![v.clone()],
        None => read_verifier_keys(&opts.data),
    };
    if texts.is_empty() {
        return Err(VerifyError::Usage(format!(
            "no log verifier key: {} has no log-keys.txt; pass --vkey <verifier key>",
            opts.data.display()
        )));
    }
    let mut out = Vec::new();
    for t in texts {
        let v = NoteVerifier::parse(&t)
            .map_err(|e| VerifyError::Usage(format!("bad verifier key {t:?}: {e}")))?;
        if v.name != origin {
            return Err(VerifyError::Usage(format!(
                "the verifier key is for {:?}, but this log's origin is {origin:?}",
                v.name
            )));
        }
        out.push(v);
    }
    Ok(out)
}

fn checkpoint_with_any(note: &str, verifiers: &[NoteVerifier]) -> Result<CheckpointBody, String> {
    let mut last = String::new();
    for v in verifiers {
        match verify_checkpoint(note, v) {
            Ok(cp) => return Ok(cp),
            Err(e) => last = e,
        }
    }
    Err(last)
}

struct Progress {
    enabled: bool,
    last: Instant,
    started: Instant,
}

impl Progress {
    fn tick(&mut self, records: u64, total_bytes: u64) {
        if self.enabled && self.last.elapsed().as_secs_f64() >= 1.0 {
            self.last = Instant::now();
            let rate = records as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            let _ = writeln!(
                std::io::stderr(),
                "vigil verify: {records} records checked ({:.0}/s) of a log of {total_bytes} bytes",
                rate
            );
        }
    }
}

/// Verifies a data directory; see the module docs for what is checked.
pub fn verify_log(opts: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
    let origin = std::fs::read_to_string(opts.data.join("origin"))
        .map_err(|e| {
            VerifyError::Usage(format!(
                "{} is not a Vigil data directory (no origin file: {e})",
                opts.data.display()
            ))
        })?
        .trim_end()
        .to_string();
    let verifiers = load_verifiers(opts, &origin)?;
    let keys = load_keys(opts)?;
    let log_dir = opts.data.join("log");
    let segments = list_segments(&log_dir)
        .map_err(|e| VerifyError::Usage(format!("cannot list {}: {e}", log_dir.display())))?;
    let total_bytes: u64 = segments
        .iter()
        .filter_map(|(_, p)| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let mut report = VerifyReport::default();
    let mut tree = Tree::new();
    let mut prev = [0u8; 32];
    let mut claimed: HashSet<[u8; 32]> = HashSet::new();
    let mut progress = Progress {
        enabled: opts.progress,
        last: Instant::now(),
        started: Instant::now(),
    };
    let count = segments.len();
    for (n, (first, path)) in segments.iter().enumerate() {
        let file = rel(&opts.data, path);
        if *first != tree.size() {
            return Err(invalid(
                file.to_string(),
                format!("the segment starts at index {first}, but the records before it end at index {}", tree.size()),
            ));
        }
        let mut failure: Option<VerifyError> = None;
        let (_, end) = scan_segment(path, *first, |_, record| {
            let index = tree.size();
            let place = format!("{file}, index {index}");
            let result = check_record(
                &record.body,
                &record.event,
                index,
                &origin,
                &prev,
                &keys,
                &mut claimed,
            );
            match result {
                Ok((leaf_verdict, leaf, chain)) => {
                    if opts.collect_accepted && leaf_verdict == Verdict::Accepted {
                        if let Ok(b) = serde_json::from_slice::<ReceiptBody>(&record.body) {
                            report
                                .accepted_ids
                                .push((b.agent_id, b.event_id, b.event_hash, index));
                        }
                    }
                    tree.push(leaf);
                    prev = chain;
                    match leaf_verdict {
                        Verdict::Accepted => report.accepted += 1,
                        Verdict::Rejected(_) => report.rejected += 1,
                    }
                    progress.tick(tree.size(), total_bytes);
                    Ok(())
                }
                Err(what) => {
                    failure = Some(invalid(place, what.clone()));
                    Err(what)
                }
            }
        })
        .map_err(|e| VerifyError::Usage(format!("cannot read {file}: {e}")))?;
        if let Some(f) = failure {
            return Err(f);
        }
        match end {
            ScanEnd::Clean => {}
            ScanEnd::Torn { offset, why } if n + 1 == count => report.warnings.push(format!(
                "{file}: an incomplete record at byte {offset} after index {} ({why}); a crash leaves this, \
                 it was never acknowledged, and vigil cuts it on its next start",
                tree.size().saturating_sub(1)
            )),
            ScanEnd::Torn { offset, why } | ScanEnd::Corrupt { offset, why } => {
                return Err(invalid(format!("{file}, index {} (byte {offset})", tree.size()), why));
            }
        }
    }
    report.records = tree.size();
    report.root = tree.root(tree.size());
    let cp_path = opts.data.join("checkpoints.log");
    let scan = read_checkpoints(&cp_path)
        .map_err(|e| VerifyError::Usage(format!("cannot read checkpoints.log: {e}")))?;
    if let Some((offset, why)) = scan.corrupt {
        return Err(invalid(format!("checkpoints.log (byte {offset})"), why));
    }
    if let Some((offset, why)) = scan.torn {
        report.warnings.push(format!(
            "checkpoints.log: an incomplete last checkpoint at byte {offset} ({why}); never served"
        ));
    }
    let mut previous: Option<CheckpointBody> = None;
    for cp in &scan.checkpoints {
        let place = format!("checkpoints.log, checkpoint {}", cp.ordinal);
        let body = checkpoint_with_any(&cp.note, &verifiers).map_err(|e| invalid(&place, e))?;
        check_against_log(&body, &tree).map_err(|e| invalid(&place, e))?;
        if let Some(p) = &previous {
            if body.size < p.size {
                return Err(invalid(
                    &place,
                    format!(
                        "its size {} is smaller than the checkpoint before it ({})",
                        body.size, p.size
                    ),
                ));
            }
            if p.size > 0 {
                let proof = tree.consistency_proof(p.size, body.size);
                if !verify_consistency(p.size, body.size, &p.root, &body.root, &proof) {
                    return Err(invalid(
                        &place,
                        "it is not consistent with the checkpoint before it",
                    ));
                }
            }
        }
        report.latest_size = body.size;
        previous = Some(body);
    }
    report.checkpoints = scan.checkpoints.len();
    if report.checkpoints == 0 {
        return Err(invalid(
            "checkpoints.log",
            "the log has no checkpoint at all; every log signs one at creation",
        ));
    }
    if let Some(path) = &opts.checkpoint {
        let note = std::fs::read_to_string(path).map_err(|e| {
            VerifyError::Usage(format!("cannot read --checkpoint {}: {e}", path.display()))
        })?;
        let place = format!("the trusted checkpoint {}", path.display());
        let body = checkpoint_with_any(&note, &verifiers).map_err(|e| invalid(&place, e))?;
        check_against_log(&body, &tree).map_err(|e| invalid(&place, e))?;
    }
    Ok(report)
}

fn check_against_log(cp: &CheckpointBody, tree: &Tree) -> Result<(), String> {
    if cp.size > tree.size() {
        return Err(format!(
            "it covers {} records but the log holds only {}: records were deleted or the log was truncated",
            cp.size,
            tree.size()
        ));
    }
    if tree.root(cp.size) != cp.root {
        return Err(format!("its root does not match the log's first {} records: records were altered, removed or reordered", cp.size));
    }
    Ok(())
}

fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

type Checked = (Verdict, [u8; 32], [u8; 32]);

fn check_record(
    body_jcs: &[u8],
    event_raw: &[u8],
    index: u64,
    origin: &str,
    prev: &[u8; 32],
    keys: &KeyBook,
    claimed: &mut HashSet<[u8; 32]>,
) -> Result<Checked, String> {
    let body: ReceiptBody = serde_json::from_slice(body_jcs)
        .map_err(|e| format!("the receipt body is not a receipt: {e}"))?;
    check_body(&body, body_jcs, index, origin, prev)?;
    let verdict = body.verdict().expect("check_body checked the verdict");
    let event = Event::parse(event_raw)
        .map_err(|u| format!("the stored event does not parse: {}", u.message()))?;
    if hex::encode(event.event_hash) != body.event_hash {
        return Err(format!(
            "the stored event hashes to {}, not the receipt's event_hash {}",
            hex::encode(event.event_hash),
            body.event_hash
        ));
    }
    for (name, in_body) in [
        ("event_id", &body.event_id),
        ("agent_id", &body.agent_id),
        ("key_id", &body.key_id),
        ("correlation_id", &body.correlation_id),
    ] {
        if event.str_field(name) != in_body {
            return Err(format!(
                "the receipt's {name} {in_body:?} is not the event's {:?}",
                event.str_field(name)
            ));
        }
    }
    if verdict == Verdict::Accepted {
        let checked = check_schema(&event, event_raw.len())
            .map_err(|e| format!("an accepted event breaks the event schema: {e}"))?;
        let candidates = keys.0.get(&(body.agent_id.clone(), body.key_id.clone())).ok_or_else(|| {
            format!(
                "no key {:?} of agent {:?} is known to check the accepted event's signature; pass the agent's JWKS with --keys",
                body.key_id, body.agent_id
            )
        })?;
        if !candidates
            .iter()
            .any(|k| verify_sig(k, &event.canonical.without, &checked.signature))
        {
            return Err(format!(
                "the accepted event's signature does not verify with key {:?} of agent {:?}",
                body.key_id, body.agent_id
            ));
        }
        if !claimed.insert(id_key(&body.agent_id, &body.event_id)) {
            return Err(format!(
                "event {:?} of agent {:?} is accepted a second time",
                body.event_id, body.agent_id
            ));
        }
    }
    let leaf = crate::log::receipt::leaf_hash(body_jcs);
    Ok((verdict, leaf, crate::log::receipt::chain_hash(prev, &leaf)))
}
