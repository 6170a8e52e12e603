//! OpenTelemetry traces (docs/observability.md).
//!
//! `tracing` spans from Plano's crates become OpenTelemetry spans through a
//! `tracing-opentelemetry` layer (installed by [`crate::logging::init_with`]) and leave the
//! process over OTLP/gRPC. What is here:
//!
//! - [`TraceSettings`]: endpoint, sampling percentage, `span_attributes`, resolved from the
//!   config's `tracing:` section and the environment.
//! - [`Telemetry`]: the tracer provider and a bounded export queue. Spans are queued
//!   without blocking (a full queue drops the span and counts it in
//!   `plano_trace_spans_dropped_total`), a task on the async runtime exports them in
//!   batches with a timeout, and [`Telemetry::shutdown`] flushes what is left. A dead
//!   collector costs requests nothing and holds at most [`QUEUE_CAPACITY`] spans.
//! - W3C trace context: [`extract_parent`] reads `traceparent`/`tracestate` from a request,
//!   [`inject`] writes the span's context into an outgoing request.
//! - [`server_span`] and [`SpanBody`]: the server span of a request, parented to the
//!   client's trace, kept open until the response body ends (streams included).
//! - [`attr`] and the `record_*` helpers: OpenTelemetry GenAI semantic-convention
//!   attributes plus the `llm.*` names Plano's own dashboards use.
//!
//! Never a prompt, a completion or a credential in an attribute: the helpers take numbers,
//! model and provider names; header-derived attributes skip credential-bearing headers.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context as OtelContext, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracerProvider, Span as SdkSpan, SpanData, SpanExporter, SpanProcessor,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::{TRACE_SPANS_DROPPED_TOTAL, TRACE_SPANS_EXPORTED_TOTAL};

/// Where spans go when neither the config nor the environment names a collector (Plano's
/// default too).
pub const DEFAULT_ENDPOINT: &str = "http://localhost:4317";
/// Spans waiting for export; beyond this they are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 2048;
/// Spans per OTLP export request.
pub const MAX_BATCH: usize = 512;
/// A partial batch waits at most this long.
pub const SCHEDULE_DELAY: Duration = Duration::from_secs(1);
/// One export request may take this long; then its spans count as dropped.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the tracing layer needs from the config, resolved against the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// OTLP/gRPC collector, e.g. `http://otel-collector:4317`.
    pub endpoint: String,
    /// Share of new traces recorded, 0 < p ≤ 100. A sampled caller's decision wins
    /// (parent-based): a `traceparent` with the sampled flag is always recorded, one
    /// without never.
    pub sampling_percent: f64,
    pub span_attributes: SpanAttributes,
}

/// `tracing.span_attributes`: extra attributes on every server span.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanAttributes {
    /// Request headers whose name starts with one of these become attributes: the rest of
    /// the name, `-` turned into `.` (`x-acme-tenant-id` with prefix `x-acme-` →
    /// `tenant.id`). Credential-bearing headers never do (see [`is_sensitive_header`]).
    pub header_prefixes: Vec<String>,
    /// `static`: fixed key/value pairs.
    pub static_attributes: Vec<(String, String)>,
}

impl TraceSettings {
    /// Resolve the settings; `None` when tracing is off.
    ///
    /// On when the config has a `tracing:` section or the environment names a collector
    /// (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`, Plano's
    /// `OTEL_TRACING_GRPC_ENDPOINT`); off with `random_sampling: 0` or
    /// `OTEL_SDK_DISABLED=true`. Endpoint: `opentracing_grpc_endpoint`, else those
    /// variables in that order, else [`DEFAULT_ENDPOINT`]. Sampling: `random_sampling`
    /// (percent, capped at 100), default 100.
    pub fn resolve(
        section: Option<&plano_config::TracingConfig>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Self> {
        let span_attributes = SpanAttributes::of(section);
        let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return None;
        }
        let from_env = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .or_else(|| set("OTEL_TRACING_GRPC_ENDPOINT"));
        if section.is_none() && from_env.is_none() {
            return None;
        }
        let endpoint = section
            .and_then(|t| t.opentracing_grpc_endpoint.as_ref())
            .map(|u| u.as_str().trim_end_matches('/').to_string())
            .filter(|e| !e.trim().is_empty())
            .or(from_env)
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let sampling_percent = section
            .and_then(|t| t.random_sampling)
            .map_or(100.0, |p| f64::from(p.min(100)));
        if sampling_percent <= 0.0 {
            return None;
        }
        Some(Self {
            endpoint,
            sampling_percent,
            span_attributes,
        })
    }

