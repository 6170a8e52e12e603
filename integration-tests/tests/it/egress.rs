//! The egress end to end: real sockets, the scripted mock provider, and real clients
//! (async-openai, reqwest).

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, ChatCompletionStreamOptions, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use futures_util::StreamExt;
use integration_tests::harness::Egress;
use integration_tests::mock::{MockProvider, Reply, ReplyBody, chunk};
use serde_json::{Value, json};

use crate::support::eventually;

const SECRET: &str = "sk-live-very-secret-provider-key";

fn tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn config(primary: &MockProvider, backup: &MockProvider, extra: &str) -> String {
    format!(
        r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    access_key: $PRIMARY_KEY
    base_url: {}
    default: true
  - model: openai/gpt-4o-mini
    base_url: {}
    access_key: backup-key
  - name: broken
    model: openai/gpt-broken
    base_url: http://127.0.0.1:9
model_aliases:
  smart:
    target: openai/gpt-4o
    fallbacks: [gpt-4o-mini]
  doomed:
    target: broken
    fallbacks: [openai/gpt-4o]
listeners:
  - type: model
    name: models
    port: 12000
    timeout: 3s
    first_token_timeout: 2s
    max_retries: 1
    max_body_bytes: 65536
{extra}"#,
        primary.url(),
        backup.url()
    )
}

async fn setup(extra: &str) -> (MockProvider, MockProvider, Egress) {
    tls();
    let primary = MockProvider::start().await.unwrap();
    let backup = MockProvider::start().await.unwrap();
    let egress = Egress::start(
        &config(&primary, &backup, extra),
        &[("PRIMARY_KEY", SECRET)],
    )
    .await
    .unwrap();
    (primary, backup, egress)
}

fn openai(egress: &Egress) -> Client<OpenAIConfig> {
    Client::with_config(
        OpenAIConfig::new()
            .with_api_base(egress.url("/v1"))
            .with_api_key("client-key"),
    )
}

fn request(model: &str) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(model)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("hello")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap()
}

