//! The two Anthropic stream state machines: unit tests for the cases a client notices
//! (usage placement, tool calls, exactly one close, failures), and property tests that
//! check the output is a well-formed stream for any valid-looking input and never panics on
//! arbitrary input. Also: the four whole-body translators never panic on arbitrary JSON,
//! and a Messages conversation survives Messages → chat → Messages.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a failed check should abort the test"
)]

use std::collections::BTreeMap;

use plano_common::sse::{SseDecoder, SseEvent};
use plano_egress::providers::anthropic::{
    ResponseCtx, StreamFromChat, StreamToChat, request_from_chat, request_to_chat,
    response_from_chat, response_to_chat,
};
use plano_egress::providers::{ClientStream, UpstreamStream};
use proptest::prelude::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// Checkers

/// What a Messages client would assemble from a stream, after checking the stream obeys
/// the protocol: `message_start` first, blocks numbered from 0 and opened one at a time,
/// deltas only to the open block and of its kind, no open block at `message_delta`, and
/// exactly one close (`message_stop` after `message_delta`, or an `error`), nothing after.
#[derive(Debug, Default)]
struct Assembled {
    /// (block type, text / thinking / tool input JSON, tool id, tool name)
    blocks: Vec<(String, String, String, String)>,
    stop_reason: Option<String>,
    usage: Value,
    error: Option<Value>,
}