    /// The process environment as the lookup for [`TraceSettings::resolve`].
    pub fn process_env(key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// The tracer provider and its export queue. Build it before the async runtime (the
/// logging layer needs its tracer), [`Telemetry::start`] it inside the runtime, and
/// [`Telemetry::shutdown`] it after the server has drained.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    resource: Resource,
    endpoint: String,
    span_attributes: Arc<SpanAttributes>,
    queue: Mutex<Option<mpsc::Receiver<SpanData>>>,
    stop: CancellationToken,
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Telemetry {
    /// The provider for `service_name` (`plano-edge`, `plano-egress`; `OTEL_SERVICE_NAME`
    /// overrides it). Spans queue from now on; nothing is exported before [`start`].
    ///
    /// [`start`]: Telemetry::start
    pub fn new(service_name: &'static str, settings: &TraceSettings) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let ratio = (settings.sampling_percent / 100.0).clamp(0.0, 1.0);
        let root = if ratio >= 1.0 {
            Sampler::AlwaysOn
        } else {
            Sampler::TraceIdRatioBased(ratio)
        };
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service_name);
        }
        let resource = resource
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(root)))
            .with_span_processor(QueueProcessor { tx })
            .with_resource(resource.clone())
            .build();
        Self {
            provider,
            resource,
            endpoint: settings.endpoint.clone(),
            span_attributes: Arc::new(settings.span_attributes.clone()),
            queue: Mutex::new(Some(rx)),
            stop: CancellationToken::new(),
            worker: Mutex::new(None),
        }
    }

    /// The tracer the `tracing-opentelemetry` layer records into.
    pub fn tracer(&self) -> opentelemetry_sdk::trace::Tracer {
        self.provider.tracer("plano")
    }

    /// `span_attributes` for [`server_span`].
    pub fn span_attributes(&self) -> Arc<SpanAttributes> {
        self.span_attributes.clone()
    }

    /// Connect the OTLP/gRPC exporter (lazily: an unreachable collector is retried on each
    /// batch) and spawn the export task on the current runtime. Only the first call does
    /// anything.
    pub fn start(&self) -> anyhow::Result<()> {
        use opentelemetry_otlp::WithExportConfig;
        let Some(rx) = lock(&self.queue).take() else {
            return Ok(());
        };
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(self.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        exporter.set_resource(&self.resource);
        tracing::info!(endpoint = %self.endpoint, "exporting traces over OTLP/gRPC");
        let worker = tokio::spawn(export_loop(exporter, rx, self.stop.clone()));
        *lock(&self.worker) = Some(worker);
        Ok(())
    }

    /// Export what is queued (within `timeout`) and stop the export task. Spans ended
    /// after this are dropped.
    pub async fn shutdown(&self, timeout: Duration) {
        self.stop.cancel();
        let worker = lock(&self.worker).take();
        if let Some(worker) = worker
            && tokio::time::timeout(timeout, worker).await.is_err()
        {
            tracing::warn!(?timeout, "trace export did not finish in time; spans lost");
        }
        let _ = self.provider.shutdown();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Hands ended spans to the export task without ever blocking the caller.
#[derive(Debug)]
struct QueueProcessor {
    tx: mpsc::Sender<SpanData>,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut SdkSpan, _cx: &OtelContext) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.tx.try_send(span) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!(TRACE_SPANS_DROPPED_TOTAL, "reason" => "queue_full").increment(1);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                metrics::counter!(TRACE_SPANS_DROPPED_TOTAL, "reason" => "shutdown").increment(1);
            }
        }
    }

    /// The export task sends on its own schedule; [`Telemetry::shutdown`] is the flush
    /// (it can await the task, which this synchronous hook could only block on).
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Batch spans from `rx` and export them until `stop`, then export what is left.
async fn export_loop<E: SpanExporter>(
    exporter: E,
    mut rx: mpsc::Receiver<SpanData>,
    stop: CancellationToken,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
    let mut tick = tokio::time::interval(SCHEDULE_DELAY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let room = MAX_BATCH - batch.len();
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            n = rx.recv_many(&mut batch, room) => {
                if n == 0 {
                    break;
                }
                if batch.len() < MAX_BATCH {
                    continue;
                }
            }
            _ = tick.tick() => {
                if batch.is_empty() {
                    continue;
                }
            }
        }
        failing = export(&exporter, std::mem::take(&mut batch), failing).await;
    }
    rx.close();
    while let Ok(span) = rx.try_recv() {
        batch.push(span);
        if batch.len() == MAX_BATCH {
            failing = export(&exporter, std::mem::take(&mut batch), failing).await;
        }
    }
    if !batch.is_empty() {
        export(&exporter, batch, failing).await;
    }
    let _ = exporter.shutdown();
}

