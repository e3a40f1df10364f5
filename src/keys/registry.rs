//! Loading agent keys from JWKS files and reloading them.
//!
//! A reload is in two steps: [`KeyRegistry::prepare_reload`] reads the
//! sources and merges a candidate set; the caller logs the key changes it
//! brings (contract section 6a) and only then puts it in force with
//! [`KeyRegistry::commit`], or refuses it with [`KeyRegistry::refuse`].
//! A candidate that is neither committed nor refused (logging failed) is
//! prepared again at the next reload.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::jwks::JwksError;
use super::{parse_jwks, KeyDoc, KeySet, MergeError};
use crate::event::sha256;

/// A source's document and the SHA-256 of its bytes.
type LoadedDoc = ([u8; 32], KeyDoc);

/// What reading a source again found.
enum Reread {
    /// What is loaded, or what was refused last time: nothing to do.
    Same,
    /// The administrators' document is gone or empty: its keys go.
    Gone,
    /// A document (or a read error, the zero fingerprint) to refuse.
    Refused {
        /// The refused bytes' SHA-256.
        fingerprint: [u8; 32],
        /// Why, after "JWKS file PATH".
        why: String,
    },
    /// A new document that parses.
    New {
        /// Its bytes' SHA-256.
        fingerprint: [u8; 32],
        /// The document.
        doc: KeyDoc,
    },
}

/// Where agent keys come from and the set currently in force.
pub struct KeyRegistry {
    current: RwLock<Arc<KeySet>>,
    sources: Vec<PathBuf>,
    /// Which source is the admin routes' document (the last, if any): a
    /// missing file or one with no keys is simply no document.
    admin: Option<usize>,
    /// The documents of the set in force.
    docs: Mutex<Vec<Option<LoadedDoc>>>,
    /// SHA-256 of each source's last refused bytes, so that a refusal is
    /// reported and counted once per version of a file, not per poll.
    refused: Mutex<Vec<Option<[u8; 32]>>>,
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

/// A merged set of keys read from the sources, not yet in force.
pub struct Candidate {
    /// The merged set.
    pub set: KeySet,
    docs: Vec<Option<LoadedDoc>>,
    /// The sources whose documents changed.
    pub changed: Vec<usize>,
    /// What reading them found.
    pub notes: Vec<ReloadNote>,
}

/// Merges the sources' documents, the admin document last and overriding
/// records.
fn merge_docs(docs: &[Option<LoadedDoc>], admin: Option<usize>) -> Result<KeySet, MergeError> {
    let others = docs
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != admin)
        .filter_map(|(_, d)| d.as_ref().map(|(_, d)| d));
    let admin_doc = admin.and_then(|i| docs[i].as_ref()).map(|(_, d)| d);
    KeySet::merge_with_admin(others, admin_doc)
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
}

