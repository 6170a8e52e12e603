//! Golden tests for the OpenAI Responses ⇄ chat translation: fixtures under
//! `tests/golden/responses/{request,response,stream}`, snapshots under `tests/snapshots`.
//! Accept new snapshots with `INSTA_UPDATE=always cargo test -p plano-egress --test golden_responses`.
//!
//! Streams are also checked against the rules the SDK's accumulator relies on (see
//! `check_stream`), so a snapshot cannot be accepted with a broken event order.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a bad fixture should abort the test"
)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use plano_egress::providers::ClientStream;
use plano_egress::providers::responses::{
    ResponseCtx, StreamFromChat, conversation_items, output_items, request_to_chat,
    response_from_chat,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn fixtures(kind: &str) -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/responses")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (stem, v)
        })
        .collect()
}

fn obj(v: &Value) -> &Map<String, Value> {
    v.as_object().unwrap()
}

fn ctx(req: &Value) -> ResponseCtx {
    ResponseCtx {
        id: "resp_test".into(),
        model: req["model"].as_str().unwrap_or_default().into(),
        request: obj(req).clone(),
    }
}

/// Snapshots hold no clock: every `created_at` becomes 0, after checking it is a plausible
/// time (and, within a stream, the same in every event).
fn redact_created_at(v: &mut Value, seen: &mut Option<u64>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                if k == "created_at" {
                    let t = v.as_u64().unwrap();
                    assert!(t > 1_700_000_000, "created_at {t} is not now");
                    assert_eq!(*seen.get_or_insert(t), t, "created_at changed");
                    *v = Value::from(0);
                } else {
                    redact_created_at(v, seen);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| redact_created_at(v, seen)),
        _ => {}
    }
}

fn error_json(e: &plano_egress::providers::TranslateError) -> Value {
    json!({"error": {"param": e.param, "message": e.message}})
}

#[test]
fn golden_requests() {
    for (name, req) in fixtures("request") {
        let out = match request_to_chat(obj(&req)) {
            Ok(chat) => Value::Object(chat),
            Err(e) => error_json(&e),
        };
        assert_eq!(
            name.starts_with("err_"),
            out.get("error").is_some(),
            "{name}: fixtures named err_* and only those must fail: {out}"
        );
        insta::assert_json_snapshot!(format!("request__{name}"), out);
    }
}

#[test]
fn golden_responses() {
    for (name, case) in fixtures("response") {
        let mut out = match response_from_chat(&case["chat"], &ctx(&case["request"])) {
            Ok(resp) => resp,
            Err(e) => error_json(&e),
        };
        redact_created_at(&mut out, &mut None);
        assert_eq!(
            name.starts_with("err_"),
            out.get("error").is_some_and(|e| e.get("param").is_some()),
            "{name}: {out}"
        );
        insta::assert_json_snapshot!(format!("response__{name}"), out);
    }
}

/// Run a stream fixture: chunks in, then `finish`, `fail` or nothing.
fn run_stream(case: &Value) -> Vec<(String, Value)> {
    let mut s = StreamFromChat::new(ctx(&case["request"]));
    let mut events = Vec::new();
    for chunk in case["chunks"].as_array().unwrap() {
        events.extend(s.chunk(chunk));
    }
    match &case["end"] {
        Value::String(e) if e == "finish" => events.extend(s.finish()),
        Value::Object(o) => {
            let f = o["fail"].as_array().unwrap();
            events.extend(s.fail(f[0].as_str().unwrap(), f[1].as_str().unwrap()));
        }
        _ => {}
    }
    // A second close of either kind adds nothing.
    assert!(s.finish().is_empty());
    assert!(s.fail("server_error", "late").is_empty());
    events
        .into_iter()
        .map(|e| {
            let data: Value = serde_json::from_str(&e.data).unwrap();
            (e.event.unwrap(), data)
        })
        .collect()
}

const TERMINAL: &[&str] = &[
    "response.completed",
    "response.incomplete",
    "response.failed",
];

