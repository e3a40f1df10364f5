//! The audit store's tables as Arrow schemas, and the rows each log record
//! adds to them.
//!
//! Every record is a row of `receipts`; a record whose event is a JSON
//! object is also a row of `events` (rejected ones too: `verdict` says
//! which); `vigil.anomaly` events of agent `vigil` are rows of `anomalies`
//! (one per published version) and `vigil.response.*` / `vigil.admin.*`
//! events rows of `responses`. Times are UTC milliseconds.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::Value as J;

use crate::log::receipt::ReceiptBody;
use crate::time::Timestamp;

/// The tables built from log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// One row per receipt.
    Receipts,
    /// One row per record whose event is a JSON object.
    Events,
    /// One row per published anomaly version.
    Anomalies,
    /// One row per response or administration event.
    Responses,
}

/// The log's tables, in the order a sealed segment writes them (receipts
/// last: its file marks the segment as sealed).
pub const LOG_TABLES: [Table; 4] = [
    Table::Events,
    Table::Anomalies,
    Table::Responses,
    Table::Receipts,
];

/// A column's type.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Index,
    Int,
    Float,
    Time,
}

const RECEIPTS: &[(&str, Kind)] = &[
    ("log_index", Kind::Index),
    ("event_id", Kind::Text),
    ("agent_id", Kind::Text),
    ("key_id", Kind::Text),
    ("correlation_id", Kind::Text),
    ("event_hash", Kind::Text),
    ("received_at", Kind::Time),
    ("verdict", Kind::Text),
];

const EVENTS: &[(&str, Kind)] = &[
    ("log_index", Kind::Index),
    ("event_id", Kind::Text),
    ("agent_id", Kind::Text),
    ("key_id", Kind::Text),
    ("correlation_id", Kind::Text),
    ("occurred_at", Kind::Time),
    ("received_at", Kind::Time),
    ("verdict", Kind::Text),
    ("action", Kind::Text),
    ("principal", Kind::Text),
    ("resource", Kind::Text),
    ("session_id", Kind::Text),
    ("trace_id", Kind::Text),
    ("sensitivity", Kind::Text),
    ("outcome", Kind::Text),
    ("lease_id", Kind::Text),
    ("source_ip", Kind::Text),
    ("bytes", Kind::Int),
    ("records", Kind::Int),
    ("delegation", Kind::Text),
    ("justification", Kind::Text),
    ("attributes", Kind::Text),
    ("size", Kind::Int),
];

const ANOMALIES: &[(&str, Kind)] = &[
    ("log_index", Kind::Index),
    ("anomaly_id", Kind::Text),
    ("agent_id", Kind::Text),
    ("principal", Kind::Text),
    ("correlation_id", Kind::Text),
    ("detected_at", Kind::Time),
    ("event_time", Kind::Time),
    ("received_at", Kind::Time),
    ("score", Kind::Float),
    ("severity", Kind::Text),
    ("kinds", Kind::Text),
    ("event_ids", Kind::Text),
    ("summary", Kind::Text),
    ("response_action", Kind::Text),
    ("response_status", Kind::Text),
];

const RESPONSES: &[(&str, Kind)] = &[
    ("log_index", Kind::Index),
    ("event_id", Kind::Text),
    ("action", Kind::Text),
    ("agent_id", Kind::Text),
    ("anomaly_id", Kind::Text),
    ("correlation_id", Kind::Text),
    ("received_at", Kind::Time),
    ("outcome", Kind::Text),
    ("attributes", Kind::Text),
];

impl Table {
    /// Its SQL name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Receipts => "receipts",
            Table::Events => "events",
            Table::Anomalies => "anomalies",
            Table::Responses => "responses",
        }
    }

    fn columns(self) -> &'static [(&'static str, Kind)] {
        match self {
            Table::Receipts => RECEIPTS,
            Table::Events => EVENTS,
            Table::Anomalies => ANOMALIES,
            Table::Responses => RESPONSES,
        }
    }

    /// Its Arrow schema.
    pub fn schema(self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns()
            .iter()
            .map(|(name, kind)| {
                let (ty, nullable) = match kind {
                    Kind::Text => (DataType::Utf8, true),
                    Kind::Index => (DataType::UInt64, false),
                    Kind::Int => (DataType::Int64, true),
                    Kind::Float => (DataType::Float64, true),
                    Kind::Time => (DataType::Timestamp(TimeUnit::Millisecond, None), true),
                };
                Field::new(*name, ty, nullable)
            })
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// The columns a sealed file is sorted by, so that row groups prune on
    /// agent and time.
    pub fn sort_columns(self) -> [&'static str; 2] {
        match self {
            Table::Receipts => ["agent_id", "received_at"],
            Table::Events => ["agent_id", "occurred_at"],
            Table::Anomalies => ["agent_id", "detected_at"],
            Table::Responses => ["agent_id", "received_at"],
        }
    }

    /// Columns with a Bloom filter in sealed files (equality lookups).
    pub fn bloom_columns(self) -> &'static [&'static str] {
        match self {
            Table::Receipts | Table::Events => &["event_id", "correlation_id"],
            Table::Anomalies => &["anomaly_id", "correlation_id"],
            Table::Responses => &["anomaly_id", "correlation_id"],
        }
    }
}

