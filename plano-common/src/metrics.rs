//! The metric catalogue: every metric either binary exports is named, described and given
//! its buckets here, once. Handlers only increment/record using these names.
//!
//! Labels are bounded: route templates (never raw paths), provider names and models as
//! configured (never what a client typed), status classes (`2xx`…), fixed outcome words.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS_TOTAL: &str = "plano_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "plano_http_request_duration_seconds";
pub const LLM_UPSTREAM_REQUESTS_TOTAL: &str = "plano_llm_upstream_requests_total";
pub const LLM_UPSTREAM_DURATION_SECONDS: &str = "plano_llm_upstream_duration_seconds";
pub const LLM_TIME_TO_FIRST_TOKEN_SECONDS: &str = "plano_llm_time_to_first_token_seconds";
pub const LLM_TOKENS_TOTAL: &str = "plano_llm_tokens_total";
pub const LLM_RETRIES_TOTAL: &str = "plano_llm_retries_total";
pub const LLM_FAILOVERS_TOTAL: &str = "plano_llm_failovers_total";
pub const LLM_PROVIDER_HINT_MISSES_TOTAL: &str = "plano_llm_provider_hint_misses_total";
pub const LLM_DROPPED_TOOLS_TOTAL: &str = "plano_llm_dropped_tools_total";
pub const LLM_STREAMS_BROKEN_TOTAL: &str = "plano_llm_streams_broken_total";
pub const RATELIMIT_REJECTIONS_TOTAL: &str = "plano_ratelimit_rejections_total";
pub const RATELIMIT_BACKEND_ERRORS_TOTAL: &str = "plano_ratelimit_backend_errors_total";
pub const OVERHEAD_SECONDS: &str = "plano_overhead_seconds";
pub const FILTER_DURATION_SECONDS: &str = "plano_filter_duration_seconds";
pub const FILTER_BLOCKS_TOTAL: &str = "plano_filter_blocks_total";
pub const FILTER_FAILURES_TOTAL: &str = "plano_filter_failures_total";
pub const AGENT_SELECTIONS_TOTAL: &str = "plano_agent_selections_total";
pub const PEER_UP: &str = "plano_peer_up";
pub const CONFIG_RELOADS_TOTAL: &str = "plano_config_reloads_total";
pub const TLS_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS: &str =
    "plano_tls_certificate_expiry_timestamp_seconds";
pub const BUILD_INFO: &str = "plano_build_info";
pub const CIRCUIT_OPEN: &str = "plano_llm_circuit_open";
pub const ACTIVE_REQUESTS: &str = "plano_active_requests";
pub const TRACE_SPANS_EXPORTED_TOTAL: &str = "plano_trace_spans_exported_total";
pub const TRACE_SPANS_DROPPED_TOTAL: &str = "plano_trace_spans_dropped_total";
pub const ACCESS_LOG_LINES_DROPPED_TOTAL: &str = "plano_access_log_lines_dropped_total";
// Routing by preference (egress `routing/`).
pub const ROUTING_DECISIONS_TOTAL: &str = "plano_routing_decisions_total";
pub const ROUTING_FALLBACKS_TOTAL: &str = "plano_routing_fallbacks_total";
pub const ROUTING_CACHE_LOOKUPS_TOTAL: &str = "plano_routing_cache_lookups_total";
pub const ROUTING_ROUTER_DURATION_SECONDS: &str = "plano_routing_router_duration_seconds";
pub const ROUTING_METRICS_REFRESHES_TOTAL: &str = "plano_routing_metrics_refreshes_total";
// `endpoints.<name>.prefix_affinity` (egress `replicas.rs`).
pub const ENDPOINT_REPLICAS: &str = "plano_endpoint_replicas";
pub const ENDPOINT_RESOLUTIONS_TOTAL: &str = "plano_endpoint_resolutions_total";
pub const ENDPOINT_REPLICA_SKIPS_TOTAL: &str = "plano_endpoint_replica_skips_total";
pub const CONNECTIONS_OPEN: &str = "plano_connections_open";
pub const CONNECTIONS_REJECTED_TOTAL: &str = "plano_connections_rejected_total";
pub const CONNECTIONS_CLOSED_TOTAL: &str = "plano_connections_closed_total";

