//! The request path: record, pop the script, apply delay and strict checks, then answer
//! through the route's API module; and the streamed body shared by every stream.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde_json::Value;

use super::conversation::{Answer, Conversation, Usage};
use super::{Inner, Recorded, ReplyBody, anthropic, bedrock, openai, responses};

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
    /// Request settings the answer repeats (the Responses API echoes tools, instructions,
    /// previous_response_id, … in its Response object); `Null` for the other APIs.
    pub echo: Value,
    /// The text answer was cut at the request's output token limit.
    pub truncated: bool,
    /// The text answer was cut before this stop sequence of the request.
    pub stop_sequence: Option<String>,
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

pub(super) async fn handle(
    State(inner): State<Arc<Inner>>,
    uri: http::Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let parsed: Result<Value, _> = serde_json::from_slice(&raw);
    let body = parsed.as_ref().cloned().unwrap_or(Value::Null);
    let options = inner
        .options
        .lock()
        .ok()
        .and_then(|o| o.clone())
        .unwrap_or_default();
    if options.record
        && let Ok(mut r) = inner.requests.lock()
    {
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
    let delay = if reply.delay.is_zero() {
        options.delay
    } else {
        reply.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    // Raw scripted bodies are sent on any path; the rest need to know the route's API.
    let api = Api::of(uri.path());
    if options.strict
        && let Some(api) = api
        && let Some((status, message)) = strict_problem(api, &headers, parsed.is_ok(), &body)
    {
        return api.error(status, &message);
    }
    let status = reply.status;
    let cache = (reply.cached_tokens, reply.cache_write_tokens);
    // Routing prompts get a routing answer (`router.rs`).
    if matches!(reply.body, ReplyBody::Default)
        && let Some(api) = api
        && let Some(routed) = super::router::answer(
            &request_model(api, uri.path(), &body),
            conversation(api, &body).user_text.as_deref(),
        )
    {
        tokio::time::sleep(routed.delay).await;
        return match routed.text {
            Ok(text) => {
                let out = render(api, &uri, &body, raw.len(), &Answer::Text(text), cache);
                respond(&inner, out, options.chunk_delay)
            }
            Err(code) => api.error(code, "mock router down"),
        };
    }
    let mut res = match (reply.body, api) {
        (ReplyBody::Hang, _) => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
        (ReplyBody::Error, api) => {
            let status = status.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = format!("mock error {}", status.as_u16());
            match api {
                Some(api) => api.error(status, &message),
                None => openai::error(status, &message),
            }
        }
        (ReplyBody::Json(v), _) => json_response(&v),
        (
            ReplyBody::Sse {
                events,
                gap,
                then_hang,
            },
            _,
        ) => stream(
            &inner,
            sse_frames(events),
            "text/event-stream",
            gap,
            then_hang,
        ),
        (
            ReplyBody::NamedSse {
                events,
                gap,
                then_hang,
            },
            _,
        ) => stream(
            &inner,
            named_frames(events),
            "text/event-stream",
            gap,
            then_hang,
        ),
        (
            ReplyBody::Bytes {
                chunks,
                content_type,
                gap,
                then_hang,
            },
            _,
        ) => stream(
            &inner,
            chunks.into_iter().map(Bytes::from).collect(),
            &content_type,
            gap,
            then_hang,
        ),
        (ReplyBody::Answer(_) | ReplyBody::Default, None) => openai::error(
            StatusCode::NOT_FOUND,
            &format!("mock: no route for POST {}", uri.path()),
        ),
        (ReplyBody::Answer(answer), Some(api)) => {
            let out = render(api, &uri, &body, raw.len(), &answer, cache);
            respond(&inner, out, options.chunk_delay)
        }
        (ReplyBody::Default, Some(api)) => match error_model(api, uri.path(), &body) {
            Some(code) => api.error(code, &format!("mock error {}", code.as_u16())),
            None => {
                let conv = conversation(api, &body);
                let out = if api == Api::Chat && conv.tool.is_none() && conv.tool_result.is_none() {
                    openai::sized(&body, &conv.reply(), &options)
                } else {
                    render(api, &uri, &body, raw.len(), &conv.answer(), cache)
                };
                respond(&inner, out, options.chunk_delay)
            }
        },
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
    let (answer, stop_sequence) = stop_at(answer, &stop_sequences(api, body));
    let (answer, truncated) = truncate(&answer, max_tokens(api, body));
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
        echo: if api == Api::Responses {
            responses::echo(body)
        } else {
            Value::Null
        },
        truncated,
        stop_sequence,
    };
    match api {
        Api::Chat => openai::render(&ctx, answer),
        Api::Messages => anthropic::render(&ctx, answer),
        Api::Responses => responses::render(&ctx, answer),
        Api::Converse | Api::ConverseStream => bedrock::render(&ctx, answer),
    }
}

fn request_model(api: Api, path: &str, body: &Value) -> String {
    match api {
        Api::Converse | Api::ConverseStream => bedrock::model_id(path).unwrap_or_default(),
        _ => body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
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

/// The request's stop sequences, under each API's name for them (Responses has none).
fn stop_sequences(api: Api, body: &Value) -> Vec<String> {
    let list = match api {
        Api::Chat => body.get("stop"),
        Api::Messages => body.get("stop_sequences"),
        Api::Converse | Api::ConverseStream => body.pointer("/inferenceConfig/stopSequences"),
        Api::Responses => None,
    };
    match list {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// A text answer containing a stop sequence ends just before its first occurrence, as a
/// model's output does; the sequence itself is not part of the text.
fn stop_at(answer: &Answer, stops: &[String]) -> (Answer, Option<String>) {
    let Answer::Text(text) = answer else {
        return (answer.clone(), None);
    };
    let first = stops
        .iter()
        .filter_map(|s| text.find(s.as_str()).map(|at| (at, s)))
        .min_by_key(|(at, _)| *at);
    match first {
        Some((at, stop)) => (Answer::Text(text[..at].to_string()), Some(stop.clone())),
        None => (answer.clone(), None),
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
