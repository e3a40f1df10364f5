//! Opening a pipeline: the data directory, recovery, one walk that catches
//! the duplicate index and the tiles up with the records, a checkpoint
//! over everything durable, then the writer and checkpointer threads.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::checkpointer::{Checkpointer, ToCheckpointer};
use super::health::{self, Health};
use super::keylog::{self, KeyLog};
use super::writer::{Request, Writer};
use super::{OpenError, Pipeline, PipelineConfig};
use crate::event::{Event, Hash, PIPELINE_AGENT};
use crate::keys::history::KeyHistory;
use crate::keys::KeyRegistry;
use crate::log::merkle::leaf_hash;
use crate::log::note::NoteSigner;
use crate::log::receipt::{ReceiptBody, Verdict};
use crate::store::checkpoints::{CheckpointLog, Latest};
use crate::store::datadir::DataDir;
use crate::store::dedupe::{keys_of, Dedupe};
use crate::store::layout::Layout;
use crate::store::quarantine::Quarantine;
use crate::store::recover::{self, RecoverError, Recovered};
use crate::store::segments::{ensure_offsets, SegmentSet, SegmentWriter};
use crate::store::tiles::{TileReader, TileWriter};
use crate::store::view::LogView;
use crate::store::walk::{WalkRecord, Walker};

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> OpenError {
    move |source| OpenError::Io { what, source }
}

/// The log as recovery left it, with the duplicate index, the tiles and
/// the key history caught up: what the writer, the checkpointer and the
/// read side start from.
struct Restored {
    recovered: Recovered,
    set: Arc<SegmentSet>,
    dedupe: Arc<Dedupe>,
    tiles: TileWriter,
    tile_reader: Arc<TileReader>,
    checkpoints: CheckpointLog,
    history: KeyHistory,
}

/// See [`Pipeline::open`].
pub fn open(cfg: &PipelineConfig) -> Result<Pipeline, OpenError> {
    let data = DataDir::open(&cfg.data, cfg.origin.as_deref(), &cfg.log_keys)?;
    let keys = KeyRegistry::open(&cfg.jwks, Some(Layout::new(&data.root).admin_keys()))?;
    let metrics = crate::telemetry::metrics();
    metrics
        .keys_loaded
        .store(keys.current().key_count() as u64, Relaxed);
    let layout = Layout::new(&data.root);
    let Restored {
        recovered,
        set,
        dedupe,
        tiles,
        tile_reader,
        checkpoints,
        history,
    } = restore(&layout, cfg)?;
    let size = recovered.size;
    metrics.log_size_records.store(size, Relaxed);
    let health = Health::default();
    let (checkpointer, latest_rx) = first_checkpoint(&data, cfg, tiles, checkpoints, &health)?;
    let (durable_tx, durable_rx) = watch::channel(size);
    let view = LogView::new(
        &layout,
        set.clone(),
        dedupe,
        tile_reader,
        durable_rx,
        latest_rx,
    );
    let (cp_tx, cp_rx) = std::sync::mpsc::sync_channel(64);
    let (sealed_tx, sealed_rx) = watch::channel(None);
    let writer = Writer {
        origin: data.origin.clone(),
        segments: SegmentWriter::open(
            &layout,
            set,
            recovered.active.as_ref(),
            size,
            cfg.segment_max_bytes,
        )
        .map_err(io("cannot open the log segments for appending"))?,
        dedupe: view.dedupe().clone(),
        view: view.clone(),
        quarantine: Quarantine::open(&layout.quarantine_dir(), cfg.quarantine_max_entries)
            .map_err(io("cannot open the quarantine"))?,
        health: health.clone(),
        next: size,
        prev: recovered.prev,
        durable: durable_tx,
        checkpointer: cp_tx.clone(),
        sealed: sealed_tx,
        buffer: Vec::with_capacity(1 << 20),
    };
    let (tx, rx) = mpsc::channel(64);
    let threads = start_threads(writer, rx, checkpointer, cp_rx, &health)?;
    let pipeline = Pipeline {
        tx,
        checkpointer: cp_tx,
        view,
        keys: Arc::new(keys),
        rules: cfg.rules,
        tables: crate::event::tables::TableCache::new(cfg.verify_table_bytes),
        suspended: Arc::default(),
        pool: Arc::new(verification_pool(cfg, &health)?),
        health,
        threads: std::sync::Mutex::new(threads),
        sealed: sealed_rx,
        keylog: KeyLog::new(history, layout.key_history()),
        data: Arc::new(data),
    };
    pipeline.prepare_tables();
    Ok(pipeline)
}

