//! Follows the log into the [`Inventory`] the findings are judged from.
//! It starts from the log's first record at every start (the inventory
//! holds a few hundred bytes per agent and key; saving it, as detection
//! saves its state, is left for when logs make the replay slow).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::error::ArrowError;

use super::{Finding, Inventory, Policy};
use crate::pipeline::Pipeline;
use crate::shutdown::Stop;
use crate::time::Timestamp;

/// Records read in a row before the inventory is unlocked for readers.
const BATCH: usize = 4096;

/// What the API shares with the stage.
#[derive(Debug, Default)]
pub struct Hygiene {
    inventory: Mutex<Inventory>,
    policy: crate::live::Live<Policy>,
}

impl Hygiene {
    /// An empty inventory judged by `policy`.
    pub fn new(policy: Policy) -> Arc<Hygiene> {
        Arc::new(Hygiene {
            inventory: Mutex::default(),
            policy: crate::live::Live::new(policy),
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

    /// Follows the log until `stop`.
    pub async fn run(self: Arc<Self>, pipeline: Arc<Pipeline>, mut stop: Stop) {
        let mut cursor = pipeline.view().tail(0);
        loop {
            let first = tokio::select! {
                _ = stop.stopped() => return,
                r = cursor.next() => match r {
                    None => return,
                    Some(r) => r,
                },
            };
            let failed = {
                let mut inv = self.inventory();
                let mut failed = None;
                for r in std::iter::once(first).chain(cursor.ready(BATCH)) {
                    match r {
                        Ok(rec) => inv.observe(rec.index, &rec.body, &rec.event),
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
    }
}
