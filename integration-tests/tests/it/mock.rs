//! The mock provider's own wire formats, checked directly with reqwest (not through the
//! egress): every route, stream and non-stream, the default tool-use turns, scripted
//! replies, errors in each API's shape, and AWS event-stream frames decoded by a small
//! decoder written here (CRCs checked).

use std::time::Duration;

use integration_tests::mock::{
    MockOptions, MockProvider, Reply, ReplyBody, anthropic_error_event, anthropic_text_stream,
    bedrock_exception_frame, bedrock_stream, responses_text_stream,
};
use serde_json::{Value, json};

async fn post(url: String, headers: &[(&str, &str)], body: &Value) -> reqwest::Response {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut req = reqwest::Client::new().post(url).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    tokio::time::timeout(Duration::from_secs(10), req.send())
        .await
        .unwrap()
        .unwrap()
}

async fn text(res: reqwest::Response) -> String {
    tokio::time::timeout(Duration::from_secs(10), res.text())
        .await
        .unwrap()
        .unwrap()
}

/// SSE events as (event name, parsed data); `[DONE]` is kept as a string.
fn sse(body: &str) -> Vec<(Option<String>, Value)> {
    assert!(body.ends_with("\n\n"), "stream must end with a blank line");
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = Vec::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push(d);
                } else {
                    panic!("unexpected SSE line: {line:?}");
                }
            }
            let data = data.join("\n");
            let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
            (name, value)
        })
        .collect()
}

const ANTHROPIC_HEADERS: &[(&str, &str)] = &[
    ("x-api-key", "sk-test"),
    ("anthropic-version", "2023-06-01"),
];

fn weather_tool_schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
           "required": ["city"]})
}

// ---------- Anthropic Messages ----------

#[tokio::test]
async fn anthropic_message_echoes_the_user_and_counts_usage() {
    let mock = MockProvider::start().await.unwrap();
    let body = json!({"model": "claude-x", "max_tokens": 64,
                      "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}]});
    let res = post(
        format!("{}/v1/messages", mock.url()),
        ANTHROPIC_HEADERS,
        &body,
    )
    .await;
    assert_eq!(res.status(), 200);
    let m: Value = res.json().await.unwrap();
    assert_eq!(m["type"], "message");
    assert_eq!(m["role"], "assistant");
    assert_eq!(m["model"], "claude-x");
    assert_eq!(
        m["content"],
        json!([{"type": "text", "text": "mock reply to: hello there"}])
    );
    assert_eq!(m["stop_reason"], "end_turn");
    assert!(m["stop_sequence"].is_null());
    let sent = serde_json::to_vec(&body).unwrap().len() as u64;
    assert_eq!(m["usage"]["input_tokens"], sent / 4);
    assert_eq!(m["usage"]["output_tokens"], 5);
    assert_eq!(m["usage"]["cache_read_input_tokens"], 0);
    let seen = &mock.requests()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
}

#[tokio::test]
async fn anthropic_stream_has_the_full_event_sequence() {
    let mock = MockProvider::start().await.unwrap();
    mock.push(Reply::default().cached_tokens(3).cache_write_tokens(2));
    let body = json!({"model": "claude-x", "max_tokens": 64, "stream": true,
                      "messages": [{"role": "user", "content": "one two three"}]});
    let res = post(
        format!("{}/v1/messages", mock.url()),
        ANTHROPIC_HEADERS,
        &body,
    )
    .await;
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let events = sse(&text(res).await);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    for (name, data) in &events {
        assert_eq!(
            data["type"],
            name.as_deref().unwrap(),
            "data.type names the event"
        );
    }
    let deltas = names
        .iter()
        .filter(|n| **n == "content_block_delta")
        .count();
    assert!(deltas >= 2, "text arrives in several deltas: {names:?}");
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);

    let start = &events[0].1["message"];
    assert_eq!(start["content"], json!([]));
    assert!(start["stop_reason"].is_null());
    // Anthropic's input_tokens leaves out what was read from or written to the cache.
    let prompt = serde_json::to_vec(&body).unwrap().len() as u64 / 4;
    assert_eq!(start["usage"]["input_tokens"], prompt - 5);
    assert_eq!(start["usage"]["cache_read_input_tokens"], 3);
    assert_eq!(start["usage"]["cache_creation_input_tokens"], 2);
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = events
        .iter()
        .filter(|(n, _)| n.as_deref() == Some("content_block_delta"))
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, "mock reply to: one two three");
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 6);
}