/// Starts the log writer's and the checkpointer's threads.
fn start_threads(
    writer: Writer,
    rx: mpsc::Receiver<Request>,
    checkpointer: Checkpointer,
    cp_rx: std::sync::mpsc::Receiver<ToCheckpointer>,
    health: &Health,
) -> Result<Vec<std::thread::JoinHandle<()>>, OpenError> {
    let rt = tokio::runtime::Handle::current();
    Ok(vec![
        spawn("vigil-log-writer", "log writer thread", health, move || {
            writer.run(rx, rt)
        })?,
        spawn(
            "vigil-checkpointer",
            "checkpointer thread",
            health,
            move || checkpointer.run(cp_rx),
        )?,
    ])
}

/// The checkpointer, after a first checkpoint over every durable record
/// (signed before anything is served), and the watch of the latest.
fn first_checkpoint(
    data: &DataDir,
    cfg: &PipelineConfig,
    tiles: TileWriter,
    checkpoints: CheckpointLog,
    health: &Health,
) -> Result<(Checkpointer, watch::Receiver<Arc<Latest>>), OpenError> {
    let signer = data.cosigning_keys.iter().fold(
        NoteSigner::new(&data.origin, data.log_key.clone()),
        |s, k| s.cosigned_by(k.clone()),
    );
    let (latest_tx, latest_rx) = watch::channel(Arc::new(Latest {
        note: String::new(),
        size: 0,
        root: [0; 32],
    }));
    let mut checkpointer = Checkpointer {
        tiles,
        checkpoints,
        signer,
        interval: cfg.checkpoint_interval,
        latest: latest_tx,
        health: health.clone(),
    };
    checkpointer
        .checkpoint()
        .map_err(OpenError::FirstCheckpoint)?;
    if let Some(l) = checkpointer.checkpoints.latest() {
        let _ = checkpointer.latest.send(Arc::new(l.clone()));
    }
    Ok((checkpointer, latest_rx))
}

/// Makes the directory durable, recovers the log's end, and catches the
/// duplicate index, the tiles and the key history up with the records.
fn restore(layout: &Layout, cfg: &PipelineConfig) -> Result<Restored, OpenError> {
    recover::make_durable(layout)?;
    let checkpoints = CheckpointLog::open(layout)?;
    let latest = checkpoints.latest().filter(|l| l.size > 0);
    let checkpointed = latest.map_or(0, |l| l.size);
    let mut tiles = resume_tiles(layout, latest);
    let tile_reader = Arc::new(TileReader::new(layout, cfg.tile_cache_tiles));
    let trusted_tiles = tiles.size() == checkpointed;
    let expect = recover::Expect {
        checkpointed,
        tiles: trusted_tiles.then_some(&*tile_reader),
    };
    let recovered = recover::recover(layout, &expect)?;
    if let Some(cut) = &recovered.cut {
        tracing::warn!(
            cut,
            "Cut a torn last group left by a crash; it was never acknowledged"
        );
    }
    let rebuilt = ensure_offsets(layout, &recovered.segments)
        .map_err(io("cannot index the sealed segments"))?;
    if rebuilt > 0 {
        tracing::info!(rebuilt, "Rebuilt the offsets of sealed segments");
    }
    let active_offsets = recovered
        .active
        .as_ref()
        .map(|a| a.offsets.clone())
        .unwrap_or_default();
    let set = Arc::new(
        SegmentSet::open(layout, &recovered.segments, active_offsets)
            .map_err(io("cannot open the log segments"))?,
    );
    let dedupe = open_dedupe(layout, cfg, recovered.size)?;
    let saved_history = keylog::load_history(&layout.key_history());
    if saved_history.is_none() && recovered.size > 0 {
        tracing::info!("The log's key history is not saved; rebuilding it from the log");
    }
    let mut catch_up = CatchUp {
        dedupe: &dedupe,
        tiles: &mut tiles,
        rebuilding: saved_history.is_none().then(KeyHistory::default),
        // Tiles rebuilt from the records must give the latest
        // checkpoint's root, or the records are not the ones it covers.
        root_check: latest.filter(|_| !trusted_tiles).map(|l| (l.size, l.root)),
    };
    catch_up.run(layout, &set, recovered.size)?;
    let history = catch_up.rebuilding.or(saved_history).unwrap_or_default();
    if !trusted_tiles {
        // Rebuilt tiles replace what was on disk before anything is served.
        tiles.sync().map_err(io("cannot write the rebuilt tiles"))?;
    }
    Ok(Restored {
        recovered,
        set,
        dedupe,
        tiles,
        tile_reader,
        checkpoints,
        history,
    })
}

/// Opens the duplicate index; one that claims more records than the log
/// holds is not the index of this log: it is rebuilt.
fn open_dedupe(layout: &Layout, cfg: &PipelineConfig, size: u64) -> Result<Arc<Dedupe>, OpenError> {
    let dedupe = Dedupe::open(&layout.index_dir(), cfg.dedupe_filter_bytes)?;
    if dedupe.covered() <= size {
        return Ok(Arc::new(dedupe));
    }
    tracing::warn!(
        index_covers = dedupe.covered(),
        log_size = size,
        "The duplicate index covers more records than the log holds; rebuilding it from the log"
    );
    drop(dedupe);
    std::fs::remove_dir_all(layout.index_dir())
        .map_err(io("cannot remove the stale duplicate index"))?;
    Ok(Arc::new(Dedupe::open(
        &layout.index_dir(),
        cfg.dedupe_filter_bytes,
    )?))
}

