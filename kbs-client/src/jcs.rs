//! RFC 8785 JSON Canonicalization Scheme for `serde_json::Value`: object
//! members sorted by their names' UTF-16 code units, no whitespace,
//! strings escaped as ECMAScript's `JSON.stringify` does. Trustee hashes
//! the JCS form of the runtime data, so the REPORT_DATA binding depends on
//! every byte of this.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use serde_json::Value;

/// The canonical form of `value`.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        // Integers print as ECMAScript prints them; the protocol's
        // objects hold no fractions.
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (key, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use serde_json::json;

    /// An implementation no one here wrote decides.
    fn oracle(value: &Value) -> String {
        serde_json_canonicalizer::to_string(value).unwrap()
    }

    #[test]
    fn matches_an_independent_canonicaliser() {
        let cases = [
            json!({"tee-pubkey": {"y": "b", "x": "a", "kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW"}, "nonce": "n0", "additional-evidence": ""}),
            json!({"b": [1, true, null, "x\u{1}\ny\"\\"], "a": {"€": 1, "a": -20}, "\u{10000}": 0, "\u{ffff}": 1}),
            json!(["é", "\u{7f}", "/", 1234567890]),
        ];
        for case in cases {
            assert_eq!(canonical(&case), oracle(&case), "{case}");
        }
    }
}
