//! `output_filters` on an answer, for both binaries (the edge on what the egress answered,
//! the egress on what it answers its clients).
//!
//! Only successful (2xx) answers are filtered: an error body is the egress's own message
//! and passes as it is. A JSON answer is read whole (up to
//! `plano_common::filters::MAX_FILTER_BODY_BYTES`), filtered, and sent with its new
//! `content-length`. An SSE answer is filtered event by event as it arrives: each event's
//! `data` goes through the chain and is re-encoded with the filter's output, keeping its
//! `event:` name and `id:`; `[DONE]` and data that is not JSON pass untouched. When a
//! filter blocks or fails (closed) mid-stream, the client gets one error event in its
//! API's stream shape and the stream ends there, cleanly (see `error_event`).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, header};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use plano_config::Config;

use super::{FilterCtx, FilterRunner, MAX_FILTER_BODY_BYTES};
use crate::errors::{ApiError, ApiShape};
use crate::sse::{SseDecoder, SseEvent};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type filtered answers travel in.
pub type Inner = UnsyncBoxBody<Bytes, BoxError>;

fn full(bytes: Bytes) -> Inner {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// What the chain needs to know about the request whose answer it filters; owned, since a
/// stream outlives the handler.
pub struct OutputChain {
    pub runner: Arc<FilterRunner>,
    pub config: Arc<Config>,
    pub ids: Vec<String>,
    pub path: String,
    pub request_headers: HeaderMap,
    pub request_id: HeaderValue,
    pub shape: ApiShape,
}

impl OutputChain {
    fn ctx(&self) -> FilterCtx<'_> {
        FilterCtx {
            path: &self.path,
            headers: &self.request_headers,
            request_id: &self.request_id,
        }
    }

    /// Filter the response whose head is `headers`: SSE as a stream, anything else whole.
    pub async fn apply(self, headers: &mut HeaderMap, body: Inner) -> Result<Inner, ApiError> {
        let sse = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        headers.remove(header::CONTENT_LENGTH);
        if sse {
            return Ok(self.stream(body));
        }
        let bytes = match read_capped(body, MAX_FILTER_BODY_BYTES).await {
            Ok(b) => b,
            Err(e) => {
                return Err(ApiError::new(
                    http::StatusCode::BAD_GATEWAY,
                    "egress_response_unreadable",
                    format!("the egress answer could not be read for the output filters: {e}"),
                )
                .with_shape(self.shape));
            }
        };
        let out = self
            .runner
            .run_output(&self.config, &self.ids, &self.ctx(), bytes)
            .await
            .map_err(|e| e.to_api_error(self.shape))?;
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        Ok(full(out))
    }

    fn stream(self, upstream: Inner) -> Inner {
        let state = Streaming {
            chain: self,
            upstream,
            decoder: SseDecoder::default(),
            ended: false,
        };
        let frames = futures_util::stream::unfold(state, |mut s| async move {
            let out = s.next_chunk().await?;
            Some((out.map(Frame::data), s))
        });
        StreamBody::new(frames).boxed_unsync()
    }

    /// One event through the chain, encoded; `Err` carries the closing error event.
    async fn event(&self, event: SseEvent) -> Result<Bytes, Bytes> {
        if event.is_done() || serde_json::from_str::<serde::de::IgnoredAny>(&event.data).is_err() {
            return Ok(event.encode());
        }
        let data = Bytes::from(event.data.clone());
        match self
            .runner
            .run_output_event(&self.config, &self.ids, &self.ctx(), data)
            .await
        {
            Ok(new) => Ok(SseEvent {
                data: String::from_utf8_lossy(&new).into_owned(),
                ..event
            }
            .encode()),
            Err(e) => Err(error_event(&self.path, &e.to_api_error(self.shape))),
        }
    }
}

/// The whole body, at most `cap` bytes. (Not `http_body_util::Limited`: its error
/// conversion, awaited inside the connection future, trips rustc's "`From` is not general
/// enough".)
async fn read_capped(mut body: Inner, cap: usize) -> Result<Bytes, BoxError> {
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            if out.len() + data.len() > cap {
                return Err(format!("larger than {cap} bytes").into());
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out.freeze())
}

struct Streaming {
    chain: OutputChain,
    upstream: Inner,
    decoder: SseDecoder,
    ended: bool,
}

