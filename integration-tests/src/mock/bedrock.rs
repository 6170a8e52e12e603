//! Amazon Bedrock Converse: `POST …/model/{modelId}/converse` and `…/converse-stream`.
//!
//! Shapes from the Bedrock Runtime API reference (`Converse`, `ConverseStream`): the answer
//! is `{"output": {"message": …}, "stopReason", "usage", "metrics"}`; the stream is a body of
//! `application/vnd.amazon.eventstream` frames, one per event, whose `:event-type` header
//! names the event (`messageStart`, `contentBlockStart` for tool use only,
//! `contentBlockDelta`, `contentBlockStop`, `messageStop`, `metadata`) and whose JSON
//! payload is that event's members. Errors are `{"message"}` with `x-amzn-errortype`.
//!
//! The frame encoder is our own (no AWS crate): prelude (total length u32 BE, headers
//! length u32 BE, CRC32 of those 8 bytes), headers (name length u8, name, type 7 = string,
//! value length u16 BE, value), payload, CRC32 of everything before it.

use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::{Value, json};

use super::conversation::{
    Answer, Choice, Conversation, Usage, argument_fragments, pick_tool, text_pieces,
};
use super::{Ctx, Out};

pub(crate) const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";
const TOOL_ID: &str = "tooluse_mock_1";

/// The model id of a `…/model/{modelId}/converse[-stream]` path, percent-decoded (ids such
/// as `anthropic.claude-3-haiku-20240307-v1:0` arrive with `%3A`).
pub(crate) fn model_id(path: &str) -> Option<String> {
    let (_, rest) = path.rsplit_once("/model/")?;
    let (id, op) = rest.split_once('/')?;
    if id.is_empty() || !(op == "converse" || op == "converse-stream") {
        return None;
    }
    Some(percent_decode(id))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn conversation(body: &Value) -> Conversation {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let tools = body
        .pointer("/toolConfig/tools")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|t| {
            let spec = t.get("toolSpec")?;
            let name = spec.get("name")?.as_str()?.to_string();
            let schema = spec.pointer("/inputSchema/json").cloned();
            Some((name, schema.unwrap_or(json!({}))))
        })
        .collect();
    // Converse has no "none" choice: `auto`, `any`, or `{"tool": {"name"}}`.
    let choice = body
        .pointer("/toolConfig/toolChoice/tool/name")
        .and_then(Value::as_str)
        .map_or(Choice::First, |n| Choice::Named(n.into()));
    let blocks = |m: &Value| -> Vec<Value> {
        m.get("content")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let tool_result = messages
        .last()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| {
            let results: Vec<String> = blocks(m)
                .iter()
                .filter_map(|b| b.get("toolResult"))
                .map(|r| result_text(r.get("content").unwrap_or(&Value::Null)))
                .collect();
            (!results.is_empty()).then(|| results.join("\n"))
        });
    let user_text = messages
        .iter()
        .rev()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .find_map(|m| {
            let texts: Vec<String> = blocks(m)
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str).map(str::to_string))
                .collect();
            (!texts.is_empty()).then(|| texts.join(""))
        });
    Conversation {
        tool: pick_tool(tools, choice),
        tool_result,
        user_text,
    }
}

/// A tool result's content blocks as text: `text` as is, `json` serialised.
fn result_text(content: &Value) -> String {
    content
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| match (b.get("text"), b.get("json")) {
                    (Some(Value::String(t)), _) => Some(t.clone()),
                    (_, Some(j)) => Some(j.to_string()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("")
        })
        .unwrap_or_default()
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "inputTokens": u.uncached(), "outputTokens": u.output, "totalTokens": u.total(),
        "cacheReadInputTokens": u.cached, "cacheWriteInputTokens": u.cache_write
    })
}

pub(crate) fn render(ctx: &Ctx, answer: &Answer) -> Out {
    let stop = match answer {
        Answer::Text(_) if ctx.stop_sequence.is_some() => "stop_sequence",
        Answer::Text(_) if ctx.truncated => "max_tokens",
        Answer::Text(_) => "end_turn",
        Answer::ToolCall { .. } => "tool_use",
    };
    if !ctx.stream {
        let block = match answer {
            Answer::Text(text) => json!({"text": text}),
            Answer::ToolCall { name, arguments } => {
                json!({"toolUse": {"toolUseId": TOOL_ID, "name": name, "input": arguments}})
            }
        };
        return Out::Json(json!({
            "output": {"message": {"role": "assistant", "content": [block]}},
            "stopReason": stop,
            "usage": usage_json(&ctx.usage),
            "metrics": {"latencyMs": 1}
        }));
    }
    let mut frames = vec![bedrock_frame("messageStart", &json!({"role": "assistant"}))];
    match answer {
        Answer::Text(text) => {
            for piece in text_pieces(text) {
                frames.push(bedrock_frame(
                    "contentBlockDelta",
                    &json!({"contentBlockIndex": 0, "delta": {"text": piece}}),
                ));
            }
        }
        Answer::ToolCall { name, arguments } => {
            frames.push(bedrock_frame(
                "contentBlockStart",
                &json!({"contentBlockIndex": 0,
                        "start": {"toolUse": {"toolUseId": TOOL_ID, "name": name}}}),
            ));
            for fragment in argument_fragments(&arguments.to_string()) {
                frames.push(bedrock_frame(
                    "contentBlockDelta",
                    &json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": fragment}}}),
                ));
            }
        }
    }
    frames.extend(tail(stop, &ctx.usage));
    Out::Frames(frames)
}

