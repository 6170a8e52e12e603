//! Prompt listeners end to end: client → edge → function-calling call through the real
//! egress → mock LLM → mock endpoint → (answer call) → client.

use std::time::Duration;

use integration_tests::harness::{Edge, Egress};
use integration_tests::mock::{MockProvider, Reply, ReplyBody, chunk};
use integration_tests::mock_filter::MockFilter;
use integration_tests::mock_http::{Canned, MockHttp, Seen};
use serde_json::{Value, json};

use crate::support::{egress_with_mock, eventually, http_client, ready_edge};

const EGRESS_YAML: &str = r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    base_url: MOCK
    access_key: provider-key
    default: true
"#;

const EDGE_YAML: &str = r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    default: true
listeners:
  - type: prompt
    name: prompts
    port: 10000
    output_filters: [scrub]
filters:
  - id: scrub
    url: FILTER
    type: http
endpoints:
  app:
    endpoint: APP
    connect_timeout: 2s
    timeout: 2s
system_prompt: You are a helpful assistant.
prompt_targets:
  - name: get_weather
    description: Get the weather forecast for a city.
    parameters:
      - name: city
        description: the city
        required: true
        type: str
      - name: days
        description: how many days ahead
        required: true
        type: int
      - name: unit
        type: str
        enum: [c, f]
        default: c
    endpoint:
      name: app
      path: /weather/{city}
      http_method: GET
      http_headers:
        x-app-key: app-secret
    system_prompt: You are a weather expert.
  - name: book_flight
    description: Book a flight.
    parameters:
      - name: to
        type: str
        required: true
    endpoint:
      name: app
      path: /flights
      http_method: POST
    auto_llm_dispatch_on_response: false
"#;

const DEFAULT_TARGET: &str = r#"
  - name: small_talk
    description: Anything else.
    default: true
    parameters:
      - name: tone
        type: str
        default: friendly
    endpoint:
      name: app
      path: /fallback
    auto_llm_dispatch_on_response: false
"#;

struct Stack {
    filter: MockFilter,
    llm: MockProvider,
    app: MockHttp,
    _egress: Egress,
    edge: Edge,
}

fn app_default(seen: &Seen) -> Canned {
    match seen.path.as_str() {
        p if p.starts_with("/weather/") => Canned::Json(200, json!({"temp": 21, "sky": "sunny"})),
        "/flights" => Canned::Json(200, json!("Booked LH123 to Rome")),
        "/fallback" => Canned::Text(200, "Happy to chat!".into()),
        _ => Canned::Json(404, json!({"error": "no such path"})),
    }
}

async fn stack(with_default_target: bool) -> Stack {
    let (llm, egress) = egress_with_mock(EGRESS_YAML).await;
    let app = MockHttp::start(app_default).await.unwrap();
    let filter = MockFilter::start("secret", "[redacted]").await.unwrap();
    let mut yaml = EDGE_YAML
        .replace("APP", app.url().trim_start_matches("http://"))
        .replace("FILTER", &filter.url());
    if with_default_target {
        yaml.push_str(DEFAULT_TARGET);
    }
    let edge = ready_edge(&yaml, &egress).await;
    Stack {
        filter,
        llm,
        app,
        _egress: egress,
        edge,
    }
}

