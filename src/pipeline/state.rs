//! The log's in-memory state and its recovery from the files at start.
//!
//! Per record Vigil keeps the Merkle tree's hashes, the chain hash and the
//! record's file position; per (agent, event id) the accepted claim and the
//! latest rejection, keyed by SHA-256(agent || 0 || event id). Everything
//! is rebuilt from the segments on start, so nothing here needs its own
//! persistence.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::event::{sha256, Event, Hash};
use crate::log::merkle::{leaf_hash, Tree};
use crate::log::note::{split_note, CheckpointBody};
use crate::log::receipt::{chain_hash, ReceiptBody, ServedReceipt, Verdict, RECEIPT_SPEC};
use crate::store::checkpoints::StoredCheckpoint;
use crate::store::segments::{list_segments, scan_segment, RecordRef, ScanEnd};

/// An accepted (agent, event id): the first accepted receipt wins it.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    /// Index of the accepted receipt.
    pub index: u64,
    /// Hash of the accepted event without its signature.
    pub content_hash: Hash,
    /// Hash of the accepted event as a whole.
    pub event_hash: Hash,
}

/// The latest rejection of an (agent, event id).
#[derive(Debug, Clone, Copy)]
pub struct Rejection {
    /// Index of the rejection receipt.
    pub index: u64,
    /// Hash of the rejected event as a whole.
    pub event_hash: Hash,
    /// The verdict it got.
    pub verdict: Verdict,
}

/// The in-memory state of one receipt log.
#[derive(Debug, Default)]
pub struct LogState {
    /// The log's origin.
    pub origin: String,
    /// Merkle tree over every record's leaf hash (durable or in the group
    /// being committed).
    pub tree: Tree,
    /// Chain hash of every record.
    pub chains: Vec<Hash>,
    /// File position of every record.
    pub positions: Vec<RecordRef>,
    /// Accepted claims.
    pub accepted: HashMap<Hash, Claim>,
    /// Latest rejection of each (agent, event id), for receipt lookups.
    pub rejected: HashMap<Hash, Rejection>,
    /// Every rejection by (agent, event id, event hash): a repeat with the
    /// same verdict is a duplicate of it.
    pub rejected_seen: HashMap<Hash, (Verdict, u64)>,
    /// Records known durable; readers see nothing at or past this.
    pub durable_size: u64,
    /// The latest checkpoint note, served as is.
    pub checkpoint: String,
    /// Tree size of the latest checkpoint.
    pub checkpoint_size: u64,
    /// Every checkpointed size, ascending (for consistency proofs).
    pub checkpoint_sizes: Vec<u64>,
}

/// The map key of one rejected event: (agent, event id, event hash).
pub fn rejection_key(agent_id: &str, event_id: &str, event_hash: &Hash) -> Hash {
    let mut buf = Vec::with_capacity(agent_id.len() + event_id.len() + 34);
    buf.extend_from_slice(agent_id.as_bytes());
    buf.push(0);
    buf.extend_from_slice(event_id.as_bytes());
    buf.push(0);
    buf.extend_from_slice(event_hash);
    sha256(&buf)
}

/// The map key of an (agent, event id).
pub fn id_key(agent_id: &str, event_id: &str) -> Hash {
    let mut buf = Vec::with_capacity(agent_id.len() + event_id.len() + 1);
    buf.extend_from_slice(agent_id.as_bytes());
    buf.push(0);
    buf.extend_from_slice(event_id.as_bytes());
    sha256(&buf)
}

impl LogState {
    /// The chain hash the next record's `prev` names.
    pub fn prev(&self) -> Hash {
        self.chains.last().copied().unwrap_or([0; 32])
    }

