//! The runner against a small scripted filter server on 127.0.0.1 (the end-to-end cases,
//! MCP included, are in `integration-tests/tests/it/filters.rs`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes as AxumBytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap as AxumHeaders;
use axum::routing::post;
use serde_json::{Value, json};

use super::*;

type Seen = Arc<Mutex<Vec<(String, Value, HeaderMap)>>>;

/// `/{name}/...`: `add` adds a field named after the filter, `block` answers 403, `down`
/// answers 500, `slow` answers after 60s, `keep` answers 204.
async fn filter_server() -> (SocketAddr, Seen) {
    async fn handle(
        State(seen): State<Seen>,
        Path((name, _rest)): Path<(String, String)>,
        headers: AxumHeaders,
        body: AxumBytes,
    ) -> (StatusCode, String) {
        let mut v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        seen.lock()
            .unwrap()
            .push((name.clone(), v.clone(), headers.clone()));
        match name.as_str() {
            "block" => (
                StatusCode::FORBIDDEN,
                json!({"error": {"message": "no jailbreaks"}}).to_string(),
            ),
            "down" => (StatusCode::INTERNAL_SERVER_ERROR, "oops".into()),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                (StatusCode::OK, body_string(&v))
            }
            "keep" => (StatusCode::NO_CONTENT, String::new()),
            "garbage" => (StatusCode::OK, "not json".into()),
            _ => {
                let order = v["order"].as_str().unwrap_or("").to_string();
                v["order"] = Value::from(format!("{order}{name},"));
                (StatusCode::OK, body_string(&v))
            }
        }
    }
    fn body_string(v: &Value) -> String {
        v.to_string()
    }
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/{name}/{*rest}", post(handle))
        .with_state(seen.clone());
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(tcp, app).await });
    (addr, seen)
}

fn config(addr: SocketAddr) -> Config {
    let filters: String = ["a", "b", "block", "down", "slow", "keep", "garbage"]
        .iter()
        .map(|n| {
            format!(
                "  - {{id: {n}, type: http, url: \"http://{addr}/{n}\", timeout: 200ms}}\n  - {{id: {n}-open, type: http, url: \"http://{addr}/{n}\", timeout: 200ms, fail_open: true}}\n"
            )
        })
        .collect();
    let yaml = format!(
        "version: v0.4.0\nmodel_providers:\n  - model: openai/gpt-4o\n    access_key: k\n    default: true\nfilters:\n{filters}"
    );
    plano_config::load_str(&yaml, None, &|_| None).unwrap()
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn run(ids_: &[&str], headers: &HeaderMap) -> (Result<Bytes, FilterError>, Seen) {
    let (addr, seen) = filter_server().await;
    let runner = FilterRunner::new(&crate::http_client::HttpClientBuilder::new(
        Duration::from_secs(2),
    ))
    .unwrap();
    let rid = HeaderValue::from_static("rid-7");
    let ctx = FilterCtx {
        path: "/v1/chat/completions",
        headers,
        request_id: &rid,
    };
    let body = Bytes::from_static(br#"{"messages":[]}"#);
    let out = runner
        .run_input(&config(addr), &ids(ids_), &ctx, body)
        .await;
    (out, seen)
}

#[tokio::test]
async fn chain_runs_in_order_each_seeing_the_previous_output() {
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_static("Bearer sk-client"),
    );
    headers.insert("x-user", HeaderValue::from_static("alice"));
    let (out, seen) = run(&["a", "keep", "b"], &headers).await;
    let out: Value = serde_json::from_slice(&out.unwrap()).unwrap();
    assert_eq!(out["order"], "a,b,");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].1["order"], "a,", "b sees a's output");
    let h = &seen[0].2;
    assert!(h.get("authorization").is_none(), "client key never sent");
    assert_eq!(h["x-user"], "alice");
    assert_eq!(h["x-request-id"], "rid-7");
    assert_eq!(h["x-plano-filter-direction"], "input");
}

