//! Every metric the request path records, one helper each (names, help texts and buckets
//! live in `plano-common/src/metrics.rs`; `docs/metrics.md` says what each means).
//!
//! The metrics recorded on every request use handles registered once: per provider when
//! the runtime is built (start and every reload, [`ProviderMetrics`]), per route the first
//! time it is served ([`http_response`]), once per process for the overhead. Registering by name and labels on each call
//! allocated the label strings and hashed and looked up the key every time.

use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use metrics::{Counter, Histogram, counter, histogram};
use plano_common::metrics as m;
use plano_config::Provider;
use rustc_hash::FxHashMap;

use crate::error::AttemptError;
use crate::providers::usage::Usage;

/// One provider's handles for what every request records.
#[derive(Clone)]
pub struct ProviderMetrics {
    attempt_success: Counter,
    upstream_duration: Histogram,
    time_to_first_token: Histogram,
    /// `plano_llm_tokens_total` by kind: input, output, cached_input, reasoning.
    tokens: [Counter; 4],
}

impl ProviderMetrics {
    pub fn new(p: &Provider) -> Self {
        let (name, model) = (p.name.clone(), p.model.clone());
        let token = |kind: &'static str| counter!(m::LLM_TOKENS_TOTAL, "provider" => name.clone(), "model" => model.clone(), "kind" => kind);
        ProviderMetrics {
            attempt_success: counter!(m::LLM_UPSTREAM_REQUESTS_TOTAL, "provider" => name.clone(), "model" => model.clone(), "outcome" => "success"),
            upstream_duration: histogram!(m::LLM_UPSTREAM_DURATION_SECONDS, "provider" => name.clone(), "model" => model.clone()),
            time_to_first_token: histogram!(m::LLM_TIME_TO_FIRST_TOKEN_SECONDS, "provider" => name.clone(), "model" => model.clone()),
            tokens: [
                token("input"),
                token("output"),
                token("cached_input"),
                token("reasoning"),
            ],
        }
    }

    /// Every provider of a config, in its order.
    pub fn for_providers(providers: &[Provider]) -> Vec<Self> {
        providers.iter().map(Self::new).collect()
    }
}

/// One upstream attempt ended with `outcome` (`success` or an [`AttemptError::outcome`]).
pub fn attempt(provider: &Provider, handles: &ProviderMetrics, outcome: &'static str) {
    if outcome == "success" {
        handles.attempt_success.increment(1);
    } else {
        counter!(m::LLM_UPSTREAM_REQUESTS_TOTAL, "provider" => provider.name.clone(), "model" => provider.model.clone(), "outcome" => outcome)
            .increment(1);
    }
}

/// An attempt from sending it until its body ended (streams: the last event), or until
/// it failed.
pub fn upstream_duration(handles: &ProviderMetrics, elapsed: Duration) {
    handles.upstream_duration.record(elapsed.as_secs_f64());
}

/// A started stream ended with an error event instead of its end: `reason` is
/// `upstream_error` (the provider broke off or sent garbage) or `timeout`.
pub fn stream_broken(provider: &Provider, reason: &'static str) {
    counter!(m::LLM_STREAMS_BROKEN_TOTAL, "provider" => provider.name.clone(), "reason" => reason)
        .increment(1);
}

/// A stream's first upstream event, `elapsed` after the request was received.
pub fn time_to_first_token(handles: &ProviderMetrics, elapsed: Duration) {
    handles.time_to_first_token.record(elapsed.as_secs_f64());
}

/// The tokens an answer used, by kind (kinds with none are not touched).
pub fn tokens(handles: &ProviderMetrics, usage: &Usage) {
    let counts = [
        usage.input,
        usage.output,
        usage.cached_input,
        usage.reasoning,
    ];
    for (counter, n) in handles.tokens.iter().zip(counts) {
        if n > 0 {
            counter.increment(n);
        }
    }
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
    static OVERHEAD: LazyLock<Histogram> =
        LazyLock::new(|| histogram!(m::OVERHEAD_SECONDS, "component" => "egress"));
    OVERHEAD.record(elapsed.as_secs_f64());
}

