//! Streaming responses, event by event (never the whole body buffered). Same API on both
//! sides: upstream events are relayed as they are, and usage is read on the way (the chat
//! usage chunk we asked for is hidden from a client that did not). Different APIs: each
//! upstream event becomes chat chunks, and each chunk the client API's events
//! (`providers::plan::StreamShape`). A client that goes away ends the pump at once, which
//! drops the upstream connection; the listener timeout ends a stream that runs too long;
//! a stream that breaks off ends with an error event in the client's API.

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use metrics::counter;
use plano_common::metrics as m;
use plano_config::Provider;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::conversations::Conversations;
use crate::providers::plan::{Api, ClientSide, StreamShape};
use crate::providers::sse::{DEFAULT_MAX_EVENT_BYTES, SseDecoder, SseEvent};
use crate::providers::{eventstream, responses};
use crate::ratelimit::{RateLimiter, Ticket};

/// Token usage as providers report it, normalised.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub reasoning: u64,
}

impl Usage {
    /// Set the usage attributes (GenAI and `llm.usage.*`) on trace spans.
    pub fn trace(&self, spans: &[&tracing::Span]) {
        let usage = plano_common::telemetry::Usage {
            input: self.input,
            output: self.output,
            cached_input: Some(self.cached_input),
            reasoning: Some(self.reasoning),
        };
        for span in spans {
            plano_common::telemetry::record_usage(span, &usage);
        }
    }

    /// From an OpenAI `usage` object.
    pub fn from_value(u: &Value) -> Self {
        let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
        Usage {
            input: n(u.get("prompt_tokens")),
            output: n(u.get("completion_tokens")),
            cached_input: n(u.pointer("/prompt_tokens_details/cached_tokens")),
            reasoning: n(u.pointer("/completion_tokens_details/reasoning_tokens")),
        }
    }

    /// From a whole answer (or one event object) of `api`; zero when it has none.
    /// Anthropic and Bedrock count cache reads and writes apart from `input_tokens`; here
    /// `input` is every prompt token and `cached_input` the cache reads among them.
    pub fn of(api: Api, v: &Value) -> Self {
        match v.get("usage") {
            Some(u) => Self::of_usage(api, u),
            None => Usage::default(),
        }
    }

    /// From the `usage` object itself.
    pub fn of_usage(api: Api, u: &Value) -> Self {
        if !u.is_object() {
            return Usage::default();
        }
        let n = |key: &str| u.pointer(key).and_then(Value::as_u64).unwrap_or(0);
        match api {
            Api::Chat => Self::from_value(u),
            Api::Messages => Usage {
                input: n("/input_tokens")
                    + n("/cache_read_input_tokens")
                    + n("/cache_creation_input_tokens"),
                output: n("/output_tokens"),
                cached_input: n("/cache_read_input_tokens"),
                reasoning: 0,
            },
            Api::Responses => Usage {
                input: n("/input_tokens"),
                output: n("/output_tokens"),
                cached_input: n("/input_tokens_details/cached_tokens"),
                reasoning: n("/output_tokens_details/reasoning_tokens"),
            },
            Api::Converse => Usage {
                input: n("/inputTokens") + n("/cacheReadInputTokens") + n("/cacheWriteInputTokens"),
                output: n("/outputTokens"),
                cached_input: n("/cacheReadInputTokens"),
                reasoning: 0,
            },
        }
    }

    /// Fold a later report into this one: Anthropic streams give input tokens at the start
    /// and output tokens at the end, each event carrying only what it knows.
    fn merge(&mut self, later: Usage) {
        let pick = |a: u64, b: u64| if b > 0 { b } else { a };
        self.input = pick(self.input, later.input);
        self.output = pick(self.output, later.output);
        self.cached_input = pick(self.cached_input, later.cached_input);
        self.reasoning = pick(self.reasoning, later.reasoning);
    }

    pub fn total(&self) -> u64 {
        self.input + self.output
    }

    pub fn record(&self, provider: &Provider) {
        for (kind, n) in [
            ("input", self.input),
            ("output", self.output),
            ("cached_input", self.cached_input),
            ("reasoning", self.reasoning),
        ] {
            if n > 0 {
                counter!(m::LLM_TOKENS_TOTAL, "provider" => provider.name.clone(), "model" => provider.model.clone(), "kind" => kind)
                    .increment(n);
            }
        }
    }
}

