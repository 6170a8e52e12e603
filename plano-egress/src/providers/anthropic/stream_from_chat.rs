//! Chat completion chunks → Messages stream events (client side).

use serde_json::{Value, json};

use super::{ResponseCtx, Tokens, matched_stop_sequence, message_id, stop_reason_from_chat};
use crate::providers::ClientStream;
use plano_common::sse::SseEvent;

/// Turns chat chunks into `message_start`, `content_block_start`/`_delta`/`_stop`,
/// `message_delta` and `message_stop`.
///
/// Anthropic content blocks are sequential: one is open at a time, and a closed block never
/// gets more deltas. Chat streams text and reasoning freely, and a provider may interleave
/// the argument fragments of several tool calls. So text and reasoning open a new block
/// whenever the kind changes, the first tool call streams live, and whatever arrives while
/// a tool block is open (other tool calls, late text) is buffered and emitted as whole
/// blocks at the end. With OpenAI's own sequential tool calls this only delays the second
/// and later calls until the stream ends.
///
/// Chat sends usage after `finish_reason`, so `message_delta` waits for the usage chunk
/// (or for a usage on the finish chunk itself, or for [`ClientStream::finish`]).
pub struct StreamFromChat {
    ctx: ResponseCtx,
    id: String,
    started: bool,
    closed: bool,
    next_block: u64,
    open: Option<Open>,
    tools: Vec<ToolCall>,
    pending: Vec<Pending>,
    finish: Option<String>,
    stop_sequence: Option<String>,
    usage: Option<Tokens>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(u64),
    Thinking(u64),
    /// Block index, position in `tools`.
    Tool(u64, usize),
}

#[derive(Debug)]
struct ToolCall {
    chat_index: u64,
    id: Option<String>,
    name: Option<String>,
    arguments: String,
}

#[derive(Debug)]
enum Pending {
    Text(String),
    Thinking(String),
    Tool(usize),
}

impl StreamFromChat {
    /// `ctx`: [`ResponseCtx::from_request`] of the client's request, or just its model.
    pub fn new(ctx: impl Into<ResponseCtx>) -> Self {
        StreamFromChat {
            ctx: ctx.into(),
            id: String::new(),
            started: false,
            closed: false,
            next_block: 0,
            open: None,
            tools: Vec::new(),
            pending: Vec::new(),
            finish: None,
            stop_sequence: None,
            usage: None,
        }
    }