/// The tiles of the latest checkpoint, read back and checked against its
/// root; rebuilt from the log when they are missing or disagree.
fn resume_tiles(layout: &Layout, latest: Option<&Latest>) -> TileWriter {
    let Some(latest) = latest.filter(|l| l.size > 0) else {
        return TileWriter::new(layout);
    };
    match TileWriter::resume(layout, latest.size) {
        Ok(t) if t.root() == latest.root => t,
        Ok(_) => {
            tracing::warn!(
                size = latest.size,
                "The tiles do not match the latest checkpoint's root; rebuilding them from the log"
            );
            TileWriter::new(layout)
        }
        Err(e) => {
            tracing::info!(error = %e, size = latest.size, "The tiles of the latest checkpoint are missing; building them from the log");
            TileWriter::new(layout)
        }
    }
}

/// One walk from the first record the index or the tiles lack (or from
/// the start, when the key history is rebuilt) to the end of the log,
/// feeding each.
struct CatchUp<'a> {
    dedupe: &'a Arc<Dedupe>,
    tiles: &'a mut TileWriter,
    /// The key history being rebuilt from the log, when none was saved.
    rebuilding: Option<KeyHistory>,
    /// The latest checkpoint (size, root), which rebuilt tiles must give.
    root_check: Option<(u64, Hash)>,
}

impl CatchUp<'_> {
    fn run(&mut self, layout: &Layout, set: &SegmentSet, size: u64) -> Result<(), OpenError> {
        let from = if self.rebuilding.is_some() {
            0
        } else {
            self.dedupe.covered().min(self.tiles.size())
        };
        if from >= size {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let firsts = set.firsts();
        let pos = set.position(from)?;
        let seg = firsts.iter().position(|&f| f == pos.segment).unwrap_or(0);
        let mut walker = Walker::new(layout, firsts, seg, pos.offset, from);
        while let Some(rec) = walker.next_record().map_err(io("cannot read the log"))? {
            if rec.index >= size {
                break;
            }
            self.feed(&rec)?;
        }
        crate::store::recover::fail_on_walk_damage(layout, walker.end())?;
        tracing::info!(
            from,
            to = size,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Caught the duplicate index and the tiles up with the log"
        );
        Ok(())
    }

    fn feed(&mut self, rec: &WalkRecord) -> Result<(), OpenError> {
        let damaged = |why: String| RecoverError::Damaged {
            file: "log".into(),
            position: format!("index {}", rec.index),
            why,
        };
        let body: ReceiptBody = serde_json::from_slice(&rec.body)
            .map_err(|e| damaged(format!("the receipt body is not a receipt: {e}")))?;
        if rec.index >= self.dedupe.covered() {
            self.dedupe.apply(rec.index, &keys_of(&body))?;
        }
        if rec.index >= self.tiles.size() {
            self.tiles.push(leaf_hash(&rec.body), &rec.body);
            let size = self.tiles.size();
            if self
                .root_check
                .is_some_and(|(at, root)| at == size && root != self.tiles.root())
            {
                return Err(RecoverError::Damaged {
                    file: "checkpoints.log".into(),
                    position: format!("the latest checkpoint (size {size})"),
                    why: "its root does not match the log's records: records were altered, removed or reordered".into(),
                }
                .into());
            }
        }
        let Some(history) = self.rebuilding.as_mut() else {
            return Ok(());
        };
        if body.agent_id != PIPELINE_AGENT || body.verdict() != Some(Verdict::Accepted) {
            return Ok(());
        }
        let change = Event::parse(&rec.event)
            .ok()
            .and_then(|e| KeyHistory::change_in(&e));
        match change {
            Some(change) => history
                .apply(&change)
                .map_err(|e| damaged(e.to_string()).into()),
            None => Ok(()),
        }
    }
}

/// Starts a pipeline thread whose panic fails the pipeline.
fn spawn(
    name: &str,
    role: &'static str,
    health: &Health,
    f: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, OpenError> {
    let health = health.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            health::fail_on_panic(&health, role);
            // The hook has failed the pipeline; the thread just ends.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        })
        .map_err(io("cannot start a pipeline thread"))
}

fn verification_pool(
    cfg: &PipelineConfig,
    health: &Health,
) -> Result<rayon::ThreadPool, OpenError> {
    let threads = if cfg.verify_threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        cfg.verify_threads
    };
    let pool_health = health.clone();
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("vigil-verify-{i}"))
        .start_handler(move |_| health::fail_on_panic(&pool_health, "verification thread"))
        // The hook has failed the pipeline; without a handler rayon aborts.
        .panic_handler(|_| {})
        .build()
        .map_err(OpenError::Threads)
}
