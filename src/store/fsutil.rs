//! Small durable-file helpers.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Syncs a directory so that entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Most bytes a large file write leaves unsynced: the receipt log's
/// fdatasync shares the disk (and the file system's journal) with these
/// writes, and would otherwise wait behind one sync of a whole sealed
/// segment's Parquet files.
pub const SYNC_CHUNK_BYTES: usize = 1 << 20;

/// Writes a whole file durably (temporary file, sync, rename, sync
/// directory) with the given permission bits. Large files are written
/// and synced [`SYNC_CHUNK_BYTES`] at a time.
pub fn write_file_durably(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        let mut chunks = bytes.chunks(SYNC_CHUNK_BYTES).peekable();
        while let Some(chunk) = chunks.next() {
            f.write_all(chunk)?;
            if chunks.peek().is_some() {
                f.sync_data()?;
            }
        }
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(parent(path))
}

/// Creates a new file durably with the given bytes, failing if it exists.
pub fn create_new_durably(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    sync_dir(parent(path))
}

/// Appends bytes to a file (creating it) and syncs before returning.
pub fn append_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let existed = path.exists();
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    if !existed {
        sync_dir(parent(path))?;
    }
    Ok(())
}

/// Creates a directory (and parents) and syncs its parent.
pub fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    sync_dir(parent(dir))
}

/// Most of the time the periodic saves of one derived state may take: a
/// save that took `t` is followed by the next no sooner than
/// `SAVE_DUTY * t` later.
pub const SAVE_DUTY: u32 = 20;

/// When the next periodic save of a derived state is due: `every` after
/// the last one started, and no sooner than [`SAVE_DUTY`] times what it
/// took. A large state (detection with 10,000 agents takes about half a
/// second to copy, serialise and write) is then saved less often instead
/// of taking a growing share of the CPU from ingest; a restart replays a
/// few more records of the log.
#[derive(Debug, Clone)]
pub struct SavePace {
    every: std::time::Duration,
    started: std::time::Instant,
    took: std::time::Duration,
}

impl SavePace {
    /// A pace of one save every `every` at most, counted from now.
    pub fn new(every: std::time::Duration) -> SavePace {
        SavePace {
            every,
            started: std::time::Instant::now(),
            took: std::time::Duration::ZERO,
        }
    }

    /// When the next save is due.
    pub fn next(&self) -> std::time::Instant {
        self.started + self.every.max(self.took * SAVE_DUTY)
    }

    /// Whether the next save is due now.
    pub fn due(&self) -> bool {
        std::time::Instant::now() >= self.next()
    }

    /// A save starts now; returns now, to time it by.
    pub fn started(&mut self) -> std::time::Instant {
        self.started = std::time::Instant::now();
        self.started
    }

    /// The save last started took `took` in all.
    pub fn finished(&mut self, took: std::time::Duration) {
        self.took = took;
    }
}

/// Saves a state derived from the log (JSON) durably, on a background
/// thread of lower priority ([`crate::background`]). A failure is logged,
/// not returned: such a state is rebuilt from the log when it is missing
/// or behind.
pub async fn save_derived_state<T>(path: std::path::PathBuf, what: &'static str, state: T)
where
    T: serde::Serialize + Send + 'static,
{
    let shown = path.clone();
    let written = crate::background::run("vigil-save", move || {
        let bytes = serde_json::to_vec(&state).map_err(std::io::Error::other)?;
        write_file_durably(&path, &bytes, 0o644)
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(path = %shown.display(), "Cannot save the {what} ({e}); it is rebuilt from the log if need be")
        }
        Err(e) => tracing::warn!("The {what}'s save task failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_save_is_followed_by_the_next_later() {
        let every = std::time::Duration::from_secs(5);
        let mut pace = SavePace::new(every);
        let before = pace.started();
        pace.finished(std::time::Duration::from_millis(10));
        assert!(pace.next() >= before + every && pace.next() <= before + every * 2);
        assert!(!pace.due());
        pace.finished(std::time::Duration::from_secs(1));
        let later = before + std::time::Duration::from_secs(20);
        assert!(pace.next() >= later && pace.next() < later + every);
    }

    #[test]
    fn large_files_are_written_whole_in_synced_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.parquet");
        let bytes: Vec<u8> = (0..SYNC_CHUNK_BYTES * 5 / 2)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        std::fs::write(&path, b"an older version").unwrap();
        write_file_durably(&path, &bytes, 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        assert!(
            !path.with_extension("tmp").exists(),
            "the temporary file is renamed"
        );
        write_file_durably(&path, b"small", 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"small");
    }
}
