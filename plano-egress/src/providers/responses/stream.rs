//! Chat completion chunks → Responses streaming events.
//!
//! Event order, as the SDK's stream accumulator expects it: `response.created` and
//! `response.in_progress` first; every output item announced with
//! `response.output_item.added` before its deltas, `output_index` being its position in
//! announcement order; one terminal event (`response.completed`, `response.incomplete` or
//! `response.failed`) carrying the whole Response, and nothing after it.
//!
//! Items close in this order: reasoning when the answer starts, the message when a tool
//! call starts, and tool calls only at the end, since chat providers may interleave the
//! argument deltas of several calls. The terminal event waits for usage on or after the
//! finish chunk (OpenAI sends it on a chunk of its own after the finish reason); `finish`
//! sends it with whatever usage was seen.

use serde_json::{Map, Value, json};

use super::response::{
    ResponseCtx, ResponseState, Status, call_item, message_item, now, reasoning_item,
    reasoning_text, refusal_part, text_part, usage_from_chat,
};
use crate::providers::ClientStream;
use plano_common::sse::SseEvent;

pub struct StreamFromChat {
    ctx: ResponseCtx,
    created_at: u64,
    seq: u64,
    started: bool,
    closed: bool,
    items: Vec<Item>,
    /// Index in `items` of the reasoning item or message taking deltas, if any.
    open_reasoning: Option<usize>,
    open_message: Option<usize>,
    /// Chat tool call index (if the provider sends one) → index in `items`.
    calls: Vec<(Option<u64>, usize)>,
    finish_reason: Option<String>,
    usage: Option<Value>,
}

/// An output item; `status` is `None` while it is open, then the status it closed with.
enum Item {
    Reasoning {
        text: String,
        status: Option<&'static str>,
    },
    Message {
        parts: Vec<Part>,
        status: Option<&'static str>,
    },
    Call {
        call_id: String,
        name: String,
        arguments: String,
        status: Option<&'static str>,
    },
}

struct Part {
    refusal: bool,
    text: String,
    done: bool,
}

impl Part {
    fn json(&self) -> Value {
        if self.refusal {
            refusal_part(&self.text)
        } else {
            text_part(&self.text)
        }
    }
}

impl StreamFromChat {
    pub fn new(ctx: ResponseCtx) -> Self {
        Self {
            ctx,
            created_at: now(),
            seq: 0,
            started: false,
            closed: false,
            items: Vec::new(),
            open_reasoning: None,
            open_message: None,
            calls: Vec::new(),
            finish_reason: None,
            usage: None,
        }
    }

    fn emit(&mut self, out: &mut Vec<SseEvent>, ty: &str, body: Value) {
        let mut body = match body {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        body.insert("type".into(), Value::String(ty.into()));
        body.insert("sequence_number".into(), Value::from(self.seq));
        self.seq += 1;
        out.push(SseEvent::named(ty, Value::Object(body).to_string()));
    }

    fn start(&mut self, out: &mut Vec<SseEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        for ty in ["response.created", "response.in_progress"] {
            let response = self.snapshot(Status::InProgress);
            self.emit(out, ty, json!({"response": response}));
        }
    }

    fn snapshot(&self, status: Status) -> Value {
        let output = (0..self.items.len()).map(|i| self.item_json(i)).collect();
        self.ctx.response(
            self.created_at,
            ResponseState {
                status,
                output,
                usage: self.usage.clone(),
            },
        )
    }

    fn item_json(&self, i: usize) -> Value {
        let Some(item) = self.items.get(i) else {
            return Value::Null;
        };
        let st = |s: &Option<&'static str>| s.unwrap_or("in_progress");
        match item {
            Item::Reasoning { text, status } => {
                reasoning_item(self.ctx.item_id("rs", i), text, st(status))
            }
            Item::Message { parts, status } => message_item(
                self.ctx.item_id("msg", i),
                parts.iter().map(Part::json).collect(),
                st(status),
            ),
            Item::Call {
                call_id,
                name,
                arguments,
                status,
            } => call_item(
                self.ctx.item_id("fc", i),
                call_id,
                name,
                arguments,
                st(status),
            ),
        }
    }

    fn add_item(&mut self, item: Item, out: &mut Vec<SseEvent>) -> usize {
        let i = self.items.len();
        self.items.push(item);
        let json = self.item_json(i);
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": i, "item": json}),
        );
        i
    }

