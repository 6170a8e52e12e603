//! Amazon Bedrock through the Converse API, upstream side: chat request → Converse request,
//! Converse response → chat completion, and ([`StreamToChat`]) converse-stream events →
//! chat chunks. The binary framing of converse-stream is [`super::eventstream`].
//!
//! The model id travels in the URL (`/model/{id}/converse` or `/converse-stream`, built by
//! `plan::upstream_path`), not in the body, and the choice between streaming and not is
//! the path: `model`, `stream` and `stream_options` are not part of the Converse body.
//!
//! Mappings that are not one to one:
//! - Converse needs user/assistant alternation: consecutive messages of one role are merged,
//!   `tool` messages become `toolResult` blocks of a user message, `system` and `developer`
//!   messages (wherever they are) go to the top-level `system` list in order.
//! - Images must be inline: a `data:` URL becomes an `image` block; an `http(s)` URL is a
//!   400, Bedrock does not fetch URLs. Audio and file parts are a 400 as well.
//! - `reasoning_content` of earlier assistant turns is dropped: Converse only takes
//!   reasoning back with the signature the model gave, which chat does not carry.
//! - `tool_choice`: `auto` → `{auto}`, `required` → `{any}`, a named function → `{tool}`.
//!   Converse has no `none`: the tools are left out, unless the conversation already holds
//!   tool calls (Bedrock rejects `toolUse`/`toolResult` blocks without a `toolConfig`), in
//!   which case the tools are sent without a choice. For the same reason a conversation
//!   with tool calls but no `tools` declares the tools it used, with an open schema.
//! - A text or image part carrying `cache_control` (the Anthropic-style marker some chat
//!   clients send) is followed by a `{"cachePoint": {"type": "default"}}` block, Converse's
//!   way to end a cacheable prefix (in `system` and in messages, not inside tool results).
//! - `response_format` other than `text` and `n` other than 1 are a 400 (no equivalent).
//!   `metadata` (string values) and `user` become `requestMetadata`, which Bedrock keeps in
//!   its invocation logs. Sampling knobs Converse lacks (penalties, seed, logprobs) are
//!   dropped.
//! - Usage: Converse's `inputTokens` excludes cache reads and writes (as Anthropic's
//!   `input_tokens` does), so `prompt_tokens = inputTokens + cacheReadInputTokens +
//!   cacheWriteInputTokens`, `cached_tokens = cacheReadInputTokens`, and the cache writes
//!   are also reported as `prompt_tokens_details.cache_write_tokens` when non-zero.
//!   `total_tokens = prompt_tokens + completion_tokens`. Converse reports no reasoning
//!   token count, so `completion_tokens_details` is absent.
//! - Stop reasons: `end_turn`/`stop_sequence` → `stop`, `tool_use` → `tool_calls`,
//!   `max_tokens`/`model_context_window_exceeded` → `length`, `guardrail_intervened`/
//!   `content_filtered` → `content_filter`, anything else → `stop`.

mod request;
mod stream;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::TranslateError;

pub use request::request_from_chat;
pub use stream::StreamToChat;

/// What a chat response needs that a Converse response does not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseCtx {
    /// The model name to report (what the client asked for).
    pub model: String,
    /// The chat completion id (`chatcmpl-…`).
    pub id: String,
    /// Unix seconds.
    pub created: u64,
}

impl ResponseCtx {
    /// A fresh id and the current time.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}

/// A Converse response → a `chat.completion` reporting `model`, with a fresh id.
pub fn response_to_chat(resp: &Value, model: &str) -> Result<Value, TranslateError> {
    response_to_chat_with(resp, &ResponseCtx::new(model))
}

/// [`response_to_chat`] with a given id and timestamp.
pub fn response_to_chat_with(resp: &Value, ctx: &ResponseCtx) -> Result<Value, TranslateError> {
    let content = resp
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            TranslateError::at(
                "output.message.content",
                "Bedrock response has no output.message.content array",
            )
        })?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for (i, block) in content.iter().enumerate() {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(tool) = block.get("toolUse") {
            tool_calls.push(tool_call(
                tool,
                &format!("output.message.content[{i}].toolUse"),
            )?);
        } else if let Some(t) = block
            .pointer("/reasoningContent/reasoningText/text")
            .and_then(Value::as_str)
        {
            reasoning.push_str(t);
        }
        // Other blocks (redacted reasoning, citations, images) have no chat form.
    }
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert(
        "content".into(),
        if text.is_empty() && !tool_calls.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        },
    );
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), Value::String(reasoning));
    }
    if !tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    let finish = finish_reason(resp.get("stopReason").and_then(Value::as_str));
    let mut out = json!({
        "id": ctx.id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish,
            "logprobs": null,
        }],
    });
    if let (Some(usage), Some(map)) = (resp.get("usage"), out.as_object_mut()) {
        map.insert("usage".into(), usage_to_chat(usage));
    }
    Ok(out)
}

fn tool_call(tool: &Value, at: &str) -> Result<Value, TranslateError> {
    let field = |name: &str| {
        tool.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::at(format!("{at}.{name}"), "missing or not a string"))
    };
    let input = tool.get("input").cloned().unwrap_or_else(|| json!({}));
    Ok(json!({
        "id": field("toolUseId")?,
        "type": "function",
        "function": { "name": field("name")?, "arguments": input.to_string() },
    }))
}

pub(crate) fn finish_reason(stop: Option<&str>) -> &'static str {
    match stop {
        Some("tool_use") => "tool_calls",
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("guardrail_intervened" | "content_filtered") => "content_filter",
        _ => "stop",
    }
}

/// Converse `usage` → chat `usage` (see the module doc for the cache arithmetic).
pub(crate) fn usage_to_chat(usage: &Value) -> Value {
    let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
    let (input, output) = (n("inputTokens"), n("outputTokens"));
    let (read, write) = (n("cacheReadInputTokens"), n("cacheWriteInputTokens"));
    let prompt = input.saturating_add(read).saturating_add(write);
    let mut details = json!({ "cached_tokens": read });
    if write > 0 {
        details["cache_write_tokens"] = json!(write);
    }
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt.saturating_add(output),
        "prompt_tokens_details": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_adds_cache_reads_and_writes_to_the_prompt() {
        let u = usage_to_chat(&json!({
            "inputTokens": 10, "outputTokens": 5, "totalTokens": 1015,
            "cacheReadInputTokens": 900, "cacheWriteInputTokens": 100
        }));
        assert_eq!(
            u,
            json!({
                "prompt_tokens": 1010, "completion_tokens": 5, "total_tokens": 1015,
                "prompt_tokens_details": {"cached_tokens": 900, "cache_write_tokens": 100}
            })
        );
        let u = usage_to_chat(&json!({"inputTokens": u64::MAX, "cacheReadInputTokens": 1}));
        assert_eq!(u["prompt_tokens"], json!(u64::MAX));
    }

    #[test]
    fn fresh_ctx_ids_differ() {
        let (a, b) = (ResponseCtx::new("m"), ResponseCtx::new("m"));
        assert_ne!(a.id, b.id);
        assert!(a.id.starts_with("chatcmpl-"));
        assert!(a.created > 1_600_000_000);
    }
}
