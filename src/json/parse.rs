//! The I-JSON parser: iterative (no recursion on input nesting), strict.

use super::Value;

/// Why a text is not I-JSON, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at line {line} column {column}")]
pub struct ParseError {
    /// What is wrong, as a phrase.
    pub what: String,
    /// 1-based line of the offending byte.
    pub line: usize,
    /// 1-based column (in bytes) of the offending byte.
    pub column: usize,
    /// Byte offset of the offending byte.
    pub offset: usize,
}

/// Deepest nesting the parser builds. Events may nest at most 32 levels
/// (deeper is `rejected:schema`, with a receipt); beyond this much deeper
/// bound the input is refused as unparseable, so that a hostile body of
/// nothing but brackets cannot make the parser hold millions of frames.
pub const MAX_PARSE_DEPTH: usize = 1024;

/// Largest integer magnitude up to which every integer is a double.
const EXACT_INT_LIMIT: f64 = 9_007_199_254_740_992.0;

enum Frame {
    Array(Vec<Value>),
    Object(Vec<(String, Value)>, Option<String>),
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    /// Apply I-JSON's rules (duplicates, surrogates, exact numbers); off
    /// when only JSON syntax is being checked.
    strict: bool,
    /// The whole input, when it is valid UTF-8 (checked once, so that
    /// strings are copied without checking each run again).
    text: Option<&'a str>,
}

/// Parses one I-JSON value that fills `input` (surrounding whitespace allowed).
///
/// Refuses invalid UTF-8, JSON syntax errors, duplicate member names, lone
/// surrogates in escapes, non-finite numbers and integer literals that an
/// IEEE double cannot hold exactly.
pub fn parse(input: &[u8]) -> Result<Value, ParseError> {
    parse_with(input, true)
}

/// Checks JSON syntax only: whether `input` is one JSON value, whatever
/// I-JSON would say of its names, surrogates and numbers. Used to decide
/// whether a batch frames before its items are judged one by one. Holds
/// no values: its memory is bounded by the nesting depth.
pub fn check_syntax(input: &[u8]) -> Result<(), ParseError> {
    parse_with(input, false).map(drop)
}

fn parse_with(input: &[u8], strict: bool) -> Result<Value, ParseError> {
    let mut p = Parser {
        input,
        pos: 0,
        strict,
        text: std::str::from_utf8(input).ok(),
    };
    let value = p.value()?;
    p.skip_ws();
    if p.pos != input.len() {
        return Err(p.error("unexpected data after the JSON value"));
    }
    Ok(value)
}

