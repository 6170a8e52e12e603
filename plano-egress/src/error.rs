//! Every way an egress request can fail, with its status, a bounded metrics label, and
//! whether another attempt could succeed. Rendered in one place (`into_api_error`).

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use plano_common::errors::{ApiError, ApiShape};

/// One attempt's failure against one provider.
#[derive(Debug, Clone)]
pub enum AttemptError {
    /// TCP/TLS connect failed or was refused.
    Connect(String),
    /// The provider's computed credentials (AWS SigV4 keys, a Google token) could not be
    /// had: nothing was sent. Retried (a metadata endpoint may answer next time) and failed
    /// over like an unreachable provider.
    Credentials(String),
    /// No response headers (or first event) within the deadline.
    Timeout(&'static str),
    /// The upstream answered with an error status; body kept for the client.
    Status {
        status: StatusCode,
        body: Bytes,
        retry_after: Option<Duration>,
    },
    /// The connection broke or the upstream sent something unusable.
    Protocol(String),
    /// The provider's circuit is open: skipped without sending.
    CircuitOpen,
    /// The request cannot be expressed in this provider's API (not sent; another
    /// provider may still take it).
    Untranslatable(String),
    /// No valid upstream URL could be made for this provider (not sent; the runtime checks
    /// every provider's URL when it is built, so this is not expected).
    Unaddressable(String),
}

impl AttemptError {
    pub fn is_retryable(&self) -> bool {
        match self {
            AttemptError::Connect(_)
            | AttemptError::Credentials(_)
            | AttemptError::Timeout(_)
            | AttemptError::Protocol(_) => true,
            AttemptError::Status { status, .. } => {
                matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
            }
            AttemptError::CircuitOpen => true,
            AttemptError::Untranslatable(_) | AttemptError::Unaddressable(_) => false,
        }
    }

    /// Bounded label for `plano_llm_upstream_requests_total{outcome}`.
    pub fn outcome(&self) -> &'static str {
        match self {
            AttemptError::Connect(_) => "connect_error",
            AttemptError::Credentials(_) => "credentials_error",
            AttemptError::Timeout(_) => "timeout",
            AttemptError::Status { status, .. } if status.as_u16() == 429 => "http_429",
            AttemptError::Status { status, .. } if status.is_server_error() => "http_5xx",
            AttemptError::Status { .. } => "http_4xx",
            AttemptError::Protocol(_) => "protocol_error",
            AttemptError::CircuitOpen => "circuit_open",
            AttemptError::Untranslatable(_) => "untranslatable",
            AttemptError::Unaddressable(_) => "unaddressable",
        }
    }

    /// Whether this failure counts against the provider's circuit breaker (a 4xx is the
    /// client's fault, not the provider's).
    pub fn counts_against_provider(&self) -> bool {
        !matches!(self, AttemptError::Status { status, .. } if status.is_client_error() && status.as_u16() != 429)
            && !matches!(
                self,
                AttemptError::CircuitOpen
                    | AttemptError::Untranslatable(_)
                    | AttemptError::Unaddressable(_)
            )
    }

    pub fn describe(&self) -> String {
        match self {
            AttemptError::Connect(e) => format!("connection failed: {e}"),
            AttemptError::Credentials(e) => format!("no credentials for it: {e}"),
            AttemptError::Timeout(what) => format!("timed out waiting for {what}"),
            AttemptError::Status { status, body, .. } => match upstream_message(body) {
                Some(m) => format!("answered {}: {m}", status.as_u16()),
                None => format!("answered {}", status.as_u16()),
            },
            AttemptError::Protocol(e) => format!("broken response: {e}"),
            AttemptError::CircuitOpen => "skipped: circuit open after repeated failures".into(),
            AttemptError::Untranslatable(e) => format!("request not expressible in its API: {e}"),
            AttemptError::Unaddressable(e) => format!("no upstream URL: {e}"),
        }
    }
}