#[tokio::test]
async fn anthropic_tool_use_then_tool_result() {
    let mock = MockProvider::start().await.unwrap();
    let tools =
        json!([{"name": "get_weather", "description": "w", "input_schema": weather_tool_schema()}]);
    let res = post(
        format!("{}/v1/messages", mock.url()),
        ANTHROPIC_HEADERS,
        &json!({"model": "claude-x", "max_tokens": 64, "stream": true, "tools": tools,
                "messages": [{"role": "user", "content": "weather?"}]}),
    )
    .await;
    let events = sse(&text(res).await);
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "tool_use", "id": "toolu_mock_1", "name": "get_weather", "input": {}})
    );
    let fragments: Vec<String> = events
        .iter()
        .filter(|(n, _)| n.as_deref() == Some("content_block_delta"))
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(fragments.len() >= 2, "{fragments:?}");
    let input: Value = serde_json::from_str(&fragments.concat()).unwrap();
    assert_eq!(input, json!({"city": "mock"}));
    assert_eq!(
        events[events.len() - 2].1["delta"]["stop_reason"],
        "tool_use"
    );

    let res = post(
        format!("{}/v1/messages", mock.url()),
        ANTHROPIC_HEADERS,
        &json!({"model": "claude-x", "max_tokens": 64, "tools": tools, "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_mock_1", "name": "get_weather", "input": {"city": "mock"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_mock_1",
                                          "content": [{"type": "text", "text": "sunny"}]}]}
        ]}),
    )
    .await;
    let m: Value = res.json().await.unwrap();
    assert_eq!(m["content"][0]["text"], "tool result: sunny");
    assert_eq!(m["stop_reason"], "end_turn");

    // Non-streaming tool use carries the whole input.
    let res = post(
        format!("{}/v1/messages", mock.url()),
        ANTHROPIC_HEADERS,
        &json!({"model": "claude-x", "max_tokens": 64, "tools": tools,
                "messages": [{"role": "user", "content": "weather?"}]}),
    )
    .await;
    let m: Value = res.json().await.unwrap();
    assert_eq!(
        m["content"],
        json!([{"type": "tool_use", "id": "toolu_mock_1", "name": "get_weather", "input": {"city": "mock"}}])
    );
    assert_eq!(m["stop_reason"], "tool_use");
}

#[tokio::test]
async fn anthropic_errors_scripts_and_strict_checks() {
    let mock = MockProvider::start().await.unwrap();
    let url = format!("{}/v1/messages", mock.url());
    let body =
        json!({"model": "c", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]});
    mock.push(Reply::status(429).header("retry-after", "2"));
    let res = post(url.clone(), ANTHROPIC_HEADERS, &body).await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "2");
    let e: Value = res.json().await.unwrap();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "rate_limit_error");
    assert!(e["error"]["message"].as_str().unwrap().contains("429"));

    mock.push(Reply::named_stream(
        anthropic_text_stream("c", &["Hel", "lo"]),
        Duration::ZERO,
        false,
    ));
    let events = sse(&text(post(url.clone(), ANTHROPIC_HEADERS, &body).await).await);
    assert_eq!(events[3].1["delta"]["text"], "Hel");
    assert_eq!(events.last().unwrap().0.as_deref(), Some("message_stop"));

    mock.push(Reply::text("scripted words"));
    let m: Value = post(url.clone(), ANTHROPIC_HEADERS, &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["content"][0]["text"], "scripted words");

    let strict = MockProvider::start_with(MockOptions {
        strict: true,
        ..MockOptions::default()
    })
    .await
    .unwrap();
    let url = format!("{}/v1/messages", strict.url());
    let res = post(url.clone(), &[("anthropic-version", "2023-06-01")], &body).await;
    assert_eq!(res.status(), 401);
    let e: Value = res.json().await.unwrap();
    assert_eq!(e["error"]["type"], "authentication_error");
    let res = post(url.clone(), &[("x-api-key", "k")], &body).await;
    assert_eq!(res.status(), 400);
    let e: Value = res.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anthropic-version")
    );
    let res = post(
        url.clone(),
        ANTHROPIC_HEADERS,
        &json!({"model": "c", "messages": []}),
    )
    .await;
    assert_eq!(res.status(), 400);
    assert_eq!(post(url, ANTHROPIC_HEADERS, &body).await.status(), 200);
}

// ---------- Bedrock Converse ----------

/// One decoded event-stream frame.
#[derive(Debug)]
struct Frame {
    headers: Vec<(String, String)>,
    payload: Value,
}

impl Frame {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no header {name} in {:?}", self.headers))
    }
}

