//! Metrics with labels: a fixed matrix of atomics for the ingest path
//! (source by outcome, one increment per event), and small maps for rare
//! events (anomalies by kind and severity, responses by outcome, queries).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Where an input came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `POST /v1/events`.
    Http,
    /// Splunk HEC.
    Hec,
    /// The Kafka consumer.
    Kafka,
    /// Vigil's own events (agent `vigil`).
    Pipeline,
}

impl Source {
    const ALL: [Source; 4] = [Source::Http, Source::Hec, Source::Kafka, Source::Pipeline];

    /// The source of an item, from its `source` text (`http item 3`,
    /// `hec envelope 2`, `kafka:<topic>/<p>@<offset>`, anything else is
    /// the pipeline's own).
    pub fn of(text: &str) -> Source {
        if text.starts_with("http") {
            Source::Http
        } else if text.starts_with("hec") {
            Source::Hec
        } else if text.starts_with("kafka") {
            Source::Kafka
        } else {
            Source::Pipeline
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Source::Http => "http",
            Source::Hec => "hec",
            Source::Kafka => "kafka",
            Source::Pipeline => "pipeline",
        }
    }
}

/// What became of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new accepted receipt.
    Accepted,
    /// A rejection receipt.
    Rejected,
    /// Answered with an earlier receipt.
    Duplicate,
    /// No receipt: kept in quarantine.
    Quarantined,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Accepted,
        Outcome::Rejected,
        Outcome::Duplicate,
        Outcome::Quarantined,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Rejected => "rejected",
            Outcome::Duplicate => "duplicate",
            Outcome::Quarantined => "quarantined",
        }
    }
}

/// Inputs by source and outcome.
#[derive(Default)]
pub struct BySource([[AtomicU64; 4]; 4]);

impl BySource {
    /// Counts one input.
    pub fn inc(&self, source: Source, outcome: Outcome) {
        let s = Source::ALL.iter().position(|x| *x == source).unwrap_or(3);
        let o = Outcome::ALL.iter().position(|x| *x == outcome).unwrap_or(0);
        self.0[s][o].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (s, row) in Source::ALL.iter().zip(&self.0) {
            for (o, v) in Outcome::ALL.iter().zip(row) {
                let _ = writeln!(
                    out,
                    "{name}{{source=\"{}\",outcome=\"{}\"}} {}",
                    s.as_str(),
                    o.as_str(),
                    v.load(Ordering::Relaxed)
                );
            }
        }
    }
}

/// A counter family whose label values are known only at run time (kept
/// small by the caller: anomaly kinds, response outcomes).
pub struct Family {
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl Family {
    /// A family with these label names.
    pub const fn new(labels: &'static [&'static str]) -> Family {
        Family {
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds one to the series with these label values (in label order).
    pub fn inc(&self, values: &[&str]) {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        *self
            .values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    pub(super) fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        for (key, v) in values.iter() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .zip(key)
                .map(|(l, v)| format!("{l}=\"{}\"", escape(v)))
                .collect();
            let _ = writeln!(out, "{name}{{{}}} {v}", labels.join(","));
        }
    }
}

/// A label value escaped for the text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