/// Export one batch; returns whether exporting is failing (logged once per outage).
async fn export<E: SpanExporter>(exporter: &E, batch: Vec<SpanData>, failing: bool) -> bool {
    let n = batch.len() as u64;
    let error = match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(batch)).await {
        Ok(Ok(())) => {
            metrics::counter!(TRACE_SPANS_EXPORTED_TOTAL).increment(n);
            if failing {
                tracing::info!("trace export recovered");
            }
            return false;
        }
        Ok(Err(e)) => {
            metrics::counter!(TRACE_SPANS_DROPPED_TOTAL, "reason" => "export_failed").increment(n);
            e.to_string()
        }
        Err(_) => {
            metrics::counter!(TRACE_SPANS_DROPPED_TOTAL, "reason" => "export_timeout").increment(n);
            format!("no answer within {EXPORT_TIMEOUT:?}")
        }
    };
    if !failing {
        tracing::warn!(error = %error, spans = n, "trace export failed; dropping spans until the collector answers");
    }
    true
}

// ---------------------------------------------------------------------------------------
// W3C trace context

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The caller's trace context (`traceparent`/`tracestate`); empty when absent or invalid.
pub fn extract_parent(headers: &HeaderMap) -> OtelContext {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Write `span`'s trace context into `headers` (replacing any `traceparent`/`tracestate`
/// already there). Does nothing when tracing is off or the span is disabled.
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    let cx = span.context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}

/// [`inject`] with the current span.
pub fn inject_current(headers: &mut HeaderMap) {
    inject(&Span::current(), headers);
}

/// Whether `span` is recorded and exported (tracing on and the trace sampled): work done
/// only for attributes can be skipped when it is not.
pub fn is_recording(span: &Span) -> bool {
    use opentelemetry::trace::TraceContextExt;
    !span.is_disabled() && span.context().span().span_context().is_sampled()
}

/// The OpenTelemetry trace id of `span` as 32 hex digits, when it has one.
pub fn trace_id(span: &Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

// ---------------------------------------------------------------------------------------
// Attributes

/// Attribute names. GenAI names follow the OpenTelemetry semantic conventions
/// (<https://opentelemetry.io/docs/specs/semconv/gen-ai/>); `llm.*` are the names Plano's
/// own traces carry, so dashboards built on them keep working.
pub mod attr {
    pub const GEN_AI_SYSTEM: &str = "gen_ai.system";
    pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
    pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
    pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
    pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
    pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
    pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    /// Seconds, as the semantic conventions' `gen_ai.server.time_to_first_token` metric.
    pub const GEN_AI_TIME_TO_FIRST_TOKEN: &str = "gen_ai.server.time_to_first_token";

    pub const LLM_MODEL: &str = "llm.model";
    pub const LLM_PROVIDER: &str = "llm.provider";
    pub const LLM_IS_STREAMING: &str = "llm.is_streaming";
    /// Milliseconds.
    pub const LLM_TIME_TO_FIRST_TOKEN: &str = "llm.time_to_first_token";
    pub const LLM_USAGE_PROMPT_TOKENS: &str = "llm.usage.prompt_tokens";
    pub const LLM_USAGE_COMPLETION_TOKENS: &str = "llm.usage.completion_tokens";
    pub const LLM_USAGE_TOTAL_TOKENS: &str = "llm.usage.total_tokens";
    pub const LLM_USAGE_CACHED_INPUT_TOKENS: &str = "llm.usage.cached_input_tokens";
    pub const LLM_USAGE_REASONING_TOKENS: &str = "llm.usage.reasoning_tokens";

    pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    pub const URL_PATH: &str = "url.path";
    pub const SERVER_ADDRESS: &str = "server.address";
    pub const PLANO_COMPONENT: &str = "plano.component";
    pub const PLANO_REQUEST_ID: &str = "plano.request_id";
    /// Router-model calls: `routed`, `no_route` or the fallback reason.
    pub const PLANO_ROUTING_OUTCOME: &str = "plano.routing.outcome";
    /// The route the router chose.
    pub const PLANO_ROUTING_ROUTE: &str = "plano.routing.route";
    /// Milliseconds the router call took.
    pub const PLANO_ROUTING_DURATION_MS: &str = "plano.routing.duration_ms";
}

/// The `gen_ai.system` / `gen_ai.provider.name` value for a provider prefix (`openai/…`,
/// `anthropic/…`): the semantic conventions' well-known values where one exists, else the
/// prefix itself.
pub fn gen_ai_system(prefix: &str) -> &str {
    match prefix {
        "openai" => "openai",
        "anthropic" | "claude" => "anthropic",
        "azure_openai" | "azure" => "azure.ai.openai",
        "amazon_bedrock" | "bedrock" => "aws.bedrock",
        "gemini" | "google" => "gcp.gemini",
        "vertex" | "vertex_ai" => "gcp.vertex_ai",
        "mistral" => "mistral_ai",
        "xai" | "grok" => "x_ai",
        other => other,
    }
}

/// What is known when a model call is sent.
#[derive(Debug, Clone, Copy)]
pub struct LlmRequest<'a> {
    /// The provider prefix (`openai`, `anthropic`…).
    pub system: &'a str,
    /// The configured provider name.
    pub provider: &'a str,
    /// The model sent upstream.
    pub model: &'a str,
    /// `chat`, `embeddings`…, when known.
    pub operation: Option<&'a str>,
    pub streaming: bool,
}