fn assemble(events: &[SseEvent]) -> Assembled {
    let mut a = Assembled::default();
    let mut open: Option<usize> = None;
    let mut started = false;
    let mut closed = false;
    for ev in events {
        assert!(!closed, "event after the close: {ev:?}");
        let data: Value = serde_json::from_str(&ev.data).unwrap();
        let kind = data["type"].as_str().unwrap();
        assert_eq!(
            ev.event.as_deref(),
            Some(kind),
            "event name differs from type"
        );
        if kind == "error" {
            assert!(data["error"]["type"].is_string() && data["error"]["message"].is_string());
            a.error = Some(data);
            closed = true;
            continue;
        }
        if kind == "message_start" {
            assert!(!started, "two message_start");
            started = true;
            let m = &data["message"];
            assert!(m["id"].as_str().unwrap().starts_with("msg_"));
            assert_eq!(m["type"], "message");
            assert_eq!(m["role"], "assistant");
            assert!(m["content"].as_array().unwrap().is_empty());
            assert!(m["usage"]["input_tokens"].is_u64() && m["usage"]["output_tokens"].is_u64());
            continue;
        }
        assert!(started, "{kind} before message_start");
        let index = data["index"].as_u64().map(|i| i as usize);
        match kind {
            "content_block_start" => {
                assert_eq!(open, None, "a block opened while another is open");
                assert_eq!(
                    index,
                    Some(a.blocks.len()),
                    "block indexes must count from 0"
                );
                let b = &data["content_block"];
                let t = b["type"].as_str().unwrap().to_owned();
                match t.as_str() {
                    "text" => assert_eq!(b["text"], ""),
                    "thinking" => assert!(b["signature"].is_string()),
                    "tool_use" => {
                        assert!(b["input"].is_object());
                        assert!(b["name"].is_string());
                    }
                    other => panic!("unexpected block {other}"),
                }
                let id = b["id"].as_str().unwrap_or_default().to_owned();
                let name = b["name"].as_str().unwrap_or_default().to_owned();
                a.blocks.push((t, String::new(), id, name));
                open = index;
            }
            "content_block_delta" => {
                assert_eq!(index, open, "delta to a block that is not open");
                let block = a.blocks.last_mut().unwrap();
                let d = &data["delta"];
                let (want, key) = match block.0.as_str() {
                    "text" => ("text_delta", "text"),
                    "thinking" => ("thinking_delta", "thinking"),
                    _ => ("input_json_delta", "partial_json"),
                };
                assert_eq!(d["type"], want);
                block.1.push_str(d[key].as_str().unwrap());
            }
            "content_block_stop" => {
                assert_eq!(index, open, "stop of a block that is not open");
                open = None;
            }
            "message_delta" => {
                assert_eq!(open, None, "message_delta with a block still open");
                assert!(a.stop_reason.is_none(), "two message_delta");
                a.stop_reason = Some(data["delta"]["stop_reason"].as_str().unwrap().to_owned());
                assert!(data["usage"]["output_tokens"].is_u64());
                a.usage = data["usage"].clone();
            }
            "message_stop" => {
                assert!(
                    a.stop_reason.is_some(),
                    "message_stop without message_delta"
                );
                closed = true;
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert!(closed, "the stream was not closed");
    a
}

/// What a chat client would assemble from chunks, after checking them: the first carries
/// `role: assistant`, tool indexes count from 0, exactly one `finish_reason`, and the usage
/// chunk (empty `choices`) comes last.
#[derive(Debug, Default)]
struct ChatAssembled {
    content: String,
    reasoning: String,
    /// Per tool index: (id, name, arguments).
    tools: BTreeMap<u64, (String, String, String)>,
    finish: Option<String>,
    usage: Option<Value>,
}

fn assemble_chat(chunks: &[Value]) -> ChatAssembled {
    let mut a = ChatAssembled::default();
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert!(c["id"].is_string() && c["created"].is_u64() && c["model"].is_string());
        assert!(a.usage.is_none(), "chunk after the usage chunk");
        let choices = c["choices"].as_array().unwrap();
        if choices.is_empty() {
            assert!(a.finish.is_some(), "usage before finish_reason");
            let u = &c["usage"];
            assert_eq!(
                u["total_tokens"].as_u64().unwrap(),
                u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
            );
            a.usage = Some(u.clone());
            continue;
        }
        let choice = &choices[0];
        assert_eq!(choice["index"], 0);
        let d = &choice["delta"];
        if i == 0 {
            assert_eq!(d["role"], "assistant");
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            assert!(a.finish.is_none(), "two finish_reason chunks");
            a.finish = Some(f.to_owned());
        } else {
            assert!(a.finish.is_none(), "content after finish_reason");
        }
        a.content
            .push_str(d["content"].as_str().unwrap_or_default());
        a.reasoning
            .push_str(d["reasoning_content"].as_str().unwrap_or_default());
        for t in d["tool_calls"].as_array().into_iter().flatten() {
            let idx = t["index"].as_u64().unwrap();
            let next = a.tools.len() as u64;
            if t["id"].is_string() {
                assert_eq!(idx, next, "a new tool call must take the next index");
                assert_eq!(t["type"], "function");
                a.tools.insert(
                    idx,
                    (
                        t["id"].as_str().unwrap().to_owned(),
                        t["function"]["name"].as_str().unwrap().to_owned(),
                        String::new(),
                    ),
                );
            }
            let entry = a
                .tools
                .get_mut(&idx)
                .expect("arguments for an unknown tool");
            entry
                .2
                .push_str(t["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    a
}

fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

fn usage_chunk(prompt: u64, cached: u64, completion: u64) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
           "total_tokens": prompt + completion, "prompt_tokens_details": {"cached_tokens": cached}}})
}

fn ctx() -> ResponseCtx {
    ResponseCtx {
        model: "claude-test".into(),
        stop_sequences: Vec::new(),
    }
}

fn names(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_deref().unwrap()).collect()
}

// ---------------------------------------------------------------------------------------
// StreamFromChat (chat chunks → Messages events)

#[test]
fn message_delta_waits_for_the_usage_chunk() {
    let mut s = StreamFromChat::new(ctx());
    let mut all = s.chunk(&chunk(json!({"role": "assistant", "content": "Hi"}), None));
    let at_finish = s.chunk(&chunk(json!({}), Some("stop")));
    assert_eq!(names(&at_finish), ["content_block_stop"]);
    all.extend(at_finish);
    let at_usage = s.chunk(&usage_chunk(100, 60, 7));
    assert_eq!(names(&at_usage), ["message_delta", "message_stop"]);
    all.extend(at_usage);
    assert!(s.finish().is_empty());
    let a = assemble(&all);
    assert_eq!(a.stop_reason.as_deref(), Some("end_turn"));
    assert_eq!(
        a.usage,
        json!({"input_tokens": 40, "cache_read_input_tokens": 60,
               "cache_creation_input_tokens": 0, "output_tokens": 7})
    );
}

#[test]
fn usage_on_the_finish_chunk_closes_at_once() {
    let mut s = StreamFromChat::new(ctx());
    let mut all = s.chunk(&chunk(json!({"content": "Hi"}), None));
    let mut last = chunk(json!({}), Some("length"));
    last["usage"] = usage_chunk(5, 0, 2)["usage"].clone();
    let out = s.chunk(&last);
    assert_eq!(
        names(&out),
        ["content_block_stop", "message_delta", "message_stop"]
    );
    all.extend(out);
    assert!(
        s.chunk(&usage_chunk(9, 0, 9)).is_empty(),
        "nothing after the close"
    );
    let a = assemble(&all);
    assert_eq!(a.stop_reason.as_deref(), Some("max_tokens"));
    assert_eq!(a.usage["output_tokens"], 2);
}

#[test]
fn usage_before_finish_is_kept_until_the_end() {
    let mut s = StreamFromChat::new(ctx());
    let mut early = chunk(json!({"content": "Hi"}), None);
    early["usage"] = usage_chunk(5, 0, 1)["usage"].clone();
    let mut all = s.chunk(&early);
    let out = s.chunk(&chunk(json!({}), Some("stop")));
    assert!(
        !names(&out).contains(&"message_delta"),
        "waits: more usage may come"
    );
    all.extend(out);
    all.extend(s.finish());
    assert_eq!(assemble(&all).usage["input_tokens"], 5);
}

#[test]
fn no_usage_at_all_still_closes_with_zero_output() {
    let mut s = StreamFromChat::new(ctx());
    let mut all = s.chunk(&chunk(json!({"content": "Hi"}), None));
    all.extend(s.chunk(&chunk(json!({}), Some("stop"))));
    all.extend(s.finish());
    let a = assemble(&all);
    assert_eq!(a.usage, json!({"output_tokens": 0}));
    assert_eq!(a.blocks.len(), 1);
}

#[test]
fn fail_after_partial_output_is_the_only_close() {
    let mut s = StreamFromChat::new(ctx());
    let mut all = s.chunk(&chunk(json!({"content": "Part"}), None));
    let err = s.fail("upstream_error", "the upstream stream broke off");
    assert_eq!(names(&err), ["error"]);
    all.extend(err);
    assert!(s.finish().is_empty());
    assert!(s.fail("timeout", "again").is_empty());
    assert!(s.chunk(&chunk(json!({"content": "late"}), None)).is_empty());
    let a = assemble(&all);
    assert_eq!(a.error.unwrap()["error"]["type"], "api_error");
}

#[test]
fn finish_then_fail_does_not_add_an_error() {
    let mut s = StreamFromChat::new(ctx());
    let mut all = s.chunk(&chunk(json!({"content": "Hi"}), Some("stop")));
    all.extend(s.finish());
    assert!(s.fail("timeout", "late").is_empty());
    assert!(assemble(&all).error.is_none());
}

#[test]
fn tool_arguments_split_across_chunks_reassemble() {
    let mut s = StreamFromChat::new(ctx());
    let args = r#"{"path": "src/main.rs", "lines": [1, 2, 3]}"#;
    let mut all = s.chunk(&chunk(
        json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
               "function": {"name": "read", "arguments": ""}}]}),
        None,
    ));
    for piece in args.as_bytes().chunks(3) {
        let piece = std::str::from_utf8(piece).unwrap();
        all.extend(s.chunk(&chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
            None,
        )));
    }
    all.extend(s.chunk(&chunk(json!({}), Some("tool_calls"))));
    all.extend(s.finish());
    let a = assemble(&all);
    assert_eq!(a.blocks.len(), 1);
    let (kind, input, id, name) = &a.blocks[0];
    assert_eq!(
        (kind.as_str(), id.as_str(), name.as_str()),
        ("tool_use", "call_1", "read")
    );
    assert_eq!(input, args);
    assert_eq!(a.stop_reason.as_deref(), Some("tool_use"));
}

