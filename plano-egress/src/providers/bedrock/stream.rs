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
use crate::providers::{TranslateError, UpstreamStream};
use plano_common::sse::SseEvent;

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
    /// `model` is the name to report in chunks; the id and timestamp are fresh.
    pub fn new(model: impl Into<String>) -> Self {
        Self::with_ctx(ResponseCtx::new(model))
    }

    /// With a given id and timestamp (tests, or an id shared with other output).
    pub fn with_ctx(ctx: ResponseCtx) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::eventstream::{Decoder, encode_event};

    fn ctx() -> ResponseCtx {
        ResponseCtx {
            model: "m".into(),
            id: "chatcmpl-t".into(),
            created: 1,
        }
    }

    fn ev(name: &str, payload: Value) -> SseEvent {
        SseEvent::named(name, payload.to_string())
    }

    fn run(events: &[SseEvent]) -> (Vec<Value>, Result<Vec<Value>, TranslateError>) {
        let mut s = StreamToChat::with_ctx(ctx());
        let mut out = Vec::new();
        for e in events {
            out.extend(s.event(e).unwrap());
        }
        let end = s.finish();
        (out, end)
    }

    fn finishes(chunks: &[Value]) -> Vec<&str> {
        chunks
            .iter()
            .flat_map(|c| c["choices"].as_array().into_iter().flatten())
            .filter_map(|c| c["finish_reason"].as_str())
            .collect()
    }

    fn usages(chunks: &[Value]) -> usize {
        chunks.iter().filter(|c| c.get("usage").is_some()).count()
    }

    fn tool_stream() -> Vec<SseEvent> {
        vec![
            ev("messageStart", json!({"role": "assistant"})),
            ev(
                "contentBlockStart",
                json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "a", "name": "f"}}}),
            ),
            ev(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": "{\"x\":"}}}),
            ),
            ev(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": "1}"}}}),
            ),
            ev("contentBlockStop", json!({"contentBlockIndex": 0})),
            ev(
                "contentBlockStart",
                json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "b", "name": "g"}}}),
            ),
            ev(
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{}"}}}),
            ),
            ev("contentBlockStop", json!({"contentBlockIndex": 1})),
            ev("messageStop", json!({"stopReason": "tool_use"})),
            ev(
                "metadata",
                json!({"usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3}}),
            ),
        ]
    }

    #[test]
    fn tool_call_indexes_count_tool_blocks_only() {
        let mut events = vec![ev(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "hi"}}),
        )];
        // Shift the tool blocks to content indexes 1 and 2, after a text block.
        for e in tool_stream() {
            let mut p: Value = serde_json::from_str(&e.data).unwrap();
            if let Some(i) = p.get("contentBlockIndex").and_then(Value::as_u64) {
                p["contentBlockIndex"] = json!(i + 1);
            }
            events.push(SseEvent::named(e.event.unwrap(), p.to_string()));
        }
        let (chunks, end) = run(&events);
        assert!(end.unwrap().is_empty());
        let indexes: Vec<u64> = chunks
            .iter()
            .flat_map(|c| {
                c["choices"][0]["delta"]["tool_calls"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|t| t["index"].as_u64().unwrap())
            .collect();
        assert_eq!(indexes, vec![0, 0, 0, 1, 1]);
        // The role rides on the first chunk even though messageStart came after the text.
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": "hi"})
        );
    }

    #[test]
    fn split_wire_gives_the_same_chunks() {
        let events = tool_stream();
        let (expected, _) = run(&events);
        let wire: Vec<u8> = events
            .iter()
            .flat_map(|e| encode_event(e.event.as_deref().unwrap(), e.data.as_bytes()))
            .collect();
        for split in 0..=wire.len() {
            let mut d = Decoder::default();
            let mut s = StreamToChat::with_ctx(ctx());
            let mut out = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                d.push(part);
                while let Some(e) = d.next_event().unwrap() {
                    out.extend(s.event(&e).unwrap());
                }
            }
            d.finish().unwrap();
            s.finish().unwrap();
            assert_eq!(out, expected, "split at {split}");
        }
    }

    #[test]
    fn exactly_one_finish_and_one_usage() {
        let mut events = tool_stream();
        events.push(ev("messageStop", json!({"stopReason": "end_turn"})));
        events.push(ev("metadata", json!({"usage": {"inputTokens": 9}})));
        events.push(ev("contentBlockDelta", json!({"delta": {"text": "late"}})));
        let (chunks, end) = run(&events);
        assert_eq!(finishes(&chunks), vec!["tool_calls"]);
        assert_eq!(usages(&chunks), 1);
        assert_eq!(chunks.last().unwrap()["usage"]["prompt_tokens"], 1);
        assert!(end.unwrap().is_empty());
    }

    #[test]
    fn usage_held_back_until_the_finish_chunk() {
        let events = vec![
            ev("messageStart", json!({"role": "assistant"})),
            ev(
                "metadata",
                json!({"usage": {"inputTokens": 4, "outputTokens": 1}}),
            ),
            ev("contentBlockDelta", json!({"delta": {"text": "x"}})),
            ev("messageStop", json!({"stopReason": "end_turn"})),
        ];
        let (chunks, _) = run(&events);
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[3]["choices"], json!([]));
        assert_eq!(chunks[3]["usage"]["total_tokens"], 5);
    }

    #[test]
    fn new_reports_the_model_with_one_id_throughout() {
        let mut s = StreamToChat::new("claude-x");
        let mut chunks = s
            .event(&ev("messageStart", json!({"role": "assistant"})))
            .unwrap();
        chunks.extend(
            s.event(&ev("messageStop", json!({"stopReason": "end_turn"})))
                .unwrap(),
        );
        chunks.extend(s.event(&ev("metadata", json!({"usage": {}}))).unwrap());
        assert_eq!(chunks.len(), 3);
        let id = chunks[0]["id"].as_str().unwrap();
        assert!(id.starts_with("chatcmpl-"));
        for c in &chunks {
            assert_eq!(c["id"], id);
            assert_eq!(c["model"], "claude-x");
        }
    }

    #[test]
    fn no_usage_at_all_is_fine() {
        let (chunks, end) = run(&[ev("messageStop", json!({"stopReason": "max_tokens"}))]);
        assert_eq!(finishes(&chunks), vec!["length"]);
        assert_eq!(usages(&chunks), 0);
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert!(end.unwrap().is_empty());
    }

    #[test]
    fn broken_streams_are_errors() {
        // Ends after partial output.
        let events = &tool_stream()[..4];
        let (chunks, end) = run(events);
        assert_eq!(chunks.len(), 4);
        assert!(end.unwrap_err().message.contains("before its messageStop"));
        // Nothing at all.
        assert!(run(&[]).1.is_err());

        let mut s = StreamToChat::with_ctx(ctx());
        let err = s
            .event(&ev(
                "exception",
                json!({"type": "modelStreamErrorException", "message": "upstream model failed"}),
            ))
            .unwrap_err();
        assert_eq!(
            err.message,
            "Bedrock stream error (modelStreamErrorException): upstream model failed"
        );
        let err = s
            .event(&ev(
                "contentBlockDelta",
                json!({"contentBlockIndex": 3, "delta": {"toolUse": {"input": "{}"}}}),
            ))
            .unwrap_err();
        assert!(err.message.contains("before its contentBlockStart"));
        assert!(
            s.event(&SseEvent::named("messageStop", "not json"))
                .is_err()
        );
        let start = ev(
            "contentBlockStart",
            json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "a", "name": "f"}}}),
        );
        s.event(&start).unwrap();
        assert!(s.event(&start).is_err(), "a block started twice");
    }

    #[test]
    fn wrapped_json_form_is_understood() {
        let mut s = StreamToChat::with_ctx(ctx());
        let out = s
            .event(&SseEvent::data(
                r#"{"contentBlockDelta":{"contentBlockIndex":0,"delta":{"text":"yo"}}}"#,
            ))
            .unwrap();
        assert_eq!(out[0]["choices"][0]["delta"]["content"], "yo");
        let err = s
            .event(&SseEvent::data(
                r#"{"throttlingException":{"message":"slow"}}"#,
            ))
            .unwrap_err();
        assert_eq!(
            err.message,
            "Bedrock stream error (throttlingException): slow"
        );
        assert!(
            s.event(&SseEvent::data(r#"{"a":1,"b":2}"#))
                .unwrap()
                .is_empty()
        );
    }
}
