//! Anthropic Messages: `POST …/messages`.
//!
//! Shapes from the Messages API reference and the `anthropic` Python SDK types (`Message`,
//! `RawMessageStreamEvent`): a stream is `message_start` (the message with empty content,
//! `stop_reason: null` and input usage), per block `content_block_start` / one or more
//! `content_block_delta` (`text_delta` or `input_json_delta`) / `content_block_stop`, a
//! `ping` after the first block start, `message_delta` (stop reason, output usage) and
//! `message_stop`. Each event is named (`event:`) and its data repeats the name in `type`.

use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::{Value, json};

use super::conversation::{
    Answer, Choice, Conversation, Usage, argument_fragments, pick_tool, text_of, text_pieces,
};
use super::{Ctx, Out};

const MESSAGE_ID: &str = "msg_mock_1";
const TOOL_ID: &str = "toolu_mock_1";

pub(crate) fn conversation(body: &Value) -> Conversation {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    // Server tools (web search, …) have no input_schema; the model does not call those.
    let tools = body
        .get("tools")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|t| {
            let name = t.get("name")?.as_str()?.to_string();
            Some((name, t.get("input_schema")?.clone()))
        })
        .collect();
    let choice = match body.pointer("/tool_choice/type").and_then(Value::as_str) {
        Some("none") => Choice::None,
        Some("tool") => body
            .pointer("/tool_choice/name")
            .and_then(Value::as_str)
            .map_or(Choice::First, |n| Choice::Named(n.into())),
        _ => Choice::First,
    };
    let tool_result = messages
        .last()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content").and_then(Value::as_array))
        .and_then(|blocks| {
            let results: Vec<String> = blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
                .map(|b| b.get("content").and_then(text_of).unwrap_or_default())
                .collect();
            (!results.is_empty()).then(|| results.join("\n"))
        });
    let user_text = messages
        .iter()
        .rev()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .find_map(|m| m.get("content").and_then(text_of));
    Conversation {
        tool: pick_tool(tools, choice),
        tool_result,
        user_text,
    }
}

pub(crate) fn render(ctx: &Ctx, answer: &Answer) -> Out {
    let (block, stop) = match answer {
        Answer::Text(text) => (
            json!({"type": "text", "text": text}),
            if ctx.stop_sequence.is_some() {
                "stop_sequence"
            } else if ctx.truncated {
                "max_tokens"
            } else {
                "end_turn"
            },
        ),
        Answer::ToolCall { name, arguments } => (
            json!({"type": "tool_use", "id": TOOL_ID, "name": name, "input": arguments}),
            "tool_use",
        ),
    };
    if !ctx.stream {
        return Out::Json(json!({
            "id": MESSAGE_ID, "type": "message", "role": "assistant", "model": ctx.model,
            "content": [block], "stop_reason": stop, "stop_sequence": ctx.stop_sequence,
            "usage": usage_json(&ctx.usage, ctx.usage.output)
        }));
    }
    let (start, deltas) = match answer {
        Answer::Text(text) => (
            json!({"type": "text", "text": ""}),
            text_pieces(text)
                .into_iter()
                .map(|t| json!({"type": "text_delta", "text": t}))
                .collect(),
        ),
        Answer::ToolCall { name, arguments } => (
            json!({"type": "tool_use", "id": TOOL_ID, "name": name, "input": {}}),
            argument_fragments(&arguments.to_string())
                .into_iter()
                .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                .collect(),
        ),
    };
    Out::Named(events(
        &ctx.model,
        start,
        deltas,
        (stop, ctx.stop_sequence.as_deref()),
        &ctx.usage,
    ))
}

fn usage_json(u: &Usage, output: u64) -> Value {
    json!({
        "input_tokens": u.uncached(), "output_tokens": output,
        "cache_creation_input_tokens": u.cache_write, "cache_read_input_tokens": u.cached
    })
}

/// The full event sequence for one content block.
fn events(
    model: &str,
    start: Value,
    deltas: Vec<Value>,
    (stop, stop_sequence): (&str, Option<&str>),
    usage: &Usage,
) -> Vec<(String, String)> {
    let ev = |v: Value| {
        let name = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        (name, v.to_string())
    };
    let mut out = vec![
        ev(json!({"type": "message_start", "message": {
            "id": MESSAGE_ID, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            // The real API reports one output token at the start.
            "usage": usage_json(usage, 1)
        }})),
        ev(json!({"type": "content_block_start", "index": 0, "content_block": start})),
        ev(json!({"type": "ping"})),
    ];
    for delta in deltas {
        out.push(ev(
            json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ));
    }
    out.push(ev(json!({"type": "content_block_stop", "index": 0})));
    out.push(ev(json!({"type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": stop_sequence},
        "usage": {"output_tokens": usage.output}})));
    out.push(ev(json!({"type": "message_stop"})));
    out
}

/// A complete Anthropic text stream sending `pieces` as `text_delta`s (10 input tokens,
/// one output token per piece, `end_turn`), for [`super::Reply::named_stream`].
pub fn anthropic_text_stream(model: &str, pieces: &[&str]) -> Vec<(String, String)> {
    let usage = Usage::fixed(10, pieces.len() as u64);
    let deltas = pieces
        .iter()
        .map(|t| json!({"type": "text_delta", "text": t}))
        .collect();
    events(
        model,
        json!({"type": "text", "text": ""}),
        deltas,
        ("end_turn", None),
        &usage,
    )
}

/// A complete Anthropic stream with one `tool_use` block (id `toolu_mock_1`) whose input
/// arrives as these `input_json_delta` fragments, stop reason `tool_use`.
pub fn anthropic_tool_stream(model: &str, name: &str, fragments: &[&str]) -> Vec<(String, String)> {
    let usage = Usage::fixed(10, fragments.len() as u64);
    let deltas = fragments
        .iter()
        .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
        .collect();
    events(
        model,
        json!({"type": "tool_use", "id": TOOL_ID, "name": name, "input": {}}),
        deltas,
        ("tool_use", None),
        &usage,
    )
}

/// An `error` event as the API sends it mid-stream (e.g. kind `overloaded_error`), to
/// append to a partial event list for [`super::Reply::named_stream`].
pub fn anthropic_error_event(kind: &str, message: &str) -> (String, String) {
    let data = json!({"type": "error", "error": {"type": kind, "message": message}});
    ("error".into(), data.to_string())
}

/// Anthropic's error shape; the error type follows the status as in the API reference.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    let kind = match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": message},
                      "request_id": "req_mock_1"});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