/// The human message in a provider's error body, whatever its API: OpenAI and Anthropic
/// (`error.message`), Bedrock (`message` / `Message`), or short plain text. Bounded.
pub fn upstream_message(body: &[u8]) -> Option<String> {
    const MAX: usize = 500;
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => ["/error/message", "/message", "/Message", "/error"]
            .iter()
            .find_map(|p| v.pointer(p).and_then(|m| m.as_str()).map(str::to_string))?,
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    };
    if text.is_empty() {
        return None;
    }
    let mut end = text.len().min(MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(text[..end].to_string())
}

/// No provider answered with a status and the last one could not express the request:
/// the client's request is the problem (400 `untranslatable_request`), not an upstream.
fn untranslatable(failures: &[(String, AttemptError)]) -> bool {
    !failures
        .iter()
        .any(|(_, e)| matches!(e, AttemptError::Status { .. }))
        && matches!(failures.last(), Some((_, AttemptError::Untranslatable(_))))
}

/// Why a request was answered with an error.
#[derive(Debug)]
pub enum EgressError {
    BadRequest {
        code: &'static str,
        message: String,
    },
    PayloadTooLarge {
        limit: usize,
    },
    ModelNotFound(String),
    /// A configured rate limit refused the request (before anything was sent upstream);
    /// `headers` carry `retry-after` and the `x-ratelimit-*` of each limited kind.
    RateLimited {
        message: String,
        headers: http::HeaderMap,
    },
    /// The request refers to state we do not have (an unknown `previous_response_id`).
    Conflict(String),
    /// The conversation store (`state_storage`) could not be reached to look up a
    /// `previous_response_id`.
    StateUnavailable,
    /// The whole-request deadline passed before anything was sent to the client.
    DeadlineExceeded(Duration),
    /// Every provider tried failed. `(provider, error)` in the order tried.
    AllFailed(Vec<(String, AttemptError)>),
}

impl EgressError {
    pub fn status(&self) -> StatusCode {
        match self {
            EgressError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            EgressError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            EgressError::ModelNotFound(_) => StatusCode::NOT_FOUND,
            EgressError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            EgressError::Conflict(_) => StatusCode::CONFLICT,
            EgressError::StateUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            EgressError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            EgressError::AllFailed(failures) => {
                let last_status = failures.iter().rev().find_map(|(_, e)| match e {
                    AttemptError::Status { status, .. } => Some(*status),
                    _ => None,
                });
                match (last_status, failures.last().map(|(_, e)| e)) {
                    (Some(s), _) => s,
                    (None, Some(AttemptError::Timeout(_))) => StatusCode::GATEWAY_TIMEOUT,
                    (None, Some(AttemptError::CircuitOpen)) => StatusCode::SERVICE_UNAVAILABLE,
                    (None, Some(AttemptError::Untranslatable(_))) => StatusCode::BAD_REQUEST,
                    _ => StatusCode::BAD_GATEWAY,
                }
            }
        }
    }

