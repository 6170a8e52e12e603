//! The egress request path's own promises, end to end against the mock: provider hint
//! headers resolve like models and never 404 alone; an answer that is not the provider's
//! API (an HTML page with a 200, a stream of garbage, a stream opening with keep-alives
//! and then nothing) is a broken attempt, retried and failed over, never a fake success;
//! the base URL answers probes; durations run until bodies end.

use std::time::Duration;

use integration_tests::harness::Egress;
use integration_tests::mock::{MockProvider, Reply, ReplyBody, chunk};
use serde_json::{Value, json};

use crate::support::install_ring as tls;

/// Provider names are unique to this module: metrics are process-wide.
fn config(primary: &MockProvider, backup: &MockProvider) -> String {
    format!(
        r#"
version: v0.4.0
model_providers:
  - name: path-primary
    model: openai/gpt-4o
    base_url: {p}
    access_key: k
    default: true
  - name: path-backup
    model: openai/gpt-4o-mini
    base_url: {b}
    access_key: k
  - name: path-claude
    model: anthropic/claude-sonnet-4-0
    base_url: {p}
    access_key: k
  - name: path-mistral
    model: mistral/*
    base_url: {b}
    access_key: k
model_aliases:
  sturdy:
    target: path-primary
    fallbacks: [gpt-4o-mini]
  sturdy-claude:
    target: path-claude
    fallbacks: [path-backup]
  large:
    target: mistral/mistral-large
listeners:
  - type: model
    name: models
    port: 12000
    timeout: 5s
    first_token_timeout: 400ms
    max_retries: 1
"#,
        p = primary.url(),
        b = backup.url()
    )
}

async fn setup() -> (MockProvider, MockProvider, Egress) {
    tls();
    let primary = MockProvider::start().await.unwrap();
    let backup = MockProvider::start().await.unwrap();
    let egress = Egress::start(&config(&primary, &backup), &[])
        .await
        .unwrap();
    (primary, backup, egress)
}

async fn post(
    egress: &Egress,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(egress.url(path)).json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn chat(model: Option<&str>, stream: bool) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": "hi"}], "stream": stream});
    if let Some(m) = model {
        body["model"] = json!(m);
    }
    body
}

fn messages(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 50, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

fn responses(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "input": "hi"})
}

fn metric(egress: &Egress, prefix: &str, needles: &[&str]) -> f64 {
    let text = egress.metrics().render();
    text.lines()
        .filter(|l| l.starts_with(prefix) && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn html_200() -> Reply {
    Reply {
        body: ReplyBody::Bytes {
            chunks: vec![b"<html><body><h1>Welcome to nginx!</h1></body></html>".to_vec()],
            content_type: "text/html".into(),
            gap: Duration::ZERO,
            then_hang: false,
        },
        ..Reply::default()
    }
}

fn sse_bytes(chunks: &[&str], then_hang: bool) -> Reply {
    Reply {
        body: ReplyBody::Bytes {
            chunks: chunks.iter().map(|c| c.as_bytes().to_vec()).collect(),
            content_type: "text/event-stream".into(),
            gap: Duration::ZERO,
            then_hang,
        },
        ..Reply::default()
    }
}

#[tokio::test]
async fn hint_headers_resolve_like_the_body_model() {
    let (primary, backup, egress) = setup().await;
    // A bare model id, with the provider named differently (Plano's hurl check).
    let r = post(
        &egress,
        "/v1/chat/completions",
        &[("x-arch-llm-provider-hint", "gpt-4o")],
        chat(Some("gpt-4o-mini"), false),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-plano-provider"], "path-primary");
    assert_eq!(primary.requests().len(), 1);
    // `provider/model`, an alias and a wildcard model, on our header.
    for (hint, provider) in [
        ("openai/gpt-4o-mini", "path-backup"),
        ("sturdy", "path-primary"),
        ("mistral/codestral", "path-mistral"),
    ] {
        let r = post(
            &egress,
            "/v1/chat/completions",
            &[("x-plano-llm-provider-hint", hint)],
            chat(Some("gpt-4o"), false),
        )
        .await;
        assert_eq!(r.status(), 200, "{hint}");
        assert_eq!(r.headers()["x-plano-provider"], provider, "{hint}");
    }
    assert_eq!(backup.requests().last().unwrap().body["model"], "codestral");
}

#[tokio::test]
async fn an_unknown_hint_falls_back_to_the_body_model_then_the_default() {
    let (_primary, _backup, egress) = setup().await;
    let before = metric(
        &egress,
        "plano_llm_provider_hint_misses_total",
        &["x-arch-llm-provider-hint"],
    );
    let r = post(
        &egress,
        "/v1/chat/completions",
        &[("x-arch-llm-provider-hint", "no-such-model")],
        chat(Some("gpt-4o-mini"), false),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-plano-provider"],
        "path-backup",
        "the body's model"
    );
    let r = post(
        &egress,
        "/v1/chat/completions",
        &[("x-arch-llm-provider-hint", "no-such-model")],
        chat(None, false),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-plano-provider"],
        "path-primary",
        "the default"
    );
    let after = metric(
        &egress,
        "plano_llm_provider_hint_misses_total",
        &["x-arch-llm-provider-hint"],
    );
    assert!(after - before >= 2.0, "{before} → {after}");
    // The body's own unknown model is still a 404, named as such.
    let r = post(
        &egress,
        "/v1/chat/completions",
        &[("x-arch-llm-provider-hint", "no-such-model")],
        chat(Some("gpt-9"), false),
    )
    .await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("gpt-9"));
}

#[tokio::test]
async fn an_alias_to_a_wildcard_model_serves_at_request_time() {
    let (_primary, backup, egress) = setup().await;
    let r = post(
        &egress,
        "/v1/chat/completions",
        &[],
        chat(Some("large"), false),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-plano-provider"], "path-mistral");
    assert_eq!(backup.requests()[0].body["model"], "mistral-large");
}

#[tokio::test]
async fn a_200_html_page_is_a_broken_answer_in_the_clients_shape() {
    let (primary, backup, egress) = setup().await;
    // Chat pass-through: retried (max_retries: 1), then 502 in OpenAI's shape.
    primary.push(html_200());
    primary.push(html_200());
    let r = post(
        &egress,
        "/v1/chat/completions",
        &[],
        chat(Some("path-primary"), false),
    )
    .await;
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_failed", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a JSON object"),
        "{body}"
    );
    assert_eq!(primary.requests().len(), 2, "retried like a reset");
    // Through an alias it fails over.
    primary.push(html_200());
    primary.push(html_200());
    let r = post(
        &egress,
        "/v1/chat/completions",
        &[],
        chat(Some("sturdy"), false),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-plano-provider"], "path-backup");
    assert_eq!(backup.requests().len(), 1);
    // Messages pass-through to an Anthropic provider: 502 in Anthropic's shape.
    primary.push(html_200());
    primary.push(html_200());
    let r = post(&egress, "/v1/messages", &[], messages("path-claude", false)).await;
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
}

#[tokio::test]
async fn a_stream_opening_with_keep_alives_can_still_fail_over() {
    let (primary, backup, egress) = setup().await;
    // Comments and a keep-alive, then nothing: no event within first_token_timeout.
    primary.push(sse_bytes(&[": ping\n\n", ":\n\n"], true));
    primary.push(sse_bytes(&[": ping\n\n"], true));
    let r = post(
        &egress,
        "/v1/chat/completions",
        &[],
        chat(Some("sturdy"), true),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-plano-provider"], "path-backup");
    assert_eq!(r.headers()["x-plano-attempts"], "3");
    let text = r.text().await.unwrap();
    assert!(
        text.contains("tok4") && text.trim_end().ends_with("data: [DONE]"),
        "{text}"
    );
    // A comment before real events is no problem: the stream is relayed whole.
    let first = format!(": ping\n\ndata: {}\n\n", chunk("hello", None));
    let done = format!("data: {}\n\ndata: [DONE]\n\n", chunk("", Some("stop")));
    primary.push(sse_bytes(&[&first, &done], false));
    let r = post(
        &egress,
        "/v1/chat/completions",
        &[],
        chat(Some("path-primary"), true),
    )
    .await;
    assert_eq!(r.headers()["x-plano-provider"], "path-primary");
    let text = r.text().await.unwrap();
    assert!(
        text.contains("hello") && text.trim_end().ends_with("data: [DONE]"),
        "{text}"
    );
    assert!(backup.requests().len() == 1);
}

#[tokio::test]
async fn a_streaming_provider_answering_garbage_is_never_a_fake_success() {
    let (primary, backup, egress) = setup().await;
    let not_json = || sse_bytes(&["data: <html>oops</html>\n\n"], false);
    // Chat, pass-through: wrong content type, then a first event that is not JSON.
    primary.push(html_200());
    primary.push(not_json());
    let r = post(
        &egress,
        "/v1/chat/completions",
        &[],
        chat(Some("path-primary"), true),
    )
    .await;
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("text/html") && message.contains("not a JSON object"),
        "{message}"
    );
    // Messages translated to a chat provider: 502 in Anthropic's shape, no made-up answer.
    primary.push(not_json());
    primary.push(not_json());
    let r = post(&egress, "/v1/messages", &[], messages("path-primary", true)).await;
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    // Responses translated to chat, garbage on the target: fails over to the fallback.
    primary.push(html_200());
    primary.push(html_200());
    let r = post(
        &egress,
        "/v1/responses",
        &[],
        responses("sturdy-claude", true),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-plano-provider"], "path-backup");
    let text = r.text().await.unwrap();
    assert!(text.contains("response.completed"), "{text}");
    assert_eq!(backup.requests().len(), 1);
}

#[tokio::test]
async fn the_base_url_answers_probes() {
    let (_primary, _backup, egress) = setup().await;
    let client = reqwest::Client::new();
    let r = client.head(egress.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client.get(egress.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("plano-egress"));
}

#[tokio::test]
async fn a_streams_upstream_duration_runs_until_its_body_ends() {
    let (primary, _backup, egress) = setup().await;
    let http_sum = || {
        metric(
            &egress,
            "plano_http_request_duration_seconds_sum",
            &[
                "component=\"egress\"",
                "listener=\"",
                "route=\"/v1/chat/completions\"",
                "status_class=\"2xx\"",
            ],
        )
    };
    let http_before = http_sum();
    let events: Vec<String> = (0..4).map(|i| chunk(&format!("t{i}"), None)).collect();
    primary.push(Reply::stream(events, Duration::from_millis(150), false));
    let r = post(
        &egress,
        "/v1/chat/completions",
        &[],
        chat(Some("path-primary"), true),
    )
    .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("t3"), "{text}");
    // The stream relay records when it ends, just after the client saw the last byte.
    crate::support::eventually(Duration::from_secs(3), || async {
        metric(
            &egress,
            "plano_llm_upstream_duration_seconds_sum",
            &["path-primary"],
        ) >= 0.45
    })
    .await;
    // The request's own duration ends with its body too, not at the response headers
    // (a lower bound: other tests only add to the sum).
    crate::support::eventually(Duration::from_secs(3), || async {
        http_sum() - http_before >= 0.45
    })
    .await;
}

/// Retry-After and backoff on tokio's paused clock: the 3 s wait costs no wall time. The
/// mock answers at once over loopback, so the clock only jumps while the egress sleeps.
#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_on_a_paused_clock() {
    let (primary, _backup, egress) = setup().await;
    primary.push(Reply::status(429).header("retry-after", "3"));
    let wall = std::time::Instant::now();
    let started = tokio::time::Instant::now();
    let r = post(
        &egress,
        "/v1/chat/completions",
        &[],
        chat(Some("path-primary"), false),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-plano-attempts"], "2");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "Retry-After honoured"
    );
    assert!(
        wall.elapsed() < Duration::from_secs(3),
        "no wall-clock wait"
    );
    // Time spent sleeping between attempts is not the proxy's overhead.
    let overhead: f64 = r.headers()["x-plano-overhead-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(overhead < 1000.0, "{overhead}");
}
