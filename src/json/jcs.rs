//! RFC 8785 JSON Canonicalization Scheme (JCS) output.

use std::cmp::Ordering;

use super::Value;

/// Writes the JCS form of `v` to `out`.
///
/// Members are sorted by their names' UTF-16 code units, strings use the
/// minimal ECMAScript escapes and numbers the ECMAScript `Number` to string
/// rules. Iterative, so nesting depth cannot exhaust the stack.
pub fn write_jcs(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => return out.extend_from_slice(b"null"),
        Value::Bool(true) => return out.extend_from_slice(b"true"),
        Value::Bool(false) => return out.extend_from_slice(b"false"),
        Value::Number(n) => return write_number(*n, out),
        Value::String(s) => return write_jcs_string(s, out),
        Value::Array(_) | Value::Object(_) => {}
    }
    enum Step<'a> {
        Value(&'a Value),
        Raw(&'static [u8]),
        Name(&'a str),
    }
    let mut todo = vec![Step::Value(v)];
    while let Some(step) = todo.pop() {
        match step {
            Step::Raw(b) => out.extend_from_slice(b),
            Step::Name(n) => {
                write_jcs_string(n, out);
                out.push(b':');
            }
            Step::Value(v) => match v {
                Value::Null => out.extend_from_slice(b"null"),
                Value::Bool(true) => out.extend_from_slice(b"true"),
                Value::Bool(false) => out.extend_from_slice(b"false"),
                Value::Number(n) => write_number(*n, out),
                Value::String(s) => write_jcs_string(s, out),
                Value::Array(items) => {
                    out.push(b'[');
                    todo.push(Step::Raw(b"]"));
                    for (i, item) in items.iter().enumerate().rev() {
                        todo.push(Step::Value(item));
                        if i > 0 {
                            todo.push(Step::Raw(b","));
                        }
                    }
                }
                Value::Object(members) => {
                    out.push(b'{');
                    todo.push(Step::Raw(b"}"));
                    let sorted = sorted_members(members);
                    for (i, (name, value)) in sorted.into_iter().enumerate().rev() {
                        todo.push(Step::Value(value));
                        todo.push(Step::Name(name));
                        if i > 0 {
                            todo.push(Step::Raw(b","));
                        }
                    }
                }
            },
        }
    }
}

/// The canonical bytes of an event-like object, with and without one member.
///
/// Signing covers the object without `signature`; the event hash covers it
/// whole. Both come from one sort of the members.
#[derive(Debug, Clone)]
pub struct Canonical {
    /// JCS of the object without the excluded member.
    pub without: Vec<u8>,
    /// JCS of the whole object.
    pub whole: Vec<u8>,
}

impl Canonical {
    /// Canonicalises `members` with and without the member named `excluded`.
    pub fn of_object(members: &[(String, Value)], excluded: &str) -> Canonical {
        let sorted = sorted_members(members);
        let mut without = Vec::with_capacity(512);
        let mut whole = Vec::with_capacity(600);
        without.push(b'{');
        whole.push(b'{');
        for (name, value) in sorted {
            if whole.len() > 1 {
                whole.push(b',');
            }
            let piece = whole.len();
            write_jcs_string(name, &mut whole);
            whole.push(b':');
            write_jcs(value, &mut whole);
            if name != excluded {
                if without.len() > 1 {
                    without.push(b',');
                }
                without.extend_from_slice(&whole[piece..]);
            }
        }
        without.push(b'}');
        whole.push(b'}');
        Canonical { without, whole }
    }
}

fn sorted_members(members: &[(String, Value)]) -> Vec<(&str, &Value)> {
    let mut sorted: Vec<(&str, &Value)> = members.iter().map(|(k, v)| (k.as_str(), v)).collect();
    sorted.sort_by(|a, b| utf16_cmp(a.0, b.0));
    sorted
}

/// Orders strings by UTF-16 code units, as RFC 8785 section 3.2.3 requires.
fn utf16_cmp(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        return a.as_bytes().cmp(b.as_bytes());
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

/// Writes `s` as a JCS string literal (quotes included).
pub fn write_jcs_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let needs_escape = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
    let Some(first) = bytes.iter().position(|&b| needs_escape(b)) else {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    };
    out.extend_from_slice(&bytes[..first]);
    let mut run = first;
    for (i, &b) in bytes.iter().enumerate().skip(first) {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                out.extend_from_slice(&bytes[run..i]);
                out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
                run = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..i]);
        out.extend_from_slice(esc);
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

fn write_number(n: f64, out: &mut Vec<u8>) {
    if n == 0.0 {
        // ECMAScript prints negative zero as "0".
        out.push(b'0');
        return;
    }
    let mut buf = ryu_js::Buffer::new();
    out.extend_from_slice(buf.format_finite(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    fn jcs(text: &str) -> String {
        let mut out = Vec::new();
        write_jcs(&parse(text.as_bytes()).unwrap(), &mut out);
        String::from_utf8(out).unwrap()
    }

    /// RFC 8785 section 3.2.2 (the "sample input" and its canonical form),
    /// with `1E30` replaced by `1E22`: 10^30 is an integer no double holds
    /// exactly, which the contract's I-JSON refuses (RFC 8785 itself takes
    /// it and prints `1e+30`).
    #[test]
    fn rfc8785_sample() {
        assert!(parse(b"1E30").is_err());
        let input = r#"{
          "numbers": [333333333.33333329, 1E22, 4.50,
                      2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        assert_eq!(
            jcs(input),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+22,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    /// RFC 8785 section 3.2.3 (sorting by UTF-16 code units).
    #[test]
    fn rfc8785_sorting() {
        let input = "{\"\\u20ac\":\"Euro Sign\",\"\\r\":\"Carriage Return\",\"\\ufb33\":\"Hebrew Letter Dalet With Dagesh\",\"1\":\"One\",\"\\ud83d\\ude00\":\"Emoji: Grinning Face\",\"\\u0080\":\"Control\",\"\\u00f6\":\"Latin Small Letter O With Diaeresis\"}";
        let out = jcs(input);
        let names: Vec<&str> = ["\\r", "1", "\u{80}", "ö", "€", "😀", "\u{fb33}"].to_vec();
        let mut at = 0;
        for n in names {
            let pos = out[at..]
                .find(&format!("\"{n}\""))
                .unwrap_or_else(|| panic!("{n} in order"));
            at += pos + 1;
        }
    }

    /// RFC 8785 appendix B number serialisation samples.
    #[test]
    fn rfc8785_numbers() {
        let cases: &[(u64, &str)] = &[
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for &(bits, want) in cases {
            let mut out = Vec::new();
            write_number(f64::from_bits(bits), &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), want, "bits {bits:016x}");
        }
    }

    #[test]
    fn canonical_with_and_without_signature() {
        let v = parse(br#"{"b":1,"signature":"s","a":"x"}"#).unwrap();
        let Value::Object(m) = &v else { panic!() };
        let c = Canonical::of_object(m, "signature");
        assert_eq!(c.without, br#"{"a":"x","b":1}"#);
        assert_eq!(c.whole, br#"{"a":"x","b":1,"signature":"s"}"#);
    }

    mod properties {
        use super::super::super::{parse, Value};
        use super::super::write_jcs;
        use proptest::prelude::*;

        /// I-JSON values: any strings (escapes, astral planes, controls),
        /// integers a double holds exactly, finite fractions.
        fn value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::Bool),
                (-(1i64 << 53)..(1i64 << 53)).prop_map(|i| serde_json::json!(i)),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite() && f.abs() < 9.0e15)
                    .prop_map(|f| serde_json::json!(f)),
                any::<String>().prop_map(serde_json::Value::String),
            ];
            leaf.prop_recursive(5, 64, 8, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..8)
                        .prop_map(serde_json::Value::Array),
                    proptest::collection::btree_map(any::<String>(), inner, 0..8)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn jcs(v: &Value) -> Vec<u8> {
            let mut out = Vec::new();
            write_jcs(v, &mut out);
            out
        }

        /// The value with every object's members in name order.
        fn sorted(v: &Value) -> Value {
            match v {
                Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
                Value::Object(m) => {
                    let mut m: Vec<_> = m.iter().map(|(k, x)| (k.clone(), sorted(x))).collect();
                    m.sort_by(|a, b| a.0.cmp(&b.0));
                    Value::Object(m)
                }
                other => other.clone(),
            }
        }

        fn reversed(v: &Value) -> Value {
            match v {
                Value::Array(a) => Value::Array(a.iter().map(reversed).collect()),
                Value::Object(m) => Value::Object(
                    m.iter()
                        .rev()
                        .map(|(k, x)| (k.clone(), reversed(x)))
                        .collect(),
                ),
                other => other.clone(),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            /// The canonical form parses to the same value (numbers exactly),
            /// canonicalises to itself, and does not depend on member order
            /// or whitespace.
            #[test]
            fn canonical_form_is_a_fixed_point_of_the_value(v in value(), pretty in any::<bool>()) {
                let text = if pretty { serde_json::to_vec_pretty(&v) } else { serde_json::to_vec(&v) }.unwrap();
                let parsed = parse(&text).expect("serde_json's output is I-JSON here");
                let once = jcs(&parsed);
                let again = parse(&once).expect("the canonical form parses");
                prop_assert_eq!(&jcs(&again), &once);
                prop_assert_eq!(&jcs(&reversed(&parsed)), &once);
                prop_assert_eq!(sorted(&again), sorted(&parsed));
            }
        }
    }
}