    /// Adds a record's hashes and indexes.
    pub fn add(
        &mut self,
        body: &ReceiptBody,
        body_jcs: &[u8],
        content_hash: Hash,
        event_hash: Hash,
        pos: RecordRef,
    ) {
        let leaf = leaf_hash(body_jcs);
        let chain = chain_hash(&self.prev(), &leaf);
        self.tree.push(leaf);
        self.chains.push(chain);
        self.positions.push(pos);
        let key = id_key(&body.agent_id, &body.event_id);
        match body.verdict() {
            Some(Verdict::Accepted) => {
                self.accepted.entry(key).or_insert(Claim {
                    index: body.index,
                    content_hash,
                    event_hash,
                });
            }
            Some(verdict) => {
                self.rejected.insert(
                    key,
                    Rejection {
                        index: body.index,
                        event_hash,
                        verdict,
                    },
                );
                self.rejected_seen
                    .entry(rejection_key(&body.agent_id, &body.event_id, &event_hash))
                    .or_insert((verdict, body.index));
            }
            None => {}
        }
    }

    /// The served receipt of record `index`, given its body's JCS bytes.
    pub fn served(&self, index: u64, body_jcs: &[u8]) -> ServedReceipt {
        let leaf = self
            .tree
            .leaf(index)
            .expect("a served record is in the tree");
        ServedReceipt::from_jcs(body_jcs, &leaf, &self.chains[index as usize])
    }

    /// Records a new latest checkpoint.
    pub fn set_checkpoint(&mut self, note: String, size: u64) {
        self.checkpoint = note;
        self.checkpoint_size = size;
        if self.checkpoint_sizes.last() != Some(&size) {
            self.checkpoint_sizes.push(size);
        }
    }
}

/// Why the log cannot be opened as it is on disk.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// Reading failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Damage that a crash cannot cause: the server refuses to run on it.
    #[error("the receipt log is damaged at {file}, {position}: {why}. A crash cannot cause this; \
             run `vigil verify --data DIR` to see what is wrong and restore the data directory from a copy")]
    Damaged {
        /// The file.
        file: String,
        /// Where in it.
        position: String,
        /// What is wrong.
        why: String,
    },
}

/// The result of recovery: state plus what the segment writer needs.
pub struct Recovered {
    /// The rebuilt state (durable size = every good record).
    pub state: LogState,
    /// The segments to keep, in order.
    pub segments: Vec<(u64, PathBuf)>,
    /// Good length of the last segment.
    pub active_len: Option<u64>,
    /// What recovery cut, for the log (file, offset, why).
    pub cut: Option<String>,
}