pub struct StreamPlan {
    pub provider: Provider,
    pub shape: StreamShape,
    pub deadline: Instant,
    pub limiter: Option<std::sync::Arc<RateLimiter>>,
    pub ticket: Option<Ticket>,
    /// Responses: where to store the conversation once the stream completes.
    pub remember: Option<Remember>,
    /// Trace spans (the attempt's, the request's) kept open until the stream ends; they
    /// get the usage then.
    pub spans: Vec<tracing::Span>,
}

/// A Responses stream's conversation, stored under the answer's id at `response.completed`.
pub struct Remember {
    pub conversations: std::sync::Arc<Conversations>,
    /// The request as sent (its input already holds any earlier conversation).
    pub request: Map<String, Value>,
}

/// Store `request`'s input items followed by `response`'s output items under the response
/// id, unless the client said `store: false`.
pub fn store_conversation(
    conversations: &Conversations,
    request: &Map<String, Value>,
    response: &Value,
) {
    if request.get("store").and_then(Value::as_bool) == Some(false) {
        return;
    }
    let Some(id) = response.get("id").and_then(Value::as_str) else {
        return;
    };
    let Ok(mut items) = responses::conversation_items(request) else {
        return;
    };
    items.extend(responses::output_items(response));
    conversations.put(id.to_string(), items);
}

/// The streaming response: headers now, events as they come.
pub fn respond(first: Bytes, rest: hyper::body::Incoming, plan: StreamPlan) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(pump(first, rest, plan, tx));
    let mut res = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    *res.status_mut() = StatusCode::OK;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// Upstream framing: SSE, or AWS event-stream (Bedrock) carried as `SseEvent`s.
enum Framing {
    Sse(SseDecoder),
    Binary(eventstream::Decoder),
}

impl Framing {
    fn push(&mut self, data: &[u8]) {
        match self {
            Framing::Sse(d) => d.push(data),
            Framing::Binary(d) => d.push(data),
        }
    }

    fn next_event(&mut self) -> Result<Option<SseEvent>, String> {
        match self {
            Framing::Sse(d) => d.next_event().map_err(|e| e.to_string()),
            Framing::Binary(d) => d.next_event().map_err(|e| e.to_string()),
        }
    }

    fn finish(&mut self) -> Result<Option<SseEvent>, String> {
        match self {
            Framing::Sse(d) => d.finish().map_err(|e| e.to_string()),
            Framing::Binary(d) => d.finish().map_err(|e| e.to_string()),
        }
    }
}

/// One stream's translation state: upstream events in, client bytes out.
struct Flow {
    shape: StreamShape,
    usage: Usage,
    /// Events sent to the client (the next Responses `sequence_number` when relaying).
    sent: u64,
    /// Responses: the final response object, seen in `response.completed`.
    completed: Option<Value>,
}

impl Flow {
    /// One upstream event. `Err` ends the stream as broken.
    fn event(&mut self, ev: SseEvent, out: &mut BytesMut) -> Result<(), String> {
        match &mut self.shape {
            StreamShape::Relay {
                api,
                client_wants_usage,
            } => {
                let api = *api;
                if api == Api::Responses && ev.event.as_deref() == Some("response.completed") {
                    self.completed = completed_response(&ev.data);
                }
                if relay_keeps(api, &ev, *client_wants_usage, &mut self.usage) {
                    ev.encode_into(out);
                    self.sent += 1;
                }
                Ok(())
            }
            StreamShape::Translate { upstream, .. } => {
                let chunks = match upstream {
                    Some(u) => u.event(&ev).map_err(|e| e.message)?,
                    None => chat_chunk(&ev)?.into_iter().collect(),
                };
                for chunk in chunks {
                    self.chunk(&chunk, out);
                }
                Ok(())
            }
        }
    }

    fn chunk(&mut self, chunk: &Value, out: &mut BytesMut) {
        if chunk.get("usage").is_some_and(Value::is_object) {
            self.usage = Usage::of(Api::Chat, chunk);
        }
        if let StreamShape::Translate { client, .. } = &mut self.shape {
            match client {
                ClientSide::Chat { client_wants_usage } => {
                    if *client_wants_usage || !is_usage_only(chunk) {
                        SseEvent::data(chunk.to_string()).encode_into(out);
                        self.sent += 1;
                    }
                }
                ClientSide::Translated(c) => {
                    let events = c.chunk(chunk);
                    self.emit(events, out);
                }
            }
        }
    }