/// Decodes AWS event-stream frames, checking both CRCs and every length; only string
/// headers (type 7) are expected.
fn decode_frames(mut buf: &[u8]) -> Vec<Frame> {
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let mut out = Vec::new();
    while !buf.is_empty() {
        assert!(buf.len() >= 16, "truncated prelude");
        let total = be32(&buf[0..4]) as usize;
        let headers_len = be32(&buf[4..8]) as usize;
        assert_eq!(
            be32(&buf[8..12]),
            crc32fast::hash(&buf[0..8]),
            "prelude CRC"
        );
        assert!(
            total <= buf.len() && total >= 16 + headers_len,
            "bad total length"
        );
        let frame = &buf[..total];
        assert_eq!(
            be32(&frame[total - 4..]),
            crc32fast::hash(&frame[..total - 4]),
            "message CRC"
        );
        let mut h = &frame[12..12 + headers_len];
        let mut headers = Vec::new();
        while !h.is_empty() {
            let name_len = h[0] as usize;
            let name = std::str::from_utf8(&h[1..1 + name_len])
                .unwrap()
                .to_string();
            assert_eq!(h[1 + name_len], 7, "string header");
            let at = 2 + name_len;
            let value_len = u16::from_be_bytes([h[at], h[at + 1]]) as usize;
            let value = std::str::from_utf8(&h[at + 2..at + 2 + value_len])
                .unwrap()
                .to_string();
            headers.push((name, value));
            h = &h[at + 2 + value_len..];
        }
        let payload = serde_json::from_slice(&frame[12 + headers_len..total - 4]).unwrap();
        out.push(Frame { headers, payload });
        buf = &buf[total..];
    }
    out
}

async fn converse_stream(mock: &MockProvider, body: &Value) -> Vec<Frame> {
    let res = post(
        format!(
            "{}/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream",
            mock.url()
        ),
        &[("authorization", "Bearer k")],
        body,
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "application/vnd.amazon.eventstream"
    );
    let bytes = tokio::time::timeout(Duration::from_secs(10), res.bytes())
        .await
        .unwrap()
        .unwrap();
    decode_frames(&bytes)
}

#[tokio::test]
async fn bedrock_converse_answers_with_usage() {
    let mock = MockProvider::start().await.unwrap();
    mock.push(Reply::default().cached_tokens(4));
    let body = json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}],
                      "inferenceConfig": {"maxTokens": 16}});
    let res = post(
        format!("{}/model/amazon.nova-lite-v1%3A0/converse", mock.url()),
        &[("authorization", "Bearer k")],
        &body,
    )
    .await;
    assert_eq!(res.status(), 200);
    let r: Value = res.json().await.unwrap();
    assert_eq!(
        r["output"]["message"],
        json!({"role": "assistant", "content": [{"text": "mock reply to: hi"}]})
    );
    assert_eq!(r["stopReason"], "end_turn");
    let input = serde_json::to_vec(&body).unwrap().len() as u64 / 4;
    assert_eq!(
        r["usage"]["inputTokens"],
        input - 4,
        "cache reads are apart"
    );
    assert_eq!(r["usage"]["outputTokens"], 4);
    assert_eq!(r["usage"]["totalTokens"], input + 4);
    assert_eq!(r["usage"]["cacheReadInputTokens"], 4);
    assert_eq!(r["usage"]["cacheWriteInputTokens"], 0);
    assert_eq!(
        mock.requests()[0].path,
        "/model/amazon.nova-lite-v1%3A0/converse"
    );
}