    fn reasoning_delta(&mut self, delta: &str, out: &mut Vec<SseEvent>) {
        if let Some(m) = self.open_message.take() {
            self.close_item(m, out);
        }
        let i = match self.open_reasoning {
            Some(i) => i,
            None => {
                let i = self.add_item(
                    Item::Reasoning {
                        text: String::new(),
                        status: None,
                    },
                    out,
                );
                let item_id = self.ctx.item_id("rs", i);
                self.emit(
                    out,
                    "response.content_part.added",
                    json!({"item_id": item_id, "output_index": i, "content_index": 0,
                           "part": {"type": "reasoning_text", "text": ""}}),
                );
                self.open_reasoning = Some(i);
                i
            }
        };
        if let Some(Item::Reasoning { text, .. }) = self.items.get_mut(i) {
            text.push_str(delta);
        }
        let item_id = self.ctx.item_id("rs", i);
        self.emit(
            out,
            "response.reasoning_text.delta",
            json!({"item_id": item_id, "output_index": i, "content_index": 0, "delta": delta}),
        );
    }

    /// The open message and its open part of the given kind, opening them as needed.
    fn open_part(&mut self, refusal: bool, out: &mut Vec<SseEvent>) -> (usize, usize) {
        if let Some(r) = self.open_reasoning.take() {
            self.close_item(r, out);
        }
        let i = match self.open_message {
            Some(i) => i,
            None => {
                let i = self.add_item(
                    Item::Message {
                        parts: Vec::new(),
                        status: None,
                    },
                    out,
                );
                self.open_message = Some(i);
                i
            }
        };
        let current = match self.items.get(i) {
            Some(Item::Message { parts, .. }) => parts
                .last()
                .filter(|p| !p.done && p.refusal == refusal)
                .map(|_| parts.len() - 1),
            _ => None,
        };
        if let Some(k) = current {
            return (i, k);
        }
        // A switch between text and refusal closes the current part and opens another.
        self.close_part(i, out);
        let k = match self.items.get_mut(i) {
            Some(Item::Message { parts, .. }) => {
                parts.push(Part {
                    refusal,
                    text: String::new(),
                    done: false,
                });
                parts.len() - 1
            }
            _ => 0,
        };
        let part = if refusal {
            refusal_part("")
        } else {
            text_part("")
        };
        let item_id = self.ctx.item_id("msg", i);
        self.emit(
            out,
            "response.content_part.added",
            json!({"item_id": item_id, "output_index": i, "content_index": k, "part": part}),
        );
        (i, k)
    }

    fn message_delta(&mut self, delta: &str, refusal: bool, out: &mut Vec<SseEvent>) {
        let (i, k) = self.open_part(refusal, out);
        if let Some(Item::Message { parts, .. }) = self.items.get_mut(i)
            && let Some(p) = parts.get_mut(k)
        {
            p.text.push_str(delta);
        }
        let item_id = self.ctx.item_id("msg", i);
        if refusal {
            self.emit(
                out,
                "response.refusal.delta",
                json!({"item_id": item_id, "output_index": i, "content_index": k,
                       "delta": delta}),
            );
        } else {
            self.emit(
                out,
                "response.output_text.delta",
                json!({"item_id": item_id, "output_index": i, "content_index": k,
                       "delta": delta, "logprobs": []}),
            );
        }
    }