#[tokio::test]
async fn a_4xx_blocks_with_the_filters_message_in_the_clients_shape() {
    let (out, seen) = run(&["a", "block", "b"], &HeaderMap::new()).await;
    let err = out.unwrap_err();
    assert_eq!(
        err,
        FilterError::Blocked {
            filter: "block".into(),
            status: StatusCode::FORBIDDEN,
            message: "no jailbreaks".into()
        }
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "the chain stops at the block"
    );
    let openai = err.to_api_error(ApiShape::OpenAi);
    assert_eq!(openai.status, StatusCode::FORBIDDEN);
    let v: Value = serde_json::from_slice(&openai.body()).unwrap();
    assert_eq!(
        v["error"]["message"],
        "blocked by filter `block`: no jailbreaks"
    );
    assert_eq!(v["error"]["code"], "filter_blocked");
    let anthropic: Value =
        serde_json::from_slice(&err.to_api_error(ApiShape::Anthropic).body()).unwrap();
    assert_eq!(anthropic["type"], "error");
    assert_eq!(anthropic["error"]["type"], "permission_error");
}

#[tokio::test]
async fn failures_close_by_default_and_pass_unchanged_when_open() {
    for id in ["down", "garbage"] {
        let (out, _) = run(&[id], &HeaderMap::new()).await;
        let err = out.unwrap_err();
        assert!(
            matches!(&err, FilterError::Failed { filter, timed_out: false, .. } if filter == id),
            "{err:?}"
        );
        assert_eq!(
            err.to_api_error(ApiShape::OpenAi).status,
            StatusCode::BAD_GATEWAY
        );
    }
    let (out, _) = run(&["down-open", "a"], &HeaderMap::new()).await;
    let out: Value = serde_json::from_slice(&out.unwrap()).unwrap();
    assert_eq!(out["order"], "a,");
}

#[tokio::test(start_paused = true)]
async fn a_slow_filter_times_out_as_504() {
    let (out, _) = run(&["slow"], &HeaderMap::new()).await;
    let err = out.unwrap_err();
    assert!(matches!(
        err,
        FilterError::Failed {
            timed_out: true,
            ..
        }
    ));
    let api = err.to_api_error(ApiShape::OpenAi);
    assert_eq!(api.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(api.code, "filter_timeout");
}

#[tokio::test]
async fn unreachable_filter_fails_and_invalid_input_is_400() {
    let runner = FilterRunner::new(&crate::http_client::HttpClientBuilder::new(
        Duration::from_secs(2),
    ))
    .unwrap();
    // A port that was just free: nothing listens there.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let rid = HeaderValue::from_static("r");
    let headers = HeaderMap::new();
    let ctx = FilterCtx {
        path: "/v1/messages",
        headers: &headers,
        request_id: &rid,
    };
    let cfg = config(addr);
    let err = runner
        .run_input(&cfg, &ids(&["a"]), &ctx, Bytes::from_static(b"{}"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FilterError::Failed { reason, .. } if reason.contains("cannot be reached")),
        "{err:?}"
    );
    let err = runner
        .run_input(&cfg, &ids(&["a"]), &ctx, Bytes::from_static(b"{not json"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_api_error(ApiShape::Anthropic).status,
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn block_messages_from_common_error_shapes() {
    let m = |b: &str| block_message(StatusCode::BAD_REQUEST, b.as_bytes());
    assert_eq!(m(r#"{"error":{"message":"a"}}"#), "a");
    assert_eq!(m(r#"{"error":"b"}"#), "b");
    assert_eq!(m(r#"{"message":"c"}"#), "c");
    assert_eq!(m(r#"{"detail":"d"}"#), "d");
    assert_eq!(m(" plain text \n"), "plain text");
    assert_eq!(m(""), "Bad Request");
    let long = "x".repeat(5000);
    assert_eq!(m(&long).chars().count(), MAX_BLOCK_MESSAGE_CHARS + 1);
}