#[tokio::test]
async fn bedrock_converse_stream_frames_decode() {
    let mock = MockProvider::start().await.unwrap();
    let frames = converse_stream(
        &mock,
        &json!({"messages": [{"role": "user", "content": [{"text": "a b c"}]}]}),
    )
    .await;
    for f in &frames {
        assert_eq!(f.header(":message-type"), "event");
        assert_eq!(f.header(":content-type"), "application/json");
    }
    let types: Vec<&str> = frames.iter().map(|f| f.header(":event-type")).collect();
    let deltas = types.iter().filter(|t| **t == "contentBlockDelta").count();
    assert!(deltas >= 2, "{types:?}");
    let mut expected = vec!["messageStart"];
    expected.extend(std::iter::repeat_n("contentBlockDelta", deltas));
    expected.extend(["contentBlockStop", "messageStop", "metadata"]);
    assert_eq!(types, expected);
    assert_eq!(frames[0].payload, json!({"role": "assistant"}));
    let text: String = frames[1..=deltas]
        .iter()
        .map(|f| {
            assert_eq!(f.payload["contentBlockIndex"], 0);
            f.payload["delta"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, "mock reply to: a b c");
    assert_eq!(
        frames[deltas + 2].payload,
        json!({"stopReason": "end_turn"})
    );
    let usage = &frames[deltas + 3].payload["usage"];
    assert_eq!(usage["outputTokens"], 6);
    assert_eq!(usage["cacheReadInputTokens"], 0);
    assert!(usage["inputTokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn bedrock_tool_use_then_tool_result() {
    let mock = MockProvider::start().await.unwrap();
    let tool_config = json!({"tools": [{"toolSpec": {"name": "get_weather", "description": "w",
                                        "inputSchema": {"json": weather_tool_schema()}}}]});
    let frames = converse_stream(
        &mock,
        &json!({"toolConfig": tool_config,
                "messages": [{"role": "user", "content": [{"text": "weather?"}]}]}),
    )
    .await;
    assert_eq!(frames[1].header(":event-type"), "contentBlockStart");
    assert_eq!(
        frames[1].payload,
        json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "tooluse_mock_1", "name": "get_weather"}}})
    );
    let fragments: Vec<String> = frames
        .iter()
        .filter(|f| f.header(":event-type") == "contentBlockDelta")
        .map(|f| {
            f.payload["delta"]["toolUse"]["input"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(fragments.len() >= 2);
    let input: Value = serde_json::from_str(&fragments.concat()).unwrap();
    assert_eq!(input, json!({"city": "mock"}));
    let stop = frames
        .iter()
        .find(|f| f.header(":event-type") == "messageStop")
        .unwrap();
    assert_eq!(stop.payload["stopReason"], "tool_use");

    let res = post(
        format!("{}/model/m/converse", mock.url()),
        &[],
        &json!({"toolConfig": tool_config, "messages": [
            {"role": "user", "content": [{"text": "weather?"}]},
            {"role": "assistant", "content": [{"toolUse": {"toolUseId": "tooluse_mock_1", "name": "get_weather", "input": {"city": "mock"}}}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_mock_1",
                                          "content": [{"json": {"sky": "clear"}}], "status": "success"}}]}
        ]}),
    )
    .await;
    let r: Value = res.json().await.unwrap();
    assert_eq!(
        r["output"]["message"]["content"][0]["text"],
        r#"tool result: {"sky":"clear"}"#
    );

    let res = post(
        format!("{}/model/m/converse", mock.url()),
        &[],
        &json!({"toolConfig": tool_config,
                "messages": [{"role": "user", "content": [{"text": "weather?"}]}]}),
    )
    .await;
    let r: Value = res.json().await.unwrap();
    assert_eq!(
        r["output"]["message"]["content"][0]["toolUse"],
        json!({"toolUseId": "tooluse_mock_1", "name": "get_weather", "input": {"city": "mock"}})
    );
    assert_eq!(r["stopReason"], "tool_use");
}

#[tokio::test]
async fn bedrock_errors_and_scripted_frames() {
    let mock = MockProvider::start().await.unwrap();
    let body = json!({"messages": [{"role": "user", "content": [{"text": "x"}]}]});
    mock.push(Reply::status(429));
    let res = post(
        format!("{}/model/m/converse-stream", mock.url()),
        &[],
        &body,
    )
    .await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["x-amzn-errortype"], "ThrottlingException");
    let e: Value = res.json().await.unwrap();
    assert!(e["message"].as_str().unwrap().contains("429"));

    let mut scripted = bedrock_stream(&["sc", "ript"]);
    scripted.insert(
        2,
        bedrock_exception_frame("modelStreamErrorException", "boom"),
    );
    mock.push(Reply::event_stream(scripted, Duration::ZERO, false));
    let frames = converse_stream(&mock, &body).await;
    assert_eq!(frames[1].payload["delta"]["text"], "sc");
    assert_eq!(frames[2].header(":message-type"), "exception");
    assert_eq!(
        frames[2].header(":exception-type"),
        "modelStreamErrorException"
    );
    assert_eq!(frames[2].payload, json!({"message": "boom"}));

    mock.push(Reply::tool_call("lookup", json!({"q": "x"})));
    let frames = converse_stream(&mock, &body).await;
    assert_eq!(frames[1].payload["start"]["toolUse"]["name"], "lookup");
}

// ---------- OpenAI Responses ----------

