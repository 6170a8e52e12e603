//! Phase 6 for streams: the answer event by event (never the whole body buffered). Same API on both
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
use plano_common::sse::SseEvent;
use plano_config::Provider;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::record;
use super::remember::Remember;
use crate::providers::api::Api;
use crate::providers::framing::Framing;
use crate::providers::plan::{ClientSide, StreamShape};
use crate::providers::usage::{Usage, is_usage_only_chunk};
use crate::ratelimit::{RateLimiter, Ticket};

/// A stream committed to: the upstream's framing (holding whatever followed the first
/// event), its first event, and the rest of its body.
pub struct Opening {
    pub framing: Framing,
    pub first: SseEvent,
    pub rest: plano_common::http_client::PooledBody,
}

pub struct StreamPlan {
    pub provider: Provider,
    pub metrics: super::record::ProviderMetrics,
    pub shape: StreamShape,
    pub deadline: Instant,
    /// When the attempt was sent (its duration is recorded when the body ends).
    pub sent: Instant,
    pub limiter: Option<std::sync::Arc<RateLimiter>>,
    pub ticket: Option<Ticket>,
    /// Responses: where to store the conversation once the stream completes.
    pub remember: Option<Remember>,
    /// Trace spans (the attempt's, the request's) kept open until the stream ends; they
    /// get the usage then.
    pub spans: Vec<tracing::Span>,
}

/// Set the usage attributes (GenAI and `llm.usage.*`) on trace spans.
pub fn trace_usage(spans: &[&tracing::Span], usage: &crate::providers::usage::Usage) {
    let usage = plano_common::telemetry::Usage {
        input: usage.input,
        output: usage.output,
        cached_input: Some(usage.cached_input),
        reasoning: Some(usage.reasoning),
    };
    for span in spans {
        plano_common::telemetry::record_usage(span, &usage);
    }
}

/// The streaming response: headers now, events as they come.
pub fn respond(opening: Box<Opening>, plan: StreamPlan) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(pump(opening, plan, tx));
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

/// One stream's translation state: upstream events in, client bytes out.
struct Flow {
    shape: StreamShape,
    usage: Usage,
    /// Events sent to the client (the next Responses `sequence_number` when relaying).
    sent: u64,
    /// Responses: the final response object, seen in `response.completed`.
    completed: Option<Value>,
    /// Response model and finish reasons for the trace (only when it is recorded).
    facts: Option<plano_common::telemetry::ResponseFacts>,
}

impl Flow {
    /// One upstream event. `Err` ends the stream as broken.
    fn event(&mut self, ev: SseEvent, out: &mut BytesMut) -> Result<(), String> {
        // The provider's own events name the model and finish reasons.
        if let Some(f) = &mut self.facts {
            f.observe_event(ev.event.as_deref(), &ev.data);
        }
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
        self.usage.read_event(Api::Chat, chunk);
        if let StreamShape::Translate { client, .. } = &mut self.shape {
            match client {
                ClientSide::Chat { client_wants_usage } => {
                    if *client_wants_usage || !is_usage_only_chunk(chunk) {
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

/// Relaying: reads usage from the events that carry it, and says whether to relay `ev`
/// (only a chat usage chunk the client did not ask for is held back).
fn relay_keeps(api: Api, ev: &SseEvent, wants_usage: bool, usage: &mut Usage) -> bool {
    if ev.is_done() || !ev.data.contains("usage") {
        return true;
    }
    let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
        return true;
    };
    usage.read_event(api, &v);
    !(api == Api::Chat && !wants_usage && is_usage_only_chunk(&v))
}

async fn pump(
    opening: Box<Opening>,
    plan: StreamPlan,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let Opening {
        mut framing,
        first,
        mut rest,
    } = *opening;
    let mut flow = Flow {
        shape: plan.shape,
        usage: Usage::default(),
        sent: 0,
        completed: None,
        facts: plan
            .spans
            .first()
            .filter(|s| plano_common::telemetry::is_recording(s))
            .map(|_| plano_common::telemetry::ResponseFacts::default()),
    };
    let deadline = tokio::time::sleep_until(plan.deadline);
    tokio::pin!(deadline);
    let mut first = Some(first);
    let mut broken: Option<String> = None;
    let outcome = loop {
        // Every whole event buffered so far (the first one included), translated.
        let mut out = BytesMut::new();
        let mut failed = first
            .take()
            .map_or(Ok(()), |ev| flow.event(ev, &mut out))
            .err();
        while failed.is_none() {
            match framing
                .next_event()
                .and_then(|ev| ev.map(|ev| flow.event(ev, &mut out)).transpose())
            {
                Ok(Some(())) => {}
                Ok(None) => break,
                Err(e) => failed = Some(e),
            }
        }
        // Stored before the client sees `response.completed`: a follow-up may arrive at
        // once, at another replica.
        remember_before_send(&plan.remember, &mut flow).await;
        if let Some(e) = failed {
            let _ = tx.send(Ok(out.freeze())).await;
            broken = Some(e);
            break "upstream_error";
        }
        if !out.is_empty() {
            // A client that stops reading must not hold the upstream past the deadline.
            tokio::select! {
                sent = tx.send(Ok(out.freeze())) => if sent.is_err() { break "client_closed" },
                _ = &mut deadline => break "timeout",
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
                        framing.push(&data);
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
                    remember_before_send(&plan.remember, &mut flow).await;
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
    record::upstream_duration(&plan.metrics, plan.sent.elapsed());
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
        record::stream_broken(&plan.provider, outcome);
        // `try_send`: a client that is not reading gets no more of our time.
        let _ = tx.try_send(Ok(flow.fail(outcome, &message)));
    }
    tracing::debug!(provider = %plan.provider.name, outcome, "stream finished");
    remember_before_send(&plan.remember, &mut flow).await;
    record::tokens(&plan.metrics, &flow.usage);
    let spans: Vec<&tracing::Span> = plan.spans.iter().collect();
    trace_usage(&spans, &flow.usage);
    if let Some(f) = &flow.facts {
        f.record(&spans);
    }
    if matches!(outcome, "upstream_error" | "timeout")
        && let Some(attempt) = plan.spans.first()
    {
        plano_common::telemetry::record_error(attempt, outcome);
    }
    if let (Some(l), Some(t)) = (plan.limiter, plan.ticket) {
        l.reconcile(t, flow.usage.total()).await;
    }
}

/// Store the conversation once `response.completed` has been seen (at most once).
async fn remember_before_send(remember: &Option<Remember>, flow: &mut Flow) {
    if let Some(r) = remember
        && let Some(response) = flow.completed.take()
    {
        r.store(&response).await;
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