async fn post(egress: &Egress, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(egress.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn non_streaming_through_the_openai_sdk() {
    let (primary, _, egress) = setup("").await;
    let res = openai(&egress)
        .chat()
        .create(request("gpt-4o"))
        .await
        .unwrap();
    assert_eq!(res.object, "chat.completion");
    assert!(
        res.choices[0]
            .message
            .content
            .as_deref()
            .unwrap()
            .contains("lorem")
    );
    let seen = primary.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(
        seen[0].body["model"], "gpt-4o",
        "the provider prefix is stripped"
    );
    assert_eq!(seen[0].headers["authorization"], format!("Bearer {SECRET}"));
    assert!(seen[0].headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn response_headers_and_request_id() {
    let (primary, _, egress) = setup("").await;
    let res = reqwest::Client::new()
        .post(egress.url("/v1/chat/completions"))
        .header("x-request-id", "req-123")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .json(&chat("openai/gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers();
    assert_eq!(h["x-request-id"], "req-123");
    assert_eq!(h["x-plano-provider"], "openai/gpt-4o");
    assert_eq!(h["x-plano-attempts"], "1");
    let overhead: f64 = h["x-plano-overhead-ms"].to_str().unwrap().parse().unwrap();
    assert!(overhead >= 0.0);
    let seen = &primary.requests()[0];
    assert_eq!(seen.headers["x-request-id"], "req-123");
    assert!(seen.headers.contains_key("traceparent"));
}

#[tokio::test]
async fn streaming_hides_the_usage_chunk_unless_asked_and_meters_tokens() {
    let (primary, _, egress) = setup("").await;
    let client = openai(&egress);
    let mut stream = client
        .chat()
        .create_stream(request("gpt-4o"))
        .await
        .unwrap();
    let mut text = String::new();
    let mut saw_usage = false;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        saw_usage |= chunk.usage.is_some();
        for c in chunk.choices {
            text.push_str(c.delta.content.as_deref().unwrap_or_default());
        }
    }
    assert_eq!(text, "mock reply to: hello tok0 tok1 tok2 tok3 tok4 ");
    assert!(!saw_usage, "the client did not ask for usage");
    assert_eq!(
        primary.requests()[0].body["stream_options"]["include_usage"],
        true
    );

    let mut req = request("gpt-4o");
    req.stream_options = Some(ChatCompletionStreamOptions {
        include_usage: Some(true),
        include_obfuscation: None,
    });
    let mut stream = client.chat().create_stream(req).await.unwrap();
    let mut usage = None;
    while let Some(chunk) = stream.next().await {
        if let Some(u) = chunk.unwrap().usage {
            usage = Some(u);
        }
    }
    assert_eq!(usage.unwrap().completion_tokens, 5);

    let metrics = egress.metrics().render();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("plano_llm_tokens_total")
                && l.contains("kind=\"output\"")
                && l.contains("provider=\"openai/gpt-4o\"")
        })
        .unwrap_or_else(|| panic!("no output tokens metric:\n{metrics}"));
    let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 10.0, "{line}");
}

#[tokio::test]
async fn selection_aliases_default_and_unknown_models() {
    let (primary, backup, egress) = setup("").await;
    let r = post(&egress, chat("smart")).await;
    assert_eq!(r.headers()["x-plano-provider"], "openai/gpt-4o");
    let r = post(
        &egress,
        json!({"messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-plano-provider"],
        "openai/gpt-4o",
        "no model → default"
    );
    let r = post(&egress, chat("gpt-4o-mini")).await;
    assert_eq!(r.headers()["x-plano-provider"], "openai/gpt-4o-mini");
    assert_eq!(
        backup.requests()[0].headers["authorization"],
        "Bearer backup-key"
    );
    assert_eq!(primary.requests().len(), 2);

    let r = post(&egress, chat("gpt-9")).await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    assert!(body["error"]["message"].as_str().unwrap().contains("gpt-9"));

    let models: Value = reqwest::get(egress.url("/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(models["object"], "list");
    assert!(
        ids.contains(&"openai/gpt-4o") && ids.contains(&"smart"),
        "{ids:?}"
    );
}

/// On tokio's paused clock: the Retry-After wait costs no wall time.
#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_is_retried() {
    let (primary, _, egress) = setup("").await;
    primary.push(Reply::status(429).header("retry-after", "1"));
    let started = tokio::time::Instant::now();
    let r = post(&egress, chat("gpt-4o")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-plano-attempts"], "2");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After honoured"
    );
    assert_eq!(primary.requests().len(), 2);
    let m = egress.metrics().render();
    assert!(
        m.contains("plano_llm_retries_total{provider=\"openai/gpt-4o\",reason=\"http_429\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn a_failing_target_fails_over_to_the_fallback() {
    let (primary, backup, egress) = setup("").await;
    primary.push(Reply::status(500));
    primary.push(Reply::status(503));
    let r = post(&egress, chat("smart")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-plano-provider"], "openai/gpt-4o-mini");
    assert_eq!(
        r.headers()["x-plano-attempts"],
        "3",
        "two on the target (max_retries: 1), one on the fallback"
    );
    assert_eq!(backup.requests()[0].body["model"], "gpt-4o-mini");
    let m = egress.metrics().render();
    assert!(
        m.contains("plano_llm_failovers_total{from=\"openai/gpt-4o\",to=\"openai/gpt-4o-mini\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn client_errors_are_relayed_not_retried() {
    let (primary, backup, egress) = setup("").await;
    primary.push(Reply {
        status: Some(reqwest::StatusCode::BAD_REQUEST),
        body: ReplyBody::Json(json!({"error": {"message": "bad temperature", "type": "invalid_request_error", "param": "temperature", "code": null}})),
        ..Reply::default()
    });
    let r = post(&egress, chat("smart")).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"]["message"], "bad temperature",
        "the provider's own error body"
    );
    assert!(backup.requests().is_empty());
}

#[tokio::test]
async fn all_providers_down_is_a_bounded_error_naming_each() {
    let (_, _, egress) = setup("").await;
    let started = std::time::Instant::now();
    let r = post(&egress, chat("doomed")).await;
    // `doomed` → broken (refused), then fails over to gpt-4o which works.
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-plano-provider"], "openai/gpt-4o");

    let r = post(&egress, chat("broken")).await;
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("broken") && msg.contains("connection failed"),
        "{msg}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn slow_upstream_gets_504_within_the_timeout() {
    let (primary, _, egress) = setup("").await;
    for _ in 0..3 {
        primary.push(Reply {
            body: ReplyBody::Hang,
            ..Reply::default()
        });
    }
    let started = std::time::Instant::now();
    let r = post(&egress, chat("gpt-4o")).await;
    let took = started.elapsed();
    assert_eq!(r.status(), 504);
    assert!(
        took < Duration::from_secs(6),
        "bounded by the 3s listener timeout: {took:?}"
    );
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{body}"
    );
}

#[tokio::test]
async fn a_stream_with_no_first_event_is_retried() {
    let (primary, _, egress) = setup("").await;
    primary.push(Reply {
        body: ReplyBody::Hang,
        ..Reply::default()
    });
    let r = reqwest::Client::new()
        .post(egress.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-plano-attempts"], "2");
    let text = r.text().await.unwrap();
    assert!(
        text.contains("tok4") && text.trim_end().ends_with("data: [DONE]"),
        "{text}"
    );
}

#[tokio::test]
async fn client_disconnect_mid_stream_closes_the_upstream() {
    let (primary, _, egress) = setup("").await;
    primary.push(Reply::stream(vec![chunk("a", None)], Duration::ZERO, true));
    let mut r = reqwest::Client::new()
        .post(egress.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let first = r.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"a\""));
    assert_eq!(primary.streams_cut(), 0);
    drop(r);
    eventually(Duration::from_secs(3), || async {
        primary.streams_cut() == 1
    })
    .await;
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let (primary, _, egress) = setup("").await;
    let c = reqwest::Client::new();
    let r = c
        .post(egress.url("/v1/chat/completions"))
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1"),
        "{body}"
    );

    let r = c
        .post(egress.url("/v1/chat/completions"))
        .body("[1,2]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let big =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(70_000)}]});
    let r = c
        .post(egress.url("/v1/chat/completions"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("65536"));

    let r = c
        .get(egress.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");

    let r = c.get(egress.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert!(
        primary.requests().is_empty(),
        "nothing bad reached the provider"
    );
}

#[tokio::test]
async fn http2_prior_knowledge_works() {
    let (_, _, egress) = setup("").await;
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = c
        .post(egress.url("/v1/chat/completions"))
        .json(&chat("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn circuit_opens_after_repeated_failures_and_shows_in_health() {
    let (primary, _, egress) = setup("").await;
    let service = "plano.egress.provider.openai/gpt-4o";
    assert_eq!(egress.ctx.health.get(service), Some(true));
    for _ in 0..6 {
        primary.push(Reply::status(500));
    }
    for _ in 0..3 {
        let _ = post(&egress, chat("gpt-4o")).await;
    }
    assert_eq!(egress.ctx.health.get(service), Some(false));
    let r = post(&egress, chat("gpt-4o")).await;
    assert_eq!(
        r.status(),
        503,
        "skipped while open, without calling the provider"
    );
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("circuit open")
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_access_key_never_appears_in_logs() {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (primary, _, egress) = setup("").await;
    primary.push(Reply::status(500));
    primary.push(Reply::status(401));
    let _ = post(&egress, chat("gpt-4o")).await;
    let _ = post(&egress, chat("gpt-4o")).await;
    let _ = reqwest::Client::new()
        .post(egress.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await;
    egress.stop().await.unwrap();
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("upstream attempt failed"),
        "logging was captured:\n{logs}"
    );
    assert!(
        !logs.contains(SECRET),
        "the access key leaked into the logs"
    );
}

#[tokio::test]
async fn the_quick_start_config_serves() {
    tls();
    let mock = MockProvider::start().await.unwrap();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/quickstart.yaml"
    );
    let yaml = std::fs::read_to_string(path)
        .unwrap()
        .replace("http://127.0.0.1:18080", &mock.url());
    let egress = Egress::start(&yaml, &[]).await.unwrap();
    let r = post(&egress, chat("fast")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-plano-provider"], "openai/gpt-4o-mini");
    assert!(
        !mock.requests()[0].headers.contains_key("authorization"),
        "no key configured, none sent"
    );
}

/// What each provider option puts on the wire, seen by the mock: `http_host`, extra
/// `headers`, the provider's own key (never the client's), `passthrough_auth`, the
/// `provider/*` wildcard, hint headers (current and legacy), and id/trace propagation.
#[tokio::test]
async fn provider_options_reach_the_upstream() {
    tls();
    let main = MockProvider::start().await.unwrap();
    let groq = MockProvider::start().await.unwrap();
    let relay = MockProvider::start().await.unwrap();
    let yaml = format!(
        r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    access_key: $PRIMARY_KEY
    base_url: {}
    default: true
    http_host: llm.internal.example
    headers:
      x-tenant: acme
  - model: groq/*
    base_url: {}
    access_key: groq-key
  - name: relay
    model: openai/gpt-relay
    base_url: {}
    passthrough_auth: true
listeners:
  - type: model
    name: models
    port: 12000
    timeout: 3s
"#,
        main.url(),
        groq.url(),
        relay.url()
    );
    let egress = Egress::start(&yaml, &[("PRIMARY_KEY", SECRET)])
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let send = |model: &str, extra: &[(&str, &str)]| {
        let mut req = client
            .post(egress.url("/v1/chat/completions"))
            .header("authorization", "Bearer client-own-key")
            .header("x-api-key", "client-x-api-key")
            .json(&chat(model));
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        req.send()
    };

    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = send(
        "openai/gpt-4o",
        &[("x-request-id", "req-123"), ("traceparent", traceparent)],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let seen = &main.requests()[0];
    assert_eq!(seen.headers["host"], "llm.internal.example");
    assert_eq!(seen.headers["x-tenant"], "acme");
    assert_eq!(seen.headers["authorization"], format!("Bearer {SECRET}"));
    assert!(
        seen.headers.get("x-api-key").is_none(),
        "the client's own credentials are not forwarded"
    );
    assert_eq!(seen.headers["x-request-id"], "req-123");
    assert_eq!(seen.headers["traceparent"], traceparent);
    assert_eq!(seen.body["model"], "gpt-4o", "prefix stripped upstream");

    let r = send("groq/llama-3.1-8b-instant", &[]).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-plano-provider"], "groq/*");
    let seen = &groq.requests()[0];
    assert_eq!(seen.body["model"], "llama-3.1-8b-instant");
    assert_eq!(seen.headers["authorization"], "Bearer groq-key");

    // The hint wins over the body's model; the legacy spelling works too.
    for hint in ["x-plano-llm-provider-hint", "x-arch-llm-provider-hint"] {
        let r = send("openai/gpt-4o", &[(hint, "relay")]).await.unwrap();
        assert_eq!(r.status(), 200, "{hint}");
        assert_eq!(r.headers()["x-plano-provider"], "relay", "{hint}");
    }
    let seen = relay.requests();
    assert_eq!(seen.len(), 2);
    for req in &seen {
        assert_eq!(req.body["model"], "gpt-relay");
        assert_eq!(req.headers["authorization"], "Bearer client-own-key");
        assert_eq!(req.headers["x-api-key"], "client-x-api-key");
    }
    assert_eq!(main.requests().len(), 1, "hinted requests skip the default");

    // A hint that matches nothing is ignored (never a 404 alone): the body's model serves.
    let r = send("gpt-4o", &[("x-plano-llm-provider-hint", "nope")])
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-plano-provider"], "openai/gpt-4o");
}

/// A new config published on the context applies to the next request without a restart.
#[tokio::test]
async fn a_reloaded_config_routes_new_requests() {
    let (primary, backup, egress) = setup("").await;
    let r = post(&egress, chat("smart")).await;
    assert_eq!(r.headers()["x-plano-provider"], "openai/gpt-4o");

    let yaml = config(&primary, &backup, "").replace(
        "    target: openai/gpt-4o\n    fallbacks: [gpt-4o-mini]",
        "    target: openai/gpt-4o-mini",
    );
    assert!(yaml.contains("target: openai/gpt-4o-mini"));
    let lookup = |k: &str| (k == "PRIMARY_KEY").then(|| SECRET.to_string());
    let mut new: plano_config::Config = plano_config::load_str(&yaml, None, &lookup).unwrap();
    new.model_listener.addr = egress.addr;
    egress
        .control
        .config
        .send(std::sync::Arc::new(new))
        .unwrap();

    eventually(Duration::from_secs(3), || async {
        let r = post(&egress, chat("smart")).await;
        r.headers()["x-plano-provider"] == "openai/gpt-4o-mini"
    })
    .await;
    assert!(!backup.requests().is_empty());
}

/// Shutdown stops accepting but lets a stream in flight run to its end.
#[tokio::test]
async fn shutdown_drains_a_stream_in_flight() {
    let (primary, _, egress) = setup("").await;
    primary.push(Reply::stream(
        vec![
            chunk("first", None),
            chunk("second", None),
            chunk("third", None),
            "[DONE]".into(),
        ],
        Duration::from_millis(150),
        false,
    ));
    let mut r = reqwest::Client::new()
        .post(egress.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut text = String::from_utf8(r.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(text.contains("first"), "{text}");
    egress.control.shutdown.trigger();
    while let Some(c) = r.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(
        text.contains("third") && text.trim_end().ends_with("data: [DONE]"),
        "{text}"
    );
    let addr = egress.addr;
    tokio::time::timeout(Duration::from_secs(5), egress.stop())
        .await
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// An HTTPS upstream reached by IP whose certificate names only `http_host`: the handshake
/// must present `http_host` as SNI and trust `overrides.upstream_tls_ca_path`.
#[tokio::test]
async fn https_upstream_uses_http_host_as_sni_and_the_configured_ca() {
    tls();
    let ca = integration_tests::certs::TestCa::new().unwrap();
    let leaf = ca.issue(&["llm.internal.example"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();

    let upstream =
        integration_tests::tls_upstream::TlsUpstream::start("127.0.0.1:0".parse().unwrap(), &leaf)
            .await
            .unwrap();
    let port = upstream.addr.port();

    let yaml = format!(
        r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    base_url: https://127.0.0.1:{port}
    http_host: llm.internal.example
    access_key: k
    default: true
overrides:
  upstream_tls_ca_path: {}
listeners:
  - type: model
    name: models
    port: 12000
    timeout: 3s
    max_retries: 0
"#,
        ca_path.display()
    );
    let egress = Egress::start(&yaml, &[]).await.unwrap();
    let r = post(&egress, chat("gpt-4o")).await;
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        upstream
            .seen()
            .first()
            .and_then(|s| s.sni.clone())
            .as_deref(),
        Some("llm.internal.example")
    );
}

/// A stream still running at the listener timeout is ended, with an error event saying so
/// (what OpenAI SDKs raise on), and the upstream connection is closed.
#[tokio::test]
async fn a_stream_past_the_listener_timeout_ends_with_an_error_event() {
    let (primary, _, egress) = setup("").await;
    primary.push(Reply::stream(vec![chunk("a", None)], Duration::ZERO, true));
    let r = reqwest::Client::new()
        .post(egress.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(10), r.text())
        .await
        .expect("the 3s listener timeout ends the stream")
        .unwrap();
    let last = text
        .trim_end()
        .lines()
        .last()
        .unwrap()
        .strip_prefix("data: ")
        .unwrap();
    let event: Value = serde_json::from_str(last).unwrap();
    assert_eq!(event["error"]["code"], "timeout", "{text}");
    assert!(text.contains("\"a\""), "{text}");
    eventually(Duration::from_secs(3), || async {
        primary.streams_cut() == 1
    })
    .await;
}

/// A listener timeout too large for the clock is "no practical deadline", not a panic.
#[tokio::test]
async fn an_enormous_listener_timeout_does_not_break_requests() {
    tls();
    let mock = MockProvider::start().await.unwrap();
    let yaml = format!(
        r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    base_url: {}
    default: true
listeners:
  - type: model
    name: models
    port: 12000
    timeout: 3000000000000000h
"#,
        mock.url()
    );
    let egress = Egress::start(&yaml, &[]).await.unwrap();
    let r = post(&egress, chat("gpt-4o")).await;
    assert_eq!(r.status(), 200);
    let r = reqwest::Client::new()
        .post(egress.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().trim_end().ends_with("data: [DONE]"));
}
