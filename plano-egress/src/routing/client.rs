//! How the router model is called. [`RouterBackend`] is the one seam: routing hands it a
//! chat completions body for a configured model and gets the answer's text back. The
//! egress implementation ([`Upstream`]) resolves the model like any request's `model`,
//! translates for the provider's API (an Anthropic or Bedrock router works too) and sends
//! it with the shared upstream client and the provider's auth. It makes one attempt: a
//! router that is down or slow costs one timeout, then the request falls back.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt, Limited};
use plano_config::Config;
use serde_json::{Map, Value};

use crate::dispatch::select;
use crate::providers::api::Api;
use crate::providers::body::ClientBody;
use crate::providers::plan::{self, ClientRequest, Route};
use crate::providers::upstream_request::{self, Prepared};
use crate::upstream::HttpClient;

/// Why the router gave no answer (each a fallback reason label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The router model names no configured provider.
    UnknownModel(String),
    Unreachable(String),
    Timeout,
    Status(u16),
    /// A 2xx answer that is not a chat completion with text.
    Protocol(String),
}

impl CallError {
    pub fn reason(&self) -> &'static str {
        match self {
            CallError::UnknownModel(_) => "router_not_configured",
            CallError::Unreachable(_) => "router_unreachable",
            CallError::Timeout => "router_timeout",
            CallError::Status(_) => "router_status",
            CallError::Protocol(_) => "router_bad_answer",
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::UnknownModel(m) => write!(f, "the router model `{m}` is not configured"),
            CallError::Unreachable(e) => write!(f, "the router is unreachable: {e}"),
            CallError::Timeout => write!(f, "the router did not answer in time"),
            CallError::Status(s) => write!(f, "the router answered {s}"),
            CallError::Protocol(e) => write!(f, "the router's answer is unusable: {e}"),
        }
    }
}

pub trait RouterBackend: Send + Sync {
    /// Send `body` (chat completions, non-streaming) to `model` and return the text of its
    /// first choice, within `timeout`.
    fn complete(
        &self,
        model: &str,
        body: Map<String, Value>,
        timeout: Duration,
    ) -> impl Future<Output = Result<String, CallError>> + Send;
}

/// The router reached through the egress's own providers: the parts of the request's
/// runtime (`state::Runtime`) a call needs.
pub struct Upstream<'a> {
    pub config: &'a Config,
    /// Per provider (same index as `config.providers`).
    pub prepared: &'a [Prepared],
    pub client: &'a HttpClient,
    pub request_id: &'a HeaderValue,
}

const MAX_ANSWER: usize = 1024 * 1024;

impl RouterBackend for Upstream<'_> {
    async fn complete(
        &self,
        model: &str,
        mut body: Map<String, Value>,
        timeout: Duration,
    ) -> Result<String, CallError> {
        let config = self.config;
        let selection = select::select(config, &HeaderMap::new(), Some(model))
            .map_err(|_| CallError::UnknownModel(model.to_string()))?;
        let candidate = selection
            .candidates
            .first()
            .ok_or_else(|| CallError::UnknownModel(model.to_string()))?;
        let provider = &config.providers[candidate.provider];
        body.insert("model".into(), Value::String(candidate.model_id.clone()));
        let route = Route::new(provider, Api::Chat);
        let body = ClientBody::from_tree(body);
        let req = ClientRequest {
            api: Api::Chat,
            body: &body,
            model,
            stream: false,
            response_id: "",
        };
        let bytes = route
            .request_body(&req, &candidate.model_id)
            .map_err(|e| CallError::Protocol(e.message))?;
        let path = plan::upstream_path(provider, route.upstream, false);
        let uri = upstream_request::uri(provider, &path).map_err(CallError::Protocol)?;
        let prepared = self
            .prepared
            .get(candidate.provider)
            .ok_or_else(|| CallError::UnknownModel(model.to_string()))?;
        let mut http_req = upstream_request::build_request(
            provider,
            prepared,
            uri,
            &HeaderMap::new(),
            self.request_id,
            bytes.clone(),
        );
        // The `routing` client span this call runs in (`Router::decide`).
        plano_common::telemetry::inject_current(http_req.headers_mut());
        let span = tracing::Span::current();
        plano_common::telemetry::record_llm_request(
            &span,
            &plano_common::telemetry::LlmRequest {
                system: &provider.prefix,
                provider: &provider.name,
                model: &candidate.model_id,
                operation: Some("chat"),
                streaming: false,
            },
        );
        upstream_request::authorize(prepared, &mut http_req, &bytes)
            .await
            .map_err(CallError::Unreachable)?;
        let work = async {
            let res = self
                .client
                .request(http_req)
                .await
                .map_err(|e| CallError::Unreachable(e.to_string()))?;
            let status = res.status();
            plano_common::telemetry::record_client_status(&span, status);
            let answer: Bytes = Limited::new(res.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| CallError::Unreachable(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                return Err(CallError::Status(status.as_u16()));
            }
            Ok(answer)
        };
        let answer = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| CallError::Timeout)??;
        let (chat, _) = route
            .response_body(&req, &answer)
            .map_err(|e| CallError::Protocol(e.message))?;
        if plano_common::telemetry::is_recording(&span) {
            plano_common::telemetry::ResponseFacts::of_body(&chat).record(&[&span]);
        }
        chat_text(&chat)
    }
}

/// The text of a chat completion's first choice.
pub fn chat_text(answer: &[u8]) -> Result<String, CallError> {
    let v: Value = serde_json::from_slice(answer)
        .map_err(|e| CallError::Protocol(format!("not JSON: {e}")))?;
    let content = v
        .get("choices")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("message"))
        .and_then(|m| m.get("content"));
    match content {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => Ok(parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("")),
        _ => Err(CallError::Protocol("no text in the first choice".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_choice_text_is_read() {
        let a =
            json!({"choices": [{"message": {"role": "assistant", "content": "{\"route\": []}"}}]});
        assert_eq!(
            chat_text(a.to_string().as_bytes()).unwrap(),
            "{\"route\": []}"
        );
        let parts = json!({"choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}}]});
        assert_eq!(chat_text(parts.to_string().as_bytes()).unwrap(), "ab");
        for bad in [
            json!({"choices": []}),
            json!({"error": "x"}),
            json!({"choices": [{"message": {"content": null}}]}),
        ] {
            assert!(matches!(
                chat_text(bad.to_string().as_bytes()),
                Err(CallError::Protocol(_))
            ));
        }
        assert!(chat_text(b"<html>").is_err());
    }
}
