//! The top level of a JSON object, read without parsing what is below it: each member's
//! name and where its value starts and ends, found by skipping strings with `memchr` and
//! counting brackets. For the whole answers of pass-through requests, which are relayed
//! byte for byte and of which only `usage` is read (`plan.rs`): a full parse spent ~10,000
//! instructions on a ~1 KB chat answer to find it (callgrind, `bench/instructions.sh chat`).
//!
//! How strict the check is (docs/egress.md, "Retries, failover, circuit breakers"):
//! - the text is one object: optional JSON whitespace, `{`, members `"name": value`
//!   separated by commas, `}`, optional whitespace, and nothing else;
//! - every string, at any depth, is closed (escapes honoured); every array and object, at
//!   any depth (no limit), is closed by its own bracket, in order;
//! - a top-level value that is not a string, array or object is `true`, `false`, `null`
//!   or a token of number characters starting with `-` or a digit.
//!
//! Not checked below the top level: separators (`,` `:`), scalars, control characters in
//! strings, UTF-8. So every valid JSON object passes, and an HTML page, an empty or
//! truncated answer, a bare array or scalar, or an object followed by anything does not.
//! A nested value that is malformed only within its brackets is relayed as the provider
//! wrote it (the client's parser judges it); `usage.rs` reads a `usage` object with
//! [`members`], so its own members get the top-level checks.

use std::fmt;

use memchr::memchr2;

/// Why a text is not one JSON object, and the byte offset where that was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanError {
    pub what: &'static str,
    pub at: usize,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

fn err(what: &'static str, at: usize) -> ScanError {
    ScanError { what, at }
}

/// The value of the top-level member `name` of the object `raw` (as written; the last one
/// when the name is given twice, as a parser building a tree keeps), after checking the
/// whole of `raw` as the module comment says. `Ok(None)`: an object without `name`.
/// Member names with escapes are compared unescaped.
pub fn member<'a>(raw: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, ScanError> {
    let mut found = None;
    members(raw, |key, value| {
        if names_equal(key, name) {
            found = Some(value);
        }
    })?;
    Ok(found)
}

/// Each member of the object `raw`, in order: its name as written between its quotes,
/// and its value as written; after the last, the rest of `raw` is checked (`Err` as soon
/// as something is wrong, possibly after some members were seen).
pub fn members<'a>(
    raw: &'a [u8],
    mut each: impl FnMut(&'a [u8], &'a [u8]),
) -> Result<(), ScanError> {
    let mut i = skip_ws(raw, 0);
    if raw.get(i) != Some(&b'{') {
        return Err(err("not an object", i));
    }
    i = skip_ws(raw, i + 1);
    if raw.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if raw.get(i) != Some(&b'"') {
                return Err(err("expected a member name", i));
            }
            let name_end = string_end(raw, i)?;
            let key = &raw[i + 1..name_end - 1];
            i = skip_ws(raw, name_end);
            if raw.get(i) != Some(&b':') {
                return Err(err("expected `:`", i));
            }
            i = skip_ws(raw, i + 1);
            let start = i;
            i = value_end(raw, i)?;
            each(key, &raw[start..i]);
            i = skip_ws(raw, i);
            match raw.get(i) {
                Some(b',') => i = skip_ws(raw, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return Err(err("expected `,` or `}`", i)),
            }
        }
    }
    if skip_ws(raw, i) != raw.len() {
        return Err(err("text after the object", i));
    }
    Ok(())
}

/// Whether the member name `key` (as written, between its quotes) is `name`.
pub fn names_equal(key: &[u8], name: &str) -> bool {
    // An escape makes a name longer than it reads, and one that reads as `name` starts
    // with `name`'s first byte or with an escape: only then is it unescaped (by
    // serde_json; rare).
    key == name.as_bytes()
        || (key.len() > name.len()
            && matches!(key.first(), Some(&b) if b == b'\\' || Some(&b) == name.as_bytes().first())
            && key.contains(&b'\\')
            && unescaped(key).is_some_and(|k| k == name))
}

/// A member name with escapes, unescaped.
fn unescaped(key: &[u8]) -> Option<String> {
    let mut quoted = Vec::with_capacity(key.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(key);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted).ok()
}

