//! A scripted mock filter server, on a real socket: `type: http` filters at any path, and
//! an MCP streamable-HTTP server at `/mcp` (tool name free) with session ids.
//!
//! By default a call answers with the body after replacing every `from` with `to` in its
//! JSON text (see [`MockFilter::start`]); pushed [`FilterReply`]s script the next answers.
//! Every request is recorded; MCP `initialize` and `tools/call` are counted, and
//! [`MockFilter::expire_sessions`] makes the server forget its sessions (the next call
//! with an old id gets 404, as the MCP spec says).

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The next answer of the mock filter.
#[derive(Debug, Clone)]
pub enum FilterReply {
    /// HTTP: this status and raw body.
    Status(u16, String),
    /// HTTP or MCP: the default answer after this delay.
    Slow(Duration),
    /// MCP: a `tools/call` result with `isError: true` and this text.
    McpIsError(String),
    /// MCP: the default result, sent as an SSE stream (a progress notification first).
    McpSse,
    /// MCP: a JSON-RPC error.
    McpRpcError(i64, String),
}

/// A request the mock filter received.
#[derive(Debug, Clone)]
pub struct FilterRequest {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

struct Inner {
    from: String,
    to: String,
    script: Mutex<VecDeque<FilterReply>>,
    requests: Mutex<Vec<FilterRequest>>,
    sessions: Mutex<HashSet<String>>,
    initializes: AtomicUsize,
    tool_calls: AtomicUsize,
}

#[derive(Clone)]
pub struct MockFilter {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl MockFilter {
    /// Start on 127.0.0.1:0; by default each call replaces `from` with `to` in the body.
    pub async fn start(from: &str, to: &str) -> anyhow::Result<Self> {
        let inner = Arc::new(Inner {
            from: from.into(),
            to: to.into(),
            script: Mutex::default(),
            requests: Mutex::default(),
            sessions: Mutex::default(),
            initializes: AtomicUsize::new(0),
            tool_calls: AtomicUsize::new(0),
        });
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/mcp", post(mcp))
            .route("/{*path}", post(http_filter))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, inner })
    }

    /// `http://127.0.0.1:PORT` (append a path for an `http` filter, `/mcp` for MCP).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push(&self, reply: FilterReply) {
        if let Ok(mut s) = self.inner.script.lock() {
            s.push_back(reply);
        }
    }

    pub fn requests(&self) -> Vec<FilterRequest> {
        self.inner
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// MCP `initialize` requests received.
    pub fn initializes(&self) -> usize {
        self.inner.initializes.load(Ordering::SeqCst)
    }

    /// MCP `tools/call` requests answered (with a known session).
    pub fn tool_calls(&self) -> usize {
        self.inner.tool_calls.load(Ordering::SeqCst)
    }

    /// Forget every MCP session: calls with an old session id now get 404.
    pub fn expire_sessions(&self) {
        if let Ok(mut s) = self.inner.sessions.lock() {
            s.clear();
        }
    }
}

impl Inner {
    fn record(&self, path: &str, headers: &HeaderMap, body: &Value) {
        if let Ok(mut r) = self.requests.lock() {
            r.push(FilterRequest {
                path: path.into(),
                headers: headers.clone(),
                body: body.clone(),
            });
        }
    }

    fn next(&self) -> Option<FilterReply> {
        self.script.lock().ok().and_then(|mut s| s.pop_front())
    }

    fn transform(&self, body: &Value) -> Value {
        let text = body.to_string().replace(&self.from, &self.to);
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

async fn http_filter(
    State(inner): State<Arc<Inner>>,
    uri: http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    inner.record(uri.path(), &headers, &body);
    match inner.next() {
        Some(FilterReply::Status(code, text)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, text).into_response();
        }
        Some(FilterReply::Slow(d)) => tokio::time::sleep(d).await,
        _ => {}
    }
    json_response(&inner.transform(&body), None)
}

async fn mcp(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    inner.record("/mcp", &headers, &message);
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let session = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let known = |s: &Option<String>| {
        s.as_ref()
            .is_some_and(|s| inner.sessions.lock().is_ok_and(|set| set.contains(s)))
    };
    match message.get("method").and_then(Value::as_str) {
        Some("initialize") => {
            let n = inner.initializes.fetch_add(1, Ordering::SeqCst) + 1;
            let sid = format!("session-{n}");
            if let Ok(mut s) = inner.sessions.lock() {
                s.insert(sid.clone());
            }
            let result = json!({
                "protocolVersion": message.pointer("/params/protocolVersion").cloned().unwrap_or(json!("2025-06-18")),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "mock-filter", "version": "1"},
            });
            json_response(
                &json!({"jsonrpc": "2.0", "id": id, "result": result}),
                Some(&sid),
            )
        }
        Some("notifications/initialized") if known(&session) => {
            StatusCode::ACCEPTED.into_response()
        }
        Some("tools/call") if known(&session) => {
            inner.tool_calls.fetch_add(1, Ordering::SeqCst);
            let body = message
                .pointer("/params/arguments/body")
                .cloned()
                .unwrap_or(Value::Null);
            let text = inner.transform(&body).to_string();
            let ok = json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": text}]}});
            match inner.next() {
                Some(FilterReply::McpIsError(text)) => json_response(
                    &json!({"jsonrpc": "2.0", "id": id, "result": {"isError": true, "content": [{"type": "text", "text": text}]}}),
                    None,
                ),
                Some(FilterReply::McpRpcError(code, text)) => json_response(
                    &json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": text}}),
                    None,
                ),
                Some(FilterReply::McpSse) => {
                    let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}});
                    let sse = format!(
                        "event: message\ndata: {progress}\n\nevent: message\ndata: {ok}\n\n"
                    );
                    let mut res = Response::new(Body::from(sse));
                    res.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/event-stream"),
                    );
                    res
                }
                Some(FilterReply::Slow(d)) => {
                    tokio::time::sleep(d).await;
                    json_response(&ok, None)
                }
                _ => json_response(&ok, None),
            }
        }
        // A request for a session we do not (or no longer) know.
        Some(_) if session.is_some() => StatusCode::NOT_FOUND.into_response(),
        _ => StatusCode::BAD_REQUEST.into_response(),
    }
}

fn json_response(v: &Value, session: Option<&str>) -> Response {
    let mut res = Response::new(Body::from(v.to_string()));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(s) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        res.headers_mut().insert("mcp-session-id", s);
    }
    res
}
