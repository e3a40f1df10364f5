//! Finding item boundaries in a batch without parsing the items.
//!
//! A batch is split first and each item parsed strictly on its own, so that
//! one item that is not I-JSON (a duplicate member, a lone surrogate) fails
//! alone instead of failing its neighbours.

use std::ops::Range;

/// Why a batch could not be split into items.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {offset}")]
pub struct SplitError {
    /// What is wrong, as a phrase.
    pub what: &'static str,
    /// Byte offset where splitting stopped.
    pub offset: usize,
}

/// Scans one JSON value starting at `pos` (which must not be whitespace) and
/// returns the offset just past it. Only strings and brackets are tracked;
/// the value itself is checked later by the strict parser.
fn scan_value(input: &[u8], mut pos: usize) -> Result<usize, SplitError> {
    let mut depth = 0usize;
    let start = pos;
    loop {
        let Some(&b) = input.get(pos) else {
            return Err(SplitError {
                what: "unexpected end of input inside a value",
                offset: start,
            });
        };
        match b {
            b'"' => {
                pos += 1;
                loop {
                    match input.get(pos) {
                        None => {
                            return Err(SplitError {
                                what: "unterminated string",
                                offset: start,
                            })
                        }
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
                    return Err(SplitError {
                        what: "unbalanced closing bracket",
                        offset: pos,
                    });
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
pub fn split_array(input: &[u8]) -> Result<Vec<Range<usize>>, SplitError> {
    // The array as a whole must be JSON; I-JSON's rules apply per element.
    super::check_syntax(input).map_err(|e| SplitError {
        what: "the array is not valid JSON",
        offset: e.offset,
    })?;
    let mut pos = skip_ws(input, 0);
    if input.get(pos) != Some(&b'[') {
        return Err(SplitError {
            what: "expected [ to open the array",
            offset: pos,
        });
    }
    pos = skip_ws(input, pos + 1);
    let mut items = Vec::new();
    if input.get(pos) == Some(&b']') {
        pos += 1;
    } else {
        loop {
            let end = scan_value(input, pos)?;
            if end == pos {
                return Err(SplitError {
                    what: "expected an array element",
                    offset: pos,
                });
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
                    return Err(SplitError {
                        what: "expected , or ] after an array element",
                        offset: pos,
                    })
                }
            }
        }
    }
    if skip_ws(input, pos) != input.len() {
        return Err(SplitError {
            what: "unexpected data after the array",
            offset: pos,
        });
    }
    Ok(items)
}

/// Splits concatenated JSON objects (Splunk HEC framing: `{..}{..} {..}`).
///
/// Returns the ranges found before the first framing error, and the error
/// with its offset; the caller decides what to do with the rest.
pub fn split_concatenated(input: &[u8]) -> (Vec<Range<usize>>, Option<SplitError>) {
    let mut items = Vec::new();
    let mut pos = skip_ws(input, 0);
    while pos < input.len() {
        if input[pos] != b'{' {
            return (
                items,
                Some(SplitError {
                    what: "expected { to open an event envelope",
                    offset: pos,
                }),
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
                Some(SplitError {
                    what: "an envelope that is not valid JSON",
                    offset: pos,
                }),
            );
        }
        items.push(pos..end);
        pos = skip_ws(input, end);
    }
    (items, None)
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
            texts(s, &split_array(s.as_bytes()).unwrap()),
            [r#"{"a":"],["}"#, "1", r#""x\"]""#, "[2,[3]]", "null"]
        );
        assert!(split_array(b"[]").unwrap().is_empty());
        assert!(split_array(b"[1,").is_err());
        assert!(split_array(b"[1 2]").is_err());
        assert!(split_array(b"[1] x").is_err());
        assert!(split_array(b"{}").is_err());
        assert!(split_array(br#"[{"a":1}, {"b" "c"}, {"d":2}]"#).is_err());
        assert_eq!(
            split_array(br#"[{"a":1,"a":2}, {"s":"\ud800"}, 9007199254740993]"#)
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn splits_concatenated_objects() {
        let s = r#"{"event":{"a":"}"}}{"event":2}
 {"event":3}"#;
        let (items, err) = split_concatenated(s.as_bytes());
        assert_eq!(items.len(), 3);
        assert!(err.is_none());
        let (items, err) = split_concatenated(br#"{"event":1} garbage {"event":2}"#);
        assert_eq!(items.len(), 1);
        assert_eq!(err.unwrap().offset, 12);
        let (items, err) = split_concatenated(br#"{"event":1} {"event": nul} {"event":2}"#);
        assert_eq!(items.len(), 1);
        assert_eq!(err.unwrap().offset, 12);
    }
}
