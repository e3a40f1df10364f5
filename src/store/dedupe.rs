//! The persisted duplicate index: (agent, event id) to the receipts that
//! decide duplicates and conflicts (contract section 3), on disk, with a
//! bounded memory footprint.
//!
//! Keys are 128-bit fingerprints (SHA-256, truncated) of what is looked
//! up; values are log indices. Every hit is confirmed against the record
//! it names before it is believed ([`crate::store::view`]), so the index
//! is never trusted over the log. Three kinds of key:
//!
//! - [`Key::accepted`]: the accepted receipt of an (agent, event id);
//! - [`Key::latest_rejection`]: its latest rejection (for receipt lookups);
//! - [`Key::rejection`]: a rejection with this event hash and verdict (a
//!   repeat of it is a duplicate of that rejection).
//!
//! The structure is a small log-structured merge tree: new entries go to a
//! memory table; at [`MEMTABLE_ENTRIES`] it is written as a sorted run
//! file (24 bytes an entry) and the manifest records which log records the
//! runs cover; runs are merged when there are too many. A lookup checks
//! the memory table, then a Bloom filter of fixed size (`filter_bytes`,
//! the one cache that has to be sized to the log: its false-positive rate
//! grows past its design capacity, which costs speed, never correctness),
//! then the runs newest first (one read of a block each).
//!
//! Crash rule: the runs named in the manifest are durable; the memory
//! table is not. After a crash the index may lack the entries of at most
//! the records since the last run was written (fewer than
//! [`MEMTABLE_ENTRIES`] entries' worth, plus the run being written), and
//! recovery replays those records from the log ([`Dedupe::covered`] says
//! where to start). After a clean stop nothing is replayed.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::fsutil::{sync_dir, write_file_durably};
use crate::event::Hash;
use crate::log::receipt::{ReceiptBody, Verdict};

/// Entries held in memory before they are written as a run.
pub const MEMTABLE_ENTRIES: usize = 64 * 1024;
/// Runs kept before the newest ones are merged.
const MAX_RUNS: usize = 8;
/// Entries per block (one read per lookup per run).
const BLOCK_ENTRIES: usize = 256;
const ENTRY_LEN: usize = 24;
const RUN_MAGIC: &[u8; 8] = b"VIGILRUN";
const RUN_HEADER_LEN: usize = 40;
const FILTER_MAGIC: &[u8; 8] = b"VIGILBLM";
/// Runs written between two saves of the filter (each save writes the
/// whole filter; a start loads it and adds the keys of later runs).
const FILTER_SAVE_EVERY_RUNS: u64 = 16;
/// Default size of the Bloom filter: under 0.1% false positives up to
/// about 40 million receipts.
pub const DEFAULT_FILTER_BYTES: usize = 64 << 20;

/// A 128-bit fingerprint of what is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 16]);

fn fingerprint(parts: &[&[u8]]) -> Key {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u32).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    Key(d[..16].try_into().expect("16 bytes"))
}

impl Key {
    /// The accepted receipt of (agent, event id).
    pub fn accepted(agent_id: &str, event_id: &str) -> Key {
        fingerprint(&[b"A", agent_id.as_bytes(), event_id.as_bytes()])
    }

    /// The latest rejection of (agent, event id).
    pub fn latest_rejection(agent_id: &str, event_id: &str) -> Key {
        fingerprint(&[b"R", agent_id.as_bytes(), event_id.as_bytes()])
    }

    /// A rejection of (agent, event id) with this event hash and verdict.
    pub fn rejection(agent_id: &str, event_id: &str, event_hash: &Hash, verdict: Verdict) -> Key {
        let v = verdict.as_string();
        fingerprint(&[
            b"S",
            agent_id.as_bytes(),
            event_id.as_bytes(),
            event_hash,
            v.as_bytes(),
        ])
    }

