//! OpenAI Responses: `POST …/responses`.
//!
//! Shapes from the Responses API reference and the `openai` Python SDK types (`Response`,
//! `ResponseStreamEvent`): a text answer is one `message` output item with one
//! `output_text` part; a tool call is one `function_call` item (`call_id`, `name`,
//! `arguments` as a JSON string). A stream is `response.created`, `response.in_progress`,
//! `response.output_item.added`, then for text `response.content_part.added`,
//! `response.output_text.delta`…, `response.output_text.done`,
//! `response.content_part.done`, or for a call `response.function_call_arguments.delta`…,
//! `response.function_call_arguments.done`; then `response.output_item.done` and
//! `response.completed` carrying the whole response with usage. Every event is named and
//! has a `sequence_number` counting from 0; there is no `[DONE]`.

use serde_json::{Value, json};

use super::conversation::{
    Answer, Choice, Conversation, Usage, argument_fragments, pick_tool, text_of, text_pieces,
};
use super::openai::CALL_ID;
use super::{Ctx, Out};

const RESPONSE_ID: &str = "resp_mock_1";
const MESSAGE_ID: &str = "msg_mock_1";
const CALL_ITEM_ID: &str = "fc_mock_1";
const CREATED: u64 = 1_700_000_000;

pub(crate) fn conversation(body: &Value) -> Conversation {
    // Only function tools: built-in tools (web_search, …) run on OpenAI's side.
    let tools = body
        .get("tools")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
        .filter_map(|t| {
            let name = t.get("name")?.as_str()?.to_string();
            Some((name, t.get("parameters").cloned().unwrap_or(json!({}))))
        })
        .collect();
    let choice = match body.get("tool_choice") {
        Some(Value::String(s)) if s == "none" => Choice::None,
        Some(c) if c.get("type").and_then(Value::as_str) == Some("function") => c
            .get("name")
            .and_then(Value::as_str)
            .map_or(Choice::First, |n| Choice::Named(n.into())),
        _ => Choice::First,
    };
    let (tool_result, user_text) = match body.get("input") {
        Some(Value::String(s)) => (None, Some(s.clone())),
        Some(Value::Array(items)) => {
            let tool_result = items
                .last()
                .filter(|i| i.get("type").and_then(Value::as_str) == Some("function_call_output"))
                .map(|i| i.get("output").and_then(text_of).unwrap_or_default());
            let user_text = items
                .iter()
                .rev()
                .filter(|i| i.get("role").and_then(Value::as_str) == Some("user"))
                .find_map(|i| i.get("content").and_then(text_of));
            (tool_result, user_text)
        }
        _ => (None, None),
    };
    Conversation {
        tool: pick_tool(tools, choice),
        tool_result,
        user_text,
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input,
        "input_tokens_details": {"cached_tokens": u.cached, "cache_write_tokens": u.cache_write},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.total()
    })
}

/// The request settings a Response object repeats, those the request set.
pub(crate) fn echo(body: &Value) -> Value {
    const ECHOED: [&str; 14] = [
        "instructions",
        "max_output_tokens",
        "metadata",
        "parallel_tool_calls",
        "previous_response_id",
        "reasoning",
        "store",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_p",
        "truncation",
        "user",
    ];
    let mut out = serde_json::Map::new();
    for key in ECHOED {
        if let Some(v) = body.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    Value::Object(out)
}

/// The `Response` object with this status, output and usage: the API's defaults, overridden
/// by what the request set.
fn response(ctx: &Ctx, status: &str, output: Value, usage: Value) -> Value {
    let mut r = json!({
        "id": RESPONSE_ID, "object": "response", "created_at": CREATED, "status": status,
        "error": null, "incomplete_details": null, "instructions": null,
        "max_output_tokens": null, "model": ctx.model, "output": output,
        "parallel_tool_calls": true, "previous_response_id": null, "reasoning": null,
        "store": true, "temperature": 1.0, "text": {"format": {"type": "text"}},
        "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled",
        "usage": usage, "user": null, "metadata": {}
    });
    if let (Some(r), Some(echo)) = (r.as_object_mut(), ctx.echo.as_object()) {
        r.extend(echo.clone());
    }
    r
}

fn text_item(text: &str, status: &str) -> Value {
    let content = if status != "in_progress" {
        json!([{"type": "output_text", "text": text, "annotations": [], "logprobs": []}])
    } else {
        json!([])
    };
    json!({"type": "message", "id": MESSAGE_ID, "status": status, "role": "assistant",
           "content": content})
}

fn call_item(name: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": CALL_ITEM_ID, "call_id": CALL_ID, "name": name,
           "arguments": arguments, "status": status})
}

