//! A scripted mock LLM provider on a real socket that answers in each provider's own API.
//!
//! Routes (by path suffix, so any base path works):
//! - `POST …/chat/completions`: OpenAI chat completions (`openai.rs`);
//! - `POST …/messages`: Anthropic Messages (`anthropic.rs`);
//! - `POST …/responses`: OpenAI Responses (`responses.rs`);
//! - `POST …/model/{modelId}/converse` and `…/converse-stream`: Amazon Bedrock Converse,
//!   the stream in AWS event-stream framing (`bedrock.rs`).
//!
//! Anything else gets a 404 unless a raw body (JSON, SSE, bytes, hang) or an error was
//! scripted for it. Every request is recorded (path, query, headers, JSON body).
//! The wire formats are written from the providers' API references, independently of the
//! egress translators, so that a bug in a translator cannot be cancelled out by the same bug
//! here.
//!
//! # Default answers (nothing scripted)
//! Decided from the conversation, the same way in every API (see `conversation.rs`):
//! - the last message carries a tool result → text `tool result: <its text>`;
//! - else the request offers tools → ONE call to the tool `tool_choice` names, else the
//!   first one (none with `tool_choice: none`), arguments built from its schema's required
//!   properties (`{"query": "mock"}`), id `call_mock_1` (OpenAI APIs),
//!   `toolu_mock_1` (Anthropic) or `tooluse_mock_1` (Bedrock), stop reason tool use;
//! - else text `mock reply to: <last user text, first 200 chars>`.
//!
//! Directives in the last user text steer clients whose tool lists a test does not
//! control (Codex, Claude Code; `tests/it/coding_agents.rs`): `mock:say <words>` answers
//! those words and `mock:text` the usual text reply although tools are offered, `mock:call <tool> <JSON arguments>` calls that tool.
//! A routing prompt in Plano's router format gets a routing answer chosen by keywords, and
//! models named `…router-down`, `…router-slow`, `…router-nonsense` play a failing router
//! (`router.rs`).
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
//! A text answer containing one of the request's stop sequences (`stop`, `stop_sequences`,
//! `inferenceConfig.stopSequences`) ends just before it, with reason `stop`,
//! `stop_sequence` (Anthropic also names the sequence) or `stop_sequence` (Bedrock).
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
mod conversation;
mod openai;
mod responses;
mod router;
mod server;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio::net::TcpListener;

pub use anthropic::{anthropic_error_event, anthropic_text_stream, anthropic_tool_stream};
pub use bedrock::{bedrock_exception_frame, bedrock_frame, bedrock_stream};
pub use conversation::Answer;
pub use openai::{chunk, completion, default_stream};
pub use responses::responses_text_stream;

use server::{Ctx, Out};

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
    /// Keep every request for [`MockProvider::requests`]. `mock-llm` turns it off: nobody
    /// reads them there, and a benchmark would grow the list without bound.
    pub record: bool,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            body_bytes: 1024,
            chunks: 5,
            chunk_delay: Duration::ZERO,
            strict: false,
            record: true,
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
            .route("/{*path}", post(server::handle))
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
