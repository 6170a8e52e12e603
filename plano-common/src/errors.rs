//! Error bodies in the client's API shape. Every error a client sees from either binary is
//! rendered here, so the shapes cannot drift between the edge and the egress.
//!
//! OpenAI: `{"error": {"message", "type", "param", "code"}}`.
//! Anthropic: `{"type": "error", "error": {"type", "message"}}`.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

/// Which API family the client spoke, and so which error shape it expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiShape {
    OpenAi,
    Anthropic,
}

impl ApiShape {
    /// `/v1/messages` (and anything under it) is Anthropic; everything else is OpenAI.
    pub fn for_path(path: &str) -> Self {
        if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            ApiShape::Anthropic
        } else {
            ApiShape::OpenAi
        }
    }
}

/// An error answer: status, a stable machine `code`, and a human message.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable code, e.g. `model_not_found`, `invalid_json`, `rate_limit_exceeded`.
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub shape: ApiShape,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            param: None,
            shape: ApiShape::OpenAi,
        }
    }

    pub fn with_shape(mut self, shape: ApiShape) -> Self {
        self.shape = shape;
        self
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// OpenAI `type` for a status (the values OpenAI's SDKs key on).
    pub fn openai_type(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 404 | 405 | 409 | 413 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            _ if self.status.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// Anthropic `error.type` for a status (as documented in Anthropic's errors page).
    pub fn anthropic_type(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 405 | 409 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            503 => "overloaded_error",
            _ if self.status.is_server_error() => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// The JSON body in this error's shape.
    pub fn body(&self) -> Bytes {
        let value = match self.shape {
            ApiShape::OpenAi => json!({
                "error": {
                    "message": self.message,
                    "type": self.openai_type(),
                    "param": self.param,
                    "code": self.code,
                }
            }),
            ApiShape::Anthropic => json!({
                "type": "error",
                "error": { "type": self.anthropic_type(), "message": self.message }
            }),
        };
        Bytes::from(value.to_string())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

/// `e` and its sources joined with `: `, so "connection refused" is not lost behind
/// Longest path written to the access log and error messages: a client can send a 40 KB
/// path, and one request must not write 40 KB of log.
pub const MAX_LOGGED_PATH_CHARS: usize = 256;

/// `path` cut at [`MAX_LOGGED_PATH_CHARS`], with `…` and its full length when cut.
pub fn bounded_path(path: &str) -> std::borrow::Cow<'_, str> {
    match path.char_indices().nth(MAX_LOGGED_PATH_CHARS) {
        None => std::borrow::Cow::Borrowed(path),
        Some((at, _)) => std::borrow::Cow::Owned(format!("{}…({} bytes)", &path[..at], path.len())),
    }
}

/// "client error (Connect)". The one error-chain walker both binaries use.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        // Some errors repeat their source in their own message; do not say it twice.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, self.body()).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_are_cut_short_ones_kept() {
        assert_eq!(bounded_path("/v1/models"), "/v1/models");
        let long = format!("/{}", "a".repeat(40_000));
        let cut = bounded_path(&long);
        assert!(cut.len() < 300, "{}", cut.len());
        assert!(cut.ends_with("…(40001 bytes)"), "{cut}");
        let multibyte = "é".repeat(1000);
        assert!(bounded_path(&multibyte).starts_with(&"é".repeat(MAX_LOGGED_PATH_CHARS)));
    }

    #[test]
    fn openai_shape() {
        let e = ApiError::new(StatusCode::NOT_FOUND, "model_not_found", "no model `x`");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap_or_default();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["message"], "no model `x`");
        assert!(v["error"]["param"].is_null());
    }

    #[test]
    fn error_chain_names_every_source() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = std::io::Error::other(Wrapper(inner));
        assert_eq!(error_chain(&outer), "connect failed: refused");
    }

    #[derive(Debug)]
    struct Wrapper(std::io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("connect failed")
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn anthropic_shape() {
        let e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            "slow down",
        )
        .with_shape(ApiShape::for_path("/v1/messages"));
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap_or_default();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["message"], "slow down");
    }
}