#[test]
fn several_tool_calls_in_one_chunk_each_get_a_block() {
    let mut s = StreamFromChat::new(ctx());
    let calls: Vec<Value> = (0..3)
        .map(|i| json!({"index": i, "id": format!("call_{i}"), "type": "function",
                         "function": {"name": format!("f{i}"), "arguments": format!("{{\"n\":{i}}}")}}))
        .collect();
    let mut all = s.chunk(&chunk(json!({"tool_calls": calls}), Some("tool_calls")));
    all.extend(s.finish());
    let a = assemble(&all);
    let got: Vec<_> = a
        .blocks
        .iter()
        .map(|b| (b.2.clone(), b.1.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("call_0".to_owned(), r#"{"n":0}"#.to_owned()),
            ("call_1".to_owned(), r#"{"n":1}"#.to_owned()),
            ("call_2".to_owned(), r#"{"n":2}"#.to_owned()),
        ]
    );
}

#[test]
fn calls_all_numbered_zero_are_told_apart_by_id() {
    let mut s = StreamFromChat::new(ctx());
    let mut all = Vec::new();
    for (id, name, frags) in [
        ("call_a", "f", ["{\"x\"", ":1}"]),
        ("call_b", "g", ["{\"y\"", ":2}"]),
    ] {
        all.extend(s.chunk(&chunk(
            json!({"tool_calls": [{"index": 0, "id": id, "type": "function",
                                   "function": {"name": name, "arguments": frags[0]}}]}),
            None,
        )));
        all.extend(s.chunk(&chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": frags[1]}}]}),
            None,
        )));
    }
    all.extend(s.chunk(&chunk(json!({}), Some("tool_calls"))));
    all.extend(s.finish());
    let a = assemble(&all);
    let got: Vec<_> = a
        .blocks
        .iter()
        .map(|b| (b.2.as_str(), b.3.as_str(), b.1.as_str()))
        .collect();
    assert_eq!(
        got,
        [("call_a", "f", r#"{"x":1}"#), ("call_b", "g", r#"{"y":2}"#)]
    );
}

#[test]
fn a_tool_call_named_late_is_still_emitted_whole() {
    let mut s = StreamFromChat::new(ctx());
    let mut all = s.chunk(&chunk(
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\""}}]}),
        None,
    ));
    all.extend(s.chunk(&chunk(
        json!({"tool_calls": [{"index": 0, "id": "call_x", "function": {"name": "late", "arguments": ":1}"}}]}),
        None,
    )));
    all.extend(s.finish());
    let a = assemble(&all);
    assert_eq!(a.blocks[0].1, r#"{"a":1}"#);
    assert_eq!(a.blocks[0].3, "late");
    assert_eq!(a.blocks[0].2, "call_x");
}

