//! A scripted mock LLM provider on a real socket that answers in each provider's own API.
//!
//! Routes (by path suffix, so any base path works):
//! - `POST …/chat/completions`: OpenAI chat completions ([`openai`]);
//! - `POST …/messages`: Anthropic Messages ([`anthropic`]);
//! - `POST …/responses`: OpenAI Responses ([`responses`]);
//! - `POST …/model/{modelId}/converse` and `…/converse-stream`: Amazon Bedrock Converse,
//!   the stream in AWS event-stream framing ([`bedrock`]).
//!
//! Anything else gets a 404. Every request is recorded (path, query, headers, JSON body).
//! The wire formats are written from the providers' API references, independently of the
//! egress translators, so that a bug in a translator cannot be cancelled out by the same bug
//! here.
//!
//! # Default answers (nothing scripted)
//! Decided from the conversation, the same way in every API (see [`conversation`]):
//! - the last message carries a tool result → text `tool result: <its text>`;
//! - else the request offers tools → ONE call to the tool `tool_choice` names, else the
//!   first one (none with `tool_choice: none`), arguments built from its schema's required
//!   properties (`{"query": "mock"}`), id `call_mock_1` (OpenAI APIs),
//!   `toolu_mock_1` (Anthropic) or `tooluse_mock_1` (Bedrock), stop reason tool use;
//! - else text `mock reply to: <last user text, first 200 chars>`.
//!
//! A request for model `mock-error-<status>` (e.g. `mock-error-429`; for Bedrock the model id
//! in the path) gets that status with an error body in the route's shape, so tests can drive
//! errors through a `mock-llm` process they cannot script.
//!
//! Plain chat completions (no tool to call, no tool result) keep the sizes benchmarks ask
//! for: the reply text is followed by "lorem ipsum" up to about `body_bytes` of body, or,
//! streaming, comes as one chunk followed by `chunks` chunks `tok0 `, `tok1 `, … (usage 10
//! prompt tokens, 20 or `chunks` completion tokens).
//!
//! A text answer longer than the request's output limit (`max_tokens`,
//! `max_completion_tokens`, `max_output_tokens`, `inferenceConfig.maxTokens`) is cut to that
//! many words and ends with the API's limit reason (`length`, `max_tokens`, an `incomplete`
//! response).
//!
//! Usage: prompt tokens = request body bytes / 4, output tokens = words of the answer, cache
//! reads and writes = [`Reply::cached_tokens`] and [`Reply::cache_write_tokens`] (0 unless
//! scripted). As in the real APIs, OpenAI prompt/input tokens include the cached ones, while
//! Anthropic `input_tokens` and Bedrock `inputTokens` count only the uncached rest (Bedrock's
//! `totalTokens` still counts everything). Streams send text one word per
//! delta and tool arguments in at least two fragments, `chunk_delay` apart.
//!
//! # Scripting
//! Tests [`MockProvider::push`] [`Reply`]s: status, headers, delay, and a body that is raw
//! wire data ([`ReplyBody::Json`], [`ReplyBody::Sse`], [`ReplyBody::NamedSse`],
//! [`ReplyBody::Bytes`]), an [`Answer`] rendered natively by whichever route receives it
//! ([`Reply::text`], [`Reply::tool_call`]), an error in the route's error shape
//! ([`Reply::status`]), or a hang. Builders for raw streams: [`chunk`], [`default_stream`],
//! [`anthropic_text_stream`], [`anthropic_tool_stream`], [`anthropic_error_event`],
//! [`responses_text_stream`], [`bedrock_stream`], [`bedrock_frame`],
//! [`bedrock_exception_frame`].

mod anthropic;
mod bedrock;
pub mod conversation;
mod openai;
mod responses;

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
use serde_json::Value;
use tokio::net::TcpListener;

pub use anthropic::{anthropic_error_event, anthropic_text_stream, anthropic_tool_stream};
pub use bedrock::{bedrock_exception_frame, bedrock_frame, bedrock_stream};
pub use conversation::Answer;
pub use openai::{chunk, completion, default_stream};
pub use responses::responses_text_stream;

use conversation::{Conversation, Usage};

