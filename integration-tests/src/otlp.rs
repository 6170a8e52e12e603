//! A small OTLP/gRPC trace collector for tests, built from the `opentelemetry-proto`
//! definitions (generated tonic server, no protoc): it records every exported span (name,
//! ids, parent, kind, status, attributes, service) for assertions.
//!
//! [`Tracing::install`] wires a test to it: a collector on 127.0.0.1:0, a
//! [`Telemetry`] exporting to it, and the OpenTelemetry layer as the thread's default
//! subscriber. Use it from `#[tokio::test(flavor = "current_thread")]` tests so every task
//! of the test runs under that subscriber.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use plano_common::telemetry::{SpanAttributes, Telemetry, TraceSettings};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;

/// One span as the collector received it.
#[derive(Debug, Clone)]
pub struct RecordedSpan {
    pub name: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// `None` for a root span.
    pub parent_span_id: Option<String>,
    /// `server`, `client`, `internal`, `producer`, `consumer`, `unspecified`.
    pub kind: &'static str,
    /// `unset`, `ok`, `error`.
    pub status: &'static str,
    pub attributes: BTreeMap<String, Value>,
    /// The resource's `service.name`.
    pub service: String,
    /// Names of the span's events.
    pub events: Vec<String>,
}

impl RecordedSpan {
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }

    pub fn str_attr(&self, key: &str) -> Option<&str> {
        self.attr(key).and_then(Value::as_str)
    }

    pub fn int_attr(&self, key: &str) -> Option<i64> {
        self.attr(key).and_then(Value::as_i64)
    }
}

#[derive(Default)]
struct Store {
    spans: Mutex<Vec<RecordedSpan>>,
    arrived: Notify,
}

struct Service(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = Vec::new();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .and_then(|kv| kv.value.as_ref())
                .map(|v| json(v).as_str().unwrap_or_default().to_string())
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    got.push(RecordedSpan {
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: (!s.parent_span_id.is_empty())
                            .then(|| hex(&s.parent_span_id)),
                        kind: match s.kind {
                            1 => "internal",
                            2 => "server",
                            3 => "client",
                            4 => "producer",
                            5 => "consumer",
                            _ => "unspecified",
                        },
                        status: match s.status.map(|st| st.code) {
                            Some(1) => "ok",
                            Some(2) => "error",
                            _ => "unset",
                        },
                        attributes: attributes(&s.attributes),
                        service: service.clone(),
                        events: s.events.into_iter().map(|e| e.name).collect(),
                    });
                }
            }
        }
        self.0
            .spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(got);
        self.0.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, json)))
        .collect()
}

fn json(v: &AnyValue) -> Value {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => Value::from(*d),
        Some(any_value::Value::ArrayValue(a)) => Value::Array(a.values.iter().map(json).collect()),
        Some(any_value::Value::KvlistValue(l)) => Value::Object(
            l.values
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, json)))
                .collect(),
        ),
        Some(any_value::Value::BytesValue(b)) => Value::String(hex(b)),
        // Newer proto versions may add kinds; they show up as null.
        #[allow(unreachable_patterns, reason = "future proto variants")]
        _ => Value::Null,
    }
}

/// The running collector; stops when dropped.
pub struct Collector {
    pub addr: SocketAddr,
    store: Arc<Store>,
    stop: CancellationToken,
}

impl Collector {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let store = Arc::new(Store::default());
        let stop = CancellationToken::new();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Service(store.clone())))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            );
        tokio::spawn(server);
        Ok(Self { addr, store, stop })
    }

    /// The OTLP/gRPC endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<RecordedSpan> {
        self.store
            .spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Wait until `done` holds for the spans received (or `timeout` passes); returns them.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[RecordedSpan]) -> bool,
    ) -> Vec<RecordedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.store.arrived.notified();
            let spans = self.spans();
            if done(&spans) || tokio::time::Instant::now() >= deadline {
                return spans;
            }
            let _ = tokio::time::timeout_at(deadline, arrived).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A collector plus a [`Telemetry`] exporting to it, installed as this thread's subscriber
/// until dropped.
pub struct Tracing {
    pub collector: Collector,
    pub telemetry: Telemetry,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Tracing {
    /// Everything sampled, as service `service_name`.
    pub async fn install(service_name: &'static str) -> anyhow::Result<Self> {
        Self::install_with(service_name, 100.0, SpanAttributes::default()).await
    }

    pub async fn install_with(
        service_name: &'static str,
        sampling_percent: f64,
        span_attributes: SpanAttributes,
    ) -> anyhow::Result<Self> {
        let collector = Collector::start().await?;
        let settings = TraceSettings {
            endpoint: collector.endpoint(),
            sampling_percent,
            span_attributes,
        };
        let telemetry = Telemetry::new(service_name, &settings);
        telemetry.start()?;
        let subscriber =
            tracing_subscriber::registry().with(plano_common::logging::otel_layer(&telemetry));
        let guard = tracing::subscriber::set_default(subscriber);
        Ok(Self {
            collector,
            telemetry,
            _guard: guard,
        })
    }

    /// Wait (up to 10 s) until `done` holds for the spans received.
    pub async fn wait_for(&self, done: impl Fn(&[RecordedSpan]) -> bool) -> Vec<RecordedSpan> {
        self.collector.wait_for(Duration::from_secs(10), done).await
    }
}
