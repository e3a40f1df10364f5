//! An agent's learnt baseline as people read it (`GET
//! /v1/agents/{agent_id}/baseline`, the dashboard's agent page): how many
//! events it was learnt from and over what span of event time, the events
//! expected in each hour of the week, its usual rates and volumes, and how
//! many distinct values of each kind it knows (values themselves are kept
//! only as fingerprints, so they cannot be shown).

use serde::Serialize;

use super::agent::AgentState;
use super::profile::{Stat, HOURS_OF_WEEK};
use super::rules::WARM_EVENTS;
use crate::time::Timestamp;

const WEEK_MS: i64 = 7 * 86_400_000;

/// One feature's running statistics.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Usual {
    /// Values seen.
    pub n: u64,
    /// Their (recent-weighted) mean.
    pub mean: f64,
    /// Their standard deviation.
    pub sd: f64,
    /// The largest seen.
    pub max: f64,
}

impl From<Stat> for Usual {
    fn from(s: Stat) -> Usual {
        Usual {
            n: s.n,
            mean: s.mean,
            sd: s.sd(),
            max: s.max,
        }
    }
}

/// How many distinct values of each kind the agent is known to use.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Known {
    /// Actions.
    pub actions: usize,
    /// Resource patterns (ids replaced by `*`).
    pub resources: usize,
    /// Principals acted for.
    pub principals: usize,
    /// Source addresses.
    pub source_ips: usize,
    /// Action-to-action transitions.
    pub transitions: usize,
}

/// An agent's baseline.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Baseline {
    /// The agent.
    pub agent_id: String,
    /// Accepted events it was learnt from (flagged ones teach nothing).
    pub events_learnt: u64,
    /// `own` once it has learnt enough events to be judged against its
    /// own baseline, `role` while it is judged against its role's.
    pub judged_against: &'static str,
    /// Its first event's `occurred_at`.
    pub first_seen: String,
    /// Its latest `occurred_at` (its clock).
    pub last_seen: String,
    /// Until when (event time) it learns nothing after an alert, if now.
    pub learning_paused_until: Option<String>,
    /// Events expected in each hour of the week (168 values, 0 = Monday
    /// 00:00 to 01:00 UTC): what it did at that hour, per week observed.
    pub expected_per_hour: Vec<f64>,
    /// Events in the trailing minute, as seen at each event.
    pub rate_per_minute: Usual,
    /// Distinct resources in the trailing ten minutes.
    pub resources_per_10_min: Usual,
    /// ln(1 + bytes + records) of events that gave a volume (none when
    /// no event did).
    pub volume_ln: Option<Usual>,
    /// Distinct values it is known to use.
    pub known: Known,
    /// The deepest delegation chain it acted under.
    pub max_delegation_depth: u8,
}

fn at(ms: i64) -> String {
    Timestamp(i128::from(ms) * 1_000_000).to_rfc3339_millis()
}

impl Baseline {
    /// The baseline of `agent_id`, whose state is `s`.
    pub fn of(agent_id: &str, s: &AgentState) -> Baseline {
        let p = &s.profile;
        // Weeks of event time observed, at least one: each hour of the
        // week was seen about this many times.
        let weeks = ((s.clock_ms - s.first_ms) as f64 / WEEK_MS as f64).max(1.0);
        Baseline {
            agent_id: agent_id.to_string(),
            events_learnt: p.events,
            judged_against: if p.events >= WARM_EVENTS {
                "own"
            } else {
                "role"
            },
            first_seen: at(s.first_ms),
            last_seen: at(s.clock_ms),
            learning_paused_until: (s.flagged_until_ms > s.clock_ms)
                .then(|| at(s.flagged_until_ms)),
            expected_per_hour: (0..HOURS_OF_WEEK)
                .map(|h| f64::from(p.hours.get(h).copied().unwrap_or(0)) / weeks)
                .collect(),
            rate_per_minute: p.rate.into(),
            resources_per_10_min: p.sweep.into(),
            volume_ln: (p.volume.n > 0).then(|| p.volume.into()),
            known: Known {
                actions: p.actions.len(),
                resources: p.resources.len(),
                principals: p.principals.len(),
                source_ips: p.ips.len(),
                transitions: p.transitions.len(),
            },
            max_delegation_depth: p.max_depth,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::profile::{Lesson, AGENT_CAPS};

    #[test]
    fn expected_events_are_per_week_observed() {
        let mut s = AgentState::default();
        let monday_9 = 1_794_819_600_000; // 2026-11-16T09:00:00Z, a Monday
        for week in 0..3 {
            let t = monday_9 + week * WEEK_MS;
            s.record(t, None, false, false);
            let lesson = Lesson {
                hour: 9,
                ..Lesson::default()
            };
            s.profile.learn(&lesson, 4, AGENT_CAPS);
        }
        let b = Baseline::of("a", &s);
        assert_eq!(b.events_learnt, 12);
        assert_eq!(b.first_seen, "2026-11-16T09:00:00.000Z");
        assert_eq!(b.last_seen, "2026-11-30T09:00:00.000Z");
        // 12 events at Monday 09:00 over two weeks of event time.
        assert_eq!(b.expected_per_hour[9], 6.0);
        assert_eq!(b.expected_per_hour.iter().sum::<f64>(), 6.0);
        assert_eq!(b.judged_against, "role");
    }
}
