//! A small recording HTTP server for the services the edge calls besides LLMs: agents
//! (OpenAI-compatible chat endpoints) and prompt-target endpoints.
//!
//! Every request is recorded. The answer is the next scripted [`Canned`] if any, else what
//! the server's default function returns for the request ([`MockHttp::agent`] answers chat
//! completions naming itself, streamed when asked).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One answer.
#[derive(Debug, Clone)]
pub enum Canned {
    Json(u16, Value),
    Text(u16, String),
    /// SSE `data:` payloads, `gap` apart.
    Sse(Vec<String>, Duration),
    /// SSE: the `first` payloads, then nothing until `gate` is notified, then `rest` (a
    /// test sees the first events arrive while the server still holds the others).
    SseGated {
        first: Vec<String>,
        gate: Arc<tokio::sync::Notify>,
        rest: Vec<String>,
    },
    /// The inner answer after a delay (a slow or stalled service).
    Delayed(Duration, Box<Canned>),
}

type Default = Arc<dyn Fn(&Seen) -> Canned + Send + Sync>;

struct Inner {
    seen: Mutex<Vec<Seen>>,
    script: Mutex<VecDeque<Canned>>,
    default: Default,
}

#[derive(Clone)]
pub struct MockHttp {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl MockHttp {
    /// Start on 127.0.0.1 with an OS-chosen port, answering with `default` when nothing is
    /// scripted.
    pub async fn start(
        default: impl Fn(&Seen) -> Canned + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let inner = Arc::new(Inner {
            seen: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            default: Arc::new(default),
        });
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, inner })
    }

    /// An agent called `name`: chat completions whose content is `answer from {name}`; a
    /// stream of three chunks (`answer `, `from `, `{name}`) `gap` apart when asked.
    pub async fn agent(name: &str, gap: Duration) -> anyhow::Result<Self> {
        let name = name.to_string();
        Self::start(move |seen| {
            let stream = seen.json()["stream"].as_bool().unwrap_or(false);
            if stream {
                Canned::Sse(agent_stream(&name), gap)
            } else {
                Canned::Json(200, agent_completion(&name))
            }
        })
        .await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push(&self, c: Canned) {
        if let Ok(mut s) = self.inner.script.lock() {
            s.push_back(c);
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

pub fn agent_completion(name: &str) -> Value {
    json!({
        "id": "chatcmpl-agent", "object": "chat.completion", "created": 1_700_000_000, "model": name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("answer from {name}")}, "finish_reason": "stop"}],
    })
}

pub fn agent_stream(name: &str) -> Vec<String> {
    let chunk = |content: &str, finish: Value| {
        json!({"id": "chatcmpl-agent", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": name,
               "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]})
        .to_string()
    };
    vec![
        chunk("answer ", Value::Null),
        chunk("from ", Value::Null),
        chunk(name, json!("stop")),
        "[DONE]".into(),
    ]
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method,
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers,
        body,
    };
    let canned = inner
        .script
        .lock()
        .ok()
        .and_then(|mut s| s.pop_front())
        .unwrap_or_else(|| (inner.default)(&seen));
    if let Ok(mut s) = inner.seen.lock() {
        s.push(seen);
    }
    let mut canned = canned;
    while let Canned::Delayed(d, next) = canned {
        tokio::time::sleep(d).await;
        canned = *next;
    }
    let status =
        |code: u16| StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match canned {
        Canned::Json(code, v) => (
            status(code),
            [(header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
            .into_response(),
        Canned::Text(code, t) => {
            (status(code), [(header::CONTENT_TYPE, "text/plain")], t).into_response()
        }
        Canned::Sse(events, gap) => {
            let stream = futures_util::stream::unfold(
                (events.into_iter(), false),
                move |(mut it, started)| async move {
                    if started && !gap.is_zero() {
                        tokio::time::sleep(gap).await;
                    }
                    it.next()
                        .map(|ev| (Ok::<_, std::io::Error>(event(&ev)), (it, true)))
                },
            );
            sse_response(Body::from_stream(stream))
        }
        Canned::SseGated { first, gate, rest } => {
            let stream = futures_util::stream::unfold(
                (first.into_iter(), Some(gate), rest.into_iter()),
                |(mut first, mut gate, mut rest)| async move {
                    if let Some(ev) = first.next() {
                        return Some((Ok::<_, std::io::Error>(event(&ev)), (first, gate, rest)));
                    }
                    if let Some(g) = gate.take() {
                        g.notified().await;
                    }
                    rest.next().map(|ev| (Ok(event(&ev)), (first, gate, rest)))
                },
            );
            sse_response(Body::from_stream(stream))
        }
        Canned::Delayed(..) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn event(payload: &str) -> Bytes {
    Bytes::from(format!("data: {payload}\n\n"))
}

fn sse_response(body: Body) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/event-stream")],
        body,
    )
        .into_response()
}
