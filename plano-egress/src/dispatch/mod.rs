//! The egress request path for `POST /v1/chat/completions`, `/v1/messages` and
//! `/v1/responses`, top to bottom:
//!
//! 1. parse the body (400 naming the problem, in the client API's error shape) and read
//!    `model`, `stream`, `stream_options`; a Responses `previous_response_id` is expanded
//!    into the stored conversation (409 when unknown);
//! 2. select the providers to try (`select.rs`): the target, then an alias's fallbacks;
//! 3. admit against the rate limits (429 before anything is sent upstream);
//! 4. for each provider (failover), while its circuit allows: route the request to the
//!    provider's API (`providers::plan`: as is when the client speaks it, else translated
//!    through chat completions), attempt, and on a retryable failure back off (honouring
//!    `Retry-After`) and attempt again, up to `max_retries`; a stream is committed only
//!    once its first upstream event has arrived, so every failure before that point can
//!    still be retried or failed over;
//! 5. respond: the answer in the client's API, whole or event by event (`stream.rs`), with
//!    `x-request-id`, `x-plano-provider`, `x-plano-attempts`, `x-plano-overhead-ms`;
//!    tokens are metered when the body ends.
//!
//! Nothing is retried once a byte reached the client.

pub mod circuit;
pub mod retry;
pub mod select;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use metrics::{counter, histogram};
use plano_common::errors::ApiShape;
use plano_common::metrics as m;
use plano_config::{Config, Provider};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::error::{AttemptError, EgressError};
use crate::providers::plan::{Api, ClientRequest, Route};
use crate::providers::{openai, responses};
use crate::ratelimit::{Decision, LimitRequest};
use crate::state::{AppState, Runtime};
use crate::stream::{self, StreamPlan};

/// Largest non-streaming upstream body we relay (a sane bound on a chat answer).
const MAX_UPSTREAM_BODY: usize = 64 * 1024 * 1024;

/// The error shape a client of `api` expects.
pub fn shape_of(api: Api) -> ApiShape {
    match api {
        Api::Messages => ApiShape::Anthropic,
        Api::Chat | Api::Responses | Api::Converse => ApiShape::OpenAi,
    }
}

/// What the request asked for, read once from the body.
struct Ask {
    api: Api,
    body: Map<String, Value>,
    model: Option<String>,
    stream: bool,
    client_wants_usage: bool,
    /// Responses: the conversation stored under `previous_response_id`, when one was given
    /// and found (prepended to the input for translated providers).
    history: Option<Arc<Vec<Value>>>,
    /// Responses: the id of the answer, chosen here so it can be stored under it.
    response_id: String,
}

fn bad(code: &'static str, message: impl Into<String>) -> EgressError {
    EgressError::BadRequest {
        code,
        message: message.into(),
    }
}

fn parse(api: Api, body: &Bytes) -> Result<Ask, EgressError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        bad(
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(body) = value else {
        return Err(bad("invalid_request", "request body must be a JSON object"));
    };
    let model = match body.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("invalid_request", "`model` must be a string")),
    };
    match api {
        Api::Chat | Api::Messages if !matches!(body.get("messages"), Some(Value::Array(_))) => {
            return Err(bad(
                "invalid_request",
                "`messages` must be a list of messages",
            ));
        }
        Api::Responses
            if !matches!(body.get("input"), Some(Value::Array(_) | Value::String(_))) =>
        {
            return Err(bad(
                "invalid_request",
                "`input` must be a string or a list of input items",
            ));
        }
        _ => {}
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("invalid_request", "`stream` must be a boolean")),
    };
    let client_wants_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Ask {
        api,
        body,
        model,
        stream,
        client_wants_usage,
        history: None,
        // Only Responses answers carry an id of ours; chat requests skip the UUID.
        response_id: if api == Api::Responses {
            format!("resp_{}", uuid::Uuid::new_v4().simple())
        } else {
            String::new()
        },
    })
}

/// Responses: look up `previous_response_id`. Unknown → 409, unless the route may be
/// native (OpenAI keeps its own state, so an id it issued is passed through to it).
fn expand_history(state: &AppState, ask: &mut Ask) -> Result<(), EgressError> {
    let Some(prev) = ask.body.get("previous_response_id") else {
        return Ok(());
    };
    let Value::String(id) = prev else {
        if prev.is_null() {
            return Ok(());
        }
        return Err(bad(
            "invalid_request",
            "`previous_response_id` must be a string",
        ));
    };
    ask.history = state.conversations.get(id);
    Ok(())
}

