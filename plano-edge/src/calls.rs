//! Calls the edge makes on its own behalf (to the egress, agents and prompt-target
//! endpoints): JSON requests with the forwarding headers, bounded reads of answers, and the
//! client's request body read as JSON. Each caller maps [`CallError`] (in `error.rs`) to its own status.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use plano_common::errors::{ApiShape, error_chain};
use plano_common::http_client::PooledBody;
use serde_json::Value;

use crate::body::{BoxError, Inner, ResponseBody};
use crate::error::{CallError, EdgeError};
use crate::forward::Client;

/// Largest answer the edge reads whole from an LLM, an agent error or an endpoint.
pub(crate) const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Client headers carried on the edge's own calls: tracing, and the client's credentials
/// (a `passthrough_auth` provider needs them; listeners with `auth` have already removed
/// the edge key).
const CARRIED: &[&str] = &["authorization", "x-api-key", "traceparent", "tracestate"];

type ClientKey = (Duration, Option<std::path::PathBuf>);

/// Clients for calls with their own settings (prompt-target endpoints: their connect
/// timeout, and the CA path of the config in force), one per distinct setting, each
/// pooling its connections.
#[derive(Default)]
pub struct ClientCache(std::sync::Mutex<std::collections::HashMap<ClientKey, Client>>);

impl ClientCache {
    pub(crate) fn get(
        &self,
        builder: &plano_common::http_client::HttpClientBuilder,
    ) -> Result<Client, plano_common::http_client::ClientSetupError> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(&builder.key()) {
            return Ok(c.clone());
        }
        let c = crate::forward::client(builder)?;
        map.insert(builder.key(), c.clone());
        Ok(c)
    }
}

/// Headers for a call made for the client: the carried ones (without the client's
/// credentials unless `credentials`), the request id, JSON.
pub(crate) fn call_headers(
    client: &HeaderMap,
    request_id: &HeaderValue,
    credentials: bool,
) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in CARRIED {
        if !credentials && matches!(*name, "authorization" | "x-api-key") {
            continue;
        }
        for v in client.get_all(*name) {
            out.append(HeaderName::from_static(name), v.clone());
        }
    }
    out.insert(plano_common::request_id::X_REQUEST_ID, request_id.clone());
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out
}

/// A POST of `body` to `uri` with `headers`.
pub(crate) fn post(
    uri: &str,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Request<Inner>, CallError> {
    build(http::Method::POST, uri, headers, body)
}

pub(crate) fn build(
    method: http::Method,
    uri: &str,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Request<Inner>, CallError> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(ResponseBody::full(body))
        .map_err(|e| CallError::Build(e.to_string()))?;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Send and wait for the response head, at most `limit`, in a client span named
/// `{operation} {target}` whose context goes out as `traceparent`.
pub(crate) async fn send(
    client: &Client,
    mut req: Request<Inner>,
    limit: Duration,
    operation: &'static str,
    target: &str,
) -> Result<Response<PooledBody>, CallError> {
    use plano_common::telemetry;
    let span = telemetry::client_span(operation, target);
    telemetry::inject(&span, req.headers_mut());
    let sent = tracing::Instrument::instrument(
        tokio::time::timeout(limit, client.request(req)),
        span.clone(),
    )
    .await;
    match sent {
        Ok(Ok(res)) => {
            telemetry::record_client_status(&span, res.status());
            Ok(res)
        }
        Ok(Err(e)) => {
            telemetry::record_error(&span, "unreachable");
            Err(CallError::Unreachable(error_chain(&e)))
        }
        Err(_) => {
            telemetry::record_error(&span, "timeout");
            Err(CallError::Timeout(limit))
        }
    }
}

/// Read a whole answer body, at most [`MAX_ANSWER_BYTES`] and `limit` long.
pub(crate) async fn read_body(
    res: Response<PooledBody>,
    limit: Duration,
) -> Result<Bytes, CallError> {
    let body = http_body_util::Limited::new(res.into_body(), MAX_ANSWER_BYTES);
    match tokio::time::timeout(limit, body.collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(CallError::TooLarge(MAX_ANSWER_BYTES))
        }
        Ok(Err(e)) => Err(CallError::Body(e.to_string())),
        Err(_) => Err(CallError::Timeout(limit)),
    }
}

/// The client's request body as a JSON object (400 when it is not one).
pub(crate) fn parse_request_json(
    bytes: &[u8],
) -> Result<serde_json::Map<String, Value>, EdgeError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(EdgeError::NotAnObject),
        Err(e) => Err(EdgeError::InvalidJson(e.to_string())),
    }
}

/// A streamed upstream body as the edge's response body type.
pub(crate) fn stream_body(res: Response<PooledBody>) -> Response<Inner> {
    let (mut parts, body) = res.into_parts();
    crate::forward::strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(
        parts,
        body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync(),
    )
}

/// A JSON answer the edge builds itself.
pub(crate) fn json_response(
    status: StatusCode,
    body: Bytes,
    content_type: &'static str,
) -> Response<Inner> {
    let mut res = Response::new(ResponseBody::full(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// An error answer for a chat completions client (the routed listeners' only API).
pub(crate) fn error_response(e: &EdgeError) -> Response<Inner> {
    json_response(e.status(), e.body(ApiShape::OpenAi), "application/json")
}

/// The text of a chat message's `content` (a string, or the text parts of an array).
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn carried_headers_only() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer k"));
        h.insert("cookie", HeaderValue::from_static("s=1"));
        h.insert("traceparent", HeaderValue::from_static("00-a-b-01"));
        let out = call_headers(&h, &HeaderValue::from_static("rid"), true);
        assert_eq!(out["authorization"], "Bearer k");
        let bare = call_headers(&h, &HeaderValue::from_static("rid"), false);
        assert!(bare.get("authorization").is_none());
        assert_eq!(bare["traceparent"], "00-a-b-01");
        assert_eq!(out["traceparent"], "00-a-b-01");
        assert_eq!(out["x-request-id"], "rid");
        assert!(out.get("cookie").is_none());
    }

    #[test]
    fn content_text_of_parts() {
        assert_eq!(content_text(&json!("hi")), "hi");
        assert_eq!(
            content_text(
                &json!([{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}])
            ),
            "a\nb"
        );
        assert_eq!(content_text(&Value::Null), "");
    }
}
