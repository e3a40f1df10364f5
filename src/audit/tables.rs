//! The audit store's tables as Arrow schemas, and the rows each log record
//! adds to them.
//!
//! Every record is a row of `receipts`; a record whose event is a JSON
//! object is also a row of `events` (rejected ones too: `verdict` says
//! which); `vigil.anomaly` events of agent `vigil` are rows of `anomalies`
//! (one per published version) and `vigil.response.*` / `vigil.admin.*`
//! events rows of `responses`. Times are UTC milliseconds.

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;
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

/// Bytes a text cell usually takes, to size the builders once.
const TEXT_BYTES_PER_CELL: usize = 16;

/// Most rows a sheet makes room for up front.
const MAX_ROOM: usize = 1 << 18;

impl Sheet {
    /// An empty sheet with room for `rows` rows.
    fn new(table: Table, rows: usize) -> Sheet {
        let builders = table
            .columns()
            .iter()
            .map(|(_, kind)| match kind {
                Kind::Text => Builder::Text(StringBuilder::with_capacity(
                    rows,
                    rows * TEXT_BYTES_PER_CELL,
                )),
                Kind::Index => Builder::Index(UInt64Builder::with_capacity(rows)),
                Kind::Int => Builder::Int(Int64Builder::with_capacity(rows)),
                Kind::Float => Builder::Float(Float64Builder::with_capacity(rows)),
                Kind::Time => Builder::Time(TimestampMillisecondBuilder::with_capacity(rows)),
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
        Rows::with_capacity(0)
    }
}

impl Rows {
    /// Empty rows with room for about `records` records (every record
    /// is a receipt and most are events; the other tables start empty).
    pub fn with_capacity(records: usize) -> Rows {
        let room = |t: Table| match t {
            Table::Receipts | Table::Events => records.min(MAX_ROOM),
            Table::Anomalies | Table::Responses => 0,
        };
        Rows {
            sheets: LOG_TABLES
                .iter()
                .map(|t| Sheet::new(*t, room(*t)))
                .collect(),
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

/// The members of a receipt body that its rows hold, borrowed from a
/// parsed body or straight from its JCS bytes.
#[derive(Debug, Deserialize)]
pub struct ReceiptRow<'a> {
    /// Zero-based position in the log.
    pub index: u64,
    /// Copied from the event.
    #[serde(borrow)]
    pub event_id: Cow<'a, str>,
    /// Copied from the event.
    #[serde(borrow)]
    pub agent_id: Cow<'a, str>,
    /// Copied from the event.
    #[serde(borrow)]
    pub key_id: Cow<'a, str>,
    /// Copied from the event.
    #[serde(borrow)]
    pub correlation_id: Cow<'a, str>,
    /// Hex SHA-256 of JCS(whole event).
    #[serde(borrow)]
    pub event_hash: Cow<'a, str>,
    /// When the pipeline received the event.
    #[serde(borrow)]
    pub received_at: Cow<'a, str>,
    /// `accepted` or `rejected:<reason>`.
    #[serde(borrow)]
    pub verdict: Cow<'a, str>,
}

impl<'a> ReceiptRow<'a> {
    /// The row of a parsed body.
    pub fn of(body: &'a ReceiptBody) -> ReceiptRow<'a> {
        ReceiptRow {
            index: body.index,
            event_id: Cow::Borrowed(&body.event_id),
            agent_id: Cow::Borrowed(&body.agent_id),
            key_id: Cow::Borrowed(&body.key_id),
            correlation_id: Cow::Borrowed(&body.correlation_id),
            event_hash: Cow::Borrowed(&body.event_hash),
            received_at: Cow::Borrowed(&body.received_at),
            verdict: Cow::Borrowed(&body.verdict),
        }
    }

    /// The row of a stored body's bytes, without copying its strings
    /// (members a row does not hold are skipped, not checked).
    pub fn parse(jcs: &'a [u8]) -> serde_json::Result<ReceiptRow<'a>> {
        serde_json::from_slice(jcs)
    }
}

/// How many of [`EVENT_MEMBERS`], first, are strings.
const TEXT_MEMBERS: usize = 11;

/// The members of an event the `events` table reads, in this order.
const EVENT_MEMBERS: [&str; 15] = [
    "occurred_at",
    "action",
    "principal",
    "resource",
    "session_id",
    "trace_id",
    "sensitivity",
    "outcome",
    "lease_id",
    "source_ip",
    "justification",
    "bytes",
    "records",
    "delegation",
    "attributes",
];

/// An event object's [`EVENT_MEMBERS`] as raw JSON slices of its bytes:
/// only the members a row holds are decoded, the rest of the event
/// (`attributes` aside) is only scanned.
struct EventMembers<'a> {
    values: [Option<&'a [u8]>; EVENT_MEMBERS.len()],
}

impl<'a> EventMembers<'a> {
    /// The members of `event`, when it is a JSON object.
    fn of(event: &'a [u8]) -> Option<EventMembers<'a>> {
        let mut values = [None; EVENT_MEMBERS.len()];
        for m in crate::json::object_members(event).ok()? {
            let quoted = &event[m.name];
            let name: Cow<'_, str> = match quoted.contains(&b'\\') {
                true => Cow::Owned(serde_json::from_slice::<String>(quoted).ok()?),
                false => Cow::Borrowed(std::str::from_utf8(&quoted[1..quoted.len() - 1]).ok()?),
            };
            if let Some(i) = EVENT_MEMBERS.iter().position(|n| *n == name) {
                values[i] = Some(&event[m.value]);
            }
        }
        Some(EventMembers { values })
    }

    fn raw(&self, name: &str) -> Option<&'a [u8]> {
        let i = EVENT_MEMBERS.iter().position(|n| *n == name)?;
        self.values[i]
    }

    /// A string member (`None` when absent or not a string).
    fn text(&self, name: &str) -> Option<Cow<'a, str>> {
        let raw = self.raw(name)?;
        if raw.first() != Some(&b'"') {
            return None;
        }
        match raw.contains(&b'\\') {
            true => serde_json::from_slice::<String>(raw).ok().map(Cow::Owned),
            false => std::str::from_utf8(&raw[1..raw.len() - 1])
                .ok()
                .map(Cow::Borrowed),
        }
    }

    /// An integer member (`None` when absent, fractional or out of range).
    fn int(&self, name: &str) -> Option<i64> {
        serde_json::from_slice::<i64>(self.raw(name)?).ok()
    }

    /// A member as compact JSON text, as `serde_json` writes it.
    fn json(&self, name: &str) -> Option<String> {
        serde_json::from_slice::<J>(self.raw(name)?)
            .ok()
            .map(|v| v.to_string())
    }
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
        self.push_row(&ReceiptRow::of(body), event)
    }

    /// Adds the rows of one record: its receipt's row and event bytes.
    pub fn push_row(&mut self, body: &ReceiptRow<'_>, event: &[u8]) {
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
        let Some(members) = EventMembers::of(event) else {
            return;
        };
        self.push_event(body, &members, event.len(), received);
        if body.agent_id != crate::event::PIPELINE_AGENT {
            return;
        }
        let Ok(v) = serde_json::from_slice::<J>(event) else {
            return;
        };
        match text(&v, "action") {
            Some(crate::detect::stage::ANOMALY_ACTION) => self.push_anomaly(body, &v, received),
            Some(a) if a.starts_with("vigil.response.") || a.starts_with("vigil.admin.") => {
                self.push_response(body, &v, a, received)
            }
            _ => {}
        }
    }

    fn push_event(
        &mut self,
        body: &ReceiptRow<'_>,
        m: &EventMembers<'_>,
        size: usize,
        received: Option<i64>,
    ) {
        let texts: [Option<Cow<'_, str>>; TEXT_MEMBERS] =
            std::array::from_fn(|i| m.text(EVENT_MEMBERS[i]));
        let t = |i: usize| texts[i].as_deref();
        let (delegation, attributes) = (m.json("delegation"), m.json("attributes"));
        self.sheet_mut(Table::Events).push(&[
            Cell::Index(body.index),
            Cell::Text(Some(&body.event_id)),
            Cell::Text(Some(&body.agent_id)),
            Cell::Text(Some(&body.key_id)),
            Cell::Text(Some(&body.correlation_id)),
            Cell::Time(millis(t(0))),
            Cell::Time(received),
            Cell::Text(Some(&body.verdict)),
            Cell::Text(t(1)),
            Cell::Text(t(2)),
            Cell::Text(t(3)),
            Cell::Text(t(4)),
            Cell::Text(t(5)),
            Cell::Text(t(6)),
            Cell::Text(t(7)),
            Cell::Text(t(8)),
            Cell::Text(t(9)),
            Cell::Int(m.int("bytes")),
            Cell::Int(m.int("records")),
            Cell::Text(delegation.as_deref()),
            Cell::Text(t(10)),
            Cell::Text(attributes.as_deref()),
            Cell::Int(Some(size as i64)),
        ]);
    }

    fn push_anomaly(&mut self, body: &ReceiptRow<'_>, v: &J, received: Option<i64>) {
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

    fn push_response(&mut self, body: &ReceiptRow<'_>, v: &J, action: &str, received: Option<i64>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Int64Type, TimestampMillisecondType, UInt64Type};
    use proptest::prelude::*;

    /// A cell of row 0 as text (`None` when null).
    fn cell(batch: &RecordBatch, name: &str) -> Option<String> {
        let col = batch.column_by_name(name).expect("a column of the table");
        if col.is_null(0) {
            return None;
        }
        Some(match col.data_type() {
            DataType::Utf8 => col.as_string::<i32>().value(0).to_string(),
            DataType::Int64 => col.as_primitive::<Int64Type>().value(0).to_string(),
            DataType::UInt64 => col.as_primitive::<UInt64Type>().value(0).to_string(),
            DataType::Timestamp(..) => col
                .as_primitive::<TimestampMillisecondType>()
                .value(0)
                .to_string(),
            other => panic!("no column of type {other}"),
        })
    }

    /// The `events` row of an event as a whole-tree `serde_json` parse
    /// reads it: what the borrowed member scan must reproduce.
    fn expected(event: &[u8]) -> Vec<(&'static str, Option<String>)> {
        let v: J = serde_json::from_slice(event).unwrap();
        let text = |n: &str| v.get(n).and_then(J::as_str).map(str::to_string);
        let json = |n: &str| v.get(n).map(|m| m.to_string());
        let int = |n: &str| v.get(n).and_then(J::as_i64).map(|i| i.to_string());
        let mut row = vec![(
            "occurred_at",
            millis(v.get("occurred_at").and_then(J::as_str)).map(|m| m.to_string()),
        )];
        for name in &EVENT_MEMBERS[1..TEXT_MEMBERS] {
            row.push((*name, text(name)));
        }
        row.extend([
            ("bytes", int("bytes")),
            ("records", int("records")),
            ("delegation", json("delegation")),
            ("attributes", json("attributes")),
            ("size", Some(event.len().to_string())),
        ]);
        row
    }

    fn body() -> ReceiptBody {
        ReceiptBody {
            index: 7,
            event_id: "e-\"1\"".into(),
            agent_id: "agent-a".into(),
            received_at: "2026-11-30T10:00:00.123Z".into(),
            verdict: "accepted".into(),
            ..ReceiptBody::default()
        }
    }

    fn events_row(event: &[u8]) -> RecordBatch {
        let jcs = body().to_jcs();
        let mut rows = Rows::default();
        rows.push_row(&ReceiptRow::parse(&jcs).unwrap(), event);
        let batches = rows.finish();
        batches
            .into_iter()
            .find(|(t, _)| *t == Table::Events)
            .unwrap()
            .1
    }

    const VALUES: [&str; 14] = [
        r#""plain""#,
        r#""esc\"aped \u00e9\n""#,
        r#""2026-01-02T03:04:05.678Z""#,
        r#""""#,
        "12",
        "-3",
        "1.5",
        "1e3",
        "18446744073709551615",
        "null",
        "true",
        r#"[1, "a", {"z": null}]"#,
        r#"{"b": 1, "a": [2, "x\ty"], "\u00e9": {}}"#,
        "{}",
    ];

    proptest! {
        /// Rows built from a scan of the event's members equal those of a
        /// whole-tree parse, whatever the members' types and escapes.
        #[test]
        fn member_scan_reads_what_a_tree_parse_reads(
            picks in proptest::collection::vec(proptest::option::of(0..VALUES.len()), EVENT_MEMBERS.len()),
            escaped_names in any::<bool>(),
            spaced in any::<bool>(),
        ) {
            let sep = if spaced { " , " } else { "," };
            let mut members = vec![r#""event_id":"e""#.to_string(), r#""extra":{"action":"no"}"#.into()];
            for (name, pick) in EVENT_MEMBERS.iter().zip(&picks) {
                let Some(p) = pick else { continue };
                let name = match escaped_names {
                    true => format!("\\u{:04x}{}", name.as_bytes()[0], &name[1..]),
                    false => name.to_string(),
                };
                members.push(format!("\"{name}\" : {}", VALUES[*p]));
            }
            let event = format!("{{{}}}", members.join(sep));
            let batch = events_row(event.as_bytes());
            prop_assert_eq!(cell(&batch, "log_index"), Some("7".to_string()));
            prop_assert_eq!(cell(&batch, "event_id"), Some("e-\"1\"".to_string()));
            for (name, want) in expected(event.as_bytes()) {
                prop_assert_eq!(cell(&batch, name), want, "{} of {}", name, event);
            }
        }
    }

    #[test]
    fn events_that_are_not_objects_have_receipt_rows_only() {
        for event in [&b"[1,2]"[..], b"\"text\"", b"{\"a\":", b""] {
            let jcs = body().to_jcs();
            let mut rows = Rows::default();
            rows.push_row(&ReceiptRow::parse(&jcs).unwrap(), event);
            let counts: Vec<(Table, usize)> = rows
                .finish()
                .iter()
                .map(|(t, b)| (*t, b.num_rows()))
                .collect();
            assert!(counts.contains(&(Table::Receipts, 1)), "{counts:?}");
            assert!(counts.contains(&(Table::Events, 0)), "{counts:?}");
        }
    }
}
