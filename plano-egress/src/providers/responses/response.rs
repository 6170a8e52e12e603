//! Chat completion → Response object, and the pieces the stream shares with it.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::request::namespace_member;
use crate::providers::TranslateError;

/// A fresh Response id, `resp_` and 32 hex digits.
pub fn new_response_id() -> String {
    format!("resp_{}", uuid::Uuid::new_v4().simple())
}

/// What a Response object needs from its request: the id to answer with (the lead stores
/// conversations under it), the model the client asked for, and the request itself, whose
/// settings the Response echoes (the SDK requires some of them).
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseCtx {
    pub id: String,
    pub model: String,
    pub request: Map<String, Value>,
}

impl ResponseCtx {
    /// A context with a fresh id, for the model named in the request.
    pub fn new(request: Map<String, Value>) -> Self {
        let model = request
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Self {
            id: new_response_id(),
            model,
            request,
        }
    }

    /// Item ids derive from the response id, so one response's items are told apart by
    /// their position and a stored conversation never has two items with one id.
    pub(crate) fn item_id(&self, prefix: &str, output_index: usize) -> String {
        let suffix = self.id.strip_prefix("resp_").unwrap_or(&self.id);
        format!("{prefix}_{suffix}_{output_index}")
    }

    /// The Response object in a given state; `created_at` in Unix seconds.
    pub(crate) fn response(&self, created_at: u64, state: ResponseState) -> Value {
        let mut r = echo_fields(&self.request);
        let (status, incomplete, error) = match &state.status {
            Status::InProgress => ("in_progress", Value::Null, Value::Null),
            Status::Completed => ("completed", Value::Null, Value::Null),
            Status::Incomplete(reason) => ("incomplete", json!({"reason": reason}), Value::Null),
            Status::Failed { code, message } => (
                "failed",
                Value::Null,
                json!({"code": code, "message": message}),
            ),
        };
        r.insert("id".into(), Value::String(self.id.clone()));
        r.insert("object".into(), Value::String("response".into()));
        r.insert("created_at".into(), Value::from(created_at));
        r.insert("model".into(), Value::String(self.model.clone()));
        r.insert("status".into(), Value::String(status.into()));
        r.insert("incomplete_details".into(), incomplete);
        r.insert("error".into(), error);
        r.insert("output".into(), Value::Array(state.output));
        r.insert("usage".into(), state.usage.unwrap_or(Value::Null));
        Value::Object(r)
    }
}

/// Now, in Unix seconds.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) struct ResponseState {
    pub status: Status,
    pub output: Vec<Value>,
    pub usage: Option<Value>,
}

pub(crate) enum Status {
    InProgress,
    Completed,
    Incomplete(&'static str),
    Failed { code: &'static str, message: String },
}

impl Status {
    /// From a chat `finish_reason`.
    pub(crate) fn from_finish(reason: Option<&str>) -> Self {
        match reason {
            Some("length") => Self::Incomplete("max_output_tokens"),
            Some("content_filter") => Self::Incomplete("content_filter"),
            _ => Self::Completed,
        }
    }

    /// The status of the output items of a response ending this way.
    pub(crate) fn item_status(&self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::InProgress => "in_progress",
            Self::Incomplete(_) | Self::Failed { .. } => "incomplete",
        }
    }
}

/// Request fields a Response echoes, with the defaults OpenAI reports when they were not
/// sent. `parallel_tool_calls`, `tool_choice` and `tools` are required by the SDK.
fn echo_fields(req: &Map<String, Value>) -> Map<String, Value> {
    let pick = |key: &str, ok: fn(&Value) -> bool, default: Value| -> Value {
        req.get(key).filter(|v| ok(v)).cloned().unwrap_or(default)
    };
    let mut e = Map::new();
    e.insert(
        "instructions".into(),
        pick("instructions", Value::is_string, Value::Null),
    );
    e.insert(
        "metadata".into(),
        pick("metadata", Value::is_object, Value::Null),
    );
    e.insert(
        "parallel_tool_calls".into(),
        pick("parallel_tool_calls", Value::is_boolean, Value::Bool(true)),
    );
    e.insert(
        "temperature".into(),
        pick("temperature", Value::is_number, Value::Null),
    );
    e.insert("top_p".into(), pick("top_p", Value::is_number, Value::Null));
    e.insert(
        "tool_choice".into(),
        pick(
            "tool_choice",
            |v| v.is_string() || v.is_object(),
            Value::String("auto".into()),
        ),
    );
    e.insert("tools".into(), pick("tools", Value::is_array, json!([])));
    e.insert(
        "text".into(),
        pick(
            "text",
            Value::is_object,
            json!({"format": {"type": "text"}}),
        ),
    );
    e.insert(
        "max_output_tokens".into(),
        pick("max_output_tokens", Value::is_u64, Value::Null),
    );
    e.insert(
        "previous_response_id".into(),
        pick("previous_response_id", Value::is_string, Value::Null),
    );
    e.insert(
        "reasoning".into(),
        pick("reasoning", Value::is_object, Value::Null),
    );
    e.insert(
        "store".into(),
        pick("store", Value::is_boolean, Value::Bool(true)),
    );
    e.insert(
        "truncation".into(),
        pick(
            "truncation",
            Value::is_string,
            Value::String("disabled".into()),
        ),
    );
    e.insert("user".into(), pick("user", Value::is_string, Value::Null));
    e.insert("background".into(), Value::Bool(false));
    e
}

/// Chat usage → Responses usage (mapping in the module doc). `None` for anything that is
/// not a usage object.
pub(crate) fn usage_from_chat(u: &Value) -> Option<Value> {
    let u = u.as_object()?;
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let input = n(u.get("prompt_tokens"));
    let output = n(u.get("completion_tokens"));
    let total = u
        .get("total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(input.saturating_add(output));
    let prompt_details = u.get("prompt_tokens_details");
    let cached = n(prompt_details.and_then(|d| d.get("cached_tokens")));
    let cache_write = n(prompt_details.and_then(|d| d.get("cache_write_tokens")));
    let reasoning = n(u
        .get("completion_tokens_details")
        .and_then(|d| d.get("reasoning_tokens")));
    Some(json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": cache_write},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": total,
    }))
}