impl KeyRegistry {
    /// Loads every source, refusing to start on any error. The set is in
    /// force at once: the caller logs its keys before it serves anything.
    pub fn open(sources: &[String], admin: Option<PathBuf>) -> Result<KeyRegistry, KeyError> {
        let mut paths = Vec::new();
        for s in sources {
            if s.starts_with("https://") || s.starts_with("http://") {
                return Err(KeyError::Url(s.clone()));
            }
            paths.push(PathBuf::from(s));
        }
        let admin_index = admin.as_ref().map(|_| paths.len());
        paths.extend(admin);
        let mut docs = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            let bytes = match std::fs::read(path) {
                Err(e) if Some(i) == admin_index && e.kind() == std::io::ErrorKind::NotFound => {
                    docs.push(None);
                    continue;
                }
                r => r.map_err(|source| KeyError::Read {
                    path: path.clone(),
                    source,
                })?,
            };
            if Some(i) == admin_index && matches!(parse_jwks(&bytes), Err(JwksError::Empty)) {
                docs.push(None);
                continue;
            }
            let doc = parse_jwks(&bytes).map_err(|why| KeyError::Refused {
                path: path.clone(),
                why,
            })?;
            docs.push(Some((sha256(&bytes), doc)));
        }
        let set = merge_docs(&docs, admin_index).map_err(|why| KeyError::Refused {
            path: paths.last().cloned().unwrap_or_default(),
            why: why.into(),
        })?;
        for note in &set.tightened {
            tracing::warn!("{note}");
        }
        Ok(KeyRegistry {
            current: RwLock::new(Arc::new(set)),
            refused: Mutex::new(vec![None; paths.len()]),
            sources: paths,
            admin: admin_index,
            docs: Mutex::new(docs),
            refused_total: AtomicU64::new(0),
        })
    }

    /// The key set in force now.
    pub fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// How many documents have been refused since start.
    pub fn refused_total(&self) -> u64 {
        self.refused_total.load(Ordering::Relaxed)
    }

    /// The sources' paths.
    pub fn source(&self, i: usize) -> &std::path::Path {
        &self.sources[i]
    }

    /// Re-reads every source; returns the merged candidate when a document
    /// changed and the merge holds (a changed document that is refused,
    /// alone or merged with the others, leaves its previous version in the
    /// candidate), with notes for the log either way.
    pub fn prepare_reload(&self) -> (Option<Candidate>, Vec<ReloadNote>) {
        let mut notes = Vec::new();
        let mut docs = self
            .docs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut refused = self
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut changed = Vec::new();
        for i in 0..self.sources.len() {
            let found = self.reread(i, &docs[i], refused[i]);
            let mut refuse = |fingerprint, why: String| {
                refused[i] = Some(fingerprint);
                self.refused_total.fetch_add(1, Ordering::Relaxed);
                notes.push(ReloadNote::Warning(format!(
                    "JWKS file {} {why}; its previous keys stay in force",
                    self.sources[i].display()
                )));
            };
            let (fingerprint, doc) = match found {
                Reread::Same => continue,
                Reread::Refused { fingerprint, why } => {
                    refuse(fingerprint, why);
                    continue;
                }
                Reread::Gone => {
                    if docs[i].take().is_some() {
                        changed.push(i);
                    }
                    continue;
                }
                Reread::New { fingerprint, doc } => (fingerprint, doc),
            };
            let previous = docs[i].replace((fingerprint, doc));
            if let Err(why) = merge_docs(&docs, self.admin) {
                docs[i] = previous;
                refuse(
                    fingerprint,
                    format!("refused: it conflicts with another source: {why}"),
                );
                continue;
            }
            changed.push(i);
        }
        if changed.is_empty() {
            return (None, notes);
        }
        let set = merge_docs(&docs, self.admin)
            .expect("each changed document was merged successfully above");
        notes.extend(set.tightened.iter().cloned().map(ReloadNote::Warning));
        let candidate_notes = changed
            .iter()
            .map(|&i| ReloadNote::Info(format!("JWKS file {} reloaded", self.sources[i].display())))
            .collect();
        (
            Some(Candidate {
                set,
                docs,
                changed,
                notes: candidate_notes,
            }),
            notes,
        )
    }

    /// Reads source `i` again, given what is loaded from it and the
    /// fingerprint last refused from it (a read error counts as the zero
    /// fingerprint, so it is noted once).
    fn reread(&self, i: usize, loaded: &Option<LoadedDoc>, refused: Option<[u8; 32]>) -> Reread {
        let path = &self.sources[i];
        let admin = Some(i) == self.admin;
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if admin && e.kind() == std::io::ErrorKind::NotFound => return Reread::Gone,
            Err(_) if refused == Some([0; 32]) => return Reread::Same,
            Err(e) => {
                return Reread::Refused {
                    fingerprint: [0; 32],
                    why: format!("cannot be read ({e})"),
                }
            }
        };
        let fingerprint = sha256(&bytes);
        if loaded.as_ref().is_some_and(|(f, _)| *f == fingerprint) || refused == Some(fingerprint) {
            return Reread::Same;
        }
        match parse_jwks(&bytes) {
            Ok(doc) => Reread::New { fingerprint, doc },
            Err(JwksError::Empty) if admin => Reread::Gone,
            Err(why) => Reread::Refused {
                fingerprint,
                why: format!("refused: {why}"),
            },
        }
    }

    /// Puts a candidate in force (after its key changes are logged).
    pub fn commit(&self, candidate: Candidate) -> Vec<ReloadNote> {
        *self
            .docs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = candidate.docs;
        // Another source changed: documents refused for conflicting with it
        // get another chance.
        self.refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter_mut()
            .for_each(|r| *r = None);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(candidate.set);
        candidate.notes
    }

    /// Refuses a candidate (its keys conflict with the log's key history):
    /// the documents that changed stay refused until they change again.
    pub fn refuse(&self, candidate: &Candidate, why: &str) -> ReloadNote {
        let mut refused = self
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for &i in &candidate.changed {
            refused[i] = candidate.docs[i].as_ref().map(|(f, _)| *f);
        }
        self.refused_total.fetch_add(1, Ordering::Relaxed);
        let files: Vec<String> = candidate
            .changed
            .iter()
            .map(|&i| self.sources[i].display().to_string())
            .collect();
        ReloadNote::Warning(format!(
            "JWKS file(s) {} refused: {why}; the previous keys stay in force",
            files.join(", ")
        ))
    }
}