/// Record the request side of a model call on `span`.
pub fn record_llm_request(span: &Span, r: &LlmRequest<'_>) {
    // A disabled span (traces off) takes no attributes: skip building their strings.
    if span.is_disabled() {
        return;
    }
    let system = gen_ai_system(r.system).to_string();
    span.set_attribute(attr::GEN_AI_SYSTEM, system.clone());
    span.set_attribute(attr::GEN_AI_PROVIDER_NAME, system);
    span.set_attribute(attr::GEN_AI_REQUEST_MODEL, r.model.to_string());
    if let Some(op) = r.operation {
        span.set_attribute(attr::GEN_AI_OPERATION_NAME, op.to_string());
    }
    span.set_attribute(attr::LLM_MODEL, r.model.to_string());
    span.set_attribute(attr::LLM_PROVIDER, r.provider.to_string());
    span.set_attribute(attr::LLM_IS_STREAMING, r.streaming);
}

/// The model the provider says answered.
pub fn record_response_model(span: &Span, model: &str) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute(attr::GEN_AI_RESPONSE_MODEL, model.to_string());
}

/// Token counts as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cached_input: Option<u64>,
    pub reasoning: Option<u64>,
}

fn int(n: u64) -> Value {
    Value::I64(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Record usage (both naming schemes).
pub fn record_usage(span: &Span, u: &Usage) {
    // Traces off: no attributes to build.
    if span.is_disabled() {
        return;
    }
    span.set_attribute(attr::GEN_AI_USAGE_INPUT_TOKENS, int(u.input));
    span.set_attribute(attr::GEN_AI_USAGE_OUTPUT_TOKENS, int(u.output));
    span.set_attribute(attr::LLM_USAGE_PROMPT_TOKENS, int(u.input));
    span.set_attribute(attr::LLM_USAGE_COMPLETION_TOKENS, int(u.output));
    span.set_attribute(
        attr::LLM_USAGE_TOTAL_TOKENS,
        int(u.input.saturating_add(u.output)),
    );
    if let Some(c) = u.cached_input {
        span.set_attribute(attr::LLM_USAGE_CACHED_INPUT_TOKENS, int(c));
    }
    if let Some(r) = u.reasoning {
        span.set_attribute(attr::LLM_USAGE_REASONING_TOKENS, int(r));
    }
}

/// Time from the request to the first streamed event.
pub fn record_time_to_first_token(span: &Span, ttft: Duration) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute(attr::GEN_AI_TIME_TO_FIRST_TOKEN, ttft.as_secs_f64());
    span.set_attribute(
        attr::LLM_TIME_TO_FIRST_TOKEN,
        int(u64::try_from(ttft.as_millis()).unwrap_or(u64::MAX)),
    );
}

/// Why generation stopped (`stop`, `length`, `tool_calls`…), one per choice.
pub fn record_finish_reasons(span: &Span, reasons: &[&str]) {
    if span.is_disabled() {
        return;
    }
    if reasons.is_empty() {
        return;
    }
    let values: Vec<opentelemetry::StringValue> =
        reasons.iter().map(|r| r.to_string().into()).collect();
    span.set_attribute(
        attr::GEN_AI_RESPONSE_FINISH_REASONS,
        Value::Array(values.into()),
    );
}

/// What a model's answer says about itself: the model that answered
/// (`gen_ai.response.model`) and why generation stopped (`gen_ai.response.finish_reasons`).
/// Read from a whole response body or event by event from a stream, in every API shape
/// the egress speaks:
///
/// | API | model | finish reasons |
/// |---|---|---|
/// | chat completions | `model` | `choices[].finish_reason` |
/// | Messages | `model`, stream: `message_start.message.model` | `stop_reason`, stream: `message_delta.delta.stop_reason` |
/// | Responses | `model`, stream: `response.*.response.model` | `incomplete_details.reason`, else `status` |
/// | Converse | — | `stopReason` |
///
/// Only names and short codes are kept, never content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseFacts {
    pub model: Option<String>,
    pub finish_reasons: Vec<String>,
}

/// Longest value kept (a model name or a reason code); longer ones are not recorded.
const MAX_FACT_LEN: usize = 256;

