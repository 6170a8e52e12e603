//! Anthropic Messages API ⇄ OpenAI chat completions, both directions, streaming included.
//!
//! Client side (a client calls `POST /v1/messages`, the provider speaks chat):
//! [`request_to_chat`], [`response_from_chat`], [`StreamFromChat`]. Upstream side (a client
//! calls `/v1/chat/completions`, the provider is Anthropic): [`request_from_chat`],
//! [`response_to_chat`], [`StreamToChat`].
//!
//! Mappings that are not one to one, and why:
//!
//! - **Usage.** Anthropic's `input_tokens` excludes prompt-cache reads and writes; chat's
//!   `prompt_tokens` includes them. Chat `prompt_tokens = input_tokens +
//!   cache_read_input_tokens + cache_creation_input_tokens`, `cached_tokens =
//!   cache_read_input_tokens`, `cache_write_tokens = cache_creation_input_tokens` (sent
//!   when not zero); back, `input_tokens = prompt_tokens - cached_tokens -
//!   cache_write_tokens`. Most chat providers report no cache writes: their writes stay
//!   inside `input_tokens`. Reasoning tokens map to and from
//!   `output_tokens_details.thinking_tokens`; both sides count them inside the output total.
//!   DeepSeek's `prompt_cache_hit_tokens` is read when `prompt_tokens_details` is absent.
//! - **Stop reasons.** chat `stop` → `end_turn`, or `stop_sequence` when the provider names
//!   the matched sequence (vLLM's `stop_reason`) and it is one the client asked for: OpenAI
//!   itself does not say which sequence matched, so a stop there reads as `end_turn`.
//!   `stop` with tool calls → `tool_use` (Gemini and Ollama answer `stop` for tool calls);
//!   `length` → `max_tokens`; `tool_calls`/`function_call` → `tool_use`; `content_filter` →
//!   `refusal`. Back: `end_turn`, `stop_sequence`, `pause_turn` → `stop`; `max_tokens`,
//!   `model_context_window_exceeded` → `length`; `tool_use` → `tool_calls`; `refusal` →
//!   `content_filter`.
//! - **Messages → chat request.** `max_tokens` stays `max_tokens`: every chat-compatible
//!   provider understands it (OpenAI's reasoning models want `max_completion_tokens`; that
//!   is a per-provider rename, not a translation). `top_k`, `thinking`,
//!   `output_config.effort`, `cache_control`, `service_tier` are dropped: a non-reasoning
//!   chat model rejects `reasoning_effort`, and the others have no chat equivalent.
//!   `output_config.format` becomes a `json_schema` `response_format`. `metadata.user_id`
//!   becomes `user`, replaced by a stable 37-character digest when longer than the 64
//!   characters OpenAI accepts (Claude Code's ids are longer). `tool_result` blocks
//!   become `tool` messages placed before the rest of their user turn (chat wants tool
//!   answers right after the assistant's calls); `is_error: true` prefixes the content with
//!   `Error: `, since chat has no error flag. Images inside a tool result move to the user
//!   message that follows (chat tool messages carry text only) and the tool message says
//!   so. Thinking blocks in assistant turns are dropped (chat providers take no signed
//!   reasoning back). Document blocks: plain-text and content sources become text, base64
//!   PDFs a chat `file` part; URL and Files-API sources are refused with a 400 naming the
//!   block. Server tools (web search, bash, …) are set aside for `providers::hosted`, which
//!   drops them for providers without an equivalent (named in `x-plano-dropped-tools`) or
//!   refuses them with `hosted_tools: refuse`. System text blocks are joined with newlines
//!   into one system message; `system`-role turns inside `messages` join it (after a blank
//!   line), since many chat providers reject a system message after a user turn.
//!   `message_start` on a translated stream carries an estimate of the input tokens
//!   (characters of `system`, `messages`, `tools` / 4); `message_delta` the real count.
//! - **Chat → Messages response.** Tool-call arguments that are not a JSON object (a model
//!   can emit broken JSON) become `input: {}`: the client's tool then reports missing
//!   arguments to the model, which can retry, instead of the whole turn failing.
//!   `reasoning_content` becomes a `thinking` block with an empty signature. `model` is
//!   the one the client asked for. A stream that breaks off, or whose provider sends an
//!   in-band `{"error": …}` chunk, ends with an `error` event
//!   whose type is `timeout_error`, `overloaded_error`, `rate_limit_error` or `api_error`.
//! - **Chat request → Messages.** `max_tokens` defaults to [`DEFAULT_MAX_TOKENS`] (Anthropic
//!   requires it; 4096 is within every Claude model's output limit). `temperature` above 1
//!   is clamped to 1 (Anthropic's range is 0–1). System and developer messages anywhere in
//!   the conversation are gathered into the top-level `system`, in order. Consecutive
//!   same-role turns are merged, tool messages joining the next user turn as `tool_result`
//!   blocks. Tool-call arguments that are not a JSON object become `input: {}` (refusing
//!   them would make the conversation unusable). Tool-call ids are reduced to
//!   `[A-Za-z0-9_-]` (Anthropic's pattern), the same way on `tool_use` and `tool_result`,
//!   so pairs still match. `response_format: json_schema`
//!   → `output_config.format`; `json_object` → an instruction appended to the system
//!   prompt (Anthropic has no schemaless JSON mode). `reasoning_effort` is dropped: enabling
//!   thinking would require the signed thinking blocks of earlier turns, which chat clients
//!   do not keep. `n` other than 1 is refused. `frequency_penalty`, `presence_penalty`,
//!   `logit_bias`, `logprobs`, `seed` and other chat-only fields are dropped, and so is
//!   `strict` on function tools (Anthropic's strict tools need recent models, and the
//!   OpenAI Agents SDK sets it on every tool); the deprecated `functions` and
//!   `function_call` are refused with a 400 rather than silently ignored.
//! - **Without trees.** A whole chat answer becomes a Message by [`message_from_chat_json`]
//!   (the answer read into the fields used, strings borrowed, the Message written as bytes),
//!   and a plain Messages request (text turns, no tools, images, documents or
//!   `output_config`) becomes a chat request by [`plain_request_to_chat_json`]; any other
//!   request takes [`request_to_chat`] on the body's tree. Both read what the tree
//!   translation reads (same fields, last of a repeated key, wrong types as there) and
//!   their tests compare them with it.
//! - **Streams.** See [`StreamFromChat`] (tool calls after the first are buffered, so that
//!   interleaved argument fragments still produce whole blocks) and [`StreamToChat`].

