//! Where everything lives in a data directory: one place that names every
//! path, so that the writer, recovery, `vigil verify` and the read side
//! agree on the layout.
//!
//! ```text
//! DIR/origin                          the log's origin (fixed at creation)
//! DIR/log.key                         the log's Ed25519 key, a private JWK (0600)
//! DIR/pipeline.key                    the pipeline's event key for agent vigil (0600)
//! DIR/admin.token                     generated token when none is configured (0600)
//! DIR/admin-keys.jwks.json            agent keys and records set through the admin routes
//! DIR/log-keys.txt                    every verifier key the log has used, newest first
//! DIR/log/<first index>.seg           receipt log segments (receipt body + event bytes)
//! DIR/log/<first index>.idx           record offsets of a sealed segment
//! DIR/checkpoints.log                 every signed checkpoint, in order
//! DIR/tlog/checkpoint                 the latest checkpoint (C2SP tlog-tiles)
//! DIR/tlog/tile/...                   hash tiles and entry bundles (C2SP tlog-tiles)
//! DIR/index/                          the duplicate index (derived from the log)
//! DIR/quarantine/<n>.q                bounded quarantine of input that got no receipt
//! ```
//!
//! `DIR/tlog` is a standard tlog-tiles tree: a copy of it can be served by
//! any static file server.

use std::path::{Path, PathBuf};

/// The paths of one data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout of the data directory `root`.
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `DIR/origin`.
    pub fn origin(&self) -> PathBuf {
        self.root.join("origin")
    }

    /// `DIR/log-keys.txt`, every verifier key the log has used, current
    /// first.
    pub fn log_keys(&self) -> PathBuf {
        self.root.join("log-keys.txt")
    }

    /// `DIR/lock`, held while a process uses the directory.
    pub fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// `DIR/log.key` (0600), the log's checkpoint signing key.
    pub fn log_key(&self) -> PathBuf {
        self.root.join("log.key")
    }

    /// `DIR/pipeline.key` (0600), the key of the pipeline's own events.
    pub fn pipeline_key(&self) -> PathBuf {
        self.root.join("pipeline.key")
    }

    /// `DIR/admin-keys.jwks.json`: the agent keys and records the admin
    /// routes set, one more JWKS source.
    pub fn admin_keys(&self) -> PathBuf {
        self.root.join("admin-keys.jwks.json")
    }

    /// `DIR/admin.token` (0600), made when no token is configured.
    pub fn admin_token(&self) -> PathBuf {
        self.root.join("admin.token")
    }

    /// `DIR/log`, the segments.
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }

    /// The segment starting at `first_index`.
    pub fn segment(&self, first_index: u64) -> PathBuf {
        self.log_dir().join(format!("{first_index:020}.seg"))
    }

    /// The offsets file of the sealed segment starting at `first_index`.
    pub fn segment_offsets(&self, first_index: u64) -> PathBuf {
        self.log_dir().join(format!("{first_index:020}.idx"))
    }

    /// `DIR/checkpoints.log`.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints.log")
    }

    /// `DIR/checkpoints.idx`, where each checkpoint is and its size.
    pub fn checkpoints_index(&self) -> PathBuf {
        self.root.join("checkpoints.idx")
    }

    /// `DIR/tlog/checkpoint`, the latest checkpoint for tlog clients.
    pub fn tlog_checkpoint(&self) -> PathBuf {
        self.tlog().join("checkpoint")
    }

    /// `DIR/tlog`, the tlog-tiles tree.
    pub fn tlog(&self) -> PathBuf {
        self.root.join("tlog")
    }

    /// `DIR/index`, the duplicate index.
    pub fn index_dir(&self) -> PathBuf {
        self.root.join("index")
    }

    /// `DIR/index/keys.json`, the log's key history as of the records the
    /// index covers (derived from the log; rebuilt when missing).
    pub fn key_history(&self) -> PathBuf {
        self.index_dir().join("keys.json")
    }

    /// `DIR/index/detect.json`, the detection state and the log position
    /// it covers (derived from the log: rebuilt from it when missing).
    pub fn detect_state(&self) -> PathBuf {
        self.index_dir().join("detect.json")
    }

    /// `DIR/index/respond.json`, the response state (postures, leases
    /// seen, step-ups pending) and the log position it covers (derived
    /// from the log: rebuilt from it when missing).
    pub fn respond_state(&self) -> PathBuf {
        self.index_dir().join("respond.json")
    }

    /// `DIR/index/hygiene.json`, the agent inventory and the log position
    /// it covers (derived from the log: rebuilt from it when missing).
    pub fn hygiene_state(&self) -> PathBuf {
        self.index_dir().join("hygiene.json")
    }

    /// `DIR/quarantine`.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    /// Every directory the data directory holds, created at open.
    pub fn directories(&self) -> [PathBuf; 5] {
        [
            self.log_dir(),
            self.tlog(),
            self.tlog().join("tile"),
            self.index_dir(),
            self.quarantine_dir(),
        ]
    }

    /// The segments in `DIR/log`, ordered by first index.
    pub fn list_segments(&self) -> std::io::Result<Vec<u64>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(self.log_dir()) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let name = entry?.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
                continue;
            };
            if let Ok(first) = stem.parse::<u64>() {
                out.push(first);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// A path relative to the data directory, for messages.
    pub fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}