/// JSON's whitespace (RFC 8259: space, tab, line feed, carriage return).
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_ws(raw: &[u8], mut i: usize) -> usize {
    while raw.get(i).copied().is_some_and(is_ws) {
        i += 1;
    }
    i
}

/// Just past the closing quote of the string whose opening quote is at `i`. The first
/// bytes are looked at 8 at a time by hand (most strings are short names and values, for
/// which `memchr`'s setup costs more than the search), the rest with `memchr2`.
fn string_end(raw: &[u8], i: usize) -> Result<usize, ScanError> {
    let mut j = i + 1;
    let by_hand = (i + 1 + 32).min(raw.len());
    while j + 8 <= by_hand {
        let word = u64::from_le_bytes(raw[j..j + 8].try_into().unwrap_or([0; 8]));
        let found = has_byte(word, b'"') | has_byte(word, b'\\');
        if found == 0 {
            j += 8;
            continue;
        }
        let k = j + (found.trailing_zeros() / 8) as usize;
        if raw[k] == b'"' {
            return Ok(k + 1);
        }
        // A backslash: the byte after it is escaped (`\"` does not close the string).
        j = k + 2;
    }
    while j <= raw.len() {
        match memchr2(b'"', b'\\', &raw[j..]) {
            Some(k) if raw[j + k] == b'"' => return Ok(j + k + 1),
            Some(k) => j += k + 2,
            None => break,
        }
    }
    Err(err("a string is not closed", i))
}