#[tokio::test]
async fn responses_answer_is_a_response_object() {
    let mock = MockProvider::start().await.unwrap();
    mock.push(Reply::default().cached_tokens(2));
    let body = json!({"model": "gpt-r", "input": "tell me"});
    let res = post(format!("{}/v1/responses", mock.url()), &[], &body).await;
    assert_eq!(res.status(), 200);
    let r: Value = res.json().await.unwrap();
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["model"], "gpt-r");
    assert_eq!(r["output"][0]["type"], "message");
    assert_eq!(r["output"][0]["role"], "assistant");
    assert_eq!(
        r["output"][0]["content"][0],
        json!({"type": "output_text", "text": "mock reply to: tell me", "annotations": [], "logprobs": []})
    );
    let input = serde_json::to_vec(&body).unwrap().len() as u64 / 4;
    assert_eq!(r["usage"]["input_tokens"], input);
    assert_eq!(r["usage"]["output_tokens"], 5);
    assert_eq!(r["usage"]["total_tokens"], input + 5);
    assert_eq!(
        r["usage"]["input_tokens_details"]["cached_tokens"], 2,
        "OpenAI's input_tokens include the cached ones"
    );
}

/// Checks what every Responses stream must hold and returns the events by name.
fn responses_events(body: &str) -> Vec<(String, Value)> {
    responses_events_ending(body, "response.completed")
}

fn responses_events_ending(body: &str, last: &str) -> Vec<(String, Value)> {
    let events: Vec<(String, Value)> = sse(body)
        .into_iter()
        .map(|(n, d)| (n.unwrap(), d))
        .collect();
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], i, "sequence numbers count from 0");
    }
    assert_eq!(events[0].0, "response.created");
    assert_eq!(events[0].1["response"]["status"], "in_progress");
    assert_eq!(events[1].0, "response.in_progress");
    assert_eq!(events.last().unwrap().0, last);
    events
}

