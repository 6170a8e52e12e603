//! The edge end to end: client → edge (plain or TLS, with auth) → real egress → mock.

use std::time::Duration;

use integration_tests::harness::{Edge, Egress};
use integration_tests::mock::{MockProvider, Reply, chunk};
use serde_json::{Value, json};

use crate::support::eventually;

const EGRESS_YAML: &str = r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    base_url: MOCK
    access_key: provider-key
    default: true
"#;

fn edge_yaml(extra_listener: &str) -> String {
    format!(
        r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    default: true
listeners:
  - type: edge
    name: open
    port: 10000
  - type: edge
    name: guarded
    port: 10001
    timeout: 5s
    max_body_bytes: 1000
    auth:
      api_keys: [$EDGE_KEY, second-key]
{extra_listener}"#
    )
}

async fn stack(extra_listener: &str, env: &[(&str, &str)]) -> (MockProvider, Egress, Edge) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mock = MockProvider::start().await.unwrap();
    let egress = Egress::start(&EGRESS_YAML.replace("MOCK", &mock.url()), &[])
        .await
        .unwrap();
    let mut all_env = vec![("EDGE_KEY", "edge-secret-1")];
    all_env.extend_from_slice(env);
    let edge = Edge::start(
        &edge_yaml(extra_listener),
        &all_env,
        (egress.addr, egress.admin),
    )
    .await
    .unwrap();
    wait_ready(&edge, true).await;
    (mock, egress, edge)
}

async fn wait_ready(edge: &Edge, ready: bool) {
    let health = edge.ctx.health.clone();
    eventually(Duration::from_secs(10), || {
        let h = health.clone();
        async move { h.is_ready() == ready }
    })
    .await;
}

fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn forwards_chat_and_streams_event_by_event() {
    let (mock, _egress, edge) = stack("", &[]).await;
    let url = format!("http://{}/v1/chat/completions", edge.addr("open"));
    let c = reqwest::Client::new();
    let r = c
        .post(&url)
        .header("x-request-id", "edge-rid-1")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "edge-rid-1");
    assert_eq!(r.headers()["x-plano-provider"], "openai/gpt-4o");
    let seen = &mock.requests()[0];
    assert_eq!(seen.headers["x-request-id"], "edge-rid-1");
    assert!(seen.headers.contains_key("traceparent"));

    // The first event reaches the client while the upstream is still holding the rest.
    mock.push(Reply::stream(
        vec![
            chunk("first", None),
            chunk("second", Some("stop")),
            "[DONE]".into(),
        ],
        Duration::from_millis(1500),
        false,
    ));
    let mut r = c.post(&url).json(&chat(true)).send().await.unwrap();
    let first = tokio::time::timeout(Duration::from_millis(1200), r.chunk()).await;
    let first = first
        .expect("first event before the upstream sent the second")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("first"));
    let mut rest = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("second") && rest.contains("[DONE]"), "{rest}");
}

#[tokio::test]
async fn client_auth_accepts_bearer_and_x_api_key_and_refuses_others() {
    let (mock, _egress, edge) = stack("", &[]).await;
    let url = format!("http://{}/v1/chat/completions", edge.addr("guarded"));
    let c = reqwest::Client::new();
    let r = c.post(&url).json(&chat(false)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_api_key");
    let r = c
        .post(&url)
        .bearer_auth("wrong")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    // Anthropic-shaped error on the Anthropic path.
    let r = c
        .post(format!("http://{}/v1/messages", edge.addr("guarded")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(mock.requests().is_empty());

    let r = c
        .post(&url)
        .bearer_auth("edge-secret-1")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(&url)
        .header("x-api-key", "second-key")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for seen in mock.requests() {
        assert_eq!(
            seen.headers["authorization"], "Bearer provider-key",
            "the client's edge key is not forwarded"
        );
        assert!(!seen.headers.contains_key("x-api-key"));
    }
}

#[tokio::test]
async fn limits_and_unknown_routes() {
    let (_mock, _egress, edge) = stack("", &[]).await;
    let c = reqwest::Client::new();
    let big =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(2000)}]});
    let r = c
        .post(format!(
            "http://{}/v1/chat/completions",
            edge.addr("guarded")
        ))
        .bearer_auth("edge-secret-1")
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = c
        .get(format!("http://{}/admin/secret", edge.addr("open")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let models: Value = c
        .get(format!("http://{}/v1/models", edge.addr("open")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
}

#[tokio::test]
async fn egress_down_fails_fast_and_recovers_without_restart() {
    let (mock, egress, edge) = stack("", &[]).await;
    let (listen, admin) = (egress.addr, egress.admin);
    let url = format!("http://{}/v1/chat/completions", edge.addr("open"));
    let c = reqwest::Client::new();
    assert_eq!(
        c.post(&url)
            .json(&chat(false))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    egress.stop().await.unwrap();
    wait_ready(&edge, false).await;
    let started = std::time::Instant::now();
    let r = c.post(&url).json(&chat(false)).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 503);
    assert!(took < Duration::from_millis(500), "fails fast: {took:?}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "egress_unavailable");
    let metrics = edge.ctx.metrics.render();
    assert!(
        metrics.contains("plano_peer_up{peer=\"egress\"} 0"),
        "{metrics}"
    );

    let _egress = Egress::start_at(
        &EGRESS_YAML.replace("MOCK", &mock.url()),
        &[],
        listen,
        admin,
    )
    .await
    .unwrap();
    wait_ready(&edge, true).await;
    assert_eq!(
        c.post(&url)
            .json(&chat(false))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn tls_with_a_static_certificate_and_http2_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let ca = integration_tests::certs::TestCa::new().unwrap();
    let leaf = ca.issue(&["localhost"]).unwrap();
    let (cert_path, key_path) = leaf.write_to(dir.path()).unwrap();
    let listener = format!(
        "  - type: edge\n    name: secure\n    port: 10443\n    tls:\n      cert_path: {}\n      key_path: {}\n",
        cert_path.display(),
        key_path.display()
    );
    let (_mock, _egress, edge) = stack(&listener, &[]).await;
    let port = edge.addr("secure").port();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = client
        .post(format!("https://localhost:{port}/v1/chat/completions"))
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.version(),
        reqwest::Version::HTTP_2,
        "h2 negotiated by ALPN"
    );
    let metrics = edge.ctx.metrics.render();
    assert!(
        metrics.contains("plano_tls_certificate_expiry_timestamp_seconds{listener=\"secure\"}"),
        "{metrics}"
    );

    // A client that does not trust the CA is refused at the handshake.
    let untrusting = reqwest::Client::new();
    assert!(
        untrusting
            .post(format!("https://localhost:{port}/v1/chat/completions"))
            .json(&chat(false))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_slow_client_is_cut_off_while_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_mock, _egress, edge) = stack("", &[]).await;
    let addr = edge.addr("open");
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();

    // Others are served meanwhile.
    let c = reqwest::Client::new();
    for _ in 0..3 {
        let r = c
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&chat(false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    // The slow one never finishes its headers: the edge closes it after the header-read
    // timeout (bounded here by twice that, as a hang guard).
    let mut buf = [0u8; 1024];
    let bound = plano_edge::HEADER_READ_TIMEOUT * 2;
    let closed = tokio::time::timeout(bound, async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // a 408 may be written before the close
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the slow connection was not closed within {bound:?}"
    );
    assert!(started.elapsed() >= plano_edge::HEADER_READ_TIMEOUT - Duration::from_secs(1));
}
