//! Chat completion calls from the edge to the egress (`egress.url` + `/v1/chat/completions`,
//! OpenAI format), for agent orchestration and prompt targets. The egress picks the
//! provider, retries and meters as for any client; a body without `model` gets its default.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response};
use plano_common::http_client::PooledBody;
use serde_json::Value;

use crate::calls;
use crate::error::LlmError;
use crate::forward::Client;

pub(crate) struct Llm<'a> {
    pub client: &'a Client,
    pub egress: &'a url::Url,
    /// From [`calls::call_headers`].
    pub headers: HeaderMap,
}

impl Llm<'_> {
    fn url(&self) -> String {
        format!(
            "{}/v1/chat/completions",
            self.egress.as_str().trim_end_matches('/')
        )
    }

    /// Send `body` and return the response as it comes (for streaming it to the client).
    pub(crate) async fn open(
        &self,
        body: &Value,
        limit: Duration,
    ) -> Result<Response<PooledBody>, LlmError> {
        let req = calls::post(
            &self.url(),
            self.headers.clone(),
            Bytes::from(body.to_string()),
        )?;
        Ok(calls::send(self.client, req, limit, "llm", "egress").await?)
    }

    /// A non-streaming call: the whole chat completion, or the egress's error.
    pub(crate) async fn complete(&self, body: &Value, limit: Duration) -> Result<Value, LlmError> {
        let started = tokio::time::Instant::now();
        let res = self.open(body, limit).await?;
        let status = res.status();
        let left = limit.saturating_sub(started.elapsed());
        let bytes = calls::read_body(res, left).await?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            if status.is_success() {
                LlmError::Invalid(e.to_string())
            } else {
                LlmError::Status {
                    status,
                    message: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
                }
            }
        })?;
        if !status.is_success() {
            let message = value
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no message")
                .to_string();
            return Err(LlmError::Status { status, message });
        }
        if value.pointer("/choices/0/message").is_none() {
            return Err(LlmError::Invalid("no choices[0].message".into()));
        }
        Ok(value)
    }
}

/// `choices[0].message` of a chat completion.
pub(crate) fn first_message(completion: &Value) -> &Value {
    completion
        .pointer("/choices/0/message")
        .unwrap_or(&Value::Null)
}
