//! `type: mcp` filters: a tool on an MCP server, called over the streamable HTTP transport
//! (JSON-RPC 2.0, MCP revisions 2025-03-26 and 2025-06-18).
//!
//! A session starts with `initialize` (our protocol version, no capabilities, `clientInfo`)
//! and `notifications/initialized`; the `Mcp-Session-Id` the server returns (if any) and
//! the negotiated `MCP-Protocol-Version` are sent on every later request. The session is
//! shared by all requests through this filter. A 404 on a request that carried a session
//! id means the server dropped the session: we initialise again, once, and retry.
//!
//! Each filter call is `tools/call` with `name` = the filter's `tool` and `arguments:
//! {"body": <the JSON>, "path": <request path>}` (nothing else: tools may validate their
//! arguments strictly, so the direction is not sent; give each direction its own tool). The server may answer with one JSON
//! message or an SSE stream; in a stream we read until the response with our id.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ::http::header::{self, HeaderName, HeaderValue};
use ::http::{Method, Request, Response, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use plano_config::Filter;
use serde_json::{Value, json};

use super::http::error_chain;
use super::{FilterCtx, FilterRunner, MAX_FILTER_BODY_BYTES, Outcome, bounded};
use crate::sse::SseDecoder;

/// The revision we ask for; servers may answer with an older one they support.
pub const PROTOCOL_VERSION: &str = "2025-06-18";
const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
const PROTOCOL_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// Status given to the client when a tool answers `isError: true`.
pub const BLOCK_STATUS: StatusCode = StatusCode::BAD_REQUEST;

/// One MCP server's session as this process knows it.
pub(crate) struct Session {
    url: url::Url,
    state: tokio::sync::Mutex<Option<Arc<Established>>>,
}

struct Established {
    id: Option<HeaderValue>,
    protocol: HeaderValue,
}

enum RpcError {
    /// 404 on a request that carried a session id.
    SessionExpired,
    Failed(String),
}

impl Session {
    pub(crate) fn new(url: url::Url) -> Self {
        Self {
            url,
            state: tokio::sync::Mutex::new(None),
        }
    }

    async fn established(
        &self,
        runner: &FilterRunner,
        ctx: &FilterCtx<'_>,
    ) -> Result<Arc<Established>, String> {
        // Held across `initialize` so that concurrent first requests start one session.
        let mut state = self.state.lock().await;
        if let Some(e) = state.as_ref() {
            return Ok(e.clone());
        }
        let e = Arc::new(initialize(runner, &self.url, ctx).await?);
        *state = Some(e.clone());
        Ok(e)
    }

    /// Drop `stale`, unless another request already replaced it.
    async fn forget(&self, stale: &Arc<Established>) {
        let mut state = self.state.lock().await;
        if state.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, stale)) {
            *state = None;
        }
    }
}

pub(super) async fn call(
    runner: &FilterRunner,
    session: &Session,
    filter: &Filter,
    ctx: &FilterCtx<'_>,
    body: &Bytes,
) -> Outcome {
    let body: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Outcome::Failed(format!("the body to filter is not JSON ({e})")),
    };
    let params = json!({
        "name": filter.tool,
        "arguments": {"body": body, "path": ctx.path},
    });
    for attempt in 0..2 {
        let est = match session.established(runner, ctx).await {
            Ok(e) => e,
            Err(reason) => return Outcome::Failed(reason),
        };
        match request(runner, &session.url, Some(&est), ctx, "tools/call", &params).await {
            Ok(result) => return interpret(&result),
            Err(RpcError::SessionExpired) if attempt == 0 => {
                tracing::info!(filter = %filter.id, "MCP session expired; initialising a new one");
                session.forget(&est).await;
            }
            Err(RpcError::SessionExpired) => {
                return Outcome::Failed(
                    "its MCP session expired again right after initialising".into(),
                );
            }
            Err(RpcError::Failed(reason)) => return Outcome::Failed(reason),
        }
    }
    Outcome::Failed("its MCP session could not be established".into())
}