    fn block_and_bits(&self, blocks: usize) -> (usize, [u32; 8]) {
        let hi = u64::from_be_bytes(self.0[..8].try_into().expect("8 bytes"));
        let lo = u64::from_be_bytes(self.0[8..].try_into().expect("8 bytes"));
        let block = (hi % blocks as u64) as usize;
        let mut bits = [0u32; 8];
        for (i, b) in bits.iter_mut().enumerate() {
            *b = ((lo >> (i * 8)) & 0x1ff) as u32 ^ ((hi >> (i * 7)) & 0x1ff) as u32;
        }
        (block, bits)
    }
}

/// The keys a receipt adds to the index: an acceptance claims its
/// (agent, event id); a rejection becomes its latest rejection and a
/// rejection seen with its event hash and verdict.
pub fn keys_of(body: &ReceiptBody) -> Vec<Key> {
    match body.verdict() {
        Some(Verdict::Accepted) => vec![Key::accepted(&body.agent_id, &body.event_id)],
        Some(v) => {
            let hash: Hash = hex::decode(&body.event_hash)
                .ok()
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 32]);
            vec![
                Key::latest_rejection(&body.agent_id, &body.event_id),
                Key::rejection(&body.agent_id, &body.event_id, &hash, v),
            ]
        }
        None => Vec::new(),
    }
}

/// Why the index could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DedupeError {
    /// A file operation failed.
    #[error("the duplicate index: cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Writing a run in the background failed.
    #[error("the duplicate index could not write a run: {0}")]
    Background(String),
    /// A file is not what the manifest says.
    #[error("the duplicate index file {path} is damaged ({why}); delete {dir} and start vigil: it is rebuilt from the log")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The index directory.
        dir: PathBuf,
        /// What is wrong.
        why: String,
    },
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> DedupeError + 'a {
    move |source| DedupeError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    /// Records of the log whose entries are all in the runs.
    covered: u64,
    runs: Vec<RunMeta>,
    next_run: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunMeta {
    file: String,
    entries: u64,
    /// The log records [from, to) whose entries it holds.
    from: u64,
    to: u64,
}

struct Run {
    meta: RunMeta,
    file: File,
    /// The first key of each block.
    fences: Vec<Key>,
}

/// Entries read around the guessed place of a key in its block.
const WINDOW: usize = 32;

/// The first 8 bytes of a key, as a number (keys sort as these do).
fn prefix(key: &Key) -> u64 {
    u64::from_be_bytes(key.0[..8].try_into().expect("8 bytes"))
}

/// Binary search of sorted entries for a key.
fn search(entries: &[u8], key: &Key) -> Option<u64> {
    let (mut lo, mut hi) = (0, entries.len() / ENTRY_LEN);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let e = &entries[mid * ENTRY_LEN..(mid + 1) * ENTRY_LEN];
        match e[..16].cmp(&key.0[..]) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => {
                return Some(u64::from_le_bytes(e[16..].try_into().expect("8 bytes")))
            }
        }
    }
    None
}

impl Run {
    fn open(dir: &Path, meta: RunMeta) -> Result<Run, DedupeError> {
        let path = dir.join(&meta.file);
        let file = File::open(&path).map_err(io_err("open", &path))?;
        let damaged = |why: String| DedupeError::Damaged {
            path: path.clone(),
            dir: dir.to_path_buf(),
            why,
        };
        let len = file.metadata().map_err(io_err("read", &path))?.len();
        if len != (RUN_HEADER_LEN + ENTRY_LEN * meta.entries as usize) as u64 {
            return Err(damaged(format!("{len} bytes for {} entries", meta.entries)));
        }
        let mut head = [0u8; RUN_HEADER_LEN];
        file.read_exact_at(&mut head, 0)
            .map_err(io_err("read", &path))?;
        if &head[..8] != RUN_MAGIC || head[8..16] != meta.entries.to_le_bytes() {
            return Err(damaged("its header does not match the manifest".into()));
        }
        let blocks = (meta.entries as usize).div_ceil(BLOCK_ENTRIES);
        let mut fences = Vec::with_capacity(blocks);
        let mut k = [0u8; 16];
        for b in 0..blocks {
            let at = RUN_HEADER_LEN + b * BLOCK_ENTRIES * ENTRY_LEN;
            file.read_exact_at(&mut k, at as u64)
                .map_err(io_err("read", &path))?;
            fences.push(Key(k));
        }
        Ok(Run { meta, file, fences })
    }

