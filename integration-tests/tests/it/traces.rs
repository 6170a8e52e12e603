//! OpenTelemetry traces, checked at a real OTLP/gRPC receiver
//! (`integration_tests::otlp`). Tests run on one thread so the scoped subscriber sees every
//! task of the test.

use integration_tests::harness::Egress;
use integration_tests::mock::MockProvider;
use integration_tests::otlp::{RecordedSpan, Tracing};
use serde_json::json;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

fn config(provider: &MockProvider) -> String {
    format!(
        r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    access_key: sk-trace-test-secret
    base_url: {}
    default: true
listeners:
  - type: model
    name: models
    port: 12000
"#,
        provider.url()
    )
}

fn server_spans(spans: &[RecordedSpan]) -> Vec<&RecordedSpan> {
    spans.iter().filter(|s| s.kind == "server").collect()
}

#[tokio::test(flavor = "current_thread")]
async fn an_egress_request_exports_a_server_span_under_the_callers_traceparent() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tracing = Tracing::install("plano-egress").await.unwrap();
    let provider = MockProvider::start().await.unwrap();
    let egress = Egress::start(&config(&provider), &[]).await.unwrap();

    let res = reqwest::Client::new()
        .post(egress.url("/v1/chat/completions"))
        .header(
            "traceparent",
            format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01"),
        )
        .header("tracestate", "vendor=x")
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "a secret prompt"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.text().await.unwrap();

    let spans = tracing.wait_for(|s| !server_spans(s).is_empty()).await;
    let server = server_spans(&spans);
    assert_eq!(server.len(), 1, "one server span: {spans:#?}");
    let span = server[0];
    assert_eq!(span.name, "POST /v1/chat/completions");
    assert_eq!(span.service, "plano-egress");
    assert_eq!(span.trace_id, TRACE_ID, "the caller's trace continues");
    assert_eq!(span.parent_span_id.as_deref(), Some(PARENT_SPAN_ID));
    assert_eq!(span.str_attr("http.request.method"), Some("POST"));
    assert_eq!(span.str_attr("url.path"), Some("/v1/chat/completions"));
    assert_eq!(
        span.int_attr("http.response.status_code"),
        Some(200),
        "{span:#?}"
    );
    assert_eq!(span.str_attr("plano.component"), Some("egress"));
    assert_eq!(span.status, "unset");

    // Neither the prompt nor the provider key is in any exported attribute.
    let dump = format!("{spans:?}");
    assert!(!dump.contains("a secret prompt"), "{dump}");
    assert!(!dump.contains("sk-trace-test-secret"), "{dump}");

    egress.stop().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn without_a_traceparent_the_server_span_starts_a_trace_and_errors_are_marked() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tracing = Tracing::install("plano-egress").await.unwrap();
    let provider = MockProvider::start().await.unwrap();
    provider.push(integration_tests::mock::Reply::status(500));
    provider.push(integration_tests::mock::Reply::status(500));
    provider.push(integration_tests::mock::Reply::status(500));
    let egress = Egress::start(&config(&provider), &[]).await.unwrap();

    let res = reqwest::Client::new()
        .post(egress.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let _ = res.text().await.unwrap();
    assert!(status >= 500, "{status}");

    let spans = tracing.wait_for(|s| !server_spans(s).is_empty()).await;
    let server = server_spans(&spans);
    assert_eq!(server.len(), 1, "{spans:#?}");
    assert_eq!(server[0].parent_span_id, None, "a root span");
    assert_eq!(server[0].trace_id.len(), 32);
    assert_eq!(
        server[0].int_attr("http.response.status_code"),
        Some(i64::from(status))
    );
    assert_eq!(server[0].status, "error");

    egress.stop().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn an_unsampled_caller_is_not_recorded() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tracing = Tracing::install("plano-egress").await.unwrap();
    let provider = MockProvider::start().await.unwrap();
    let egress = Egress::start(&config(&provider), &[]).await.unwrap();

    // Flags 00: the caller decided not to sample; parent-based sampling follows it.
    let res = reqwest::Client::new()
        .post(egress.url("/v1/chat/completions"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-00"))
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let _ = res.text().await.unwrap();
    // A sampled request afterwards proves the pipeline works.
    let res = reqwest::Client::new()
        .get(egress.url("/v1/models"))
        .send()
        .await
        .unwrap();
    let _ = res.text().await.unwrap();

    let spans = tracing
        .wait_for(|s| s.iter().any(|s| s.name == "GET /v1/models"))
        .await;
    assert!(
        spans.iter().any(|s| s.name == "GET /v1/models"),
        "{spans:#?}"
    );
    assert!(
        spans.iter().all(|s| s.trace_id != TRACE_ID),
        "the unsampled trace was exported: {spans:#?}"
    );

    egress.stop().await.unwrap();
}

/// The real binary: `tracing:` in the config turns export on, the spans carry the
/// binary's service name, and what is queued at SIGTERM is flushed before exit.
#[tokio::test]
async fn the_egress_binary_exports_to_the_configured_endpoint_and_flushes_on_exit() {
    use integration_tests::otlp::Collector;
    use std::process::Stdio;

    use crate::support::{binary, free_port};

    let collector = Collector::start().await.unwrap();
    let provider = MockProvider::start().await.unwrap();
    let port = free_port();
    let admin = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plano_config.yaml");
    std::fs::write(
        &path,
        format!(
            r#"version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    access_key: test-key
    base_url: {}
    default: true
listeners:
  - type: model
    name: models
    address: 127.0.0.1
    port: {port}
admin:
  egress: "127.0.0.1:{admin}"
tracing:
  random_sampling: 100
  opentracing_grpc_endpoint: {}
"#,
            provider.url(),
            collector.endpoint()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(binary("plano-egress"))
        .arg("--config")
        .arg(&path)
        .args(["--log-format", "json", "--grace", "5s"])
        .env_remove("OTEL_SERVICE_NAME")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let res = loop {
        match http
            .post(&url)
            .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01"))
            .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
        {
            Ok(r) => break r,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "egress not up: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(res.status(), 200);
    let _ = res.text().await.unwrap();

    let pid = child.id().unwrap();
    let killed = std::process::Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let spans = collector
        .wait_for(std::time::Duration::from_secs(5), |s| {
            s.iter().any(|s| s.trace_id == TRACE_ID)
        })
        .await;
    let span = spans
        .iter()
        .find(|s| s.trace_id == TRACE_ID)
        .unwrap_or_else(|| panic!("no span of the request: {spans:#?}"));
    assert_eq!(span.service, "plano-egress");
    assert_eq!(span.kind, "server");
    assert_eq!(span.parent_span_id.as_deref(), Some(PARENT_SPAN_ID));
}