/// Rebuilds the log state from `log_dir`, cutting a torn tail that no
/// checkpoint covers, and checks the latest checkpoint against it.
pub fn recover(
    log_dir: &Path,
    origin: &str,
    checkpoints: &[StoredCheckpoint],
) -> Result<Recovered, RecoverError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RecoverError::Io { path, source }
    };
    let covered = match checkpoints.last() {
        Some(cp) => parse_stored(cp)?.size,
        None => 0,
    };
    let mut segments = list_segments(log_dir).map_err(io(log_dir))?;
    let mut state = LogState {
        origin: origin.to_string(),
        tree: Tree::new(),
        ..LogState::default()
    };
    let mut active_len = None;
    let mut cut = None;
    let count = segments.len();
    let mut keep = count;
    for (n, (first, path)) in segments.iter().enumerate() {
        let name = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let damaged = |position: String, why: String| RecoverError::Damaged {
            file: name.clone(),
            position,
            why,
        };
        if *first != state.tree.size() {
            return Err(damaged(
                "its name".into(),
                format!(
                    "the segment starts at index {first} but the log before it holds {} records",
                    state.tree.size()
                ),
            ));
        }
        let (_, end) = scan_segment(path, *first, |offset, record| {
            let body: ReceiptBody = serde_json::from_slice(&record.body)
                .map_err(|e| format!("the receipt body is not a receipt: {e}"))?;
            let index = state.tree.size();
            check_body(&body, &record.body, index, origin, &state.prev())?;
            let (content, event_hash) = match Event::parse(&record.event) {
                Ok(ev) => (ev.content_hash, ev.event_hash),
                Err(_) => return Err("the stored event bytes do not parse".into()),
            };
            if hex::encode(event_hash) != body.event_hash {
                return Err("the stored event does not match the receipt's event_hash".into());
            }
            state.add(
                &body,
                &record.body,
                content,
                event_hash,
                RecordRef {
                    segment: n as u32,
                    offset,
                },
            );
            Ok(())
        })
        .map_err(io(path))?;
        let last = n + 1 == count;
        match end {
            ScanEnd::Clean => {
                if last {
                    active_len = Some(std::fs::metadata(path).map_err(io(path))?.len());
                }
            }
            ScanEnd::Torn { offset, why } if last => {
                if state.tree.size() < covered {
                    return Err(damaged(
                        format!("index {} (byte {offset})", state.tree.size()),
                        format!("{why}, but checkpoint size {covered} covers it"),
                    ));
                }
                if offset == 0 {
                    // A segment whose header never became durable: drop it.
                    std::fs::remove_file(path).map_err(io(path))?;
                    keep = n;
                    active_len = match n.checked_sub(1) {
                        Some(p) => Some(
                            std::fs::metadata(&segments[p].1)
                                .map_err(io(&segments[p].1))?
                                .len(),
                        ),
                        None => None,
                    };
                } else {
                    active_len = Some(offset);
                }
                cut = Some(format!(
                    "{name} from byte {offset} (index {}): {why}",
                    state.tree.size()
                ));
            }
            ScanEnd::Torn { offset, why } | ScanEnd::Corrupt { offset, why } => {
                return Err(damaged(
                    format!("index {} (byte {offset})", state.tree.size()),
                    why,
                ));
            }
        }
    }
    segments.truncate(keep);
    state.durable_size = state.tree.size();
    for cp in checkpoints {
        let body = parse_stored(cp)?;
        if body.size > state.tree.size() {
            return Err(RecoverError::Damaged {
                file: "checkpoints.log".into(),
                position: format!("checkpoint {}", cp.ordinal),
                why: format!(
                    "it covers {} records but the log holds {}: records were removed",
                    body.size,
                    state.tree.size()
                ),
            });
        }
        if state.tree.root(body.size) != body.root {
            return Err(RecoverError::Damaged {
                file: "checkpoints.log".into(),
                position: format!("checkpoint {}", cp.ordinal),
                why: format!(
                    "its root does not match the log's first {} records",
                    body.size
                ),
            });
        }
        state.set_checkpoint(cp.note.clone(), body.size);
    }
    Ok(Recovered {
        state,
        segments,
        active_len,
        cut,
    })
}

fn parse_stored(cp: &StoredCheckpoint) -> Result<CheckpointBody, RecoverError> {
    split_note(&cp.note)
        .and_then(|(body, _)| CheckpointBody::parse(body))
        .map_err(|why| RecoverError::Damaged {
            file: "checkpoints.log".into(),
            position: format!("checkpoint {}", cp.ordinal),
            why,
        })
}

/// Checks a stored receipt body against its position in the log.
pub fn check_body(
    body: &ReceiptBody,
    jcs: &[u8],
    index: u64,
    origin: &str,
    prev: &Hash,
) -> Result<(), String> {
    if body.index != index {
        return Err(format!(
            "the receipt says index {} but stands at index {index}",
            body.index
        ));
    }
    if body.spec != RECEIPT_SPEC {
        return Err(format!("the receipt's spec is {:?}", body.spec));
    }
    if body.log != origin {
        return Err(format!(
            "the receipt names log {:?}, not {origin:?}",
            body.log
        ));
    }
    if body.prev != hex::encode(prev) {
        return Err(format!(
            "the receipt's prev {} is not the chain hash of the record before it ({})",
            body.prev,
            hex::encode(prev)
        ));
    }
    if body.verdict().is_none() {
        return Err(format!(
            "the receipt's verdict {:?} is not one the contract names",
            body.verdict
        ));
    }
    if body.to_jcs() != jcs {
        return Err("the stored receipt body is not in canonical (JCS) form".into());
    }
    Ok(())
}
