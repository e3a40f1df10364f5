//! Logging key changes before they are in force (contract section 6a):
//! the pipeline's own key, every agent key first seen, each change of a
//! key's validity or agent record, and each removal become events of
//! agent `vigil` in the log; only once they are durable is the new key
//! set used to judge events. The history is kept in `DIR/index/keys.json`
//! (derived from the log: rebuilt from it when missing; a crash between an
//! event and the file's update makes the change be logged again, which is
//! harmless).

use std::path::PathBuf;

use super::{Pipeline, PipelineError};
use crate::keys::history::{KeyChange, KeyHistory, PIPELINE_KEY};
use crate::keys::registry::ReloadNote;
use crate::store::fsutil::write_file_durably;

/// The log's key history as the server holds it.
pub struct KeyLog {
    history: tokio::sync::Mutex<KeyHistory>,
    path: PathBuf,
    /// Held (shared) by each batch from taking its key set until it is
    /// queued to the writer; held alone while key changes are logged and
    /// put in force. So every batch judged with the old keys is sequenced
    /// before the change's events, and every batch after them is judged
    /// with the new keys: an event the old keys accepted cannot land after
    /// the event that removed its key.
    pub(super) gate: tokio::sync::RwLock<()>,
}

impl KeyLog {
    /// The history loaded (or rebuilt) at open, kept in `path`.
    pub fn new(history: KeyHistory, path: PathBuf) -> KeyLog {
        KeyLog {
            history: tokio::sync::Mutex::new(history),
            path,
            gate: tokio::sync::RwLock::new(()),
        }
    }
}

/// Reads a saved key history; `None` when there is none.
pub fn load_history(path: &std::path::Path) -> Option<KeyHistory> {
    let bytes = std::fs::read(path).ok()?;
    let j: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    KeyHistory::from_json(&j).ok()
}

impl Pipeline {
    /// Logs the pipeline's key (once per log) and every change the keys in
    /// force bring to the log's key history. Call before serving.
    pub async fn log_keys_in_force(&self) -> Result<usize, PipelineError> {
        let mut history = self.keylog.history.lock().await;
        let mut changes = Vec::new();
        let pipeline_jwk = self.data.pipeline_key.public_jwk();
        let kid = pipeline_jwk["kid"].as_str().unwrap_or("").to_string();
        if history.pipeline_key(&kid).is_none() {
            changes.push(KeyChange {
                action: PIPELINE_KEY,
                jwk: pipeline_jwk,
            });
        }
        changes.extend(history.diff(&self.keys.current()).map_err(|e| {
            PipelineError::Failed(format!(
                "the keys loaded at start conflict with the log's key history: {e}"
            ))
        })?);
        self.log_changes(&mut history, changes).await
    }

    /// Has the verification tables of the keys in force built, when they
    /// all fit the tables' budget ([`TableCache::prepare`]).
    ///
    /// [`TableCache::prepare`]: crate::event::tables::TableCache::prepare
    pub(crate) fn prepare_tables(&self) {
        self.tables
            .prepare(self.keys.current().keys().map(|k| &k.key));
    }

    /// Re-reads the key sources; logs the changes they bring, then puts
    /// them in force. Returns notes for the server's log.
    pub async fn reload_keys(&self) -> Vec<ReloadNote> {
        let keys = self.keys.clone();
        let Ok((candidate, mut notes)) =
            tokio::task::spawn_blocking(move || keys.prepare_reload()).await
        else {
            return vec![ReloadNote::Warning("the key reload task failed".into())];
        };
        let Some(candidate) = candidate else {
            return notes;
        };
        let mut history = self.keylog.history.lock().await;
        let _alone = self.keylog.gate.write().await;
        match history.diff(&candidate.set) {
            Err(e) => notes.push(self.keys.refuse(&candidate, &e.to_string())),
            Ok(changes) => match self.log_changes(&mut history, changes).await {
                Ok(_) => {
                    notes.extend(self.keys.commit(candidate));
                    self.prepare_tables();
                }
                Err(e) => notes.push(ReloadNote::Warning(format!(
                    "new keys not taken: their changes could not be logged ({e}); retried at the next reload"
                ))),
            },
        }
        notes
    }

    async fn log_changes(
        &self,
        history: &mut KeyHistory,
        changes: Vec<KeyChange>,
    ) -> Result<usize, PipelineError> {
        let n = changes.len();
        for change in changes {
            let result = self
                .append_own(change.action, change.event_fields())
                .await?;
            if result.receipt.is_none() {
                return Err(PipelineError::Failed(format!(
                    "the {} event got no receipt",
                    change.action
                )));
            }
            history
                .apply(&change)
                .map_err(|e| PipelineError::Failed(e.to_string()))?;
        }
        if n > 0 {
            let bytes = serde_json::to_vec_pretty(&history.to_json()).expect("JSON serialises");
            write_file_durably(&self.keylog.path, &bytes, 0o644).map_err(|e| {
                PipelineError::Failed(format!("cannot write {}: {e}", self.keylog.path.display()))
            })?;
            tracing::info!(changes = n, "Logged key changes in the receipt log");
        }
        Ok(n)
    }
}