pub(crate) fn reasoning_item(id: String, text: &str, status: &str) -> Value {
    json!({
        "id": id,
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
        "status": status,
    })
}

pub(crate) fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

pub(crate) fn refusal_part(refusal: &str) -> Value {
    json!({"type": "refusal", "refusal": refusal})
}

pub(crate) fn message_item(id: String, content: Vec<Value>, status: &str) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    })
}

/// A `function_call` output item. A call to a member of a `namespace` tool (known to
/// chat by its flat name) comes back as Codex expects it: `name` the member's own name,
/// `namespace` the namespace's.
pub(crate) fn call_item(
    ctx: &ResponseCtx,
    id: String,
    call_id: &str,
    name: &str,
    arguments: &str,
    status: &str,
) -> Value {
    let mut item = json!({
        "id": id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    });
    if let Some((ns, member)) = namespace_member(&ctx.request, name) {
        item["name"] = Value::String(member.to_owned());
        item["namespace"] = Value::String(ns.to_owned());
    }
    item
}

/// A chat completion as a Response object.
pub fn response_from_chat(chat: &Value, ctx: &ResponseCtx) -> Result<Value, TranslateError> {
    let choice = chat
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| TranslateError::at("choices", "the chat completion has no choices"))?;
    let message = choice
        .get("message")
        .and_then(Value::as_object)
        .ok_or_else(|| TranslateError::at("choices[0].message", "the choice has no message"))?;
    let status = Status::from_finish(choice.get("finish_reason").and_then(Value::as_str));
    let item_status = status.item_status();

    let mut output = Vec::new();
    if let Some(r) = reasoning_text(message).filter(|r| !r.is_empty()) {
        output.push(reasoning_item(
            ctx.item_id("rs", output.len()),
            r,
            "completed",
        ));
    }
    let text = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        // Some providers answer with a list of text parts.
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    };
    let refusal = message.get("refusal").and_then(Value::as_str);
    let calls = match message.get("tool_calls") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(calls)) => calls.as_slice(),
        Some(_) => {
            return Err(TranslateError::at(
                "choices[0].message.tool_calls",
                "`tool_calls` must be a list",
            ));
        }
    };
    if !text.is_empty() || refusal.is_some() || calls.is_empty() {
        let mut content = Vec::new();
        if !text.is_empty() || refusal.is_none() {
            content.push(text_part(&text));
        }
        if let Some(r) = refusal {
            content.push(refusal_part(r));
        }
        output.push(message_item(
            ctx.item_id("msg", output.len()),
            content,
            item_status,
        ));
    }
    for (i, call) in calls.iter().enumerate() {
        let at = format!("choices[0].message.tool_calls[{i}]");
        let function = call
            .get("function")
            .ok_or_else(|| TranslateError::at(&at, "a tool call has no `function`"))?;
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                TranslateError::at(format!("{at}.function.name"), "a tool call has no name")
            })?;
        let arguments = match function.get("arguments") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => String::new(),
            Some(v) => v.to_string(),
        };
        let index = output.len();
        let call_id = match call.get("id").and_then(Value::as_str) {
            Some(id) => id.to_owned(),
            None => ctx.item_id("call", index),
        };
        output.push(call_item(
            ctx,
            ctx.item_id("fc", index),
            &call_id,
            name,
            &arguments,
            item_status,
        ));
    }
    let usage = chat.get("usage").and_then(usage_from_chat);
    Ok(ctx.response(
        now(),
        ResponseState {
            status,
            output,
            usage,
        },
    ))
}

/// Reasoning text of a chat message or delta: `reasoning_content` (DeepSeek, vLLM, …) or
/// `reasoning` (OpenRouter, newer vLLM).
pub(crate) fn reasoning_text(obj: &Map<String, Value>) -> Option<&str> {
    obj.get("reasoning_content")
        .and_then(Value::as_str)
        .or_else(|| obj.get("reasoning").and_then(Value::as_str))
}

/// The `output` items of a Response object (empty when there are none).
pub fn output_items(resp: &Value) -> Vec<Value> {
    resp.get("output")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}
