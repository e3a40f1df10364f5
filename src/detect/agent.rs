//! One agent's state: its baseline, its recent events in event time, and
//! the anomaly later alerts merge into. Bounded: rings of fixed length.

use serde::{Deserialize, Serialize};

use super::anomaly::Anomaly;
use super::profile::Profile;

/// Event times kept for the rate window.
const TIMES: usize = 24;
/// Resources kept for the sweep window.
const RESOURCES: usize = 24;
/// Rejected events kept for the forged-burst window.
const REJECTED: usize = 12;
/// Sensitive events kept for the sensitive-rate window.
const SENSITIVE: usize = 12;
/// The rate window.
pub const RATE_WINDOW_MS: i64 = 60_000;
/// The sweep window.
pub const SWEEP_WINDOW_MS: i64 = 600_000;

/// An agent's detection state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentState {
    /// What the agent normally does.
    pub profile: Profile,
    /// The latest `occurred_at` seen (its clock).
    pub clock_ms: i64,
    /// The earliest `occurred_at` seen.
    #[serde(default)]
    pub first_ms: i64,
    /// `occurred_at` of its latest accepted events.
    pub times: Vec<i64>,
    /// (`occurred_at`, resource fingerprint) of its latest events with one.
    pub resources: Vec<(i64, u64)>,
    /// Bits of its last 20 outcomes: 1 = failed or denied.
    pub outcomes: u32,
    /// Fingerprint of its previous action.
    pub last_action: Option<u64>,
    /// Until when (event time) it learns nothing: set by an alert.
    pub flagged_until_ms: i64,
    /// Received times of its latest rejected events.
    pub rejected: Vec<i64>,
    /// `occurred_at` of its latest high or critical events.
    #[serde(default)]
    pub sensitive: Vec<i64>,
    /// The latest anomaly of its accepted events, for merging (dropped
    /// once later events are past the merge window).
    pub open: Option<Box<Anomaly>>,
    /// Event time of the open anomaly's latest event.
    pub open_last_ms: i64,
    /// The latest anomaly of its rejected events, for merging.
    pub open_rejected: Option<Box<Anomaly>>,
    /// Received time of the open rejected anomaly's latest event.
    pub open_rejected_last_ms: i64,
    /// Its multivariate model.
    pub model: super::model::AgentModel,
    /// Spreads its model's fits (from a hash of its id).
    pub jitter: Option<u32>,
}

fn push_bounded<T>(v: &mut Vec<T>, x: T, cap: usize) {
    if v.len() >= cap {
        v.remove(0);
    }
    v.push(x);
}

impl AgentState {
    /// Records an accepted event's time, resource, outcome and whether it
    /// was sensitive, and returns its window features.
    pub fn record(
        &mut self,
        t: i64,
        resource: Option<u64>,
        failed: bool,
        sensitive: bool,
    ) -> Windows {
        push_bounded(&mut self.times, t, TIMES);
        if sensitive {
            push_bounded(&mut self.sensitive, t, SENSITIVE);
        }
        if let Some(r) = resource {
            push_bounded(&mut self.resources, (t, r), RESOURCES);
        }
        self.outcomes = ((self.outcomes << 1) | u32::from(failed)) & 0xF_FFFF;
        if self.first_ms == 0 || t < self.first_ms {
            self.first_ms = t;
        }
        self.clock_ms = self.clock_ms.max(t);
        let rate = self
            .times
            .iter()
            .filter(|&&x| x <= t && x > t - RATE_WINDOW_MS)
            .count();
        let mut seen: Vec<u64> = self
            .resources
            .iter()
            .filter(|(x, _)| *x <= t && *x > t - SWEEP_WINDOW_MS)
            .map(|(_, r)| *r)
            .collect();
        seen.sort_unstable();
        seen.dedup();
        let sensitive = self
            .sensitive
            .iter()
            .filter(|&&x| x <= t && x > t - SWEEP_WINDOW_MS)
            .count();
        Windows {
            rate: rate as f64,
            sweep: seen.len() as f64,
            sensitive: sensitive as f64,
            failures: self.outcomes.count_ones(),
        }
    }

    /// Records a rejected event; returns how many were received in the
    /// trailing minute.
    pub fn record_rejected(&mut self, received_ms: i64) -> usize {
        push_bounded(&mut self.rejected, received_ms, REJECTED);
        self.rejected
            .iter()
            .filter(|&&x| x <= received_ms && x > received_ms - RATE_WINDOW_MS)
            .count()
    }

    /// Bytes this state holds in memory, without an open anomaly (held
    /// only within the merge window after an alert).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<AgentState>() - std::mem::size_of::<Profile>()
            + self.profile.memory_bytes()
            + self.times.capacity() * 8
            + self.resources.capacity() * 16
            + self.rejected.capacity() * 8
            + self.sensitive.capacity() * 8
            + self.model.memory_bytes()
    }
}

/// An event's window features.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Windows {
    /// Events in the trailing minute.
    pub rate: f64,
    /// Distinct resources in the trailing ten minutes.
    pub sweep: f64,
    /// High or critical events in the trailing ten minutes.
    pub sensitive: f64,
    /// Failures among the last 20 outcomes.
    pub failures: u32,
}
