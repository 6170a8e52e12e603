//! Phase 6 for streams: the answer event by event (never the whole body buffered). Same API on both
//! sides: upstream events are relayed as they are, and usage is read on the way (the chat
//! usage chunk we asked for is hidden from a client that did not). Different APIs: each
//! upstream event becomes chat chunks, and each chunk the client API's events
//! (`providers::plan::StreamShape`). The work happens inside the response body when the
//! connection polls it ([`Relay`]: no task or channel per stream). A client that goes away
//! drops the body, which drops the upstream connection; the listener timeout ends a stream
//! that runs too long (a watchdog task, so also when the client stopped reading); a stream
//! that breaks off ends with an error event in the client's API.

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode, header};
use http_body::{Body as _, Frame};
use plano_common::sse::SseEvent;
use plano_config::Provider;
use serde_json::Value;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, Waker, ready};
use tokio::task::AbortHandle;
use tokio::time::Instant;

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
    let mut res = Response::new(Body::new(Relay::new(opening, plan)));
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

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the body does next, in order, before reading the upstream again.
enum Step {
    /// Finish this first (a conversation stored before the client sees
    /// `response.completed`; the rate limit reconciled at the end).
    Await(BoxFuture<'static, ()>),
    /// Hand these bytes to the client.
    Send(Bytes),
    /// The stream is over.
    End,
}

/// A stream still reading its upstream.
struct Live {
    framing: Framing,
    rest: plano_common::http_client::PooledBody,
    /// The first event, until it has been translated.
    first: Option<SseEvent>,
    flow: Flow,
    provider: Provider,
    metrics: super::record::ProviderMetrics,
    sent: Instant,
    limiter: Option<std::sync::Arc<RateLimiter>>,
    ticket: Option<Ticket>,
    remember: Option<Arc<Remember>>,
    spans: Vec<tracing::Span>,
}

/// What the body and its deadline watchdog share.
struct Shared {
    /// `None` once the stream has finished (by either of them).
    live: Option<Live>,
    /// Set by the watchdog when it ends the stream: the error event still to send.
    tail: Option<Bytes>,
    /// Wakes the body when the watchdog ends the stream while the body waits on the upstream.
    waker: Option<Waker>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The response body of a committed stream. Reading it reads the upstream: each poll takes
/// the upstream bytes that have arrived, translates every whole event and hands the result
/// to the connection, so a chunk costs no task wake-up and no channel hop. A client that
/// goes away drops the body, which drops the upstream connection and records the outcome
/// (`client_closed`). The whole-request deadline is kept by a watchdog task that sleeps
/// until then (it also ends a stream whose client stopped reading, when the connection no
/// longer polls the body) and is aborted when the stream ends first.
struct Relay {
    shared: Arc<Mutex<Shared>>,
    watchdog: AbortHandle,
    steps: VecDeque<Step>,
    done: bool,
}

impl Relay {
    fn new(opening: Box<Opening>, plan: StreamPlan) -> Relay {
        let Opening {
            framing,
            first,
            rest,
        } = *opening;
        let flow = Flow {
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
        let shared = Arc::new(Mutex::new(Shared {
            live: Some(Live {
                framing,
                rest,
                first: Some(first),
                flow,
                provider: plan.provider,
                metrics: plan.metrics,
                sent: plan.sent,
                limiter: plan.limiter,
                ticket: plan.ticket,
                remember: plan.remember.map(Arc::new),
                spans: plan.spans,
            }),
            tail: None,
            waker: None,
        }));
        let watchdog = tokio::spawn(watchdog(shared.clone(), plan.deadline)).abort_handle();
        Relay {
            shared,
            watchdog,
            steps: VecDeque::new(),
            done: false,
        }
    }

    /// Read and translate until there are bytes to send, the stream ends, or the upstream
    /// has nothing more yet. Queues the steps; `Pending` only when the upstream is pending.
    fn advance(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        let Relay {
            shared,
            watchdog,
            steps,
            done,
        } = self;
        let mut guard = lock(shared);
        let s: &mut Shared = &mut guard;
        let Some(live) = s.live.as_mut() else {
            // The watchdog ended the stream.
            if let Some(tail) = s.tail.take() {
                steps.push_back(Step::Send(tail));
            }
            steps.push_back(Step::End);
            *done = true;
            return Poll::Ready(());
        };
        let end = End {
            steps,
            watchdog,
            done,
        };
        loop {
            // Every whole event buffered so far (the first one included), translated.
            let mut out = BytesMut::new();
            let mut failed = live
                .first
                .take()
                .map_or(Ok(()), |ev| live.flow.event(ev, &mut out))
                .err();
            while failed.is_none() {
                match live
                    .framing
                    .next_event()
                    .and_then(|ev| ev.map(|ev| live.flow.event(ev, &mut out)).transpose())
                {
                    Ok(Some(())) => {}
                    Ok(None) => break,
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                remember_then_send(end.steps, live, out);
                return end.finish(s, "upstream_error", Some(e));
            }
            if !out.is_empty() {
                remember_then_send(end.steps, live, out);
                return Poll::Ready(());
            }
            match Pin::new(&mut live.rest).poll_frame(cx) {
                Poll::Pending => {
                    if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        s.waker = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(f))) => {
                    if let Ok(data) = f.into_data() {
                        live.framing.push(&data);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return end.finish(s, "upstream_error", Some(e.to_string()));
                }
                Poll::Ready(None) => {
                    let mut out = BytesMut::new();
                    let ended = live
                        .framing
                        .finish()
                        .and_then(|ev| ev.map(|ev| live.flow.event(ev, &mut out)).transpose())
                        .and_then(|_| live.flow.end(&mut out));
                    remember_then_send(end.steps, live, out);
                    return match ended {
                        Ok(()) => end.finish(s, "complete", None),
                        Err(e) => end.finish(s, "upstream_error", Some(e)),
                    };
                }
            }
        }
    }
}

/// Queue `out`, after storing the conversation if `response.completed` is in it (a
/// follow-up may arrive at once, at another replica).
fn remember_then_send(steps: &mut VecDeque<Step>, live: &mut Live, out: BytesMut) {
    if let Some(store) = remember(live) {
        steps.push_back(Step::Await(store));
    }
    if !out.is_empty() {
        steps.push_back(Step::Send(out.freeze()));
    }
}

/// The parts of a [`Relay`] that ending the stream touches.
struct End<'a> {
    steps: &'a mut VecDeque<Step>,
    watchdog: &'a AbortHandle,
    done: &'a mut bool,
}

impl End<'_> {
    fn finish(self, s: &mut Shared, outcome: &'static str, broken: Option<String>) -> Poll<()> {
        if let Some(live) = s.live.take() {
            let (fail, tail) = settle(live, outcome, broken);
            if let Some(fail) = fail {
                self.steps.push_back(Step::Send(fail));
            }
            if let Some(tail) = tail {
                self.steps.push_back(Step::Await(tail));
            }
        }
        self.watchdog.abort();
        self.steps.push_back(Step::End);
        *self.done = true;
        Poll::Ready(())
    }
}

impl http_body::Body for Relay {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        loop {
            match this.steps.front_mut() {
                Some(Step::Await(f)) => {
                    ready!(f.as_mut().poll(cx));
                    this.steps.pop_front();
                }
                Some(Step::Send(_)) => {
                    if let Some(Step::Send(b)) = this.steps.pop_front() {
                        return Poll::Ready(Some(Ok(Frame::data(b))));
                    }
                }
                Some(Step::End) => return Poll::Ready(None),
                None if this.done => return Poll::Ready(None),
                None => ready!(this.advance(cx)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.steps.front(), Some(Step::End)) || (self.done && self.steps.is_empty())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.watchdog.abort();
        // The client went away before the end: the upstream connection is dropped with
        // the rest of the stream, and the outcome recorded.
        let live = lock(&self.shared).live.take();
        let mut pending: Vec<BoxFuture<'static, ()>> = Vec::new();
        if let Some(live) = live
            && let (_, Some(tail)) = settle(live, "client_closed", None)
        {
            pending.push(tail);
        }
        // Work the body had not got to yet (a conversation to store, the reconcile) is
        // still done.
        pending.extend(self.steps.drain(..).filter_map(|s| match s {
            Step::Await(f) => Some(f),
            _ => None,
        }));
        if !pending.is_empty()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                for f in pending {
                    f.await;
                }
            });
        }
    }
}

