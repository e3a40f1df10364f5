//! Framing of `POST /v1/events` bodies: one event, a JSON array, or NDJSON.

use bytes::Bytes;

use crate::json::{check_syntax, split_array, SplitError};
use crate::pipeline::Item;

/// Whether a `Content-Type` names newline-delimited JSON.
pub fn is_ndjson(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        mime.as_str(),
        "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/json-lines"
    )
}

/// More items in one body than the caller allows: framing stopped there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the body holds more than {max} items; send at most {max} events per request")]
pub struct TooManyItems {
    /// The most allowed.
    pub max: usize,
}

fn lines(body: &Bytes, max_items: usize) -> Result<Vec<Item>, TooManyItems> {
    let mut items = Vec::new();
    let mut start = 0;
    for (n, line) in body.split(|&b| b == b'\n').enumerate() {
        let end = start + line.len();
        let mut trimmed_end = end;
        if line.last() == Some(&b'\r') {
            trimmed_end -= 1;
        }
        let slice = &body[start..trimmed_end];
        if slice.iter().any(|b| !b.is_ascii_whitespace()) {
            if items.len() == max_items {
                return Err(TooManyItems { max: max_items });
            }
            items.push(Item::new(
                body.slice(start..trimmed_end),
                format!("http line {}", n + 1),
            ));
        }
        start = end + 1;
    }
    Ok(items)
}

/// Splits a body into items: NDJSON when the content type says so (or
/// when a non-array body holds several lines that are not one JSON value),
/// a JSON array element by element, else one event. A JSON array that
/// does not frame is one unparseable item. Framing stops as soon as the
/// body holds more than `max_items` items, before they are all held.
pub fn split_body(
    body: Bytes,
    content_type: Option<&str>,
    max_items: usize,
) -> Result<Vec<Item>, TooManyItems> {
    if is_ndjson(content_type) {
        return lines(&body, max_items);
    }
    let first = body.iter().position(|b| !b.is_ascii_whitespace());
    if first.map(|i| body[i]) == Some(b'[') {
        return match split_array(&body, max_items) {
            Ok(ranges) => Ok(ranges
                .into_iter()
                .enumerate()
                .map(|(i, r)| Item::new(body.slice(r), format!("http item {}", i + 1)))
                .collect()),
            Err(SplitError::TooMany { max }) => Err(TooManyItems { max }),
            Err(e) => Ok(vec![Item::unparseable(
                body,
                "http",
                format!(
                    "the JSON array does not parse ({e}); send a JSON array of event objects, or NDJSON with Content-Type: application/x-ndjson"
                ),
            )]),
        };
    }
    let several_lines = body
        .split(|&b| b == b'\n')
        .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
        .nth(1)
        .is_some();
    if several_lines && check_syntax(&body).is_err() {
        return lines(&body, max_items);
    }
    Ok(vec![Item::new(body, "http")])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raws(items: &[Item]) -> Vec<&[u8]> {
        items.iter().map(|i| i.raw.as_ref()).collect()
    }

    #[test]
    fn frames_each_kind() {
        let nd = Bytes::from_static(b"{\"a\":1}\r\n\n  \n{\"b\":2}");
        let split = |b: Bytes, ct| split_body(b, ct, 10).unwrap();
        assert_eq!(
            raws(&split(nd.clone(), Some("application/x-ndjson"))),
            [&b"{\"a\":1}"[..], b"{\"b\":2}"]
        );
        assert_eq!(split(nd, None).len(), 2);
        let arr = Bytes::from_static(b"[{\"a\":1}, {\"b\":[2]}]");
        assert_eq!(
            raws(&split(arr, Some("application/json"))),
            [&b"{\"a\":1}"[..], b"{\"b\":[2]}"]
        );
        let pretty = Bytes::from_static(b"{\n \"a\": 1\n}\n");
        assert_eq!(split(pretty, Some("application/json")).len(), 1);
        let broken = split(Bytes::from_static(b"[{\"a\":1},"), None);
        assert_eq!(broken.len(), 1);
        assert!(broken[0].preset.is_some());
        let many = Bytes::from_static(b"{}\n{}\n{}\n");
        assert_eq!(
            split_body(many, Some("application/x-ndjson"), 2).unwrap_err(),
            TooManyItems { max: 2 }
        );
    }
}
