//! Golden tests for the Bedrock Converse translation: fixtures under `golden/bedrock/`, one
//! snapshot each. Stream fixtures are `[event type, payload]` pairs (a type starting with
//! `!` is an exception with that payload as its message); they go through the binary
//! event-stream framing, fed one byte at a time, before reaching `StreamToChat`.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a bad fixture should abort the test"
)]

use std::path::{Path, PathBuf};

use plano_egress::providers::UpstreamStream;
use plano_egress::providers::bedrock::{
    ResponseCtx, StreamToChat, request_from_chat, response_to_chat, response_to_chat_with,
};
use plano_egress::providers::eventstream::{Decoder, encode_event, encode_exception};
use serde_json::{Value, json};

fn fixtures(kind: &str) -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/bedrock")
        .join(kind);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no fixtures in {}", dir.display());
    paths
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).unwrap();
            (name, serde_json::from_str(&text).unwrap())
        })
        .collect()
}

fn ctx() -> ResponseCtx {
    ResponseCtx {
        model: "claude-on-bedrock".into(),
        id: "chatcmpl-golden".into(),
        created: 1_700_000_000,
    }
}

fn result_json<T: Into<Value>>(r: Result<T, plano_egress::providers::TranslateError>) -> Value {
    match r {
        Ok(v) => json!({ "ok": v.into() }),
        Err(e) => json!({ "error": { "param": e.param, "message": e.message } }),
    }
}

#[test]
fn requests() {
    for (name, fixture) in fixtures("request") {
        let out = result_json(request_from_chat(fixture.as_object().unwrap()).map(Value::Object));
        assert_eq!(
            name.starts_with("error_"),
            out.get("error").is_some(),
            "{name}: {out}"
        );
        insta::with_settings!({ snapshot_suffix => name.clone(), description => fixture.to_string() }, {
            insta::assert_json_snapshot!("request", out);
        });
    }
}

#[test]
fn responses() {
    for (name, fixture) in fixtures("response") {
        let out = result_json(response_to_chat_with(&fixture, &ctx()));
        assert_eq!(
            name.starts_with("error_"),
            out.get("error").is_some(),
            "{name}: {out}"
        );
        insta::with_settings!({ snapshot_suffix => name.clone(), description => fixture.to_string() }, {
            insta::assert_json_snapshot!("response", out);
        });
    }
}

/// The wire bytes Bedrock would send for a stream fixture.
fn wire(fixture: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    for step in fixture.as_array().unwrap() {
        let name = step[0].as_str().unwrap();
        match name.strip_prefix('!') {
            Some(exception) => out.extend(encode_exception(exception, step[1].as_str().unwrap())),
            None => out.extend(encode_event(name, step[1].to_string().as_bytes())),
        }
    }
    out
}

/// Decode byte by byte and translate: every chunk produced, in order, then how it ended.
fn run_stream(fixture: &Value) -> Value {
    let mut decoder = Decoder::default();
    let mut stream = StreamToChat::with_ctx(ctx());
    let mut chunks = Vec::new();
    for byte in wire(fixture) {
        decoder.push(&[byte]);
        while let Some(event) = decoder.next_event().unwrap() {
            match stream.event(&event) {
                Ok(out) => chunks.extend(out),
                Err(e) => return json!({ "chunks": chunks, "error": e.message }),
            }
        }
    }
    assert_eq!(decoder.finish().unwrap(), None);
    match stream.finish() {
        Ok(out) => {
            chunks.extend(out);
            json!({ "chunks": chunks, "finished": true })
        }
        Err(e) => json!({ "chunks": chunks, "finish_error": e.message }),
    }
}

#[test]
fn streams() {
    for (name, fixture) in fixtures("stream") {
        let out = run_stream(&fixture);
        insta::with_settings!({ snapshot_suffix => name.clone() }, {
            insta::assert_json_snapshot!("stream", out);
        });
    }
}

/// What a chat client rebuilds from the chunks equals the non-streaming translation of the
/// same answer: text, tool calls with their arguments joined per index, finish, usage.
#[test]
fn streamed_tool_calls_reassemble() {
    let (_, fixture) = fixtures("stream")
        .into_iter()
        .find(|(n, _)| n == "tool_calls_interleaved")
        .unwrap();
    let out = run_stream(&fixture);
    let mut content = String::new();
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finishes = Vec::new();
    let mut usage = None;
    for chunk in out["chunks"].as_array().unwrap() {
        if let Some(u) = chunk.get("usage") {
            usage = Some(u.clone());
        }
        for choice in chunk["choices"].as_array().unwrap() {
            let d = &choice["delta"];
            if let Some(t) = d["content"].as_str() {
                content.push_str(t);
            }
            for tc in d["tool_calls"].as_array().into_iter().flatten() {
                let i = tc["index"].as_u64().unwrap() as usize;
                if i == calls.len() {
                    calls.push(Default::default());
                }
                let call = &mut calls[i];
                if let Some(id) = tc["id"].as_str() {
                    call.0 = id.into();
                }
                if let Some(n) = tc["function"]["name"].as_str() {
                    call.1 = n.into();
                }
                call.2
                    .push_str(tc["function"]["arguments"].as_str().unwrap());
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                finishes.push(f.to_string());
            }
        }
    }
    assert_eq!(content, "Checking.");
    assert_eq!(
        calls,
        vec![
            (
                "tooluse_p".into(),
                "get_weather".into(),
                r#"{"city":"Paris"}"#.into()
            ),
            (
                "tooluse_r".into(),
                "get_weather".into(),
                r#"{"city":"Rome"}"#.into()
            ),
        ]
    );
    assert_eq!(finishes, vec!["tool_calls"]);
    let usage = usage.unwrap();
    assert_eq!(usage["prompt_tokens"], 1040);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 1000);
    assert_eq!(usage["total_tokens"], 1070);
}

