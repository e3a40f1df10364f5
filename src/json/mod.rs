//! Strict JSON: an I-JSON (RFC 7493) parser and the RFC 8785 canonical form.
//!
//! Events are signed over their canonical form, so Vigil parses them with its
//! own parser rather than a general-purpose one: it must refuse what I-JSON
//! forbids (duplicate member names, lone surrogates, integers that a double
//! cannot hold exactly) instead of silently picking a value, and it must never
//! recurse on attacker-chosen nesting. This module does no I/O.

mod jcs;
mod parse;
mod split;

pub use jcs::{write_jcs, write_jcs_string, Canonical};
pub use parse::{check_syntax, parse, ParseError, MAX_PARSE_DEPTH};
pub use split::{object_members, split_array, split_concatenated, Member, SplitError};

/// A parsed JSON value. Objects keep their members in input order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`
    Null,
    /// `true` or `false`
    Bool(bool),
    /// Any number; I-JSON numbers are exactly the IEEE doubles.
    Number(f64),
    /// A string (never holds a lone surrogate).
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object, members in input order, names unique.
    Object(Vec<(String, Value)>),
}

impl Value {
    /// The member named `name`, when this is an object that has it.
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Object(members) => members.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The members, when this is an object (taking them out of `self`).
    pub fn into_members(mut self) -> Option<Vec<(String, Value)>> {
        match &mut self {
            Value::Object(m) => Some(std::mem::take(m)),
            _ => None,
        }
    }

    /// The string inside, when this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }

    /// Nesting depth: 0 for a scalar, 1 for an empty or flat container.
    pub fn depth(&self) -> usize {
        // Iterative so that hostile nesting cannot exhaust the stack.
        let mut max = 0;
        let mut stack = vec![(self, 0usize)];
        while let Some((v, d)) = stack.pop() {
            match v {
                Value::Array(items) => {
                    max = max.max(d + 1);
                    stack.extend(items.iter().map(|i| (i, d + 1)));
                }
                Value::Object(members) => {
                    max = max.max(d + 1);
                    stack.extend(members.iter().map(|(_, i)| (i, d + 1)));
                }
                _ => max = max.max(d),
            }
        }
        max
    }
}

impl Drop for Value {
    fn drop(&mut self) {
        // Dropping a deeply nested value recursively could overflow the
        // stack; flatten children into a heap list first. A container whose
        // children hold no non-empty container drops recursively only one
        // level, so it takes the ordinary path (no extra allocation).
        let nested = |v: &Value| match v {
            Value::Array(items) => !items.is_empty(),
            Value::Object(members) => !members.is_empty(),
            _ => false,
        };
        let flat = match &*self {
            Value::Array(items) => !items.iter().any(nested),
            Value::Object(members) => !members.iter().any(|(_, v)| nested(v)),
            _ => true,
        };
        if flat {
            return;
        }
        let mut pending = Vec::new();
        match self {
            Value::Array(items) if !items.is_empty() => pending.append(items),
            Value::Object(members) if !members.is_empty() => {
                pending.extend(members.drain(..).map(|(_, v)| v))
            }
            _ => return,
        }
        while let Some(mut v) = pending.pop() {
            match &mut v {
                Value::Array(items) => pending.append(items),
                Value::Object(members) => pending.extend(members.drain(..).map(|(_, v)| v)),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_bounded_and_never_recursive() {
        let ok = format!(
            "{}{}",
            "[".repeat(MAX_PARSE_DEPTH),
            "]".repeat(MAX_PARSE_DEPTH)
        );
        let v = parse(ok.as_bytes()).expect("nesting up to the bound parses");
        assert_eq!(v.depth(), MAX_PARSE_DEPTH);
        let mut out = Vec::new();
        write_jcs(&v, &mut out);
        assert_eq!(out, ok.as_bytes());
        let hostile = format!("{}{}", "[".repeat(2_000_000), "]".repeat(2_000_000));
        let e = parse(hostile.as_bytes()).unwrap_err();
        assert!(e.what.contains("nesting deeper"), "{e}");
        assert!(check_syntax(hostile.as_bytes()).is_err());
        // Dropping and canonicalising deep values built by hand is iterative too.
        let mut deep = Value::Null;
        for _ in 0..200_000 {
            deep = Value::Array(vec![deep]);
        }
        let mut out = Vec::new();
        write_jcs(&deep, &mut out);
        assert_eq!(out.len(), 200_000 * 2 + 4);
    }
}
