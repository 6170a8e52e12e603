//! Everything provider-specific lives under this folder: wire formats, auth styles and
//! translations between API families.
//!
//! - `api.rs`: the API families (`Api`: chat, messages, responses, converse);
//! - `body.rs`: the client's body, split at its top level and parsed into a tree only when
//!   needed (a pass-through rewrites `model` in the client's bytes);
//! - `plan.rs`: per request and provider, which API is spoken upstream, the upstream path
//!   and body, and how the answer becomes the client's (every call into a family module);
//! - `upstream_request.rs`: the HTTP request for any provider (URL, auth, headers);
//! - `framing.rs`: SSE / AWS event-stream decoding and what a valid stream opening is;
//! - `usage.rs`: token usage read from every API, for metering and limits;
//! - `top_level.rs`: the top level of a JSON object scanned, not parsed (a pass-through
//!   answer checked to be one object and its `usage` found);
//! - `openai.rs`, `anthropic/`, `responses/`, `bedrock/` (+ `eventstream.rs`): each family.
//!
//! Translation pivots on OpenAI chat completions: a client API other than chat is turned
//! into a chat request, and a provider API other than chat answers in chat form, so each
//! family needs one pair of translations instead of one per pair of families. A request
//! whose client API is the provider's own API is passed through untranslated.
//!
//! Naming, the same in every family module (`anthropic`, `responses`, `bedrock`):
//! - client side: `request_to_chat` (this API's request → chat request),
//!   `response_from_chat` (chat response → this API's response), `StreamFromChat`
//!   ([`ClientStream`]: chat chunks → this API's events);
//! - upstream side: `request_from_chat` (chat request → this API's request),
//!   `response_to_chat` (this API's response → chat response), `StreamToChat`
//!   ([`UpstreamStream`]: this API's events → chat chunks).

pub mod anthropic;
pub mod api;
pub mod aws;
pub mod bedrock;
pub mod body;
pub mod eventstream;
pub mod framing;
pub mod google;
pub mod hosted;
pub mod openai;
pub mod plan;
pub mod responses;
pub mod top_level;
pub mod upstream_request;
pub mod usage;

use plano_common::sse::SseEvent;
use serde_json::Value;

/// A body that cannot be translated. On a client's request it becomes a 400 naming
/// `param`; on an upstream's answer it is a protocol error of that upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TranslateError {
    /// The JSON path of the offending field in the input, e.g. `messages[2].content[0].type`.
    pub param: Option<String>,
    pub message: String,
}

impl TranslateError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            param: None,
            message: message.into(),
        }
    }

    pub fn at(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            message: message.into(),
        }
    }
}

/// Client side of a translated stream: OpenAI `chat.completion.chunk` objects in (usage
/// may arrive on any chunk, typically a last one with empty `choices`), the client API's
/// events out. Exactly one proper close: `finish` after a normal end, `fail` when the
/// stream breaks off (then an error event in the client API's shape, and nothing after).
pub trait ClientStream: Send {
    fn chunk(&mut self, chunk: &Value) -> Vec<SseEvent>;
    fn finish(&mut self) -> Vec<SseEvent>;
    fn fail(&mut self, code: &str, message: &str) -> Vec<SseEvent>;
}

/// Upstream side of a translated stream: the provider's events in (SSE events, or AWS
/// event-stream messages carried as `SseEvent { event: <:event-type>, data: <payload> }`),
/// OpenAI `chat.completion.chunk` objects out, usage in a final chunk with empty
/// `choices`. `finish` is called once at the end of the body: an error when the upstream
/// stopped before its own closing event.
pub trait UpstreamStream: Send {
    fn event(&mut self, event: &SseEvent) -> Result<Vec<Value>, TranslateError>;
    fn finish(&mut self) -> Result<Vec<Value>, TranslateError>;
}
