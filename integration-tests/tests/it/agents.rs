//! Agent listeners end to end: client → edge → (orchestration through the real egress →
//! mock LLM) → mock agents.

use std::sync::Arc;
use std::time::Duration;

use integration_tests::harness::{Edge, Egress};
use integration_tests::mock::{MockProvider, Reply, ReplyBody};
use integration_tests::mock_filter::{FilterReply, MockFilter};
use integration_tests::mock_http::{Canned, MockHttp, agent_stream};
use serde_json::{Value, json};

use crate::support::{egress_with_mock, http_client, ready_edge};

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
agents:
  - id: weather_agent
    url: WEATHER
  - id: flight_agent
    url: FLIGHTS/agents/flights
  - id: gone_agent
    url: http://127.0.0.1:DEAD_PORT
filters:
  - id: scrub
    url: FILTER
    type: http
listeners:
  - type: agent
    name: travel
    port: 10000
    agents:
      - id: flight_agent
        description: searches and books flights
      - id: weather_agent
        description: answers questions about weather forecasts
        default: true
  - type: agent
    name: solo
    port: 10001
    agents:
      - id: flight_agent
        description: flights
  - type: agent
    name: nodefault
    port: 10002
    agents:
      - id: flight_agent
        description: flights
      - id: weather_agent
        description: weather
  - type: agent
    name: broken
    port: 10003
    agents:
      - id: gone_agent
  - type: agent
    name: guarded
    port: 10004
    agents:
      - id: weather_agent
        input_filters: [scrub]
  - type: agent
    name: fallbacks
    port: 10005
    agents:
      - id: flight_agent
        description: searches and books flights
      - id: weather_agent
        description: answers questions about weather forecasts
        default: true
  - type: agent
    name: hurried
    port: 10006
    timeout: 2s
    agents:
      - id: flight_agent
        description: flights
overrides:
  agent_orchestration_model: openai/gpt-4o
"#;

struct Stack {
    llm: MockProvider,
    weather: MockHttp,
    flights: MockHttp,
    filter: MockFilter,
    _egress: Egress,
    edge: Edge,
    _dead: tokio::task::JoinHandle<()>,
}

/// An agent that accepts connections and closes them unanswered: a dead agent on a port
/// the test holds (no bind-release-rebind race for a "free" port).
async fn dead_agent() -> (u16, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            drop(tcp);
        }
    });
    (port, task)
}

async fn stack() -> Stack {
    let (llm, egress) = egress_with_mock(EGRESS_YAML).await;
    let weather = MockHttp::agent("weather_agent", Duration::ZERO)
        .await
        .unwrap();
    let flights = MockHttp::agent("flight_agent", Duration::ZERO)
        .await
        .unwrap();
    let filter = MockFilter::start("secret", "[redacted]").await.unwrap();
    let (dead_port, dead) = dead_agent().await;
    let yaml = EDGE_YAML
        .replace("WEATHER", &weather.url())
        .replace("FLIGHTS", &flights.url())
        .replace("DEAD_PORT", &dead_port.to_string())
        .replace("FILTER", &filter.url());
    let edge = ready_edge(&yaml, &egress).await;
    Stack {
        llm,
        weather,
        flights,
        filter,
        _egress: egress,
        edge,
        _dead: dead,
    }
}

fn chat(text: &str, stream: bool) -> Value {
    json!({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": text}]})
}

impl Stack {
    fn url(&self, listener: &str) -> String {
        format!("http://{}/v1/chat/completions", self.edge.addr(listener))
    }
}

/// The orchestration model answering `content`.
fn choice(content: &str) -> Reply {
    Reply {
        body: ReplyBody::Json(json!({
            "id": "chatcmpl-orch", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}
        })),
        ..Reply::default()
    }
}

async fn answer(r: reqwest::Response) -> (u16, String, String, Value) {
    let status = r.status().as_u16();
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (agent, reason) = (h("x-plano-agent"), h("x-plano-agent-reason"));
    (status, agent, reason, r.json().await.unwrap_or(Value::Null))
}

fn selections(edge: &Edge, listener: &str, agent: &str, reason: &str) -> f64 {
    edge.ctx
        .metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("plano_agent_selections_total{"))
        .filter(|l| {
            l.contains(&format!("listener=\"{listener}\""))
                && l.contains(&format!("agent=\"{agent}\""))
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test]
async fn header_picks_the_agent_and_an_unknown_id_is_refused() {
    let s = stack().await;
    let c = http_client();
    let r = c
        .post(s.url("travel"))
        .header("x-plano-agent", "flight_agent")
        .header("x-request-id", "agents-rid-1")
        .json(&chat("book me a flight", false))
        .send()
        .await
        .unwrap();
    let (status, agent, reason, body) = answer(r).await;
    assert_eq!(
        (status, agent.as_str(), reason.as_str()),
        (200, "flight_agent", "header")
    );
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "answer from flight_agent"
    );
    assert!(
        s.llm.requests().is_empty(),
        "no orchestration call for a header choice"
    );
    let seen = &s.flights.seen()[0];
    // The agent url's path is kept and the client's path appended.
    assert_eq!(seen.path, "/agents/flights/v1/chat/completions");
    assert_eq!(seen.headers["x-request-id"], "agents-rid-1");
    assert_eq!(seen.headers["x-plano-agent"], "flight_agent");
    assert_eq!(seen.json()["messages"][0]["content"], "book me a flight");
    assert!(s.weather.seen().is_empty());

    let r = c
        .post(s.url("travel"))
        .header("x-plano-agent", "hotel_agent")
        .json(&chat("a room", false))
        .send()
        .await
        .unwrap();
    let (status, _, _, body) = answer(r).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "unknown_agent");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("hotel_agent")
            && msg.contains("flight_agent")
            && msg.contains("weather_agent"),
        "{msg}"
    );
    assert_eq!(s.flights.seen().len(), 1);
}

