//! Logging setup and the Prometheus metrics every stage records.
//!
//! Metric names follow `vigil_<area>_<name>_<unit>`, counters end in
//! `_total`, labels are bounded (verdict reasons, sources). Metrics are
//! plain atomics updated per batch and rendered as Prometheus text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::log::receipt::Reason;

mod family;
#[cfg(feature = "server")]
pub mod otlp;
pub mod trace;
pub use family::{BySource, Family, Outcome, Source};

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

/// Declares the metrics without labels once: each field's doc comment is
/// its `# HELP` text and its name, prefixed with `vigil_`, its metric
/// name. Adding a metric is one entry here.
macro_rules! registry {
    (
        counters { $( $(#[doc = $cdoc:expr])+ $counter:ident, )* }
        gauges { $( $(#[doc = $gdoc:expr])+ $gauge:ident, )* }
        histograms { $( $(#[doc = $hdoc:expr])+ $hist:ident, )* }
    ) => {
        /// Every metric Vigil exports.
        pub struct Metrics {
            $( $(#[doc = $cdoc])+ pub $counter: AtomicU64, )*
            $( $(#[doc = $gdoc])+ pub $gauge: AtomicU64, )*
            $( $(#[doc = $hdoc])+ pub $hist: Histogram, )*
            /// Receipts written with `rejected:<reason>`, by reason.
            pub events_rejected_total: [AtomicU64; 9],
            /// Consumer lag (messages) by "topic/partition".
            pub kafka_lag: std::sync::Mutex<Vec<(String, i64)>>,
            /// Inputs by source and outcome.
            pub by_source: BySource,
            /// Anomaly versions by kind and severity (one per kind).
            pub anomaly_kinds: Family,
            /// Response steps recorded, by action and outcome.
            pub responses: Family,
            /// SQL queries by outcome (`ok` or the error code).
            pub queries: Family,
            /// When this process last signed a checkpoint (Unix ms; 0: not yet).
            pub last_checkpoint_ms: AtomicU64,
        }

        impl Metrics {
            fn new() -> Metrics {
                Metrics {
                    $( $counter: AtomicU64::new(0), )*
                    $( $gauge: AtomicU64::new(0), )*
                    $( $hist: Histogram::new(LATENCY_BOUNDS), )*
                    events_rejected_total: Default::default(),
                    kafka_lag: std::sync::Mutex::new(Vec::new()),
                    by_source: BySource::default(),
                    anomaly_kinds: Family::new(&["kind", "severity"]),
                    responses: Family::new(&["action", "outcome"]),
                    queries: Family::new(&["outcome"]),
                    last_checkpoint_ms: AtomicU64::new(0),
                }
            }

            fn render_registered(&self, out: &mut String) {
                $( render_one(out, concat!("vigil_", stringify!($counter)), "counter",
                    concat!($($cdoc),+), &self.$counter); )*
                $( render_one(out, concat!("vigil_", stringify!($gauge)), "gauge",
                    concat!($($gdoc),+), &self.$gauge); )*
                $( self.$hist.render(out, concat!("vigil_", stringify!($hist)),
                    concat!($($hdoc),+)); )*
            }
        }
    };
}

fn render_one(out: &mut String, name: &str, kind: &str, help: &str, v: &AtomicU64) {
    let _ = writeln!(
        out,
        "# HELP {name} {}\n# TYPE {name} {kind}\n{name} {}",
        help.trim(),
        v.load(Ordering::Relaxed)
    );
}

registry! {
    counters {
        /// Receipts written with `accepted` (rendered in vigil_ingest_events_total).
        events_accepted_total,
        /// Duplicates answered with the original receipt (in vigil_ingest_events_total).
        events_duplicate_total,
        /// Inputs quarantined as unparseable (in vigil_ingest_events_total).
        quarantined_unparseable_total,
        /// Inputs quarantined for an unknown agent (in vigil_ingest_events_total).
        quarantined_unknown_agent_total,
        /// Quarantine entries dropped to keep its bound.
        quarantine_dropped_total,
        /// Request bodies refused with 413.
        http_body_too_large_total,
        /// Requests refused for a missing or unknown token.
        http_unauthorized_total,
        /// Connections refused because `max_connections` were open.
        http_connections_refused_total,
        /// Connections closed for sending no complete request head within
        /// `header_timeout_s` (idle keep-alive included).
        http_header_timeouts_total,
        /// Group commits of the receipt log (one fdatasync each).
        log_commits_total,
        /// Checkpoints signed since start.
        checkpoints_total,
        /// JWKS documents refused (previous keys kept).
        keys_refused_total,
        /// Fetches of https JWKS sources that failed or were refused
        /// (previous keys kept).
        jwks_fetch_failures_total,
        /// Kafka messages handed to the pipeline.
        kafka_messages_total,
        /// Kafka offset commits of durable offsets.
        kafka_commits_total,
        /// Copies published to <topic>.rejected and acknowledged.
        kafka_rejected_published_total,
        /// Rejected messages too large to copy whole, copied truncated.
        kafka_rejected_truncated_total,
        /// Failed attempts to publish a .rejected copy (each retried).
        kafka_rejected_retries_total,
        /// Kafka messages whose key is not the event's agent_id.
        kafka_key_mismatch_total,
        /// Signature checks that used the key's precomputed table.
        verify_table_hits_total,
        /// Signature checks of keys without a table (the usual path).
        verify_table_misses_total,
        /// Per-key tables built.
        verify_table_builds_total,
        /// Per-key tables evicted to keep the memory budget.
        verify_table_evictions_total,
        /// Anomaly versions detected (new anomalies and merges).
        anomalies_total,
        /// Posture changes applied (step-up required, suspended, active).
        posture_changes_total,
        /// CIBA step-up requests the provider accepted.
        step_ups_requested_total,
        /// Leases revoked in Vault.
        leases_revoked_total,
        /// Failed attempts to reach the OpenID provider or Vault (each retried or recorded).
        response_failures_total,
        /// Sealed log segments written as Parquet.
        parquet_segments_total,
    }
    gauges {
        /// Durable records in the receipt log.
        log_size_records,
        /// Tree size of the latest signed checkpoint.
        checkpoint_size_records,
        /// Agent keys in force.
        keys_loaded,
        /// Memory held by per-key verification tables.
        verify_table_bytes,
        /// Log records the detection stage has judged (its cursor).
        detection_position_records,
        /// Log records the response stage has read (its cursor).
        response_position_records,
        /// Agents suspended through Vigil.
        agents_suspended,
        /// HTTP connections open on the API listener.
        http_connections_open,
    }
    histograms {
        /// Time from an event's receipt (`received_at`) until detection has judged it.
        detection_lag_seconds,
        /// Time from the receipt of an anomaly's event until the response stage changed a posture for it.
        response_lag_seconds,
        /// Time from a batch's arrival until every receipt it names is durable.
        ingest_ack_seconds,
        /// Duration of each receipt log fdatasync.
        log_sync_seconds,
        /// Time from a batch's arrival until it is judged (queue and verification).
        ingest_judge_seconds,
        /// Time from a judged batch's hand-over to the log writer until it is durable.
        log_commit_wait_seconds,
        /// Time each SQL query took (answered or refused).
        query_seconds,
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
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

    fn render_labelled(&self, out: &mut String) {
        self.by_source.render(
            out,
            "vigil_ingest_source_events_total",
            "Inputs by source (http, hec, kafka, pipeline) and outcome (accepted, rejected, duplicate, quarantined).",
        );
        self.anomaly_kinds.render(
            out,
            "vigil_anomaly_kinds_total",
            "Anomaly versions by kind and severity (an anomaly of two kinds counts in both).",
        );
        self.responses.render(
            out,
            "vigil_responses_total",
            "Response steps recorded in the log, by action and outcome.",
        );
        self.queries.render(
            out,
            "vigil_queries_total",
            "SQL queries by outcome: ok, or the error code of the refusal.",
        );
        if let Some(age) = self.checkpoint_age_seconds() {
            let _ = writeln!(
                out,
                "# HELP vigil_checkpoint_age_seconds Seconds since this process last signed a checkpoint.\n# TYPE vigil_checkpoint_age_seconds gauge\nvigil_checkpoint_age_seconds {age}",
            );
        }
    }

    /// Seconds since this process last signed a checkpoint, if it has.
    pub fn checkpoint_age_seconds(&self) -> Option<f64> {
        let last = self.last_checkpoint_ms.load(Ordering::Relaxed);
        let now = (crate::time::Timestamp::now().0 / 1_000_000) as u64;
        (last > 0).then(|| now.saturating_sub(last) as f64 / 1000.0)
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
        self.render_registered(&mut out);
        self.render_labelled(&mut out);
        let _ = writeln!(
            out,
            "# HELP vigil_up 1 while the process serves.\n# TYPE vigil_up gauge\nvigil_up 1"
        );
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
        out
    }
}