#[test]
fn chunks_that_are_not_chat_chunks_are_ignored() {
    let mut s = StreamFromChat::new(ctx());
    let mut all = Vec::new();
    for junk in [
        json!(null),
        json!([1, 2]),
        json!({"choices": "x"}),
        json!({"choices": [{"delta": 5}]}),
    ] {
        all.extend(s.chunk(&junk));
    }
    all.extend(s.finish());
    let a = assemble(&all);
    assert!(a.blocks.is_empty());
}

#[test]
fn the_model_alone_is_enough_context() {
    let mut s = StreamFromChat::new("claude-x");
    let mut all = s.chunk(&chunk(json!({"content": "one"}), Some("stop")));
    all.extend(s.finish());
    assemble(&all);
    let start: Value = serde_json::from_str(&all[0].data).unwrap();
    assert_eq!(start["message"]["model"], "claude-x");
    let whole = json!({"id": "chatcmpl-1", "choices": [{"index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": "one"}, "stop_reason": "END"}]});
    let m = response_from_chat(&whole, "claude-x").unwrap();
    assert_eq!(
        (m["model"].as_str(), m["stop_reason"].as_str()),
        (Some("claude-x"), Some("end_turn"))
    );
    // With the request's stop sequences, the one the provider names is reported.
    let req = json!({"model": "claude-x", "stop_sequences": ["END"]});
    let m =
        response_from_chat(&whole, ResponseCtx::from_request(req.as_object().unwrap())).unwrap();
    assert_eq!(
        (m["stop_reason"].as_str(), m["stop_sequence"].as_str()),
        (Some("stop_sequence"), Some("END"))
    );
}

// ---------------------------------------------------------------------------------------
// StreamToChat (Messages events → chat chunks)

fn anthropic_events() -> Vec<Value> {
    vec![
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
               "model": "claude", "content": [], "stop_reason": null, "stop_sequence": null,
               "usage": {"input_tokens": 10, "cache_read_input_tokens": 90, "cache_creation_input_tokens": 0, "output_tokens": 1}}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hé, "}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ça va"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"x\": "}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "[1, 2]}"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 12}}),
        json!({"type": "message_stop"}),
    ]
}

