//! Every answer the edge gives itself instead of relaying one: its status, a bounded
//! `reason()` (the access log's `error` field and the error body's `code`), and one place
//! that renders it in the client's API shape ([`EdgeError::to_api_error`]).
//!
//! Errors of the services the edge calls on the client's behalf (prompt-target endpoints,
//! agents) keep a 4xx status — the calling application learns what it did wrong — and turn
//! a 5xx or a broken connection into 502 (504 on a timeout). Their error body names the
//! service and carries a bounded excerpt of what it answered (`error.upstream`).

use std::time::Duration;

use http::StatusCode;
use plano_common::errors::{ApiError, ApiShape};
use serde_json::{Value, json};

/// How much of an endpoint's or agent's error body reaches the client.
pub(crate) const MAX_EXCERPT_CHARS: usize = 512;

#[derive(Debug, thiserror::Error)]
pub(crate) enum EdgeError {
    #[error("no route for {method} {path}")]
    NoRoute { method: http::Method, path: String },
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the request body could not be read: {0}")]
    BadBody(String),
    #[error(
        "`content-type: {0}` is not accepted here: send the body as JSON (`content-type: application/json`)"
    )]
    UnsupportedMediaType(String),
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the request body must be a JSON object")]
    NotAnObject,
    #[error(
        "this listener requires an API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`"
    )]
    MissingApiKey,
    #[error("the API key is not valid for this listener")]
    InvalidApiKey,
    #[error("the request carries more than one `{0}` header; send exactly one")]
    DuplicateCredentials(&'static str),
    #[error("cannot forward this request: {0}")]
    CannotForward(String),
    #[error("the model egress is not available ({0}); try again shortly")]
    EgressUnavailable(String),
    #[error("the model egress could not be reached")]
    EgressUnreachable,
    #[error("no answer from {waiting_on} within the listener timeout of {limit:?}")]
    Timeout {
        waiting_on: &'static str,
        limit: Duration,
    },
    #[error("this listener was removed by a configuration reload")]
    ListenerRemoved,
    /// Built by the shared filter runner (`plano_common::filters`), already in shape.
    #[error("{0}")]
    Filter(ApiError),
    #[error("`x-plano-agent: {wanted}` names no agent of this listener; valid ids: {valid}")]
    UnknownAgent { wanted: String, valid: String },
    #[error("this listener has no agents")]
    NoAgents,
    #[error("agent `{0}` is not in the top-level `agents`")]
    AgentNotConfigured(String),
    #[error("agent `{id}`: its input filters did not finish within the listener timeout")]
    AgentFiltersTimeout { id: String },
    #[error("agent `{id}` {failure}")]
    Agent { id: String, failure: Failure },
    #[error("prompt target `{target}`: endpoint `{endpoint}` ({path}) {failure}")]
    Endpoint {
        target: String,
        endpoint: String,
        path: String,
        failure: Failure,
    },
    #[error("prompt target `{target}`: {why}")]
    PromptTargetMisconfigured { target: String, why: String },
    #[error("{what} failed: {err}")]
    Llm { what: &'static str, err: LlmError },
    #[error("the model called `{name}`, which is not a prompt target (valid: {valid})")]
    InvalidToolCall { name: String, valid: String },
    #[error("the model's arguments for prompt target `{target}` are invalid: {why}")]
    InvalidToolArguments { target: String, why: String },
}

/// Why a call the edge made on its own behalf (`calls.rs`) gave no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("cannot connect: {0}")]
    Unreachable(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the answer could not be read: {0}")]
    Body(String),
    /// Longer than the read limit (bytes).
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the request could not be built: {0}")]
    Build(String),
}

/// Why a chat completion call to the egress (`llm.rs`) failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LlmError {
    #[error("the model egress: {0}")]
    Call(#[from] CallError),
    #[error("the model egress answered {status}: {message}")]
    Status { status: StatusCode, message: String },
    #[error("the model's answer is not a chat completion: {0}")]
    Invalid(String),
}

impl LlmError {
    /// The status the client sees when this call was needed to answer it.
    pub(crate) fn client_status(&self) -> StatusCode {
        match self {
            LlmError::Call(CallError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            // The egress's own client errors (unknown model, rate limit) keep their status.
            LlmError::Status { status, .. } if status.is_client_error() => *status,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Why a call to an endpoint or an agent gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error("did not answer within {0:?}")]
    Timeout(Duration),
    #[error("could not be reached: {0}")]
    Unreachable(String),
    /// It answered with an error status; `excerpt` is the start of its body.
    #[error("answered {status}")]
    Status { status: StatusCode, excerpt: String },
}

impl From<&CallError> for Failure {
    fn from(e: &CallError) -> Self {
        match e {
            CallError::Timeout(d) => Failure::Timeout(*d),
            other => Failure::Unreachable(other.to_string()),
        }
    }
}

impl Failure {
    /// An error status and the body that came with it.
    pub(crate) fn status(status: StatusCode, body: &[u8]) -> Self {
        Failure::Status {
            status,
            excerpt: excerpt(body),
        }
    }

    /// 4xx kept; 5xx and anything else from the service 502; its timeout 504.
    fn client_status(&self) -> StatusCode {
        match self {
            Failure::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Failure::Status { status, .. } if status.is_client_error() => *status,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    fn upstream(&self) -> Option<(u16, &str)> {
        match self {
            Failure::Status { status, excerpt } => Some((status.as_u16(), excerpt)),
            _ => None,
        }
    }
}

/// At most [`MAX_EXCERPT_CHARS`] of a body, as text, whitespace runs folded.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    for (n, word) in text.split_whitespace().enumerate() {
        if n > 0 {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() > MAX_EXCERPT_CHARS {
            break;
        }
    }
    if out.chars().count() > MAX_EXCERPT_CHARS {
        out = out.chars().take(MAX_EXCERPT_CHARS).collect();
        out.push('…');
    }
    out
}

impl EdgeError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            EdgeError::NoRoute { .. } => StatusCode::NOT_FOUND,
            EdgeError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            EdgeError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            EdgeError::BadBody(_)
            | EdgeError::InvalidJson(_)
            | EdgeError::NotAnObject
            | EdgeError::DuplicateCredentials(_)
            | EdgeError::CannotForward(_)
            | EdgeError::UnknownAgent { .. } => StatusCode::BAD_REQUEST,
            EdgeError::MissingApiKey | EdgeError::InvalidApiKey => StatusCode::UNAUTHORIZED,
            EdgeError::EgressUnavailable(_) | EdgeError::ListenerRemoved => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            EdgeError::EgressUnreachable
            | EdgeError::InvalidToolCall { .. }
            | EdgeError::InvalidToolArguments { .. } => StatusCode::BAD_GATEWAY,
            EdgeError::Timeout { .. } | EdgeError::AgentFiltersTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            EdgeError::Filter(e) => e.status,
            EdgeError::NoAgents
            | EdgeError::AgentNotConfigured(_)
            | EdgeError::PromptTargetMisconfigured { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            EdgeError::Agent { failure, .. } | EdgeError::Endpoint { failure, .. } => {
                failure.client_status()
            }
            EdgeError::Llm { err, .. } => err.client_status(),
        }
    }

    /// Stable, bounded: the error body's `code` and the access log's `error`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            EdgeError::NoRoute { .. } => "not_found",
            EdgeError::BodyTooLarge { .. } => "payload_too_large",
            EdgeError::BadBody(_) | EdgeError::NotAnObject | EdgeError::CannotForward(_) => {
                "invalid_request"
            }
            EdgeError::UnsupportedMediaType(_) => "unsupported_media_type",
            EdgeError::InvalidJson(_) => "invalid_json",
            EdgeError::MissingApiKey => "missing_api_key",
            EdgeError::InvalidApiKey => "invalid_api_key",
            EdgeError::DuplicateCredentials(_) => "duplicate_credentials",
            EdgeError::EgressUnavailable(_) => "egress_unavailable",
            EdgeError::EgressUnreachable => "egress_unreachable",
            EdgeError::Timeout { .. } | EdgeError::AgentFiltersTimeout { .. } => "timeout",
            EdgeError::ListenerRemoved => "listener_removed",
            EdgeError::Filter(e) => e.code,
            EdgeError::UnknownAgent { .. } => "unknown_agent",
            EdgeError::NoAgents => "no_agents",
            EdgeError::AgentNotConfigured(_) => "agent_not_configured",
            EdgeError::Agent { failure, .. } => match failure {
                Failure::Timeout(_) => "agent_timeout",
                Failure::Unreachable(_) => "agent_unreachable",
                Failure::Status { .. } => "agent_error",
            },
            EdgeError::Endpoint { failure, .. } => match failure {
                Failure::Timeout(_) => "endpoint_timeout",
                Failure::Unreachable(_) => "endpoint_unreachable",
                Failure::Status { .. } => "endpoint_error",
            },
            EdgeError::PromptTargetMisconfigured { .. } => "prompt_target_misconfigured",
            EdgeError::Llm { .. } => "llm_error",
            EdgeError::InvalidToolCall { .. } => "invalid_tool_call",
            EdgeError::InvalidToolArguments { .. } => "invalid_tool_arguments",
        }
    }

    /// The answer in the client's shape: the one place an edge error becomes a body.
    pub(crate) fn to_api_error(&self, shape: ApiShape) -> ApiError {
        if let EdgeError::Filter(e) = self {
            return e.clone().with_shape(shape);
        }
        let mut e = ApiError::new(self.status(), self.reason(), self.to_string()).with_shape(shape);
        if matches!(self, EdgeError::UnknownAgent { .. }) {
            e = e.with_param("x-plano-agent");
        }
        e
    }

    /// The JSON body: [`EdgeError::to_api_error`]'s, plus `error.upstream` (which service,
    /// what it answered) for endpoint and agent errors.
    pub(crate) fn body(&self, shape: ApiShape) -> bytes::Bytes {
        let api = self.to_api_error(shape);
        let Some(upstream) = self.upstream() else {
            return api.body();
        };
        let mut v: Value = serde_json::from_slice(&api.body()).unwrap_or(Value::Null);
        if let Some(err) = v.get_mut("error").and_then(Value::as_object_mut) {
            err.insert("upstream".into(), upstream);
        }
        bytes::Bytes::from(v.to_string())
    }

    fn upstream(&self) -> Option<Value> {
        match self {
            EdgeError::Endpoint {
                endpoint,
                path,
                failure,
                ..
            } => Some(upstream_json("endpoint", endpoint, Some(path), failure)),
            EdgeError::Agent { id, failure } => Some(upstream_json("agent", id, None, failure)),
            _ => None,
        }
    }
}