impl Stack {
    async fn ask(&self, text: &str, stream: bool) -> reqwest::Response {
        http_client()
            .post(format!(
                "http://{}/v1/chat/completions",
                self.edge.addr("prompts")
            ))
            .header("authorization", "Bearer client-token")
            .json(&json!({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": text}]}))
            .send()
            .await
            .unwrap()
    }
}

fn completion(message: Value) -> Reply {
    Reply {
        body: ReplyBody::Json(json!({
            "id": "chatcmpl-x", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4o",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        })),
        ..Reply::default()
    }
}

fn tool_call(name: &str, arguments: &str) -> Reply {
    completion(json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}
    ]}))
}

fn said(content: &str) -> Reply {
    completion(json!({"role": "assistant", "content": content}))
}

async fn content_of(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The `data:` payloads of an SSE body.
async fn events(r: reqwest::Response) -> Vec<String> {
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

fn streamed_text(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn a_tool_call_reaches_the_endpoint_and_the_answer_is_dispatched() {
    let s = stack(false).await;
    s.llm.push(tool_call(
        "get_weather",
        r#"{"city": "San José", "days": "2"}"#,
    ));
    s.llm.push(said("Sunny and 21 degrees in San José."));
    let r = s.ask("weather in San José for 2 days?", false).await;
    assert_eq!(r.headers()["x-plano-prompt-target"], "get_weather");
    assert_eq!(content_of(r).await, "Sunny and 21 degrees in San José.");

    let calls = s.llm.requests();
    assert_eq!(calls.len(), 2);
    // 1. the targets as tools, the global system prompt first.
    let fc = &calls[0].body;
    assert_eq!(fc["tool_choice"], "auto");
    let tools = fc["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 2);
    assert_eq!(tools[0]["function"]["name"], "get_weather");
    assert_eq!(
        tools[0]["function"]["parameters"]["required"],
        json!(["city", "days"])
    );
    assert_eq!(
        tools[0]["function"]["parameters"]["properties"]["unit"],
        json!({"type": "string", "enum": ["c", "f"], "default": "c"})
    );
    assert_eq!(fc["messages"][0]["content"], "You are a helpful assistant.");
    // 2. the endpoint: path parameter encoded, the rest as the query, defaults filled in,
    //    its own headers and never the client's credentials.
    let seen = &s.app.seen()[0];
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/weather/San%20Jos%C3%A9");
    assert_eq!(seen.query.as_deref(), Some("days=2&unit=c"));
    assert_eq!(seen.headers["x-app-key"], "app-secret");
    assert!(seen.headers.contains_key("x-request-id"));
    assert!(!seen.headers.contains_key("authorization"));
    // 3. the answer call: the target's system prompt with the endpoint's result.
    let answer = &calls[1].body;
    let system = answer["messages"][0]["content"].as_str().unwrap();
    assert!(system.starts_with("You are a weather expert."), "{system}");
    assert!(system.contains(r#"{"sky":"sunny","temp":21}"#), "{system}");
    assert_eq!(
        answer["messages"][1]["content"],
        "weather in San José for 2 days?"
    );
    assert!(answer.get("tools").is_none());

    // The same, streamed: the answer call streams through to the client.
    s.llm
        .push(tool_call("get_weather", r#"{"city": "Oslo", "days": 1}"#));
    s.llm.push(Reply::stream(
        vec![
            chunk("Cold ", None),
            chunk("in Oslo.", Some("stop")),
            "[DONE]".into(),
        ],
        Duration::ZERO,
        false,
    ));
    let r = s.ask("and Oslo tomorrow?", true).await;
    assert_eq!(r.headers()["x-plano-prompt-target"], "get_weather");
    let ev = events(r).await;
    assert_eq!(streamed_text(&ev), "Cold in Oslo.");
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(s.llm.requests()[3].body["stream"], true);
    assert_eq!(s.app.seen()[1].path, "/weather/Oslo");
}

#[tokio::test]
async fn without_dispatch_the_endpoint_answer_is_the_assistant_message() {
    let s = stack(false).await;
    s.llm.push(tool_call("book_flight", r#"{"to": "Rome"}"#));
    let r = s.ask("book me a flight to Rome", false).await;
    assert_eq!(r.headers()["x-plano-prompt-target"], "book_flight");
    assert_eq!(content_of(r).await, "Booked LH123 to Rome");
    let seen = &s.app.seen()[0];
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/flights")
    );
    assert_eq!(seen.json(), json!({"to": "Rome"}));
    assert_eq!(s.llm.requests().len(), 1, "no answer call");

    s.llm.push(tool_call("book_flight", r#"{"to": "Rome"}"#));
    let ev = events(s.ask("book me a flight to Rome", true).await).await;
    assert_eq!(ev.len(), 2, "{ev:?}");
    let only: Value = serde_json::from_str(&ev[0]).unwrap();
    assert_eq!(only["object"], "chat.completion.chunk");
    assert_eq!(only["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        only["choices"][0]["delta"]["content"],
        "Booked LH123 to Rome"
    );
    assert_eq!(only["choices"][0]["finish_reason"], "stop");
    assert_eq!(ev[1], "[DONE]");
}

#[tokio::test]
async fn endpoint_errors_keep_a_4xx_and_are_502_or_504_otherwise() {
    let s = stack(false).await;
    for (code, expected) in [(404u16, 404u16), (422, 422), (500, 502), (503, 502)] {
        s.app.push(Canned::Json(
            code,
            json!({"error": "no forecast for Paris"}),
        ));
        s.llm
            .push(tool_call("get_weather", r#"{"city": "Paris", "days": 1}"#));
        let r = s.ask("weather in Paris", false).await;
        assert_eq!(r.status(), expected, "endpoint {code}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "endpoint_error");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("get_weather") && msg.contains(&code.to_string()),
            "{msg}"
        );
        // Which endpoint, which path (the template, not the user's arguments), what it said.
        let up = &body["error"]["upstream"];
        assert_eq!(up["kind"], "endpoint");
        assert_eq!(up["name"], "app");
        assert_eq!(up["path"], "/weather/{city}");
        assert_eq!(up["status"], code);
        assert!(
            up["body"]
                .as_str()
                .unwrap()
                .contains("no forecast for Paris"),
            "{up}"
        );
    }
    assert_eq!(
        s.llm.requests().len(),
        4,
        "no answer call after a failed endpoint"
    );

    // An endpoint slower than its `timeout` (2s): 504.
    s.app.push(Canned::Delayed(
        Duration::from_secs(4),
        Box::new(Canned::Json(200, json!({"temp": 1}))),
    ));
    s.llm
        .push(tool_call("get_weather", r#"{"city": "Oslo", "days": 1}"#));
    let r = s.ask("weather in Oslo", false).await;
    assert_eq!(r.status(), 504);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "endpoint_timeout");
    assert_eq!(body["error"]["upstream"]["name"], "app");
    assert!(body["error"]["upstream"].get("status").is_none());
}

#[tokio::test]
async fn bad_arguments_from_the_model_are_a_502_and_reach_no_endpoint() {
    let s = stack(false).await;
    for (name, args, hint) in [
        ("get_weather", "{\"city\": \"Paris\", ", "JSON"),
        (
            "get_weather",
            r#"{"city": "Paris", "days": "soon"}"#,
            "days",
        ),
        (
            "get_weather",
            r#"{"city": "Paris", "days": 1, "unit": "kelvin"}"#,
            "unit",
        ),
        ("get_hotels", r#"{}"#, "get_hotels"),
    ] {
        s.llm.push(tool_call(name, args));
        let r = s.ask("weather in Paris", false).await;
        assert_eq!(r.status(), 502, "{args}");
        let body: Value = r.json().await.unwrap();
        let code = body["error"]["code"].as_str().unwrap();
        assert!(
            code == "invalid_tool_arguments" || code == "invalid_tool_call",
            "{body}"
        );
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(hint), "{msg}");
    }
    assert!(s.app.seen().is_empty());
}

#[tokio::test]
async fn missing_required_parameters_get_a_clarifying_question() {
    let s = stack(false).await;
    s.llm.push(tool_call("get_weather", r#"{"city": "Paris"}"#));
    s.llm
        .push(said("For how many days would you like the forecast?"));
    let r = s.ask("weather in Paris?", false).await;
    assert_eq!(r.headers()["x-plano-prompt-target"], "get_weather");
    assert_eq!(
        content_of(r).await,
        "For how many days would you like the forecast?"
    );
    let ask = &s.llm.requests()[1].body;
    let system = ask["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("days (how many days ahead)"), "{system}");
    assert!(!system.contains("city ("), "only the missing one: {system}");
    assert!(s.app.seen().is_empty());

    // When the model cannot be asked, the edge asks, naming what is missing.
    s.llm.push(tool_call("get_weather", "{}"));
    s.llm.push(Reply::status(400));
    let text = content_of(s.ask("weather?", false).await).await;
    assert!(text.contains("city") && text.contains("days"), "{text}");
}

#[tokio::test]
async fn no_tool_goes_to_the_default_target_or_else_the_models_own_answer() {
    let s = stack(true).await;
    s.llm.push(said("Hi there!"));
    let r = s.ask("hello", false).await;
    assert_eq!(r.headers()["x-plano-prompt-target"], "small_talk");
    assert_eq!(content_of(r).await, "Happy to chat!");
    let seen = &s.app.seen()[0];
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/fallback")
    );
    assert_eq!(seen.json()["tone"], "friendly");
    assert_eq!(seen.json()["messages"][0]["content"], "hello");

    let s = stack(false).await;
    s.llm.push(said("Hi there!"));
    let r = s.ask("hello", false).await;
    assert!(r.headers().get("x-plano-prompt-target").is_none());
    assert_eq!(content_of(r).await, "Hi there!");
    s.llm.push(said("Hi again!"));
    let ev = events(s.ask("hello", true).await).await;
    assert_eq!(streamed_text(&ev), "Hi again!");
    assert!(s.app.seen().is_empty());
}

#[tokio::test]
async fn the_listeners_output_filters_see_the_answer_and_bad_bodies_are_400() {
    let s = stack(false).await;
    s.app
        .push(Canned::Json(200, json!("the secret code is 42")));
    s.llm.push(tool_call("book_flight", r#"{"to": "Rome"}"#));
    let r = s.ask("book it", false).await;
    assert_eq!(content_of(r).await, "the [redacted] code is 42");
    assert!(!s.filter.requests().is_empty());

    let r = http_client()
        .post(format!(
            "http://{}/v1/chat/completions",
            s.edge.addr("prompts")
        ))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");
    assert_eq!(s.llm.requests().len(), 1, "no LLM call for a bad body");
}

#[tokio::test]
async fn with_the_egress_down_prompt_targets_fail_fast() {
    let s = stack(false).await;
    let Stack {
        _egress: egress,
        edge,
        app,
        ..
    } = s;
    egress.stop().await.unwrap();
    let health = edge.ctx.health.clone();
    eventually(Duration::from_secs(15), || {
        let h = health.clone();
        async move { !h.is_ready() }
    })
    .await;
    let r = http_client()
        .post(format!(
            "http://{}/v1/chat/completions",
            edge.addr("prompts")
        ))
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "egress_unavailable");
    assert!(app.seen().is_empty());
}