fn wire(events: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        out.extend_from_slice(
            &SseEvent::named(e["type"].as_str().unwrap(), e.to_string()).encode(),
        );
    }
    out
}

/// Decodes `bytes` fed in the given pieces and runs the events through a `StreamToChat`.
fn through_decoder(pieces: &[&[u8]]) -> Result<Vec<Value>, String> {
    let mut d = SseDecoder::default();
    let mut s = StreamToChat::new("claude");
    let mut out = Vec::new();
    for p in pieces {
        d.push(p);
        while let Some(ev) = d.next_event().unwrap() {
            out.extend(s.event(&ev).map_err(|e| e.message)?);
        }
    }
    if let Some(ev) = d.finish().unwrap() {
        out.extend(s.event(&ev).map_err(|e| e.message)?);
    }
    out.extend(s.finish().map_err(|e| e.message)?);
    for c in &mut out {
        c["created"] = json!(0);
    }
    Ok(out)
}

#[test]
fn events_split_anywhere_give_the_same_chunks() {
    let bytes = wire(&anthropic_events());
    let whole = through_decoder(&[&bytes]).unwrap();
    let a = assemble_chat(&whole);
    assert_eq!(a.content, "Hé, ça va");
    assert_eq!(
        a.tools[&0],
        ("toolu_1".into(), "f".into(), r#"{"x": [1, 2]}"#.into())
    );
    assert_eq!(a.finish.as_deref(), Some("tool_calls"));
    assert_eq!(a.usage.unwrap()["prompt_tokens"], 100);
    // Every split point, including inside the multi-byte characters.
    for at in 1..bytes.len() {
        let (x, y) = bytes.split_at(at);
        assert_eq!(through_decoder(&[x, y]).unwrap(), whole, "split at {at}");
    }
}

#[test]
fn multi_line_data_is_one_event() {
    let pretty = serde_json::to_string_pretty(&json!({"type": "message_stop"})).unwrap();
    let mut events = anthropic_events();
    events.pop();
    let mut bytes = wire(&events);
    bytes.extend_from_slice(&SseEvent::named("message_stop", pretty).encode());
    let chunks = through_decoder(&[&bytes]).unwrap();
    assert!(assemble_chat(&chunks).usage.is_some());
}

#[test]
fn an_upstream_that_stops_before_message_stop_is_an_error() {
    let mut events = anthropic_events();
    events.truncate(8);
    let err = through_decoder(&[&wire(&events)]).unwrap_err();
    assert!(err.contains("before message_stop"), "{err}");
}

#[test]
fn an_error_event_is_an_error() {
    let mut events = anthropic_events();
    events.insert(
        4,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    );
    let err = through_decoder(&[&wire(&events)]).unwrap_err();
    assert!(
        err.contains("overloaded_error") && err.contains("Overloaded"),
        "{err}"
    );
}

#[test]
fn data_that_is_not_json_is_an_error() {
    let mut s = StreamToChat::new("claude");
    assert!(
        s.event(&SseEvent::named("message_start", "{not json"))
            .is_err()
    );
}

#[test]
fn events_after_message_stop_are_ignored() {
    let mut s = StreamToChat::new("claude");
    for e in anthropic_events() {
        s.event(&SseEvent::named(e["type"].as_str().unwrap(), e.to_string()))
            .unwrap();
    }
    let late = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}});
    assert!(
        s.event(&SseEvent::data(late.to_string()))
            .unwrap()
            .is_empty()
    );
    assert!(s.finish().unwrap().is_empty());
}

