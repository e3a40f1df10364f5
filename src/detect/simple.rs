//! The simple baseline `vigil eval` compares detection with: per-agent
//! 15-minute counts against the same hour of day's history, plus "never
//! seen" rules on action, principal and source address once an agent has
//! 30 events. It learns from everything and knows no roles. Alerts of an
//! agent within ten minutes of each other are one alert.

use std::collections::{HashMap, HashSet};

use super::observation::Fields;

const BUCKET_MS: i64 = 15 * 60_000;
const MERGE_MS: i64 = 10 * 60_000;

#[derive(Default)]
struct AgentHistory {
    events: u64,
    seen: HashSet<(u8, String)>,
    bucket: i64,
    count: u32,
    /// (sum of 15-minute counts, buckets) by hour of day.
    by_hour: [(u64, u64); 24],
    open: Option<(i64, usize)>,
}

/// The baseline detector.
#[derive(Default)]
pub struct Simple {
    agents: HashMap<String, AgentHistory>,
    alerts: Vec<Vec<String>>,
}

fn hour_of(ms: i64) -> usize {
    (ms.div_euclid(3_600_000).rem_euclid(24)) as usize
}

impl Simple {
    /// Looks at one accepted event.
    pub fn observe(&mut self, agent_id: &str, event_id: &str, f: &Fields) {
        let a = self.agents.entry(agent_id.to_string()).or_default();
        let t = f.occurred_ms;
        let bucket = t.div_euclid(BUCKET_MS);
        if bucket != a.bucket {
            if a.count > 0 {
                let h = &mut a.by_hour[hour_of(a.bucket * BUCKET_MS)];
                *h = (h.0 + u64::from(a.count), h.1 + 1);
            }
            a.bucket = bucket;
            a.count = 0;
        }
        a.count += 1;
        let (sum, n) = a.by_hour[hour_of(t)];
        let busy = n >= 3 && f64::from(a.count) > 3.0 * sum as f64 / n as f64 + 5.0;
        let values = [
            (0u8, Some(&f.action)),
            (1, f.principal.as_ref()),
            (2, f.source_ip.as_ref()),
        ];
        let mut new = false;
        for (kind, v) in values {
            if let Some(v) = v {
                new |= a.seen.insert((kind, v.clone())) && a.events >= 30;
            }
        }
        a.events += 1;
        if !(busy || new) {
            return;
        }
        match a.open {
            Some((last, i)) if t - last <= MERGE_MS => {
                self.alerts[i].push(event_id.to_string());
                a.open = Some((t, i));
            }
            _ => {
                a.open = Some((t, self.alerts.len()));
                self.alerts.push(vec![event_id.to_string()]);
            }
        }
    }

    /// The alerts, each as the event ids that made it (triggering first).
    pub fn alerts(self) -> Vec<Vec<String>> {
        self.alerts
    }
}
