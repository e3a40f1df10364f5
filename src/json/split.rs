//! Finding item boundaries in a batch without parsing the items.
//!
//! A batch is split first and each item parsed strictly on its own, so that
//! one item that is not I-JSON (a duplicate member, a lone surrogate) fails
//! alone instead of failing its neighbours.

use std::ops::Range;

/// Why a batch could not be split into items.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// The framing is broken.
    #[error("{what} at byte {offset}")]
    Invalid {
        /// What is wrong, as a phrase.
        what: &'static str,
        /// Byte offset where splitting stopped.
        offset: usize,
    },
    /// More items than the caller allows; splitting stopped there, before
    /// holding them all.
    #[error("more than {max} items")]
    TooMany {
        /// The most allowed.
        max: usize,
    },
}

impl SplitError {
    fn at(what: &'static str, offset: usize) -> SplitError {
        SplitError::Invalid { what, offset }
    }
}

/// Scans one JSON value starting at `pos` (which must not be whitespace) and
/// returns the offset just past it. Only strings and brackets are tracked;
/// the value itself is checked later by the strict parser.
fn scan_value(input: &[u8], mut pos: usize) -> Result<usize, SplitError> {
    let mut depth = 0usize;
    let start = pos;
    loop {
        let Some(&b) = input.get(pos) else {
            return Err(SplitError::at(
                "unexpected end of input inside a value",
                start,
            ));
        };
        match b {
            b'"' => {
                pos += 1;
                loop {
                    match input.get(pos) {
                        None => return Err(SplitError::at("unterminated string", start)),
                        Some(b'\\') => pos += 2,
                        Some(b'"') => {
                            pos += 1;
                            break;
                        }
                        Some(_) => pos += 1,
                    }
                }
                if depth == 0 {
                    return Ok(pos);
                }
                continue;
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                if depth == 0 {
                    // The bracket closes the container around a scalar.
                    if pos > start {
                        return Ok(pos);
                    }
                    return Err(SplitError::at("unbalanced closing bracket", pos));
                }
                depth -= 1;
                if depth == 0 {
                    return Ok(pos + 1);
                }
            }
            b',' | b' ' | b'\t' | b'\r' | b'\n' | b':' if depth == 0 => return Ok(pos),
            _ => {}
        }
        pos += 1;
    }
}

fn skip_ws(input: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = input.get(pos) {
        pos += 1;
    }
    pos
}

/// Splits a top-level JSON array into the byte ranges of its elements.
///
/// Fails when the text is not an array, its brackets do not balance, or
/// something other than whitespace follows it.
pub fn split_array(input: &[u8], max_items: usize) -> Result<Vec<Range<usize>>, SplitError> {
    // The array as a whole must be JSON; I-JSON's rules apply per element.
    super::check_syntax(input)
        .map_err(|e| SplitError::at("the array is not valid JSON", e.offset))?;
    let mut pos = skip_ws(input, 0);
    if input.get(pos) != Some(&b'[') {
        return Err(SplitError::at("expected [ to open the array", pos));
    }
    pos = skip_ws(input, pos + 1);
    let mut items = Vec::new();
    if input.get(pos) == Some(&b']') {
        pos += 1;
    } else {
        loop {
            let end = scan_value(input, pos)?;
            if end == pos {
                return Err(SplitError::at("expected an array element", pos));
            }
            if items.len() == max_items {
                return Err(SplitError::TooMany { max: max_items });
            }
            items.push(pos..end);
            pos = skip_ws(input, end);
            match input.get(pos) {
                Some(b',') => pos = skip_ws(input, pos + 1),
                Some(b']') => {
                    pos += 1;
                    break;
                }
                _ => {
                    return Err(SplitError::at(
                        "expected , or ] after an array element",
                        pos,
                    ))
                }
            }
        }
    }
    if skip_ws(input, pos) != input.len() {
        return Err(SplitError::at("unexpected data after the array", pos));
    }
    Ok(items)
}

/// Splits concatenated JSON objects (Splunk HEC framing: `{..}{..} {..}`).
///
/// Returns the ranges found before the first framing error, and the error
/// with its offset; the caller decides what to do with the rest. More than
/// `max_items` envelopes stop the split with [`SplitError::TooMany`].
pub fn split_concatenated(
    input: &[u8],
    max_items: usize,
) -> (Vec<Range<usize>>, Option<SplitError>) {
    let mut items = Vec::new();
    let mut pos = skip_ws(input, 0);
    while pos < input.len() {
        if input[pos] != b'{' {
            return (
                items,
                Some(SplitError::at("expected { to open an event envelope", pos)),
            );
        }
        let end = match scan_value(input, pos) {
            Ok(end) => end,
            Err(e) => return (items, Some(e)),
        };
        // An envelope that is not JSON leaves the framing of the rest unsure.
        if super::check_syntax(&input[pos..end]).is_err() {
            return (
                items,
                Some(SplitError::at("an envelope that is not valid JSON", pos)),
            );
        }
        if items.len() == max_items {
            return (items, Some(SplitError::TooMany { max: max_items }));
        }
        items.push(pos..end);
        pos = skip_ws(input, end);
    }
    (items, None)
}