/// A metric handle cached per label set: the handle in `list` for `key`, registered with
/// `make` the first time (so a request records without building label strings; a
/// poisoned lock only costs the cache). Used by both binaries' request metrics.
pub fn cached_handle<K: PartialEq + Copy, H: Clone>(
    list: &std::sync::RwLock<Vec<(K, H)>>,
    key: K,
    make: impl FnOnce() -> H,
) -> H {
    if let Some(h) = list
        .read()
        .ok()
        .and_then(|v| v.iter().find(|(k, _)| *k == key).map(|(_, h)| h.clone()))
    {
        return h;
    }
    let h = make();
    if let Ok(mut v) = list.write()
        && !v.iter().any(|(k, _)| *k == key)
    {
        v.push((key, h.clone()));
    }
    h
}

/// How often the recorder drains recorded histogram samples into its buckets. Without it
/// every observation is kept until `/metrics` is scraped (memory grew ~61 bytes a request
/// with nobody scraping).
pub const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
static UPKEEP_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times the upkeep has run in this process (tests, diagnostics).
pub fn upkeep_runs() -> u64 {
    UPKEEP_RUNS.load(std::sync::atomic::Ordering::Relaxed)
}
pub const STATE_STORAGE_ERRORS_TOTAL: &str = "plano_state_storage_errors_total";
pub const CONVERSATIONS_NOT_STORED_TOTAL: &str = "plano_conversations_not_stored_total";
pub const CONVERSATIONS_EVICTED_TOTAL: &str = "plano_conversations_evicted_total";
pub const CONVERSATIONS_STORED: &str = "plano_conversations_stored";
pub const CONVERSATIONS_STORED_BYTES: &str = "plano_conversations_stored_bytes";

/// Buckets for request-scale latencies (upstream calls, whole requests, TTFT).
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Buckets for the proxy's own overhead: sub-millisecond resolution.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
];
const FILTER_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Status class label for a status code: `2xx`, `4xx`, `5xx`…
/// Methods are client-chosen; only standard ones become label values.
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        _ => "other",
    }
}

pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Install the process-wide Prometheus recorder and describe every metric.
///
/// Call once per process, before serving. Calling again (tests starting several servers in
/// one process) returns a handle to the recorder already installed.
pub fn install(component: &'static str) -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    let handle = HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(OVERHEAD_SECONDS.to_string()),
                OVERHEAD_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(FILTER_DURATION_SECONDS.to_string()),
                    FILTER_BUCKETS,
                )
            })
            .and_then(|b| b.set_buckets(LATENCY_BUCKETS));
        let recorder = match builder {
            Ok(b) => b.build_recorder(),
            // Only empty bucket lists fail; ours are constants, so fall back to summaries.
            Err(_) => PrometheusBuilder::new().build_recorder(),
        };
        let handle = recorder.handle();
        // A second install in the same process (tests) fails harmlessly: the first wins.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        spawn_upkeep(handle.clone());
        handle
    });
    gauge!(
        BUILD_INFO,
        "component" => component,
        "version" => env!("CARGO_PKG_VERSION"),
    )
    .set(1.0);
    handle.clone()
}

/// A plain thread rather than a task: it must outlive any one runtime (tests start many)
/// and it only takes a lock every few seconds.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
                UPKEEP_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the metrics upkeep thread; histogram samples accumulate until /metrics is scraped");
    }
}