/// The client's body as sent to a provider on `route`. Responses: a known
/// `previous_response_id` is replaced by the stored conversation prepended to the input
/// (so any provider, native or translated, sees the whole conversation); an unknown one is
/// passed through to a native provider (OpenAI keeps its own state) and is a 409 otherwise.
fn body_for<'a>(
    ask: &'a Ask,
    route: &Route,
) -> Result<std::borrow::Cow<'a, Map<String, Value>>, EgressError> {
    use std::borrow::Cow;
    if ask.api != Api::Responses {
        return Ok(Cow::Borrowed(&ask.body));
    }
    let Some(prev) = ask
        .body
        .get("previous_response_id")
        .filter(|v| !v.is_null())
    else {
        return Ok(Cow::Borrowed(&ask.body));
    };
    let Some(history) = &ask.history else {
        if route.native() {
            return Ok(Cow::Borrowed(&ask.body));
        }
        return Err(EgressError::Conflict(format!(
            "previous_response_id `{}` is not known here: it expired, was stored with `store: false`, or was issued by another replica or by the provider directly",
            prev.as_str().unwrap_or_default()
        )));
    };
    let mut body = ask.body.clone();
    body.remove("previous_response_id");
    let new_items = responses::conversation_items(&ask.body).map_err(translate_error)?;
    let mut input: Vec<Value> = history.as_ref().clone();
    input.extend(new_items);
    body.insert("input".into(), Value::Array(input));
    Ok(Cow::Owned(body))
}

fn translate_error(e: crate::providers::TranslateError) -> EgressError {
    EgressError::BadRequest {
        code: "invalid_request",
        message: match &e.param {
            Some(p) => format!("{} (at `{p}`)", e.message),
            None => e.message,
        },
    }
}

/// Time accounting for `x-plano-overhead-ms`: everything not spent waiting on an upstream
/// or sleeping between attempts is the proxy's own.
struct Clock {
    start: Instant,
    waited: Duration,
}

impl Clock {
    fn overhead(&self) -> Duration {
        self.start.elapsed().saturating_sub(self.waited)
    }
}

/// `POST /v1/chat/completions`, `/v1/messages` or `/v1/responses`, by `api`.
pub async fn serve(state: Arc<AppState>, api: Api, headers: HeaderMap, body: Bytes) -> Response {
    let mut clock = Clock {
        start: Instant::now(),
        waited: Duration::ZERO,
    };
    let request_id = plano_common::request_id::ensure(&headers);
    let rt = state.runtime();
    let mut response =
        match handle(&state, &rt, api, &headers, &body, &request_id, &mut clock).await {
            Ok(r) => r,
            Err(e) => error_response(&rt.config, api, e, &request_id),
        };
    let h = response.headers_mut();
    h.insert("x-request-id", request_id);
    let overhead = clock.overhead();
    if let Ok(v) = HeaderValue::from_str(&format!("{:.3}", overhead.as_secs_f64() * 1000.0)) {
        h.insert("x-plano-overhead-ms", v);
    }
    histogram!(m::OVERHEAD_SECONDS, "component" => "egress").record(overhead.as_secs_f64());
    response
}

/// An error in the client's API shape. A provider's own error body is relayed untouched
/// when the provider speaks the client's API; otherwise its status is kept and its message
/// carried in our body.
fn error_response(config: &Config, api: Api, e: EgressError, request_id: &HeaderValue) -> Response {
    if let Some((provider, status, upstream_body)) = e.upstream_body() {
        let same_shape = config
            .provider(&provider)
            .map(|p| Route::new(p, api).upstream)
            .is_some_and(|up| up != Api::Converse && shape_of(up) == shape_of(api));
        if same_shape {
            tracing::info!(request_id = ?request_id, status = status.as_u16(), "upstream error relayed");
            return (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                upstream_body,
            )
                .into_response();
        }
    }
    tracing::info!(request_id = ?request_id, reason = e.reason(), "request failed");
    e.into_api_error(shape_of(api)).into_response()
}