/// Where one member of an object stands in its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The name, with its quotes (a JSON string literal).
    pub name: Range<usize>,
    /// The value.
    pub value: Range<usize>,
}

/// The byte ranges of the name (with its quotes) and value of each
/// top-level member of a JSON object, without parsing or judging the
/// values: a HEC envelope's `event` is judged on its own, whatever the
/// unsigned members around it hold. `input` must be syntactically valid
/// JSON (see [`super::check_syntax`]).
pub fn object_members(input: &[u8]) -> Result<Vec<Member>, SplitError> {
    let mut pos = skip_ws(input, 0);
    if input.get(pos) != Some(&b'{') {
        return Err(SplitError::at("expected { to open an object", pos));
    }
    pos = skip_ws(input, pos + 1);
    let mut members = Vec::new();
    if input.get(pos) == Some(&b'}') {
        return Ok(members);
    }
    loop {
        if input.get(pos) != Some(&b'"') {
            return Err(SplitError::at("expected a member name", pos));
        }
        let name_end = scan_value(input, pos)?;
        let colon = skip_ws(input, name_end);
        if input.get(colon) != Some(&b':') {
            return Err(SplitError::at("expected : after a member name", colon));
        }
        let value = skip_ws(input, colon + 1);
        let value_end = scan_value(input, value)?;
        members.push(Member {
            name: pos..name_end,
            value: value..value_end,
        });
        pos = skip_ws(input, value_end);
        match input.get(pos) {
            Some(b',') => pos = skip_ws(input, pos + 1),
            Some(b'}') => return Ok(members),
            _ => return Err(SplitError::at("expected , or } after a member", pos)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'a>(input: &'a str, ranges: &[Range<usize>]) -> Vec<&'a str> {
        ranges.iter().map(|r| &input[r.clone()]).collect()
    }

    #[test]
    fn splits_arrays() {
        let s = r#" [ {"a":"],["}, 1, "x\"]", [2,[3]] , null ] "#;
        assert_eq!(
            texts(s, &split_array(s.as_bytes(), 10).unwrap()),
            [r#"{"a":"],["}"#, "1", r#""x\"]""#, "[2,[3]]", "null"]
        );
        assert!(split_array(b"[]", 10).unwrap().is_empty());
        assert!(split_array(b"[1,", 10).is_err());
        assert!(split_array(b"[1 2]", 10).is_err());
        assert!(split_array(b"[1] x", 10).is_err());
        assert!(split_array(b"{}", 10).is_err());
        assert!(split_array(br#"[{"a":1}, {"b" "c"}, {"d":2}]"#, 10).is_err());
        assert_eq!(
            split_array(br#"[{"a":1,"a":2}, {"s":"\ud800"}, 9007199254740993]"#, 10)
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn stops_at_the_item_cap() {
        assert_eq!(
            split_array(b"[{},{},{}]", 2),
            Err(SplitError::TooMany { max: 2 })
        );
        assert_eq!(split_array(b"[{},{}]", 2).unwrap().len(), 2);
        let (items, err) = split_concatenated(b"{}{}{}", 2);
        assert_eq!(
            (items.len(), err),
            (2, Some(SplitError::TooMany { max: 2 }))
        );
    }

    #[test]
    fn finds_top_level_members_without_judging_them() {
        let s = br#" {"time": 1e999, "event" : {"a":[1,"}"]}, "x":{"d":1,"d":2}} "#;
        let m = object_members(s).unwrap();
        let text = |r: &Range<usize>| std::str::from_utf8(&s[r.clone()]).unwrap();
        assert_eq!(
            m.iter()
                .map(|m| (text(&m.name), text(&m.value)))
                .collect::<Vec<_>>(),
            [
                (r#""time""#, "1e999"),
                (r#""event""#, r#"{"a":[1,"}"]}"#),
                (r#""x""#, r#"{"d":1,"d":2}"#)
            ]
        );
        assert!(object_members(b"{}").unwrap().is_empty());
        assert!(object_members(b"[1]").is_err());
    }

    #[test]
    fn splits_concatenated_objects() {
        let s = r#"{"event":{"a":"}"}}{"event":2}
 {"event":3}"#;
        let (items, err) = split_concatenated(s.as_bytes(), 10);
        assert_eq!(items.len(), 3);
        assert!(err.is_none());
        let (items, err) = split_concatenated(br#"{"event":1} garbage {"event":2}"#, 10);
        assert_eq!(items.len(), 1);
        assert_eq!(
            err.unwrap(),
            SplitError::at("expected { to open an event envelope", 12)
        );
        let (items, err) = split_concatenated(br#"{"event":1} {"event": nul} {"event":2}"#, 10);
        assert_eq!(items.len(), 1);
        assert_eq!(
            err.unwrap(),
            SplitError::at("an envelope that is not valid JSON", 12)
        );
    }
}