    /// Close the open content part of message `i`, if any.
    fn close_part(&mut self, i: usize, out: &mut Vec<SseEvent>) {
        let Some(Item::Message { parts, .. }) = self.items.get_mut(i) else {
            return;
        };
        let Some((k, part)) = parts.iter_mut().enumerate().rev().find(|(_, p)| !p.done) else {
            return;
        };
        part.done = true;
        let (refusal, text, json) = (part.refusal, part.text.clone(), part.json());
        let item_id = self.ctx.item_id("msg", i);
        if refusal {
            self.emit(
                out,
                "response.refusal.done",
                json!({"item_id": item_id, "output_index": i, "content_index": k, "refusal": text}),
            );
        } else {
            self.emit(
                out,
                "response.output_text.done",
                json!({"item_id": item_id, "output_index": i, "content_index": k, "text": text,
                       "logprobs": []}),
            );
        }
        self.emit(
            out,
            "response.content_part.done",
            json!({"item_id": item_id, "output_index": i, "content_index": k, "part": json}),
        );
    }

    fn tool_delta(&mut self, call: &Value, out: &mut Vec<SseEvent>) {
        if let Some(r) = self.open_reasoning.take() {
            self.close_item(r, out);
        }
        if let Some(m) = self.open_message.take() {
            self.close_item(m, out);
        }
        let index = call.get("index").and_then(Value::as_u64);
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let function = call.get("function");
        let name = function
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let args = function
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let found = match (index, id) {
            // A different id under a known index is another call: some providers number
            // every parallel call 0.
            (Some(_), _) => self
                .calls
                .iter()
                .rev()
                .find(|(k, _)| *k == index)
                .map(|(_, i)| *i)
                .filter(|i| match (id, self.items.get(*i)) {
                    (Some(id), Some(Item::Call { call_id, .. })) => call_id == id,
                    _ => true,
                }),
            // Without an index, a known id names the call; otherwise it continues the last.
            (None, Some(id)) => self
                .items
                .iter()
                .position(|it| matches!(it, Item::Call { call_id, .. } if call_id == id)),
            (None, None) => self.calls.last().map(|(_, i)| *i),
        };
        let i = match found {
            Some(i) => i,
            None => {
                let next = self.items.len();
                let call_id = id.map_or_else(|| self.ctx.item_id("call", next), str::to_owned);
                self.calls.push((index, next));
                self.add_item(
                    Item::Call {
                        call_id,
                        name: name.to_owned(),
                        arguments: String::new(),
                        status: None,
                    },
                    out,
                )
            }
        };
        let Some(Item::Call {
            name: n,
            arguments,
            status: None,
            ..
        }) = self.items.get_mut(i)
        else {
            return;
        };
        // The name comes whole on a call's first delta; repeats are not appended.
        if n.is_empty() {
            name.clone_into(n);
        }
        if args.is_empty() {
            return;
        }
        arguments.push_str(args);
        let item_id = self.ctx.item_id("fc", i);
        self.emit(
            out,
            "response.function_call_arguments.delta",
            json!({"item_id": item_id, "output_index": i, "delta": args}),
        );
    }

