//! `guard-filter`: a small guardrail for Plano's `type: http` filters (example in
//! `deploy/examples/guard/`).
//!
//! - On requests (`x-plano-filter-direction: input`) it blocks with 400 when a user message
//!   (chat `messages`, Anthropic `messages`, Responses `input`) matches a `--block` pattern,
//!   and otherwise answers 204 (keep the body).
//! - On answers (`output`, and each streamed event: `output_event`) it replaces every
//!   match of a `--redact` pattern in any string of the JSON with `[REDACTED]` (200 with the
//!   new body), or answers 204 when nothing matched.
//!
//! A marker split across two streamed events is not seen whole, so it is not redacted.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Parser;
use http::{HeaderMap, StatusCode, header};
use regex::Regex;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "Example guard filter for Plano: block prompts, redact answers")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// Block a request whose user message matches this regex (repeatable; in the
    /// environment, several separated by `;`).
    #[arg(
        long = "block",
        env = "GUARD_BLOCK",
        value_delimiter = ';',
        default_value = r"(?i)ignore (all )?(the )?previous instructions"
    )]
    block: Vec<Regex>,
    /// Replace matches of this regex in answers with `[REDACTED]` (repeatable; in the
    /// environment, several separated by `;`). Default: `SECRET-…` tokens and card-like
    /// numbers (13 to 16 digits, spaces or dashes allowed).
    #[arg(
        long = "redact",
        env = "GUARD_REDACT",
        value_delimiter = ';',
        default_values = [r"SECRET-\w+", r"\b(?:\d[ -]?){12,15}\d\b"]
    )]
    redact: Vec<Regex>,
}

struct Guard {
    block: Vec<Regex>,
    redact: Vec<Regex>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let guard = Arc::new(Guard {
        block: args.block,
        redact: args.redact,
    });
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(async move {
            let app = Router::new()
                .route("/{*path}", post(filter))
                .with_state(guard.clone());
            let listener = tokio::net::TcpListener::bind(args.listen).await?;
            eprintln!(
                "guard-filter listening on http://{} (block: {:?}; redact: {:?})",
                listener.local_addr()?,
                guard.block.iter().map(Regex::as_str).collect::<Vec<_>>(),
                guard.redact.iter().map(Regex::as_str).collect::<Vec<_>>(),
            );
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
            Ok(())
        })
}

async fn filter(State(guard): State<Arc<Guard>>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(mut body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let direction = headers
        .get("x-plano-filter-direction")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("input");
    if direction == "input" {
        let mut prompt = Vec::new();
        user_text(&body, &mut prompt);
        for pattern in &guard.block {
            if prompt.iter().any(|t| pattern.is_match(t)) {
                eprintln!("blocked a request: pattern `{pattern}`");
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("the prompt matches the blocked pattern `{pattern}`"),
                );
            }
        }
        return StatusCode::NO_CONTENT.into_response();
    }
    if redact(&mut body, &guard.redact) {
        let mut res = body.to_string().into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        return res;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Text the user wrote: `messages[role=user].content` (string or parts), or Responses
/// `input` (string, or items with `role: user`).
fn user_text<'a>(body: &'a Value, out: &mut Vec<&'a str>) {
    let items = body
        .get("messages")
        .or_else(|| body.get("input"))
        .unwrap_or(&Value::Null);
    match items {
        Value::String(s) => out.push(s),
        Value::Array(items) => {
            for item in items {
                if item.get("role").and_then(Value::as_str) == Some("user") {
                    strings(item.get("content").unwrap_or(&Value::Null), out);
                }
            }
        }
        _ => {}
    }
}

fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// Redact every string in `v`; true when something changed.
fn redact(v: &mut Value, patterns: &[Regex]) -> bool {
    match v {
        Value::String(s) => {
            let mut changed = false;
            for p in patterns {
                if p.is_match(s) {
                    *s = p.replace_all(s, "[REDACTED]").into_owned();
                    changed = true;
                }
            }
            changed
        }
        Value::Array(a) => a.iter_mut().fold(false, |acc, v| redact(v, patterns) | acc),
        Value::Object(o) => o
            .values_mut()
            .fold(false, |acc, v| redact(v, patterns) | acc),
        _ => false,
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    let mut res = (status, json!({"error": {"message": message}}).to_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    res
}