    fn emit(&mut self, events: Vec<SseEvent>, out: &mut BytesMut) {
        for e in events {
            if e.event.as_deref() == Some("response.completed") {
                self.completed = completed_response(&e.data);
            }
            e.encode_into(out);
            self.sent += 1;
        }
    }

    /// The upstream body ended. `Err`: it ended before its own close.
    fn end(&mut self, out: &mut BytesMut) -> Result<(), String> {
        let StreamShape::Translate { upstream, .. } = &mut self.shape else {
            return Ok(());
        };
        if let Some(u) = upstream {
            for chunk in u.finish().map_err(|e| e.message)? {
                self.chunk(&chunk, out);
            }
        }
        let events = match &mut self.shape {
            StreamShape::Translate {
                client: ClientSide::Translated(c),
                ..
            } => c.finish(),
            _ => vec![SseEvent::data("[DONE]")],
        };
        self.emit(events, out);
        Ok(())
    }

    /// The stream breaks off: tell the client why, in its API's shape.
    fn fail(&mut self, code: &str, message: &str) -> Bytes {
        let mut out = BytesMut::new();
        match &mut self.shape {
            StreamShape::Translate {
                client: ClientSide::Translated(c),
                ..
            } => {
                for e in c.fail(code, message) {
                    e.encode_into(&mut out);
                }
            }
            StreamShape::Relay {
                api: Api::Messages, ..
            } => {
                let body = serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}});
                SseEvent::named("error", body.to_string()).encode_into(&mut out);
            }
            StreamShape::Relay {
                api: Api::Responses,
                ..
            } => {
                let body = serde_json::json!({"type": "error", "code": code, "message": message, "param": null, "sequence_number": self.sent});
                SseEvent::named("error", body.to_string()).encode_into(&mut out);
            }
            _ => {
                let body = serde_json::json!({
                    "error": {"message": message, "type": "upstream_error", "param": null, "code": code}
                });
                SseEvent::data(body.to_string()).encode_into(&mut out);
            }
        }
        out.freeze()
    }
}

fn completed_response(data: &str) -> Option<Value> {
    serde_json::from_str::<Value>(data)
        .ok()
        .and_then(|mut v| v.get_mut("response").map(Value::take))
}

/// A chat upstream's event as a chunk: `None` for `[DONE]`; an error object mid-stream
/// (some OpenAI-compatible servers send one) ends the stream.
fn chat_chunk(ev: &SseEvent) -> Result<Option<Value>, String> {
    if ev.is_done() {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(&ev.data)
        .map_err(|e| format!("the provider sent an event that is not JSON: {e}"))?;
    if let Some(err) = v.get("error") {
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("the provider reported an error mid-stream");
        return Err(message.to_string());
    }
    Ok(Some(v))
}

/// The chunk we asked for with `include_usage`: usage and no choices (hidden from a
/// client that did not ask for it).
fn is_usage_only(chunk: &Value) -> bool {
    chunk
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
        && chunk.get("usage").is_some_and(Value::is_object)
}

/// Relaying: reads usage from the events that carry it, and says whether to relay `ev`
/// (only a chat usage chunk the client did not ask for is held back).
fn relay_keeps(api: Api, ev: &SseEvent, wants_usage: bool, usage: &mut Usage) -> bool {
    if ev.is_done() || !ev.data.contains("usage") {
        return true;
    }
    let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
        return true;
    };
    match api {
        Api::Chat => {
            if v.get("usage").is_some_and(Value::is_object) {
                *usage = Usage::of(Api::Chat, &v);
                return wants_usage || !is_usage_only(&v);
            }
        }
        // `message_start` carries `message.usage`, `message_delta` carries `usage`.
        Api::Messages => {
            let source = v.get("message").unwrap_or(&v);
            usage.merge(Usage::of(Api::Messages, source));
        }
        // `response.completed` / `.incomplete` / `.failed` carry `response.usage`.
        Api::Responses => {
            if let Some(r) = v.get("response") {
                usage.merge(Usage::of(Api::Responses, r));
            }
        }
        Api::Converse => {}
    }
    true
}

