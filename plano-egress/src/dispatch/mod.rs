//! The egress request path for `POST /v1/chat/completions`, top to bottom:
//!
//! 1. parse the body (400 naming the problem) and read `model`, `stream`, `stream_options`;
//! 2. select the providers to try (`select.rs`): the target, then an alias's fallbacks;
//! 3. admit against the rate limits (429 before anything is sent upstream);
//! 4. for each provider (failover), while its circuit allows: attempt, and on a retryable
//!    failure back off (honouring `Retry-After`) and attempt again, up to `max_retries`;
//!    a stream is committed only once its first upstream event has arrived, so every
//!    failure before that point can still be retried or failed over;
//! 5. respond: the upstream body as is (non-stream) or event by event (`stream.rs`), with
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
use plano_config::{Config, Provider, ProviderApi};
use serde_json::Value;
use tokio::time::Instant;

use crate::error::{AttemptError, EgressError};
use crate::providers::openai;
use crate::ratelimit::{Decision, LimitRequest};
use crate::state::{AppState, Runtime};
use crate::stream::{self, StreamPlan, Usage};

/// Largest non-streaming upstream body we relay (a sane bound on a chat answer).
const MAX_UPSTREAM_BODY: usize = 64 * 1024 * 1024;

/// What the request asked for, read once from the body.
struct Ask {
    body: serde_json::Map<String, Value>,
    model: Option<String>,
    stream: bool,
    client_wants_usage: bool,
}

fn parse(body: &Bytes) -> Result<Ask, EgressError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| EgressError::BadRequest {
        code: "invalid_json",
        message: format!("request body is not valid JSON: {e}"),
    })?;
    let Value::Object(body) = value else {
        return Err(EgressError::BadRequest {
            code: "invalid_request",
            message: "request body must be a JSON object".into(),
        });
    };
    let model = match body.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(EgressError::BadRequest {
                code: "invalid_request",
                message: "`model` must be a string".into(),
            });
        }
    };
    if !matches!(body.get("messages"), Some(Value::Array(_))) {
        return Err(EgressError::BadRequest {
            code: "invalid_request",
            message: "`messages` must be a list of messages".into(),
        });
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let client_wants_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Ask {
        body,
        model,
        stream,
        client_wants_usage,
    })
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

/// `POST /v1/chat/completions`.
pub async fn chat_completions(state: Arc<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let mut clock = Clock {
        start: Instant::now(),
        waited: Duration::ZERO,
    };
    let request_id = plano_common::request_id::ensure(&headers);
    let rt = state.runtime();
    let mut response = match handle(&state, &rt, &headers, &body, &request_id, &mut clock).await {
        Ok(r) => r,
        Err(e) => {
            if let Some((status, upstream_body)) = e.upstream_body() {
                tracing::info!(request_id = ?request_id, status = status.as_u16(), "upstream error relayed");
                (
                    status,
                    [(header::CONTENT_TYPE, "application/json")],
                    upstream_body,
                )
                    .into_response()
            } else {
                tracing::info!(request_id = ?request_id, reason = e.reason(), "request failed");
                e.into_api_error(ApiShape::OpenAi).into_response()
            }
        }
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

async fn handle(
    state: &AppState,
    rt: &Runtime,
    headers: &HeaderMap,
    raw: &Bytes,
    request_id: &HeaderValue,
    clock: &mut Clock,
) -> Result<Response, EgressError> {
    let config = &rt.config;
    let ask = parse(raw)?;
    let selection = select::select(config, headers, ask.model.as_deref())?;
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
                if let Some(r) = deny.rejection(ApiShape::OpenAi) {
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
        if provider.api != ProviderApi::OpenAi && provider.api != ProviderApi::AzureOpenAi {
            failures.push((
                provider.name.clone(),
                AttemptError::Protocol(format!(
                    "provider API {:?} is not reachable from /v1/chat/completions yet",
                    provider.api
                )),
            ));
            continue;
        }
        let upstream_body = upstream_body(&ask, &candidate.model_id)?;
        let uri = openai::uri(provider, &provider.chat_path()).map_err(EgressError::Unsupported)?;
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
            match result {
                Ok(success) => {
                    state.circuits.success(&provider.name);
                    counter!(m::LLM_UPSTREAM_REQUESTS_TOTAL, "provider" => provider.name.clone(), "model" => provider.model.clone(), "outcome" => "success").increment(1);
                    let mut response = match success {
                        Success::Whole { status, body } => {
                            let usage = Usage::from_response(&body);
                            usage.record(provider);
                            if let (Some(l), Some(t)) = (rt.limiter.as_ref(), ticket.take()) {
                                l.reconcile(t, usage.total()).await;
                            }
                            (status, [(header::CONTENT_TYPE, "application/json")], body)
                                .into_response()
                        }
                        Success::Stream { first, rest } => {
                            histogram!(m::LLM_TIME_TO_FIRST_TOKEN_SECONDS, "provider" => provider.name.clone(), "model" => provider.model.clone())
                                .record(clock.start.elapsed().as_secs_f64());
                            let plan = StreamPlan {
                                provider: provider.clone(),
                                client_wants_usage: ask.client_wants_usage,
                                deadline,
                                limiter: rt.limiter.clone(),
                                ticket: ticket.take(),
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

/// The body sent upstream: the client's, with the provider's own model id, and usage
/// requested on streams (hidden again from a client that did not ask).
fn upstream_body(ask: &Ask, model_id: &str) -> Result<Bytes, EgressError> {
    let mut body = ask.body.clone();
    body.insert("model".into(), Value::String(model_id.to_string()));
    if ask.stream {
        let opts = body
            .entry("stream_options")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Value::Object(o) = opts {
            o.insert("include_usage".into(), Value::Bool(true));
        }
    }
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .map_err(|e| EgressError::BadRequest {
            code: "invalid_request",
            message: format!("cannot encode the request: {e}"),
        })
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
