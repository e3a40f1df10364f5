//! The data directory's identity: lock, origin, log key, pipeline key,
//! admin token.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;

use super::fsutil::{create_dir_durably, create_new_durably, write_file_durably};
use super::layout::Layout;
use crate::event::signature::{b64url, generate_key};
use crate::event::{sha256, PIPELINE_AGENT};
use crate::keys::private::PrivateJwk;
use crate::log::note::{check_origin, verifier_key};
use crate::time::Timestamp;

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Another process holds the directory.
    #[error(
        "the data directory {0} is in use by another vigil process; stop it or pick another --data"
    )]
    Locked(PathBuf),
    /// The origin asked for is not the one the log was created with.
    #[error("the log in {dir} has origin {stored:?}, not {asked:?}; an origin is fixed when a log is created: drop --origin or use another --data")]
    OriginMismatch {
        /// The data directory.
        dir: PathBuf,
        /// The stored origin.
        stored: String,
        /// The origin asked for.
        asked: String,
    },
    /// The origin is not a valid key name.
    #[error("invalid origin: {0}")]
    BadOrigin(#[from] crate::log::note::NoteError),
    /// The admin token file exists but holds no token.
    #[error("the admin token file {0} is empty; delete it to have a new token generated, or configure [[tokens]]")]
    BadToken(PathBuf),
    /// A key file is not a usable private JWK.
    #[error("the key file {path} is not usable: {why}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DataDirError + 'a {
    move |source| DataDirError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Where one log signing key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A private JWK file (`--log-key`, a mounted secret).
    File(PathBuf),
    /// A private JWK held in an environment variable (its name).
    Env(String),
}

impl KeySource {
    fn load(&self) -> Result<PrivateJwk, DataDirError> {
        match self {
            KeySource::File(path) => load_key(path),
            KeySource::Env(var) => {
                let text = std::env::var(var).map_err(|_| DataDirError::BadKey {
                    path: PathBuf::from(format!("${var}")),
                    why: "the variable is not set or not UTF-8".into(),
                })?;
                PrivateJwk::parse(text.as_bytes()).map_err(|why| DataDirError::BadKey {
                    path: PathBuf::from(format!("${var}")),
                    why: why.to_string(),
                })
            }
        }
    }
}

/// The log's signing keys: the current one (none: `DIR/log.key`, made on
/// first start) and, during a rotation, the previous ones, which co-sign
/// every checkpoint so that verifiers holding only an old key keep
/// verifying until they have the new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogKeys {
    /// The key that signs first and is listed first.
    pub current: Option<KeySource>,
    /// Keys that also sign while a rotation is under way.
    pub previous: Vec<KeySource>,
}

/// An open, locked data directory and the identity stored in it.
pub struct DataDir {
    /// The directory.
    pub root: PathBuf,
    /// The log's origin.
    pub origin: String,
    /// The log's signing key.
    pub log_key: SigningKey,
    /// Earlier log keys that co-sign checkpoints during a rotation.
    pub cosigning_keys: Vec<SigningKey>,
    /// The pipeline's event key (agent `vigil`).
    pub pipeline_key: PrivateJwk,
    _lock: File,
}