    fn get(&self, key: &Key) -> std::io::Result<Option<u64>> {
        let b = self.fences.partition_point(|f| f <= key);
        if b == 0 {
            return Ok(None);
        }
        let block = b - 1;
        let first = block * BLOCK_ENTRIES;
        let n = (self.meta.entries as usize - first).min(BLOCK_ENTRIES);
        // Keys are uniform (SHA-256): guess the key's place in the block
        // from the fences around it and read a window there; read the whole
        // block only when the key falls outside the window.
        let lo = prefix(&self.fences[block]);
        let hi = self.fences.get(b).map_or(u64::MAX, prefix);
        let guess = ((prefix(key) - lo) as u128 * n as u128 / (hi - lo).max(1) as u128) as usize;
        let start = guess
            .saturating_sub(WINDOW / 2)
            .min(n.saturating_sub(WINDOW));
        let len = WINDOW.min(n);
        let mut buf = [0u8; BLOCK_ENTRIES * ENTRY_LEN];
        let window = &mut buf[..len * ENTRY_LEN];
        self.read_entries(window, first + start)?;
        let below = start > 0 && key.0[..] < window[..16];
        let above = start + len < n
            && key.0[..] > window[(len - 1) * ENTRY_LEN..(len - 1) * ENTRY_LEN + 16];
        if !below && !above {
            return Ok(search(window, key));
        }
        let whole = &mut buf[..n * ENTRY_LEN];
        self.read_entries(whole, first)?;
        Ok(search(whole, key))
    }

    fn read_entries(&self, buf: &mut [u8], from: usize) -> std::io::Result<()> {
        self.file
            .read_exact_at(buf, (RUN_HEADER_LEN + from * ENTRY_LEN) as u64)
    }

    /// Every entry, in key order.
    fn entries(&self) -> std::io::Result<Vec<(Key, u64)>> {
        let mut buf = vec![0u8; self.meta.entries as usize * ENTRY_LEN];
        self.file.read_exact_at(&mut buf, RUN_HEADER_LEN as u64)?;
        Ok(buf
            .chunks_exact(ENTRY_LEN)
            .map(|e| {
                (
                    Key(e[..16].try_into().expect("16 bytes")),
                    u64::from_le_bytes(e[16..].try_into().expect("8 bytes")),
                )
            })
            .collect())
    }
}

fn write_run(path: &Path, entries: &[(Key, u64)]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(RUN_HEADER_LEN + entries.len() * ENTRY_LEN);
    out.extend_from_slice(RUN_MAGIC);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    out.resize(RUN_HEADER_LEN, 0);
    for (k, v) in entries {
        out.extend_from_slice(&k.0);
        out.extend_from_slice(&v.to_le_bytes());
    }
    write_file_durably(path, &out, 0o644)
}

/// A Bloom filter in 512-bit blocks (one cache line per key), of atomic
/// words so that adding, testing and saving need no lock.
struct Filter {
    blocks: Vec<[AtomicU64; 8]>,
}

impl Filter {
    fn new(bytes: usize) -> Filter {
        Filter {
            blocks: (0..(bytes / 64).max(1))
                .map(|_| Default::default())
                .collect(),
        }
    }

    fn add(&self, key: &Key) {
        let (b, bits) = key.block_and_bits(self.blocks.len());
        for bit in bits {
            self.blocks[b][(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Relaxed);
        }
    }

    fn may_contain(&self, key: &Key) -> bool {
        let (b, bits) = key.block_and_bits(self.blocks.len());
        bits.iter().all(|&bit| {
            self.blocks[b][(bit / 64) as usize].load(Ordering::Relaxed) & (1 << (bit % 64)) != 0
        })
    }

    /// Writes the filter, with the records it covers, durably.
    fn save(&self, path: &Path, covered: u64) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
            w.write_all(FILTER_MAGIC)?;
            w.write_all(&covered.to_le_bytes())?;
            for b in &self.blocks {
                for word in b {
                    w.write_all(&word.load(Ordering::Relaxed).to_le_bytes())?;
                }
            }
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    }

