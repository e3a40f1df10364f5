//! Splunk HTTP Event Collector framing: concatenated `{"event": ...}`
//! envelopes. Envelope members other than `event` are not signed and are
//! ignored without being judged (an envelope need only be JSON: a `time`
//! of `1e999` or a duplicated `host` does not quarantine a validly signed
//! event). An event given as an object is taken byte for byte as it stands
//! in the envelope; one given as a string is taken as the string's text.

use bytes::Bytes;

use crate::json::{object_members, parse, split_concatenated, SplitError, Value};
use crate::pipeline::Item;

use super::body::TooManyItems;

/// The items of a HEC body and, after a framing error, the 0-based number
/// of the envelope where framing failed.
pub struct HecBatch {
    /// One item per envelope, plus one for the unframed rest.
    pub items: Vec<Item>,
    /// Where framing failed (envelope number), when it did.
    pub framing_error: Option<(usize, String)>,
}

/// Splits a HEC body into items; more than `max_items` envelopes stop the
/// split before they are all held.
pub fn split_hec(body: &Bytes, max_items: usize) -> Result<HecBatch, TooManyItems> {
    let (ranges, err) = split_concatenated(body, max_items);
    if let Some(SplitError::TooMany { max }) = err {
        return Err(TooManyItems { max });
    }
    let mut items = Vec::with_capacity(ranges.len() + 1);
    for (n, r) in ranges.into_iter().enumerate() {
        let source = format!("hec envelope {}", n + 1);
        let raw = body.slice(r);
        items.push(match envelope_event(&raw, n + 1) {
            Ok(event) => Item::new(event, source),
            Err(why) => Item::unparseable(raw, source, why.to_string()),
        });
    }
    let framing_error = err.map(|e| {
        let n = items.len();
        let why = format!(
            "HEC framing error after envelope {n} ({e}); envelopes are JSON objects like {{\"event\": {{...}}}} one after another"
        );
        let offset = match e {
            SplitError::Invalid { offset, .. } => offset,
            SplitError::TooMany { .. } => body.len(),
        };
        items.push(Item::unparseable(
            body.slice(offset..),
            format!("hec envelope {} and the rest", n + 1),
            why.clone(),
        ));
        (n, why)
    });
    Ok(HecBatch {
        items,
        framing_error,
    })
}

/// Why an envelope (its number, from 1) yields no event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Not a JSON object (the parser's reason).
    #[error("HEC envelope {n} is not a JSON object: {why}")]
    NotAnObject {
        /// The envelope's number.
        n: usize,
        /// Why not.
        why: String,
    },
    /// No `event` member.
    #[error("HEC envelope {0} has no event member")]
    NoEvent(usize),
    /// More than one `event` member.
    #[error("HEC envelope {0} has more than one event member; send one event per envelope")]
    TwoEvents(usize),
    /// A string `event` that is not valid I-JSON text.
    #[error("HEC envelope {0}: event is a string that is not valid I-JSON text")]
    BadString(usize),
    /// An `event` that is neither an object nor a string (what it is).
    #[error(
        "HEC envelope {n}: event is {found}; it must be an event object or a string holding one"
    )]
    NotAnEvent {
        /// The envelope's number.
        n: usize,
        /// Its JSON type, or "not JSON".
        found: &'static str,
    },
}

/// The bytes of envelope number `n`'s `event`: the object as it stands, or
/// the text of a string.
fn envelope_event(envelope: &Bytes, n: usize) -> Result<Bytes, EnvelopeError> {
    let members = object_members(envelope).map_err(|e| EnvelopeError::NotAnObject {
        n,
        why: e.to_string(),
    })?;
    let mut events = members
        .into_iter()
        .filter(|m| parse(&envelope[m.name.clone()]).is_ok_and(|v| v.as_str() == Some("event")));
    let value = events.next().ok_or(EnvelopeError::NoEvent(n))?;
    if events.next().is_some() {
        return Err(EnvelopeError::TwoEvents(n));
    }
    let raw = envelope.slice(value.value);
    match raw.first() {
        Some(b'{') => Ok(raw),
        Some(b'"') => match parse(&raw).ok().as_ref().and_then(Value::as_str) {
            Some(s) => Ok(Bytes::copy_from_slice(s.as_bytes())),
            None => Err(EnvelopeError::BadString(n)),
        },
        _ => Err(EnvelopeError::NotAnEvent {
            n,
            found: parse(&raw).map_or("not JSON", |v| v.type_name()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_envelopes_and_quarantines_the_rest() {
        let body = Bytes::from_static(br#"{"event":{"b":1,"a":2},"time":1e999,"host":"a","host":"b"}{"event":"{\"x\":1}"} {"event":5} oops {"event":{}}"#);
        let b = split_hec(&body, 10).unwrap();
        assert_eq!(b.items.len(), 4);
        assert_eq!(b.items[0].raw.as_ref(), br#"{"b":1,"a":2}"#);
        assert!(
            b.items[0].preset.is_none(),
            "unsigned members are not judged"
        );
        assert_eq!(b.items[1].raw.as_ref(), br#"{"x":1}"#);
        assert!(b.items[2].preset.is_some());
        assert_eq!(b.items[3].raw.as_ref(), br#"oops {"event":{}}"#);
        assert_eq!(b.framing_error.unwrap().0, 3);
    }
}