#[test]
fn tool_indexes_count_tool_blocks_only() {
    let mut s = StreamToChat::new("claude");
    let mut out = Vec::new();
    let mut feed = |e: Value| out.extend(s.event(&SseEvent::data(e.to_string())).unwrap());
    feed(
        json!({"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 1, "output_tokens": 0}}}),
    );
    for (i, block) in [
        json!({"type": "thinking", "thinking": "", "signature": ""}),
        json!({"type": "text", "text": "a"}),
        json!({"type": "tool_use", "id": "t1", "name": "f", "input": {}}),
        json!({"type": "text", "text": "b"}),
        json!({"type": "tool_use", "id": "t2", "name": "g", "input": {}}),
    ]
    .into_iter()
    .enumerate()
    {
        feed(json!({"type": "content_block_start", "index": i, "content_block": block}));
        feed(json!({"type": "content_block_stop", "index": i}));
    }
    feed(
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}}),
    );
    feed(json!({"type": "message_stop"}));
    let a = assemble_chat(&out);
    assert_eq!(a.content, "ab");
    assert_eq!(
        a.tools.values().cloned().collect::<Vec<_>>(),
        [
            ("t1".to_owned(), "f".to_owned(), "{}".to_owned()),
            ("t2".to_owned(), "g".to_owned(), "{}".to_owned())
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Properties

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z_]{0,8}".prop_map(Value::from),
        prop::sample::select(vec![
            "text",
            "image",
            "tool_use",
            "tool_result",
            "user",
            "assistant",
            "tool",
            "system",
            "function",
            "base64",
            "url",
            "stop",
            "tool_calls",
            "message_start",
            "content_block_start",
            "content_block_delta",
            "message_delta",
            "message_stop",
            "input_json_delta",
            "text_delta",
            "data:image/png;base64,AA",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop::sample::select(vec![
            "type",
            "role",
            "content",
            "text",
            "messages",
            "tools",
            "tool_choice",
            "index",
            "id",
            "name",
            "input",
            "arguments",
            "function",
            "tool_calls",
            "delta",
            "choices",
            "finish_reason",
            "usage",
            "source",
            "system",
            "stop",
            "max_tokens",
            "message",
            "content_block",
            "partial_json",
            "image_url",
            "url",
            "tool_use_id",
            "parameters",
            "input_schema",
            "prompt_tokens",
            "output_tokens",
            "stop_reason",
            "error",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..6).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

/// One piece of a chat stream: text, reasoning, or a fragment of tool call `k`.
#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Reasoning(String),
    Tool(usize, String),
}

/// Valid-looking chat streams: text and reasoning pieces and up to three tool calls whose
/// argument fragments are interleaved in any order, plus where the usage goes.
fn arb_chat_stream() -> impl Strategy<Value = (Vec<Piece>, Vec<String>, u8, bool)> {
    let args = prop::collection::vec(
        (any::<u16>(), "[a-zé\" ]{0,6}").prop_map(|(n, s)| json!({"n": n, "s": s}).to_string()),
        0..4,
    );
    let texts = prop::collection::vec(
        prop_oneof![
            "[a-z ]{1,5}".prop_map(Piece::Text),
            "[a-z]{1,5}".prop_map(Piece::Reasoning)
        ],
        0..6,
    );
    (
        args,
        texts,
        prop::collection::vec(any::<u8>(), 64),
        any::<u8>(),
        any::<bool>(),
    )
        .prop_map(|(args, texts, choices, usage_at, fail)| {
            // Split each tool's arguments into fragments, then interleave all sequences.
            let mut seqs: Vec<Vec<Piece>> = args
                .iter()
                .enumerate()
                .map(|(k, a)| {
                    let chars: Vec<char> = a.chars().collect();
                    let mut frags: Vec<Piece> = chars
                        .chunks(4)
                        .map(|c| Piece::Tool(k, c.iter().collect()))
                        .collect();
                    if frags.is_empty() {
                        frags.push(Piece::Tool(k, String::new()));
                    }
                    frags
                })
                .collect();
            seqs.push(texts);
            let mut pieces = Vec::new();
            let mut pick = choices.into_iter().cycle();
            while seqs.iter().any(|s| !s.is_empty()) {
                let live: Vec<usize> = (0..seqs.len()).filter(|&i| !seqs[i].is_empty()).collect();
                let i = live[pick.next().unwrap() as usize % live.len()];
                pieces.push(seqs[i].remove(0));
            }
            (pieces, args, usage_at, fail)
        })
}

fn chat_chunks(pieces: &[Piece], has_tools: bool, usage_at: u8) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<Value> = pieces
        .iter()
        .map(|p| match p {
            Piece::Text(t) => chunk(json!({"content": t}), None),
            Piece::Reasoning(t) => chunk(json!({"reasoning_content": t}), None),
            Piece::Tool(k, frag) => {
                let mut call = json!({"index": k, "function": {"arguments": frag}});
                if seen.insert(*k) {
                    call["id"] = json!(format!("call_{k}"));
                    call["type"] = json!("function");
                    call["function"]["name"] = json!(format!("f{k}"));
                }
                chunk(json!({"tool_calls": [call]}), None)
            }
        })
        .collect();
    let finish = if has_tools { "tool_calls" } else { "stop" };
    let mut last = chunk(json!({}), Some(finish));
    let usage = usage_chunk(50, 20, 9);
    match usage_at % 3 {
        0 => out.extend([last, usage]),
        1 => {
            last["usage"] = usage["usage"].clone();
            out.push(last);
        }
        _ => out.push(last),
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn stream_from_chat_is_well_formed_and_keeps_everything(
        (pieces, args, usage_at, fail) in arb_chat_stream()
    ) {
        let mut s = StreamFromChat::new(ctx());
        let mut events = Vec::new();
        let chunks = chat_chunks(&pieces, !args.is_empty(), usage_at);
        let cut = if fail { chunks.len() / 2 } else { chunks.len() };
        for c in &chunks[..cut] {
            events.extend(s.chunk(c));
        }
        events.extend(if fail { s.fail("upstream_error", "cut") } else { s.finish() });
        prop_assert!(s.finish().is_empty() && s.fail("x", "y").is_empty());
        let a = assemble(&events);
        if fail {
            prop_assert!(a.error.is_some());
            return Ok(());
        }
        let text: String = pieces.iter().filter_map(|p| match p { Piece::Text(t) => Some(t.as_str()), _ => None }).collect();
        let reasoning: String = pieces.iter().filter_map(|p| match p { Piece::Reasoning(t) => Some(t.as_str()), _ => None }).collect();
        let got = |kind: &str| a.blocks.iter().filter(|b| b.0 == kind).map(|b| b.1.as_str()).collect::<String>();
        prop_assert_eq!(got("text"), text);
        prop_assert_eq!(got("thinking"), reasoning);
        let tools: Vec<_> = a.blocks.iter().filter(|b| b.0 == "tool_use").collect();
        prop_assert_eq!(tools.len(), args.len());
        for (k, expected) in args.iter().enumerate() {
            let block = tools.iter().find(|b| b.2 == format!("call_{k}")).unwrap();
            prop_assert_eq!(&block.3, &format!("f{k}"));
            prop_assert_eq!(&block.1, expected);
        }
        let want_stop = if args.is_empty() { "end_turn" } else { "tool_use" };
        prop_assert_eq!(a.stop_reason.as_deref(), Some(want_stop));
        if usage_at % 3 != 2 {
            prop_assert_eq!(&a.usage["output_tokens"], &json!(9));
            prop_assert_eq!(&a.usage["input_tokens"], &json!(30));
        }
    }

    #[test]
    fn stream_from_chat_survives_arbitrary_chunks(
        chunks in prop::collection::vec(arb_json(), 0..8),
        end in 0u8..3,
    ) {
        let mut s = StreamFromChat::new(ctx());
        let mut events = Vec::new();
        for c in &chunks {
            events.extend(s.chunk(c));
        }
        events.extend(match end {
            0 => s.finish(),
            1 => s.fail("timeout", "t"),
            _ => { let mut e = s.finish(); e.extend(s.fail("x", "y")); e }
        });
        assemble(&events);
    }

    #[test]
    fn stream_to_chat_is_well_formed(
        blocks in prop::collection::vec(
            (0u8..3, prop::collection::vec("[a-zé{}\":, ]{0,5}", 0..4)), 0..5),
        splits in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        ping in any::<bool>(),
    ) {
        let mut events = vec![json!({"type": "message_start", "message": {"id": "msg_p",
            "usage": {"input_tokens": 3, "cache_read_input_tokens": 4, "output_tokens": 1}}})];
        let mut text = String::new();
        let mut tools = Vec::new();
        for (i, (kind, frags)) in blocks.iter().enumerate() {
            let (block, delta_kind, key) = match kind {
                0 => (json!({"type": "text", "text": ""}), "text_delta", "text"),
                1 => (json!({"type": "thinking", "thinking": "", "signature": ""}), "thinking_delta", "thinking"),
                _ => (json!({"type": "tool_use", "id": format!("t{i}"), "name": "f", "input": {}}), "input_json_delta", "partial_json"),
            };
            events.push(json!({"type": "content_block_start", "index": i, "content_block": block}));
            if ping { events.push(json!({"type": "ping"})); }
            for f in frags {
                events.push(json!({"type": "content_block_delta", "index": i, "delta": {"type": delta_kind, key: f}}));
            }
            events.push(json!({"type": "content_block_stop", "index": i}));
            let joined: String = frags.concat();
            match kind {
                0 => text.push_str(&joined),
                2 => tools.push((format!("t{i}"), if joined.is_empty() { "{}".to_owned() } else { joined })),
                _ => {}
            }
        }
        events.push(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}));
        events.push(json!({"type": "message_stop"}));
        let bytes = wire(&events);
        let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut from = 0;
        for c in cuts { pieces.push(&bytes[from..c]); from = c; }
        pieces.push(&bytes[from..]);
        let chunks = through_decoder(&pieces).unwrap();
        prop_assert_eq!(&chunks, &through_decoder(&[&bytes]).unwrap());
        let a = assemble_chat(&chunks);
        prop_assert_eq!(a.content, text);
        let got: Vec<_> = a.tools.values().map(|t| (t.0.clone(), t.2.clone())).collect();
        prop_assert_eq!(got, tools);
        prop_assert_eq!(a.finish.as_deref(), Some("stop"));
        let usage = a.usage.unwrap();
        prop_assert_eq!(&usage["prompt_tokens"], &json!(7));
        prop_assert_eq!(&usage["completion_tokens"], &json!(5));
    }

    #[test]
    fn stream_to_chat_survives_arbitrary_events(
        events in prop::collection::vec((prop::option::of("[a-z_]{0,12}"), arb_json()), 0..10),
    ) {
        let mut s = StreamToChat::new("m");
        for (name, data) in &events {
            let ev = SseEvent { event: name.clone(), data: data.to_string(), id: None };
            if s.event(&ev).is_err() {
                break;
            }
        }
        let _ = s.finish();
    }

    #[test]
    fn translators_survive_arbitrary_json(v in arb_json(), wrapped in arb_json()) {
        // Arbitrary values, and arbitrary values where a translator looks first.
        let mut req = serde_json::Map::new();
        req.insert("messages".into(), wrapped.clone());
        req.insert("tools".into(), v.clone());
        for input in [v.as_object().cloned().unwrap_or_default(), req] {
            let _ = request_to_chat(&input);
            let _ = request_from_chat(&input);
        }
        let ctx = ResponseCtx::from_request(v.as_object().unwrap_or(&serde_json::Map::new()));
        let _ = response_from_chat(&v, &ctx);
        let _ = response_from_chat(&json!({"choices": [wrapped.clone()]}), &ctx);
        let _ = response_to_chat(&v);
        let _ = response_to_chat(&json!({"type": "message", "content": wrapped, "usage": v}));
    }

    #[test]
    fn a_conversation_survives_messages_to_chat_and_back(
        turns in prop::collection::vec(("[a-z ]{1,8}", 0usize..3), 1..6),
        system in prop::option::of("[a-z]{1,8}"),
    ) {
        // Alternating user/assistant turns; an assistant turn may call tools, answered by
        // tool results at the start of the next user turn.
        let mut messages = Vec::new();
        let mut pending_results = Vec::new();
        for (i, (text, calls)) in turns.iter().enumerate() {
            if i % 2 == 0 {
                let mut content: Vec<Value> = std::mem::take(&mut pending_results);
                content.push(json!({"type": "text", "text": text}));
                messages.push(json!({"role": "user", "content": content}));
            } else {
                let mut content = vec![json!({"type": "text", "text": text})];
                for c in 0..*calls {
                    let id = format!("toolu_{i}_{c}");
                    content.push(json!({"type": "tool_use", "id": id, "name": "f", "input": {"n": c}}));
                    pending_results.push(json!({"type": "tool_result", "tool_use_id": id, "content": format!("r{c}")}));
                }
                messages.push(json!({"role": "assistant", "content": content}));
            }
        }
        let mut req = json!({"model": "m", "max_tokens": 100, "messages": messages,
            "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]});
        if let Some(s) = &system {
            req["system"] = json!(s);
        }
        let chat = request_to_chat(req.as_object().unwrap()).unwrap();
        let back = Value::Object(request_from_chat(&chat).unwrap());
        prop_assert_eq!(&back["messages"], &req["messages"]);
        prop_assert_eq!(&back["system"], &req["system"]);
        prop_assert_eq!(&back["max_tokens"], &req["max_tokens"]);
        prop_assert_eq!(&back["tools"][0]["name"], &json!("f"));
    }
}