    /// Reads a saved filter of `want_bytes`; `None` when it is missing or
    /// of another size.
    /// Reads a saved filter of `want_bytes` (streaming: the file is not
    /// held beside the filter), with the records it covers.
    fn load(path: &Path, want_bytes: usize) -> Option<(Filter, u64)> {
        let mut f = std::io::BufReader::with_capacity(1 << 20, File::open(path).ok()?);
        let blocks_n = (want_bytes / 64).max(1);
        let len = f.get_ref().metadata().ok()?.len();
        if len != (FILTER_MAGIC.len() + 8 + blocks_n * 64) as u64 {
            return None;
        }
        let mut head = [0u8; 16];
        f.read_exact(&mut head).ok()?;
        if &head[..8] != FILTER_MAGIC {
            return None;
        }
        let covered = u64::from_le_bytes(head[8..].try_into().expect("8 bytes"));
        let mut blocks = Vec::with_capacity(blocks_n);
        let mut c = [0u8; 64];
        for _ in 0..blocks_n {
            f.read_exact(&mut c).ok()?;
            blocks.push(std::array::from_fn(|i| {
                AtomicU64::new(u64::from_le_bytes(
                    c[i * 8..i * 8 + 8].try_into().expect("8 bytes"),
                ))
            }));
        }
        Some((Filter { blocks }, covered))
    }
}

/// A full memory table being written as a run, and the records it covers.
struct Frozen {
    table: Arc<HashMap<Key, u64>>,
    to: u64,
}

struct Inner {
    manifest: Manifest,
    runs: Vec<Arc<Run>>,
    memtable: HashMap<Key, u64>,
    /// At most one table is being written at a time (the writer waits for
    /// it before freezing the next: backpressure).
    frozen: Option<Frozen>,
    /// Records whose entries are in the runs, the frozen or the memory table.
    applied: u64,
    /// Why the last background write failed; the next apply returns it.
    failed: Option<String>,
}

/// The duplicate index (see the module docs). Lookups and inserts take a
/// short lock; full memory tables are written as runs (and runs merged)
/// on a background thread, so the log writer does not wait for them.
pub struct Dedupe {
    dir: PathBuf,
    filter_bytes: usize,
    inner: Mutex<Inner>,
    written: Condvar,
    /// Held while runs and the manifest are written (one writer of them).
    writing: Mutex<()>,
    /// `None` when opened with no filter (every lookup reads the runs).
    filter: Option<Filter>,
}