/// The event-order rules the SDK's stream accumulator relies on.
fn check_stream(name: &str, events: &[(String, Value)]) {
    assert!(events.len() >= 3, "{name}: too few events");
    assert_eq!(events[0].0, "response.created", "{name}");
    assert_eq!(events[1].0, "response.in_progress", "{name}");
    let mut added: Vec<String> = Vec::new(); // item ids by output_index
    let mut done: HashSet<usize> = HashSet::new();
    let mut texts: HashMap<(usize, u64), String> = HashMap::new();
    let mut args: HashMap<usize, String> = HashMap::new();
    for (n, (event, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], *event, "{name}: event name and type differ");
        assert_eq!(data["sequence_number"], n, "{name}: sequence numbers");
        let is_terminal = TERMINAL.contains(&event.as_str());
        assert_eq!(
            is_terminal,
            n == events.len() - 1,
            "{name}: one close, last"
        );
        if let Some(resp) = data.get("response") {
            assert_eq!(resp["id"], "resp_test", "{name}");
            assert_eq!(resp["object"], "response", "{name}");
        }
        let index = data["output_index"].as_u64().map(|i| i as usize);
        match event.as_str() {
            "response.output_item.added" => {
                let i = index.unwrap();
                assert_eq!(
                    i,
                    added.len(),
                    "{name}: output_index follows announcement order"
                );
                added.push(data["item"]["id"].as_str().unwrap().to_owned());
                assert_eq!(data["item"]["status"], "in_progress", "{name}");
            }
            "response.output_item.done" => {
                let i = index.unwrap();
                assert!(i < added.len(), "{name}: done before added");
                assert!(done.insert(i), "{name}: item {i} closed twice");
                assert_eq!(data["item"]["id"], added[i].as_str(), "{name}");
            }
            "response.output_text.delta"
            | "response.refusal.delta"
            | "response.reasoning_text.delta" => {
                let i = index.unwrap();
                assert!(!done.contains(&i), "{name}: delta after item done");
                assert_eq!(data["item_id"], added[i].as_str(), "{name}");
                let k = data["content_index"].as_u64().unwrap();
                texts
                    .entry((i, k))
                    .or_default()
                    .push_str(data["delta"].as_str().unwrap());
            }
            "response.output_text.done"
            | "response.refusal.done"
            | "response.reasoning_text.done" => {
                let i = index.unwrap();
                let k = data["content_index"].as_u64().unwrap();
                let full = data.get("text").or(data.get("refusal")).unwrap();
                assert_eq!(
                    texts.get(&(i, k)).map_or("", String::as_str),
                    full.as_str().unwrap(),
                    "{name}: deltas add up to the done text"
                );
            }
            "response.function_call_arguments.delta" => {
                let i = index.unwrap();
                assert!(!done.contains(&i), "{name}: delta after item done");
                assert_eq!(data["item_id"], added[i].as_str(), "{name}");
                args.entry(i)
                    .or_default()
                    .push_str(data["delta"].as_str().unwrap());
            }
            "response.function_call_arguments.done" => {
                let i = index.unwrap();
                assert_eq!(
                    args.get(&i).map_or("", String::as_str),
                    data["arguments"].as_str().unwrap(),
                    "{name}"
                );
            }
            _ => {}
        }
    }
    let (last, data) = events.last().unwrap();
    let output = data["response"]["output"].as_array().unwrap();
    assert_eq!(
        output.len(),
        added.len(),
        "{name}: final output lists every item"
    );
    if last != "response.failed" {
        assert_eq!(done.len(), added.len(), "{name}: every item closed");
    }
}

#[test]
fn golden_streams() {
    for (name, case) in fixtures("stream") {
        let mut events = run_stream(&case);
        check_stream(&name, &events);
        let mut seen = None;
        for (_, data) in &mut events {
            redact_created_at(data, &mut seen);
        }
        let out: Vec<Value> = events
            .into_iter()
            .map(|(event, data)| json!({"event": event, "data": data}))
            .collect();
        insta::assert_json_snapshot!(format!("stream__{name}"), out);
    }
}

