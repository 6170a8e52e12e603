//! Filter chains: the `filters` a listener (or an agent) names in `input_filters` /
//! `output_filters`, run in order, each seeing the previous one's output.
//!
//! Both binaries use this runner (the edge on inbound listeners and agents, the egress on
//! its model listener). What a filter may do, in one place:
//!
//! - **replace** the body: an `http` filter answers 200 with JSON, an `mcp` tool returns
//!   the new JSON in `structuredContent` or `content[0].text`;
//! - **keep** it: `http` 204, or an `mcp` result with no content;
//! - **block**: `http` 4xx (the client gets that status), `mcp` `isError: true` (400); the
//!   client's error body names the filter and carries its message;
//! - **fail** (5xx, timeout, connect error, invalid JSON, JSON-RPC error): the chain fails
//!   closed (502, or 504 on timeout) unless the filter has `fail_open: true`, in which case
//!   its input passes on unchanged and the failure is logged and counted.
//!
//! Transport details are in `filters/http.rs` and `filters/mcp.rs`; the operator's view
//! is `docs/filters.md`.

mod http;
mod mcp;
pub mod output;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ::http::{HeaderMap, HeaderValue, StatusCode};
use bytes::Bytes;
use http_body_util::Full;
use plano_config::{Config, Filter, FilterKind};

use crate::errors::{ApiError, ApiShape};
use crate::metrics::{FILTER_BLOCKS_TOTAL, FILTER_DURATION_SECONDS, FILTER_FAILURES_TOTAL};

/// The largest answer we read from a filter (a replaced body or an MCP result).
pub const MAX_FILTER_BODY_BYTES: usize = 16 * 1024 * 1024;
/// How much of a filter's own message reaches the client when it blocks.
pub const MAX_BLOCK_MESSAGE_CHARS: usize = 1024;

type Client = crate::http_client::HttpsClient<Full<Bytes>>;

/// What a filter call knows about the request it filters.
pub struct FilterCtx<'a> {
    /// The client's request path (`/v1/chat/completions`); `http` filters are called at
    /// their `url` plus this path.
    pub path: &'a str,
    /// The client's request headers (credentials are never forwarded; see `http.rs`).
    pub headers: &'a HeaderMap,
    pub request_id: &'a HeaderValue,
}

/// Which body a filter sees; sent to `http` filters as `x-plano-filter-direction` and used
/// as the `direction` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A request body, before it is forwarded.
    Input,
    /// A whole (non-streamed) response body.
    Output,
    /// The data of one streamed event.
    OutputEvent,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
            Direction::OutputEvent => "output_event",
        }
    }
}

/// Why a chain did not produce a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The filter refused the body on purpose.
    #[error("blocked by filter `{filter}` ({status}): {message}")]
    Blocked {
        filter: String,
        status: StatusCode,
        message: String,
    },
    /// The filter could not give an answer and does not fail open.
    #[error("filter `{filter}` failed: {reason}")]
    Failed {
        filter: String,
        reason: String,
        timed_out: bool,
    },
    /// The body to filter is not JSON (filters only ever see JSON).
    #[error("the body is not valid JSON: {reason}")]
    InvalidBody { reason: String },
}

impl FilterError {
    /// The answer the client gets, in its API's error shape.
    pub fn to_api_error(&self, shape: ApiShape) -> ApiError {
        let err = match self {
            FilterError::Blocked {
                filter,
                status,
                message,
            } => ApiError::new(
                *status,
                "filter_blocked",
                format!("blocked by filter `{filter}`: {message}"),
            ),
            FilterError::Failed {
                filter,
                reason,
                timed_out,
            } => ApiError::new(
                if *timed_out {
                    StatusCode::GATEWAY_TIMEOUT
                } else {
                    StatusCode::BAD_GATEWAY
                },
                if *timed_out {
                    "filter_timeout"
                } else {
                    "filter_failed"
                },
                format!("filter `{filter}` failed: {reason}"),
            ),
            FilterError::InvalidBody { reason } => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the request body is not valid JSON: {reason}"),
            ),
        };
        err.with_shape(shape)
    }

    /// The filter that stopped the chain, when one did.
    pub fn filter(&self) -> Option<&str> {
        match self {
            FilterError::Blocked { filter, .. } | FilterError::Failed { filter, .. } => {
                Some(filter)
            }
            FilterError::InvalidBody { .. } => None,
        }
    }
}

/// How one filter call ended, before the chain applies `fail_open`.
#[derive(Debug)]
enum Outcome {
    /// New body; `None` keeps the input.
    Pass(Option<Bytes>),
    Blocked {
        status: StatusCode,
        message: String,
    },
    Failed(String),
}

/// Runs filter chains. One per process: it holds the pooled HTTP client and the MCP
/// sessions (keyed by filter id and URL, so a reload that moves a filter starts afresh).
pub struct FilterRunner {
    client: Client,
    sessions: Mutex<HashMap<String, Arc<mcp::Session>>>,
    next_rpc_id: AtomicU64,
}

impl FilterRunner {
    /// A runner whose client is built by `client` (connect timeout, extra CA roots);
    /// filters are called over HTTP/1.1.
    pub fn new(
        client: &crate::http_client::HttpClientBuilder,
    ) -> Result<Self, crate::http_client::ClientSetupError> {
        Ok(Self {
            client: client.clone().http2(false).build()?,
            sessions: Mutex::new(HashMap::new()),
            next_rpc_id: AtomicU64::new(1),
        })
    }

