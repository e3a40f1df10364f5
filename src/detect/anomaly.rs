//! The anomaly object (contract section 6), the signals it is made of,
//! and how signals combine into a score, a severity and a sentence.

use serde::{Deserialize, Serialize};
use serde_json::Value as J;

/// Score from which an anomaly is an alert (below: context).
pub const ALERT_SCORE: u8 = 50;

/// One detector's finding about one event: observed against expected.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// The anomaly kind (`rate_spike`, `rare_action`, ...).
    pub kind: &'static str,
    /// The feature it looked at.
    pub feature: &'static str,
    /// What the event showed.
    pub observed: J,
    /// What the baseline expected.
    pub expected: J,
    /// How strongly it alone indicates an anomaly, 0-100.
    pub score: f64,
    /// Words for the summary (`"took hr.offboard_employee, an action it never took"`).
    pub says: String,
}

/// One line of an anomaly's explanation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Explanation {
    /// The feature.
    pub feature: String,
    /// What was observed.
    pub observed: J,
    /// What the baseline expected.
    pub expected: J,
    /// This feature's share of the score, 0-100.
    pub contribution: f64,
}

/// What was done about an anomaly.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    /// `none`, `step_up` or `revoke`.
    pub action: String,
    /// Where it stands.
    pub status: String,
}

/// An analyst's verdict on an anomaly.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Feedback {
    /// `false_positive` or `confirmed`.
    pub verdict: String,
    /// The analyst's note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Index of the feedback's event in the log.
    pub index: u64,
}

/// An anomaly as the contract defines it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Anomaly {
    /// Derived from the agent and the triggering event, so a replay gives
    /// the same id.
    pub anomaly_id: String,
    /// The agent.
    pub agent_id: String,
    /// The principal of the triggering event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The correlation id of the triggering event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// When Vigil decided it (wall clock).
    pub detected_at: String,
    /// `occurred_at` of the triggering event (received time for rejected ones).
    pub event_time: String,
    /// 0-100; 50 or more is an alert.
    pub score: u8,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// The detectors that fired.
    pub kinds: Vec<String>,
    /// Every event that made it, the triggering one first.
    pub event_ids: Vec<String>,
    /// Observed against expected, per feature.
    pub explanation: Vec<Explanation>,
    /// One sentence a SOC analyst can read.
    pub summary: String,
    /// What was done about it.
    pub response: Response,
    /// Whether it was made only of rejected events (it never justifies
    /// revoking anything by itself).
    pub from_rejected: bool,
    /// The analyst's verdict, once given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Feedback>,
    /// How many times it was revised by merging later alerts.
    pub revision: u32,
}

/// Most event ids one anomaly names.
pub const MAX_EVENT_IDS: usize = 100;

/// Points a second, third... new value adds to the strongest one.
const NOVELTY_EXTRA: f64 = 5.0;

/// Combines signals into a score. New values (`rare_*`) go together (a
/// new tool brings a new kind of resource with it), so they count as one
/// signal: the strongest plus [`NOVELTY_EXTRA`] for each other. The rest
/// are independent: 100 * (1 - prod(1 - s/100)).
pub fn combine(signals: &[Signal]) -> u8 {
    let novel: Vec<f64> = signals
        .iter()
        .filter(|s| s.kind.starts_with("rare_"))
        .map(|s| s.score)
        .collect();
    let novelty = novel.iter().copied().fold(0.0, f64::max)
        + NOVELTY_EXTRA * novel.len().saturating_sub(1) as f64;
    let miss: f64 = signals
        .iter()
        .filter(|s| !s.kind.starts_with("rare_"))
        .map(|s| s.score)
        .chain(std::iter::once(novelty))
        .map(|x| 1.0 - (x / 100.0).clamp(0.0, 1.0))
        .product();
    (100.0 * (1.0 - miss)).round().clamp(0.0, 100.0) as u8
}

/// The severity of a score.
pub fn severity(score: u8) -> &'static str {
    match score {
        85.. => "critical",
        70..=84 => "high",
        50..=69 => "medium",
        _ => "low",
    }
}

/// The id of the anomaly an agent's event triggers.
pub fn anomaly_id(agent_id: &str, event_id: &str) -> String {
    let d = crate::event::sha256(format!("vigil.anomaly/v1\0{agent_id}\0{event_id}").as_bytes());
    format!("anom-{}", crate::hexenc::encode(&d[..12]))
}

/// The explanation lines of `signals`, each with its share of `score`.
pub fn explain(signals: &[Signal], score: u8) -> Vec<Explanation> {
    let total: f64 = signals.iter().map(|s| s.score).sum::<f64>().max(1e-9);
    signals
        .iter()
        .map(|s| Explanation {
            feature: s.feature.to_string(),
            observed: s.observed.clone(),
            expected: s.expected.clone(),
            contribution: (f64::from(score) * s.score / total * 10.0).round() / 10.0,
        })
        .collect()
}

/// The sentence: the agent, then what each signal says, strongest first.
pub fn summary(agent_id: &str, signals: &[Signal]) -> String {
    let mut sorted: Vec<&Signal> = signals.iter().collect();
    sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
    let parts: Vec<&str> = sorted.iter().map(|s| s.says.as_str()).collect();
    match parts.as_slice() {
        [] => format!("Agent {agent_id} behaved unusually."),
        [one] => format!("Agent {agent_id} {one}."),
        [init @ .., last] => format!("Agent {agent_id} {}, and {last}.", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(score: f64) -> Signal {
        Signal {
            kind: "off_hours",
            feature: "rate",
            observed: J::from(1),
            expected: J::from(1),
            score,
            says: "x".into(),
        }
    }

    #[test]
    fn independent_signals_add_up_below_100() {
        assert_eq!(combine(&[signal(50.0)]), 50);
        assert_eq!(combine(&[signal(50.0), signal(50.0)]), 75);
        assert_eq!(combine(&[signal(100.0), signal(10.0)]), 100);
        assert_eq!(severity(75), "high");
        let rare = |kind, score| Signal {
            kind,
            ..signal(score)
        };
        let novel = [rare("rare_action", 40.0), rare("rare_resource", 30.0)];
        assert_eq!(combine(&novel), 45, "new values count as one signal");
        assert_eq!(severity(49), "low");
    }

    #[test]
    fn the_id_depends_only_on_agent_and_event() {
        assert_eq!(anomaly_id("a", "e1"), anomaly_id("a", "e1"));
        assert_ne!(anomaly_id("a", "e1"), anomaly_id("b", "e1"));
        assert_eq!(anomaly_id("a", "e1").len(), 5 + 24);
    }
}
