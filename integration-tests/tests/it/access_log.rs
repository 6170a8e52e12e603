//! The edge's access log through the real binary: buffered lines are all written by a
//! clean stop (docs/edge.md, "Access log").

use std::time::Duration;

use serde_json::Value;

use crate::support::{Plano, eventually, http_client};

/// An edge whose egress is not running (nothing listens on ports 1 and 9): it answers LLM
/// requests itself (503), and logs each one.
const CONFIG: &str = r#"version: v0.4.0
listeners:
  - name: model_listener
    type: model
    address: 127.0.0.1
    port: 1
  - name: public
    type: edge
    address: 127.0.0.1
    port: 0
model_providers:
  - model: openai/gpt-4o
    access_key: test-key
    default: true
admin:
  edge: "127.0.0.1:0"
  egress: "127.0.0.1:9"
"#;

/// Access lines wait in a buffer (here for an hour: `PLANO_ACCESS_LOG_FLUSH_MS`) and SIGTERM
/// writes them all. Only access lines and the start-up lines that name the ports are logged
/// (`RUST_LOG`), so no other line writes the buffer out first: without the flush at exit the
/// lines would be lost. It also shows `RUST_LOG` still selects `plano::access` by target.
#[tokio::test]
async fn buffered_access_lines_are_written_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plano_config.yaml");
    std::fs::write(&path, CONFIG).unwrap();
    let mut edge = Plano::start_with("plano-edge", &path, &["--grace", "5s"], 1, |cmd| {
        cmd.env(
            "RUST_LOG",
            "warn,plano::access=info,plano_common::admin=info,plano_edge=info",
        )
        .env("PLANO_ACCESS_LOG_FLUSH_MS", "3600000")
        .env_remove("PLANO_CONFIG")
        .env_remove("OTEL_SERVICE_NAME");
    })
    .await;
    let url = format!(
        "http://{}/v1/chat/completions?key=secret",
        edge.addr("public")
    );
    let http = http_client();
    for _ in 0..3 {
        let r = http
            .post(&url)
            .json(&serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
    }

    edge.signal("TERM");
    let status = tokio::time::timeout(Duration::from_secs(30), edge.child.wait())
        .await
        .expect("the edge did not exit after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
    let access = |log: Vec<Value>| -> Vec<Value> {
        log.into_iter()
            .filter(|v| v["target"] == "plano::access")
            .collect()
    };
    // The harness reads stderr on a task: wait (bounded) for it to reach the end.
    eventually(Duration::from_secs(10), || {
        let n = access(edge.log()).len();
        async move { n >= 3 }
    })
    .await;
    let lines = access(edge.log());
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in &lines {
        assert_eq!(l["message"], "request", "{l}");
        assert_eq!(l["level"], "INFO", "{l}");
        assert_eq!(l["listener"], "public", "{l}");
        assert_eq!(l["method"], "POST", "{l}");
        // The path without its query string.
        assert_eq!(l["path"], "/v1/chat/completions", "{l}");
        assert_eq!(l["status"], 503, "{l}");
        assert_eq!(l["upstream"], "-", "{l}");
        assert_eq!(l["error"], "egress_unavailable", "{l}");
        // The whole answer was sent (hyper stops polling a body at its declared end).
        assert_eq!(l["completed"], true, "{l}");
        assert!(l["bytes_out"].as_u64().is_some_and(|n| n > 0), "{l}");
        assert!(l["duration_ms"].as_f64().is_some(), "{l}");
        assert!(
            l["request_id"].as_str().is_some_and(|s| !s.is_empty()),
            "{l}"
        );
    }
}