    /// Run `ids` (resolved in `config`) in order on a JSON request body; each sees the
    /// previous one's output.
    pub async fn run_input(
        &self,
        config: &Config,
        ids: &[String],
        ctx: &FilterCtx<'_>,
        body: Bytes,
    ) -> Result<Bytes, FilterError> {
        if ids.is_empty() {
            return Ok(body);
        }
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
            return Err(FilterError::InvalidBody {
                reason: e.to_string(),
            });
        }
        self.run(config, ids, ctx, body, Direction::Input).await
    }

    /// The same on a whole response body.
    pub async fn run_output(
        &self,
        config: &Config,
        ids: &[String],
        ctx: &FilterCtx<'_>,
        body: Bytes,
    ) -> Result<Bytes, FilterError> {
        self.run(config, ids, ctx, body, Direction::Output).await
    }

    /// The same on one streamed event's data (the JSON of its `data:` lines).
    pub async fn run_output_event(
        &self,
        config: &Config,
        ids: &[String],
        ctx: &FilterCtx<'_>,
        data: Bytes,
    ) -> Result<Bytes, FilterError> {
        self.run(config, ids, ctx, data, Direction::OutputEvent)
            .await
    }

    async fn run(
        &self,
        config: &Config,
        ids: &[String],
        ctx: &FilterCtx<'_>,
        mut body: Bytes,
        direction: Direction,
    ) -> Result<Bytes, FilterError> {
        for id in ids {
            let Some(filter) = config.filter(id) else {
                // Validation rejects unknown ids; this is a reload race at worst.
                return Err(FilterError::Failed {
                    filter: id.clone(),
                    reason: "not configured in `filters`".into(),
                    timed_out: false,
                });
            };
            let started = Instant::now();
            let outcome =
                tokio::time::timeout(filter.timeout, self.call(filter, direction, ctx, &body))
                    .await;
            metrics::histogram!(
                FILTER_DURATION_SECONDS,
                "filter" => filter.id.clone(),
                "direction" => direction.as_str(),
            )
            .record(started.elapsed().as_secs_f64());
            let (reason, timed_out) = match outcome {
                Ok(Outcome::Pass(Some(new))) => {
                    body = new;
                    continue;
                }
                Ok(Outcome::Pass(None)) => continue,
                Ok(Outcome::Blocked { status, message }) => {
                    metrics::counter!(
                        FILTER_BLOCKS_TOTAL,
                        "filter" => filter.id.clone(),
                        "direction" => direction.as_str(),
                    )
                    .increment(1);
                    tracing::info!(filter = %filter.id, direction = direction.as_str(), request_id = ctx.request_id.to_str().unwrap_or("-"), status = status.as_u16(), "filter blocked");
                    return Err(FilterError::Blocked {
                        filter: filter.id.clone(),
                        status,
                        message,
                    });
                }
                Ok(Outcome::Failed(reason)) => (reason, false),
                Err(_) => (
                    format!("no answer within its timeout of {:?}", filter.timeout),
                    true,
                ),
            };
            let outcome = if filter.fail_open { "open" } else { "closed" };
            metrics::counter!(
                FILTER_FAILURES_TOTAL,
                "filter" => filter.id.clone(),
                "direction" => direction.as_str(),
                "outcome" => outcome,
            )
            .increment(1);
            tracing::warn!(filter = %filter.id, direction = direction.as_str(), request_id = ctx.request_id.to_str().unwrap_or("-"), %reason, fail_open = filter.fail_open, "filter failed");
            if !filter.fail_open {
                return Err(FilterError::Failed {
                    filter: filter.id.clone(),
                    reason,
                    timed_out,
                });
            }
        }
        Ok(body)
    }

    async fn call(
        &self,
        filter: &Filter,
        direction: Direction,
        ctx: &FilterCtx<'_>,
        body: &Bytes,
    ) -> Outcome {
        match filter.kind {
            FilterKind::Http => http::call(&self.client, filter, direction, ctx, body).await,
            FilterKind::Mcp => {
                let session = self.session(filter);
                mcp::call(self, &session, filter, ctx, body).await
            }
        }
    }

    fn session(&self, filter: &Filter) -> Arc<mcp::Session> {
        let key = format!("{} {}", filter.id, filter.url);
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sessions
            .entry(key)
            .or_insert_with(|| Arc::new(mcp::Session::new(filter.url.clone())))
            .clone()
    }
}

/// A filter's refusal text, from its JSON error body or its raw text, bounded.
fn block_message(status: StatusCode, body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let pick = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Null => None,
                other => Some(other.to_string()),
            };
            v.pointer("/error/message")
                .and_then(pick)
                .or_else(|| v.get("error").filter(|e| e.is_string()).and_then(pick))
                .or_else(|| v.get("message").and_then(pick))
                .or_else(|| v.get("detail").and_then(pick))
        });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let text = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("refused by the filter")
            .to_string()
    } else {
        text
    };
    bounded(text)
}

fn bounded(text: String) -> String {
    match text.char_indices().nth(MAX_BLOCK_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests;