impl Streaming {
    /// The next bytes for the client: one filtered event, or the end.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, BoxError>> {
        if self.ended {
            return None;
        }
        loop {
            match self.decoder.next_event() {
                Ok(Some(event)) => return Some(Ok(self.filtered(event).await)),
                Ok(None) => {}
                Err(e) => return Some(Err(self.fail(e))),
            }
            match self.upstream.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.decoder.push(data);
                    }
                }
                Some(Err(e)) => return Some(Err(self.fail_boxed(e))),
                None => {
                    self.ended = true;
                    return match self.decoder.finish() {
                        Ok(Some(event)) => Some(Ok(self.filtered(event).await)),
                        Ok(None) => None,
                        Err(e) => Some(Err(Box::new(e))),
                    };
                }
            }
        }
    }

    async fn filtered(&mut self, event: SseEvent) -> Bytes {
        match self.chain.event(event).await {
            Ok(b) => b,
            Err(closing) => {
                self.ended = true;
                closing
            }
        }
    }

    fn fail(&mut self, e: crate::sse::SseError) -> BoxError {
        self.ended = true;
        Box::new(e)
    }

    fn fail_boxed(&mut self, e: BoxError) -> BoxError {
        self.ended = true;
        e
    }
}

/// The error event that ends a filtered stream, in the stream shape of the client's API:
/// Anthropic `event: error` with its error body; Responses `event: error` with
/// `{type: "error", code, message, param}`; chat completions a `data:` error object (what
/// OpenAI's SDKs raise on) followed by `[DONE]` so line-oriented clients stop too.
pub fn error_event(path: &str, err: &ApiError) -> Bytes {
    let body = String::from_utf8_lossy(&err.body()).into_owned();
    let mut out = BytesMut::new();
    if err.shape == ApiShape::Anthropic {
        SseEvent::named("error", body).encode_into(&mut out);
    } else if path.starts_with("/v1/responses") {
        let data = serde_json::json!({
            "type": "error",
            "code": err.code,
            "message": err.message,
            "param": err.param,
        });
        SseEvent::named("error", data.to_string()).encode_into(&mut out);
    } else {
        SseEvent::data(body).encode_into(&mut out);
        SseEvent::data("[DONE]").encode_into(&mut out);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Frames;

    fn chain(path: &str) -> OutputChain {
        let yaml = "version: v0.4.0\nmodel_providers:\n  - model: openai/gpt-4o\n    access_key: k\n    default: true\n";
        OutputChain {
            runner: Arc::new(
                FilterRunner::new(&crate::http_client::HttpClientBuilder::new(
                    std::time::Duration::from_secs(1),
                ))
                .unwrap(),
            ),
            config: Arc::new(plano_config::load_str(yaml, None, &|_| None).unwrap()),
            ids: Vec::new(),
            path: path.into(),
            request_headers: HeaderMap::new(),
            request_id: HeaderValue::from_static("r"),
            shape: ApiShape::for_path(path),
        }
    }

    /// Upstream chunks split anywhere (inside a line, inside `\r\n`) come out as whole
    /// events, names and ids kept, a last event without its blank line included.
    #[tokio::test]
    async fn events_are_reassembled_and_reencoded() {
        let wire = "event: message_start\r\nid: 7\r\ndata: {\"a\":1}\r\n\r\ndata: {\"b\":\r\ndata: 2}\n\n: keep-alive\n\ndata: [DONE]";
        let bytes = wire.as_bytes();
        let chunks = [0..5, 5..23, 23..24, 24..50, 50..bytes.len()]
            .map(|r| Bytes::copy_from_slice(&bytes[r]));
        let upstream = Frames::<BoxError>::new(chunks).boxed_unsync();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        let out = chain("/v1/chat/completions")
            .apply(&mut headers, upstream)
            .await
            .unwrap();
        assert!(headers.get(header::CONTENT_LENGTH).is_none());
        let text = out.collect().await.unwrap().to_bytes();
        assert_eq!(
            std::str::from_utf8(&text).unwrap(),
            "event: message_start\nid: 7\ndata: {\"a\":1}\n\ndata: {\"b\":\ndata: 2}\n\ndata: [DONE]\n\n"
        );
    }

    #[test]
    fn error_events_per_api() {
        let e = ApiError::new(http::StatusCode::FORBIDDEN, "filter_blocked", "no");
        let chat = error_event("/v1/chat/completions", &e);
        let text = std::str::from_utf8(&chat).unwrap();
        assert!(text.starts_with("data: {\"error\":"), "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        let anthropic = error_event("/v1/messages", &e.clone().with_shape(ApiShape::Anthropic));
        let text = std::str::from_utf8(&anthropic).unwrap();
        assert!(text.starts_with("event: error\ndata: {"), "{text}");
        assert!(text.contains("\"permission_error\""), "{text}");
        let responses = error_event("/v1/responses", &e);
        assert!(
            std::str::from_utf8(&responses)
                .unwrap()
                .contains("\"code\":\"filter_blocked\"")
        );
    }
}
