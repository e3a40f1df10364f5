//! The anomalies the API shows: every version in order of detection, each
//! with a sequence number (the SSE event id), bounded to the latest
//! [`BOARD_VERSIONS`]; live subscribers get each new version.

use std::collections::{HashSet, VecDeque};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::anomaly::{Anomaly, Feedback};

/// Versions kept (older ones are in the log, as `vigil.anomaly` events,
/// and in the SQL table `anomalies`): about 2.7 KB each in `detect.json`,
/// so that the board stays a bounded part of the server's memory.
pub const BOARD_VERSIONS: usize = 5_000;

/// One version of an anomaly, numbered in order of detection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Version {
    /// Sequence number, from 1.
    pub seq: u64,
    /// The anomaly as it stood.
    pub anomaly: Anomaly,
}

/// Which anomalies a list wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this agent's.
    pub agent_id: Option<String>,
    /// Only those whose event time is at or after this (RFC 3339, compared
    /// as the contract's fixed-width UTC text).
    pub since: Option<String>,
    /// Only those scoring at least this.
    pub min_score: u8,
    /// At most this many.
    pub limit: usize,
}

/// The versions and the live feed.
#[derive(Debug)]
pub struct Board {
    versions: VecDeque<Version>,
    next_seq: u64,
    live: broadcast::Sender<Version>,
}

/// What of a board is saved.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SavedBoard {
    versions: Vec<Version>,
    next_seq: u64,
}

impl Default for Board {
    fn default() -> Self {
        Board::restore(SavedBoard::default())
    }
}

impl Board {
    /// A board as saved.
    pub fn restore(saved: SavedBoard) -> Board {
        let mut versions = saved.versions;
        // A board saved with a larger bound keeps its latest versions.
        versions.drain(..versions.len().saturating_sub(BOARD_VERSIONS));
        Board {
            versions: versions.into(),
            next_seq: saved.next_seq.max(1),
            live: broadcast::channel(1024).0,
        }
    }

    /// What to save.
    pub fn save(&self) -> SavedBoard {
        SavedBoard {
            versions: self.versions.iter().cloned().collect(),
            next_seq: self.next_seq,
        }
    }

    /// Adds a version and sends it to live subscribers.
    pub fn push(&mut self, anomaly: Anomaly) {
        let v = Version {
            seq: self.next_seq,
            anomaly,
        };
        self.next_seq += 1;
        if self.versions.len() >= BOARD_VERSIONS {
            self.versions.pop_front();
        }
        self.versions.push_back(v.clone());
        let _ = self.live.send(v);
    }

    /// Shows a version the detector made. What the board adds to an
    /// anomaly (the analyst's feedback, the response) is not the
    /// detector's to know: it carries over from the anomaly's latest
    /// version, so a later merge does not take it away.
    pub fn show(&mut self, mut anomaly: Anomaly) {
        if let Some(latest) = self.get(&anomaly.anomaly_id) {
            anomaly.feedback = latest.feedback.clone();
            anomaly.response = latest.response.clone();
        }
        self.push(anomaly);
    }

    /// The latest version of an anomaly.
    pub fn get(&self, anomaly_id: &str) -> Option<&Anomaly> {
        self.versions
            .iter()
            .rev()
            .map(|v| &v.anomaly)
            .find(|a| a.anomaly_id == anomaly_id)
    }

    /// Records an analyst's verdict as a new version.
    pub fn feedback(&mut self, anomaly_id: &str, feedback: Feedback) {
        if let Some(a) = self.get(anomaly_id) {
            let mut a = a.clone();
            a.feedback = Some(feedback);
            self.push(a);
        }
    }

    /// Records what was done about an anomaly as a new version (when it
    /// changed).
    pub fn respond(&mut self, anomaly_id: &str, response: super::anomaly::Response) {
        if let Some(a) = self.get(anomaly_id) {
            if a.response != response {
                let mut a = a.clone();
                a.response = response;
                self.push(a);
            }
        }
    }

    /// The latest version of each anomaly that passes `filter`, newest
    /// first.
    pub fn list(&self, filter: &Filter) -> Vec<Anomaly> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for v in self.versions.iter().rev() {
            let a = &v.anomaly;
            if !seen.insert(a.anomaly_id.as_str()) {
                continue;
            }
            let keep = filter.agent_id.as_ref().is_none_or(|x| *x == a.agent_id)
                && filter.since.as_ref().is_none_or(|s| a.event_time >= *s)
                && a.score >= filter.min_score;
            if keep {
                out.push(a.clone());
                if out.len() >= filter.limit {
                    break;
                }
            }
        }
        out
    }

    /// Versions after `seq` still kept, and a receiver for the ones to come
    /// (subscribed first, so nothing falls between).
    pub fn follow(&self, after: u64) -> (Vec<Version>, broadcast::Receiver<Version>) {
        let rx = self.live.subscribe();
        let past = self
            .versions
            .iter()
            .filter(|v| v.seq > after)
            .cloned()
            .collect();
        (past, rx)
    }
}