impl ResponseFacts {
    /// The facts of a whole JSON response body (empty when it is not JSON).
    pub fn of_body(body: &[u8]) -> Self {
        let mut facts = Self::default();
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            facts.observe_value(&v);
        }
        facts
    }

    /// One streamed event (`event:` name and `data:`). Only events that can carry a fact
    /// not yet seen are parsed: the first one naming a model, and those with a non-null
    /// finish or stop reason or a final Responses status.
    pub fn observe_event(&mut self, event: Option<&str>, data: &str) {
        let wants_model = self.model.is_none() && data.contains("\"model\"");
        let terminal = matches!(
            event,
            Some("response.completed" | "response.incomplete" | "response.failed")
        ) || has_non_null(data, "\"finish_reason\"")
            || has_non_null(data, "\"stop_reason\"")
            || has_non_null(data, "\"stopReason\"");
        if !(wants_model || terminal) {
            return;
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(data) {
            self.observe_value(&v);
        }
    }

    /// A parsed body, stream chunk or stream event, whatever its API.
    pub fn observe_value(&mut self, v: &serde_json::Value) {
        use serde_json::Value;
        let Some(obj) = v.as_object() else { return };
        // Messages `message_start` and Responses `response.*` events wrap the object.
        let inner = obj
            .get("message")
            .filter(|_| obj.get("type").and_then(Value::as_str) == Some("message_start"))
            .or_else(|| obj.get("response"))
            .and_then(Value::as_object)
            .unwrap_or(obj);
        if self.model.is_none()
            && let Some(m) = inner.get("model").and_then(Value::as_str)
            && !m.is_empty()
            && m.len() <= MAX_FACT_LEN
        {
            self.model = Some(m.to_string());
        }
        if let Some(choices) = inner.get("choices").and_then(Value::as_array) {
            for c in choices {
                if let Some(r) = c.get("finish_reason").and_then(Value::as_str) {
                    self.push_reason(r);
                }
            }
            return;
        }
        let stop = inner
            .get("stop_reason")
            .or_else(|| inner.get("delta").and_then(|d| d.get("stop_reason")))
            .or_else(|| inner.get("stopReason"))
            .and_then(Value::as_str);
        if let Some(r) = stop {
            self.push_reason(r);
            return;
        }
        // A Responses object: only a final one says why it stopped.
        if inner.get("object").and_then(Value::as_str) == Some("response")
            && let Some(status) = inner.get("status").and_then(Value::as_str)
            && matches!(status, "completed" | "incomplete" | "failed" | "cancelled")
        {
            let reason = inner
                .get("incomplete_details")
                .and_then(|d| d.get("reason"))
                .and_then(Value::as_str)
                .unwrap_or(status);
            self.finish_reasons.clear();
            self.push_reason(reason);
        }
    }

    fn push_reason(&mut self, reason: &str) {
        if !reason.is_empty() && reason.len() <= MAX_FACT_LEN && self.finish_reasons.len() < 64 {
            self.finish_reasons.push(reason.to_string());
        }
    }

    /// Set `gen_ai.response.model` and `gen_ai.response.finish_reasons` on `spans` (what
    /// is known; nothing when nothing is).
    pub fn record(&self, spans: &[&Span]) {
        let reasons: Vec<&str> = self.finish_reasons.iter().map(String::as_str).collect();
        for span in spans {
            if let Some(m) = &self.model {
                record_response_model(span, m);
            }
            record_finish_reasons(span, &reasons);
        }
    }
}

/// Whether `key` (quoted) occurs in `data` with a value other than `null`.
fn has_non_null(data: &str, key: &str) -> bool {
    data.match_indices(key).any(|(i, _)| {
        let rest = data[i + key.len()..].trim_start();
        let Some(rest) = rest.strip_prefix(':') else {
            return false;
        };
        !rest.trim_start().starts_with("null")
    })
}

/// Outcome of a router-model call (`routing` client span): `routed`, `no_route`, or the
/// fallback reason (`router_timeout`, `router_nonsense`…, as in
/// `plano_routing_fallbacks_total`).
pub fn record_routing(span: &Span, outcome: &str, route: Option<&str>, duration: Duration) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute(attr::PLANO_ROUTING_OUTCOME, outcome.to_string());
    if let Some(r) = route {
        span.set_attribute(attr::PLANO_ROUTING_ROUTE, r.to_string());
    }
    span.set_attribute(
        attr::PLANO_ROUTING_DURATION_MS,
        int(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)),
    );
    if !matches!(outcome, "routed" | "no_route") {
        record_error(span, outcome);
    }
}

/// Mark `span` as failed with a short description (an error class, never a body).
pub fn record_error(span: &Span, description: &str) {
    span.record("otel.status_code", "error");
    span.set_attribute("error.type", description.to_string());
}