mod never_panics {
    use super::*;
    use plano_common::sse::SseEvent;
    use proptest::prelude::*;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            prop_oneof![
                Just("user".to_string()),
                Just("assistant".to_string()),
                Just("tool".to_string()),
                Just("function".to_string()),
                Just("data:image/png;base64,AA==".to_string()),
                ".{0,8}",
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("role".to_string()),
                        Just("content".to_string()),
                        Just("type".to_string()),
                        Just("text".to_string()),
                        Just("tool_calls".to_string()),
                        Just("function".to_string()),
                        Just("arguments".to_string()),
                        Just("image_url".to_string()),
                        Just("toolUse".to_string()),
                        Just("delta".to_string()),
                        Just("input".to_string()),
                        Just("usage".to_string()),
                        "[a-zA-Z_]{1,10}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Structurally plausible requests: every field the translator reads, with random values.
    fn arb_request() -> impl Strategy<Value = Value> {
        (
            proptest::collection::vec(arb_json(), 0..5),
            arb_json(),
            arb_json(),
            arb_json(),
            arb_json(),
        )
            .prop_map(|(messages, tools, tool_choice, stop, max_tokens)| {
                json!({
                    "messages": messages, "tools": tools, "tool_choice": tool_choice,
                    "stop": stop, "max_tokens": max_tokens,
                })
            })
    }

    const NAMES: &[&str] = &[
        "messageStart",
        "contentBlockStart",
        "contentBlockDelta",
        "contentBlockStop",
        "messageStop",
        "metadata",
        "exception",
        "throttlingException",
        "other",
    ];

    fn realistic_event() -> impl Strategy<Value = SseEvent> {
        let index = 0u64..3;
        prop_oneof![
            Just(SseEvent::named("messageStart", r#"{"role":"assistant"}"#)),
            index.clone().prop_map(|i| SseEvent::named(
                "contentBlockStart",
                json!({"contentBlockIndex": i, "start": {"toolUse": {"toolUseId": format!("t{i}"), "name": "f"}}}).to_string()
            )),
            (index.clone(), ".{0,4}").prop_map(|(i, t)| SseEvent::named(
                "contentBlockDelta",
                json!({"contentBlockIndex": i, "delta": {"text": t}}).to_string()
            )),
            (index.clone(), ".{0,4}").prop_map(|(i, t)| SseEvent::named(
                "contentBlockDelta",
                json!({"contentBlockIndex": i, "delta": {"toolUse": {"input": t}}}).to_string()
            )),
            (index.clone(), ".{0,4}").prop_map(|(i, t)| SseEvent::named(
                "contentBlockDelta",
                json!({"contentBlockIndex": i, "delta": {"reasoningContent": {"text": t}}}).to_string()
            )),
            index.prop_map(|i| SseEvent::named(
                "contentBlockStop",
                json!({"contentBlockIndex": i}).to_string()
            )),
            Just(SseEvent::named("messageStop", r#"{"stopReason":"end_turn"}"#)),
            any::<u32>().prop_map(|n| SseEvent::named(
                "metadata",
                json!({"usage": {"inputTokens": n, "outputTokens": n, "cacheReadInputTokens": n}}).to_string()
            )),
        ]
    }

    fn arbitrary_event() -> impl Strategy<Value = SseEvent> {
        (
            proptest::option::of(proptest::sample::select(NAMES)),
            arb_json(),
        )
            .prop_map(|(name, payload)| SseEvent {
                event: name.map(str::to_string),
                data: payload.to_string(),
                id: None,
            })
    }

    /// Whatever the events, at most one finish chunk and one usage chunk, usage last.
    fn check_stream(events: &[SseEvent]) -> Result<(), TestCaseError> {
        let mut s = StreamToChat::with_ctx(ctx());
        let mut chunks = Vec::new();
        for e in events {
            match s.event(e) {
                Ok(out) => chunks.extend(out),
                Err(_) => break,
            }
        }
        if let Ok(out) = s.finish() {
            chunks.extend(out);
        }
        let finishes = chunks
            .iter()
            .filter(|c| !c["choices"][0]["finish_reason"].is_null())
            .count();
        let usages: Vec<usize> = chunks
            .iter()
            .enumerate()
            .filter(|(_, c)| c.get("usage").is_some())
            .map(|(i, _)| i)
            .collect();
        prop_assert!(finishes <= 1);
        prop_assert!(usages.len() <= 1);
        if let Some(&i) = usages.first() {
            prop_assert_eq!(i, chunks.len() - 1);
            prop_assert_eq!(finishes, 1);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn request_translation(v in arb_json(), r in arb_request()) {
            if let Some(map) = v.as_object() {
                let _ = request_from_chat(map);
            }
            let _ = request_from_chat(r.as_object().unwrap());
        }

        #[test]
        fn response_translation(v in arb_json(), content in proptest::collection::vec(arb_json(), 0..5), stop in arb_json(), usage in arb_json()) {
            let _ = response_to_chat(&v, "m");
            let shaped = json!({"output": {"message": {"content": content}}, "stopReason": stop, "usage": usage});
            let _ = response_to_chat_with(&shaped, &ctx());
        }

        #[test]
        fn stream_of_arbitrary_events(events in proptest::collection::vec(arbitrary_event(), 0..12)) {
            check_stream(&events)?;
        }

        #[test]
        fn stream_of_realistic_events_in_any_order(events in proptest::collection::vec(realistic_event(), 0..16)) {
            check_stream(&events)?;
        }
    }
}
