//! converse-stream events → chat chunks.
//!
//! Bedrock's order is `messageStart`, then per content block an optional
//! `contentBlockStart` (only tool blocks have one), `contentBlockDelta`s and
//! `contentBlockStop`, then `messageStop` with the stop reason, and last `metadata` with the
//! usage. Chat clients expect the finish chunk and then one usage chunk with empty
//! `choices`, which is that same order; a `metadata` arriving before `messageStop` is held
//! back until the finish chunk so the order the client sees never changes.
//!
//! Events arrive as the event-stream decoder yields them (`event` = `:event-type`, `data` =
//! the JSON payload). The wrapped JSON form `{"contentBlockDelta": {…}}` with no event name
//! is accepted too, as some proxies and mocks re-frame Bedrock streams that way.

use serde_json::{Value, json};

use super::{ResponseCtx, finish_reason, usage_to_chat};
use crate::providers::sse::SseEvent;
use crate::providers::{TranslateError, UpstreamStream};

/// Exception event types Bedrock can send mid-stream (see [`crate::providers::eventstream`]
/// for how the binary framing surfaces them as `exception`).
const EXCEPTIONS: &[&str] = &[
    "exception",
    "internalServerException",
    "modelStreamErrorException",
    "validationException",
    "throttlingException",
    "serviceUnavailableException",
];

pub struct StreamToChat {
    ctx: ResponseCtx,
    role_sent: bool,
    /// `contentBlockIndex` → chat `tool_calls[].index`, for tool blocks only.
    tool_blocks: Vec<(u64, u64)>,
    stopped: bool,
    usage: Option<Value>,
    usage_sent: bool,
}

impl StreamToChat {
    pub fn new(ctx: ResponseCtx) -> Self {
        Self {
            ctx,
            role_sent: false,
            tool_blocks: Vec::new(),
            stopped: false,
            usage: None,
            usage_sent: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.ctx.id,
            "object": "chat.completion.chunk",
            "created": self.ctx.created,
            "model": self.ctx.model,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        })
    }

    /// A content chunk; the first one also carries the role, should `messageStart` be missing.
    fn delta(&mut self, mut delta: Value) -> Value {
        if !self.role_sent {
            self.role_sent = true;
            delta["role"] = json!("assistant");
        }
        self.chunk(delta, None)
    }

    fn usage_chunk(&mut self) -> Option<Value> {
        if self.usage_sent {
            return None;
        }
        let usage = self.usage.take()?;
        self.usage_sent = true;
        Some(json!({
            "id": self.ctx.id,
            "object": "chat.completion.chunk",
            "created": self.ctx.created,
            "model": self.ctx.model,
            "choices": [],
            "usage": usage,
        }))
    }

    fn tool_index(&self, block: u64) -> Option<u64> {
        self.tool_blocks
            .iter()
            .find(|(b, _)| *b == block)
            .map(|(_, t)| *t)
    }

    fn on(&mut self, name: &str, p: &Value) -> Result<Vec<Value>, TranslateError> {
        if EXCEPTIONS.contains(&name) {
            let kind = p.get("type").and_then(Value::as_str).unwrap_or(name);
            let message = p
                .get("message")
                .or_else(|| p.get("Message"))
                .and_then(Value::as_str)
                .unwrap_or("no message");
            return Err(TranslateError::new(format!(
                "Bedrock stream error ({kind}): {message}"
            )));
        }
        if self.stopped && name != "metadata" {
            return Ok(Vec::new()); // nothing after the close but the usage
        }
        let block = p
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match name {
            "messageStart" if !self.role_sent => {
                self.role_sent = true;
                Ok(vec![self.chunk(
                    json!({ "role": "assistant", "content": "" }),
                    None,
                )])
            }
            "contentBlockStart" => {
                let Some(tool) = p.pointer("/start/toolUse") else {
                    return Ok(Vec::new());
                };
                let field = |k: &str| {
                    tool.get(k).and_then(Value::as_str).ok_or_else(|| {
                        TranslateError::at(
                            format!("contentBlockStart.start.toolUse.{k}"),
                            "Bedrock stream: missing or not a string",
                        )
                    })
                };
                let (id, fname) = (field("toolUseId")?, field("name")?);
                if self.tool_index(block).is_some() {
                    return Err(TranslateError::new(format!(
                        "Bedrock stream started content block {block} twice"
                    )));
                }
                let index = self.tool_blocks.len() as u64;
                self.tool_blocks.push((block, index));
                let delta = json!({ "tool_calls": [{
                    "index": index, "id": id, "type": "function",
                    "function": { "name": fname, "arguments": "" },
                }]});
                Ok(vec![self.delta(delta)])
            }
            "contentBlockDelta" => {
                let Some(d) = p.get("delta") else {
                    return Ok(Vec::new());
                };
                if let Some(text) = d.get("text").and_then(Value::as_str) {
                    return Ok(vec![self.delta(json!({ "content": text }))]);
                }
                if let Some(input) = d.pointer("/toolUse/input").and_then(Value::as_str) {
                    let index = self.tool_index(block).ok_or_else(|| {
                        TranslateError::new(format!(
                            "Bedrock stream sent tool input for content block {block} before its contentBlockStart"
                        ))
                    })?;
                    let delta = json!({ "tool_calls": [{
                        "index": index, "function": { "arguments": input },
                    }]});
                    return Ok(vec![self.delta(delta)]);
                }
                if let Some(text) = d.pointer("/reasoningContent/text").and_then(Value::as_str) {
                    return Ok(vec![self.delta(json!({ "reasoning_content": text }))]);
                }
                Ok(Vec::new()) // signatures, redacted reasoning, citations: no chat form
            }
            "messageStop" => {
                self.stopped = true;
                let reason = finish_reason(p.get("stopReason").and_then(Value::as_str));
                let mut out = Vec::new();
                if !self.role_sent {
                    self.role_sent = true;
                    out.push(self.chunk(json!({ "role": "assistant", "content": "" }), None));
                }
                out.push(self.chunk(json!({}), Some(reason)));
                out.extend(self.usage_chunk());
                Ok(out)
            }
            "metadata" => {
                if let Some(usage) = p.get("usage").filter(|_| !self.usage_sent) {
                    self.usage = Some(usage_to_chat(usage));
                }
                Ok(if self.stopped {
                    self.usage_chunk().into_iter().collect()
                } else {
                    Vec::new()
                })
            }
            _ => Ok(Vec::new()), // contentBlockStop, a repeated messageStart, future events
        }
    }
}

impl UpstreamStream for StreamToChat {
    fn event(&mut self, event: &SseEvent) -> Result<Vec<Value>, TranslateError> {
        let payload: Value = serde_json::from_str(&event.data)
            .map_err(|e| TranslateError::new(format!("Bedrock stream event is not JSON: {e}")))?;
        match event.event.as_deref() {
            Some(name) if name != "message" => self.on(name, &payload),
            _ => match payload.as_object() {
                Some(map) if map.len() == 1 => {
                    let Some((name, inner)) = map.iter().next() else {
                        return Ok(Vec::new());
                    };
                    self.on(name, inner)
                }
                _ => Ok(Vec::new()),
            },
        }
    }

    fn finish(&mut self) -> Result<Vec<Value>, TranslateError> {
        if !self.stopped {
            return Err(TranslateError::new(
                "Bedrock stream ended before its messageStop event",
            ));
        }
        Ok(Vec::new())
    }
}
