//! Receipt proofs as c2sp.org/tlog-proof@v1 texts (contract section 4).
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra <b64 of JCS(receipt body)>
//! index <N>
//! <b64 inclusion proof hash, one a line>
//!
//! <checkpoint, verbatim>
//! ```

use crate::event::signature::{b64, b64_decode};
use crate::event::Event;
use crate::event::Hash;
use crate::log::merkle::{leaf_hash, verify_inclusion};
use crate::log::note::{verify_checkpoint, CheckpointBody, NoteError, NoteVerifier};
use crate::log::receipt::ReceiptBody;

/// Why a receipt proof is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The text is not a tlog-proof@v1 (the message names the line).
    #[error("{0}")]
    Malformed(String),
    /// Its checkpoint is not signed by the key, or does not parse.
    #[error(transparent)]
    Checkpoint(#[from] NoteError),
    /// It parses and is signed, but does not prove what it claims.
    #[error("{0}")]
    Disproved(String),
}

/// The first line of every receipt proof.
pub const PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";

/// Builds a receipt proof text.
pub fn build_proof(body_jcs: &[u8], index: u64, path: &[Hash], checkpoint: &str) -> String {
    let mut out = format!("{PROOF_HEADER}\nextra {}\nindex {index}\n", b64(body_jcs));
    for h in path {
        out.push_str(&b64(h));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(checkpoint);
    out
}

/// A parsed receipt proof.
#[derive(Debug, Clone)]
pub struct ParsedProof {
    /// The decoded `extra` bytes (the receipt body's JCS), if present.
    pub extra: Option<Vec<u8>>,
    /// The leaf index.
    pub index: u64,
    /// The inclusion proof hashes.
    pub path: Vec<Hash>,
    /// The checkpoint note, verbatim.
    pub checkpoint: String,
}

/// Parses a tlog-proof@v1 text; errors name the line.
pub fn parse_proof(text: &str) -> Result<ParsedProof, ProofError> {
    let bad = |why: String| ProofError::Malformed(why);
    let (head, checkpoint) = text
        .split_once("\n\n")
        .ok_or_else(|| bad("the proof has no blank line before its checkpoint".into()))?;
    let mut lines = head.split('\n');
    if lines.next() != Some(PROOF_HEADER) {
        return Err(bad(format!("line 1 must be {PROOF_HEADER:?}")));
    }
    let no_index = || bad("the proof has no index line".into());
    let mut extra = None;
    let mut line = lines.next().ok_or_else(no_index)?;
    let mut n = 2;
    if let Some(e) = line.strip_prefix("extra ") {
        extra = Some(b64_decode(e).ok_or_else(|| bad(format!("line {n}: extra is not base64")))?);
        line = lines.next().ok_or_else(no_index)?;
        n += 1;
    }
    let idx = line
        .strip_prefix("index ")
        .ok_or_else(|| bad(format!("line {n}: expected \"index N\"")))?;
    if idx.is_empty()
        || !idx.bytes().all(|b| b.is_ascii_digit())
        || (idx.len() > 1 && idx.starts_with('0'))
    {
        return Err(bad(format!(
            "line {n}: the index {idx:?} is not a decimal number"
        )));
    }
    let index = idx
        .parse()
        .map_err(|_| bad(format!("line {n}: the index is too large")))?;
    let mut path = Vec::new();
    for l in lines {
        n += 1;
        let h = b64_decode(l)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| bad(format!("line {n}: not a base64 SHA-256 hash")))?;
        path.push(h);
    }
    Ok(ParsedProof {
        extra,
        index,
        path,
        checkpoint: checkpoint.to_string(),
    })
}

/// What a verified receipt proof establishes.
#[derive(Debug, Clone)]
pub struct VerifiedProof {
    /// The receipt body the proof carries.
    pub body: ReceiptBody,
    /// The checkpoint it is proven against.
    pub checkpoint: CheckpointBody,
}

/// Verifies a receipt proof with nothing but the verifier key (and, if
/// given, the event's bytes), as contract section 4 says.
pub fn verify_proof(
    text: &str,
    verifier: &NoteVerifier,
    event: Option<&[u8]>,
) -> Result<VerifiedProof, ProofError> {
    let p = parse_proof(text)?;
    let extra = p.extra.ok_or_else(|| {
        ProofError::Malformed("the proof has no extra line carrying the receipt body".into())
    })?;
    let body: ReceiptBody = serde_json::from_slice(&extra).map_err(|e| {
        ProofError::Malformed(format!("the receipt body in extra is not a receipt: {e}"))
    })?;
    let disproved = |why: String| Err(ProofError::Disproved(why));
    if body.index != p.index {
        return disproved(format!(
            "the receipt body's index {} is not the proof's index {}",
            body.index, p.index
        ));
    }
    let cp = verify_checkpoint(&p.checkpoint, verifier)?;
    if body.log != cp.origin {
        return disproved(format!(
            "the receipt's log {:?} is not the checkpoint's origin {:?}",
            body.log, cp.origin
        ));
    }
    let leaf = leaf_hash(&extra);
    if !verify_inclusion(p.index, cp.size, &leaf, &p.path, &cp.root) {
        return disproved(format!(
            "the inclusion proof does not lead from leaf {} to the root of the checkpoint of size {}",
            p.index, cp.size
        ));
    }
    if let Some(raw) = event {
        let ev = match Event::parse(raw) {
            Ok(ev) => ev,
            Err(e) => return disproved(format!("the event file: {}", e.message())),
        };
        if crate::hexenc::encode(ev.event_hash) != body.event_hash {
            return disproved(format!(
                "the event's hash {} is not the receipt's event_hash {}",
                crate::hexenc::encode(ev.event_hash),
                body.event_hash
            ));
        }
    }
    Ok(VerifiedProof {
        body,
        checkpoint: cp,
    })
}
