//! Logging setup and the Prometheus metrics every stage records.
//!
//! Metric names follow `vigil_<area>_<name>_<unit>`, counters end in
//! `_total`, labels are bounded (verdict reasons, sources). Metrics are
//! plain atomics updated per batch and rendered as Prometheus text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::log::receipt::Reason;

/// Starts `tracing` output to stderr; `RUST_LOG` overrides `default_filter`.
pub fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A histogram with fixed buckets (upper bounds in seconds).
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation, in seconds.
    pub fn observe(&self, secs: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if secs <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {n}");
    }
}

const LATENCY_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Every metric Vigil exports.
pub struct Metrics {
    /// Receipts written with `accepted`.
    pub events_accepted_total: AtomicU64,
    /// Duplicates answered with the original receipt.
    pub events_duplicate_total: AtomicU64,
    /// Receipts written with `rejected:<reason>`, by reason.
    pub events_rejected_total: [AtomicU64; 9],
    /// Inputs quarantined as unparseable.
    pub quarantined_unparseable_total: AtomicU64,
    /// Inputs quarantined for an unknown agent.
    pub quarantined_unknown_agent_total: AtomicU64,
    /// Quarantine entries dropped to keep the bound.
    pub quarantine_dropped_total: AtomicU64,
    /// Request bodies refused as too large.
    pub http_body_too_large_total: AtomicU64,
    /// Requests refused for a missing or bad token.
    pub http_unauthorized_total: AtomicU64,
    /// Group commits (one fdatasync of the log each).
    pub log_commits_total: AtomicU64,
    /// Records in the log that are durable.
    pub log_size_records: AtomicU64,
    /// Tree size of the latest checkpoint.
    pub checkpoint_size_records: AtomicU64,
    /// Checkpoints signed.
    pub checkpoints_total: AtomicU64,
    /// JWKS documents refused on reload.
    pub keys_refused_total: AtomicU64,
    /// Agent keys in force.
    pub keys_loaded: AtomicU64,
    /// Kafka messages handed to the pipeline.
    pub kafka_messages_total: AtomicU64,
    /// Kafka offset commits requested.
    pub kafka_commits_total: AtomicU64,
    /// `.rejected` copies published and acknowledged.
    pub kafka_rejected_published_total: AtomicU64,
    /// Messages whose key is not the event's agent_id.
    pub kafka_key_mismatch_total: AtomicU64,
    /// Consumer lag (messages) by "topic/partition".
    pub kafka_lag: std::sync::Mutex<Vec<(String, i64)>>,
    /// Time from a batch's arrival to its answer being ready (all durable).
    pub ingest_ack_seconds: Histogram,
    /// Time of each log fdatasync.
    pub log_sync_seconds: Histogram,
    /// Time from a batch's arrival until it is judged (queue plus work on
    /// the verification pool).
    pub ingest_judge_seconds: Histogram,
    /// Time from a judged batch's hand-over to the log writer until its
    /// receipts are durable.
    pub log_commit_wait_seconds: Histogram,
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        events_accepted_total: AtomicU64::new(0),
        events_duplicate_total: AtomicU64::new(0),
        events_rejected_total: Default::default(),
        quarantined_unparseable_total: AtomicU64::new(0),
        quarantined_unknown_agent_total: AtomicU64::new(0),
        quarantine_dropped_total: AtomicU64::new(0),
        http_body_too_large_total: AtomicU64::new(0),
        http_unauthorized_total: AtomicU64::new(0),
        log_commits_total: AtomicU64::new(0),
        log_size_records: AtomicU64::new(0),
        checkpoint_size_records: AtomicU64::new(0),
        checkpoints_total: AtomicU64::new(0),
        keys_refused_total: AtomicU64::new(0),
        keys_loaded: AtomicU64::new(0),
        kafka_messages_total: AtomicU64::new(0),
        kafka_commits_total: AtomicU64::new(0),
        kafka_rejected_published_total: AtomicU64::new(0),
        kafka_key_mismatch_total: AtomicU64::new(0),
        kafka_lag: std::sync::Mutex::new(Vec::new()),
        ingest_ack_seconds: Histogram::new(LATENCY_BOUNDS),
        log_sync_seconds: Histogram::new(LATENCY_BOUNDS),
        ingest_judge_seconds: Histogram::new(LATENCY_BOUNDS),
        log_commit_wait_seconds: Histogram::new(LATENCY_BOUNDS),
    })
}