    fn start(&mut self, chunk_id: Option<&str>, out: &mut Vec<SseEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = message_id(chunk_id);
        let message = json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.ctx.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {
                "input_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 0,
            },
        });
        out.push(event(json!({"type": "message_start", "message": message})));
    }

    fn text(&mut self, text: &str, thinking: bool, out: &mut Vec<SseEvent>) {
        let delta = if thinking {
            json!({"type": "thinking_delta", "thinking": text})
        } else {
            json!({"type": "text_delta", "text": text})
        };
        match self.open {
            Some(Open::Text(i)) if !thinking => out.push(block_delta(i, delta)),
            Some(Open::Thinking(i)) if thinking => out.push(block_delta(i, delta)),
            Some(Open::Tool(..)) => self.buffer_text(text, thinking),
            _ => {
                self.close_open(out);
                let index = self.open_block(text_block(thinking), out);
                self.open = Some(if thinking {
                    Open::Thinking(index)
                } else {
                    Open::Text(index)
                });
                out.push(block_delta(index, delta));
            }
        }
    }

    fn buffer_text(&mut self, text: &str, thinking: bool) {
        match self.pending.last_mut() {
            Some(Pending::Text(s)) if !thinking => s.push_str(text),
            Some(Pending::Thinking(s)) if thinking => s.push_str(text),
            _ => self.pending.push(if thinking {
                Pending::Thinking(text.to_owned())
            } else {
                Pending::Text(text.to_owned())
            }),
        }
    }

    fn tool_delta(&mut self, call: &Value, position: usize, out: &mut Vec<SseEvent>) {
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let name = call
            .pointer("/function/name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let fragment = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let index = call.get("index").and_then(Value::as_u64);
        let known = self.find_tool(id, index);
        let chat_index = index.unwrap_or(position as u64);
        let pos = known.unwrap_or_else(|| {
            self.tools.push(ToolCall {
                chat_index,
                id: None,
                name: None,
                arguments: String::new(),
            });
            self.tools.len() - 1
        });
        let tool_open = matches!(self.open, Some(Open::Tool(..)));
        let live_ok = !tool_open && self.pending.is_empty();
        let Some(tool) = self.tools.get_mut(pos) else {
            return;
        };
        if let Some(id) = id {
            tool.id.get_or_insert_with(|| id.to_owned());
        }
        if let Some(name) = name {
            tool.name.get_or_insert_with(|| name.to_owned());
        }
        tool.arguments.push_str(fragment);
        if known.is_none() {
            // A call streams live only if it can be shown whole from here: named, and no
            // other block is waiting to be shown before it.
            if tool.name.is_some() && live_ok {
                self.close_open(out);
                let index = self.open_block(self.tool_block(pos), out);
                self.open = Some(Open::Tool(index, pos));
                if !fragment.is_empty() {
                    out.push(block_delta(index, json_delta(fragment)));
                }
            } else {
                self.pending.push(Pending::Tool(pos));
            }
        } else if let Some(Open::Tool(index, open_pos)) = self.open
            && open_pos == pos
            && !fragment.is_empty()
        {
            out.push(block_delta(index, json_delta(fragment)));
        }
    }

    /// The call a delta continues. Providers differ: OpenAI gives `id` on a call's first
    /// delta and `index` on all; some number every call 0 and tell them apart by `id`; some
    /// leave out `index` (then a delta without `id` continues the latest call); some give
    /// the `id` only after the first fragment.
    fn find_tool(&self, id: Option<&str>, index: Option<u64>) -> Option<usize> {
        let by_index = index.and_then(|ix| self.tools.iter().rposition(|t| t.chat_index == ix));
        match id {
            Some(id) => self
                .tools
                .iter()
                .position(|t| t.id.as_deref() == Some(id))
                .or_else(|| {
                    by_index.filter(|&p| self.tools.get(p).is_some_and(|t| t.id.is_none()))
                }),
            None if index.is_some() => by_index,
            None => self.tools.len().checked_sub(1),
        }
    }

    fn tool_block(&self, pos: usize) -> Value {
        let tool = self.tools.get(pos);
        let id = tool.and_then(|t| t.id.clone()).unwrap_or_else(|| {
            let n = tool.map_or(pos as u64, |t| t.chat_index);
            format!("toolu_{}_{n}", self.id.trim_start_matches("msg_"))
        });
        let name = tool.and_then(|t| t.name.clone()).unwrap_or_default();
        json!({"type": "tool_use", "id": id, "name": name, "input": {}})
    }

    fn open_block(&mut self, content_block: Value, out: &mut Vec<SseEvent>) -> u64 {
        let index = self.next_block;
        self.next_block += 1;
        out.push(event(json!({
            "type": "content_block_start",
            "index": index,
            "content_block": content_block,
        })));
        index
    }

    fn close_open(&mut self, out: &mut Vec<SseEvent>) {
        let Some(open) = self.open.take() else {
            return;
        };
        let index = match open {
            Open::Text(i) | Open::Thinking(i) => i,
            Open::Tool(i, _) => i,
        };
        out.push(block_stop(index));
    }

    /// Closes the open block and emits everything buffered, each as a whole block.
    fn flush_pending(&mut self, out: &mut Vec<SseEvent>) {
        self.close_open(out);
        for p in std::mem::take(&mut self.pending) {
            let (block, delta) = match p {
                Pending::Text(s) => (text_block(false), json!({"type": "text_delta", "text": s})),
                Pending::Thinking(s) => (
                    text_block(true),
                    json!({"type": "thinking_delta", "thinking": s}),
                ),
                Pending::Tool(pos) => {
                    let block = self.tool_block(pos);
                    let args = self.tools.get(pos).map(|t| t.arguments.as_str());
                    (block, json_delta(args.unwrap_or_default()))
                }
            };
            let index = self.open_block(block, out);
            let empty_args = delta.get("partial_json").and_then(Value::as_str) == Some("");
            if !empty_args {
                out.push(block_delta(index, delta));
            }
            out.push(block_stop(index));
        }
    }

    fn close_message(&mut self, out: &mut Vec<SseEvent>) {
        if self.closed {
            return;
        }
        self.start(None, out);
        self.flush_pending(out);
        let has_tools = !self.tools.is_empty();
        let stop_reason = match (&self.finish, &self.stop_sequence) {
            (Some(f), Some(_)) if f == "stop" && !has_tools => "stop_sequence",
            (f, _) => stop_reason_from_chat(f.as_deref(), has_tools),
        };
        let stop_sequence = match stop_reason {
            "stop_sequence" => self.stop_sequence.clone(),
            _ => None,
        };
        let usage = match self.usage {
            Some(t) => t.to_anthropic(),
            None => json!({"output_tokens": 0}),
        };
        out.push(event(json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": usage,
        })));
        out.push(event(json!({"type": "message_stop"})));
        self.closed = true;
    }
}

