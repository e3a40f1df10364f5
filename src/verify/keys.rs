//! The keys `vigil verify` checks signatures with: the key history the
//! verified log establishes as it is walked, plus keys the auditor gives
//! with `--keys` (JWKS documents, or JSON lines of JWKs such as the key
//! snapshot older versions kept), which hold from the start of the log.
//! Never an unlogged file of the data directory.

use std::path::Path;

use serde_json::Value as J;

use super::VerifyError;
use crate::keys::history::{KeyChange, KeyHistory, KEY_ADDED};

/// The starting key history: the keys given with `--keys`.
pub fn given_keys(paths: &[impl AsRef<Path>]) -> Result<KeyHistory, VerifyError> {
    let mut history = KeyHistory::default();
    for path in paths {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            VerifyError::Usage(format!("cannot read --keys {}: {e}", path.display()))
        })?;
        for jwk in jwks_in(&text).map_err(|why| {
            VerifyError::Usage(format!(
                "--keys {} is not a JWKS or JSON lines of JWKs: {why}",
                path.display()
            ))
        })? {
            if jwk.get("agent_id").and_then(J::as_str) == Some(crate::event::PIPELINE_AGENT) {
                continue;
            }
            history
                .apply(&KeyChange {
                    action: KEY_ADDED,
                    jwk,
                })
                .map_err(|e| VerifyError::Usage(format!("--keys {}: {e}", path.display())))?;
        }
    }
    Ok(history)
}

fn jwks_in(text: &str) -> Result<Vec<J>, String> {
    if let Ok(doc) = serde_json::from_str::<J>(text) {
        if let Some(keys) = doc.get("keys").and_then(J::as_array) {
            return Ok(keys.clone());
        }
        return Ok(vec![doc]);
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| e.to_string()))
        .collect()
}