fn tail(stop: &str, usage: &Usage) -> [Vec<u8>; 3] {
    [
        bedrock_frame("contentBlockStop", &json!({"contentBlockIndex": 0})),
        bedrock_frame("messageStop", &json!({"stopReason": stop})),
        bedrock_frame(
            "metadata",
            &json!({"usage": usage_json(usage), "metrics": {"latencyMs": 1}}),
        ),
    ]
}

/// A complete converse-stream text answer sending `pieces` as text deltas (10 input tokens,
/// one output token per piece, `end_turn`), for [`super::Reply::event_stream`].
pub fn bedrock_stream(pieces: &[&str]) -> Vec<Vec<u8>> {
    let usage = Usage::fixed(10, pieces.len() as u64);
    let mut frames = vec![bedrock_frame("messageStart", &json!({"role": "assistant"}))];
    for piece in pieces {
        frames.push(bedrock_frame(
            "contentBlockDelta",
            &json!({"contentBlockIndex": 0, "delta": {"text": piece}}),
        ));
    }
    frames.extend(tail("end_turn", &usage));
    frames
}

/// One event-stream event frame: `:event-type` = `event_type`, JSON `payload`.
pub fn bedrock_frame(event_type: &str, payload: &Value) -> Vec<u8> {
    frame(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

/// One event-stream exception frame (e.g. `throttlingException`, `modelStreamErrorException`)
/// with payload `{"message": message}`, as the service sends an error in mid-stream.
pub fn bedrock_exception_frame(exception_type: &str, message: &str) -> Vec<u8> {
    frame(
        &[
            (":exception-type", exception_type),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        json!({"message": message}).to_string().as_bytes(),
    )
}

/// Encodes one frame. Names longer than 255 bytes and values longer than 65,535 bytes are
/// cut, since the format cannot carry them.
fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut head = Vec::new();
    for (name, value) in headers {
        let name = &name.as_bytes()[..name.len().min(u8::MAX as usize)];
        let value = &value.as_bytes()[..value.len().min(u16::MAX as usize)];
        head.push(name.len() as u8);
        head.extend_from_slice(name);
        head.push(7);
        head.extend_from_slice(&(value.len() as u16).to_be_bytes());
        head.extend_from_slice(value);
    }
    let total = 12 + head.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Bedrock's error shape: `{"message"}` and the error type in `x-amzn-errortype`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    let kind = match status.as_u16() {
        400 => "ValidationException",
        401 => "UnrecognizedClientException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        s if s >= 500 => "InternalServerException",
        _ => "ValidationException",
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::HeaderName::from_static("x-amzn-errortype"), kind),
        ],
        json!({"message": message}).to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_are_decoded_and_other_paths_refused() {
        assert_eq!(
            model_id("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse").as_deref(),
            Some("anthropic.claude-3-haiku-20240307-v1:0")
        );
        assert_eq!(model_id("/x/model/m/converse-stream").as_deref(), Some("m"));
        assert_eq!(model_id("/model/m/invoke"), None);
        assert_eq!(model_id("/model//converse"), None);
        assert_eq!(percent_decode("a%zz%4"), "a%zz%4");
    }

    /// The encoder against two frames from aws-c-event-stream's tests (the empty message,
    /// and a headerless `{'foo':'bar'}` payload): byte for byte, both CRCs included.
    #[test]
    fn frames_match_the_reference_vectors() {
        assert_eq!(
            frame(&[], b""),
            [
                0, 0, 0, 0x10, 0, 0, 0, 0, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff
            ]
        );
        let mut expected = vec![0, 0, 0, 0x1d, 0, 0, 0, 0, 0xfd, 0x52, 0x8c, 0x5a];
        expected.extend_from_slice(b"{'foo':'bar'}");
        expected.extend_from_slice(&[0xc3, 0x65, 0x39, 0x36]);
        assert_eq!(frame(&[], b"{'foo':'bar'}"), expected);
    }

    #[test]
    fn frame_lengths_add_up() {
        let f = bedrock_frame("messageStop", &json!({"stopReason": "end_turn"}));
        let total = u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize;
        assert_eq!(total, f.len());
    }
}