/// One value of a row, in schema order.
enum Cell<'a> {
    Text(Option<&'a str>),
    Index(u64),
    Int(Option<i64>),
    Float(Option<f64>),
    Time(Option<i64>),
}

enum Builder {
    Text(StringBuilder),
    Index(UInt64Builder),
    Int(Int64Builder),
    Float(Float64Builder),
    Time(TimestampMillisecondBuilder),
}

/// Rows of one table being built.
struct Sheet {
    table: Table,
    builders: Vec<Builder>,
    rows: usize,
}

impl Sheet {
    fn new(table: Table) -> Sheet {
        let builders = table
            .columns()
            .iter()
            .map(|(_, kind)| match kind {
                Kind::Text => Builder::Text(StringBuilder::new()),
                Kind::Index => Builder::Index(UInt64Builder::new()),
                Kind::Int => Builder::Int(Int64Builder::new()),
                Kind::Float => Builder::Float(Float64Builder::new()),
                Kind::Time => Builder::Time(TimestampMillisecondBuilder::new()),
            })
            .collect();
        Sheet {
            table,
            builders,
            rows: 0,
        }
    }

    fn push(&mut self, cells: &[Cell<'_>]) {
        debug_assert_eq!(cells.len(), self.builders.len());
        for (b, c) in self.builders.iter_mut().zip(cells) {
            match (b, c) {
                (Builder::Text(b), Cell::Text(v)) => b.append_option(*v),
                (Builder::Index(b), Cell::Index(v)) => b.append_value(*v),
                (Builder::Int(b), Cell::Int(v)) => b.append_option(*v),
                (Builder::Float(b), Cell::Float(v)) => b.append_option(*v),
                (Builder::Time(b), Cell::Time(v)) => b.append_option(*v),
                _ => unreachable!("cells follow the table's columns"),
            }
        }
        self.rows += 1;
    }

    fn finish(&mut self) -> RecordBatch {
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| -> ArrayRef {
                match b {
                    Builder::Text(b) => Arc::new(b.finish()),
                    Builder::Index(b) => Arc::new(b.finish()),
                    Builder::Int(b) => Arc::new(b.finish()),
                    Builder::Float(b) => Arc::new(b.finish()),
                    Builder::Time(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        self.rows = 0;
        RecordBatch::try_new(self.table.schema(), arrays)
            .expect("builders follow the table's schema")
    }
}

/// Rows of every log table, filled record by record.
pub struct Rows {
    sheets: Vec<Sheet>,
}

impl Default for Rows {
    fn default() -> Rows {
        Rows {
            sheets: LOG_TABLES.iter().map(|t| Sheet::new(*t)).collect(),
        }
    }
}

/// Milliseconds since the epoch of a contract timestamp.
fn millis(text: Option<&str>) -> Option<i64> {
    let t = Timestamp::parse_event_time(text?)?;
    i64::try_from(t.0.div_euclid(1_000_000)).ok()
}

fn text<'a>(v: &'a J, name: &str) -> Option<&'a str> {
    v.get(name).and_then(J::as_str)
}

/// A member as JSON text (absent: null).
fn json_text(v: &J, name: &str) -> Option<String> {
    v.get(name).map(|m| m.to_string())
}

impl Rows {
    /// Rows so far in `receipts` (one per record).
    pub fn len(&self) -> usize {
        self.sheet(Table::Receipts).rows
    }

    /// Whether no record was added since the last [`Rows::finish`].
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn sheet(&self, t: Table) -> &Sheet {
        self.sheets
            .iter()
            .find(|s| s.table == t)
            .expect("every log table has a sheet")
    }

    fn sheet_mut(&mut self, t: Table) -> &mut Sheet {
        self.sheets
            .iter_mut()
            .find(|s| s.table == t)
            .expect("every log table has a sheet")
    }

    /// Adds the rows of one record: its receipt body and event bytes.
    pub fn push(&mut self, body: &ReceiptBody, event: &[u8]) {
        let received = millis(Some(&body.received_at));
        self.sheet_mut(Table::Receipts).push(&[
            Cell::Index(body.index),
            Cell::Text(Some(&body.event_id)),
            Cell::Text(Some(&body.agent_id)),
            Cell::Text(Some(&body.key_id)),
            Cell::Text(Some(&body.correlation_id)),
            Cell::Text(Some(&body.event_hash)),
            Cell::Time(received),
            Cell::Text(Some(&body.verdict)),
        ]);
        let Ok(v) = serde_json::from_slice::<J>(event) else {
            return;
        };
        if !v.is_object() {
            return;
        }
        self.push_event(body, &v, event.len(), received);
        if body.agent_id != crate::event::PIPELINE_AGENT {
            return;
        }
        match text(&v, "action") {
            Some(crate::detect::stage::ANOMALY_ACTION) => self.push_anomaly(body, &v, received),
            Some(a) if a.starts_with("vigil.response.") || a.starts_with("vigil.admin.") => {
                self.push_response(body, &v, a, received)
            }
            _ => {}
        }
    }

    fn push_event(&mut self, body: &ReceiptBody, v: &J, size: usize, received: Option<i64>) {
        let int = |name: &str| v.get(name).and_then(J::as_i64);
        let attributes = json_text(v, "attributes");
        let delegation = json_text(v, "delegation");
        self.sheet_mut(Table::Events).push(&[
            Cell::Index(body.index),
            Cell::Text(Some(&body.event_id)),
            Cell::Text(Some(&body.agent_id)),
            Cell::Text(Some(&body.key_id)),
            Cell::Text(Some(&body.correlation_id)),
            Cell::Time(millis(text(v, "occurred_at"))),
            Cell::Time(received),
            Cell::Text(Some(&body.verdict)),
            Cell::Text(text(v, "action")),
            Cell::Text(text(v, "principal")),
            Cell::Text(text(v, "resource")),
            Cell::Text(text(v, "session_id")),
            Cell::Text(text(v, "trace_id")),
            Cell::Text(text(v, "sensitivity")),
            Cell::Text(text(v, "outcome")),
            Cell::Text(text(v, "lease_id")),
            Cell::Text(text(v, "source_ip")),
            Cell::Int(int("bytes")),
            Cell::Int(int("records")),
            Cell::Text(delegation.as_deref()),
            Cell::Text(text(v, "justification")),
            Cell::Text(attributes.as_deref()),
            Cell::Int(Some(size as i64)),
        ]);
    }

    fn push_anomaly(&mut self, body: &ReceiptBody, v: &J, received: Option<i64>) {
        let a = &v["attributes"]["anomaly"];
        let list = |name: &str| {
            a.get(name).and_then(J::as_array).map(|items| {
                items
                    .iter()
                    .filter_map(J::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
        };
        let (kinds, event_ids) = (list("kinds"), list("event_ids"));
        self.sheet_mut(Table::Anomalies).push(&[
            Cell::Index(body.index),
            Cell::Text(text(a, "anomaly_id")),
            Cell::Text(text(a, "agent_id")),
            Cell::Text(text(a, "principal")),
            Cell::Text(Some(&body.correlation_id)),
            Cell::Time(millis(text(a, "detected_at"))),
            Cell::Time(millis(text(a, "event_time"))),
            Cell::Time(received),
            Cell::Float(a.get("score").and_then(J::as_f64)),
            Cell::Text(text(a, "severity")),
            Cell::Text(kinds.as_deref()),
            Cell::Text(event_ids.as_deref()),
            Cell::Text(text(a, "summary")),
            Cell::Text(text(&a["response"], "action")),
            Cell::Text(text(&a["response"], "status")),
        ]);
    }

    fn push_response(&mut self, body: &ReceiptBody, v: &J, action: &str, received: Option<i64>) {
        let attrs = v.get("attributes").unwrap_or(&J::Null);
        let subject = text(v, "resource").map(|r| r.strip_prefix("agent:").unwrap_or(r));
        let outcome = ["outcome", "status", "result", "action"]
            .iter()
            .find_map(|k| text(attrs, k));
        let attributes = attrs.to_string();
        self.sheet_mut(Table::Responses).push(&[
            Cell::Index(body.index),
            Cell::Text(Some(&body.event_id)),
            Cell::Text(Some(action)),
            Cell::Text(subject),
            Cell::Text(text(attrs, "anomaly_id")),
            Cell::Text(Some(&body.correlation_id)),
            Cell::Time(received),
            Cell::Text(outcome),
            Cell::Text(Some(&attributes)),
        ]);
    }

    /// The rows so far as one batch per table (in [`LOG_TABLES`] order),
    /// leaving the builders empty.
    pub fn finish(&mut self) -> Vec<(Table, RecordBatch)> {
        self.sheets
            .iter_mut()
            .map(|s| (s.table, s.finish()))
            .collect()
    }
}