mod client_request;
mod from_chat;
mod lenient;
mod response;
mod stream_from_chat;
mod stream_to_chat;
mod to_chat;
mod upstream_request;

use serde_json::{Map, Value, json};

use super::TranslateError;

pub use self::client_request::request_to_chat;
pub use self::from_chat::{message_from_chat_json, response_from_chat};
pub use self::response::{ResponseCtx, response_to_chat};
pub use self::stream_from_chat::StreamFromChat;
pub use self::stream_to_chat::StreamToChat;
pub use self::to_chat::{ChatTarget, plain_request_to_chat_json};
pub use self::upstream_request::{DEFAULT_MAX_TOKENS, request_from_chat};

type Obj = Map<String, Value>;

/// Token counts in Anthropic's terms (cache reads and writes outside `input`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tokens {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
    /// Part of `output`; `None` when the provider did not say.
    thinking: Option<u64>,
}

impl Tokens {
    fn from_anthropic(u: &Value) -> Self {
        Tokens {
            input: count(u.get("input_tokens")),
            output: count(u.get("output_tokens")),
            cache_read: count(u.get("cache_read_input_tokens")),
            cache_write: count(u.get("cache_creation_input_tokens")),
            thinking: u
                .pointer("/output_tokens_details/thinking_tokens")
                .and_then(Value::as_u64),
        }
    }

    /// Fields of an Anthropic (delta) usage that are present override ours: `message_delta`
    /// may repeat input counts, always carries the cumulative output count.
    fn update_from_anthropic(&mut self, u: &Value) {
        let set = |slot: &mut u64, key: &str| {
            if let Some(n) = u.get(key).and_then(Value::as_u64) {
                *slot = n;
            }
        };
        set(&mut self.input, "input_tokens");
        set(&mut self.output, "output_tokens");
        set(&mut self.cache_read, "cache_read_input_tokens");
        set(&mut self.cache_write, "cache_creation_input_tokens");
        if let Some(n) = u
            .pointer("/output_tokens_details/thinking_tokens")
            .and_then(Value::as_u64)
        {
            self.thinking = Some(n);
        }
    }

    fn from_chat(u: &Value) -> Self {
        let prompt = count(u.get("prompt_tokens"));
        let cached = u
            .pointer("/prompt_tokens_details/cached_tokens")
            .or_else(|| u.get("prompt_cache_hit_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(prompt);
        let written =
            count(u.pointer("/prompt_tokens_details/cache_write_tokens")).min(prompt - cached);
        Tokens {
            input: prompt - cached - written,
            output: count(u.get("completion_tokens")),
            cache_read: cached,
            cache_write: written,
            thinking: u
                .pointer("/completion_tokens_details/reasoning_tokens")
                .and_then(Value::as_u64),
        }
    }

    fn prompt_total(&self) -> u64 {
        self.input
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_write)
    }

    fn to_anthropic(self) -> Value {
        let mut u = json!({
            "input_tokens": self.input,
            "cache_creation_input_tokens": self.cache_write,
            "cache_read_input_tokens": self.cache_read,
            "output_tokens": self.output,
        });
        if let (Some(n), Some(o)) = (self.thinking, u.as_object_mut()) {
            o.insert(
                "output_tokens_details".into(),
                json!({"thinking_tokens": n}),
            );
        }
        u
    }

    fn to_chat(self) -> Value {
        let prompt = self.prompt_total();
        let mut u = json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt.saturating_add(self.output),
            "prompt_tokens_details": {"cached_tokens": self.cache_read},
        });
        if self.cache_write > 0 {
            u["prompt_tokens_details"]["cache_write_tokens"] = self.cache_write.into();
        }
        if let (Some(n), Some(o)) = (self.thinking, u.as_object_mut()) {
            o.insert(
                "completion_tokens_details".into(),
                json!({"reasoning_tokens": n}),
            );
        }
        u
    }
}