/// Headers that never become attributes, whatever `header_prefixes` says.
pub fn is_sensitive_header(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
    ];
    const PARTS: &[&str] = &["auth", "key", "token", "secret", "password", "cookie"];
    let name = name.to_ascii_lowercase();
    EXACT.contains(&name.as_str()) || PARTS.iter().any(|p| name.contains(p))
}

impl SpanAttributes {
    /// `tracing.span_attributes` of a config's `tracing:` section.
    pub fn of(section: Option<&plano_config::TracingConfig>) -> Self {
        section.map_or_else(Self::default, |t| Self {
            header_prefixes: t.span_attributes.header_prefixes.clone(),
            static_attributes: t
                .span_attributes
                .fixed
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// The attributes for a request with `headers`: `static` first, then matching headers.
    pub fn collect(&self, headers: &HeaderMap) -> Vec<(String, String)> {
        let mut out = self.static_attributes.clone();
        if self.header_prefixes.is_empty() {
            return out;
        }
        for (name, value) in headers {
            let name = name.as_str();
            let Some(prefix) = self
                .header_prefixes
                .iter()
                .find(|p| !p.is_empty() && name.starts_with(&p.to_ascii_lowercase()))
            else {
                continue;
            };
            if is_sensitive_header(name) {
                continue;
            }
            let Ok(value) = value.to_str() else { continue };
            let key = name[prefix.len()..]
                .trim_start_matches('-')
                .replace('-', ".");
            if key.is_empty() {
                continue;
            }
            out.push((key, value.trim().to_string()));
        }
        out
    }

    /// Set the attributes for `headers` on `span`.
    pub fn apply(&self, span: &Span, headers: &HeaderMap) {
        for (k, v) in self.collect(headers) {
            span.set_attribute(k, v);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server spans

/// The server span of a request to `component` (`edge`, `egress`), named
/// `{method} {route}`, parented to the caller's `traceparent` when there is one.
pub fn server_span<B>(
    component: &'static str,
    route: &str,
    req: &Request<B>,
    attributes: &SpanAttributes,
) -> Span {
    let method = req.method().as_str();
    let span = tracing::info_span!(
        "server",
        otel.name = %SpanName { method, route },
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        url.path = %req.uri().path(),
        http.response.status_code = tracing::field::Empty,
        plano.component = component,
    );
    if span.is_disabled() {
        return span;
    }
    if req.headers().contains_key("traceparent") {
        let _ = span.set_parent(extract_parent(req.headers()));
    }
    attributes.apply(&span, req.headers());
    span
}

/// `{method} {route}`, or `{method}` without a route: formatted only when a subscriber
/// records the span (a `format!` on every request cost an allocation even with traces off).
struct SpanName<'a> {
    method: &'a str,
    route: &'a str,
}

impl std::fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.route.is_empty() {
            f.write_str(self.method)
        } else {
            write!(f, "{} {}", self.method, self.route)
        }
    }
}

/// A client span for one outgoing call, named `{operation} {target}`: `operation` is the
/// kind of call (`llm`, `filter`, `agent`, `endpoint`, `routing`), `target` the callee as
/// configured (provider, filter, agent or endpoint name). Inject it into the request with
/// [`inject`] and finish it with [`record_client_status`] / [`record_error`].
pub fn client_span(operation: &'static str, target: &str) -> Span {
    tracing::info_span!(
        "client",
        otel.name = %format_args!("{operation} {target}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        plano.operation = operation,
        plano.target = %target,
        plano.filter.direction = tracing::field::Empty,
    )
}

/// Record the status a callee answered on a client span (4xx and 5xx mark it failed).
pub fn record_client_status(span: &Span, status: http::StatusCode) {
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_client_error() || status.is_server_error() {
        span.record("otel.status_code", "error");
    }
}

/// Record the response status on a server span (5xx marks it failed).
pub fn record_status(span: &Span, status: http::StatusCode) {
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request's span open until the last frame.
    pub struct SpanBody<B> {
        #[pin]
        inner: B,
        span: Option<Span>,
    }
}

impl<B> SpanBody<B> {
    /// `inner`, keeping `span` open (and entered while a frame is polled) until it ends.
    pub fn new(inner: B, span: Span) -> Self {
        Self {
            inner,
            span: Some(span),
        }
    }
}

impl<B: http_body::Body> http_body::Body for SpanBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = match this.span.as_ref() {
            Some(span) => {
                let _entered = span.enter();
                this.inner.poll_frame(cx)
            }
            None => this.inner.poll_frame(cx),
        };
        match &polled {
            Poll::Ready(None) => {
                this.span.take();
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(span) = this.span.take() {
                    record_error(&span, "response_body");
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn section(sampling: Option<u32>, endpoint: Option<&str>) -> plano_config::TracingConfig {
        plano_config::TracingConfig {
            random_sampling: sampling,
            trace_arch_internal: false,
            opentracing_grpc_endpoint: endpoint.and_then(|e| url::Url::parse(e).ok()),
            span_attributes: plano_config::SpanAttributes::default(),
            exporters: Vec::new(),
        }
    }

    #[test]
    fn off_without_a_section_or_an_endpoint_variable() {
        assert_eq!(TraceSettings::resolve(None, &env(&[])), None);
    }

    #[test]
    fn endpoint_order_config_then_variables_then_default() {
        let s = section(Some(100), Some("http://cfg:4317"));
        let vars = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317"),
            ("OTEL_TRACING_GRPC_ENDPOINT", "http://plano:4317"),
        ]);
        let r = |s: Option<&plano_config::TracingConfig>, e: &dyn Fn(&str) -> Option<String>| {
            TraceSettings::resolve(s, e).map(|t| t.endpoint)
        };
        assert_eq!(r(Some(&s), &vars).as_deref(), Some("http://cfg:4317"));
        let no_endpoint = section(Some(100), None);
        assert_eq!(
            r(Some(&no_endpoint), &vars).as_deref(),
            Some("http://otel:4317")
        );
        assert_eq!(
            r(
                Some(&no_endpoint),
                &env(&[("OTEL_TRACING_GRPC_ENDPOINT", "http://plano:4317")])
            )
            .as_deref(),
            Some("http://plano:4317")
        );
        assert_eq!(
            r(Some(&no_endpoint), &env(&[])).as_deref(),
            Some(DEFAULT_ENDPOINT)
        );
        // No section, but a collector in the environment: on, everything sampled.
        let t = TraceSettings::resolve(None, &vars).unwrap();
        assert_eq!(t.endpoint, "http://otel:4317");
        assert!((t.sampling_percent - 100.0).abs() < f64::EPSILON);
    }

    #[test]
    fn sampling_zero_or_sdk_disabled_turns_tracing_off() {
        assert_eq!(
            TraceSettings::resolve(Some(&section(Some(0), None)), &env(&[])),
            None
        );
        assert_eq!(
            TraceSettings::resolve(
                Some(&section(Some(50), None)),
                &env(&[("OTEL_SDK_DISABLED", "true")])
            ),
            None
        );
        let t = TraceSettings::resolve(Some(&section(Some(250), None)), &env(&[])).unwrap();
        assert!((t.sampling_percent - 100.0).abs() < f64::EPSILON);
        let t = TraceSettings::resolve(Some(&section(None, None)), &env(&[])).unwrap();
        assert!((t.sampling_percent - 100.0).abs() < f64::EPSILON);
    }

    #[test]
    fn header_attributes_by_prefix_never_credentials() {
        let attrs = SpanAttributes {
            header_prefixes: vec!["x-acme-".into(), "x-".into()],
            static_attributes: vec![("environment".into(), "prod".into())],
        };
        let mut h = HeaderMap::new();
        h.insert("x-acme-tenant-id", HeaderValue::from_static("t1"));
        h.insert("x-acme-api-key", HeaderValue::from_static("sk-secret"));
        h.insert("x-auth-token", HeaderValue::from_static("secret"));
        h.insert("authorization", HeaderValue::from_static("Bearer sk"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        let mut got = attrs.collect(&h);
        got.sort();
        assert_eq!(
            got,
            vec![
                ("environment".to_string(), "prod".to_string()),
                ("tenant.id".to_string(), "t1".to_string()),
            ]
        );
    }

    #[test]
    fn gen_ai_system_names() {
        assert_eq!(gen_ai_system("openai"), "openai");
        assert_eq!(gen_ai_system("azure_openai"), "azure.ai.openai");
        assert_eq!(gen_ai_system("amazon_bedrock"), "aws.bedrock");
        assert_eq!(gen_ai_system("groq"), "groq");
    }

    #[test]
    fn response_facts_of_every_api_shape() {
        let chat = br#"{"id":"c","object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[{"index":0,"finish_reason":"stop"},{"index":1,"finish_reason":"length"}]}"#;
        let f = ResponseFacts::of_body(chat);
        assert_eq!(f.model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(f.finish_reasons, vec!["stop", "length"]);

        let messages = br#"{"type":"message","model":"claude-3-5-sonnet","stop_reason":"tool_use","content":[]}"#;
        let f = ResponseFacts::of_body(messages);
        assert_eq!(f.model.as_deref(), Some("claude-3-5-sonnet"));
        assert_eq!(f.finish_reasons, vec!["tool_use"]);

        let responses = br#"{"object":"response","model":"gpt-4.1","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"}}"#;
        let f = ResponseFacts::of_body(responses);
        assert_eq!(f.model.as_deref(), Some("gpt-4.1"));
        assert_eq!(f.finish_reasons, vec!["max_output_tokens"]);

        let converse =
            br#"{"output":{"message":{"role":"assistant","content":[]}},"stopReason":"end_turn"}"#;
        let f = ResponseFacts::of_body(converse);
        assert_eq!(f.model, None);
        assert_eq!(f.finish_reasons, vec!["end_turn"]);

        assert_eq!(ResponseFacts::of_body(b"<html>"), ResponseFacts::default());
    }

    #[test]
    fn response_facts_of_streams() {
        // chat: every chunk names the model and a null finish reason until the last
        let mut f = ResponseFacts::default();
        f.observe_event(
            None,
            r#"{"model":"gpt-4o","choices":[{"delta":{"content":"a"},"finish_reason":null}]}"#,
        );
        f.observe_event(
            None,
            r#"{"model":"gpt-4o","choices":[{"delta":{},"finish_reason": null}]}"#,
        );
        f.observe_event(
            None,
            r#"{"model":"gpt-4o","choices":[{"delta":{},"finish_reason": "stop"}]}"#,
        );
        f.observe_event(None, "[DONE]");
        assert_eq!(f.model.as_deref(), Some("gpt-4o"));
        assert_eq!(f.finish_reasons, vec!["stop"]);

        // Messages
        let mut f = ResponseFacts::default();
        f.observe_event(
            Some("message_start"),
            r#"{"type":"message_start","message":{"model":"claude-x","stop_reason":null}}"#,
        );
        f.observe_event(
            Some("content_block_delta"),
            r#"{"type":"content_block_delta","delta":{"text":"the model said"}}"#,
        );
        f.observe_event(
            Some("message_delta"),
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"}}"#,
        );
        assert_eq!(f.model.as_deref(), Some("claude-x"));
        assert_eq!(f.finish_reasons, vec!["end_turn"]);

        // Responses: in_progress is not a finish reason; the completed status is
        let mut f = ResponseFacts::default();
        f.observe_event(Some("response.created"), r#"{"type":"response.created","response":{"object":"response","model":"gpt-4.1","status":"in_progress"}}"#);
        f.observe_event(Some("response.completed"), r#"{"type":"response.completed","response":{"object":"response","model":"gpt-4.1","status":"completed"}}"#);
        assert_eq!(f.model.as_deref(), Some("gpt-4.1"));
        assert_eq!(f.finish_reasons, vec!["completed"]);
    }

    #[test]
    fn non_null_detection() {
        assert!(!has_non_null(
            r#"{"finish_reason":null}"#,
            "\"finish_reason\""
        ));
        assert!(!has_non_null(
            r#"{"finish_reason" : null}"#,
            "\"finish_reason\""
        ));
        assert!(has_non_null(
            r#"{"finish_reason":"stop"}"#,
            "\"finish_reason\""
        ));
        assert!(!has_non_null(
            r#"{"text":"finish_reason"}"#,
            "\"finish_reason\""
        ));
    }

    #[test]
    fn traceparent_round_trip() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        h.insert("tracestate", HeaderValue::from_static("vendor=x"));
        let cx = extract_parent(&h);
        let mut out = HeaderMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut out));
        assert_eq!(out.get("traceparent"), h.get("traceparent"));
        assert_eq!(out.get("tracestate"), h.get("tracestate"));

        // Garbage is not a parent.
        let mut bad = HeaderMap::new();
        bad.insert("traceparent", HeaderValue::from_static("00-zz-zz-01"));
        let mut out = HeaderMap::new();
        TraceContextPropagator::new()
            .inject_context(&extract_parent(&bad), &mut HeaderInjector(&mut out));
        assert!(out.get("traceparent").is_none());
    }

    #[tokio::test]
    async fn a_dead_collector_drops_and_counts_without_blocking() {
        // A port nothing listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let handle = crate::metrics::install("test");
        let settings = TraceSettings {
            endpoint: format!("http://127.0.0.1:{port}"),
            sampling_percent: 100.0,
            span_attributes: SpanAttributes::default(),
        };
        let telemetry = Telemetry::new("plano-test", &settings);
        telemetry.start().unwrap();
        let tracer = telemetry.tracer();
        let start = std::time::Instant::now();
        {
            use opentelemetry::trace::Tracer as _;
            for _ in 0..(QUEUE_CAPACITY + 100) {
                drop(tracer.start("s"));
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "ending spans blocked"
        );
        telemetry.shutdown(Duration::from_secs(15)).await;
        let text = handle.render();
        let dropped: f64 = text
            .lines()
            .filter(|l| l.starts_with(TRACE_SPANS_DROPPED_TOTAL))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(
            dropped >= (QUEUE_CAPACITY + 100) as f64,
            "every span is counted as dropped: {text}"
        );
    }
}
