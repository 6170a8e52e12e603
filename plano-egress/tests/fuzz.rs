//! Fuzz targets for every parser an attacker (a client or an upstream) controls, as
//! property tests on stable Rust: the SSE decoder, the AWS event-stream decoder, the
//! translators' request parsers (Anthropic Messages → chat, Responses → chat, chat →
//! Anthropic, chat → Bedrock) and the config loader. Inputs are arbitrary bytes/JSON and
//! mutations of the golden fixtures. The properties: no panic, errors are errors (never a
//! hang), and a decoder's output does not depend on how the bytes were split into chunks.
//!
//! `cargo test -p plano-egress --test fuzz` runs a short pass (CI); raise the case count
//! with `PROPTEST_CASES=100000` for a long one (docs/hardening.md).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test loudly"
)]

use std::path::Path;
use std::sync::OnceLock;

use plano_common::sse::SseDecoder;
use plano_egress::providers::{anthropic, bedrock, eventstream, responses};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Cases per target: 256 in `cargo test`, `PROPTEST_CASES` for a long run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

// ------------------------------------------------------------------ seeds

fn golden_dir(sub: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(sub)
}

/// Every JSON object in a golden folder (files holding a list contribute each item).
fn objects(sub: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(golden_dir(sub)) else {
        return out;
    };
    let mut paths: Vec<_> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(items)) => out.extend(items.into_iter().filter(Value::is_object)),
            Ok(v @ Value::Object(_)) => out.push(v),
            _ => {}
        }
    }
    out
}

fn seeds(sub: &'static str, cell: &'static OnceLock<Vec<Value>>) -> &'static [Value] {
    cell.get_or_init(|| {
        let v = objects(sub);
        assert!(!v.is_empty(), "no golden fixtures under tests/golden/{sub}");
        v
    })
}

fn anthropic_seeds() -> &'static [Value] {
    static S: OnceLock<Vec<Value>> = OnceLock::new();
    seeds("anthropic/request_to_chat", &S)
}
fn responses_seeds() -> &'static [Value] {
    static S: OnceLock<Vec<Value>> = OnceLock::new();
    seeds("responses/request", &S)
}
fn chat_seeds() -> &'static [Value] {
    static S: OnceLock<Vec<Value>> = OnceLock::new();
    seeds("anthropic/request_from_chat", &S)
}
fn bedrock_seeds() -> &'static [Value] {
    static S: OnceLock<Vec<Value>> = OnceLock::new();
    seeds("bedrock/request", &S)
}

// ------------------------------------------------------------------ strategies

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        // Words the translators look for, so mutations reach deep branches.
        prop::sample::select(vec![
            "user",
            "assistant",
            "system",
            "developer",
            "tool",
            "text",
            "image",
            "image_url",
            "tool_use",
            "tool_result",
            "function",
            "input_text",
            "message",
            "function_call",
            "function_call_output",
            "json_schema",
            "auto",
            "none",
            "required",
            "ephemeral",
            "",
        ])
        .prop_map(|s| Value::String(s.to_string())),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "role",
            "content",
            "type",
            "text",
            "messages",
            "input",
            "instructions",
            "model",
            "max_tokens",
            "max_output_tokens",
            "max_completion_tokens",
            "tools",
            "tool_choice",
            "name",
            "id",
            "tool_use_id",
            "call_id",
            "arguments",
            "input_schema",
            "parameters",
            "system",
            "stop",
            "stop_sequences",
            "temperature",
            "response_format",
            "source",
            "image_url",
            "url",
            "data",
            "media_type",
            "cache_control",
            "metadata",
            "stream",
            "n",
            "output",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,8}",
    ]
}

/// Replace the value at a random place in `seed` (found by walking `path` choices).
fn mutate(seed: &Value, path: &[usize], with: Value) -> Value {
    let mut out = seed.clone();
    replace_at(&mut out, path, with);
    out
}

