//! Golden tests for the Anthropic Messages ⇄ chat translations: every fixture under
//! `tests/golden/anthropic/<function>/` is run through that function and its output (or
//! error) compared with the committed snapshot. Accept changes with
//! `INSTA_UPDATE=always cargo test -p plano-egress --test golden_anthropic` and review the
//! diff.
//!
//! Fixture shapes: requests and responses are the JSON body itself (`errors*.json`: an
//! array of bodies, each expected to fail); `response_from_chat` fixtures are
//! `{"request": <client Messages request>, "response": <chat completion>}`; stream fixtures
//! are `{"request"?: …, "chunks" | "events": [...], "end": "finish" | {"fail": [code, msg]}}`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a bad fixture should abort the test"
)]

use std::path::{Path, PathBuf};

use plano_common::sse::SseEvent;
use plano_egress::providers::anthropic::{
    ResponseCtx, StreamFromChat, StreamToChat, request_from_chat, request_to_chat,
    response_from_chat, response_to_chat,
};
use plano_egress::providers::{ClientStream, TranslateError, UpstreamStream};
use serde_json::{Map, Value, json};

fn fixtures(function: &str) -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/anthropic")
        .join(function);
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
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).unwrap();
            let value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, value)
        })
        .collect()
}

fn obj(v: &Value) -> &Map<String, Value> {
    v.as_object().expect("fixture must be an object")
}

fn error_json(e: TranslateError) -> Value {
    json!({"error": {"param": e.param, "message": e.message}})
}

fn outcome(r: Result<impl Into<Value>, TranslateError>) -> Value {
    r.map(Into::into).unwrap_or_else(error_json)
}

/// Runs `f` on a fixture, or on each body of an `errors*` fixture (each must fail).
fn run(function: &str, f: impl Fn(&Value) -> Result<Value, TranslateError>) {
    for (name, fixture) in fixtures(function) {
        let out = if name.starts_with("errors") {
            let cases = fixture.as_array().expect("errors fixture is an array");
            let outs: Vec<Value> = cases
                .iter()
                .map(|case| match f(case) {
                    Ok(v) => panic!("{function}/{name}: expected an error for {case}, got {v}"),
                    Err(e) => error_json(e),
                })
                .collect();
            Value::Array(outs)
        } else {
            outcome(f(&fixture))
        };
        insta::assert_json_snapshot!(format!("{function}__{name}"), out);
    }
}

/// `created` is the wall clock: replace it so snapshots are stable.
fn fix_created(mut v: Value) -> Value {
    if let Some(c) = v.get_mut("created") {
        *c = json!(0);
    }
    v
}

#[test]
fn request_to_chat_golden() {
    run("request_to_chat", |req| {
        request_to_chat(obj(req)).map(Value::Object)
    });
}

#[test]
fn request_from_chat_golden() {
    run("request_from_chat", |req| {
        request_from_chat(obj(req)).map(Value::Object)
    });
}

#[test]
fn response_from_chat_golden() {
    run("response_from_chat", |fixture| {
        let ctx = ResponseCtx::from_request(obj(&fixture["request"]));
        response_from_chat(&fixture["response"], &ctx)
    });
}

#[test]
fn response_to_chat_golden() {
    run("response_to_chat", |resp| {
        response_to_chat(resp).map(fix_created)
    });
}

/// A message id made up when the upstream gave none is random: replace it.
fn fix_random_id(mut data: Value) -> Value {
    if let Some(id) = data.pointer_mut("/message/id")
        && id
            .as_str()
            .is_some_and(|s| s.len() == 36 && s.starts_with("msg_"))
    {
        *id = json!("msg_[random]");
    }
    data
}

fn sse_json(events: Vec<SseEvent>) -> Vec<Value> {
    events
        .into_iter()
        .map(|e| {
            let data = fix_random_id(serde_json::from_str(&e.data).unwrap());
            assert_eq!(
                e.event.as_deref(),
                data["type"].as_str(),
                "event name and data type differ"
            );
            json!({"event": e.event, "data": data})
        })
        .collect()
}

#[test]
fn stream_from_chat_golden() {
    for (name, fixture) in fixtures("stream_from_chat") {
        let ctx = ResponseCtx::from_request(
            fixture.get("request").and_then(Value::as_object).unwrap_or(
                &json!({"model": "claude-sonnet-4-5"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        );
        let mut stream = StreamFromChat::new(ctx);
        let mut out = Vec::new();
        for chunk in fixture["chunks"].as_array().unwrap() {
            out.extend(sse_json(stream.chunk(chunk)));
        }
        match &fixture["end"] {
            Value::String(s) if s == "finish" => out.extend(sse_json(stream.finish())),
            Value::Object(o) => {
                let fail = o["fail"].as_array().unwrap();
                let (code, msg) = (fail[0].as_str().unwrap(), fail[1].as_str().unwrap());
                out.extend(sse_json(stream.fail(code, msg)));
            }
            other => panic!("{name}: bad end {other}"),
        }
        // Nothing may follow the close.
        assert!(stream.finish().is_empty(), "{name}: output after the close");
        assert!(
            stream.fail("x", "y").is_empty(),
            "{name}: output after the close"
        );
        insta::assert_json_snapshot!(format!("stream_from_chat__{name}"), out);
    }
}

#[test]
fn stream_to_chat_golden() {
    for (name, fixture) in fixtures("stream_to_chat") {
        let model = fixture["model"].as_str().unwrap_or("claude-sonnet-4-5");
        let mut stream = StreamToChat::new(model);
        let mut out = Vec::new();
        let mut failed = None;
        for ev in fixture["events"].as_array().unwrap() {
            let sse = SseEvent::named(ev["event"].as_str().unwrap(), ev["data"].to_string());
            match stream.event(&sse) {
                Ok(chunks) => out.extend(chunks.into_iter().map(fix_created)),
                Err(e) => {
                    failed = Some(error_json(e));
                    break;
                }
            }
        }
        let end = match failed {
            Some(e) => e,
            None => match stream.finish() {
                Ok(rest) => {
                    out.extend(rest.into_iter().map(fix_created));
                    json!("finish: ok")
                }
                Err(e) => error_json(e),
            },
        };
        insta::assert_json_snapshot!(
            format!("stream_to_chat__{name}"),
            json!({"chunks": out, "end": end})
        );
    }
}
