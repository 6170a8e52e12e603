//! CPU cost of translating one request and its answer (the work a translated request does
//! on top of a pass-through one), measured in-process so the number is not drowned in the
//! scheduling noise of a 2-core load test.
//!
//! Run: `cargo bench -p plano-egress --bench translate`. Prints µs/op per case: the
//! `/v1/messages` body the load benchmark sends translated to chat and the mock's ~1 KB
//! chat answer translated back, whole and as a 20-chunk stream; and, for comparison, what
//! pass-through does (split the client's bytes at their top level and rewrite `model`;
//! read `usage`). Request rows start from the client's bytes, as the request path does.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark reports on stdout and aborts on setup failure"
)]

use std::hint::black_box;
use std::time::Instant;

use plano_common::sse::SseEvent;
use plano_egress::providers::api::Api;
use plano_egress::providers::body::ClientBody;
use plano_egress::providers::plan::{ClientRequest, Route};
use plano_egress::providers::{ClientStream, anthropic};
use serde_json::{Map, Value, json};

fn per_op(name: &str, iters: u32, mut f: impl FnMut()) {
    for _ in 0..iters / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(iters);
    println!("{name:<64} {us:>8.2} µs/op");
}

fn provider(yaml_model: &str) -> plano_config::Config {
    let yaml = format!(
        "version: v0.4.0\nmodel_providers:\n  - model: {yaml_model}\n    access_key: k\n    default: true\n"
    );
    plano_config::load_str(&yaml, None, &|_| None).unwrap()
}

fn main() {
    let messages_body: Map<String, Value> = serde_json::from_value(json!({
        "model": "gpt-4o-mini", "max_tokens": 256, "stream": false,
        "messages": [{"role": "user", "content": "Say hello in one short sentence, please."}]
    }))
    .unwrap();
    let content = "lorem ipsum ".repeat(60);
    let chat_answer = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content.trim_end()}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
    });
    let chat_bytes = bytes::Bytes::from(chat_answer.to_string());
    let config = provider("groq/llama-3.3-70b");
    let p = &config.providers[0];

    let translated = Route::new(p, Api::Messages);
    let messages_raw = serde_json::to_vec(&messages_body).unwrap();
    let messages_body = ClientBody::from_tree(messages_body);
    let req = ClientRequest {
        api: Api::Messages,
        body: &messages_body,
        model: "gpt-4o-mini",
        stream: false,
        response_id: "resp_1",
    };
    per_op(
        "translated: /v1/messages request bytes → chat body",
        20_000,
        || {
            let body = ClientBody::split(&messages_raw).unwrap();
            let req = ClientRequest { body: &body, ..req };
            black_box(translated.request_body(&req, "llama-3.3-70b").unwrap());
        },
    );
    per_op(
        "translated: ~1 KB chat answer → Messages answer + usage",
        20_000,
        || {
            black_box(translated.response_body(&req, &chat_bytes).unwrap());
        },
    );

    let chat_body: Map<String, Value> = serde_json::from_value(json!({
        "model": "gpt-4o-mini", "stream": false,
        "messages": [{"role": "user", "content": "Say hello in one short sentence, please."}]
    }))
    .unwrap();
    let native = Route::new(p, Api::Chat);
    let chat_raw = serde_json::to_vec(&chat_body).unwrap();
    let chat_body = ClientBody::from_tree(chat_body);
    let chat_req = ClientRequest {
        api: Api::Chat,
        body: &chat_body,
        model: "gpt-4o-mini",
        stream: false,
        response_id: "resp_1",
    };
    per_op(
        "pass-through: chat request bytes → chat body",
        20_000,
        || {
            let body = ClientBody::split(&chat_raw).unwrap();
            let req = ClientRequest {
                body: &body,
                ..chat_req
            };
            black_box(native.request_body(&req, "llama-3.3-70b").unwrap());
        },
    );
    per_op(
        "pass-through: ~1 KB chat answer, usage read",
        20_000,
        || {
            black_box(native.response_body(&chat_req, &chat_bytes).unwrap());
        },
    );

    let chunks: Vec<Value> = (0..20)
        .map(|i| {
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [{"index": 0, "delta": {"content": format!("tok{i} ")}, "finish_reason": null}]})
        })
        .chain([
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 20}}),
        ])
        .collect();
    per_op(
        "translated: 22 chat chunks → Messages events (whole stream)",
        5_000,
        || {
            let mut s = anthropic::StreamFromChat::new("gpt-4o-mini");
            let mut out: Vec<SseEvent> = Vec::new();
            for c in &chunks {
                out.extend(s.chunk(c));
            }
            out.extend(s.finish());
            for e in &out {
                black_box(e.encode());
            }
        },
    );
}