impl<'a> Parser<'a> {
    fn error(&self, what: &str) -> ParseError {
        let upto = &self.input[..self.pos.min(self.input.len())];
        let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = upto.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        ParseError {
            what: what.to_string(),
            line,
            column: self.pos - line_start + 1,
            offset: self.pos,
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.input.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn expect_literal(&mut self, lit: &[u8], v: Value) -> Result<Value, ParseError> {
        if self.input[self.pos..].starts_with(lit) {
            self.pos += lit.len();
            Ok(v)
        } else {
            Err(self
                .error("invalid literal (expected true, false, null, a number, a string, [ or {)"))
        }
    }

    /// Parses a value with an explicit stack instead of recursion.
    fn value(&mut self) -> Result<Value, ParseError> {
        let mut stack: Vec<Frame> = Vec::new();
        loop {
            self.skip_ws();
            let Some(v) = self.scalar_or_open(&mut stack)? else {
                continue;
            };
            if let Some(whole) = self.attach(&mut stack, v)? {
                return Ok(whole);
            }
        }
    }

    /// Parses one scalar or empty container; `None` once a container with
    /// content is opened (pushed on `stack`).
    #[inline]
    fn scalar_or_open(&mut self, stack: &mut Vec<Frame>) -> Result<Option<Value>, ParseError> {
        let v = match self.peek() {
            Some(b'{' | b'[') if stack.len() >= MAX_PARSE_DEPTH => {
                return Err(self.error(&format!(
                    "nesting deeper than {MAX_PARSE_DEPTH} levels; events nest at most 32"
                )))
            }
            Some(b'{') => {
                self.pos += 1;
                self.skip_ws();
                if self.peek() != Some(b'}') {
                    let key = self.member_name()?;
                    stack.push(Frame::Object(Vec::with_capacity(8), Some(key)));
                    return Ok(None);
                }
                self.pos += 1;
                Value::Object(Vec::new())
            }
            Some(b'[') => {
                self.pos += 1;
                self.skip_ws();
                if self.peek() != Some(b']') {
                    stack.push(Frame::Array(Vec::new()));
                    return Ok(None);
                }
                self.pos += 1;
                Value::Array(Vec::new())
            }
            Some(b'"') => Value::String(self.string()?),
            Some(b't') => self.expect_literal(b"true", Value::Bool(true))?,
            Some(b'f') => self.expect_literal(b"false", Value::Bool(false))?,
            Some(b'n') => self.expect_literal(b"null", Value::Null)?,
            Some(b'-' | b'0'..=b'9') => Value::Number(self.number()?),
            Some(_) => return Err(self.error("unexpected character (expected a JSON value)")),
            None => return Err(self.error("unexpected end of input (expected a JSON value)")),
        };
        Ok(Some(v))
    }

    /// Attaches a finished value to its parent, closing parents as needed:
    /// the whole value once no parent is left, `None` when the parent's
    /// next item or member starts.
    #[inline]
    fn attach(
        &mut self,
        stack: &mut Vec<Frame>,
        mut v: Value,
    ) -> Result<Option<Value>, ParseError> {
        loop {
            let Some(top) = stack.last_mut() else {
                return Ok(Some(v));
            };
            self.skip_ws();
            match top {
                Frame::Array(items) => {
                    // Checking syntax only keeps no values: memory is the
                    // nesting depth, not the size of the input.
                    if self.strict {
                        items.push(v);
                    }
                    match self.peek() {
                        Some(b',') => {
                            self.pos += 1;
                            return Ok(None);
                        }
                        Some(b']') => self.pos += 1,
                        _ => return Err(self.error("expected , or ] in array")),
                    }
                }
                Frame::Object(members, key) => {
                    let name = key
                        .take()
                        .expect("a member name precedes every member value");
                    // Small objects are checked as they grow; large ones
                    // once, sorted, when they close (O(n log n) overall).
                    if self.strict && members.len() < 16 && members.iter().any(|(k, _)| *k == name)
                    {
                        return Err(self.error(&format!("duplicate member name {name:?}")));
                    }
                    if self.strict {
                        members.push((name, v));
                    }
                    match self.peek() {
                        Some(b',') => {
                            self.pos += 1;
                            self.skip_ws();
                            *key = Some(self.member_name()?);
                            return Ok(None);
                        }
                        Some(b'}') => self.pos += 1,
                        _ => return Err(self.error("expected , or } in object")),
                    }
                }
            }
            v = self.close(stack.pop().expect("the top frame"))?;
        }
    }

    /// The value of a frame its `]` or `}` just closed.
    fn close(&self, frame: Frame) -> Result<Value, ParseError> {
        match frame {
            Frame::Array(items) => Ok(Value::Array(items)),
            Frame::Object(members, _) => {
                if self.strict && members.len() > 16 {
                    if let Some(name) = duplicate(&members) {
                        return Err(self.error(&format!("duplicate member name {name:?}")));
                    }
                }
                Ok(Value::Object(members))
            }
        }
    }

    fn member_name(&mut self) -> Result<String, ParseError> {
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a member name in double quotes"));
        }
        let name = self.string()?;
        self.skip_ws();
        if self.peek() != Some(b':') {
            return Err(self.error("expected : after member name"));
        }
        self.pos += 1;
        Ok(name)
    }

    fn string(&mut self) -> Result<String, ParseError> {
        debug_assert_eq!(self.peek(), Some(b'"'));
        self.pos += 1;
        let mut out = String::new();
        let mut run_start = self.pos;
        loop {
            // Skip the run of bytes that stand for themselves at once.
            let rest = &self.input[self.pos..];
            self.pos += rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(rest.len());
            let Some(b) = self.peek() else {
                return Err(self.error("unterminated string"));
            };
            match b {
                b'"' => {
                    self.push_run(&mut out, run_start)?;
                    self.pos += 1;
                    return Ok(out);
                }
                b'\\' => {
                    self.push_run(&mut out, run_start)?;
                    self.pos += 1;
                    self.escape(&mut out)?;
                    run_start = self.pos;
                }
                0..=0x1f => return Err(self.error("control character in string (escape it)")),
                _ => self.pos += 1,
            }
        }
    }

    fn push_run(&self, out: &mut String, start: usize) -> Result<(), ParseError> {
        if let Some(text) = self.text {
            // A run starts after `"` or an escape and ends at `"` or `\`:
            // ASCII bytes, so always on character boundaries.
            out.push_str(&text[start..self.pos]);
            return Ok(());
        }
        match std::str::from_utf8(&self.input[start..self.pos]) {
            Ok(s) => {
                out.push_str(s);
                Ok(())
            }
            Err(e) => {
                let at = Parser {
                    input: self.input,
                    pos: start + e.valid_up_to(),
                    strict: self.strict,
                    text: None,
                };
                Err(at.error("invalid UTF-8 in string"))
            }
        }
    }

    fn hex4(&mut self) -> Result<u16, ParseError> {
        let digits = self
            .input
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("truncated \\u escape"))?;
        let text = std::str::from_utf8(digits).map_err(|_| self.error("invalid \\u escape"))?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.error("invalid \\u escape (expected 4 hex digits)"));
        }
        let v = u16::from_str_radix(text, 16).map_err(|_| self.error("invalid \\u escape"))?;
        self.pos += 4;
        Ok(v)
    }

    fn escape(&mut self, out: &mut String) -> Result<(), ParseError> {
        let Some(b) = self.peek() else {
            return Err(self.error("unterminated escape"));
        };
        self.pos += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                match hi {
                    0xD800..=0xDFFF if !self.strict => {
                        char::from_u32(hi as u32).unwrap_or(char::REPLACEMENT_CHARACTER)
                    }
                    0xD800..=0xDBFF => {
                        if !self.input[self.pos..].starts_with(b"\\u") {
                            return Err(self.error("lone surrogate in \\u escape (not I-JSON)"));
                        }
                        self.pos += 2;
                        let lo = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(self.error("lone surrogate in \\u escape (not I-JSON)"));
                        }
                        let cp = 0x10000 + (((hi as u32) - 0xD800) << 10) + ((lo as u32) - 0xDC00);
                        char::from_u32(cp).expect("a surrogate pair always forms a valid scalar")
                    }
                    0xDC00..=0xDFFF => {
                        return Err(self.error("lone surrogate in \\u escape (not I-JSON)"))
                    }
                    _ => {
                        char::from_u32(hi as u32).expect("non-surrogate BMP code points are chars")
                    }
                }
            }
            _ => {
                self.pos -= 1;
                return Err(self.error("invalid escape character"));
            }
        };
        out.push(c);
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<f64, ParseError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        let n = self.digits();
        if n == 0 {
            return Err(self.error("invalid number (expected a digit)"));
        }
        if n > 1 && self.input[int_start] == b'0' {
            return Err(self.error("invalid number (leading zero)"));
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.error("invalid number (expected a digit after .)"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("invalid number (expected a digit in the exponent)"));
            }
        }
        let text =
            std::str::from_utf8(&self.input[start..self.pos]).expect("a number literal is ASCII");
        let v: f64 = text.parse().map_err(|_| self.error("invalid number"))?;
        if !self.strict {
            return Ok(v);
        }
        if !v.is_finite() {
            self.pos = start;
            return Err(self.error("number out of the range of a double (not I-JSON)"));
        }
        if v.abs() >= EXACT_INT_LIMIT && !integer_is_exact(text, v) {
            self.pos = start;
            return Err(self.error(
                "integer that a double cannot hold exactly (not I-JSON); send it as a string",
            ));
        }
        Ok(v)
    }
}