async fn handle(
    state: &AppState,
    rt: &Runtime,
    api: Api,
    headers: &HeaderMap,
    raw: &Bytes,
    request_id: &HeaderValue,
    clock: &mut Clock,
) -> Result<Response, EgressError> {
    let config = &rt.config;
    let mut ask = parse(api, raw)?;
    if api == Api::Responses {
        expand_history(state, &mut ask)?;
    }
    // Routing by preference (`routing/phase.rs`): which model to select for.
    let routing = crate::routing::phase::run(
        rt,
        api,
        headers,
        &mut ask.body,
        ask.history.as_deref().map(Vec::as_slice),
        request_id,
    )
    .await;
    let selection = routing.select(config, headers, ask.model.as_deref())?;
    let listener = config.model_listener();
    let timeout = listener.map_or(Duration::from_secs(30), |l| l.timeout);
    let first_token_timeout = listener.map_or(timeout, |l| l.first_token_timeout);
    let max_retries = listener.map_or(2, |l| l.max_retries);
    // `checked_add`: an absurdly long configured timeout means "no practical deadline",
    // not an overflow panic on the request path.
    let deadline = clock
        .start
        .checked_add(timeout)
        .unwrap_or_else(|| clock.start + Duration::from_secs(365 * 24 * 3600));

    // Limits are charged once per request, against the provider the request is for.
    let Some(first_candidate) = selection.candidates.first() else {
        return Err(EgressError::ModelNotFound(
            ask.model.clone().unwrap_or_default(),
        ));
    };
    let first = &config.providers[first_candidate.provider];
    let mut ticket = None;
    let mut limit_headers = HeaderMap::new();
    if let Some(limiter) = rt.limiter.as_ref().filter(|l| !l.is_empty()) {
        let decision = limiter
            .check(&LimitRequest {
                provider: &first.name,
                alias: selection.alias.as_deref(),
                upstream_model: &first_candidate.model_id,
                headers,
                body: raw,
            })
            .await;
        match decision {
            Decision::Allow { ticket: t, headers } => {
                ticket = Some(t);
                limit_headers = headers;
            }
            deny @ Decision::Deny { .. } => {
                if let Some(r) = deny.rejection(shape_of(api)) {
                    return Ok(r);
                }
            }
        }
    }

    let mut failures: Vec<(String, AttemptError)> = Vec::new();
    let mut attempts = 0u32;
    let mut previous: Option<&Provider> = None;
    for candidate in &selection.candidates {
        let provider = &config.providers[candidate.provider];
        if let Some(prev) = previous {
            counter!(m::LLM_FAILOVERS_TOTAL, "from" => prev.name.clone(), "to" => provider.name.clone()).increment(1);
            tracing::info!(request_id = ?request_id, from = %prev.name, to = %provider.name, "failing over");
        }
        previous = Some(provider);
        let route = Route::new(provider, api);
        let client_body = body_for(&ask, &route)?;
        let echo_model = ask.model.clone().unwrap_or_else(|| provider.name.clone());
        let client_req = ClientRequest {
            api,
            body: &client_body,
            model: &echo_model,
            stream: ask.stream,
            response_id: &ask.response_id,
        };
        // A body this provider's API cannot express is the client's problem only when no
        // other provider is left to try.
        let upstream_body = match route.request_body(&client_req, &candidate.model_id) {
            Ok(b) => b,
            Err(e) => {
                tracing::info!(request_id = ?request_id, provider = %provider.name, error = %e, "request not translatable for this provider");
                failures.push((
                    provider.name.clone(),
                    AttemptError::Untranslatable(e.message),
                ));
                continue;
            }
        };
        let upstream_body = routing.upstream_body(route.upstream, upstream_body);
        let path = crate::providers::plan::upstream_path(provider, route.upstream, ask.stream);
        let uri = openai::uri(provider, &path).map_err(EgressError::Unsupported)?;
        for attempt in 0..=max_retries {
            if !state.circuits.allow(&provider.name) {
                failures.push((provider.name.clone(), AttemptError::CircuitOpen));
                counter!(m::LLM_UPSTREAM_REQUESTS_TOTAL, "provider" => provider.name.clone(), "model" => provider.model.clone(), "outcome" => "circuit_open").increment(1);
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(deadline_error(failures, timeout));
            }
            attempts += 1;
            let wait = if ask.stream {
                first_token_timeout.min(deadline - now)
            } else {
                deadline - now
            };
            let req = openai::build_request(
                provider,
                uri.clone(),
                headers,
                request_id,
                upstream_body.clone(),
            )
            .map_err(EgressError::Unsupported)?;
            let sent = Instant::now();
            let result = attempt_once(rt, req, ask.stream, wait).await;
            let upstream_time = sent.elapsed();
            clock.waited += upstream_time;
            histogram!(m::LLM_UPSTREAM_DURATION_SECONDS, "provider" => provider.name.clone(), "model" => provider.model.clone())
                .record(upstream_time.as_secs_f64());
            // A 2xx whose body cannot be read in the provider's API counts as a broken
            // attempt (retried, failed over), like a broken connection.
            let result = match result {
                Ok(Success::Whole { status, body }) => route
                    .response_body(&client_req, &body)
                    .map(|(body, usage)| Answer::Whole(status, body, usage))
                    .map_err(|e| AttemptError::Protocol(format!("unusable answer: {}", e.message))),
                Ok(Success::Stream { first, rest }) => Ok(Answer::Stream(first, rest)),
                Err(e) => Err(e),
            };
            match result {
                Ok(success) => {
                    state.circuits.success(&provider.name);
                    counter!(m::LLM_UPSTREAM_REQUESTS_TOTAL, "provider" => provider.name.clone(), "model" => provider.model.clone(), "outcome" => "success").increment(1);
                    let mut response = match success {
                        Answer::Whole(status, body, usage) => {
                            usage.record(provider);
                            if let (Some(l), Some(t)) = (rt.limiter.as_ref(), ticket.take()) {
                                l.reconcile(t, usage.total()).await;
                            }
                            if api == Api::Responses {
                                remember(state, &client_body, &body);
                            }
                            (status, [(header::CONTENT_TYPE, "application/json")], body)
                                .into_response()
                        }
                        Answer::Stream(first, rest) => {
                            histogram!(m::LLM_TIME_TO_FIRST_TOKEN_SECONDS, "provider" => provider.name.clone(), "model" => provider.model.clone())
                                .record(clock.start.elapsed().as_secs_f64());
                            let remember_in = (api == Api::Responses).then(|| stream::Remember {
                                conversations: state.conversations.clone(),
                                request: client_body.clone().into_owned(),
                            });
                            let plan = StreamPlan {
                                provider: provider.clone(),
                                shape: route.stream_shape(&client_req, ask.client_wants_usage),
                                deadline,
                                limiter: rt.limiter.clone(),
                                ticket: ticket.take(),
                                remember: remember_in,
                            };
                            stream::respond(first, rest, plan)
                        }
                    };
                    let h = response.headers_mut();
                    h.extend(limit_headers);
                    if let Ok(v) = HeaderValue::from_str(&provider.name) {
                        h.insert("x-plano-provider", v);
                    }
                    h.insert("x-plano-attempts", HeaderValue::from(attempts));
                    routing.answered(provider, h);
                    return Ok(response);
                }
                Err(err) => {
                    counter!(m::LLM_UPSTREAM_REQUESTS_TOTAL, "provider" => provider.name.clone(), "model" => provider.model.clone(), "outcome" => err.outcome()).increment(1);
                    tracing::warn!(request_id = ?request_id, provider = %provider.name, attempt = attempt + 1, error = %err.describe(), "upstream attempt failed");
                    if err.counts_against_provider() {
                        state.circuits.failure(&provider.name);
                    } else if matches!(err, AttemptError::Status { .. }) {
                        // A 4xx about the request still proves the provider is up (and
                        // settles a half-open probe).
                        state.circuits.success(&provider.name);
                    }
                    let retryable = err.is_retryable();
                    let retry_after = match &err {
                        AttemptError::Status { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    failures.push((provider.name.clone(), err));
                    if !retryable {
                        // The client's own mistake (4xx): another provider would say the same.
                        return Err(EgressError::AllFailed(failures));
                    }
                    if attempt == max_retries {
                        break;
                    }
                    let pause = match retry_after {
                        Some(d) if d > retry::MAX_RETRY_AFTER => break, // too long: fail over now
                        Some(d) => d,
                        None => retry::backoff(attempt),
                    };
                    if Instant::now() + pause >= deadline {
                        break;
                    }
                    counter!(m::LLM_RETRIES_TOTAL, "provider" => provider.name.clone(), "reason" => failures.last().map_or("unknown", |(_, e)| e.outcome())).increment(1);
                    let slept = Instant::now();
                    tokio::time::sleep(pause).await;
                    clock.waited += slept.elapsed();
                }
            }
        }
    }
    if let (Some(l), Some(t)) = (rt.limiter.as_ref(), ticket.take()) {
        l.reconcile(t, 0).await;
    }
    if Instant::now() >= deadline {
        return Err(deadline_error(failures, timeout));
    }
    Err(EgressError::AllFailed(failures))
}

/// Store a whole Responses answer's conversation under its id (unless `store: false`).
fn remember(state: &AppState, request: &Map<String, Value>, answer: &Bytes) {
    if let Ok(response) = serde_json::from_slice::<Value>(answer) {
        stream::store_conversation(&state.conversations, request, &response);
    }
}

fn deadline_error(failures: Vec<(String, AttemptError)>, timeout: Duration) -> EgressError {
    if failures.is_empty() {
        EgressError::DeadlineExceeded(timeout)
    } else {
        let mut failures = failures;
        if let Some((name, _)) = failures.last().cloned() {
            failures.push((name, AttemptError::Timeout("the listener timeout")));
        }
        // A timeout is the last word: answer 504 even if an earlier attempt had a status.
        match EgressError::AllFailed(failures) {
            e if e.status() == StatusCode::GATEWAY_TIMEOUT => e,
            _ => EgressError::DeadlineExceeded(timeout),
        }
    }
}

/// A successful attempt, translated for the client (whole) or about to be (stream).
enum Answer {
    Whole(StatusCode, Bytes, crate::stream::Usage),
    Stream(Bytes, hyper::body::Incoming),
}

enum Success {
    Whole {
        status: StatusCode,
        body: Bytes,
    },
    Stream {
        first: Bytes,
        rest: hyper::body::Incoming,
    },
}

/// One upstream attempt: send, wait (bounded) for the response headers, and either read
/// the whole body or, for a stream, the first chunk.
async fn attempt_once(
    rt: &Runtime,
    req: http::Request<http_body_util::Full<Bytes>>,
    stream: bool,
    wait: Duration,
) -> Result<Success, AttemptError> {
    let work = async {
        let res = rt
            .client
            .request(req)
            .await
            .map_err(|e| classify_client_error(&e))?;
        let status = res.status();
        let retry_after = retry::retry_after(res.headers());
        let mut body = res.into_body();
        if !status.is_success() {
            let bytes = read_limited(&mut body, 1024 * 1024)
                .await
                .unwrap_or_default();
            return Err(AttemptError::Status {
                status,
                body: bytes,
                retry_after,
            });
        }
        if stream {
            // Commit only once the upstream has produced something.
            loop {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data()
                            && !data.is_empty()
                        {
                            return Ok(Success::Stream {
                                first: data,
                                rest: body,
                            });
                        }
                    }
                    Some(Err(e)) => return Err(AttemptError::Protocol(e.to_string())),
                    None => {
                        return Err(AttemptError::Protocol(
                            "stream ended before its first event".into(),
                        ));
                    }
                }
            }
        }
        let bytes = read_limited(&mut body, MAX_UPSTREAM_BODY)
            .await
            .map_err(AttemptError::Protocol)?;
        Ok(Success::Whole {
            status,
            body: bytes,
        })
    };
    match tokio::time::timeout(wait, work).await {
        Ok(r) => r,
        Err(_) => Err(AttemptError::Timeout(if stream {
            "the first event"
        } else {
            "the response"
        })),
    }
}