/// A `tools/call` result as a filter outcome.
fn interpret(result: &Value) -> Outcome {
    let texts = || {
        result
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| c.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|c| c.get("text").and_then(Value::as_str))
    };
    if result.get("isError").and_then(Value::as_bool) == Some(true) {
        let message: Vec<&str> = texts().collect();
        let message = message.join("\n");
        return Outcome::Blocked {
            status: BLOCK_STATUS,
            message: bounded(if message.trim().is_empty() {
                "the tool reported an error".into()
            } else {
                message
            }),
        };
    }
    if let Some(structured) = result.get("structuredContent").filter(|v| !v.is_null()) {
        return Outcome::Pass(Some(Bytes::from(structured.to_string())));
    }
    match texts().next() {
        Some(text) => match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => Outcome::Pass(Some(Bytes::copy_from_slice(text.as_bytes()))),
            Err(e) => Outcome::Failed(format!("its tool result text is not JSON ({e})")),
        },
        None => Outcome::Pass(None),
    }
}

async fn initialize(
    runner: &FilterRunner,
    url: &url::Url,
    ctx: &FilterCtx<'_>,
) -> Result<Established, String> {
    let params = json!({
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "plano", "version": env!("CARGO_PKG_VERSION")},
    });
    let id = runner.next_rpc_id.fetch_add(1, Ordering::Relaxed);
    let message = json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": params});
    let res = post(runner, url, None, ctx, &message)
        .await
        .map_err(|e| match e {
            RpcError::Failed(r) => r,
            RpcError::SessionExpired => "`initialize` answered 404".into(),
        })?;
    let session_id = res.headers().get(SESSION_ID).cloned();
    let result = response(res, id).await.map_err(|e| match e {
        RpcError::Failed(r) => format!("`initialize`: {r}"),
        RpcError::SessionExpired => "`initialize` answered 404".into(),
    })?;
    let protocol = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .and_then(|v| HeaderValue::from_str(v).ok())
        .unwrap_or(HeaderValue::from_static(PROTOCOL_VERSION));
    let est = Established {
        id: session_id,
        protocol,
    };
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let res = post(runner, url, Some(&est), ctx, &note)
        .await
        .map_err(|e| match e {
            RpcError::Failed(r) => format!("`notifications/initialized`: {r}"),
            RpcError::SessionExpired => "`notifications/initialized` answered 404".into(),
        })?;
    // 202 with no body is the rule; drain whatever came so the connection is reusable.
    let _ = Limited::new(res.into_body(), MAX_FILTER_BODY_BYTES)
        .collect()
        .await;
    Ok(est)
}

async fn request(
    runner: &FilterRunner,
    url: &url::Url,
    est: Option<&Established>,
    ctx: &FilterCtx<'_>,
    method: &str,
    params: &Value,
) -> Result<Value, RpcError> {
    let id = runner.next_rpc_id.fetch_add(1, Ordering::Relaxed);
    let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let res = post(runner, url, est, ctx, &message).await?;
    response(res, id).await.map_err(|e| match e {
        RpcError::Failed(r) => RpcError::Failed(format!("`{method}`: {r}")),
        other => other,
    })
}

async fn post(
    runner: &FilterRunner,
    url: &url::Url,
    est: Option<&Established>,
    ctx: &FilterCtx<'_>,
    message: &Value,
) -> Result<Response<Incoming>, RpcError> {
    let uri = url
        .as_str()
        .parse()
        .map_err(|e| RpcError::Failed(format!("invalid URL: {e}")))?;
    let mut req = Request::new(Full::new(Bytes::from(message.to_string())));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    h.insert(crate::request_id::X_REQUEST_ID, ctx.request_id.clone());
    for trace in ["traceparent", "tracestate"] {
        if let Some(v) = ctx.headers.get(trace) {
            h.insert(trace, v.clone());
        }
    }
    // When tracing is on, the filter call's own span replaces the client's context.
    crate::telemetry::inject_current(h);
    if let Some(est) = est {
        if let Some(id) = &est.id {
            h.insert(SESSION_ID, id.clone());
        }
        h.insert(PROTOCOL_HEADER, est.protocol.clone());
    }
    let res = runner
        .client
        .request(req)
        .await
        .map_err(|e| RpcError::Failed(format!("cannot be reached: {}", error_chain(&e))))?;
    let status = res.status();
    if status == StatusCode::NOT_FOUND && est.is_some_and(|e| e.id.is_some()) {
        return Err(RpcError::SessionExpired);
    }
    if !status.is_success() {
        return Err(RpcError::Failed(format!("answered {status}")));
    }
    Ok(res)
}

