//! Agents suspended by a response (or an administrator) through Vigil,
//! on top of the status their records give: the judge rejects their
//! events as `agent_not_active`.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

/// The suspended agents, replaced whole on each change so that a batch
/// judges against one snapshot.
#[derive(Debug, Default)]
pub struct Suspended {
    agents: RwLock<Arc<HashSet<String>>>,
}

impl Suspended {
    /// The set in force now.
    pub fn current(&self) -> Arc<HashSet<String>> {
        self.agents
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Suspends (`true`) or lifts the suspension of (`false`) an agent.
    pub fn set(&self, agent_id: &str, suspended: bool) {
        let mut guard = self
            .agents
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.contains(agent_id) == suspended {
            return;
        }
        let mut next = HashSet::clone(&guard);
        if suspended {
            next.insert(agent_id.to_string());
        } else {
            next.remove(agent_id);
        }
        *guard = Arc::new(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_does_not_change_under_a_batch() {
        let s = Suspended::default();
        let before = s.current();
        s.set("hr-1", true);
        assert!(!before.contains("hr-1"));
        assert!(s.current().contains("hr-1"));
        s.set("hr-1", false);
        assert!(!s.current().contains("hr-1"));
    }
}
