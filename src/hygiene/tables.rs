//! The inventory as SQL tables (README "SQL over the audit store"):
//! `agents` (one row per agent the log logged a key of), `keys` (one row
//! per logged key) and `findings` (as of now). Times are UTC milliseconds
//! without a zone, as in the log's tables.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
    UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::error::ArrowError;

use super::{Finding, Inventory};
use crate::time::Timestamp;

fn time() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn agents(inv: &Inventory) -> Result<RecordBatch, ArrowError> {
    let schema = Schema::new(vec![
        text("agent_id", false),
        text("role", true),
        text("owner", true),
        text("status", false),
        Field::new("keys", DataType::UInt64, false),
        Field::new("first_seen", time(), false),
        Field::new("last_seen", time(), true),
    ]);
    let (mut id, mut role, mut owner, mut status) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut keys = UInt64Builder::new();
    let (mut first, mut last) = (
        TimestampMillisecondBuilder::new(),
        TimestampMillisecondBuilder::new(),
    );
    for (agent, a) in inv.agents.iter().filter(|(_, a)| !a.keys.is_empty()) {
        id.append_value(agent);
        role.append_option(a.role.as_deref());
        owner.append_option(a.owner.as_deref());
        status.append_value(a.status.as_str());
        keys.append_value(a.keys.len() as u64);
        first.append_value(a.first_seen_ms);
        last.append_option(a.last_accepted.map(|(t, _)| t));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(role.finish()),
        Arc::new(owner.finish()),
        Arc::new(status.finish()),
        Arc::new(keys.finish()),
        Arc::new(first.finish()),
        Arc::new(last.finish()),
    ];
    RecordBatch::try_new(Arc::new(schema), columns)
}

fn keys(inv: &Inventory) -> Result<RecordBatch, ArrowError> {
    let schema = Schema::new(vec![
        text("agent_id", false),
        text("kid", false),
        Field::new("nbf", time(), true),
        Field::new("exp", time(), true),
        Field::new("revoked", DataType::Boolean, false),
        Field::new("first_logged_at", time(), false),
        Field::new("log_index", DataType::UInt64, false),
    ]);
    let (mut agent, mut kid) = (StringBuilder::new(), StringBuilder::new());
    let (mut nbf, mut exp, mut logged) = (
        TimestampMillisecondBuilder::new(),
        TimestampMillisecondBuilder::new(),
        TimestampMillisecondBuilder::new(),
    );
    let (mut revoked, mut index) = (BooleanBuilder::new(), UInt64Builder::new());
    for (id, a) in &inv.agents {
        for (k, facts) in &a.keys {
            agent.append_value(id);
            kid.append_value(k);
            nbf.append_option(facts.nbf_ms);
            exp.append_option(facts.exp_ms);
            revoked.append_value(facts.revoked);
            logged.append_value(facts.first_seen_ms);
            index.append_value(facts.index);
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(agent.finish()),
        Arc::new(kid.finish()),
        Arc::new(nbf.finish()),
        Arc::new(exp.finish()),
        Arc::new(revoked.finish()),
        Arc::new(logged.finish()),
        Arc::new(index.finish()),
    ];
    RecordBatch::try_new(Arc::new(schema), columns)
}

fn findings(list: &[Finding]) -> Result<RecordBatch, ArrowError> {
    let names = [
        "finding_id",
        "kind",
        "agent_id",
        "severity",
        "summary",
        "evidence",
        "fix",
    ];
    let mut fields: Vec<Field> = names.iter().map(|n| text(n, false)).collect();
    fields.push(Field::new("since", time(), true));
    let mut cols: Vec<StringBuilder> = names.iter().map(|_| StringBuilder::new()).collect();
    let mut since = TimestampMillisecondBuilder::new();
    for f in list {
        let evidence: Vec<String> = f.evidence.iter().map(u64::to_string).collect();
        let values = [
            f.finding_id.as_str(),
            f.kind,
            &f.agent_id,
            f.severity,
            &f.summary,
            &evidence.join(","),
            &f.fix,
        ];
        for (b, v) in cols.iter_mut().zip(values) {
            b.append_value(v);
        }
        since
            .append_option(Timestamp::parse_event_time(&f.since).map(|t| (t.0 / 1_000_000) as i64));
    }
    let mut columns: Vec<ArrayRef> = cols
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    columns.push(Arc::new(since.finish()));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// The tables `agents`, `keys` and `findings`.
pub fn tables(
    inv: &Inventory,
    list: &[Finding],
) -> Result<Vec<(&'static str, RecordBatch)>, ArrowError> {
    Ok(vec![
        ("agents", agents(inv)?),
        ("keys", keys(inv)?),
        ("findings", findings(list)?),
    ])
}