#[tokio::test]
async fn the_orchestration_model_chooses_the_agent() {
    let s = stack().await;
    let before = selections(&s.edge, "travel", "flight_agent", "llm");
    s.llm.push(choice(r#"{"agent": "flight_agent"}"#));
    let r = http_client()
        .post(s.url("travel"))
        .json(&chat("I need to get from Oslo to Rome on Friday", false))
        .send()
        .await
        .unwrap();
    let (status, agent, reason, body) = answer(r).await;
    assert_eq!(
        (status, agent.as_str(), reason.as_str()),
        (200, "flight_agent", "llm")
    );
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "answer from flight_agent"
    );
    // The orchestration call went through the egress with the override model, the agents'
    // descriptions, the conversation and a schema constraining the answer.
    let orch = &s.llm.requests()[0].body;
    assert_eq!(orch["model"], "gpt-4o");
    assert_eq!(orch["response_format"]["type"], "json_schema");
    assert_eq!(
        orch["response_format"]["json_schema"]["schema"]["properties"]["agent"]["enum"],
        json!(["flight_agent", "weather_agent"])
    );
    let all = orch["messages"].to_string();
    assert!(all.contains("searches and books flights"), "{all}");
    assert!(
        all.contains("answers questions about weather forecasts"),
        "{all}"
    );
    assert!(all.contains("Oslo to Rome"), "{all}");
    // The agent gets the client's request, not the orchestration one.
    let seen = s.flights.seen()[0].json();
    assert_eq!(
        seen,
        chat("I need to get from Oslo to Rome on Friday", false)
    );
    assert_eq!(
        selections(&s.edge, "travel", "flight_agent", "llm"),
        before + 1.0
    );
}

#[tokio::test]
async fn a_garbage_or_failed_choice_falls_back_to_the_default_agent() {
    let s = stack().await;
    let c = http_client();
    // The counter is process-wide; `fallbacks` is this test's own listener, so the change
    // across it is exactly this test's three fallbacks.
    let before = selections(&s.edge, "fallbacks", "weather_agent", "default");
    // Prose, an id that is not listed, and a failed call (400 is not retried by the egress).
    for reply in [
        choice("I would pick the hotel specialist"),
        choice(r#"{"agent": "hotel_agent"}"#),
        Reply::status(400),
    ] {
        s.llm.push(reply);
        let r = c
            .post(s.url("fallbacks"))
            .json(&chat("fly me to the moon", false))
            .send()
            .await
            .unwrap();
        let (status, agent, reason, body) = answer(r).await;
        assert_eq!(
            (status, agent.as_str(), reason.as_str()),
            (200, "weather_agent", "default")
        );
        assert_eq!(
            body["choices"][0]["message"]["content"],
            "answer from weather_agent"
        );
    }
    assert_eq!(s.weather.seen().len(), 3);
    assert!(s.flights.seen().is_empty());
    assert_eq!(
        selections(&s.edge, "fallbacks", "weather_agent", "default"),
        before + 3.0
    );

    // Without a `default: true` agent, the first listed one.
    s.llm.push(choice("no idea"));
    let r = c
        .post(s.url("nodefault"))
        .json(&chat("hello", false))
        .send()
        .await
        .unwrap();
    let (status, agent, reason, _) = answer(r).await;
    assert_eq!(
        (status, agent.as_str(), reason.as_str()),
        (200, "flight_agent", "default")
    );
}

#[tokio::test]
async fn a_single_agent_needs_no_choice_and_a_dead_one_is_a_clear_502() {
    let s = stack().await;
    let c = http_client();
    let r = c
        .post(s.url("solo"))
        .json(&chat("anything", false))
        .send()
        .await
        .unwrap();
    let (status, agent, reason, _) = answer(r).await;
    assert_eq!(
        (status, agent.as_str(), reason.as_str()),
        (200, "flight_agent", "single")
    );
    assert!(s.llm.requests().is_empty());
    assert_eq!(selections(&s.edge, "solo", "flight_agent", "single"), 1.0);

    let r = c
        .post(s.url("broken"))
        .json(&chat("anything", false))
        .send()
        .await
        .unwrap();
    let (status, agent, _, body) = answer(r).await;
    assert_eq!((status, agent.as_str()), (502, "gone_agent"));
    assert_eq!(body["error"]["code"], "agent_unreachable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gone_agent"),
        "{body}"
    );
}

#[tokio::test]
async fn agent_errors_keep_a_4xx_and_are_502_or_504_otherwise() {
    let s = stack().await;
    let c = http_client();
    for (code, expected) in [(404u16, 404u16), (400, 400), (500, 502)] {
        s.flights.push(Canned::Json(
            code,
            json!({"error": {"message": "no such route"}}),
        ));
        let r = c
            .post(s.url("solo"))
            .json(&chat("anything", false))
            .send()
            .await
            .unwrap();
        let (status, agent, _, body) = answer(r).await;
        assert_eq!(
            (status, agent.as_str()),
            (expected, "flight_agent"),
            "agent {code}"
        );
        assert_eq!(body["error"]["code"], "agent_error");
        let up = &body["error"]["upstream"];
        assert_eq!(up["kind"], "agent");
        assert_eq!(up["name"], "flight_agent");
        assert_eq!(up["status"], code);
        assert!(
            up["body"].as_str().unwrap().contains("no such route"),
            "{up}"
        );
    }

    // An agent that does not answer within the listener timeout (2s): 504.
    s.flights.push(Canned::Delayed(
        Duration::from_secs(4),
        Box::new(Canned::Json(200, json!({}))),
    ));
    let r = c
        .post(s.url("hurried"))
        .json(&chat("anything", false))
        .send()
        .await
        .unwrap();
    let (status, _, _, body) = answer(r).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "agent_timeout");
}

