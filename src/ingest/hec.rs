//! Splunk HTTP Event Collector framing: concatenated `{"event": ...}`
//! envelopes. Envelope members other than `event` are not signed and are
//! ignored. An event given as an object is taken in its canonical (JCS)
//! form, which is what its signature covers; one given as a string is
//! taken byte for byte.

use bytes::Bytes;

use crate::event::Unidentifiable;
use crate::json::{parse, split_concatenated, write_jcs, Value};
use crate::pipeline::Item;

/// The items of a HEC body and, after a framing error, the 0-based number
/// of the envelope where framing failed.
pub struct HecBatch {
    /// One item per envelope, plus one for the unframed rest.
    pub items: Vec<Item>,
    /// Where framing failed (envelope number), when it did.
    pub framing_error: Option<(usize, String)>,
}

/// Splits a HEC body into items.
pub fn split_hec(body: &Bytes) -> HecBatch {
    let (ranges, err) = split_concatenated(body);
    let mut items = Vec::with_capacity(ranges.len() + 1);
    for (n, r) in ranges.into_iter().enumerate() {
        let source = format!("hec envelope {}", n + 1);
        let raw = body.slice(r);
        let bad = |raw: Bytes, why: String| Item {
            raw,
            source: source.clone(),
            preset: Some(Unidentifiable::Unparseable(why)),
        };
        let envelope = match parse(&raw) {
            Ok(v) => v,
            Err(e) => {
                items.push(bad(
                    raw,
                    format!("HEC envelope {} is not I-JSON: {e}", n + 1),
                ));
                continue;
            }
        };
        match envelope.get("event") {
            Some(Value::String(s)) => items.push(Item::new(Bytes::from(s.clone().into_bytes()), source)),
            Some(ev @ Value::Object(_)) => {
                let mut out = Vec::new();
                write_jcs(ev, &mut out);
                items.push(Item::new(Bytes::from(out), source));
            }
            Some(other) => items.push(bad(
                raw,
                format!("HEC envelope {}: event is {}; it must be an event object or a string holding one", n + 1, other.type_name()),
            )),
            None => items.push(bad(raw, format!("HEC envelope {} has no event member", n + 1))),
        }
    }
    let framing_error = err.map(|e| {
        let n = items.len();
        let why = format!(
            "HEC framing error after envelope {n} ({e}); envelopes are JSON objects like {{\"event\": {{...}}}} one after another"
        );
        items.push(Item {
            raw: body.slice(e.offset..),
            source: format!("hec envelope {} and the rest", n + 1),
            preset: Some(Unidentifiable::Unparseable(why.clone())),
        });
        (n, why)
    });
    HecBatch {
        items,
        framing_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_envelopes_and_quarantines_the_rest() {
        let body = Bytes::from_static(br#"{"event":{"b":1,"a":2},"time":1}{"event":"{\"x\":1}"} {"event":5} oops {"event":{}}"#);
        let b = split_hec(&body);
        assert_eq!(b.items.len(), 4);
        assert_eq!(b.items[0].raw.as_ref(), br#"{"a":2,"b":1}"#);
        assert_eq!(b.items[1].raw.as_ref(), br#"{"x":1}"#);
        assert!(b.items[2].preset.is_some());
        assert_eq!(b.items[3].raw.as_ref(), br#"oops {"event":{}}"#);
        assert_eq!(b.framing_error.unwrap().0, 3);
    }
}