impl Metrics {
    /// Counts one rejection receipt.
    pub fn rejected(&self, reason: Reason) {
        let i = Reason::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("every reason is in ALL");
        self.events_rejected_total[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Replaces the consumer lag gauges.
    pub fn set_kafka_lag(&self, lags: Vec<(String, i64)>) {
        *self
            .kafka_lag
            .lock()
            .expect("the lag lock is never poisoned") = lags;
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP vigil_ingest_events_total Events by outcome: accepted or rejected receipts, duplicates, quarantined inputs.\n# TYPE vigil_ingest_events_total counter");
        let _ = writeln!(
            out,
            "vigil_ingest_events_total{{outcome=\"accepted\"}} {}",
            get(&self.events_accepted_total)
        );
        let _ = writeln!(
            out,
            "vigil_ingest_events_total{{outcome=\"duplicate\"}} {}",
            get(&self.events_duplicate_total)
        );
        for (r, c) in Reason::ALL.iter().zip(&self.events_rejected_total) {
            let _ = writeln!(
                out,
                "vigil_ingest_events_total{{outcome=\"rejected\",reason=\"{}\"}} {}",
                r.as_str(),
                get(c)
            );
        }
        let _ = writeln!(
            out,
            "vigil_ingest_events_total{{outcome=\"quarantined\",reason=\"unparseable\"}} {}",
            get(&self.quarantined_unparseable_total)
        );
        let _ = writeln!(
            out,
            "vigil_ingest_events_total{{outcome=\"quarantined\",reason=\"unknown_agent\"}} {}",
            get(&self.quarantined_unknown_agent_total)
        );
        let simple: [(&str, &str, &str, &AtomicU64); 14] = [
            (
                "vigil_kafka_messages_total",
                "counter",
                "Kafka messages handed to the pipeline.",
                &self.kafka_messages_total,
            ),
            (
                "vigil_kafka_commits_total",
                "counter",
                "Kafka offset commits of durable offsets.",
                &self.kafka_commits_total,
            ),
            (
                "vigil_kafka_rejected_published_total",
                "counter",
                "Copies published to <topic>.rejected and acknowledged.",
                &self.kafka_rejected_published_total,
            ),
            (
                "vigil_kafka_key_mismatch_total",
                "counter",
                "Kafka messages whose key is not the event's agent_id.",
                &self.kafka_key_mismatch_total,
            ),
            (
                "vigil_quarantine_dropped_total",
                "counter",
                "Quarantine entries dropped to keep its bound.",
                &self.quarantine_dropped_total,
            ),
            (
                "vigil_http_body_too_large_total",
                "counter",
                "Request bodies refused with 413.",
                &self.http_body_too_large_total,
            ),
            (
                "vigil_http_unauthorized_total",
                "counter",
                "Requests refused for a missing or unknown token.",
                &self.http_unauthorized_total,
            ),
            (
                "vigil_log_commits_total",
                "counter",
                "Group commits of the receipt log (one fdatasync each).",
                &self.log_commits_total,
            ),
            (
                "vigil_log_size_records",
                "gauge",
                "Durable records in the receipt log.",
                &self.log_size_records,
            ),
            (
                "vigil_checkpoint_size_records",
                "gauge",
                "Tree size of the latest signed checkpoint.",
                &self.checkpoint_size_records,
            ),
            (
                "vigil_checkpoints_total",
                "counter",
                "Checkpoints signed since start.",
                &self.checkpoints_total,
            ),
            (
                "vigil_keys_refused_total",
                "counter",
                "JWKS documents refused (previous keys kept).",
                &self.keys_refused_total,
            ),
            (
                "vigil_keys_loaded",
                "gauge",
                "Agent keys in force.",
                &self.keys_loaded,
            ),
            (
                "vigil_up",
                "gauge",
                "1 while the process serves.",
                &AtomicU64::new(1),
            ),
        ];
        for (name, kind, help, v) in simple {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                get(v)
            );
        }
        let _ = writeln!(
            out,
            "# HELP vigil_kafka_consumer_lag_messages Messages in a partition not yet durable here.\n# TYPE vigil_kafka_consumer_lag_messages gauge"
        );
        for (tp, lag) in self
            .kafka_lag
            .lock()
            .expect("the lag lock is never poisoned")
            .iter()
        {
            let _ = writeln!(
                out,
                "vigil_kafka_consumer_lag_messages{{partition=\"{tp}\"}} {lag}"
            );
        }
        self.ingest_ack_seconds.render(
            &mut out,
            "vigil_ingest_ack_seconds",
            "Time from a batch's arrival until every receipt it names is durable.",
        );
        self.log_sync_seconds.render(
            &mut out,
            "vigil_log_sync_seconds",
            "Duration of each receipt log fdatasync.",
        );
        self.ingest_judge_seconds.render(
            &mut out,
            "vigil_ingest_judge_seconds",
            "Time from a batch's arrival until it is judged (queue and verification).",
        );
        self.log_commit_wait_seconds.render(
            &mut out,
            "vigil_log_commit_wait_seconds",
            "Time from a judged batch's hand-over to the log writer until it is durable.",
        );
        out
    }
}
