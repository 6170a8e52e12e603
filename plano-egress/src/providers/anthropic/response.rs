//! Whole (non-streamed) responses: chat completion → Message (client side) and Message →
//! chat completion (upstream side).

use serde_json::{Value, json};

use super::{Obj, Tokens, finish_reason_from_anthropic, present, unix_now};
#[cfg(test)]
use super::{matched_stop_sequence, message_id, stop_reason_from_chat, tool_input};
use crate::providers::TranslateError;

/// What a translated response needs from the client's Messages request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseCtx {
    /// The model the client asked for, echoed in the response.
    pub model: String,
    /// The client's `stop_sequences`, to report which one matched when the provider says.
    pub stop_sequences: Vec<String>,
    /// An estimate of the request's input tokens, for `message_start` (a chat stream
    /// reports usage only at its end): the bytes of `system`, `messages` and `tools`
    /// text / 4, the same rough rule as rate limits for non-OpenAI models.
    pub input_tokens_estimate: u64,
}

/// Only the model: the matched stop sequence is then never reported.
impl From<&str> for ResponseCtx {
    fn from(model: &str) -> Self {
        ResponseCtx {
            model: model.to_owned(),
            stop_sequences: Vec::new(),
            input_tokens_estimate: 0,
        }
    }
}

impl From<&ResponseCtx> for ResponseCtx {
    fn from(ctx: &ResponseCtx) -> Self {
        ctx.clone()
    }
}

impl ResponseCtx {
    /// From the client's Messages request (before translation).
    pub fn from_request(req: &Obj) -> Self {
        ResponseCtx {
            model: req
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            stop_sequences: stop_sequences(req),
            input_tokens_estimate: ["system", "messages", "tools"]
                .iter()
                .filter_map(|k| req.get(*k))
                .map(text_bytes)
                .sum::<usize>()
                .div_ceil(4) as u64,
        }
    }
}

/// The client's `stop_sequences` (its strings).
fn stop_sequences(req: &Obj) -> Vec<String> {
    req.get("stop_sequences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl ResponseCtx {
    /// For a whole answer to the client's Messages request `req`, echoing `model`: without
    /// the input tokens estimate, which only a stream's `message_start` carries.
    pub fn for_answer(req: &Obj, model: &str) -> Self {
        ResponseCtx {
            model: model.to_owned(),
            stop_sequences: stop_sequences(req),
            input_tokens_estimate: 0,
        }
    }
}

/// Roughly the bytes a model reads of a JSON value: its strings (keys included) and
/// numbers, without the JSON punctuation.
fn text_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(text_bytes).sum(),
        Value::Object(o) => o.iter().map(|(k, v)| k.len() + text_bytes(v)).sum(),
        Value::Number(_) | Value::Bool(_) => 4,
        Value::Null => 0,
    }
}

/// The translation as it was written on trees, before `from_chat::message_from_chat_json`:
/// the reference the tests compare it with.
#[cfg(test)]
pub(super) fn response_from_chat_tree(
    chat: &Value,
    ctx: impl Into<ResponseCtx>,
) -> Result<Value, TranslateError> {
    let ctx = ctx.into();
    let choice = chat
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| TranslateError::at("choices", "the chat completion has no choices"))?;
    let message = choice
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| {
            TranslateError::at("choices[0].message", "the chat completion has no message")
        })?;

    let mut content = Vec::new();
    let reasoning = ["reasoning_content", "reasoning"]
        .iter()
        .find_map(|k| message.get(*k).and_then(Value::as_str))
        .filter(|s| !s.is_empty());
    if let Some(thinking) = reasoning {
        content.push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
    }
    let text = chat_text(message.get("content"));
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    let refusal = message
        .get("refusal")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    if let Some(r) = refusal {
        content.push(json!({"type": "text", "text": r}));
    }
    let calls = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let id = message_id(chat.get("id").and_then(Value::as_str));
    for (i, call) in calls.iter().enumerate() {
        let args = call.pointer("/function/arguments");
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").and_then(Value::as_str).filter(|s| !s.is_empty())
                .map_or_else(|| format!("toolu_{}_{i}", id.trim_start_matches("msg_")), str::to_owned),
            "name": call.pointer("/function/name").and_then(Value::as_str).unwrap_or_default(),
            "input": tool_input(args),
        }));
    }

    let finish = choice.get("finish_reason").and_then(Value::as_str);
    let stop_sequence = matched_stop_sequence(choice, &ctx.stop_sequences);
    let stop_reason = match (&stop_sequence, refusal) {
        (_, Some(_)) => "refusal",
        (Some(_), None) if finish == Some("stop") && calls.is_empty() => "stop_sequence",
        _ => stop_reason_from_chat(finish, !calls.is_empty()),
    };
    let usage = chat.get("usage").map(Tokens::from_chat).unwrap_or_default();
    Ok(json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": ctx.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": if stop_reason == "stop_sequence" { stop_sequence } else { None },
        "usage": usage.to_anthropic(),
    }))
}

/// Text of chat message content: a string, or the text of its parts.
#[cfg(test)]
fn chat_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// Message → chat completion.
pub fn response_to_chat(resp: &Value) -> Result<Value, TranslateError> {
    if resp.get("type").and_then(Value::as_str) != Some("message") {
        return Err(TranslateError::at(
            "type",
            "the Anthropic response is not a message",
        ));
    }
    let blocks = resp
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::at("content", "the Anthropic message has no content"))?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(str_of(block, "text")),
            Some("thinking") => reasoning.push_str(str_of(block, "thinking")),
            Some("tool_use") => {
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": str_of(block, "id"),
                    "type": "function",
                    "function": {"name": str_of(block, "name"), "arguments": input.to_string()},
                }));
            }
            // Redacted thinking and server-tool blocks have no chat form.
            _ => {}
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() },
    });
    if !reasoning.is_empty() {
        message["reasoning_content"] = reasoning.into();
    }
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let finish = finish_reason_from_anthropic(resp.get("stop_reason").and_then(Value::as_str));
    let usage = resp
        .get("usage")
        .map(Tokens::from_anthropic)
        .unwrap_or_default();
    let obj = resp.as_object();
    Ok(json!({
        "id": obj.and_then(|o| present(o, "id")).cloned().unwrap_or_else(|| "".into()),
        "object": "chat.completion",
        "created": unix_now(),
        "model": obj.and_then(|o| present(o, "model")).cloned().unwrap_or_else(|| "".into()),
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": usage.to_chat(),
    }))
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}