    fn close_item(&mut self, i: usize, out: &mut Vec<SseEvent>) {
        let closed = Status::from_finish(self.finish_reason.as_deref()).item_status();
        match self.items.get_mut(i) {
            Some(Item::Reasoning { status, text }) if status.is_none() => {
                *status = Some(closed);
                let text = text.clone();
                let item_id = self.ctx.item_id("rs", i);
                self.emit(
                    out,
                    "response.reasoning_text.done",
                    json!({"item_id": item_id, "output_index": i, "content_index": 0, "text": text}),
                );
                self.emit(
                    out,
                    "response.content_part.done",
                    json!({"item_id": item_id, "output_index": i, "content_index": 0,
                           "part": {"type": "reasoning_text", "text": text}}),
                );
            }
            Some(Item::Message { status, .. }) if status.is_none() => {
                *status = Some(closed);
                self.close_part(i, out);
            }
            Some(Item::Call {
                status,
                name,
                arguments,
                ..
            }) if status.is_none() => {
                *status = Some(closed);
                let (name, arguments) = (name.clone(), arguments.clone());
                let item_id = self.ctx.item_id("fc", i);
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": item_id, "output_index": i, "name": name,
                           "arguments": arguments}),
                );
            }
            _ => return,
        }
        let item = self.item_json(i);
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": i, "item": item}),
        );
    }

    fn close_all(&mut self, out: &mut Vec<SseEvent>) {
        self.open_reasoning = None;
        self.open_message = None;
        for i in 0..self.items.len() {
            self.close_item(i, out);
        }
    }

    fn complete(&mut self, out: &mut Vec<SseEvent>) {
        // A response always has an answer item, even an empty one, as the non-streamed
        // form does.
        if self.items.is_empty() {
            self.open_part(false, out);
        }
        self.close_all(out);
        self.closed = true;
        let status = Status::from_finish(self.finish_reason.as_deref());
        let ty = match status {
            Status::Incomplete(_) => "response.incomplete",
            _ => "response.completed",
        };
        let response = self.snapshot(status);
        self.emit(out, ty, json!({"response": response}));
    }
}

