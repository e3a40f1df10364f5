//! Follows the log into the [`Inventory`] the findings are judged from.
//! The inventory (a few hundred bytes per agent and key) is saved with the
//! log position it covers in `DIR/index/hygiene.json` (format [`FORMAT`])
//! every few seconds and at stop, so that a start reads only the records
//! after it; a missing, unreadable or foreign file is rebuilt from the
//! log's first record.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::error::ArrowError;

use super::{Finding, Inventory, Policy};
use crate::pipeline::Pipeline;
use crate::shutdown::Stop;
use crate::time::Timestamp;

/// Records read in a row before the inventory is unlocked for readers.
const BATCH: usize = 4096;
/// Version of the saved inventory's format.
pub const FORMAT: u32 = 1;
/// How often the inventory is saved while the log grows.
const SAVE_EVERY: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
struct Saved {
    format: u32,
    inventory: Inventory,
}

/// What the API shares with the stage.
#[derive(Debug, Default)]
pub struct Hygiene {
    inventory: Mutex<Inventory>,
    policy: crate::live::Live<Policy>,
    /// Where the inventory is saved (none: never saved).
    path: Option<PathBuf>,
}

impl Hygiene {
    /// An empty inventory judged by `policy`, never saved.
    pub fn new(policy: Policy) -> Arc<Hygiene> {
        Arc::new(Hygiene {
            policy: crate::live::Live::new(policy),
            ..Hygiene::default()
        })
    }

    /// The inventory saved at `path` if it is of this format and covers
    /// no more than the log's `log_size` records, else an empty one.
    pub fn open(policy: Policy, path: PathBuf, log_size: u64) -> Arc<Hygiene> {
        let saved = std::fs::read(&path).ok().and_then(|b| {
            match serde_json::from_slice::<Saved>(&b) {
                Ok(s) if s.format == FORMAT && s.inventory.position() <= log_size => Some(s),
                _ => {
                    tracing::warn!(path = %path.display(), "Agent inventory missing, unreadable, of another format or ahead of the log: rebuilding it from the log");
                    None
                }
            }
        });
        Arc::new(Hygiene {
            inventory: Mutex::new(saved.map(|s| s.inventory).unwrap_or_default()),
            policy: crate::live::Live::new(policy),
            path: Some(path),
        })
    }

    /// Judges with `policy` from now on (a reload).
    pub fn set_policy(&self, policy: Policy) {
        self.policy.set(policy);
    }

    fn inventory(&self) -> MutexGuard<'_, Inventory> {
        self.inventory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The findings as of now, and the log index they cover up to.
    pub fn findings(&self) -> (Vec<Finding>, u64) {
        let now = (Timestamp::now().0 / 1_000_000) as i64;
        let inv = self.inventory();
        (inv.findings(now, &self.policy.get()), inv.position())
    }

    /// The inventory's SQL tables (`agents`, `keys`, `findings`) as of
    /// now.
    pub fn tables(&self) -> Result<Vec<(&'static str, RecordBatch)>, ArrowError> {
        let now = (Timestamp::now().0 / 1_000_000) as i64;
        let inv = self.inventory();
        super::tables::tables(&inv, &inv.findings(now, &self.policy.get()))
    }

    /// The `occurred_at` (ms) of `agent_id`'s latest accepted event.
    pub fn last_seen_ms(&self, agent_id: &str) -> Option<i64> {
        self.inventory().last_seen_ms(agent_id)
    }

    /// Saves the inventory if it moved since `saved` (the position last
    /// saved), and returns the position saved now.
    async fn save(&self, saved: u64) -> u64 {
        let Some(path) = &self.path else {
            return saved;
        };
        // The agents' parts are shared (copy on write), but the map of
        // 10,000 agents is still copied: the runtime's other tasks (HTTP
        // answers) move to another thread meanwhile.
        let inventory = crate::background::off_the_runtime(|| {
            let inv = self.inventory();
            (inv.position() != saved).then(|| inv.clone())
        });
        let Some(inventory) = inventory else {
            return saved;
        };
        let position = inventory.position();
        let state = Saved {
            format: FORMAT,
            inventory,
        };
        crate::store::fsutil::save_derived_state(path.clone(), "agent inventory", state).await;
        position
    }

    /// Follows the log until `stop`, then saves.
    pub async fn run(self: Arc<Self>, pipeline: Arc<Pipeline>, mut stop: Stop) {
        let mut saved = self.inventory().position();
        let mut cursor = pipeline.view().tail(saved);
        // Looks each second; the pace says when a save is due.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut pace = crate::store::fsutil::SavePace::new(SAVE_EVERY);
        loop {
            let first = tokio::select! {
                _ = stop.stopped() => break,
                _ = tick.tick() => {
                    if pace.due() {
                        let started = pace.started();
                        saved = self.save(saved).await;
                        pace.finished(started.elapsed());
                    }
                    continue;
                }
                r = cursor.next() => match r {
                    None => break,
                    Some(r) => r,
                },
            };
            let failed = {
                let mut inv = self.inventory();
                let mut failed = None;
                for r in std::iter::once(first).chain(cursor.ready(BATCH)) {
                    match r {
                        Ok(rec) => inv.observe(&rec),
                        Err(e) => failed = Some(e),
                    }
                }
                failed
            };
            if let Some(e) = failed {
                tracing::error!("Hygiene cannot read the next record: {e}; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        self.save(saved).await;
    }
}