/// The streamed and the whole answer to the same chat completion agree on the Response.
#[test]
fn stream_and_whole_agree() {
    let req =
        json!({"model": "gpt-4o", "input": "hi", "tools": [{"type": "function", "name": "f"}]});
    let usage = json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7});
    let whole = json!({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Sure.", "reasoning_content": "hmm",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
        "usage": usage});
    let chunks = [
        json!({"choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "hmm"}}]}),
        json!({"choices": [{"index": 0, "delta": {"content": "Sure."}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":"}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        json!({"choices": [], "usage": usage}),
    ];
    let mut expected = response_from_chat(&whole, &ctx(&req)).unwrap();
    let mut s = StreamFromChat::new(ctx(&req));
    let mut events: Vec<_> = chunks.iter().flat_map(|c| s.chunk(c)).collect();
    events.extend(s.finish());
    let mut last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(last["type"], "response.completed");
    redact_created_at(&mut expected, &mut None);
    redact_created_at(&mut last, &mut None);
    assert_eq!(last["response"], expected);
}

/// What the lead stores for `previous_response_id`: the input items, then the output
/// items; replayed as the next input they make a valid chat history.
#[test]
fn stored_conversation_replays() {
    let req1 = json!({"model": "gpt-4o", "input": "Weather in Paris?",
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]});
    let chat1 = json!({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": null, "reasoning_content": "need weather",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}]});
    let resp1 = response_from_chat(&chat1, &ctx(&req1)).unwrap();
    let mut history = conversation_items(obj(&req1)).unwrap();
    history.extend(output_items(&resp1));
    history.push(json!({"type": "function_call_output", "call_id": "call_1", "output": "18C"}));
    let mut req2 = obj(&req1).clone();
    req2.insert("input".into(), Value::Array(history));
    let chat2 = request_to_chat(&req2).unwrap();
    assert_eq!(
        chat2["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        ])
    );
    assert!(conversation_items(&Map::new()).unwrap().is_empty());
    assert!(output_items(&json!({"output": 3})).is_empty());
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            "message",
            "user",
            "assistant",
            "system",
            "developer",
            "function",
            "function_call",
            "function_call_output",
            "reasoning",
            "input_text",
            "input_image",
            "output_text",
            "refusal",
            "auto",
            "required",
            "json_schema",
            "stop",
            "length",
            "tool_calls",
            "",
        ])
        .prop_map(|s| Value::String(s.into())),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "type",
                        "role",
                        "content",
                        "input",
                        "text",
                        "tools",
                        "tool_choice",
                        "name",
                        "call_id",
                        "arguments",
                        "output",
                        "format",
                        "choices",
                        "delta",
                        "message",
                        "tool_calls",
                        "index",
                        "id",
                        "function",
                        "finish_reason",
                        "usage",
                        "prompt_tokens",
                        "image_url",
                        "reasoning_content",
                        "refusal",
                        "instructions",
                        "model",
                        "max_output_tokens",
                        "effort",
                        "reasoning",
                    ]),
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// Chunks that look like a provider's, so the state machine's deeper paths are reached.
fn arb_chunk() -> impl Strategy<Value = Value> {
    let text = prop::sample::select(vec!["", "a", "{\"x\":", "1}", "é"]);
    let call = (0u64..3, prop::option::of(Just("call_x")), prop::option::of(Just("f")), text.clone())
        .prop_map(|(i, id, name, args)| {
            json!({"index": i, "id": id, "function": {"name": name, "arguments": args}})
        });
    let delta = (
        prop::option::of(text.clone()),
        prop::option::of(text.clone()),
        prop::option::of(text),
        prop::collection::vec(call, 0..3),
    )
        .prop_map(|(c, r, rf, calls)| {
            json!({"content": c, "reasoning_content": r, "refusal": rf, "tool_calls": calls})
        });
    let finish = prop::option::of(prop::sample::select(vec!["stop", "length", "tool_calls"]));
    let usage = prop::option::of(Just(json!({"prompt_tokens": 1, "completion_tokens": 2})));
    prop_oneof![
        (delta, finish, usage).prop_map(|(d, f, u)| {
            json!({"choices": [{"index": 0, "delta": d, "finish_reason": f}], "usage": u})
        }),
        arb_json(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn translators_never_panic(v in arb_json(), req in arb_json()) {
        if let Some(o) = v.as_object() {
            let _ = request_to_chat(o);
            let _ = conversation_items(o);
        }
        let _ = request_to_chat(&Map::from_iter([("input".to_owned(), v.clone())]));
        let _ = output_items(&v);
        let ctx = ResponseCtx::new(req.as_object().cloned().unwrap_or_default());
        let _ = response_from_chat(&v, &ctx);
        let _ = response_from_chat(&json!({"choices": [{"message": v}]}), &ctx);
    }

    #[test]
    fn stream_never_panics_and_closes_once(
        chunks in prop::collection::vec(arb_chunk(), 0..12),
        end in 0u8..3,
    ) {
        let mut s = StreamFromChat::new(ctx(&json!({})));
        let mut events = Vec::new();
        for c in &chunks {
            events.extend(s.chunk(c));
        }
        match end {
            0 => events.extend(s.finish()),
            1 => events.extend(s.fail("upstream_error", "broke")),
            _ => {}
        }
        if end < 2 {
            let parsed: Vec<(String, Value)> = events
                .iter()
                .map(|e| (e.event.clone().unwrap(), serde_json::from_str(&e.data).unwrap()))
                .collect();
            check_stream("proptest", &parsed);
        }
    }
}