/// A route's handles: its request counters by method and status class, and its duration
/// histograms by status class (a few each; found by a short scan).
#[derive(Default)]
struct RouteMetrics {
    requests: RwLock<Vec<((&'static str, &'static str), Counter)>>,
    durations: RwLock<Vec<(&'static str, Histogram)>>,
}

/// FxHash: looked up twice per request, with keys from our own config (SipHash's
/// flooding resistance buys nothing there).
type Routes = FxHashMap<Box<str>, FxHashMap<Box<str>, Arc<RouteMetrics>>>;

/// Listener name → route template (a fixed set: the router's paths and `unmatched`) →
/// handles. Process-wide like the recorder they belong to, which `plano_common::runtime::
/// Context::new` installs before any listener serves.
static ROUTES: LazyLock<RwLock<Routes>> = LazyLock::new(|| RwLock::new(FxHashMap::default()));

fn route_metrics(listener: &str, route: &str) -> Arc<RouteMetrics> {
    let found = ROUTES
        .read()
        .ok()
        .and_then(|map| map.get(listener).and_then(|r| r.get(route)).cloned());
    if let Some(r) = found {
        return r;
    }
    match ROUTES.write() {
        Ok(mut map) => map
            .entry(listener.into())
            .or_default()
            .entry(route.into())
            .or_default()
            .clone(),
        Err(_) => Arc::default(),
    }
}

/// Count an answered request now and time it until its body ends: the duration
/// (`plano_http_request_duration_seconds`) runs from the request received until the
/// response body ended (streams: the last event) or the client went away. Labels as on
/// the edge: `component`, `listener`, `route` (+ `method` on the counter), `status_class`.
pub fn http_response(
    res: axum::response::Response,
    listener: &str,
    route: &str,
    method: &http::Method,
    started: tokio::time::Instant,
) -> http::Response<TimedBody> {
    let handles = route_metrics(listener, route);
    let method = m::method_label(method);
    let class = m::status_class(res.status().as_u16());
    plano_common::metrics::cached_handle(&handles.requests, (method, class), || {
        counter!(m::HTTP_REQUESTS_TOTAL, "component" => "egress", "listener" => listener.to_string(), "route" => route.to_string(), "method" => method, "status_class" => class)
    })
    .increment(1);
    let duration = plano_common::metrics::cached_handle(
        &handles.durations,
        class,
        || histogram!(m::HTTP_REQUEST_DURATION_SECONDS, "component" => "egress", "listener" => listener.to_string(), "route" => route.to_string(), "status_class" => class),
    );
    res.map(|inner| TimedBody {
        inner,
        started,
        duration,
    })
}

/// A response body that records the request's duration when it is dropped: after its
/// end was sent, or when the connection went away.
pub struct TimedBody {
    inner: axum::body::Body,
    started: tokio::time::Instant,
    duration: Histogram,
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
        self.duration.record(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str, needles: &[&str]) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(prefix) && needles.iter().all(|n| l.contains(n)))
    }

    #[test]
    fn cached_handles_record_under_the_providers_labels() {
        let prom = plano_common::metrics::install("egress");
        let yaml = "version: v0.4.0\nmodel_providers:\n  - model: openai/record-handles-a\n  - model: openai/record-handles-b\n";
        let config = plano_config::load_str(yaml, None, &|_| None).unwrap();
        let handles = ProviderMetrics::for_providers(&config.providers);
        let b = &config.providers[1];
        attempt(b, &handles[1], "success");
        attempt(b, &handles[1], "success");
        attempt(b, &handles[1], "timeout");
        tokens(
            &handles[1],
            &Usage {
                input: 7,
                output: 5,
                ..Usage::default()
            },
        );
        upstream_duration(&handles[1], Duration::from_millis(3));
        let text = prom.render();
        let b_name = format!("provider=\"{}\"", b.name);
        let count = |prefix, needles: &[&str]| {
            line(&text, prefix, needles)
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_string)
        };
        assert_eq!(
            count(
                m::LLM_UPSTREAM_REQUESTS_TOTAL,
                &[&b_name, "outcome=\"success\""]
            )
            .as_deref(),
            Some("2")
        );
        assert_eq!(
            count(
                m::LLM_UPSTREAM_REQUESTS_TOTAL,
                &[&b_name, "outcome=\"timeout\""]
            )
            .as_deref(),
            Some("1")
        );
        assert_eq!(
            count(m::LLM_TOKENS_TOTAL, &[&b_name, "kind=\"input\""]).as_deref(),
            Some("7")
        );
        assert_eq!(
            count(m::LLM_TOKENS_TOTAL, &[&b_name, "kind=\"output\""]).as_deref(),
            Some("5")
        );
        // Kinds without tokens, and the other provider, recorded nothing.
        assert_eq!(
            count(m::LLM_TOKENS_TOTAL, &[&b_name, "kind=\"reasoning\""]).as_deref(),
            Some("0")
        );
        let a_name = format!("provider=\"{}\"", config.providers[0].name);
        assert_eq!(
            count(
                m::LLM_UPSTREAM_REQUESTS_TOTAL,
                &[&a_name, "outcome=\"success\""]
            )
            .as_deref(),
            Some("0")
        );
        assert!(
            line(
                &text,
                "plano_llm_upstream_duration_seconds_count",
                &[&b_name]
            )
            .is_some_and(|l| l.ends_with(" 1")),
            "{text}"
        );
    }
}
