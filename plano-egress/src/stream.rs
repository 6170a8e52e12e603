//! Streaming responses: upstream SSE events are relayed one by one (never the whole body
//! buffered). The usage chunk we asked for is recorded and, when the client did not ask
//! for it, not relayed. A client that goes away ends the pump at once, which drops the
//! upstream connection; the listener timeout ends a stream that runs too long.

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use metrics::counter;
use plano_common::metrics as m;
use plano_config::Provider;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::providers::sse::{SseDecoder, SseEvent};
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

    /// From a whole chat completion body (zero when it has none).
    pub fn from_response(body: &[u8]) -> Self {
        serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("usage").map(Self::from_value))
            .unwrap_or_default()
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
    pub client_wants_usage: bool,
    pub deadline: Instant,
    pub limiter: Option<std::sync::Arc<RateLimiter>>,
    pub ticket: Option<Ticket>,
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

/// Filters one decoded event: records usage, and says whether to relay it.
fn keep(ev: &SseEvent, wants_usage: bool, usage: &mut Usage) -> bool {
    if ev.is_done() || !ev.data.contains("\"usage\"") {
        return true;
    }
    let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
        return true;
    };
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        *usage = Usage::from_value(u);
        let usage_only = v
            .get("choices")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty);
        return wants_usage || !usage_only;
    }
    true
}

async fn pump(
    first: Bytes,
    mut rest: hyper::body::Incoming,
    plan: StreamPlan,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut decoder = SseDecoder::default();
    let mut usage = Usage::default();
    let deadline = tokio::time::sleep_until(plan.deadline);
    tokio::pin!(deadline);
    let mut chunk = Some(first);
    let outcome = 'pump: loop {
        if let Some(data) = chunk.take() {
            decoder.push(&data);
            let mut out = BytesMut::new();
            loop {
                match decoder.next_event() {
                    Ok(Some(ev)) => {
                        if keep(&ev, plan.client_wants_usage, &mut usage) {
                            ev.encode_into(&mut out);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(provider = %plan.provider.name, error = %e, "upstream stream unusable; ending it");
                        let _ = tx.send(Ok(out.freeze())).await;
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
                    tracing::warn!(provider = %plan.provider.name, error = %e, "upstream stream broke");
                    break "upstream_error";
                }
                None => {
                    if let Ok(Some(ev)) = decoder.finish()
                        && keep(&ev, plan.client_wants_usage, &mut usage)
                    {
                        let _ = tx.send(Ok(ev.encode())).await;
                    }
                    break "complete";
                }
            }
        }
    };
    // Dropping `rest` here closes the upstream connection when the stream did not finish.
    drop(rest);
    if let Some(message) = match outcome {
        "timeout" => Some("the stream was ended at the listener timeout"),
        "upstream_error" => Some("the upstream stream broke off"),
        _ => None,
    } {
        // Tell the client why the stream stops short, in the shape OpenAI SDKs raise on;
        // `try_send`: a client that is not reading gets no more of our time.
        let _ = tx.try_send(Ok(error_event(outcome, message)));
    }
    tracing::debug!(provider = %plan.provider.name, outcome, "stream finished");
    usage.record(&plan.provider);
    if let (Some(l), Some(t)) = (plan.limiter, plan.ticket) {
        l.reconcile(t, usage.total()).await;
    }
}

/// An OpenAI-style error event ending a stream early.
fn error_event(code: &str, message: &str) -> Bytes {
    let body = serde_json::json!({
        "error": {"message": message, "type": "upstream_error", "param": null, "code": code}
    });
    SseEvent::data(body.to_string()).encode()
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
        assert!(!keep(&usage_only, false, &mut u));
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
        assert!(keep(&usage_only, true, &mut u));
        assert_eq!(u.total(), 8);
        let content = SseEvent::data(r#"{"choices":[{"delta":{"content":"hi"}}],"usage":null}"#);
        assert!(keep(&content, false, &mut u));
        assert!(keep(&SseEvent::data("[DONE]"), false, &mut u));
    }
}