impl ClientStream for StreamFromChat {
    fn chunk(&mut self, chunk: &Value) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        self.start(&mut out);
        let usage = chunk.get("usage").and_then(usage_from_chat);
        let has_usage = usage.is_some();
        if usage.is_some() {
            self.usage = usage;
        }
        // One choice is all a Response has; `n` > 1 is not a Responses feature.
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| {
                c.iter()
                    .find(|ch| ch.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
            });
        if let Some(choice) = choice
            && self.finish_reason.is_none()
        {
            if let Some(delta) = choice.get("delta").and_then(Value::as_object) {
                if let Some(r) = reasoning_text(delta).filter(|r| !r.is_empty()) {
                    self.reasoning_delta(r, &mut out);
                }
                if let Some(t) = delta
                    .get("content")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    self.message_delta(t, false, &mut out);
                }
                if let Some(t) = delta
                    .get("refusal")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    self.message_delta(t, true, &mut out);
                }
                if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                    for call in calls {
                        self.tool_delta(call, &mut out);
                    }
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(reason.to_owned());
                self.close_all(&mut out);
            }
        }
        // Usage sent before the finish reason may be a running count: only usage on or
        // after the finish chunk is final.
        if self.finish_reason.is_some() && has_usage {
            self.complete(&mut out);
        }
        out
    }

    fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        self.start(&mut out);
        self.complete(&mut out);
        out
    }

    fn fail(&mut self, code: &str, message: &str) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        self.start(&mut out);
        self.closed = true;
        // Whatever was still being written stays in the failed response as incomplete.
        for item in &mut self.items {
            let (Item::Reasoning { status, .. }
            | Item::Message { status, .. }
            | Item::Call { status, .. }) = item;
            status.get_or_insert("incomplete");
        }
        // The SDK types `error.code` as a closed list; ours (timeout, upstream_error, …)
        // stays readable in the message.
        let code = match code {
            "rate_limit_exceeded" => "rate_limit_exceeded",
            _ => "server_error",
        };
        let response = self.snapshot(Status::Failed {
            code,
            message: message.to_owned(),
        });
        self.emit(&mut out, "response.failed", json!({"response": response}));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> StreamFromChat {
        StreamFromChat::new(ResponseCtx {
            id: "resp_t".into(),
            model: "m".into(),
            request: Map::new(),
        })
    }

    fn delta(d: Value) -> Value {
        json!({"choices": [{"index": 0, "delta": d, "finish_reason": null}]})
    }

    fn finish_chunk(reason: &str) -> Value {
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
    }

    fn usage_chunk() -> Value {
        json!({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2}}})
    }

    fn types(events: &[SseEvent]) -> Vec<String> {
        events.iter().map(|e| e.event.clone().unwrap()).collect()
    }

    fn data(e: &SseEvent) -> Value {
        serde_json::from_str(&e.data).unwrap()
    }

    #[test]
    fn completed_waits_for_usage_after_finish() {
        let mut s = stream();
        s.chunk(&delta(json!({"content": "hi"})));
        let at_finish = s.chunk(&finish_chunk("stop"));
        assert!(types(&at_finish).contains(&"response.output_item.done".to_owned()));
        assert!(!types(&at_finish).contains(&"response.completed".to_owned()));
        let at_usage = s.chunk(&usage_chunk());
        assert_eq!(types(&at_usage), ["response.completed"]);
        let usage = &data(&at_usage[0])["response"]["usage"];
        assert_eq!(usage["input_tokens"], 7);
        assert_eq!(usage["input_tokens_details"]["cached_tokens"], 4);
        assert_eq!(usage["output_tokens_details"]["reasoning_tokens"], 2);
        assert_eq!(usage["total_tokens"], 10);
        assert!(s.finish().is_empty(), "exactly one close");
        assert!(s.chunk(&delta(json!({"content": "late"}))).is_empty());
    }

    #[test]
    fn usage_on_the_finish_chunk_completes_at_once() {
        let mut s = stream();
        s.chunk(&delta(json!({"content": "hi"})));
        let mut last = finish_chunk("stop");
        last["usage"] = usage_chunk()["usage"].clone();
        let events = s.chunk(&last);
        assert_eq!(types(&events).last().unwrap(), "response.completed");
        assert!(s.finish().is_empty());
    }

    #[test]
    fn usage_before_finish_is_kept_until_the_end() {
        let mut s = stream();
        s.chunk(&usage_chunk());
        s.chunk(&delta(json!({"content": "hi"})));
        s.chunk(&finish_chunk("stop"));
        let events = s.finish();
        let last = data(events.last().unwrap());
        assert_eq!(last["type"], "response.completed");
        assert_eq!(last["response"]["usage"]["output_tokens"], 3);
    }

    #[test]
    fn finish_without_usage_completes_with_null_usage() {
        let mut s = stream();
        s.chunk(&delta(json!({"content": "hi"})));
        assert!(
            s.chunk(&finish_chunk("stop"))
                .iter()
                .all(|e| { e.event.as_deref() != Some("response.completed") })
        );
        let events = s.finish();
        assert_eq!(types(&events), ["response.completed"]);
        assert_eq!(data(&events[0])["response"]["usage"], Value::Null);
        assert!(s.fail("server_error", "late").is_empty());
    }

    #[test]
    fn fail_after_partial_output_keeps_it_as_incomplete() {
        let mut s = stream();
        s.chunk(&delta(json!({"content": "par"})));
        let events = s.fail("timeout", "the stream was ended at the listener timeout");
        assert_eq!(types(&events), ["response.failed"]);
        let r = &data(&events[0])["response"];
        assert_eq!(r["status"], "failed");
        assert_eq!(r["error"]["code"], "server_error");
        assert_eq!(
            r["error"]["message"],
            "the stream was ended at the listener timeout"
        );
        assert_eq!(r["output"][0]["status"], "incomplete");
        assert_eq!(r["output"][0]["content"][0]["text"], "par");
        assert!(s.finish().is_empty());
        assert!(s.fail("x", "y").is_empty());
    }

    #[test]
    fn text_after_a_tool_call_is_a_new_message() {
        let mut s = stream();
        s.chunk(&delta(json!({"content": "a"})));
        s.chunk(&delta(json!({"tool_calls": [
            {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{}"}}]})));
        let events = s.chunk(&delta(json!({"content": "b"})));
        let added = events
            .iter()
            .map(data)
            .find(|d| d["type"] == "response.output_item.added")
            .unwrap();
        assert_eq!(added["output_index"], 2);
        assert_eq!(added["item"]["type"], "message");
        let done = s.finish();
        let r = data(done.last().unwrap());
        let kinds: Vec<_> = r["response"]["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kinds, ["message", "function_call", "message"]);
    }

    #[test]
    fn tool_deltas_without_index_follow_id_then_last_call() {
        let mut s = stream();
        s.chunk(&delta(
            json!({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{"}}]}),
        ));
        s.chunk(&delta(
            json!({"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "["}}]}),
        ));
        s.chunk(&delta(
            json!({"tool_calls": [{"id": "a", "function": {"arguments": "}"}}]}),
        ));
        s.chunk(&delta(
            json!({"tool_calls": [{"function": {"arguments": "]"}}]}),
        ));
        let events = s.finish();
        let r = data(events.last().unwrap());
        let out = &r["response"]["output"];
        assert_eq!(out[0]["arguments"], "{}");
        assert_eq!(out[1]["arguments"], "[]");
    }

    #[test]
    fn parallel_calls_all_numbered_zero_stay_apart() {
        let mut s = stream();
        for (id, name, args) in [("a", "f", "{\"x\":"), ("", "", "1}"), ("b", "g", "{}")] {
            let mut call = json!({"index": 0, "function": {"arguments": args}});
            if !id.is_empty() {
                call["id"] = json!(id);
                call["function"]["name"] = json!(name);
            }
            s.chunk(&delta(json!({"tool_calls": [call]})));
        }
        let events = s.finish();
        let out = &data(events.last().unwrap())["response"]["output"];
        assert_eq!(out[0]["call_id"], "a");
        assert_eq!(out[0]["arguments"], "{\"x\":1}");
        assert_eq!(out[1]["call_id"], "b");
        assert_eq!(out[1]["name"], "g");
        assert_eq!(out[1]["arguments"], "{}");
    }

    #[test]
    fn a_repeated_name_is_not_doubled() {
        let mut s = stream();
        for args in ["{\"a\":", "1}"] {
            s.chunk(&delta(json!({"tool_calls": [
                {"index": 0, "id": "c", "function": {"name": "lookup", "arguments": args}}]})));
        }
        let events = s.finish();
        let r = data(events.last().unwrap());
        assert_eq!(r["response"]["output"][0]["name"], "lookup");
        assert_eq!(r["response"]["output"][0]["arguments"], "{\"a\":1}");
    }

    #[test]
    fn deltas_after_the_finish_reason_are_ignored() {
        let mut s = stream();
        s.chunk(&delta(json!({"content": "a"})));
        s.chunk(&finish_chunk("stop"));
        assert!(s.chunk(&delta(json!({"content": "b"}))).is_empty());
        let events = s.finish();
        let r = data(events.last().unwrap());
        assert_eq!(r["response"]["output"][0]["content"][0]["text"], "a");
    }

    #[test]
    fn length_ends_incomplete() {
        let mut s = stream();
        s.chunk(&delta(json!({"content": "a"})));
        let events = s.chunk(&finish_chunk("length"));
        let done = events
            .iter()
            .map(data)
            .find(|d| d["type"] == "response.output_item.done")
            .unwrap();
        assert_eq!(done["item"]["status"], "incomplete");
        let events = s.finish();
        let r = data(&events[0]);
        assert_eq!(r["type"], "response.incomplete");
        assert_eq!(
            r["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
    }

    #[test]
    fn garbage_chunks_start_the_stream_and_change_nothing() {
        let mut s = stream();
        let events = s.chunk(&json!("not a chunk"));
        assert_eq!(types(&events), ["response.created", "response.in_progress"]);
        assert!(s.chunk(&json!({"choices": 5, "usage": "x"})).is_empty());
        assert!(
            s.chunk(&json!({"choices": [{"index": 1, "delta": {"content": "n=2"}}]}))
                .is_empty()
        );
        let events = s.finish();
        let r = data(events.last().unwrap());
        assert_eq!(r["response"]["output"][0]["content"][0]["text"], "");
        assert_eq!(r["response"]["usage"], Value::Null);
    }
}