fn replace_at(at: &mut Value, path: &[usize], with: Value) {
    let Some((&choice, rest)) = path.split_first() else {
        *at = with;
        return;
    };
    let next = match at {
        Value::Object(m) if !m.is_empty() => {
            let n = m.len();
            m.values_mut().nth(choice % n)
        }
        Value::Array(a) if !a.is_empty() => {
            let n = a.len();
            a.get_mut(choice % n)
        }
        _ => None,
    };
    match next {
        Some(next) => replace_at(next, rest, with),
        None => *at = with,
    }
}

fn mutated(seeds: fn() -> &'static [Value]) -> impl Strategy<Value = Value> {
    (
        any::<prop::sample::Index>(),
        prop::collection::vec(any::<usize>(), 0..6),
        arb_json(),
    )
        .prop_map(move |(i, path, with)| {
            let s = seeds();
            mutate(&s[i.index(s.len())], &path, with)
        })
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => {
            let mut m = Map::new();
            m.insert("messages".into(), other);
            m
        }
    }
}

/// Split `bytes` at the given cut points.
fn split<'a>(bytes: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0;
    for p in points {
        out.push(&bytes[from..p]);
        from = p;
    }
    out.push(&bytes[from..]);
    out
}

// ------------------------------------------------------------------ decoders

/// Everything an SSE decoder yields for `chunks`: events, then the error that stopped it.
fn sse_all(chunks: &[&[u8]]) -> (Vec<plano_common::sse::SseEvent>, Option<String>) {
    let mut d = SseDecoder::new(4096);
    let mut events = Vec::new();
    for c in chunks {
        d.push(c);
        loop {
            match d.next_event() {
                Ok(Some(e)) => events.push(e),
                Ok(None) => break,
                Err(e) => return (events, Some(e.to_string())),
            }
        }
    }
    match d.finish() {
        Ok(Some(e)) => events.push(e),
        Ok(None) => {}
        Err(e) => return (events, Some(e.to_string())),
    }
    (events, None)
}

fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        "data: [^\r\n]{0,30}".prop_map(String::into_bytes),
        "event: [a-z_.]{0,12}".prop_map(String::into_bytes),
        "id: [0-9]{0,4}".prop_map(String::into_bytes),
        "retry: [0-9]{0,4}".prop_map(String::into_bytes),
        ":[^\r\n]{0,10}".prop_map(String::into_bytes),
        "data:[^\r\n]{0,10}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..12),
    ];
    let end = prop::sample::select(vec![&b"\n"[..], b"\r\n", b"\r", b""]);
    prop::collection::vec((line, end), 0..20).prop_map(|lines| {
        let mut out = Vec::new();
        for (l, e) in lines {
            out.extend_from_slice(&l);
            out.extend_from_slice(e);
        }
        out
    })
}

fn eventstream_all(chunks: &[&[u8]]) -> (Vec<plano_common::sse::SseEvent>, Option<String>) {
    let mut d = eventstream::Decoder::new(64 * 1024);
    let mut events = Vec::new();
    for c in chunks {
        d.push(c);
        loop {
            match d.next_event() {
                Ok(Some(e)) => events.push(e),
                Ok(None) => break,
                Err(e) => return (events, Some(e.to_string())),
            }
        }
    }
    match d.finish() {
        Ok(Some(e)) => events.push(e),
        Ok(None) => {}
        Err(e) => return (events, Some(e.to_string())),
    }
    (events, None)
}