/// Ends the stream at the whole-request deadline unless it ended first (then it is
/// aborted). The body is woken to send the error event, if it is still polled.
async fn watchdog(shared: Arc<Mutex<Shared>>, deadline: Instant) {
    tokio::time::sleep_until(deadline).await;
    let (live, waker) = {
        let mut s = lock(&shared);
        (s.live.take(), s.waker.take())
    };
    let Some(live) = live else { return };
    tracing::warn!(provider = %live.provider.name, "stream ended at the listener timeout");
    let (fail, tail) = settle(live, "timeout", None);
    lock(&shared).tail = fail;
    if let Some(w) = waker {
        w.wake();
    }
    if let Some(tail) = tail {
        tail.await;
    }
}

/// The conversation to store when `response.completed` has been seen (at most once).
fn remember(live: &mut Live) -> Option<BoxFuture<'static, ()>> {
    let r = live.remember.clone()?;
    let response = live.flow.completed.take()?;
    Some(Box::pin(async move { r.store(&response).await }))
}

/// A stream is over (`outcome`: `complete`, `client_closed`, `upstream_error`, `timeout`):
/// drop the upstream, record duration, outcome, tokens and trace attributes. Returns the
/// error event to send the client (a broken stream) and what is left to await (the
/// conversation store, the rate-limit reconcile).
fn settle(
    mut live: Live,
    outcome: &'static str,
    broken: Option<String>,
) -> (Option<Bytes>, Option<BoxFuture<'static, ()>>) {
    let store = remember(&mut live);
    let Live {
        rest,
        mut flow,
        provider,
        metrics,
        sent,
        limiter,
        ticket,
        remember: keep,
        spans,
        ..
    } = live;
    // Dropping `rest` closes the upstream connection when the stream did not finish.
    drop(rest);
    record::upstream_duration(&metrics, sent.elapsed());
    if let Some(e) = &broken {
        tracing::warn!(provider = %provider.name, error = %e, "upstream stream unusable; ending it");
    }
    let fail = match outcome {
        "timeout" => Some("the stream was ended at the listener timeout".to_string()),
        "upstream_error" => Some(match &broken {
            Some(e) => format!("the upstream stream broke off: {e}"),
            None => "the upstream stream broke off".to_string(),
        }),
        _ => None,
    }
    .map(|message| {
        record::stream_broken(&provider, outcome);
        flow.fail(outcome, &message)
    });
    tracing::debug!(provider = %provider.name, outcome, "stream finished");
    record::tokens(&metrics, &flow.usage);
    let span_refs: Vec<&tracing::Span> = spans.iter().collect();
    trace_usage(&span_refs, &flow.usage);
    if let Some(f) = &flow.facts {
        f.record(&span_refs);
    }
    if matches!(outcome, "upstream_error" | "timeout")
        && let Some(attempt) = spans.first()
    {
        plano_common::telemetry::record_error(attempt, outcome);
    }
    // A `response.completed` seen in the last events (the error event cannot carry one).
    let late = keep.and_then(|r| flow.completed.take().map(|c| (r, c)));
    let total = flow.usage.total();
    let reconcile = match (limiter, ticket) {
        (Some(l), Some(t)) => Some((l, t)),
        _ => None,
    };
    let tail: Option<BoxFuture<'static, ()>> =
        if store.is_none() && late.is_none() && reconcile.is_none() {
            None
        } else {
            Some(Box::pin(async move {
                if let Some(store) = store {
                    store.await;
                }
                if let Some((r, response)) = late {
                    r.store(&response).await;
                }
                if let Some((l, t)) = reconcile {
                    l.reconcile(t, total).await;
                }
                // The spans end here, after the usage and the reconcile.
                drop(spans);
            }))
        };
    (fail, tail)
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
