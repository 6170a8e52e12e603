//! Phase 5 of the request path: on `agent` and `prompt` listeners the edge answers chat
//! completions itself, by routing to an agent (`agents.rs`) or through prompt targets
//! (`prompt_targets.rs`). Every other request, and every request on an `edge` listener,
//! goes on to the egress unchanged.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Response, Uri};
use plano_config::{Config, Listener, ListenerKind};
use serde_json::{Map, Value};

use crate::body::Inner;
use crate::forward::ClientInfo;
use crate::llm::Llm;
use crate::state::Edge;

/// Who answers a request on this listener, when the edge does not simply forward it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Agents,
    PromptTargets,
}

pub(crate) fn owner(listener: &Listener, config: &Config, route: &str) -> Option<Owner> {
    if route != "/v1/chat/completions" {
        return None;
    }
    match listener.kind {
        ListenerKind::Agent if !listener.agents.is_empty() => Some(Owner::Agents),
        ListenerKind::Prompt if !config.prompt_targets.is_empty() => Some(Owner::PromptTargets),
        _ => None,
    }
}

/// One chat request being routed by the edge.
pub(crate) struct RouteCtx<'a> {
    pub edge: &'a Edge,
    pub config: &'a Config,
    pub listener: &'a Listener,
    pub request_id: &'a HeaderValue,
    /// The client's headers (its edge key already removed).
    pub headers: &'a HeaderMap,
    pub uri: &'a Uri,
    pub client: &'a ClientInfo,
    /// The listener timeout, counted from when the request arrived.
    pub deadline: tokio::time::Instant,
    pub body: Map<String, Value>,
}

/// When the listener timeout ends; a timeout too large for the clock means no deadline
/// in practice (a year), never a panic.
pub(crate) fn deadline(started: std::time::Instant, timeout: Duration) -> tokio::time::Instant {
    let started = tokio::time::Instant::from_std(started);
    started
        .checked_add(timeout)
        .or_else(|| started.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(started)
}

/// What phase 5 answered, and where it went (the access log's `upstream`).
pub(crate) struct Routed {
    pub response: Response<Inner>,
    pub upstream: &'static str,
}

impl RouteCtx<'_> {
    pub(crate) fn remaining(&self) -> Duration {
        self.deadline
            .saturating_duration_since(tokio::time::Instant::now())
    }

    pub(crate) fn llm(&self) -> Llm<'_> {
        Llm {
            client: &self.edge.client,
            egress: &self.config.egress.url,
            headers: crate::calls::call_headers(self.headers, self.request_id, true),
        }
    }

    /// Whether the client asked for a stream.
    pub(crate) fn streaming(&self) -> bool {
        self.body
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    pub(crate) fn messages(&self) -> &[Value] {
        self.body
            .get("messages")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absurd_timeout_is_not_a_panic() {
        let now = std::time::Instant::now();
        assert!(deadline(now, Duration::MAX) > tokio::time::Instant::from_std(now));
        assert_eq!(
            deadline(now, Duration::from_secs(5)),
            tokio::time::Instant::from_std(now) + Duration::from_secs(5)
        );
    }
}