impl Dedupe {
    /// Opens (creating) the index in `dir` with a Bloom filter of
    /// `filter_bytes` (0: no filter, for reading the index record by
    /// record with [`Dedupe::get_for`]). Records from [`Dedupe::covered`] on must then be
    /// replayed with [`Dedupe::apply`] before the index is used.
    pub fn open(dir: &Path, filter_bytes: usize) -> Result<Dedupe, DedupeError> {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let mpath = dir.join("manifest.json");
        let manifest: Manifest = match std::fs::read(&mpath) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| DedupeError::Damaged {
                path: mpath.clone(),
                dir: dir.to_path_buf(),
                why: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest {
                version: 1,
                ..Manifest::default()
            },
            Err(e) => return Err(io_err("read", &mpath)(e)),
        };
        let mut runs = Vec::new();
        for meta in &manifest.runs {
            runs.push(Arc::new(Run::open(dir, meta.clone())?));
        }
        let filter = if filter_bytes == 0 {
            None
        } else {
            Some(load_filter(dir, filter_bytes, &runs)?)
        };
        let applied = manifest.covered;
        Ok(Dedupe {
            dir: dir.to_path_buf(),
            filter_bytes,
            inner: Mutex::new(Inner {
                manifest,
                runs,
                memtable: HashMap::new(),
                frozen: None,
                applied,
                failed: None,
            }),
            written: Condvar::new(),
            writing: Mutex::new(()),
            filter,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records of the log whose entries the index holds: replay from here.
    pub fn covered(&self) -> u64 {
        self.lock().applied
    }

    /// The log index stored under `key`, if any (to be confirmed against
    /// the record).
    pub fn get(&self, key: &Key) -> std::io::Result<Option<u64>> {
        let runs = {
            let inner = self.lock();
            if let Some(&v) = inner.memtable.get(key) {
                return Ok(Some(v));
            }
            if let Some(&v) = inner.frozen.as_ref().and_then(|f| f.table.get(key)) {
                return Ok(Some(v));
            }
            if self.filter.as_ref().is_some_and(|f| !f.may_contain(key)) {
                return Ok(None);
            }
            inner.runs.clone()
        };
        for run in runs.iter().rev() {
            if let Some(v) = run.get(key)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// The entry for `key` where record `at`'s entries went: the run that
    /// covers `at` (merged runs keep the newest entry of a key), or the
    /// memory tables. One run is read, not every run: for checking the
    /// index against the log record by record (`vigil verify`).
    pub fn get_for(&self, key: &Key, at: u64) -> std::io::Result<Option<u64>> {
        let run = {
            let inner = self.lock();
            let run = inner
                .runs
                .iter()
                .find(|r| r.meta.from <= at && at < r.meta.to)
                .cloned();
            if run.is_none() {
                let frozen = inner.frozen.as_ref().and_then(|f| f.table.get(key));
                return Ok(inner.memtable.get(key).or(frozen).copied());
            }
            run
        };
        match run {
            Some(run) => run.get(key),
            None => Ok(None),
        }
    }

    /// Adds the entries of log record `index` (`keys` may be empty), in log
    /// order. A full memory table is handed to a background thread to be
    /// written as a run.
    pub fn apply(self: &Arc<Self>, index: u64, keys: &[Key]) -> Result<(), DedupeError> {
        let mut inner = self.lock();
        if let Some(why) = inner.failed.take() {
            return Err(DedupeError::Background(why));
        }
        if index < inner.applied {
            return Ok(()); // replayed twice: already in
        }
        for k in keys {
            if let Some(f) = &self.filter {
                f.add(k);
            }
            inner.memtable.insert(*k, index);
        }
        inner.applied = index + 1;
        if inner.memtable.len() < MEMTABLE_ENTRIES {
            return Ok(());
        }
        while inner.frozen.is_some() {
            inner = self
                .written
                .wait(inner)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let table = Arc::new(std::mem::take(&mut inner.memtable));
        let to = inner.applied;
        inner.frozen = Some(Frozen { table, to });
        drop(inner);
        let me = self.clone();
        std::thread::Builder::new()
            .name("vigil-index".into())
            .spawn(move || {
                if let Err(e) = me.write_frozen() {
                    me.lock().failed = Some(e.to_string());
                    me.written.notify_all();
                }
            })
            .map_err(io_err("start a thread for", &self.dir))?;
        Ok(())
    }

    /// Writes the frozen table as a run (durably), records it in the
    /// manifest, and merges runs when there are too many.
    fn write_frozen(&self) -> Result<(), DedupeError> {
        let _writing = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (table, to, from, seq) = {
            let mut inner = self.lock();
            let Some(f) = inner.frozen.as_ref() else {
                return Ok(());
            };
            let (table, to) = (f.table.clone(), f.to);
            let seq = inner.manifest.next_run;
            inner.manifest.next_run += 1;
            (table, to, inner.manifest.covered, seq)
        };
        let mut entries: Vec<(Key, u64)> = table.iter().map(|(k, v)| (*k, *v)).collect();
        entries.sort_unstable();
        let meta = RunMeta {
            file: format!("run-{seq:010}.bin"),
            entries: entries.len() as u64,
            from,
            to,
        };
        let path = self.dir.join(&meta.file);
        write_run(&path, &entries).map_err(io_err("write", &path))?;
        let run = Arc::new(Run::open(&self.dir, meta.clone())?);
        let manifest = {
            let mut inner = self.lock();
            inner.runs.push(run);
            inner.manifest.runs.push(meta);
            inner.manifest.covered = to;
            inner.frozen = None;
            inner.manifest.clone()
        };
        self.written.notify_all();
        self.write_manifest(&manifest)?;
        if manifest.runs.len() > MAX_RUNS {
            self.merge()?;
        }
        if seq % FILTER_SAVE_EVERY_RUNS == FILTER_SAVE_EVERY_RUNS - 1 {
            self.save_filter(to)?;
        }
        Ok(())
    }

    /// Merges the newest runs into one while the run before them is not
    /// much bigger (size-tiered), newest value winning for a key. Runs on
    /// the background thread; lookups go on meanwhile.
    fn merge(&self) -> Result<(), DedupeError> {
        let (runs, seq) = {
            let mut inner = self.lock();
            let seq = inner.manifest.next_run;
            inner.manifest.next_run += 1;
            (inner.runs.clone(), seq)
        };
        let mut take = 2;
        while take < runs.len() {
            let newer: u64 = runs[runs.len() - take..]
                .iter()
                .map(|r| r.meta.entries)
                .sum();
            if runs[runs.len() - take - 1].meta.entries > 4 * newer {
                break;
            }
            take += 1;
        }
        let start = runs.len() - take;
        let mut merged: HashMap<Key, u64> = HashMap::new();
        for run in &runs[start..] {
            let path = self.dir.join(&run.meta.file);
            merged.extend(run.entries().map_err(io_err("read", &path))?);
        }
        let mut entries: Vec<(Key, u64)> = merged.into_iter().collect();
        entries.sort_unstable();
        let meta = RunMeta {
            file: format!("run-{seq:010}.bin"),
            entries: entries.len() as u64,
            from: runs[start].meta.from,
            to: runs[runs.len() - 1].meta.to,
        };
        let path = self.dir.join(&meta.file);
        write_run(&path, &entries).map_err(io_err("write", &path))?;
        let run = Arc::new(Run::open(&self.dir, meta.clone())?);
        let old: Vec<String> = runs[start..].iter().map(|r| r.meta.file.clone()).collect();
        let manifest = {
            let mut inner = self.lock();
            // Runs written since the merge began stay after it.
            let later = inner.runs.split_off(runs.len());
            let later_meta = inner.manifest.runs.split_off(runs.len());
            inner.runs.truncate(start);
            inner.runs.push(run);
            inner.runs.extend(later);
            inner.manifest.runs.truncate(start);
            inner.manifest.runs.push(meta);
            inner.manifest.runs.extend(later_meta);
            inner.manifest.clone()
        };
        self.write_manifest(&manifest)?;
        for f in old {
            let _ = std::fs::remove_file(self.dir.join(f));
        }
        Ok(())
    }

    fn write_manifest(&self, m: &Manifest) -> Result<(), DedupeError> {
        let path = self.dir.join("manifest.json");
        let bytes = serde_json::to_vec_pretty(m).expect("a manifest serialises");
        write_file_durably(&path, &bytes, 0o644).map_err(io_err("write", &path))
    }

    /// Writes what the index holds as a run and saves the filter, so that
    /// the next start replays nothing and loads the filter as it is.
    pub fn close(self: &Arc<Self>) -> Result<(), DedupeError> {
        let mut inner = self.lock();
        while inner.frozen.is_some() && inner.failed.is_none() {
            inner = self
                .written
                .wait(inner)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if let Some(why) = inner.failed.take() {
            return Err(DedupeError::Background(why));
        }
        if !inner.memtable.is_empty() {
            let table = Arc::new(std::mem::take(&mut inner.memtable));
            let to = inner.applied;
            inner.frozen = Some(Frozen { table, to });
            drop(inner);
            self.write_frozen()?;
        } else {
            drop(inner);
        }
        let covered = self.lock().manifest.covered;
        self.save_filter(covered)
    }

    fn save_filter(&self, covered: u64) -> Result<(), DedupeError> {
        match &self.filter {
            Some(f) => f
                .save(&self.dir.join("filter.bin"), covered)
                .map_err(io_err("write", &self.dir)),
            None => Ok(()),
        }
    }

    /// Waits until no memory table is being written (for tests and
    /// benchmarks that look at the files).
    pub fn settle(&self) {
        let mut inner = self.lock();
        while inner.frozen.is_some() && inner.failed.is_none() {
            inner = self
                .written
                .wait(inner)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        drop(inner);
        drop(
            self.writing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }

    /// The Bloom filter's size in bytes.
    pub fn filter_bytes(&self) -> usize {
        self.filter_bytes
    }
}

/// Loads the saved filter and adds the keys of runs written after it, or
/// rebuilds it from every run.
fn load_filter(dir: &Path, bytes: usize, runs: &[Arc<Run>]) -> Result<Filter, DedupeError> {
    let (filter, covered) =
        Filter::load(&dir.join("filter.bin"), bytes).unwrap_or_else(|| (Filter::new(bytes), 0));
    for run in runs.iter().filter(|r| r.meta.to > covered) {
        let path = dir.join(&run.meta.file);
        for (k, _) in run.entries().map_err(io_err("read", &path))? {
            filter.add(&k);
        }
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_entries_across_runs_merges_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let d = Arc::new(Dedupe::open(dir.path(), 1 << 16).unwrap());
        let n = (MEMTABLE_ENTRIES * 10 + 7) as u64;
        for i in 0..n {
            d.apply(i, &[Key::accepted("a", &i.to_string())]).unwrap();
        }
        // A later rejection of the same id is the latest.
        d.apply(n, &[Key::latest_rejection("a", "5")]).unwrap();
        d.apply(n + 1, &[Key::latest_rejection("a", "5")]).unwrap();
        for i in (0..n).step_by(997) {
            assert_eq!(d.get(&Key::accepted("a", &i.to_string())).unwrap(), Some(i));
        }
        assert_eq!(d.get(&Key::accepted("b", "1")).unwrap(), None);
        assert_eq!(
            d.get(&Key::latest_rejection("a", "5")).unwrap(),
            Some(n + 1)
        );
        d.settle();
        let runs = d.lock().runs.len();
        assert!(runs <= MAX_RUNS, "{runs} runs");
        let covered_before_close = d.covered();
        assert_eq!(covered_before_close, n + 2);
        d.close().unwrap();
        drop(d);
        let again = Dedupe::open(dir.path(), 1 << 16).unwrap();
        assert_eq!(
            again.covered(),
            n + 2,
            "a clean stop leaves nothing to replay"
        );
        assert_eq!(
            again.get(&Key::accepted("a", "12345")).unwrap(),
            Some(12345)
        );
        assert_eq!(
            again.get(&Key::latest_rejection("a", "5")).unwrap(),
            Some(n + 1)
        );
    }

    #[test]
    fn a_crash_loses_only_the_memory_table() {
        let dir = tempfile::tempdir().unwrap();
        let d = Arc::new(Dedupe::open(dir.path(), 1 << 16).unwrap());
        let n = (MEMTABLE_ENTRIES + 100) as u64;
        for i in 0..n {
            d.apply(i, &[Key::accepted("a", &i.to_string())]).unwrap();
        }
        d.settle();
        drop(d); // no close: a crash
        let again = Dedupe::open(dir.path(), 1 << 16).unwrap();
        assert_eq!(again.covered(), MEMTABLE_ENTRIES as u64);
        assert_eq!(again.get(&Key::accepted("a", "7")).unwrap(), Some(7));
        assert_eq!(
            again
                .get(&Key::accepted("a", &(n - 1).to_string()))
                .unwrap(),
            None
        );
    }
}