/// Valid event-stream frames, some with bytes flipped.
fn eventstream_bytes() -> impl Strategy<Value = Vec<u8>> {
    let frame = prop_oneof![
        ("[a-zA-Z]{1,16}", ".{0,40}")
            .prop_map(|(t, p)| eventstream::encode_event(&t, p.as_bytes())),
        ("[a-zA-Z]{1,16}", ".{0,40}").prop_map(|(t, m)| eventstream::encode_exception(&t, &m)),
        prop::collection::vec(any::<u8>(), 0..40),
    ];
    (
        prop::collection::vec(frame, 0..6),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    )
        .prop_map(|(frames, flips)| {
            let mut out: Vec<u8> = frames.concat();
            if !out.is_empty() {
                for (i, b) in flips {
                    let at = i.index(out.len());
                    out[at] ^= b;
                }
            }
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn sse_decoder_survives_anything_and_ignores_chunking(
        bytes in sse_bytes(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let whole = sse_all(&[&bytes]);
        let chunked = sse_all(&split(&bytes, &cuts));
        prop_assert_eq!(whole, chunked);
    }

    #[test]
    fn sse_decoder_survives_raw_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let _ = sse_all(&split(&bytes, &cuts));
    }

    #[test]
    fn eventstream_decoder_survives_anything_and_ignores_chunking(
        bytes in eventstream_bytes(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let whole = eventstream_all(&[&bytes]);
        let chunked = eventstream_all(&split(&bytes, &cuts));
        prop_assert_eq!(whole, chunked);
    }

    // -------------------------------------------------------------- translators

    #[test]
    fn anthropic_request_parser_never_panics(v in prop_oneof![mutated(anthropic_seeds), arb_json()]) {
        if let Ok(chat) = anthropic::request_to_chat(&object(v)) {
            prop_assert!(serde_json::to_vec(&chat).is_ok());
        }
    }

    #[test]
    fn responses_request_parser_never_panics(v in prop_oneof![mutated(responses_seeds), arb_json()]) {
        if let Ok(chat) = responses::request_to_chat(&object(v)) {
            prop_assert!(serde_json::to_vec(&chat).is_ok());
        }
    }

    #[test]
    fn chat_request_to_anthropic_never_panics(v in prop_oneof![mutated(chat_seeds), arb_json()]) {
        let _ = anthropic::request_from_chat(&object(v));
    }

    #[test]
    fn chat_request_to_bedrock_never_panics(v in prop_oneof![mutated(bedrock_seeds), arb_json()]) {
        let _ = bedrock::request_from_chat(&object(v));
    }
}

// ------------------------------------------------------------------ config loader

fn config_seeds() -> &'static [String] {
    static S: OnceLock<Vec<String>> = OnceLock::new();
    S.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plano-config/tests/fixtures");
        let mut out = Vec::new();
        for sub in ["valid", "invalid"] {
            let Ok(dir) = std::fs::read_dir(root.join(sub)) else {
                continue;
            };
            for e in dir.flatten() {
                if let Ok(t) = std::fs::read_to_string(e.path()) {
                    out.push(t);
                }
            }
        }
        assert!(!out.is_empty(), "no config fixtures");
        out
    })
}

/// A fixture with a few lines replaced, duplicated, deleted or re-indented.
fn mutated_config() -> impl Strategy<Value = String> {
    let edit = (
        any::<prop::sample::Index>(),
        0u8..5,
        prop_oneof![
            "[ a-z_:{}\\[\\],\"'$&*!|>#-]{0,30}",
            prop::sample::select(vec![
                "  connections: {max: 0}",
                "    connections: {header_read_timeout: soon}",
                "  - type: model",
                "listeners: 7",
                "  timeout: -1s",
                "  max_body_bytes: 18446744073709551615",
                "model_providers: [{model: x}]",
                "  port: 99999",
                "  address: ::1",
                "  access_key: $UNSET",
                "&a [*a, *a]",
                "? [a]\n: b",
            ])
            .prop_map(str::to_string),
        ],
    );
    (
        any::<prop::sample::Index>(),
        prop::collection::vec(edit, 1..5),
    )
        .prop_map(|(i, edits)| {
            let seeds = config_seeds();
            let mut lines: Vec<String> = seeds[i.index(seeds.len())]
                .lines()
                .map(str::to_string)
                .collect();
            for (at, op, text) in edits {
                if lines.is_empty() {
                    lines.push(text);
                    continue;
                }
                let at = at.index(lines.len());
                match op {
                    0 => lines[at] = text,
                    1 => lines.insert(at, text),
                    2 => {
                        lines.remove(at);
                    }
                    3 => {
                        let l = lines[at].clone();
                        lines.insert(at, l);
                    }
                    _ => lines[at] = format!("  {}", lines[at]),
                }
            }
            lines.join("\n")
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn config_loader_never_panics(text in prop_oneof![mutated_config(), ".{0,200}"]) {
        let env = |k: &str| (k == "SET").then(|| "value".to_string());
        let _ = plano_config::load_str(&text, None, &env);
    }
}
