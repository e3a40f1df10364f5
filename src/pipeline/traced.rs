//! The ingest stages of each event as spans (see [`crate::telemetry::trace`]):
//! `receive` from arrival to durability, with `judge`, `append` (queue and
//! sequencing) and `fsync` (the group made durable) under it.

use std::time::SystemTime;

use super::judge::Judgement;
use super::writer::Judged;
use super::ItemResult;
use crate::telemetry::trace::{self, EventSpans, StageSpan, TraceContext};

/// What an item's spans need from its event.
pub(super) struct Traced {
    parent: TraceContext,
    attributes: Vec<(&'static str, String)>,
    link: Option<TraceContext>,
}

/// The events' trace contexts and identities (none for quarantined items),
/// with the incoming contexts they came with.
pub(super) fn traced(judged: &[Judged], links: Vec<Option<TraceContext>>) -> Vec<Option<Traced>> {
    judged
        .iter()
        .zip(links)
        .map(|(j, link)| match &j.judgement {
            Judgement::Receipt { event, .. } => {
                let own = (event.trace_id.as_str(), event.span_id.as_str());
                Some(Traced {
                    parent: TraceContext::of_event(&event.agent_id, &event.event_id, Some(own)),
                    attributes: event_attributes(
                        &event.agent_id,
                        &event.event_id,
                        &event.correlation_id,
                    ),
                    link,
                })
            }
            Judgement::Quarantine(_) => None,
        })
        .collect()
}

/// The attributes every span of an event carries.
pub fn event_attributes(
    agent_id: &str,
    event_id: &str,
    correlation_id: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("vigil.agent_id", agent_id.to_string()),
        ("vigil.event_id", event_id.to_string()),
        ("vigil.correlation_id", correlation_id.to_string()),
    ]
}

/// When a batch arrived and was judged.
pub(super) struct Times {
    pub arrived: SystemTime,
    pub judged: SystemTime,
}

/// Records each answered event's ingest spans.
pub(super) fn record(items: Vec<Option<Traced>>, results: &[ItemResult], times: &Times) {
    for (item, result) in items.into_iter().zip(results) {
        let (Some(item), Some(c)) = (item, result.committed) else {
            continue;
        };
        let mut attributes = item.attributes;
        attributes.push((
            "vigil.status",
            format!("{:?}", result.status).to_lowercase(),
        ));
        if let Some(r) = &result.reason {
            attributes.push(("vigil.reason", r.clone()));
        }
        let stage = |name, start, end| StageSpan { name, start, end };
        trace::record(|| EventSpans {
            parent: item.parent,
            name: "receive",
            attributes,
            stages: vec![
                stage("judge", times.arrived, times.judged),
                stage("append", times.judged.max(c.sequenced), c.writing),
                stage("fsync", c.writing, c.durable),
            ],
            link: item.link,
        });
    }
}
