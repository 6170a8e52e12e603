//! A scripted mock of an OpenAI-style provider, on a real socket.
//!
//! By default every `POST …/chat/completions` gets a chat completion (about `body_bytes`
//! of content) or, when the request says `stream: true`, an SSE stream of `chunks` content
//! chunks (plus a usage chunk when `stream_options.include_usage` is set) and `[DONE]`.
//! Tests push [`Reply`]s to script the next answers (status, headers, delay, custom body or
//! stream, hang, close mid-stream) and read back every request received.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct MockOptions {
    pub delay: Duration,
    pub body_bytes: usize,
    pub chunks: usize,
    pub chunk_delay: Duration,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            body_bytes: 1024,
            chunks: 5,
            chunk_delay: Duration::ZERO,
        }
    }
}

/// What to send for one request.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub status: Option<StatusCode>,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
    pub body: ReplyBody,
}

#[derive(Debug, Clone, Default)]
pub enum ReplyBody {
    /// The default completion (or stream, if the request asked for one).
    #[default]
    Default,
    /// This JSON as the body.
    Json(Value),
    /// These SSE data payloads, each after `gap`; `then_hang` keeps the connection open
    /// after the last one without ending the stream.
    Sse {
        events: Vec<String>,
        gap: Duration,
        then_hang: bool,
    },
    /// Accept the request and never answer.
    Hang,
}

impl Reply {
    pub fn status(code: u16) -> Self {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Reply {
            status: Some(status),
            body: ReplyBody::Json(
                json!({"error": {"message": format!("mock error {code}"), "type": "mock", "code": code}}),
            ),
            ..Reply::default()
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    /// An SSE answer: these `data:` payloads, `gap` apart; `then_hang` keeps the
    /// connection open after the last one.
    pub fn stream(events: Vec<String>, gap: Duration, then_hang: bool) -> Self {
        Reply {
            body: ReplyBody::Sse {
                events,
                gap,
                then_hang,
            },
            ..Reply::default()
        }
    }

    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

/// A request the mock received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    options: Mutex<Option<MockOptions>>,
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
    /// Streams whose client went away before the stream ended.
    streams_cut: AtomicUsize,
    streams_started: AtomicUsize,
}

#[derive(Clone)]
pub struct MockProvider {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl MockProvider {
    /// Start on 127.0.0.1 with an OS-chosen port.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            MockOptions::default(),
        )
        .await
    }

    pub async fn start_on(addr: SocketAddr, options: MockOptions) -> anyhow::Result<Self> {
        let inner = Arc::new(Inner::default());
        if let Ok(mut o) = inner.options.lock() {
            *o = Some(options);
        }
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/{*path}", post(handle))
            .route("/health", get(|| async { "ok" }))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, inner })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (a provider `base_url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push(&self, reply: Reply) {
        if let Ok(mut s) = self.inner.script.lock() {
            s.push_back(reply);
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    pub fn streams_cut(&self) -> usize {
        self.inner.streams_cut.load(Ordering::SeqCst)
    }

    pub fn streams_started(&self) -> usize {
        self.inner.streams_started.load(Ordering::SeqCst)
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    uri: http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Ok(mut r) = inner.requests.lock() {
        r.push(Recorded {
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            headers,
            body: body.clone(),
        });
    }
    let reply = inner
        .script
        .lock()
        .ok()
        .and_then(|mut s| s.pop_front())
        .unwrap_or_default();
    let options = inner
        .options
        .lock()
        .ok()
        .and_then(|o| o.clone())
        .unwrap_or_default();
    let delay = if reply.delay.is_zero() {
        options.delay
    } else {
        reply.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model")
        .to_string();
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut res = match reply.body {
        ReplyBody::Hang => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
        ReplyBody::Json(v) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
            .into_response(),
        ReplyBody::Sse {
            events,
            gap,
            then_hang,
        } => sse(inner.clone(), events, gap, then_hang),
        ReplyBody::Default if stream => {
            let events = default_stream(&model, options.chunks, include_usage);
            sse(inner.clone(), events, options.chunk_delay, false)
        }
        ReplyBody::Default => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            completion(&model, options.body_bytes).to_string(),
        )
            .into_response(),
    };
    if let Some(status) = reply.status {
        *res.status_mut() = status;
    }
    for (k, v) in reply.headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            res.headers_mut().insert(k, v);
        }
    }
    res
}

/// A chat completion whose content makes the body about `bytes` long.
pub fn completion(model: &str, bytes: usize) -> Value {
    let content = "lorem ipsum ".repeat(bytes.saturating_sub(300) / 12 + 1);
    json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content.trim_end()}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
    })
}

/// One chat.completion.chunk carrying `content`, with `finish` as its finish_reason.
pub fn chunk(content: &str, finish: Option<&str>) -> String {
    json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "m",
           "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]})
    .to_string()
}

/// The default stream: a role chunk, `chunks` content chunks, a finish chunk, the usage
/// chunk when asked for, and `[DONE]`.
pub fn default_stream(model: &str, chunks: usize, include_usage: bool) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let mut out = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for i in 0..chunks {
        out.push(chunk(json!({"content": format!("tok{i} ")}), Value::Null));
    }
    out.push(chunk(json!({}), json!("stop")));
    if include_usage {
        out.push(
            json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                   "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": chunks, "total_tokens": 10 + chunks}})
            .to_string(),
        );
    }
    out.push("[DONE]".into());
    out
}

/// Counts a stream as cut when it is dropped before its last event was produced.
struct CutGuard {
    inner: Arc<Inner>,
    done: bool,
}

impl CutGuard {
    fn finish(&mut self) {
        self.done = true;
    }
}

impl Drop for CutGuard {
    fn drop(&mut self) {
        if !self.done {
            self.inner.streams_cut.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn sse(inner: Arc<Inner>, events: Vec<String>, gap: Duration, then_hang: bool) -> Response {
    inner.streams_started.fetch_add(1, Ordering::SeqCst);
    let guard = CutGuard { inner, done: false };
    let state = (events.into_iter(), guard, false);
    let stream =
        futures_util::stream::unfold(state, move |(mut it, mut guard, started)| async move {
            if started && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            match it.next() {
                Some(ev) => Some((
                    Ok::<_, std::io::Error>(Bytes::from(format!("data: {ev}\n\n"))),
                    (it, guard, true),
                )),
                None if then_hang => {
                    std::future::pending::<()>().await;
                    None
                }
                None => {
                    guard.finish();
                    None
                }
            }
        });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