impl DataDir {
    /// Opens or creates the data directory: takes its lock, loads or makes
    /// the log keys (`DIR/log.key` unless `log_keys` names the current
    /// one), fixes the origin, and loads or makes the pipeline key.
    pub fn open(
        root: &Path,
        origin: Option<&str>,
        log_keys: &LogKeys,
    ) -> Result<DataDir, DataDirError> {
        if let Some(o) = origin {
            check_origin(o)?;
        }
        create_dir_durably(root).map_err(io("cannot create the data directory", root))?;
        let layout = Layout::new(root);
        let lock_path = layout.lock();
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io("cannot open", &lock_path))?;
        if lock.try_lock().is_err() {
            return Err(DataDirError::Locked(root.to_path_buf()));
        }
        for p in layout.directories() {
            create_dir_durably(&p).map_err(io("cannot create", &p))?;
        }
        let (log_key, cosigning_keys) = load_log_keys(&layout, log_keys)?;
        let origin_path = layout.origin();
        let origin = match std::fs::read_to_string(&origin_path) {
            Ok(stored) => {
                let stored = stored.trim_end().to_string();
                if let Some(asked) = origin {
                    if asked != stored {
                        return Err(DataDirError::OriginMismatch {
                            dir: root.to_path_buf(),
                            stored,
                            asked: asked.into(),
                        });
                    }
                }
                stored
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let o = origin.map(String::from).unwrap_or_else(|| {
                    let h = sha256(log_key.verifying_key().as_bytes());
                    format!("vigil.local/{}", &crate::hexenc::encode(h)[..8])
                });
                write_file_durably(&origin_path, format!("{o}\n").as_bytes(), 0o644)
                    .map_err(io("cannot write", &origin_path))?;
                o
            }
            Err(e) => return Err(io("cannot read", &origin_path)(e)),
        };
        let in_force: Vec<String> = std::iter::once(&log_key)
            .chain(&cosigning_keys)
            .map(|k| verifier_key(&origin, &k.verifying_key()))
            .collect();
        record_verifier_keys(root, &in_force)?;
        let pipeline_key = load_or_create_key(
            &layout.pipeline_key(),
            &pipeline_kid(),
            Some(PIPELINE_AGENT),
        )?;
        Ok(DataDir {
            root: root.to_path_buf(),
            origin,
            log_key,
            cosigning_keys,
            pipeline_key,
            _lock: lock,
        })
    }

    /// Every verifier key the log has used, the current one first.
    pub fn verifier_keys(&self) -> Vec<String> {
        read_verifier_keys(&self.root)
    }

    /// The admin token file, created with a fresh token when missing.
    /// Returns the token and whether it was just created. Any other
    /// problem (unreadable, empty) is an error: a token that clients hold
    /// is never replaced behind their back.
    pub fn admin_token(&self) -> Result<(String, bool), DataDirError> {
        let path = Layout::new(&self.root).admin_token();
        match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => Ok((t.trim().to_string(), false)),
            Ok(_) => Err(DataDirError::BadToken(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut raw = [0u8; 32];
                getrandom::getrandom(&mut raw)
                    .map_err(|e| io("cannot make a token for", &path)(std::io::Error::other(e)))?;
                let token = format!("vgl_{}", b64url(&raw));
                create_new_durably(&path, format!("{token}\n").as_bytes(), 0o600)
                    .map_err(io("cannot write", &path))?;
                Ok((token, true))
            }
            Err(e) => Err(io("cannot read", &path)(e)),
        }
    }
}

/// The current log key (made in `DIR/log.key` when none is given) and
/// the previous ones that co-sign, without repeats.
fn load_log_keys(
    layout: &Layout,
    log_keys: &LogKeys,
) -> Result<(SigningKey, Vec<SigningKey>), DataDirError> {
    let log_key = match &log_keys.current {
        Some(source) => source.load()?.key,
        None => load_or_create_key(&layout.log_key(), "vigil-log", None)?.key,
    };
    let mut cosigning: Vec<SigningKey> = Vec::new();
    for source in &log_keys.previous {
        let key = source.load()?.key;
        let seen = std::iter::once(&log_key)
            .chain(&cosigning)
            .any(|k| k.verifying_key() == key.verifying_key());
        if !seen {
            cosigning.push(key);
        }
    }
    Ok((log_key, cosigning))
}

fn pipeline_kid() -> String {
    let now = Timestamp::now().to_rfc3339_millis();
    format!("{PIPELINE_AGENT}#{}", &now[..7])
}

/// Reads a private JWK file.
pub fn load_key(path: &Path) -> Result<PrivateJwk, DataDirError> {
    let text = std::fs::read(path).map_err(io("cannot read the key file", path))?;
    PrivateJwk::parse(&text).map_err(|why| DataDirError::BadKey {
        path: path.to_path_buf(),
        why: why.to_string(),
    })
}

fn load_or_create_key(
    path: &Path,
    kid: &str,
    agent: Option<&str>,
) -> Result<PrivateJwk, DataDirError> {
    if path.exists() {
        return load_key(path);
    }
    let key = generate_key().map_err(io("cannot generate a key for", path))?;
    let jwk = PrivateJwk {
        kid: kid.to_string(),
        agent_id: agent.map(String::from),
        key,
    };
    create_new_durably(path, jwk.to_json().as_bytes(), 0o600).map_err(io("cannot write", path))?;
    Ok(jwk)
}

/// Reads `DIR/log-keys.txt` (missing = none).
pub fn read_verifier_keys(root: &Path) -> Vec<String> {
    std::fs::read_to_string(Layout::new(root).log_keys())
        .map(|t| {
            t.lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Puts the keys in force (current first, then co-signers) at the head of
/// `DIR/log-keys.txt`, keeping every retired key after them.
fn record_verifier_keys(root: &Path, in_force: &[String]) -> Result<(), DataDirError> {
    let old = read_verifier_keys(root);
    if old.starts_with(in_force) {
        return Ok(());
    }
    let mut keys = in_force.to_vec();
    keys.extend(old.into_iter().filter(|k| !in_force.contains(k)));
    let path = Layout::new(root).log_keys();
    write_file_durably(&path, (keys.join("\n") + "\n").as_bytes(), 0o644)
        .map_err(io("cannot write", &path))
}