fn classify_client_error(e: &hyper_util::client::legacy::Error) -> AttemptError {
    if e.is_connect() {
        let mut source: Option<&dyn std::error::Error> = Some(e);
        let mut detail = String::new();
        while let Some(s) = source {
            detail = s.to_string();
            source = s.source();
        }
        AttemptError::Connect(detail)
    } else {
        AttemptError::Protocol(e.to_string())
    }
}

async fn read_limited(body: &mut hyper::body::Incoming, limit: usize) -> Result<Bytes, String> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(format!("upstream body larger than {limit} bytes"));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// Read a request body up to the listener's limit (413 beyond it).
pub async fn read_request_body(body: Body, limit: usize) -> Result<Bytes, EgressError> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(EgressError::PayloadTooLarge { limit })
        }
        Err(e) => Err(EgressError::BadRequest {
            code: "invalid_request",
            message: format!("could not read the request body: {e}"),
        }),
    }
}

/// `GET /v1/models`: configured providers (wildcards excluded: their models are whatever the
/// provider serves) and aliases, in OpenAI's list shape.
pub fn models(config: &Config) -> Value {
    let mut data: Vec<Value> = config
        .providers
        .iter()
        .filter(|p| !p.wildcard)
        .map(|p| serde_json::json!({"id": p.name, "object": "model", "created": 0, "owned_by": p.prefix}))
        .collect();
    for name in config.aliases.keys() {
        data.push(
            serde_json::json!({"id": name, "object": "model", "created": 0, "owned_by": "plano"}),
        );
    }
    serde_json::json!({"object": "list", "data": data})
}

