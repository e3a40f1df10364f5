//! Traces of events through the stages (receive, judge, append, fsync,
//! detect, respond), exported over OTLP when `[telemetry] otlp_endpoint`
//! is set, and free when it is not: every hook starts with one load of a
//! `OnceLock` and returns.
//!
//! Each event's spans belong to one trace, whichever stage records them
//! and whenever: the event's own W3C `trace_id`/`span_id` when it carries
//! them (so they appear in the agent's trace), else a trace id derived
//! from SHA-256 of its `agent_id` and `event_id`. A request's incoming
//! `traceparent` is a link of each of its events' `receive` spans (one
//! request carries events of many traces).

use std::sync::OnceLock;
use std::time::SystemTime;

/// A W3C trace context: trace id and the parent span id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The span the recorded spans hang under.
    pub span_id: [u8; 8],
}

impl TraceContext {
    /// Parses a `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`).
    pub fn from_traceparent(header: &str) -> Option<TraceContext> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, _flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" {
            return None;
        }
        TraceContext::from_hex(trace, span)
    }

    /// The context of hex ids (an event's `trace_id` and `span_id`); none
    /// for malformed or all-zero ids.
    pub fn from_hex(trace: &str, span: &str) -> Option<TraceContext> {
        let trace_id: [u8; 16] = hex::decode(trace).ok()?.try_into().ok()?;
        let span_id: [u8; 8] = hex::decode(span).ok()?.try_into().ok()?;
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(TraceContext { trace_id, span_id })
    }

    /// Where an event's spans go: its own context, else one derived from
    /// (`agent_id`, `event_id`), the same in every stage and process.
    pub fn of_event(agent_id: &str, event_id: &str, own: Option<(&str, &str)>) -> TraceContext {
        if let Some(c) = own.and_then(|(t, s)| TraceContext::from_hex(t, s)) {
            return c;
        }
        let h = crate::event::sha256(format!("vigil-trace\0{agent_id}\0{event_id}").as_bytes());
        TraceContext {
            trace_id: h[..16].try_into().expect("16 bytes"),
            span_id: h[16..24].try_into().expect("8 bytes"),
        }
    }
}

/// One stage of one event, as recorded.
#[derive(Debug, Clone)]
pub struct StageSpan {
    /// `receive`, `judge`, `append`, `fsync`, `detect`, `respond`.
    pub name: &'static str,
    /// When it began.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
}

/// One event's spans: a root span over `stages`, each stage a child (a
/// single stage is the root span itself).
#[derive(Debug, Clone)]
pub struct EventSpans {
    /// The trace and parent span.
    pub parent: TraceContext,
    /// The root span's name.
    pub name: &'static str,
    /// Attributes of every span (`vigil.correlation_id`, ...).
    pub attributes: Vec<(&'static str, String)>,
    /// The stages, in order.
    pub stages: Vec<StageSpan>,
    /// A context linked from the root span (a request's `traceparent`).
    pub link: Option<TraceContext>,
}

/// Where spans go once tracing is on.
pub trait Sink: Send + Sync {
    /// Records one event's spans (never blocks: a full queue drops them).
    fn record(&self, spans: EventSpans);
    /// Sends what is queued and stops.
    fn shutdown(&self);
}

static SINK: OnceLock<Box<dyn Sink>> = OnceLock::new();

/// Turns tracing on (once per process).
pub fn install(sink: Box<dyn Sink>) {
    let _ = SINK.set(sink);
}

/// Whether spans are being recorded.
pub fn enabled() -> bool {
    SINK.get().is_some()
}

/// Records one stage of an event as a single span, when tracing is on.
pub fn record_stage(
    name: &'static str,
    parent: TraceContext,
    start: SystemTime,
    attributes: Vec<(&'static str, String)>,
) {
    record(|| EventSpans {
        parent,
        name,
        attributes,
        stages: vec![StageSpan {
            name,
            start,
            end: SystemTime::now(),
        }],
        link: None,
    });
}

/// Records an event's spans, when tracing is on.
pub fn record(spans: impl FnOnce() -> EventSpans) {
    if let Some(sink) = SINK.get() {
        sink.record(spans());
    }
}

/// Flushes and stops the exporter, when tracing is on.
pub fn shutdown() {
    if let Some(sink) = SINK.get() {
        sink.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::TraceContext;

    #[test]
    fn traceparent_and_event_contexts() {
        let c = TraceContext::from_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .unwrap();
        assert_eq!(
            crate::hexenc::encode(c.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(TraceContext::from_traceparent(
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        )
        .is_none());
        assert!(TraceContext::from_hex(&"0".repeat(32), "00f067aa0ba902b7").is_none());
        let a = TraceContext::of_event("a", "e1", None);
        assert_eq!(a, TraceContext::of_event("a", "e1", Some(("zz", "yy"))));
        assert_ne!(a, TraceContext::of_event("a", "e2", None));
        let own = TraceContext::of_event(
            "a",
            "e1",
            Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")),
        );
        assert_eq!(own, c);
    }
}
