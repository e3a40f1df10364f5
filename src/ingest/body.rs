//! Framing of `POST /v1/events` bodies: one event, a JSON array, or NDJSON.

use bytes::Bytes;

use crate::event::Unidentifiable;
use crate::json::{parse, split_array};
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

fn lines(body: &Bytes) -> Vec<Item> {
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
            items.push(Item::new(
                body.slice(start..trimmed_end),
                format!("http line {}", n + 1),
            ));
        }
        start = end + 1;
    }
    items
}

/// Splits a body into items: NDJSON when the content type says so (or
/// when a non-array body holds several lines that do not parse as one
/// value), a JSON array element by element, else one event. A JSON array
/// that does not frame is one unparseable item.
pub fn split_body(body: Bytes, content_type: Option<&str>) -> Vec<Item> {
    if is_ndjson(content_type) {
        return lines(&body);
    }
    let first = body.iter().position(|b| !b.is_ascii_whitespace());
    if first.map(|i| body[i]) == Some(b'[') {
        return match split_array(&body) {
            Ok(ranges) => ranges
                .into_iter()
                .enumerate()
                .map(|(i, r)| Item::new(body.slice(r), format!("http item {}", i + 1)))
                .collect(),
            Err(e) => vec![Item {
                raw: body,
                source: "http".into(),
                preset: Some(Unidentifiable::Unparseable(format!(
                    "the JSON array does not parse ({e}); send a JSON array of event objects, or NDJSON with Content-Type: application/x-ndjson"
                ))),
            }],
        };
    }
    let several_lines = body
        .split(|&b| b == b'\n')
        .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
        .count()
        > 1;
    if several_lines && parse(&body).is_err() {
        return lines(&body);
    }
    vec![Item::new(body, "http")]
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
        assert_eq!(
            raws(&split_body(nd.clone(), Some("application/x-ndjson"))),
            [&b"{\"a\":1}"[..], b"{\"b\":2}"]
        );
        assert_eq!(split_body(nd, None).len(), 2);
        let arr = Bytes::from_static(b"[{\"a\":1}, {\"b\":[2]}]");
        assert_eq!(
            raws(&split_body(arr, Some("application/json"))),
            [&b"{\"a\":1}"[..], b"{\"b\":[2]}"]
        );
        let pretty = Bytes::from_static(b"{\n \"a\": 1\n}\n");
        assert_eq!(split_body(pretty, Some("application/json")).len(), 1);
        let broken = split_body(Bytes::from_static(b"[{\"a\":1},"), None);
        assert_eq!(broken.len(), 1);
        assert!(broken[0].preset.is_some());
    }
}