#[tokio::test]
async fn an_agent_stream_reaches_the_client_event_by_event() {
    let s = stack().await;
    let gate = Arc::new(tokio::sync::Notify::new());
    let mut events = agent_stream("weather_agent");
    let rest = events.split_off(1);
    s.weather.push(Canned::SseGated {
        first: events,
        gate: gate.clone(),
        rest,
    });
    let mut r = http_client()
        .post(s.url("travel"))
        .header("x-plano-agent", "weather_agent")
        .json(&chat("rain tomorrow?", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-plano-agent"], "weather_agent");
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    // The agent holds the rest of its stream until the client has seen the first event;
    // an edge that buffered would never deliver it (the bound is a hang guard).
    let first = tokio::time::timeout(Duration::from_secs(10), r.chunk())
        .await
        .expect("first event while the agent holds the rest")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("answer "));
    gate.notify_one();
    let mut rest = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.contains("weather_agent") && rest.contains("[DONE]"),
        "{rest}"
    );
}

#[tokio::test]
async fn an_agents_input_filters_run_before_it_is_called() {
    let s = stack().await;
    let c = http_client();
    let r = c
        .post(s.url("guarded"))
        .json(&chat("my secret plan", false))
        .send()
        .await
        .unwrap();
    let (status, agent, _, _) = answer(r).await;
    assert_eq!((status, agent.as_str()), (200, "weather_agent"));
    assert_eq!(s.filter.requests()[0].path, "/v1/chat/completions");
    let seen = s.weather.seen()[0].json();
    assert_eq!(seen["messages"][0]["content"], "my [redacted] plan");

    // A block answers the client with the filter's status; the agent is not called.
    s.filter.push(FilterReply::Status(
        403,
        r#"{"error": "not allowed"}"#.into(),
    ));
    let r = c
        .post(s.url("guarded"))
        .json(&chat("another secret", false))
        .send()
        .await
        .unwrap();
    let (status, agent, _, body) = answer(r).await;
    assert_eq!((status, agent.as_str()), (403, "weather_agent"));
    assert_eq!(body["error"]["code"], "filter_blocked");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("scrub"),
        "{body}"
    );
    assert_eq!(s.weather.seen().len(), 1);
}

#[tokio::test]
async fn other_routes_on_an_agent_listener_go_to_the_egress() {
    let s = stack().await;
    let r = http_client()
        .get(format!("http://{}/v1/models", s.edge.addr("travel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-plano-agent").is_none());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert!(s.weather.seen().is_empty() && s.flights.seen().is_empty());
}

#[tokio::test]
async fn with_the_egress_down_agents_still_answer_through_the_default() {
    let Stack {
        weather,
        _egress: egress,
        edge,
        ..
    } = stack().await;
    egress.stop().await.unwrap();
    let r = http_client()
        .post(format!(
            "http://{}/v1/chat/completions",
            edge.addr("travel")
        ))
        .json(&chat("anything", false))
        .send()
        .await
        .unwrap();
    let (status, agent, reason, _) = answer(r).await;
    assert_eq!(
        (status, agent.as_str(), reason.as_str()),
        (200, "weather_agent", "default")
    );
    assert_eq!(weather.seen().len(), 1);
}