#[tokio::test]
async fn responses_stream_text_events() {
    let mock = MockProvider::start().await.unwrap();
    let res = post(
        format!("{}/v1/responses", mock.url()),
        &[],
        &json!({"model": "gpt-r", "stream": true, "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "x y"}]}]}),
    )
    .await;
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let events = responses_events(&text(res).await);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let deltas = names
        .iter()
        .filter(|n| **n == "response.output_text.delta")
        .count();
    assert!(deltas >= 2);
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names, expected);
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| {
            assert_eq!(d["item_id"], "msg_mock_1");
            d["delta"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, "mock reply to: x y");
    let done = &events[4 + deltas].1;
    assert_eq!(done["text"], text);
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["output"][0]["content"][0]["text"], text);
    assert_eq!(completed["usage"]["output_tokens"], 5);
}

#[tokio::test]
async fn responses_function_call_then_output() {
    let mock = MockProvider::start().await.unwrap();
    let url = format!("{}/v1/responses", mock.url());
    let tools = json!([{"type": "web_search"}, {"type": "function", "name": "get_weather",
                        "parameters": weather_tool_schema()}]);
    let res = post(
        url.clone(),
        &[],
        &json!({"model": "gpt-r", "stream": true, "tools": tools, "input": "weather?"}),
    )
    .await;
    let events = responses_events(&text(res).await);
    let added = &events[2].1["item"];
    assert_eq!(added["type"], "function_call");
    assert_eq!(added["call_id"], "call_mock_1");
    assert_eq!(added["name"], "get_weather");
    assert_eq!(added["arguments"], "");
    let fragments: Vec<&str> = events
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert!(fragments.len() >= 2);
    assert_eq!(fragments.concat(), r#"{"city":"mock"}"#);
    let done = events
        .iter()
        .find(|(n, _)| n == "response.function_call_arguments.done")
        .unwrap();
    assert_eq!(done.1["arguments"], r#"{"city":"mock"}"#);
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["output"][0]["arguments"], r#"{"city":"mock"}"#);
    assert_eq!(completed["tools"], tools);

    let res = post(
        url.clone(),
        &[],
        &json!({"model": "gpt-r", "tools": tools, "input": [
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "call_mock_1", "name": "get_weather", "arguments": "{\"city\":\"mock\"}"},
            {"type": "function_call_output", "call_id": "call_mock_1", "output": "rain"}
        ]}),
    )
    .await;
    let r: Value = res.json().await.unwrap();
    assert_eq!(r["output"][0]["content"][0]["text"], "tool result: rain");

    mock.push(Reply::named_stream(
        responses_text_stream("gpt-r", &["ab", "cd"]),
        Duration::ZERO,
        false,
    ));
    let res = post(url.clone(), &[], &json!({"model": "gpt-r", "input": "x"})).await;
    let events = responses_events(&text(res).await);
    let deltas: Vec<&str> = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, ["ab", "cd"]);

    mock.push(Reply::status(500));
    let res = post(url, &[], &json!({"model": "gpt-r", "input": "x"})).await;
    assert_eq!(res.status(), 500);
    let e: Value = res.json().await.unwrap();
    assert!(e["error"]["message"].as_str().unwrap().contains("500"));
}

// ---------- OpenAI chat completions ----------

#[tokio::test]
async fn chat_tool_call_then_tool_result() {
    let mock = MockProvider::start().await.unwrap();
    let url = format!("{}/v1/chat/completions", mock.url());
    let tools = json!([{"type": "function", "function": {"name": "search",
                         "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}]);
    let res = post(
        url.clone(),
        &[],
        &json!({"model": "gpt", "tools": tools, "messages": [{"role": "user", "content": "find"}]}),
    )
    .await;
    let c: Value = res.json().await.unwrap();
    let call = &c["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["id"], "call_mock_1");
    assert_eq!(call["function"]["name"], "search");
    assert_eq!(call["function"]["arguments"], r#"{"query":"mock"}"#);
    assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");

    let res = post(
        url.clone(),
        &[],
        &json!({"model": "gpt", "stream": true, "stream_options": {"include_usage": true},
                "tools": tools, "messages": [{"role": "user", "content": "find"}]}),
    )
    .await;
    let events = sse(&text(res).await);
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let first = &events[0].1["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(first["id"], "call_mock_1");
    assert_eq!(first["function"]["name"], "search");
    let fragments: Vec<&str> = events[1..]
        .iter()
        .filter_map(|(_, e)| {
            e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
        })
        .collect();
    assert!(fragments.len() >= 2);
    assert_eq!(fragments.concat(), r#"{"query":"mock"}"#);
    let finish = &events[events.len() - 3].1;
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    let usage = &events[events.len() - 2].1;
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let res = post(
        url,
        &[],
        &json!({"model": "gpt", "stream": true, "tools": tools, "messages": [
            {"role": "user", "content": "find"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_mock_1", "type": "function",
             "function": {"name": "search", "arguments": "{\"query\":\"mock\"}"}}]},
            {"role": "tool", "tool_call_id": "call_mock_1", "content": "42"}
        ]}),
    )
    .await;
    let events = sse(&text(res).await);
    let text: String = events
        .iter()
        .filter_map(|(_, e)| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "tool result: 42");
}

#[tokio::test]
async fn unknown_paths_are_404_and_still_recorded() {
    let mock = MockProvider::start().await.unwrap();
    let res = post(format!("{}/v1/embeddings", mock.url()), &[], &json!({})).await;
    assert_eq!(res.status(), 404);
    assert_eq!(mock.requests()[0].path, "/v1/embeddings");

    // A raw scripted body is sent whatever the path.
    mock.push(Reply {
        body: ReplyBody::Json(json!({"data": []})),
        ..Reply::default()
    });
    let res = post(format!("{}/v1/embeddings", mock.url()), &[], &json!({})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"data": []}));
    mock.push(Reply::status(418));
    let res = post(format!("{}/custom", mock.url()), &[], &json!({})).await;
    assert_eq!(res.status(), 418);
}

#[tokio::test]
async fn tool_choice_picks_or_forbids_the_tool_in_every_api() {
    let mock = MockProvider::start().await.unwrap();
    let schema = weather_tool_schema();
    let url = |p: &str| format!("{}{p}", mock.url());
    let msg = json!([{"role": "user", "content": "x"}]);

    let chat_tools = json!([
        {"type": "function", "function": {"name": "first", "parameters": {}}},
        {"type": "function", "function": {"name": "second", "parameters": schema}}]);
    let c: Value = post(
        url("/v1/chat/completions"),
        &[],
        &json!({"model": "m", "messages": msg, "tools": chat_tools,
            "tool_choice": {"type": "function", "function": {"name": "second"}}}),
    )
    .await
    .json()
    .await
    .unwrap();
    let f = &c["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(f["name"], "second");
    assert_eq!(f["arguments"], r#"{"city":"mock"}"#);
    let c: Value = post(
        url("/v1/chat/completions"),
        &[],
        &json!({"model": "m", "messages": msg, "tools": chat_tools,
            "tool_choice": "none"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(c["choices"][0]["finish_reason"], "stop");

    let a_tools =
        json!([{"name": "first", "input_schema": {}}, {"name": "second", "input_schema": schema}]);
    let m: Value = post(
        url("/v1/messages"),
        ANTHROPIC_HEADERS,
        &json!({"model": "m", "max_tokens": 9, "messages": msg,
            "tools": a_tools, "tool_choice": {"type": "tool", "name": "second"}}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(m["content"][0]["name"], "second");
    let m: Value = post(
        url("/v1/messages"),
        ANTHROPIC_HEADERS,
        &json!({"model": "m", "max_tokens": 9, "messages": msg,
            "tools": a_tools, "tool_choice": {"type": "none"}}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(m["content"][0]["type"], "text");

    let r_tools = json!([{"type": "function", "name": "first", "parameters": {}},
                         {"type": "function", "name": "second", "parameters": schema}]);
    let r: Value = post(
        url("/v1/responses"),
        &[],
        &json!({"model": "m", "input": "x", "tools": r_tools,
            "tool_choice": {"type": "function", "name": "second"}}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(r["output"][0]["name"], "second");
    let r: Value = post(
        url("/v1/responses"),
        &[],
        &json!({"model": "m", "input": "x", "tools": r_tools, "tool_choice": "none"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(r["output"][0]["type"], "message");

    let b: Value = post(url("/model/m/converse"), &[], &json!({
            "messages": [{"role": "user", "content": [{"text": "x"}]}],
            "toolConfig": {"tools": [{"toolSpec": {"name": "first", "inputSchema": {"json": {}}}},
                                     {"toolSpec": {"name": "second", "inputSchema": {"json": schema}}}],
                           "toolChoice": {"tool": {"name": "second"}}}}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        b["output"]["message"]["content"][0]["toolUse"]["name"],
        "second"
    );
}

#[tokio::test]
async fn output_limits_cut_text_with_each_apis_reason() {
    let mock = MockProvider::start().await.unwrap();
    let url = |p: &str| format!("{}{p}", mock.url());
    let words = "one two three four five";

    let c: Value = post(
        url("/v1/chat/completions"),
        &[],
        &json!({"model": "m", "max_tokens": 2,
            "tools": [], "messages": [
                {"role": "user", "content": "x"},
                {"role": "tool", "tool_call_id": "c", "content": words}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(c["choices"][0]["message"]["content"], "tool result:");
    assert_eq!(c["choices"][0]["finish_reason"], "length");
    assert_eq!(c["usage"]["completion_tokens"], 2);

    let res = post(
        url("/v1/messages"),
        ANTHROPIC_HEADERS,
        &json!({"model": "m", "max_tokens": 3, "stream": true,
            "messages": [{"role": "user", "content": words}]}),
    )
    .await;
    let events = sse(&text(res).await);
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
    assert_eq!(delta["usage"]["output_tokens"], 3);

    let res = post(
        url("/v1/responses"),
        &[],
        &json!({"model": "m", "max_output_tokens": 3, "stream": true, "input": words}),
    )
    .await;
    let events = responses_events_ending(&text(res).await, "response.incomplete");
    let last = &events.last().unwrap().1["response"];
    assert_eq!(last["status"], "incomplete");
    assert_eq!(last["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(last["output"][0]["content"][0]["text"], "mock reply to:");

    let b: Value = post(
        url("/model/m/converse"),
        &[],
        &json!({"inferenceConfig": {"maxTokens": 1},
            "messages": [{"role": "user", "content": [{"text": words}]}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(b["stopReason"], "max_tokens");
    assert_eq!(b["output"]["message"]["content"][0]["text"], "mock");

    // A plain chat completion keeps its sized answer whatever the limit.
    let c: Value = post(
        url("/v1/chat/completions"),
        &[],
        &json!({"model": "m", "max_tokens": 1,
            "messages": [{"role": "user", "content": "x"}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn anthropic_error_event_mid_stream() {
    let mock = MockProvider::start().await.unwrap();
    let mut events = anthropic_text_stream("m", &["partial"]);
    events.truncate(4);
    events.push(anthropic_error_event("overloaded_error", "Overloaded"));
    mock.push(Reply::named_stream(events, Duration::ZERO, false));
    let res = post(format!("{}/v1/messages", mock.url()), ANTHROPIC_HEADERS,
        &json!({"model": "m", "max_tokens": 9, "stream": true, "messages": [{"role": "user", "content": "x"}]}))
    .await;
    let events = sse(&text(res).await);
    assert_eq!(events[3].1["delta"]["text"], "partial");
    let (name, data) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("error"));
    assert_eq!(data["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn mock_error_models_answer_in_each_apis_error_shape() {
    let mock = MockProvider::start().await.unwrap();
    let url = |p: &str| format!("{}{p}", mock.url());
    let res = post(
        url("/v1/chat/completions"),
        &[],
        &json!({"model": "mock-error-503", "messages": []}),
    )
    .await;
    assert_eq!(res.status(), 503);
    let e: Value = res.json().await.unwrap();
    assert_eq!(e["error"]["message"], "mock error 503");

    let res = post(
        url("/v1/messages"),
        ANTHROPIC_HEADERS,
        &json!({"model": "mock-error-529", "max_tokens": 1, "messages": []}),
    )
    .await;
    assert_eq!(res.status(), 529);
    let e: Value = res.json().await.unwrap();
    assert_eq!(e["error"]["type"], "overloaded_error");

    let res = post(
        url("/model/mock-error-403/converse-stream"),
        &[],
        &json!({}),
    )
    .await;
    assert_eq!(res.status(), 403);
    assert_eq!(res.headers()["x-amzn-errortype"], "AccessDeniedException");

    // Not a status: an ordinary model.
    let res = post(
        url("/v1/responses"),
        &[],
        &json!({"model": "mock-error-x", "input": "hi"}),
    )
    .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn plain_chat_echoes_and_keeps_the_sizes_benchmarks_ask_for() {
    let mock = MockProvider::start_with(MockOptions {
        body_bytes: 2048,
        chunks: 3,
        ..MockOptions::default()
    })
    .await
    .unwrap();
    let url = format!("{}/v1/chat/completions", mock.url());
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "say hello"}]});
    let res = post(url.clone(), &[], &body).await;
    let raw = text(res).await;
    assert!((1900..2300).contains(&raw.len()), "{} bytes", raw.len());
    let c: Value = serde_json::from_str(&raw).unwrap();
    let content = c["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        content.starts_with("mock reply to: say hello lorem ipsum"),
        "{content}"
    );

    let mut body = body;
    body["stream"] = json!(true);
    let events = sse(&text(post(url, &[], &body).await).await);
    let text: String = events
        .iter()
        .filter_map(|(_, e)| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "mock reply to: say hello tok0 tok1 tok2 ");
}

#[tokio::test]
async fn responses_repeat_the_request_settings() {
    let mock = MockProvider::start().await.unwrap();
    let r: Value = post(
        format!("{}/v1/responses", mock.url()),
        &[],
        &json!({"model": "m", "input": "x", "instructions": "be brief", "previous_response_id": "resp_0",
                "temperature": 0.2, "metadata": {"k": "v"}}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(r["instructions"], "be brief");
    assert_eq!(r["previous_response_id"], "resp_0");
    assert_eq!(r["temperature"], 0.2);
    assert_eq!(r["metadata"], json!({"k": "v"}));
    assert_eq!(r["tools"], json!([]), "the API's default when unset");
    assert_eq!(r["top_p"], 1.0);
}

#[tokio::test]
async fn stop_sequences_end_the_text_with_each_apis_reason() {
    let mock = MockProvider::start().await.unwrap();
    let url = |p: &str| format!("{}{p}", mock.url());
    let tools: Value = json!([]);
    let c: Value = post(
        url("/v1/chat/completions"),
        &[],
        &json!({"model": "m", "stop": ["result"], "tools": tools,
            "messages": [{"role": "tool", "tool_call_id": "c", "content": "x"}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(c["choices"][0]["message"]["content"], "tool ");
    assert_eq!(c["choices"][0]["finish_reason"], "stop");

    let m: Value = post(
        url("/v1/messages"),
        ANTHROPIC_HEADERS,
        &json!({"model": "m", "max_tokens": 99,
            "stop_sequences": ["zzz", "to:"], "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(m["content"][0]["text"], "mock reply ");
    assert_eq!(m["stop_reason"], "stop_sequence");
    assert_eq!(m["stop_sequence"], "to:");
    let res = post(
        url("/v1/messages"),
        ANTHROPIC_HEADERS,
        &json!({"model": "m", "max_tokens": 99, "stream": true,
            "stop_sequences": ["reply"], "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let events = sse(&text(res).await);
    let delta = &events[events.len() - 2].1["delta"];
    assert_eq!(delta["stop_reason"], "stop_sequence");
    assert_eq!(delta["stop_sequence"], "reply");

    let b: Value = post(
        url("/model/m/converse"),
        &[],
        &json!({"inferenceConfig": {"stopSequences": ["reply"]},
            "messages": [{"role": "user", "content": [{"text": "hi"}]}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(b["stopReason"], "stop_sequence");
    assert_eq!(b["output"]["message"]["content"][0]["text"], "mock ");
}