#[derive(Debug, Clone)]
pub struct MockOptions {
    pub delay: Duration,
    pub body_bytes: usize,
    pub chunks: usize,
    pub chunk_delay: Duration,
    /// Reject requests the real API would reject before answering: no `authorization` /
    /// `x-api-key` header (401), a body that is not JSON (400), and on `/messages` a missing
    /// `anthropic-version` header or `max_tokens` (400). Errors come in the route's shape.
    pub strict: bool,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            body_bytes: 1024,
            chunks: 5,
            chunk_delay: Duration::ZERO,
            strict: false,
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
    /// Cache read tokens reported in the usage of a default or [`ReplyBody::Answer`] answer.
    pub cached_tokens: u64,
    /// Cache write tokens, likewise (Anthropic, Bedrock and Responses report them).
    pub cache_write_tokens: u64,
}

#[derive(Debug, Clone, Default)]
pub enum ReplyBody {
    /// The default answer (see the module doc), streamed if the request asked for it.
    #[default]
    Default,
    /// This answer, in the receiving route's format, streamed if the request asked for it.
    Answer(Answer),
    /// An error body in the receiving route's error shape (status from [`Reply::status`]).
    Error,
    /// This JSON as the body.
    Json(Value),
    /// These SSE data payloads, each after `gap`; `then_hang` keeps the connection open
    /// after the last one without ending the stream.
    Sse {
        events: Vec<String>,
        gap: Duration,
        then_hang: bool,
    },
    /// These named SSE events (`event:` name, `data:` payload), as Anthropic and the
    /// Responses API send them.
    NamedSse {
        events: Vec<(String, String)>,
        gap: Duration,
        then_hang: bool,
    },
    /// These raw byte chunks (e.g. AWS event-stream frames) with this content type.
    Bytes {
        chunks: Vec<Vec<u8>>,
        content_type: String,
        gap: Duration,
        then_hang: bool,
    },
    /// Accept the request and never answer.
    Hang,
}

impl Reply {
    /// An error with this status, in the error shape of the route that receives it
    /// (OpenAI `{"error": …}`, Anthropic `{"type": "error", …}`, Bedrock `{"message": …}`
    /// with `x-amzn-errortype`).
    pub fn status(code: u16) -> Self {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Reply {
            status: Some(status),
            body: ReplyBody::Error,
            ..Reply::default()
        }
    }

    /// A text answer rendered natively by the receiving route, stream or not.
    pub fn text(text: &str) -> Self {
        Reply {
            body: ReplyBody::Answer(Answer::Text(text.into())),
            ..Reply::default()
        }
    }