/// The `result` of the JSON-RPC response with `id`, from a JSON or SSE answer.
async fn response(res: Response<Incoming>, id: u64) -> Result<Value, RpcError> {
    let sse = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    let message = if sse {
        from_sse(res.into_body(), id).await?
    } else {
        let bytes = Limited::new(res.into_body(), MAX_FILTER_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| RpcError::Failed(format!("answer could not be read: {e}")))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| RpcError::Failed(format!("answer is not JSON ({e})")))?;
        let found = match value {
            Value::Array(batch) => batch.into_iter().find(|m| is_response_to(m, id)),
            m if is_response_to(&m, id) => Some(m),
            _ => None,
        };
        found.ok_or_else(|| RpcError::Failed(format!("answer holds no response with id {id}")))?
    };
    if let Some(err) = message.get("error") {
        let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
        let text = err.get("message").and_then(Value::as_str).unwrap_or("");
        return Err(RpcError::Failed(bounded(format!(
            "JSON-RPC error {code}: {text}"
        ))));
    }
    message
        .get("result")
        .cloned()
        .ok_or_else(|| RpcError::Failed("response has neither result nor error".into()))
}

fn is_response_to(message: &Value, id: u64) -> bool {
    message.get("id") == Some(&Value::from(id))
        && (message.get("result").is_some() || message.get("error").is_some())
}

/// Read an SSE answer until the response with `id`; other messages (server notifications,
/// progress) are skipped. The rest of the stream is dropped.
async fn from_sse(mut body: Incoming, id: u64) -> Result<Value, RpcError> {
    let mut decoder = SseDecoder::new(MAX_FILTER_BODY_BYTES);
    let bad = |e: crate::sse::SseError| RpcError::Failed(format!("SSE answer: {e}"));
    loop {
        while let Some(event) = decoder.next_event().map_err(bad)? {
            if let Ok(m) = serde_json::from_str::<Value>(&event.data)
                && is_response_to(&m, id)
            {
                return Ok(m);
            }
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    decoder.push(data);
                }
            }
            Some(Err(e)) => {
                return Err(RpcError::Failed(format!("SSE answer cut: {e}")));
            }
            None => break,
        }
    }
    if let Some(event) = decoder.finish().map_err(bad)?
        && let Ok(m) = serde_json::from_str::<Value>(&event.data)
        && is_response_to(&m, id)
    {
        return Ok(m);
    }
    Err(RpcError::Failed(format!(
        "SSE answer ended without the response with id {id}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_become_outcomes() {
        let structured = interpret(
            &json!({"content": [{"type": "text", "text": "{\"a\":1}"}], "structuredContent": {"a": 2}}),
        );
        assert!(matches!(structured, Outcome::Pass(Some(b)) if b == "{\"a\":2}"));
        let text = interpret(&json!({"content": [{"type": "text", "text": "{\"a\":1}"}]}));
        assert!(matches!(text, Outcome::Pass(Some(b)) if b == "{\"a\":1}"));
        assert!(matches!(
            interpret(&json!({"content": []})),
            Outcome::Pass(None)
        ));
        let blocked =
            interpret(&json!({"isError": true, "content": [{"type": "text", "text": "no PII"}]}));
        assert!(
            matches!(blocked, Outcome::Blocked { status, message } if status == 400 && message == "no PII")
        );
        let not_json = interpret(&json!({"content": [{"type": "text", "text": "hello"}]}));
        assert!(matches!(not_json, Outcome::Failed(_)));
    }
}
