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

    use crate::support::Plano;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let collector = Collector::start().await.unwrap();
    let provider = MockProvider::start().await.unwrap();
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
    port: 0
admin:
  egress: "127.0.0.1:0"
tracing:
  random_sampling: 100
  opentracing_grpc_endpoint: {}
"#,
            provider.url(),
            collector.endpoint()
        ),
    )
    .unwrap();
    // Ports chosen by the OS, read back from the log (OTEL_SERVICE_NAME removed).
    let egress = Plano::start("plano-egress", &path, &["--grace", "5s"], 1).await;
    let port = egress.addr("model").port();
    let mut child = egress.child;
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
            s.iter()
                .any(|s| s.trace_id == TRACE_ID && s.kind == "server")
        })
        .await;
    let span = spans
        .iter()
        .find(|s| s.trace_id == TRACE_ID && s.kind == "server")
        .unwrap_or_else(|| panic!("no server span of the request: {spans:#?}"));
    assert_eq!(span.service, "plano-egress");
    assert_eq!(span.parent_span_id.as_deref(), Some(PARENT_SPAN_ID));
}

/// The whole tree of one streamed, retried, failed-over request through edge and egress:
/// one trace, from the client's `traceparent` down to each upstream attempt.
#[tokio::test(flavor = "current_thread")]
async fn a_streamed_retried_failed_over_request_is_one_trace_through_edge_and_egress() {
    use integration_tests::harness::Edge;
    use integration_tests::mock::Reply;
    use integration_tests::mock_filter::MockFilter;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let tracing = Tracing::install("plano-test").await.unwrap();
    let primary = MockProvider::start().await.unwrap();
    let backup = MockProvider::start().await.unwrap();
    primary.push(Reply::status(500));
    primary.push(Reply::status(500));
    let guard = MockFilter::start("hello", "hello").await.unwrap();
    let egress = Egress::start(
        &format!(
            r#"
version: v0.4.0
model_providers:
  - name: primary
    model: openai/gpt-4o
    access_key: sk-primary-secret
    base_url: {}
    default: true
  - name: backup
    model: openai/gpt-4o-mini
    access_key: sk-backup-secret
    base_url: {}
model_aliases:
  smart:
    target: primary
    fallbacks: [backup]
listeners:
  - type: model
    name: models
    port: 12000
    timeout: 10s
    max_retries: 1
"#,
            primary.url(),
            backup.url()
        ),
        &[],
    )
    .await
    .unwrap();
    let edge = Edge::start(
        &format!(
            r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    default: true
filters:
  - {{id: guard, type: http, url: "{}"}}
listeners:
  - type: edge
    name: main
    port: 10000
    timeout: 10s
    input_filters: [guard]
"#,
            guard.url()
        ),
        &[],
        (egress.addr, egress.admin),
    )
    .await
    .unwrap();
    let health = edge.ctx.health.clone();
    crate::support::eventually(std::time::Duration::from_secs(10), || {
        let h = health.clone();
        async move { h.is_ready() }
    })
    .await;

    let res = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", edge.addr("main")))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01"))
        .json(&json!({
            "model": "smart",
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hello"}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("[DONE]"), "{text}");

    let done = |s: &[RecordedSpan]| {
        let ours = |c: &str| {
            s.iter()
                .any(|x| x.kind == "server" && x.str_attr("plano.component") == Some(c))
        };
        ours("edge")
            && ours("egress")
            && s.iter().filter(|x| x.name.starts_with("llm ")).count() >= 3
    };
    let spans = tracing.wait_for(done).await;
    assert!(done(&spans), "{spans:#?}");
    let in_trace: Vec<&RecordedSpan> = spans.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    let find = |pred: &dyn Fn(&RecordedSpan) -> bool| -> Vec<&RecordedSpan> {
        in_trace.iter().copied().filter(|s| pred(s)).collect()
    };

    // edge server span, child of the client's span
    let edge_span = find(&|s| s.kind == "server" && s.str_attr("plano.component") == Some("edge"));
    assert_eq!(edge_span.len(), 1, "{spans:#?}");
    let edge_span = edge_span[0];
    assert_eq!(edge_span.name, "POST /v1/chat/completions");
    assert_eq!(edge_span.parent_span_id.as_deref(), Some(PARENT_SPAN_ID));
    assert_eq!(edge_span.int_attr("http.response.status_code"), Some(200));

    // the filter call, under the edge span; the filter saw that span as its parent
    let filter = find(&|s| s.name == "filter guard");
    assert_eq!(filter.len(), 1, "{spans:#?}");
    assert_eq!(filter[0].kind, "client");
    assert_eq!(
        filter[0].parent_span_id.as_deref(),
        Some(edge_span.span_id.as_str())
    );
    let seen = guard.requests();
    let tp = seen[0]
        .headers
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(tp, format!("00-{TRACE_ID}-{}-01", filter[0].span_id));

    // egress server span, under the edge span (traceparent injected on the forward)
    let egress_span =
        find(&|s| s.kind == "server" && s.str_attr("plano.component") == Some("egress"));
    assert_eq!(egress_span.len(), 1, "{spans:#?}");
    let egress_span = egress_span[0];
    assert_eq!(
        egress_span.parent_span_id.as_deref(),
        Some(edge_span.span_id.as_str())
    );

    // three attempts under the egress span: primary twice (500), then backup
    let mut attempts = find(&|s| s.name.starts_with("llm "));
    attempts.sort_by_key(|s| (s.name != "llm primary", s.int_attr("plano.attempt")));
    let summary: Vec<(&str, Option<i64>, &str, Option<i64>)> = attempts
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.int_attr("plano.attempt"),
                s.status,
                s.int_attr("http.response.status_code"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("llm primary", Some(1), "error", Some(500)),
            ("llm primary", Some(2), "error", Some(500)),
            ("llm backup", Some(1), "unset", Some(200)),
        ],
        "{spans:#?}"
    );
    for a in &attempts {
        assert_eq!(a.kind, "client");
        assert_eq!(
            a.parent_span_id.as_deref(),
            Some(egress_span.span_id.as_str())
        );
        assert_eq!(a.str_attr("gen_ai.system"), Some("openai"));
        assert_eq!(a.attr("llm.is_streaming"), Some(&json!(true)));
    }
    let winner = attempts[2];
    assert_eq!(winner.str_attr("gen_ai.request.model"), Some("gpt-4o-mini"));
    assert_eq!(winner.str_attr("llm.model"), Some("gpt-4o-mini"));
    assert_eq!(winner.str_attr("llm.provider"), Some("backup"));
    assert!(
        winner
            .int_attr("gen_ai.usage.input_tokens")
            .is_some_and(|n| n > 0),
        "{winner:#?}"
    );
    assert!(
        winner
            .int_attr("gen_ai.usage.output_tokens")
            .is_some_and(|n| n > 0),
        "{winner:#?}"
    );
    assert!(
        winner.int_attr("llm.usage.total_tokens").is_some(),
        "{winner:#?}"
    );
    assert!(
        winner.int_attr("llm.time_to_first_token").is_some(),
        "{winner:#?}"
    );
    assert!(
        winner.attr("gen_ai.server.time_to_first_token").is_some(),
        "{winner:#?}"
    );
    // the request's span carries the usage too
    assert!(
        egress_span.int_attr("gen_ai.usage.output_tokens").is_some(),
        "{egress_span:#?}"
    );

    // each provider got its own attempt's context
    let sent = backup.requests();
    let tp = sent[0]
        .headers
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(tp, format!("00-{TRACE_ID}-{}-01", winner.span_id));

    // no prompt, no key
    let dump = format!("{spans:?}");
    for secret in ["sk-primary-secret", "sk-backup-secret", "\"hello\""] {
        assert!(!dump.contains(secret), "{secret} exported: {dump}");
    }

    edge.stop().await.unwrap();
    egress.stop().await.unwrap();
}

/// `tracing.span_attributes` from the config: headers by prefix (never credentials) and
/// static values on the server span.
#[tokio::test(flavor = "current_thread")]
async fn span_attributes_from_headers_and_static_values() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tracing = Tracing::install("plano-egress").await.unwrap();
    let provider = MockProvider::start().await.unwrap();
    let yaml = format!(
        "{}tracing:\n  random_sampling: 100\n  span_attributes:\n    header_prefixes: [x-acme-]\n    static:\n      environment: test\n",
        config(&provider)
    );
    let egress = Egress::start(&yaml, &[]).await.unwrap();
    let res = reqwest::Client::new()
        .post(egress.url("/v1/chat/completions"))
        .header("x-acme-tenant-id", "t-42")
        .header("x-acme-api-key", "acme-secret-key")
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.text().await.unwrap();

    let spans = tracing.wait_for(|s| !server_spans(s).is_empty()).await;
    let server = server_spans(&spans);
    assert_eq!(server.len(), 1, "{spans:#?}");
    assert_eq!(server[0].str_attr("tenant.id"), Some("t-42"), "{spans:#?}");
    assert_eq!(server[0].str_attr("environment"), Some("test"));
    let dump = format!("{spans:?}");
    assert!(!dump.contains("acme-secret-key"), "{dump}");

    egress.stop().await.unwrap();
}