    /// One tool call rendered natively by the receiving route, stream or not.
    pub fn tool_call(name: &str, arguments: Value) -> Self {
        Reply {
            body: ReplyBody::Answer(Answer::ToolCall {
                name: name.into(),
                arguments,
            }),
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

    /// A named-event SSE answer (Anthropic, Responses).
    pub fn named_stream(events: Vec<(String, String)>, gap: Duration, then_hang: bool) -> Self {
        Reply {
            body: ReplyBody::NamedSse {
                events,
                gap,
                then_hang,
            },
            ..Reply::default()
        }
    }

    /// A Bedrock event-stream answer made of these frames (see [`bedrock_frame`]).
    pub fn event_stream(frames: Vec<Vec<u8>>, gap: Duration, then_hang: bool) -> Self {
        Reply {
            body: ReplyBody::Bytes {
                chunks: frames,
                content_type: bedrock::EVENT_STREAM.into(),
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

    pub fn cached_tokens(mut self, n: u64) -> Self {
        self.cached_tokens = n;
        self
    }

    pub fn cache_write_tokens(mut self, n: u64) -> Self {
        self.cache_write_tokens = n;
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
        Self::start_with(MockOptions::default()).await
    }

    /// Start on 127.0.0.1 with an OS-chosen port and these options.
    pub async fn start_with(options: MockOptions) -> anyhow::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), options).await
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

/// The API a path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Messages,
    Responses,
    Converse,
    ConverseStream,
}

impl Api {
    fn of(path: &str) -> Option<Api> {
        let path = path.trim_end_matches('/');
        if path.ends_with("/chat/completions") {
            Some(Api::Chat)
        } else if path.ends_with("/messages") {
            Some(Api::Messages)
        } else if path.ends_with("/responses") {
            Some(Api::Responses)
        } else if bedrock::model_id(path).is_some() && path.ends_with("/converse") {
            Some(Api::Converse)
        } else if bedrock::model_id(path).is_some() && path.ends_with("/converse-stream") {
            Some(Api::ConverseStream)
        } else {
            None
        }
    }

    fn error(self, status: StatusCode, message: &str) -> Response {
        match self {
            Api::Chat | Api::Responses => openai::error(status, message),
            Api::Messages => anthropic::error(status, message),
            Api::Converse | Api::ConverseStream => bedrock::error(status, message),
        }
    }
}

/// What the request asked for, as the renderers need it.
pub(crate) struct Ctx {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub usage: Usage,
    /// Tools as the request sent them (the Responses API echoes them back).
    pub tools: Value,
    /// The text answer was cut at the request's output token limit.
    pub truncated: bool,
}

/// A rendered answer, before it becomes an HTTP response.
pub(crate) enum Out {
    Json(Value),
    /// `data:`-only SSE payloads.
    Sse(Vec<String>),
    /// Named SSE events.
    Named(Vec<(String, String)>),
    /// AWS event-stream frames.
    Frames(Vec<Vec<u8>>),
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    uri: http::Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let parsed: Result<Value, _> = serde_json::from_slice(&raw);
    let body = parsed.as_ref().cloned().unwrap_or(Value::Null);
    if let Ok(mut r) = inner.requests.lock() {
        r.push(Recorded {
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            headers: headers.clone(),
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
    let Some(api) = Api::of(uri.path()) else {
        return openai::error(
            StatusCode::NOT_FOUND,
            &format!("mock: no route for POST {}", uri.path()),
        );
    };
    if options.strict
        && let Some((status, message)) = strict_problem(api, &headers, parsed.is_ok(), &body)
    {
        return api.error(status, &message);
    }
    let status = reply.status;
    let cache = (reply.cached_tokens, reply.cache_write_tokens);
    let mut res = match reply.body {
        ReplyBody::Hang => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
        ReplyBody::Error => {
            let status = status.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            api.error(status, &format!("mock error {}", status.as_u16()))
        }
        ReplyBody::Json(v) => json_response(&v),
        ReplyBody::Sse {
            events,
            gap,
            then_hang,
        } => stream(
            &inner,
            sse_frames(events),
            "text/event-stream",
            gap,
            then_hang,
        ),
        ReplyBody::NamedSse {
            events,
            gap,
            then_hang,
        } => stream(
            &inner,
            named_frames(events),
            "text/event-stream",
            gap,
            then_hang,
        ),
        ReplyBody::Bytes {
            chunks,
            content_type,
            gap,
            then_hang,
        } => stream(
            &inner,
            chunks.into_iter().map(Bytes::from).collect(),
            &content_type,
            gap,
            then_hang,
        ),
        ReplyBody::Answer(answer) => {
            let out = render(api, &uri, &body, raw.len(), &answer, cache);
            respond(&inner, out, options.chunk_delay)
        }
        ReplyBody::Default if let Some(code) = error_model(api, uri.path(), &body) => {
            api.error(code, &format!("mock error {}", code.as_u16()))
        }
        ReplyBody::Default => {
            let conv = conversation(api, &body);
            let out = if api == Api::Chat && conv.tool.is_none() && conv.tool_result.is_none() {
                openai::sized(&body, &conv.reply(), &options)
            } else {
                render(api, &uri, &body, raw.len(), &conv.answer(), cache)
            };
            respond(&inner, out, options.chunk_delay)
        }
    };
    if let Some(status) = status {
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

fn strict_problem(
    api: Api,
    headers: &HeaderMap,
    json_ok: bool,
    body: &Value,
) -> Option<(StatusCode, String)> {
    let has = |h: &str| headers.get(h).is_some_and(|v| !v.is_empty());
    if !has("authorization") && !has("x-api-key") && !has("api-key") {
        return Some((
            StatusCode::UNAUTHORIZED,
            "mock: no authorization or x-api-key header".into(),
        ));
    }
    if !json_ok {
        return Some((StatusCode::BAD_REQUEST, "mock: body is not JSON".into()));
    }
    if api == Api::Messages {
        if !has("anthropic-version") {
            return Some((
                StatusCode::BAD_REQUEST,
                "anthropic-version: header is required".into(),
            ));
        }
        if body.get("max_tokens").and_then(Value::as_u64).is_none() {
            return Some((StatusCode::BAD_REQUEST, "max_tokens: Field required".into()));
        }
    }
    None
}

fn conversation(api: Api, body: &Value) -> Conversation {
    match api {
        Api::Chat => openai::conversation(body),
        Api::Messages => anthropic::conversation(body),
        Api::Responses => responses::conversation(body),
        Api::Converse | Api::ConverseStream => bedrock::conversation(body),
    }
}

fn render(
    api: Api,
    uri: &http::Uri,
    body: &Value,
    request_bytes: usize,
    answer: &Answer,
    (cached, cache_write): (u64, u64),
) -> Out {
    let (answer, truncated) = truncate(answer, max_tokens(api, body));
    let answer = &answer;
    let model = match api {
        Api::Converse | Api::ConverseStream => bedrock::model_id(uri.path()).unwrap_or_default(),
        _ => body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("mock-model")
            .to_string(),
    };
    let ctx = Ctx {
        model,
        stream: match api {
            Api::Converse => false,
            Api::ConverseStream => true,
            _ => body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        },
        include_usage: body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        usage: Usage::of(request_bytes, answer, cached, cache_write),
        tools: body.get("tools").cloned().unwrap_or(Value::Array(vec![])),
        truncated,
    };
    match api {
        Api::Chat => openai::render(&ctx, answer),
        Api::Messages => anthropic::render(&ctx, answer),
        Api::Responses => responses::render(&ctx, answer),
        Api::Converse | Api::ConverseStream => bedrock::render(&ctx, answer),
    }
}

/// The status a `mock-error-<status>` model asks for: how a test drives errors through a
/// separate `mock-llm` process, which it cannot script.
fn error_model(api: Api, path: &str, body: &Value) -> Option<StatusCode> {
    let model = match api {
        Api::Converse | Api::ConverseStream => bedrock::model_id(path)?,
        _ => body.get("model")?.as_str()?.to_string(),
    };
    let code: u16 = model.strip_prefix("mock-error-")?.parse().ok()?;
    StatusCode::from_u16(code)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
}

/// The request's output token limit, under each API's name for it.
fn max_tokens(api: Api, body: &Value) -> Option<u64> {
    let field = |p: &str| body.pointer(p).and_then(Value::as_u64);
    match api {
        Api::Chat => field("/max_completion_tokens").or_else(|| field("/max_tokens")),
        Api::Messages => field("/max_tokens"),
        Api::Responses => field("/max_output_tokens"),
        Api::Converse | Api::ConverseStream => field("/inferenceConfig/maxTokens"),
    }
}

/// A text answer longer than `max` words is cut to `max` words (one word = one output
/// token), so tests can see each API's "hit the limit" stop reason. Tool calls are kept
/// whole.
fn truncate(answer: &Answer, max: Option<u64>) -> (Answer, bool) {
    match (answer, max) {
        (Answer::Text(text), Some(max)) if text.split_whitespace().count() as u64 > max => {
            let kept: Vec<&str> = text.split_whitespace().take(max as usize).collect();
            (Answer::Text(kept.join(" ")), true)
        }
        _ => (answer.clone(), false),
    }
}

fn respond(inner: &Arc<Inner>, out: Out, gap: Duration) -> Response {
    match out {
        Out::Json(v) => json_response(&v),
        Out::Sse(events) => stream(inner, sse_frames(events), "text/event-stream", gap, false),
        Out::Named(events) => stream(inner, named_frames(events), "text/event-stream", gap, false),
        Out::Frames(frames) => stream(
            inner,
            frames.into_iter().map(Bytes::from).collect(),
            bedrock::EVENT_STREAM,
            gap,
            false,
        ),
    }
}

fn json_response(v: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn sse_frames(events: Vec<String>) -> Vec<Bytes> {
    events
        .into_iter()
        .map(|e| Bytes::from(format!("data: {e}\n\n")))
        .collect()
}

fn named_frames(events: Vec<(String, String)>) -> Vec<Bytes> {
    events
        .into_iter()
        .map(|(name, data)| Bytes::from(format!("event: {name}\ndata: {data}\n\n")))
        .collect()
}

/// Counts a stream as cut when it is dropped before its last frame was produced.
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

/// A streamed body: these frames, `gap` apart; `then_hang` keeps the connection open after
/// the last one.
fn stream(
    inner: &Arc<Inner>,
    frames: Vec<Bytes>,
    content_type: &str,
    gap: Duration,
    then_hang: bool,
) -> Response {
    inner.streams_started.fetch_add(1, Ordering::SeqCst);
    let guard = CutGuard {
        inner: inner.clone(),
        done: false,
    };
    let state = (frames.into_iter(), guard, false);
    let body =
        futures_util::stream::unfold(state, move |(mut it, mut guard, started)| async move {
            if started && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            match it.next() {
                Some(frame) => Some((Ok::<_, std::io::Error>(frame), (it, guard, true))),
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
    let content_type = http::HeaderValue::from_str(content_type)
        .unwrap_or(http::HeaderValue::from_static("application/octet-stream"));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-cache"),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response()
}
