//! The three client APIs on the egress when the provider speaks the client's own API:
//! bodies pass through (model id replaced), credentials and version headers are the
//! provider's, errors keep the client's shape, and Responses conversations are stored.

use integration_tests::harness::Egress;
use integration_tests::mock::{MockProvider, Reply, ReplyBody};
use serde_json::{Value, json};

use crate::support::http_client;

const ANTHROPIC_KEY: &str = "sk-ant-provider-secret";

async fn setup() -> (MockProvider, MockProvider, MockProvider, Egress) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let anthropic = MockProvider::start().await.unwrap();
    let openai = MockProvider::start().await.unwrap();
    let groq = MockProvider::start().await.unwrap();
    let yaml = format!(
        r#"
version: v0.4.0
model_providers:
  - model: anthropic/claude-sonnet-4-5
    access_key: $ANTHROPIC_KEY
    base_url: {}
  - model: openai/gpt-4o
    access_key: sk-openai
    base_url: {}
    default: true
  - model: groq/llama-3.3-70b
    access_key: sk-groq
    base_url: {}
listeners:
  - type: model
    name: models
    port: 12000
    timeout: 5s
    max_retries: 0
"#,
        anthropic.url(),
        openai.url(),
        groq.url()
    );
    let egress = Egress::start(&yaml, &[("ANTHROPIC_KEY", ANTHROPIC_KEY)])
        .await
        .unwrap();
    (anthropic, openai, groq, egress)
}

fn anthropic_message(model: &str) -> Value {
    json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "hello from claude"}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 4, "cache_read_input_tokens": 3}
    })
}

#[tokio::test]
async fn messages_reach_anthropic_natively() {
    let (anthropic, _, _, egress) = setup().await;
    anthropic.push(Reply {
        body: ReplyBody::Json(anthropic_message("claude-sonnet-4-5")),
        ..Reply::default()
    });
    let res = http_client()
        .post(egress.url("/v1/messages"))
        .header("x-api-key", "client-key-not-for-upstream")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "prompt-caching-2024-07-31")
        .json(&json!({
            "model": "anthropic/claude-sonnet-4-5",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "hi"}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["x-plano-provider"],
        "anthropic/claude-sonnet-4-5"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, anthropic_message("claude-sonnet-4-5"));

    let sent = anthropic.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/v1/messages");
    assert_eq!(sent[0].headers["x-api-key"], ANTHROPIC_KEY);
    assert_eq!(sent[0].headers["anthropic-version"], "2023-06-01");
    assert_eq!(
        sent[0].headers["anthropic-beta"],
        "prompt-caching-2024-07-31"
    );
    assert!(sent[0].headers.get("authorization").is_none());
    assert_eq!(sent[0].body["model"], "claude-sonnet-4-5");
    assert_eq!(sent[0].body["max_tokens"], 100);
    // Tokens are metered from Anthropic's usage (cache reads count as input).
    let metrics = egress.metrics().render();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("plano_llm_tokens_total")
                && l.contains("kind=\"input\"")
                && l.contains("anthropic")
                && l.ends_with(" 15")),
        "{metrics}"
    );
    egress.stop().await.unwrap();
}