/// Whether a number literal whose double `v` is at least 2^53 (so `v` is an
/// integer) is exactly that double, or has a fractional value (which may
/// round, as every non-integer does). The contract asks that an integer
/// value, however written (`9007199254740993`, `9007199254740993.0`,
/// `9.007199254740993e15`), be exactly representable.
fn integer_is_exact(text: &str, v: f64) -> bool {
    let text = text.trim_start_matches('-');
    let (mantissa, exp) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i64>().unwrap_or(0)),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = int.chars().chain(frac.chars()).collect();
    let digits = digits.trim_start_matches('0');
    let trimmed = digits.trim_end_matches('0');
    // value = trimmed * 10^scale
    let scale = exp - frac.len() as i64 + (digits.len() - trimmed.len()) as i64;
    if scale < 0 {
        return true; // not an integer: it rounds like any fraction
    }
    let exact = format!("{:.0}", v.abs());
    exact.len() as i64 == trimmed.len() as i64 + scale
        && exact.starts_with(trimmed)
        && exact[trimmed.len()..].bytes().all(|b| b == b'0')
}

/// A member name that appears twice, if any.
fn duplicate(members: &[(String, Value)]) -> Option<&str> {
    let mut names: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    names.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text.as_bytes()).unwrap_err().what
    }

    #[test]
    fn parses_ordinary_json() {
        let v = parse(br#" {"a": [1, -2.5e3, true, null], "b": "x\u00e9\ud83d\ude00"} "#).unwrap();
        assert_eq!(v.get("b").unwrap().as_str().unwrap(), "xé😀");
        assert_eq!(
            v.get("a"),
            Some(&Value::Array(vec![
                Value::Number(1.0),
                Value::Number(-2500.0),
                Value::Bool(true),
                Value::Null
            ]))
        );
    }

    #[test]
    fn copies_raw_utf8_around_escapes() {
        let v = parse("{\"é\":\"ü\\n€x\\\"😀\"}".as_bytes()).unwrap();
        assert_eq!(v.get("é").unwrap().as_str().unwrap(), "ü\n€x\"😀");
    }

    #[test]
    fn refuses_invalid_utf8_where_it_is() {
        let e = parse(b"{\"a\":\"ok\\n\xc3(\"}").unwrap_err();
        assert_eq!((e.what.as_str(), e.offset), ("invalid UTF-8 in string", 10));
        let e = parse(b"[\"\xff\"]").unwrap_err();
        assert_eq!((e.what.as_str(), e.offset), ("invalid UTF-8 in string", 2));
    }

    #[test]
    fn refuses_what_i_json_forbids() {
        assert!(err(r#"{"a":1,"a":2}"#).contains("duplicate"));
        assert!(err(r#"{"a":"\ud800"}"#).contains("lone surrogate"));
        assert!(err(r#"{"a":"\udc00x"}"#).contains("lone surrogate"));
        assert!(err(r#"{"n":9007199254740993}"#).contains("exactly"));
        assert!(err("1e400").contains("range"));
        assert!(parse(b"9007199254740992").is_ok());
        assert!(parse(b"-9007199254740992").is_ok());
        assert!(parse(b"1e21").is_ok());
    }

    #[test]
    fn an_integer_value_must_be_exact_however_written() {
        for inexact in [
            "9007199254740993.0",
            "9.007199254740993e15",
            "90071992547409930e-1",
            "-9007199254740993.000",
            "1e300",
            "170141183460469231731687303715884105729",
        ] {
            assert!(err(inexact).contains("exactly"), "{inexact}");
        }
        for exact in [
            "9007199254740992.0",
            "9.007199254740992e15",
            "9007199254740994",
            "170141183460469231731687303715884105728",
            "1.5e20",
            "9007199254740993.5",
            "123.456",
            "-0.0",
        ] {
            assert!(parse(exact.as_bytes()).is_ok(), "{exact}");
        }
    }

    #[test]
    fn refuses_bad_syntax_with_position() {
        let e = parse(b"{\n  \"a\": tru }").unwrap_err();
        assert_eq!((e.line, e.column), (2, 8));
        assert!(err("[1,]").contains("expected a JSON value"));
        assert!(err("01").contains("leading zero"));
        assert!(err("\"a\tb\"").contains("control character"));
        assert!(err("{} x").contains("after the JSON value"));
        assert!(parse(b"\"\xff\"").unwrap_err().what.contains("UTF-8"));
    }

    #[test]
    fn finds_duplicates_in_large_objects() {
        let mut text = String::from("{");
        for i in 0..100 {
            text.push_str(&format!("\"k{i}\":{i},"));
        }
        text.push_str("\"k7\":0}");
        assert!(err(&text).contains("duplicate member name \"k7\""));
    }
}