pub(crate) fn render(ctx: &Ctx, answer: &Answer) -> Out {
    let pieces = match answer {
        Answer::Text(text) => text_pieces(text),
        Answer::ToolCall { .. } => Vec::new(),
    };
    render_with(ctx, answer, pieces)
}

/// Renders `answer`; a streamed text answer sends `pieces` as its deltas.
fn render_with(ctx: &Ctx, answer: &Answer, pieces: Vec<String>) -> Out {
    // A response cut at max_output_tokens is "incomplete", and so is its message.
    let (status, finished) = if ctx.truncated {
        ("incomplete", "response.incomplete")
    } else {
        ("completed", "response.completed")
    };
    let done_item = match answer {
        Answer::Text(text) => text_item(text, status),
        Answer::ToolCall { name, arguments } => {
            call_item(name, &arguments.to_string(), "completed")
        }
    };
    let mut completed = response(
        ctx,
        status,
        json!([done_item.clone()]),
        usage_json(&ctx.usage),
    );
    if ctx.truncated {
        completed["incomplete_details"] = json!({"reason": "max_output_tokens"});
    }
    if !ctx.stream {
        return Out::Json(completed);
    }
    let pending = response(ctx, "in_progress", json!([]), Value::Null);
    let mut ev = Events::default();
    ev.push(json!({"type": "response.created", "response": pending}));
    ev.push(json!({"type": "response.in_progress", "response": pending}));
    match answer {
        Answer::Text(text) => {
            ev.push(
                json!({"type": "response.output_item.added", "output_index": 0,
                           "item": text_item(text, "in_progress")}),
            );
            let part = |t: &str| json!({"type": "output_text", "text": t, "annotations": []});
            let at = json!({"item_id": MESSAGE_ID, "output_index": 0, "content_index": 0});
            ev.push(merge(
                &at,
                json!({"type": "response.content_part.added", "part": part("")}),
            ));
            for piece in pieces {
                ev.push(merge(
                    &at,
                    json!({"type": "response.output_text.delta", "delta": piece, "logprobs": []}),
                ));
            }
            ev.push(merge(
                &at,
                json!({"type": "response.output_text.done", "text": text, "logprobs": []}),
            ));
            ev.push(merge(
                &at,
                json!({"type": "response.content_part.done", "part": part(text)}),
            ));
        }
        Answer::ToolCall { name, arguments } => {
            let arguments = arguments.to_string();
            ev.push(
                json!({"type": "response.output_item.added", "output_index": 0,
                           "item": call_item(name, "", "in_progress")}),
            );
            let at = json!({"item_id": CALL_ITEM_ID, "output_index": 0});
            for fragment in argument_fragments(&arguments) {
                ev.push(merge(
                    &at,
                    json!({"type": "response.function_call_arguments.delta", "delta": fragment}),
                ));
            }
            ev.push(merge(
                &at,
                json!({"type": "response.function_call_arguments.done", "name": name,
                       "arguments": arguments}),
            ));
        }
    }
    ev.push(json!({"type": "response.output_item.done", "output_index": 0, "item": done_item}));
    ev.push(json!({"type": finished, "response": completed}));
    Out::Named(ev.0)
}

/// Named events numbered in order.
#[derive(Default)]
struct Events(Vec<(String, String)>);

impl Events {
    fn push(&mut self, mut event: Value) {
        let name = event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(obj) = event.as_object_mut() {
            obj.insert("sequence_number".into(), json!(self.0.len()));
        }
        self.0.push((name, event.to_string()));
    }
}

fn merge(base: &Value, extra: Value) -> Value {
    let mut out = base.clone();
    if let (Some(o), Value::Object(e)) = (out.as_object_mut(), extra) {
        o.extend(e);
    }
    out
}

/// A complete Responses text stream sending `pieces` as `response.output_text.delta`s
/// (10 input tokens, one output token per piece), for [`super::Reply::named_stream`].
pub fn responses_text_stream(model: &str, pieces: &[&str]) -> Vec<(String, String)> {
    let text = pieces.concat();
    let ctx = Ctx {
        model: model.into(),
        stream: true,
        include_usage: false,
        usage: Usage::fixed(10, pieces.len() as u64),
        echo: Value::Null,
        truncated: false,
        stop_sequence: None,
    };
    let pieces = pieces.iter().map(|p| p.to_string()).collect();
    match render_with(&ctx, &Answer::Text(text), pieces) {
        Out::Named(events) => events,
        _ => Vec::new(),
    }
}