/// 0 when no byte of `word` is `b`; else the lowest set bit is the high bit of the first
/// such byte (little-endian: the first in the text). Bits above it can be false positives
/// (borrows), so only the lowest is used.
fn has_byte(word: u64, b: u8) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let x = word ^ (ONES * u64::from(b));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// Just past the value that starts at `i` (a top-level member's value).
fn value_end(raw: &[u8], i: usize) -> Result<usize, ScanError> {
    match raw.get(i) {
        Some(b'"') => string_end(raw, i),
        Some(b'{' | b'[') => nested_end(raw, i),
        Some(_) => {
            let mut j = i;
            while let Some(&b) = raw.get(j) {
                if b == b',' || b == b'}' || is_ws(b) {
                    break;
                }
                j += 1;
            }
            let token = &raw[i..j];
            let number = matches!(token.first(), Some(b'-' | b'0'..=b'9'))
                && token
                    .iter()
                    .all(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'));
            if number || matches!(token, b"true" | b"false" | b"null") {
                Ok(j)
            } else {
                Err(err("not a JSON value", i))
            }
        }
        None => Err(err("a value is missing", i)),
    }
}

/// Just past the array or object whose opening bracket is at `i`: strings skipped, every
/// bracket matched by its own kind. The closers expected are kept on a stack, inline for
/// the first 64 levels.
fn nested_end(raw: &[u8], i: usize) -> Result<usize, ScanError> {
    let closer = |open: u8| if open == b'{' { b'}' } else { b']' };
    let mut inline = [0u8; 64];
    let mut deeper: Vec<u8> = Vec::new();
    inline[0] = closer(raw[i]);
    let mut depth = 1usize;
    let mut j = i + 1;
    while let Some(&b) = raw.get(j) {
        match b {
            b'"' => {
                j = string_end(raw, j)?;
                continue;
            }
            b'{' | b'[' => {
                if depth < inline.len() {
                    inline[depth] = closer(b);
                } else {
                    deeper.push(closer(b));
                }
                depth += 1;
            }
            b'}' | b']' => {
                depth -= 1;
                let expected = if depth < inline.len() {
                    inline[depth]
                } else {
                    deeper.pop().unwrap_or(0)
                };
                if b != expected {
                    return Err(err("a bracket closes what it did not open", j));
                }
                if depth == 0 {
                    return Ok(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
    Err(err("an array or object is not closed", i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(raw: &str) -> Result<Option<&str>, ScanError> {
        member(raw.as_bytes(), "usage")
            .map(|v| v.map(|v| std::str::from_utf8(v).expect("a slice of a str")))
    }

    #[test]
    fn finds_a_top_level_member_as_written() {
        let answer = r#" {"id":"x","choices":[{"message":{"content":"a \"usage\": {} ]}","usage":1}}],
            "usage" : {"prompt_tokens": 2, "completion_tokens": 3} ,"n":-1.5e3,"b":true,"z":null}
        "#;
        assert_eq!(
            usage(answer),
            Ok(Some(r#"{"prompt_tokens": 2, "completion_tokens": 3}"#))
        );
        assert_eq!(usage(r#"{"id":"x"}"#), Ok(None));
        assert_eq!(usage("{}"), Ok(None));
        assert_eq!(usage(" { } "), Ok(None));
        // Given twice: the last, as a parser building a tree keeps.
        assert_eq!(usage(r#"{"usage":1,"usage":[2]}"#), Ok(Some("[2]")));
        // Escaped names are compared unescaped.
        assert_eq!(usage(r#"{"us\u0061ge":"u"}"#), Ok(Some(r#""u""#)));
        assert_eq!(usage(r#"{"usage\\":"u"}"#), Ok(None));
        // Backslashes in strings: `\\` ends in a real quote, `\"` does not.
        assert_eq!(usage(r#"{"a":"\\","usage":"\"}"}"#), Ok(Some(r#""\"}""#)));
    }

    #[test]
    fn refuses_what_is_not_one_object() {
        for bad in [
            "",
            "   ",
            "<html><body>Welcome to nginx!</body></html>",
            "[1]",
            "\"text\"",
            "42",
            "{",
            "{}}",
            "{} x",
            r#"{"a":1}{"b":2}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":}"#,
            r#"{a:1}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul,"b":1}"#,
            r#"{"a":x1}"#,
            r#"{"a":"b}"#,
            r#"{"a":"b\"}"#,
            r#"{"a":"b\"#,
            r#"{"a":[1,2}"#,
            r#"{"a":{"b":[1]]}"#,
            r#"{"a":[{"b":1}"#,
            r#"{"id":"chatcmpl-1","choices":[{"message":{"content":"trunc"#,
            r#"{"id":"chatcmpl-1","usage":{"prompt_tokens":1"#,
            "{\"a\":1}\u{c}",
        ] {
            assert!(member(bad.as_bytes(), "usage").is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn every_valid_json_object_passes() {
        let deep = format!(
            r#"{{"a":{}1{},"usage":7}}"#,
            "[".repeat(5000),
            "]".repeat(5000)
        );
        assert_eq!(usage(&deep), Ok(Some("7")));
        let mixed = format!(
            r#"{{"a":{}{}{},"usage":7}}"#,
            r#"{"k":["#.repeat(100),
            "0",
            "]}".repeat(100)
        );
        assert_eq!(usage(&mixed), Ok(Some("7")));
        for (text, expected) in [
            (r#"{"usage":{}}"#, Some("{}")),
            (r#"{"usage":[]}"#, Some("[]")),
            (r#"{"usage":null}"#, Some("null")),
            (r#"{"usage":0}"#, Some("0")),
            (r#"{"usage":-0.5E+2}"#, Some("-0.5E+2")),
            (
                "{\r\n\t\"usage\"\t:\n\"\u{e9}\u{1F600}\"\r\n}",
                Some("\"\u{e9}\u{1F600}\""),
            ),
            (r#"{"":1,"usage":false}"#, Some("false")),
            (r#"{"a":"[{","b":"]}","usage":"}"}"#, Some(r#""}""#)),
        ] {
            assert!(
                serde_json::from_str::<serde_json::Value>(text).is_ok(),
                "{text}"
            );
            assert_eq!(usage(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn agrees_with_a_full_parse_on_objects_it_accepts() {
        // Every valid object below parses and has the same `usage` as its tree.
        let texts = [
            r#"{"id":"1","object":"chat.completion","created":1700000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi \\ \" ]"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":160,"total_tokens":174}}"#,
            r#"{"type":"message","content":[{"type":"text","text":"{"}],"usage":{"input_tokens":1,"output_tokens":2}}"#,
            r#"{"output":{"message":{"content":[{"text":"x"}]}},"usage":{"inputTokens":3,"outputTokens":4}}"#,
        ];
        for text in texts {
            let tree: serde_json::Value = serde_json::from_str(text).unwrap();
            let raw = member(text.as_bytes(), "usage").unwrap().unwrap();
            let read: serde_json::Value = serde_json::from_slice(raw).unwrap();
            assert_eq!(read, tree["usage"], "{text}");
        }
    }
}