fn describe() {
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests answered, by component, listener, route template, method and status class."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from request received until the response body ended (streams: the last event sent, or the client gone), by component, listener, route and status class."
    );
    describe_counter!(
        LLM_UPSTREAM_REQUESTS_TOTAL,
        "Attempts sent to LLM providers, by provider, model and outcome (success, http_4xx, http_5xx, http_429, timeout, connect_error, credentials_error, …)."
    );
    describe_histogram!(
        LLM_UPSTREAM_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of each upstream attempt, from sending it until its body ended (streams: the last event) or it failed, by provider and model."
    );
    describe_histogram!(
        LLM_TIME_TO_FIRST_TOKEN_SECONDS,
        Unit::Seconds,
        "For streams: time from request received to the first upstream event, by provider and model."
    );
    describe_counter!(
        LLM_TOKENS_TOTAL,
        "Tokens reported by providers, by provider, model and kind (input, output, cached_input, reasoning)."
    );
    describe_counter!(
        LLM_RETRIES_TOTAL,
        "Retries of the same provider after a retryable failure, by provider and reason."
    );
    describe_counter!(
        LLM_FAILOVERS_TOTAL,
        "Moves from one provider to the next fallback, by from and to provider."
    );
    describe_counter!(
        LLM_PROVIDER_HINT_MISSES_TOTAL,
        "Requests whose provider hint header matched no configured model (selection went on by the body's model), by header."
    );
    describe_counter!(
        LLM_DROPPED_TOOLS_TOTAL,
        "Hosted tools a translated request was sent without (the provider has no equivalent), by provider and tool family."
    );
    describe_counter!(
        LLM_STREAMS_BROKEN_TOTAL,
        "Streams that ended with an error event after they had started (the upstream broke off, or the listener timeout), by provider and reason."
    );
    describe_counter!(
        RATELIMIT_REJECTIONS_TOTAL,
        "Requests refused with 429 by a configured rate limit, by model and limit kind."
    );
    describe_counter!(
        RATELIMIT_BACKEND_ERRORS_TOTAL,
        "Rate-limit checks that could not reach their storage backend, by backend and policy applied."
    );
    describe_histogram!(
        OVERHEAD_SECONDS,
        Unit::Seconds,
        "Time spent inside the proxy for a request, excluding time waiting on the upstream."
    );
    describe_histogram!(
        FILTER_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of each filter call, by filter id and direction (input, output, output_event)."
    );
    describe_counter!(
        FILTER_BLOCKS_TOTAL,
        "Requests or responses blocked by a filter (4xx or MCP isError), by filter id and direction."
    );
    describe_counter!(
        FILTER_FAILURES_TOTAL,
        "Filter calls that failed (5xx, timeout, unreachable, invalid answer), by filter id, direction and outcome (closed: the client got an error; open: the body passed unchanged)."
    );
    describe_counter!(
        AGENT_SELECTIONS_TOTAL,
        "Requests routed to an agent, by listener, agent and how it was chosen (header, single, llm, default)."
    );
    describe_gauge!(
        PEER_UP,
        "1 when the watched peer (the egress, seen from the edge) reports SERVING, else 0."
    );
    describe_counter!(
        CONFIG_RELOADS_TOTAL,
        "Configuration reload attempts, by outcome (success, invalid, error)."
    );
    describe_gauge!(
        TLS_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "Expiry time (Unix seconds) of the certificate served on each TLS listener."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; labels carry the component and version."
    );
    describe_gauge!(
        CIRCUIT_OPEN,
        "1 while a provider's circuit breaker is open (the provider is skipped), else 0."
    );
    describe_gauge!(
        ACTIVE_REQUESTS,
        "Requests currently being served, by component."
    );
    describe_counter!(
        TRACE_SPANS_EXPORTED_TOTAL,
        "Trace spans the OTLP collector accepted."
    );
    describe_counter!(
        TRACE_SPANS_DROPPED_TOTAL,
        "Trace spans lost, by reason (queue_full, export_failed, export_timeout, shutdown)."
    );
    describe_counter!(
        ACCESS_LOG_LINES_DROPPED_TOTAL,
        "Access-log lines dropped because stderr did not keep up (the line buffer was full)."
    );
    describe_counter!(
        ROUTING_DECISIONS_TOTAL,
        "Routing decisions for requests that were routing targets, by route (a configured route name, `inline` for a request's own preferences, `none` when no route fit) and source (router, cache, session)."
    );
    describe_counter!(
        ROUTING_FALLBACKS_TOTAL,
        "Requests served by their requested model because routing failed, by reason (router_unreachable, router_timeout, router_status, router_bad_answer, router_nonsense, unknown_route, router_not_configured)."
    );
    describe_counter!(
        ROUTING_CACHE_LOOKUPS_TOTAL,
        "Routing cache lookups, by cache (decision: conversation → route; session: conversation → pinned model) and outcome (hit, miss)."
    );
    describe_histogram!(
        ROUTING_ROUTER_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of each call to the router model, failed ones included."
    );
    describe_counter!(
        ROUTING_METRICS_REFRESHES_TOTAL,
        "Fetches of model_metrics_sources, by type (cost, latency) and outcome (ok, error; on error the last values stay)."
    );
    describe_gauge!(
        ENDPOINT_REPLICAS,
        "Addresses a prefix_affinity endpoint's host resolved to at its last resolution, by endpoint."
    );
    describe_counter!(
        ENDPOINT_RESOLUTIONS_TOTAL,
        "Resolutions of a prefix_affinity endpoint's host, by endpoint and outcome (ok, error; on error the last addresses stay)."
    );
    describe_counter!(
        ENDPOINT_REPLICA_SKIPS_TOTAL,
        "Requests sent past a replica of a prefix_affinity endpoint because it could not be connected to, by provider."
    );
    describe_gauge!(
        CONNECTIONS_OPEN,
        "Client connections currently open, by component and listener."
    );
    describe_counter!(
        CONNECTIONS_REJECTED_TOTAL,
        "Client connections refused at accept because the listener was at its connection cap with no idle connection to shed, by component and listener."
    );
    describe_counter!(
        CONNECTIONS_CLOSED_TOTAL,
        "Client connections the proxy closed, by component, listener and reason (header_timeout: request head or TLS handshake not received in time; idle_timeout: keep-alive idle; shed: closed while idle to admit a new connection at the cap)."
    );
    describe_counter!(
        STATE_STORAGE_ERRORS_TOTAL,
        "Conversation store calls that failed (unreachable, timed out, refused), by backend and operation (get, put, cleanup, migrate)."
    );
    describe_counter!(
        CONVERSATIONS_NOT_STORED_TOTAL,
        "Responses answers whose conversation was not stored (the answer was still sent), by backend and reason (too_large, unavailable)."
    );
    describe_counter!(
        CONVERSATIONS_EVICTED_TOTAL,
        "Stored conversations removed before being asked for again, by backend and reason (expired, capacity, bytes)."
    );
    describe_gauge!(
        CONVERSATIONS_STORED,
        "Conversations held by the in-memory store."
    );
    describe_gauge!(
        CONVERSATIONS_STORED_BYTES,
        Unit::Bytes,
        "Bytes (serialised JSON) held by the in-memory store; bounded by state_storage.max_total_bytes."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(999), "5xx");
    }

    /// Fails without the upkeep timer: nothing else calls `run_upkeep` unless `/metrics`
    /// is scraped.
    #[test]
    fn upkeep_runs_without_a_scrape() {
        let _ = install("test");
        let start = upkeep_runs();
        let deadline = std::time::Instant::now() + UPKEEP_INTERVAL * 3;
        while upkeep_runs() == start {
            assert!(
                std::time::Instant::now() < deadline,
                "the metrics upkeep did not run within {:?}",
                UPKEEP_INTERVAL * 3
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    #[test]
    fn render_has_build_info() {
        let h = install("test");
        let text = h.render();
        assert!(text.contains("plano_build_info"), "{text}");
    }
}
