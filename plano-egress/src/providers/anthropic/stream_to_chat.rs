//! Messages stream events → chat completion chunks (upstream side).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{Tokens, finish_reason_from_anthropic, unix_now};
use crate::providers::{TranslateError, UpstreamStream};
use plano_common::sse::SseEvent;

/// Turns an Anthropic event stream into chat chunks: the first chunk carries
/// `role: assistant`; a `tool_use` block becomes a tool call (its `index` counts tool
/// blocks only, as chat clients expect consecutive indexes from 0); `message_delta` gives
/// the `finish_reason` chunk; `message_stop` a last chunk with empty `choices` and the
/// usage of `message_start` (input, cache) combined with `message_delta`'s (output).
pub struct StreamToChat {
    model: String,
    id: String,
    created: u64,
    started: bool,
    done: bool,
    finish_sent: bool,
    /// Anthropic block index → what it carries.
    blocks: HashMap<u64, Block>,
    tool_count: u64,
    usage: Tokens,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    /// Chat tool-call index, and whether any argument fragment was sent.
    Tool(u64, bool),
    /// Blocks with no chat form (redacted thinking, server tools): their deltas are dropped.
    Other,
}

impl StreamToChat {
    /// `model` is the name to report in chunks.
    pub fn new(model: impl Into<String>) -> Self {
        StreamToChat {
            model: model.into(),
            id: String::new(),
            created: unix_now(),
            started: false,
            done: false,
            finish_sent: false,
            blocks: HashMap::new(),
            tool_count: 0,
            usage: Tokens::default(),
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    }

    /// The role chunk, once, even if the upstream skipped `message_start`.
    fn ensure_started(&mut self, out: &mut Vec<Value>) {
        if !self.started {
            self.started = true;
            if self.id.is_empty() {
                self.id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
            }
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
    }

    fn block_start(&mut self, data: &Value, out: &mut Vec<Value>) -> Result<(), TranslateError> {
        let index = block_index(data)?;
        let block = data.get("content_block").unwrap_or(&Value::Null);
        let kind = match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(t) = nonempty(block, "text") {
                    out.push(self.chunk(json!({"content": t}), None));
                }
                Block::Text
            }
            Some("thinking") => {
                if let Some(t) = nonempty(block, "thinking") {
                    out.push(self.chunk(json!({"reasoning_content": t}), None));
                }
                Block::Thinking
            }
            Some("tool_use") => {
                let tool = self.tool_count;
                self.tool_count += 1;
                // `input` is `{}` at the start of a streamed block; a provider that sends
                // it whole instead gets it as one fragment.
                let args = block
                    .get("input")
                    .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                    .map(Value::to_string);
                out.push(self.chunk(
                    json!({"tool_calls": [{
                        "index": tool,
                        "id": str_of(block, "id"),
                        "type": "function",
                        "function": {"name": str_of(block, "name"), "arguments": args.as_deref().unwrap_or("")},
                    }]}),
                    None,
                ));
                Block::Tool(tool, args.is_some())
            }
            _ => Block::Other,
        };
        self.blocks.insert(index, kind);
        Ok(())
    }

    fn block_delta(&mut self, data: &Value, out: &mut Vec<Value>) -> Result<(), TranslateError> {
        let index = block_index(data)?;
        let Some(kind) = self.blocks.get_mut(&index) else {
            return Err(TranslateError::at(
                "index",
                format!(
                    "Anthropic sent a delta for content block {index}, which was never started"
                ),
            ));
        };
        let delta = data.get("delta").unwrap_or(&Value::Null);
        let chunk_delta = match (delta.get("type").and_then(Value::as_str), *kind) {
            (Some("text_delta"), _) => nonempty(delta, "text").map(|t| json!({"content": t})),
            (Some("thinking_delta"), _) => {
                nonempty(delta, "thinking").map(|t| json!({"reasoning_content": t}))
            }
            (Some("input_json_delta"), Block::Tool(tool, _)) => nonempty(delta, "partial_json")
                .map(|p| {
                    *kind = Block::Tool(tool, true);
                    json!({"tool_calls": [{"index": tool, "function": {"arguments": p}}]})
                }),
            // Signatures, citations and unknown deltas have no chat form.
            _ => None,
        };
        if let Some(d) = chunk_delta {
            out.push(self.chunk(d, None));
        }
        Ok(())
    }

    fn block_stop(&mut self, data: &Value, out: &mut Vec<Value>) -> Result<(), TranslateError> {
        let index = block_index(data)?;
        // A tool without arguments streams no fragment; chat clients parse the arguments
        // string, and "" is not JSON.
        if let Some(Block::Tool(tool, false)) = self.blocks.remove(&index) {
            out.push(self.chunk(
                json!({"tool_calls": [{"index": tool, "function": {"arguments": "{}"}}]}),
                None,
            ));
        }
        Ok(())
    }

    fn finish_chunk(&mut self, stop_reason: Option<&str>, out: &mut Vec<Value>) {
        if !self.finish_sent {
            self.finish_sent = true;
            let finish = finish_reason_from_anthropic(stop_reason);
            out.push(self.chunk(json!({}), Some(finish)));
        }
    }
}

impl UpstreamStream for StreamToChat {
    fn event(&mut self, event: &SseEvent) -> Result<Vec<Value>, TranslateError> {
        let mut out = Vec::new();
        if self.done || event.data.trim().is_empty() {
            return Ok(out);
        }
        let data: Value = serde_json::from_str(&event.data).map_err(|e| {
            TranslateError::new(format!("Anthropic sent an event that is not JSON: {e}"))
        })?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or_default();
        match kind {
            "message_start" => {
                let message = data.get("message").unwrap_or(&Value::Null);
                if let Some(id) = message.get("id").and_then(Value::as_str) {
                    self.id = id.to_owned();
                }
                if let Some(u) = message.get("usage") {
                    self.usage = Tokens::from_anthropic(u);
                }
                self.ensure_started(&mut out);
            }
            "content_block_start" => {
                self.ensure_started(&mut out);
                self.block_start(&data, &mut out)?;
            }
            "content_block_delta" => {
                self.ensure_started(&mut out);
                self.block_delta(&data, &mut out)?;
            }
            "content_block_stop" => self.block_stop(&data, &mut out)?,
            "message_delta" => {
                self.ensure_started(&mut out);
                if let Some(u) = data.get("usage") {
                    self.usage.update_from_anthropic(u);
                }
                let stop = data.pointer("/delta/stop_reason").and_then(Value::as_str);
                self.finish_chunk(stop, &mut out);
            }
            "message_stop" => {
                self.ensure_started(&mut out);
                self.finish_chunk(None, &mut out);
                out.push(json!({
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": self.usage.to_chat(),
                }));
                self.done = true;
            }
            "error" => {
                let kind = data
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("error");
                let message = data
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message");
                return Err(TranslateError::new(format!(
                    "Anthropic stream error ({kind}): {message}"
                )));
            }
            // `ping`, and event types added after this was written.
            _ => {}
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<Value>, TranslateError> {
        if self.done {
            Ok(Vec::new())
        } else {
            Err(TranslateError::new(
                "the Anthropic stream ended before message_stop",
            ))
        }
    }
}

fn block_index(data: &Value) -> Result<u64, TranslateError> {
    data.get("index").and_then(Value::as_u64).ok_or_else(|| {
        TranslateError::at(
            "index",
            "Anthropic sent a content block event without an index",
        )
    })
}

fn nonempty<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}