#[test]
fn a_malformed_tracing_section_is_refused_with_its_key_path() {
    let err = plano_config::load_str(
        "version: v0.4.0\nmodel_providers:\n  - model: openai/gpt-4o\n    default: true\ntracing:\n  span_attributes:\n    static: [1, 2]\n",
        None,
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("tracing"), "{err}");
}

/// A routed request: the router-model call is its own client span under the egress
/// server span (model, outcome, route, duration, trace context sent to the router), and
/// every model call's spans carry the answering model and its finish reasons, streamed or
/// not, on chat completions, Messages and Responses.
#[tokio::test(flavor = "current_thread")]
async fn router_calls_and_response_models_and_finish_reasons_are_on_the_spans() {
    use plano_egress::routing::{Prefer, Preference, RoutingSettings};

    let _ = rustls::crypto::ring::default_provider().install_default();
    let tracing = Tracing::install("plano-egress").await.unwrap();
    let mock = MockProvider::start().await.unwrap();
    let yaml = format!(
        r#"
version: v0.4.0
listeners:
  - type: model
    name: models
    port: 12000
model_providers:
  - model: openai/gpt-4o-mini
    base_url: {0}
    access_key: k
    default: true
  - model: anthropic/claude-sonnet
    base_url: {0}
    access_key: k
  - model: openai/router
    base_url: {0}
    access_key: k
  - model: openai/mock-router-nonsense
    base_url: {0}
    access_key: k
"#,
        mock.url()
    );
    let settings = |router: &str| RoutingSettings {
        preferences: vec![
            Preference {
                name: "code_generation".into(),
                description: "generating new code, writing functions".into(),
                models: vec!["anthropic/claude-sonnet".into()],
                prefer: Prefer::None,
            },
            Preference {
                name: "small_talk".into(),
                description: "casual chat and greetings".into(),
                models: vec!["openai/gpt-4o-mini".into()],
                prefer: Prefer::None,
            },
        ],
        router_model: Some(router.into()),
        router_timeout: std::time::Duration::from_secs(2),
        ..RoutingSettings::default()
    };
    let egress = Egress::start_routed(&yaml, settings("openai/router"))
        .await
        .unwrap();

    // The attributes say what the provider (Anthropic here) answered, whatever the
    // client's API: its model id and its own finish reason.
    let cases = [
        ("/v1/chat/completions", "chat"),
        ("/v1/messages", "messages"),
        ("/v1/responses", "responses"),
    ];
    let mut n = 0;
    for (path, api) in cases {
        for stream in [false, true] {
            n += 1;
            // A new conversation each time: no decision-cache hit, so a router call each.
            let text = format!("write a Python function number {n}");
            let messages = json!([{"role": "user", "content": text}]);
            let body = match api {
                "chat" => {
                    json!({"model": "openai/gpt-4o-mini", "messages": messages, "stream": stream})
                }
                "messages" => {
                    json!({"model": "openai/gpt-4o-mini", "max_tokens": 64, "messages": messages, "stream": stream})
                }
                _ => json!({"model": "openai/gpt-4o-mini", "input": messages, "stream": stream}),
            };
            let res = reqwest::Client::new()
                .post(egress.url(path))
                .header("x-request-case", format!("{api}-{stream}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{api} stream={stream}");
            assert_eq!(
                res.headers()
                    .get("x-plano-route")
                    .and_then(|v| v.to_str().ok()),
                Some("code_generation")
            );
            let _ = res.text().await.unwrap();
        }
    }

    let spans = tracing
        .wait_for(|s| {
            server_spans(s).len() >= 6
                && s.iter().filter(|x| x.name.starts_with("llm ")).count() >= 6
        })
        .await;
    let servers = server_spans(&spans);
    assert_eq!(servers.len(), 6, "{spans:#?}");
    for server in servers {
        let children: Vec<&RecordedSpan> = spans
            .iter()
            .filter(|s| s.parent_span_id.as_deref() == Some(server.span_id.as_str()))
            .collect();

        let router: Vec<&&RecordedSpan> = children
            .iter()
            .filter(|s| s.name == "routing openai/router")
            .collect();
        assert_eq!(
            router.len(),
            1,
            "one router call under {server:#?}: {spans:#?}"
        );
        let router = router[0];
        assert_eq!(router.kind, "client");
        assert_eq!(router.trace_id, server.trace_id);
        assert_eq!(router.str_attr("plano.routing.outcome"), Some("routed"));
        assert_eq!(
            router.str_attr("plano.routing.route"),
            Some("code_generation")
        );
        assert!(
            router.int_attr("plano.routing.duration_ms").is_some(),
            "{router:#?}"
        );
        assert_eq!(router.str_attr("gen_ai.request.model"), Some("router"));
        assert_eq!(router.str_attr("llm.provider"), Some("openai/router"));
        assert_eq!(router.int_attr("http.response.status_code"), Some(200));
        assert_eq!(router.status, "unset");

        let llm: Vec<&&RecordedSpan> = children
            .iter()
            .filter(|s| s.name.starts_with("llm "))
            .collect();
        assert_eq!(llm.len(), 1, "{spans:#?}");
        for s in [*llm[0], server] {
            assert_eq!(
                s.str_attr("gen_ai.response.model"),
                Some("claude-sonnet"),
                "{s:#?}"
            );
            assert_eq!(
                s.attr("gen_ai.response.finish_reasons"),
                Some(&json!(["end_turn"])),
                "{s:#?}"
            );
        }
    }
    // The router got the router span's trace context.
    let router_req = mock
        .requests()
        .into_iter()
        .find(|r| r.body["model"] == "router")
        .unwrap();
    let tp = router_req
        .headers
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let router_span_ids: Vec<&str> = spans
        .iter()
        .filter(|s| s.name == "routing openai/router")
        .map(|s| s.span_id.as_str())
        .collect();
    assert!(
        router_span_ids.iter().any(|id| tp.contains(id)),
        "{tp} names no router span"
    );
    egress.stop().await.unwrap();
    drop(tracing);

    // A router answering nonsense: the span says why routing fell back, and is an error.
    let tracing2 = Tracing::install("plano-egress").await.unwrap();
    let egress = Egress::start_routed(&yaml, settings("openai/mock-router-nonsense"))
        .await
        .unwrap();
    let res = reqwest::Client::new()
        .post(egress.url("/v1/chat/completions"))
        .json(&json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "write a Python function"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.text().await.unwrap();
    let spans = tracing2
        .wait_for(|s| {
            s.iter().any(|x| x.name.starts_with("routing ")) && !server_spans(s).is_empty()
        })
        .await;
    let router = spans
        .iter()
        .find(|s| s.name == "routing openai/mock-router-nonsense")
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(
        router.str_attr("plano.routing.outcome"),
        Some("router_nonsense")
    );
    assert_eq!(router.status, "error");
    assert_eq!(router.str_attr("plano.routing.route"), None);
    egress.stop().await.unwrap();
}