fn upstream_json(kind: &str, name: &str, path: Option<&str>, failure: &Failure) -> Value {
    let mut v = json!({"kind": kind, "name": name});
    if let Some(p) = path {
        v["path"] = Value::String(p.to_string());
    }
    if let Some((status, excerpt)) = failure.upstream() {
        v["status"] = json!(status);
        v["body"] = Value::String(excerpt.to_string());
    }
    v
}

/// The event that ends a stream cut off by the listener timeout, in the stream's API: an
/// `error` event for Messages and Responses, a `data:` error object for chat (what the
/// egress sends when its own stream timeout ends a stream).
pub(crate) fn stream_timeout_event(route: &str, limit: Duration) -> bytes::Bytes {
    let message =
        format!("the response exceeded the listener timeout of {limit:?} and was cut off");
    let text = match route {
        "/v1/messages" => format!(
            "event: error\ndata: {}\n\n",
            json!({"type": "error", "error": {"type": "api_error", "message": message}})
        ),
        "/v1/responses" => format!(
            "event: error\ndata: {}\n\n",
            json!({"type": "error", "code": "timeout", "message": message, "param": null})
        ),
        _ => format!(
            "data: {}\n\n",
            json!({"error": {"message": message, "type": "timeout", "param": null, "code": "timeout"}})
        ),
    };
    bytes::Bytes::from(text)
}