/// `POST /v1/messages/count_tokens` (Claude Code asks it before long requests). An
/// Anthropic provider is asked natively, once (no retries: it is a hint, not a call the
/// client pays for); for any other provider the input is estimated the way rate limits
/// estimate it (tiktoken for OpenAI models, bytes / 4 otherwise) and the answer says so in
/// `x-plano-estimate: true`.
pub async fn count_tokens(state: Arc<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let request_id = plano_common::request_id::ensure(&headers);
    let rt = state.runtime();
    let result =
        async {
            let ask = parse(Api::Messages, &body)?;
            let selection = select::select(&rt.config, &headers, ask.model.as_deref())?;
            let Some(candidate) = selection.candidates.first() else {
                return Err(EgressError::ModelNotFound(ask.model.unwrap_or_default()));
            };
            let provider = &rt.config.providers[candidate.provider];
            let mut counted = ask.body.clone();
            if provider.api == plano_config::ProviderApi::Anthropic {
                counted.insert("model".into(), Value::String(candidate.model_id.clone()));
                counted.remove("max_tokens");
                counted.remove("stream");
                let bytes = serde_json::to_vec(&counted)
                    .map(Bytes::from)
                    .map_err(|e| bad("invalid_request", e.to_string()))?;
                let uri = openai::uri(
                    provider,
                    &format!("{}/messages/count_tokens", provider.path_prefix),
                )
                .map_err(EgressError::Unsupported)?;
                let req = openai::build_request(provider, uri, &headers, &request_id, bytes)
                    .map_err(EgressError::Unsupported)?;
                let wait = rt
                    .config
                    .model_listener()
                    .map_or(Duration::from_secs(30), |l| l.timeout);
                return match attempt_once(&rt, req, false, wait).await {
                    Ok(Success::Whole { status, body }) => {
                        Ok((status, [(header::CONTENT_TYPE, "application/json")], body)
                            .into_response())
                    }
                    Ok(Success::Stream { .. }) => Err(EgressError::AllFailed(vec![(
                        provider.name.clone(),
                        AttemptError::Protocol("unexpected stream".into()),
                    )])),
                    Err(e) => Err(EgressError::AllFailed(vec![(provider.name.clone(), e)])),
                };
            }
            // Only what the model reads: system, messages, tools.
            let mut input = Map::new();
            for key in ["system", "messages", "tools"] {
                if let Some(v) = counted.remove(key) {
                    input.insert(key.into(), v);
                }
            }
            let text = serde_json::to_vec(&input).unwrap_or_default();
            let n = crate::ratelimit::tokens::estimate(&candidate.model_id, &text);
            let mut res = axum::Json(serde_json::json!({ "input_tokens": n })).into_response();
            res.headers_mut()
                .insert("x-plano-estimate", HeaderValue::from_static("true"));
            Ok(res)
        }
        .await;
    let mut response = match result {
        Ok(r) => r,
        Err(e) => error_response(&rt.config, Api::Messages, e, &request_id),
    };
    response.headers_mut().insert("x-request-id", request_id);
    response
}