#[tokio::test]
async fn messages_stream_is_relayed_event_by_event() {
    let (anthropic, _, _, egress) = setup().await;
    let events = [
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 9, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 7}}),
        json!({"type": "message_stop"}),
    ];
    anthropic.push(Reply::stream(
        events.iter().map(Value::to_string).collect(),
        std::time::Duration::ZERO,
        false,
    ));
    let res = http_client()
        .post(egress.url("/v1/messages"))
        .json(&json!({
            "model": "claude-sonnet-4-5", "max_tokens": 50, "stream": true,
            "messages": [{"role": "user", "content": "hi"}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let text = res.text().await.unwrap();
    let relayed: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(relayed, events.to_vec());
    // Usage is read from message_start (input) and message_delta (output).
    let metrics = egress.metrics().render();
    let tokens = |kind: &str| {
        metrics.lines().any(|l| {
            l.starts_with("plano_llm_tokens_total")
                && l.contains(&format!("kind=\"{kind}\""))
                && l.contains("anthropic")
        })
    };
    assert!(tokens("input") && tokens("output"), "{metrics}");
    egress.stop().await.unwrap();
}

#[tokio::test]
async fn messages_errors_have_the_anthropic_shape() {
    let (anthropic, _, _, egress) = setup().await;
    let client = http_client();
    let is_anthropic_error = |v: &Value, kind: &str| {
        v["type"] == "error" && v["error"]["type"] == kind && v["error"]["message"].is_string()
    };

    let res = client
        .post(egress.url("/v1/messages"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let v: Value = res.json().await.unwrap();
    assert!(is_anthropic_error(&v, "invalid_request_error"), "{v}");

    let res = client
        .post(egress.url("/v1/messages"))
        .json(&json!({"model": "claude-nope", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let v: Value = res.json().await.unwrap();
    assert!(is_anthropic_error(&v, "not_found_error"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("claude-nope")
    );

    // An Anthropic provider's own error reaches an Anthropic client untouched.
    let upstream_error = json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: must be positive"}});
    anthropic.push(Reply {
        status: Some(http::StatusCode::BAD_REQUEST),
        body: ReplyBody::Json(upstream_error.clone()),
        ..Reply::default()
    });
    let res = client
        .post(egress.url("/v1/messages"))
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap(), upstream_error);

    // The same error reaching an OpenAI client keeps its status and message, in OpenAI's shape.
    anthropic.push(Reply {
        status: Some(http::StatusCode::BAD_REQUEST),
        body: ReplyBody::Json(upstream_error.clone()),
        ..Reply::default()
    });
    let res = client
        .post(egress.url("/v1/chat/completions"))
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let v: Value = res.json().await.unwrap();
    // (When translation to Anthropic is not possible the request fails before it is sent;
    // either way the client gets an OpenAI-shaped body.)
    assert!(v["error"]["message"].is_string(), "{v}");
    assert!(v.get("type").is_none(), "{v}");
    if anthropic.requests().len() == 2 {
        assert_eq!(status, 400);
    }
    egress.stop().await.unwrap();
}

#[tokio::test]
async fn responses_reach_openai_natively() {
    let (_, openai, _, egress) = setup().await;
    let answer = json!({
        "id": "resp_upstream_1", "object": "response", "created_at": 1, "status": "completed",
        "model": "gpt-4o", "output": [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
        "content": [{"type": "output_text", "text": "hi there", "annotations": []}]}],
        "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}
    });
    openai.push(Reply {
        body: ReplyBody::Json(answer.clone()),
        ..Reply::default()
    });
    let res = http_client()
        .post(egress.url("/v1/responses"))
        .json(&json!({"model": "openai/gpt-4o", "input": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), answer);
    let sent = openai.requests();
    assert_eq!(sent[0].path, "/v1/responses");
    assert_eq!(sent[0].body["model"], "gpt-4o");
    assert_eq!(sent[0].headers["authorization"], "Bearer sk-openai");

    // An id we never stored goes to OpenAI as is: it may be OpenAI's own.
    openai.push(Reply {
        body: ReplyBody::Json(answer.clone()),
        ..Reply::default()
    });
    let res = http_client()
        .post(egress.url("/v1/responses"))
        .json(&json!({"model": "gpt-4o", "input": "again", "previous_response_id": "resp_from_elsewhere"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        openai.requests()[1].body["previous_response_id"],
        "resp_from_elsewhere"
    );
    egress.stop().await.unwrap();
}

#[tokio::test]
async fn responses_unknown_previous_id_is_a_conflict_for_translated_providers() {
    let (_, _, groq, egress) = setup().await;
    let res = http_client()
        .post(egress.url("/v1/responses"))
        .json(&json!({"model": "groq/llama-3.3-70b", "input": "again", "previous_response_id": "resp_nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unknown_previous_response");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("resp_nope")
    );
    assert!(groq.requests().is_empty());

    let res = http_client()
        .post(egress.url("/v1/responses"))
        .json(&json!({"model": "groq/llama-3.3-70b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let v: Value = res.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("`input`"));
    egress.stop().await.unwrap();
}

/// Azure OpenAI (deployment path, `api-version`, `api-key`), Gemini's OpenAI-compatible
/// endpoint and Ollama (no key) are chat providers with their own URLs and auth.
#[tokio::test]
async fn openai_style_providers_get_their_paths_and_auth() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mock = MockProvider::start().await.unwrap();
    let yaml = format!(
        r#"
version: v0.4.0
model_providers:
  - model: azure_openai/my-gpt4o-deployment
    access_key: azure-key
    base_url: {url}
  - model: gemini/gemini-2.0-flash
    access_key: gemini-key
    base_url: {url}
  - model: ollama/llama3.2
    base_url: {url}
listeners:
  - type: model
    name: models
    port: 12000
    max_retries: 0
"#,
        url = mock.url()
    );
    let egress = Egress::start(&yaml, &[]).await.unwrap();
    for model in [
        "azure_openai/my-gpt4o-deployment",
        "gemini/gemini-2.0-flash",
        "ollama/llama3.2",
    ] {
        let res = http_client()
            .post(egress.url("/v1/chat/completions"))
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{model}");
    }
    let sent = mock.requests();
    assert_eq!(
        sent[0].path,
        "/openai/deployments/my-gpt4o-deployment/chat/completions"
    );
    assert_eq!(sent[0].query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(sent[0].headers["api-key"], "azure-key");
    assert!(sent[0].headers.get("authorization").is_none());
    assert_eq!(sent[1].path, "/v1beta/openai/chat/completions");
    assert_eq!(sent[1].headers["authorization"], "Bearer gemini-key");
    assert_eq!(sent[1].body["model"], "gemini-2.0-flash");
    assert_eq!(sent[2].path, "/v1/chat/completions");
    assert!(sent[2].headers.get("authorization").is_none());
    assert_eq!(sent[2].body["model"], "llama3.2");
    egress.stop().await.unwrap();
}

/// `previous_response_id` through a translated provider: the stored conversation (earlier
/// input and output) is sent ahead of the new input; `store: false` stores nothing.
#[tokio::test]
async fn responses_conversations_continue_across_translation() {
    let (anthropic, _, _, egress) = setup().await;
    let client = http_client();
    let first: Value = client
        .post(egress.url("/v1/responses"))
        .json(&json!({"model": "anthropic/claude-sonnet-4-5", "input": "first question"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = first["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("resp_"), "{first}");
    let res = client
        .post(egress.url("/v1/responses"))
        .json(
            &json!({"model": "anthropic/claude-sonnet-4-5", "input": "second question",
                      "previous_response_id": id}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let sent = anthropic.requests();
    let messages = sent[1].body["messages"].as_array().unwrap();
    let texts: Vec<String> = messages
        .iter()
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            blocks => blocks[0]["text"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    assert_eq!(texts.len(), 3, "{messages:?}");
    assert_eq!(texts[0], "first question");
    assert!(
        texts[1].contains("mock reply to: first question"),
        "{texts:?}"
    );
    assert_eq!(texts[2], "second question");
    assert_eq!(messages[1]["role"], "assistant");

    // Not stored: a follow-up to it is a conflict.
    let unstored: Value = client
        .post(egress.url("/v1/responses"))
        .json(&json!({"model": "anthropic/claude-sonnet-4-5", "input": "x", "store": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let res = client
        .post(egress.url("/v1/responses"))
        .json(
            &json!({"model": "anthropic/claude-sonnet-4-5", "input": "y",
                      "previous_response_id": unstored["id"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    egress.stop().await.unwrap();
}

/// A streamed Responses answer is stored too (at `response.completed`).
#[tokio::test]
async fn streamed_responses_are_stored_for_follow_ups() {
    let (anthropic, _, _, egress) = setup().await;
    let client = http_client();
    let text = client
        .post(egress.url("/v1/responses"))
        .json(&json!({"model": "anthropic/claude-sonnet-4-5", "input": "streamed question", "stream": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let completed: Value = text
        .split("\n\n")
        .find(|e| e.starts_with("event: response.completed"))
        .and_then(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap())
        .unwrap_or_else(|| panic!("no response.completed in {text}"));
    let id = completed["response"]["id"].as_str().unwrap();
    let res = client
        .post(egress.url("/v1/responses"))
        .json(&json!({"model": "anthropic/claude-sonnet-4-5", "input": "next", "previous_response_id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        anthropic.requests()[1].body["messages"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    egress.stop().await.unwrap();
}

/// `/v1/messages/count_tokens`: asked natively of an Anthropic provider, estimated for others.
#[tokio::test]
async fn count_tokens_native_or_estimated() {
    let (anthropic, _, _, egress) = setup().await;
    anthropic.push(Reply {
        body: ReplyBody::Json(json!({"input_tokens": 42})),
        ..Reply::default()
    });
    let ask = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "how many tokens is this?"}]});
    let res = http_client()
        .post(egress.url("/v1/messages/count_tokens"))
        .json(&ask("claude-sonnet-4-5"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["input_tokens"], 42);
    let sent = &anthropic.requests()[0];
    assert_eq!(sent.path, "/v1/messages/count_tokens");
    assert_eq!(sent.headers["x-api-key"], ANTHROPIC_KEY);

    let res = http_client()
        .post(egress.url("/v1/messages/count_tokens"))
        .json(&ask("openai/gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-plano-estimate"], "true");
    let n = res.json::<Value>().await.unwrap()["input_tokens"]
        .as_u64()
        .unwrap();
    assert!((5..40).contains(&n), "{n}");
    egress.stop().await.unwrap();
}
