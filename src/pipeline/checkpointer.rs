//! The checkpointer: one thread that follows the durable records the
//! writer hands it, builds the Merkle tree's tiles, and at least every
//! checkpoint interval (while the log grows) makes the tiles durable,
//! signs a checkpoint over the durable records, makes it durable, and only
//! then publishes it to readers.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::health::Health;
use super::PipelineError;
use crate::event::Hash;
use crate::log::note::{CheckpointBody, NoteSigner};
use crate::store::checkpoints::{CheckpointLog, Latest};
use crate::store::tiles::TileWriter;
use crate::telemetry::metrics;

/// Records the writer has made durable, in order.
#[derive(Debug)]
pub struct DurableGroup {
    /// The index of the first.
    pub first: u64,
    /// Each record's leaf hash.
    pub leaves: Vec<Hash>,
    /// Each record's receipt body (JCS bytes).
    pub bodies: Vec<Vec<u8>>,
}

/// What the checkpointer is asked to do.
pub enum ToCheckpointer {
    /// New durable records.
    Durable(DurableGroup),
    /// Checkpoint now (if the log grew) and answer with the latest.
    Now(oneshot::Sender<Result<String, PipelineError>>),
    /// Write a last checkpoint and stop.
    Shutdown,
}

/// The checkpointer's resources.
pub struct Checkpointer {
    /// The tiles built so far.
    pub tiles: TileWriter,
    /// The checkpoint file.
    pub checkpoints: CheckpointLog,
    /// Signs checkpoints with the log key.
    pub signer: NoteSigner,
    /// Longest time between checkpoints while the log grows.
    pub interval: Duration,
    /// Publishes each checkpoint once durable.
    pub latest: watch::Sender<Arc<Latest>>,
    /// Set when a checkpoint cannot be written.
    pub health: Health,
}

impl Checkpointer {
    /// Runs until asked to stop (or the writer is gone).
    pub fn run(mut self, rx: Receiver<ToCheckpointer>) {
        let mut last = Instant::now();
        loop {
            let wait = self.interval.saturating_sub(last.elapsed());
            match rx.recv_timeout(wait) {
                Ok(ToCheckpointer::Durable(g)) => self.add(g),
                Ok(ToCheckpointer::Now(reply)) => {
                    let _ = reply.send(self.checkpoint());
                    last = Instant::now();
                }
                Ok(ToCheckpointer::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if last.elapsed() >= self.interval {
                let _ = self.checkpoint();
                last = Instant::now();
            }
        }
        if self.health.failure().is_none() {
            if let Err(e) = self.checkpoint() {
                tracing::error!(error = %e, "Could not write the last checkpoint at shutdown");
            }
        }
    }

    fn add(&mut self, g: DurableGroup) {
        debug_assert_eq!(g.first, self.tiles.size(), "groups arrive in order");
        for (leaf, body) in g.leaves.iter().zip(&g.bodies) {
            self.tiles.push(*leaf, body);
        }
    }

    /// Makes the tiles durable and signs a checkpoint over every record
    /// received, when the log grew since the last one (or there is none);
    /// returns the latest checkpoint.
    pub fn checkpoint(&mut self) -> Result<String, PipelineError> {
        let size = self.tiles.size();
        if let Some(latest) = self.checkpoints.latest() {
            if latest.size == size {
                return Ok(latest.note.clone());
            }
        }
        if let Some(why) = self.health.failure() {
            return Err(PipelineError::Failed(why));
        }
        let fail = |what: &str, e: std::io::Error| {
            PipelineError::Failed(self.health.fail(format!(
                "{what}: {e}; the receipt log stops taking events. Fix the disk problem and restart vigil"
            )))
        };
        self.tiles
            .sync()
            .map_err(|e| fail("cannot write the log's tiles", e))?;
        let root = self.tiles.root();
        let note = self.signer.sign(
            &CheckpointBody {
                origin: self.signer.name().to_string(),
                size,
                root,
            }
            .to_text(),
        );
        self.checkpoints
            .append(&note)
            .map_err(|e| fail("cannot write a checkpoint", e))?;
        let _ = self.latest.send(Arc::new(Latest {
            note: note.clone(),
            size,
            root,
        }));
        let m = metrics();
        m.checkpoints_total.fetch_add(1, Ordering::Relaxed);
        m.last_checkpoint_ms.store(
            (crate::time::Timestamp::now().0 / 1_000_000) as u64,
            Ordering::Relaxed,
        );
        m.checkpoint_size_records.store(size, Ordering::Relaxed);
        Ok(note)
    }
}