impl ClientStream for StreamFromChat {
    fn chunk(&mut self, chunk: &Value) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        // Some providers (OpenRouter, vLLM, Groq) report a failure mid-stream in band.
        if let Some(err) = chunk.get("error").filter(|e| e.is_object())
            && chunk.get("choices").is_none()
        {
            let code = ["type", "code"]
                .iter()
                .find_map(|k| err.get(*k).and_then(Value::as_str))
                .unwrap_or_default();
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the upstream reported an error");
            return self.fail(code, message);
        }
        self.start(chunk.get("id").and_then(Value::as_str), &mut out);
        let chunk_usage = chunk
            .get("usage")
            .filter(|u| u.is_object())
            .map(Tokens::from_chat);
        if chunk_usage.is_some() {
            self.usage = chunk_usage;
        }
        // Only the first choice: a Messages client asked for one.
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| {
                c.iter()
                    .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
            });
        if let Some(choice) = choice
            && self.finish.is_none()
        {
            if let Some(delta) = choice.get("delta") {
                self.delta(delta, &mut out);
            }
            if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish = Some(f.to_owned());
                self.stop_sequence = matched_stop_sequence(choice, &self.ctx.stop_sequences);
                self.flush_pending(&mut out);
            }
        }
        if self.finish.is_some() && chunk_usage.is_some() {
            self.close_message(&mut out);
        }
        out
    }

    fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        self.close_message(&mut out);
        out
    }

    fn fail(&mut self, code: &str, message: &str) -> Vec<SseEvent> {
        if self.closed {
            return Vec::new();
        }
        self.closed = true;
        vec![event(json!({
            "type": "error",
            "error": {"type": error_type(code), "message": message},
        }))]
    }
}

impl StreamFromChat {
    fn delta(&mut self, delta: &Value, out: &mut Vec<SseEvent>) {
        let text = |key: &str| {
            delta
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        // `reasoning_content` (DeepSeek, vLLM) or `reasoning` (OpenRouter, Ollama).
        if let Some(t) = text("reasoning_content").or_else(|| text("reasoning")) {
            self.text(t, true, out);
        }
        if let Some(t) = text("content") {
            self.text(t, false, out);
        }
        if let Some(t) = text("refusal") {
            self.text(t, false, out);
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for (position, call) in calls.iter().enumerate() {
                self.tool_delta(call, position, out);
            }
        }
    }
}

/// Anthropic's error type for the dispatcher's reason a stream broke off.
fn error_type(code: &str) -> &'static str {
    match code {
        "timeout" | "timeout_error" => "timeout_error",
        "overloaded" | "overloaded_error" | "server_overloaded" => "overloaded_error",
        "rate_limit" | "rate_limit_error" | "rate_limit_exceeded" | "too_many_requests" => {
            "rate_limit_error"
        }
        _ => "api_error",
    }
}

fn event(data: Value) -> SseEvent {
    let name = data
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message")
        .to_owned();
    SseEvent::named(name, data.to_string())
}

fn text_block(thinking: bool) -> Value {
    if thinking {
        json!({"type": "thinking", "thinking": "", "signature": ""})
    } else {
        json!({"type": "text", "text": ""})
    }
}

fn json_delta(fragment: &str) -> Value {
    json!({"type": "input_json_delta", "partial_json": fragment})
}

fn block_delta(index: u64, delta: Value) -> SseEvent {
    event(json!({"type": "content_block_delta", "index": index, "delta": delta}))
}

fn block_stop(index: u64) -> SseEvent {
    event(json!({"type": "content_block_stop", "index": index}))
}
