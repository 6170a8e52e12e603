//! OpenAI chat completions: `POST …/chat/completions`.
//!
//! Shapes from the OpenAI API reference (`ChatCompletion`, `ChatCompletionChunk`): a tool
//! call streams as a first chunk with `id`, `type` and `function.name` plus empty arguments,
//! then argument fragments under the same `index`, then a chunk with
//! `finish_reason: "tool_calls"`; usage comes in a last chunk with empty `choices`, only
//! when `stream_options.include_usage` is set; the stream ends with `data: [DONE]`.

use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::{Value, json};

use super::conversation::{
    Answer, Choice, Conversation, Usage, argument_fragments, pick_tool, text_of, text_pieces,
};
use super::{Ctx, MockOptions, Out};

const ID: &str = "chatcmpl-mock";
const CREATED: u64 = 1_700_000_000;
pub(crate) const CALL_ID: &str = "call_mock_1";

pub(crate) fn conversation(body: &Value) -> Conversation {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let tools = body
        .get("tools")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|t| {
            let f = t.get("function")?;
            let name = f.get("name")?.as_str()?.to_string();
            Some((name, f.get("parameters").cloned().unwrap_or(json!({}))))
        })
        .collect();
    let choice = match body.get("tool_choice") {
        Some(Value::String(s)) if s == "none" => Choice::None,
        Some(c) => c
            .pointer("/function/name")
            .and_then(Value::as_str)
            .map_or(Choice::First, |n| Choice::Named(n.into())),
        None => Choice::First,
    };
    let tool_result = messages
        .last()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
        .map(|m| m.get("content").and_then(text_of).unwrap_or_default());
    let user_text = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content").and_then(text_of));
    Conversation {
        tool: pick_tool(tools, choice),
        tool_result,
        user_text,
    }
}

pub(crate) fn render(ctx: &Ctx, answer: &Answer) -> Out {
    let usage = usage_json(&ctx.usage);
    if !ctx.stream {
        let (message, finish) = match answer {
            Answer::Text(text) => (
                json!({"role": "assistant", "content": text}),
                text_finish(ctx),
            ),
            Answer::ToolCall { name, arguments } => (
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "id": CALL_ID, "type": "function",
                    "function": {"name": name, "arguments": arguments.to_string()}
                }]}),
                "tool_calls",
            ),
        };
        return Out::Json(json!({
            "id": ID, "object": "chat.completion", "created": CREATED, "model": ctx.model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": usage
        }));
    }
    let chunk = |delta: Value, finish: Value| {
        json!({"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": ctx.model,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        .to_string()
    };
    let mut out = Vec::new();
    let finish = match answer {
        Answer::Text(text) => {
            out.push(chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            ));
            for piece in text_pieces(text) {
                out.push(chunk(json!({"content": piece}), Value::Null));
            }
            text_finish(ctx)
        }
        Answer::ToolCall { name, arguments } => {
            out.push(chunk(
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "index": 0, "id": CALL_ID, "type": "function",
                    "function": {"name": name, "arguments": ""}
                }]}),
                Value::Null,
            ));
            for fragment in argument_fragments(&arguments.to_string()) {
                out.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}),
                    Value::Null,
                ));
            }
            "tool_calls"
        }
    };
    out.push(chunk(json!({}), json!(finish)));
    if ctx.include_usage {
        out.push(
            json!({"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": ctx.model,
                   "choices": [], "usage": usage})
            .to_string(),
        );
    }
    out.push("[DONE]".into());
    Out::Sse(out)
}

fn text_finish(ctx: &Ctx) -> &'static str {
    if ctx.truncated { "length" } else { "stop" }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input, "completion_tokens": u.output, "total_tokens": u.total(),
        "prompt_tokens_details": {"cached_tokens": u.cached}
    })
}

/// The sized answer a plain chat completion gets: `reply`, then filler up to the size the
/// options ask for (see the module doc of `mock`).
pub(crate) fn sized(body: &Value, reply: &str, options: &MockOptions) -> Out {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model");
    if body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        let include_usage = body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut events = default_stream(model, options.chunks, include_usage);
        let echo = json!({"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": model,
                          "choices": [{"index": 0, "delta": {"content": format!("{reply} ")}, "finish_reason": null}]});
        events.insert(1, echo.to_string());
        Out::Sse(events)
    } else {
        let mut answer = completion(model, options.body_bytes.saturating_sub(reply.len() + 1));
        if let Some(content) = answer.pointer_mut("/choices/0/message/content") {
            *content = json!(format!("{reply} {}", content.as_str().unwrap_or_default()));
        }
        Out::Json(answer)
    }
}

/// OpenAI's error shape.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "mock", "code": status.as_u16()}});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A chat completion whose content makes the body about `bytes` long.
pub fn completion(model: &str, bytes: usize) -> Value {
    let content = "lorem ipsum ".repeat(bytes.saturating_sub(300) / 12 + 1);
    json!({
        "id": ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content.trim_end()}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
    })
}

/// One chat.completion.chunk carrying `content`, with `finish` as its finish_reason.
pub fn chunk(content: &str, finish: Option<&str>) -> String {
    json!({"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": "m",
           "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]})
    .to_string()
}

/// The default stream: a role chunk, `chunks` content chunks, a finish chunk, the usage
/// chunk when asked for, and `[DONE]`.
pub fn default_stream(model: &str, chunks: usize, include_usage: bool) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let mut out = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for i in 0..chunks {
        out.push(chunk(json!({"content": format!("tok{i} ")}), Value::Null));
    }
    out.push(chunk(json!({}), json!("stop")));
    if include_usage {
        out.push(
            json!({"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": model,
                   "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": chunks, "total_tokens": 10 + chunks}})
            .to_string(),
        );
    }
    out.push("[DONE]".into());
    out
}