impl From<ApiError> for EdgeError {
    fn from(e: ApiError) -> Self {
        EdgeError::Filter(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_status_keeps_egress_client_errors_only() {
        let status = |s: u16| LlmError::Status {
            status: StatusCode::from_u16(s).unwrap(),
            message: String::new(),
        };
        assert_eq!(status(429).client_status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(status(404).client_status(), StatusCode::NOT_FOUND);
        assert_eq!(status(500).client_status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            LlmError::Call(CallError::Timeout(Duration::from_secs(1))).client_status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            LlmError::Invalid("x".into()).client_status(),
            StatusCode::BAD_GATEWAY
        );
    }

    fn endpoint(failure: Failure) -> EdgeError {
        EdgeError::Endpoint {
            target: "get_weather".into(),
            endpoint: "app".into(),
            path: "/weather/{city}".into(),
            failure,
        }
    }

    #[test]
    fn endpoint_4xx_keeps_its_status_5xx_is_502_timeout_504() {
        let e = endpoint(Failure::status(
            StatusCode::NOT_FOUND,
            b"{\"error\": \"no city\"}",
        ));
        assert_eq!(
            (e.status(), e.reason()),
            (StatusCode::NOT_FOUND, "endpoint_error")
        );
        let v: Value = serde_json::from_slice(&e.body(ApiShape::OpenAi)).unwrap();
        assert_eq!(v["error"]["upstream"]["status"], 404);
        assert_eq!(v["error"]["upstream"]["name"], "app");
        assert_eq!(v["error"]["upstream"]["path"], "/weather/{city}");
        assert_eq!(v["error"]["upstream"]["body"], "{\"error\": \"no city\"}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        let e = endpoint(Failure::status(StatusCode::INTERNAL_SERVER_ERROR, b"boom"));
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        let e = endpoint(Failure::Timeout(Duration::from_secs(1)));
        assert_eq!(
            (e.status(), e.reason()),
            (StatusCode::GATEWAY_TIMEOUT, "endpoint_timeout")
        );
        let v: Value = serde_json::from_slice(&e.body(ApiShape::OpenAi)).unwrap();
        assert!(v["error"]["upstream"].get("status").is_none());
    }

    #[test]
    fn excerpts_are_bounded_and_folded() {
        assert_eq!(excerpt(b"a\n\n  b"), "a b");
        let long = "x ".repeat(5000);
        let e = excerpt(long.as_bytes());
        assert_eq!(e.chars().count(), MAX_EXCERPT_CHARS + 1);
        assert!(e.ends_with('…'));
    }

    #[test]
    fn anthropic_shape_has_the_same_code_and_upstream() {
        let e = EdgeError::Agent {
            id: "weather".into(),
            failure: Failure::status(StatusCode::TOO_MANY_REQUESTS, b"slow down"),
        };
        let v: Value = serde_json::from_slice(&e.body(ApiShape::Anthropic)).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["upstream"]["kind"], "agent");
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}