async fn pump(
    first: Bytes,
    mut rest: hyper::body::Incoming,
    plan: StreamPlan,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut framing = match &plan.shape {
        StreamShape::Translate { binary: true, .. } => {
            Framing::Binary(eventstream::Decoder::new(DEFAULT_MAX_EVENT_BYTES))
        }
        _ => Framing::Sse(SseDecoder::default()),
    };
    let mut flow = Flow {
        shape: plan.shape,
        usage: Usage::default(),
        sent: 0,
        completed: None,
    };
    let deadline = tokio::time::sleep_until(plan.deadline);
    tokio::pin!(deadline);
    let mut chunk = Some(first);
    let mut broken: Option<String> = None;
    let outcome = 'pump: loop {
        if let Some(data) = chunk.take() {
            framing.push(&data);
            let mut out = BytesMut::new();
            loop {
                match framing
                    .next_event()
                    .and_then(|ev| ev.map(|ev| flow.event(ev, &mut out)).transpose())
                {
                    Ok(Some(())) => {}
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Ok(out.freeze())).await;
                        broken = Some(e);
                        break 'pump "upstream_error";
                    }
                }
            }
            if !out.is_empty() {
                // A client that stops reading must not hold the upstream past the deadline.
                tokio::select! {
                    sent = tx.send(Ok(out.freeze())) => if sent.is_err() { break "client_closed" },
                    _ = &mut deadline => break "timeout",
                }
            }
        }
        tokio::select! {
            _ = tx.closed() => break "client_closed",
            _ = &mut deadline => {
                tracing::warn!(provider = %plan.provider.name, "stream ended at the listener timeout");
                break "timeout";
            }
            frame = rest.frame() => match frame {
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        chunk = Some(data);
                    }
                }
                Some(Err(e)) => {
                    broken = Some(e.to_string());
                    break "upstream_error";
                }
                None => {
                    let mut out = BytesMut::new();
                    let ended = framing
                        .finish()
                        .and_then(|ev| ev.map(|ev| flow.event(ev, &mut out)).transpose())
                        .and_then(|_| flow.end(&mut out));
                    let _ = tx.send(Ok(out.freeze())).await;
                    match ended {
                        Ok(()) => break "complete",
                        Err(e) => {
                            broken = Some(e);
                            break "upstream_error";
                        }
                    }
                }
            }
        }
    };
    // Dropping `rest` here closes the upstream connection when the stream did not finish.
    drop(rest);
    if let Some(e) = &broken {
        tracing::warn!(provider = %plan.provider.name, error = %e, "upstream stream unusable; ending it");
    }
    if let Some(message) = match outcome {
        "timeout" => Some("the stream was ended at the listener timeout".to_string()),
        "upstream_error" => Some(match &broken {
            Some(e) => format!("the upstream stream broke off: {e}"),
            None => "the upstream stream broke off".to_string(),
        }),
        _ => None,
    } {
        // `try_send`: a client that is not reading gets no more of our time.
        let _ = tx.try_send(Ok(flow.fail(outcome, &message)));
    }
    tracing::debug!(provider = %plan.provider.name, outcome, "stream finished");
    if let (Some(r), Some(response)) = (&plan.remember, &flow.completed) {
        store_conversation(&r.conversations, &r.request, response);
    }
    flow.usage.record(&plan.provider);
    let spans: Vec<&tracing::Span> = plan.spans.iter().collect();
    flow.usage.trace(&spans);
    if matches!(outcome, "upstream_error" | "timeout")
        && let Some(attempt) = plan.spans.first()
    {
        plano_common::telemetry::record_error(attempt, outcome);
    }
    if let (Some(l), Some(t)) = (plan.limiter, plan.ticket) {
        l.reconcile(t, flow.usage.total()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_chunk_hidden_unless_asked() {
        let usage_only = SseEvent::data(
            r#"{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":1}}}"#,
        );
        let mut u = Usage::default();
        assert!(!relay_keeps(Api::Chat, &usage_only, false, &mut u));
        assert_eq!(
            u,
            Usage {
                input: 3,
                output: 5,
                cached_input: 1,
                reasoning: 0
            }
        );
        let mut u = Usage::default();
        assert!(relay_keeps(Api::Chat, &usage_only, true, &mut u));
        assert_eq!(u.total(), 8);
        let content = SseEvent::data(r#"{"choices":[{"delta":{"content":"hi"}}],"usage":null}"#);
        assert!(relay_keeps(Api::Chat, &content, false, &mut u));
        assert!(relay_keeps(
            Api::Chat,
            &SseEvent::data("[DONE]"),
            false,
            &mut u
        ));
    }
}