    /// Bounded label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            EgressError::BadRequest { code, .. } => code,
            EgressError::PayloadTooLarge { .. } => "payload_too_large",
            EgressError::ModelNotFound(_) => "model_not_found",
            EgressError::RateLimited { .. } => "rate_limit_exceeded",
            EgressError::Conflict(_) => "unknown_previous_response",
            EgressError::StateUnavailable => "state_unavailable",
            EgressError::DeadlineExceeded(_) => "deadline_exceeded",
            EgressError::AllFailed(f) if untranslatable(f) => "untranslatable_request",
            EgressError::AllFailed(_) => "upstream_failed",
        }
    }

    /// The upstream's own error body, when one provider failed with a status: the client
    /// sees exactly what the provider said (when the provider speaks the client's API).
    pub fn upstream_body(&self) -> Option<(String, StatusCode, Bytes)> {
        match self {
            EgressError::AllFailed(f) if f.len() == 1 || f.iter().all(|(n, _)| *n == f[0].0) => {
                match f.last().map(|(_, e)| e) {
                    Some(AttemptError::Status { status, body, .. })
                        if serde_json::from_slice::<serde_json::Value>(body).is_ok() =>
                    {
                        Some((f[0].0.clone(), *status, body.clone()))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The error answer in `shape`, with the headers the error carries.
    pub fn into_response(self, shape: ApiShape) -> axum::response::Response {
        use axum::response::IntoResponse;
        let headers = match &self {
            EgressError::RateLimited { headers, .. } => Some(headers.clone()),
            _ => None,
        };
        let mut res = self.into_api_error(shape).into_response();
        if let Some(h) = headers {
            res.headers_mut().extend(h);
        }
        res
    }

    pub fn into_api_error(self, shape: ApiShape) -> ApiError {
        let status = self.status();
        let message = match &self {
            EgressError::BadRequest { message, .. } => message.clone(),
            EgressError::PayloadTooLarge { limit } => {
                format!("request body is larger than the limit of {limit} bytes")
            }
            EgressError::ModelNotFound(m) => format!(
                "model `{m}` is not configured: use a configured model, alias or `provider/model` (GET /v1/models lists them)"
            ),
            EgressError::RateLimited { message, .. } | EgressError::Conflict(message) => {
                message.clone()
            }
            EgressError::StateUnavailable => "the conversation store is unavailable, so `previous_response_id` cannot be looked up: retry later, or send the whole conversation as `input` without it".to_string(),
            EgressError::DeadlineExceeded(d) => {
                format!("no complete answer from the provider within the listener timeout of {d:?}")
            }
            EgressError::AllFailed(failures) => {
                let parts: Vec<String> = failures
                    .iter()
                    .map(|(p, e)| format!("{p}: {}", e.describe()))
                    .collect();
                format!("every provider failed: {}", parts.join("; "))
            }
        };
        ApiError::new(status, self.reason(), message).with_shape(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::upstream_message;

    #[test]
    fn a_request_no_provider_can_express_is_a_400_untranslatable_request() {
        use super::{AttemptError, EgressError};
        let e = EgressError::AllFailed(vec![(
            "bedrock".into(),
            AttemptError::Untranslatable("image URLs are not supported".into()),
        )]);
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(e.reason(), "untranslatable_request");
        // After an upstream answered with a status, that answer is what the client sees.
        let e = EgressError::AllFailed(vec![
            (
                "a".into(),
                AttemptError::Status {
                    status: http::StatusCode::SERVICE_UNAVAILABLE,
                    body: bytes::Bytes::new(),
                    retry_after: None,
                },
            ),
            ("b".into(), AttemptError::Untranslatable("x".into())),
        ]);
        assert_eq!(e.reason(), "upstream_failed");
        let e = EgressError::AllFailed(vec![("a".into(), AttemptError::Timeout("t"))]);
        assert_eq!(e.reason(), "upstream_failed");
    }

    #[test]
    fn provider_messages_of_every_api() {
        let openai = br#"{"error": {"message": "bad model", "type": "invalid_request_error"}}"#;
        assert_eq!(upstream_message(openai).as_deref(), Some("bad model"));
        let anthropic = br#"{"type": "error", "error": {"type": "x", "message": "too long"}}"#;
        assert_eq!(upstream_message(anthropic).as_deref(), Some("too long"));
        // Bedrock: `{"message"}`, or `{"Message"}` from some of its front ends.
        assert_eq!(
            upstream_message(br#"{"message":"The provided model identifier is invalid."}"#)
                .as_deref(),
            Some("The provided model identifier is invalid.")
        );
        assert_eq!(
            upstream_message(br#"{"Message":"x"}"#).as_deref(),
            Some("x")
        );
        assert_eq!(upstream_message(br#"{"message":3}"#), None);
        assert_eq!(
            upstream_message(b"  upstream down \n").as_deref(),
            Some("upstream down")
        );
        assert_eq!(upstream_message(b""), None);
        let long = "é".repeat(400);
        assert!(upstream_message(long.as_bytes()).unwrap().len() <= 500);
    }
}
