//! Loading agent keys from JWKS files, reloading them, and the key snapshot.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::jwks::JwksError;
use super::{parse_jwks, KeyDoc, KeySet};
use crate::event::sha256;
use crate::store::fsutil;

/// A source's last good document and the SHA-256 of its bytes.
type LoadedDoc = ([u8; 32], KeyDoc);

/// Where agent keys come from and the set currently in force.
pub struct KeyRegistry {
    current: RwLock<Arc<KeySet>>,
    sources: Vec<PathBuf>,
    docs: Mutex<Vec<Option<LoadedDoc>>>,
    /// SHA-256 of each source's last refused bytes, so that a refusal is
    /// reported and counted once per version of a file, not per poll.
    refused: Mutex<Vec<Option<[u8; 32]>>>,
    snapshot: Mutex<Snapshot>,
    refused_total: AtomicU64,
}

/// What a reload did, for the server's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadNote {
    /// A change taken.
    Info(String),
    /// A refusal or a problem: the previous keys stay in force.
    Warning(String),
}

/// Errors that stop the registry from starting.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A JWKS source could not be read.
    #[error(
        "cannot read JWKS file {path}: {source}; check the path given to --keys or [keys] jwks"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A JWKS source was refused at start-up.
    #[error("JWKS file {path} is refused: {why}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// Why.
        why: JwksError,
    },
    /// A source is an https URL, which this build does not fetch.
    #[error("JWKS source {0} is a URL; this build reads JWKS files only: download the document to a file and pass its path")]
    Url(String),
    /// The key snapshot could not be written.
    #[error("cannot write the key snapshot {path}: {source}")]
    Snapshot {
        /// The snapshot file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

struct Snapshot {
    path: PathBuf,
    known: HashSet<String>,
}

impl Snapshot {
    fn open(path: &Path) -> std::io::Result<Snapshot> {
        let known = match std::fs::read_to_string(path) {
            Ok(text) => text.lines().map(String::from).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
            Err(e) => return Err(e),
        };
        Ok(Snapshot {
            path: path.to_path_buf(),
            known,
        })
    }

    /// Appends keys not yet recorded and syncs before returning.
    fn record<'a>(
        &mut self,
        jwks: impl Iterator<Item = &'a serde_json::Value>,
    ) -> std::io::Result<()> {
        let mut lines = String::new();
        let mut new = Vec::new();
        for jwk in jwks {
            let line = serde_json::to_string(jwk).expect("a JSON value always serialises");
            if !self.known.contains(&line) && !new.contains(&line) {
                lines.push_str(&line);
                lines.push('\n');
                new.push(line);
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        fsutil::append_durably(&self.path, lines.as_bytes())?;
        self.known.extend(new);
        Ok(())
    }
}

impl KeyRegistry {
    /// Loads every source (refusing to start on any error) and records the
    /// keys, plus `extra_public_jwks` (the pipeline's own), in the snapshot.
    pub fn open(
        sources: &[String],
        snapshot_path: &Path,
        extra_public_jwks: &[serde_json::Value],
    ) -> Result<KeyRegistry, KeyError> {
        let mut paths = Vec::new();
        for s in sources {
            if s.starts_with("https://") || s.starts_with("http://") {
                return Err(KeyError::Url(s.clone()));
            }
            paths.push(PathBuf::from(s));
        }
        let mut docs = Vec::new();
        for path in &paths {
            let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
                path: path.clone(),
                source,
            })?;
            let doc = parse_jwks(&bytes).map_err(|why| KeyError::Refused {
                path: path.clone(),
                why,
            })?;
            docs.push(Some((sha256(&bytes), doc)));
        }
        let set = KeySet::merge(docs.iter().flatten().map(|(_, d)| d)).map_err(|why| {
            KeyError::Refused {
                path: paths.last().cloned().unwrap_or_default(),
                why: why.into(),
            }
        })?;
        for note in &set.tightened {
            tracing::warn!("{note}");
        }
        let snap_err = |source| KeyError::Snapshot {
            path: snapshot_path.to_path_buf(),
            source,
        };
        let mut snapshot = Snapshot::open(snapshot_path).map_err(snap_err)?;
        snapshot
            .record(set.keys().map(|k| &k.jwk).chain(extra_public_jwks.iter()))
            .map_err(snap_err)?;
        Ok(KeyRegistry {
            current: RwLock::new(Arc::new(set)),
            sources: paths.clone(),
            refused: Mutex::new(vec![None; paths.len()]),
            docs: Mutex::new(docs),
            snapshot: Mutex::new(snapshot),
            refused_total: AtomicU64::new(0),
        })
    }

    /// The key set in force now.
    pub fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .expect("the key set lock is never poisoned")
            .clone()
    }

    /// How many documents have been refused since start.
    pub fn refused_total(&self) -> u64 {
        self.refused_total.load(Ordering::Relaxed)
    }

    /// Re-reads every source; a changed document that is refused (alone or
    /// merged with the others) leaves its previous version in force. Returns
    /// one line per change or refusal, for the log.
    pub fn reload(&self) -> Vec<ReloadNote> {
        let mut report = Vec::new();
        let mut docs = self
            .docs
            .lock()
            .expect("the key docs lock is never poisoned");
        let mut changed = false;
        for (i, path) in self.sources.iter().enumerate() {
            let bytes = match std::fs::read(path) {
                Ok(b) => b,
                Err(e) => {
                    self.refused_total.fetch_add(1, Ordering::Relaxed);
                    report.push(ReloadNote::Warning(format!(
                        "JWKS file {} cannot be read ({e}); its previous keys stay in force",
                        path.display()
                    )));
                    continue;
                }
            };
            let fingerprint = sha256(&bytes);
            if docs[i].as_ref().is_some_and(|(f, _)| *f == fingerprint) {
                continue;
            }
            let mut refused = self
                .refused
                .lock()
                .expect("the refused lock is never poisoned");
            if refused[i] == Some(fingerprint) {
                continue;
            }
            refused[i] = Some(fingerprint);
            drop(refused);
            let doc = match parse_jwks(&bytes) {
                Ok(d) => d,
                Err(why) => {
                    self.refused_total.fetch_add(1, Ordering::Relaxed);
                    report.push(ReloadNote::Warning(format!(
                        "JWKS file {} refused: {why}; its previous keys stay in force",
                        path.display()
                    )));
                    continue;
                }
            };
            let previous = docs[i].replace((fingerprint, doc));
            if let Err(why) = KeySet::merge(docs.iter().flatten().map(|(_, d)| d)) {
                docs[i] = previous;
                self.refused_total.fetch_add(1, Ordering::Relaxed);
                report.push(ReloadNote::Warning(format!(
                    "JWKS file {} refused: it conflicts with another source: {why}; its previous keys stay in force",
                    path.display()
                )));
                continue;
            }
            changed = true;
            report.push(ReloadNote::Info(format!(
                "JWKS file {} reloaded",
                path.display()
            )));
        }
        if changed {
            // Another source changed: documents refused for conflicting with
            // it get another chance.
            self.refused
                .lock()
                .expect("the refused lock is never poisoned")
                .iter_mut()
                .for_each(|r| *r = None);
            let set = KeySet::merge(docs.iter().flatten().map(|(_, d)| d))
                .expect("each accepted document was merged successfully above");
            report.extend(set.tightened.iter().cloned().map(ReloadNote::Warning));
            let mut snapshot = self
                .snapshot
                .lock()
                .expect("the snapshot lock is never poisoned");
            if let Err(e) = snapshot.record(set.keys().map(|k| &k.jwk)) {
                self.refused_total.fetch_add(1, Ordering::Relaxed);
                report.push(ReloadNote::Warning(format!(
                    "new keys not taken: the key snapshot {} cannot be written ({e})",
                    snapshot.path.display()
                )));
                return report;
            }
            *self
                .current
                .write()
                .expect("the key set lock is never poisoned") = Arc::new(set);
        }
        report
    }
}