fn count(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_u64).unwrap_or(0)
}

/// Anthropic `stop_reason` for a chat `finish_reason`.
fn stop_reason_from_chat(finish: Option<&str>, has_tool_calls: bool) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ if has_tool_calls => "tool_use",
        _ => "end_turn",
    }
}

/// Chat `finish_reason` for an Anthropic `stop_reason`.
fn finish_reason_from_anthropic(stop: Option<&str>) -> &'static str {
    match stop {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// The matched stop sequence, when the provider names it (vLLM's `stop_reason`) and the
/// client asked for it.
fn matched_stop_sequence(choice: &Value, asked: &[String]) -> Option<String> {
    let s = choice.get("stop_reason")?.as_str()?;
    asked.iter().find(|a| a.as_str() == s).cloned()
}

/// Chat tool-call `arguments` (a JSON string, or an object from hand-written history) as
/// an Anthropic `input` object. Anything else (a model can emit broken JSON) becomes `{}`:
/// the client's tool then reports missing arguments to the model, which can retry, instead
/// of the whole turn failing.
fn tool_input(args: Option<&Value>) -> Value {
    match args {
        Some(v @ Value::Object(_)) => v.clone(),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => v,
            _ => json!({}),
        },
        _ => json!({}),
    }
}

/// `msg_…` id from a chat completion id.
fn message_id(chat_id: Option<&str>) -> String {
    match chat_id.map(|s| s.strip_prefix("chatcmpl-").unwrap_or(s)) {
        Some(s) if !s.is_empty() => format!("msg_{s}"),
        _ => format!("msg_{}", uuid::Uuid::new_v4().simple()),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A field that is absent or `null`.
fn present<'a>(o: &'a Obj, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

fn as_obj<'a>(v: &'a Value, param: &str, what: &str) -> Result<&'a Obj, TranslateError> {
    v.as_object()
        .ok_or_else(|| TranslateError::at(param, format!("`{param}` must be {what}")))
}

fn as_array<'a>(v: &'a Value, param: &str, what: &str) -> Result<&'a [Value], TranslateError> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| TranslateError::at(param, format!("`{param}` must be {what}")))
}

fn as_str<'a>(v: &'a Value, param: &str) -> Result<&'a str, TranslateError> {
    v.as_str()
        .ok_or_else(|| TranslateError::at(param, format!("`{param}` must be a string")))
}

/// A required string field `key` of `o`, whose path is `at`.
fn req_str<'a>(o: &'a Obj, at: &str, key: &str) -> Result<&'a str, TranslateError> {
    let param = format!("{at}.{key}");
    match present(o, key) {
        Some(v) => as_str(v, &param),
        None => Err(TranslateError::at(&param, format!("`{param}` is required"))),
    }
}

/// The `type` of a content block, required.
fn block_type<'a>(block: &'a Value, at: &str) -> Result<&'a str, TranslateError> {
    let o = as_obj(block, at, "an object")?;
    req_str(o, at, "type")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_round_trips_with_cache_and_reasoning() {
        let anthropic = json!({
            "input_tokens": 10, "output_tokens": 50,
            "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5,
            "output_tokens_details": {"thinking_tokens": 30}
        });
        let chat = Tokens::from_anthropic(&anthropic).to_chat();
        assert_eq!(
            chat,
            json!({
                "prompt_tokens": 115, "completion_tokens": 50, "total_tokens": 165,
                "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 5},
                "completion_tokens_details": {"reasoning_tokens": 30}
            })
        );
        assert_eq!(Tokens::from_chat(&chat).to_anthropic(), anthropic);
        // A provider that does not report cache writes: they stay in input.
        let mut plain = chat.clone();
        plain["prompt_tokens_details"] = json!({"cached_tokens": 100});
        let back = Tokens::from_chat(&plain).to_anthropic();
        assert_eq!(back["input_tokens"], 15);
        assert_eq!(back["cache_creation_input_tokens"], 0);
    }

    #[test]
    fn cached_beyond_prompt_does_not_underflow() {
        let t = Tokens::from_chat(&json!({
            "prompt_tokens": 3, "prompt_tokens_details": {"cached_tokens": 9}
        }));
        assert_eq!((t.input, t.cache_read), (0, 3));
        let deepseek = Tokens::from_chat(&json!({
            "prompt_tokens": 40, "prompt_cache_hit_tokens": 32, "completion_tokens": 1
        }));
        assert_eq!((deepseek.input, deepseek.cache_read), (8, 32));
    }

    #[test]
    fn message_ids() {
        assert_eq!(message_id(Some("chatcmpl-abc")), "msg_abc");
        assert_eq!(message_id(Some("xyz")), "msg_xyz");
        assert!(message_id(Some("chatcmpl-")).len() > "msg_".len());
        assert!(message_id(None).starts_with("msg_"));
    }
}
