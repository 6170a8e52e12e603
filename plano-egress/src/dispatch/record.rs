//! Every metric the request path records, one helper each (names, help texts and buckets
//! live in `plano-common/src/metrics.rs`; `docs/metrics.md` says what each means).

use std::time::Duration;

use metrics::{counter, histogram};
use plano_common::metrics as m;
use plano_config::Provider;

use crate::error::AttemptError;

/// One upstream attempt ended with `outcome` (`success` or an [`AttemptError::outcome`]).
pub fn attempt(provider: &Provider, outcome: &'static str) {
    counter!(m::LLM_UPSTREAM_REQUESTS_TOTAL, "provider" => provider.name.clone(), "model" => provider.model.clone(), "outcome" => outcome)
        .increment(1);
}

/// An attempt from sending it until its body ended (streams: the last event), or until
/// it failed.
pub fn upstream_duration(provider: &Provider, elapsed: Duration) {
    histogram!(m::LLM_UPSTREAM_DURATION_SECONDS, "provider" => provider.name.clone(), "model" => provider.model.clone())
        .record(elapsed.as_secs_f64());
}

/// A started stream ended with an error event instead of its end: `reason` is
/// `upstream_error` (the provider broke off or sent garbage) or `timeout`.
pub fn stream_broken(provider: &Provider, reason: &'static str) {
    counter!(m::LLM_STREAMS_BROKEN_TOTAL, "provider" => provider.name.clone(), "reason" => reason)
        .increment(1);
}

/// A stream's first upstream event, `elapsed` after the request was received.
pub fn time_to_first_token(provider: &Provider, elapsed: Duration) {
    histogram!(m::LLM_TIME_TO_FIRST_TOKEN_SECONDS, "provider" => provider.name.clone(), "model" => provider.model.clone())
        .record(elapsed.as_secs_f64());
}

/// The same provider is tried again after `failure`.
pub fn retry(provider: &Provider, failure: &AttemptError) {
    counter!(m::LLM_RETRIES_TOTAL, "provider" => provider.name.clone(), "reason" => failure.outcome())
        .increment(1);
}

/// The request moves on from one provider to the next candidate.
pub fn failover(from: &Provider, to: &Provider) {
    counter!(m::LLM_FAILOVERS_TOTAL, "from" => from.name.clone(), "to" => to.name.clone())
        .increment(1);
}

/// A provider hint header matched no configured model (selection ignored it).
pub fn hint_miss(header: &'static str) {
    counter!(m::LLM_PROVIDER_HINT_MISSES_TOTAL, "header" => header).increment(1);
}

/// The proxy's own time for a request (the `x-plano-overhead-ms` header).
pub fn overhead(elapsed: Duration) {
    histogram!(m::OVERHEAD_SECONDS, "component" => "egress").record(elapsed.as_secs_f64());
}

/// Count an answered request now and time it until its body ends: the duration
/// (`plano_http_request_duration_seconds`) runs from the request received until the
/// response body ended (streams: the last event) or the client went away.
pub fn http_response(
    res: axum::response::Response,
    route: String,
    method: &http::Method,
    started: tokio::time::Instant,
) -> axum::response::Response {
    let class = m::status_class(res.status().as_u16());
    counter!(m::HTTP_REQUESTS_TOTAL, "component" => "egress", "route" => route.clone(), "method" => m::method_label(method), "status_class" => class)
        .increment(1);
    let (parts, body) = res.into_parts();
    let timed = TimedBody {
        inner: body,
        started,
        route,
    };
    axum::response::Response::from_parts(parts, axum::body::Body::new(timed))
}

/// A response body that records the request's duration when it is dropped: after its
/// end was sent, or when the connection went away.
struct TimedBody {
    inner: axum::body::Body,
    started: tokio::time::Instant,
    route: String,
}

impl http_body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        histogram!(m::HTTP_REQUEST_DURATION_SECONDS, "component" => "egress", "route" => std::mem::take(&mut self.route))
            .record(self.started.elapsed().as_secs_f64());
    }
}
