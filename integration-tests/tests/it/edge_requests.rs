//! The edge's request path under bad input: body errors in the client's shape (413 over
//! the limit and 400 for broken framing, HTTP/1.1 chunked and HTTP/2), authentication
//! before routing, duplicate credentials, content types, long paths, and a stream cut by
//! the listener timeout ending with the API's error event.

use std::time::Duration;

use bytes::Bytes;
use integration_tests::harness::{Edge, Egress};
use integration_tests::mock::{MockProvider, Reply, chunk};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
  - type: edge
    name: small
    port: 10000
    timeout: 1s
    max_body_bytes: 4096
  - type: edge
    name: guarded
    port: 10001
    auth:
      api_keys: [edge-key]
"#;

async fn stack() -> (MockProvider, Egress, Edge) {
    let (mock, egress) = egress_with_mock(EGRESS_YAML).await;
    let edge = ready_edge(EDGE_YAML, &egress).await;
    (mock, egress, edge)
}

fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

/// Send `head` then `body` on a raw connection (write errors ignored: the edge may stop
/// reading once it has its answer) and return the status and body of the response.
async fn raw(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(head.as_bytes()).await;
    for part in body.chunks(16 * 1024) {
        if s.write_all(part).await.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    // One response is enough: stop at the end of a JSON error body.
                    if out.ends_with(b"}") || out.ends_with(b"}\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn chunked(total: usize, chunk_size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut sent = 0;
    while sent < total {
        let n = chunk_size.min(total - sent);
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend(std::iter::repeat_n(b'x', n));
        out.extend_from_slice(b"\r\n");
        sent += n;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test]
async fn body_errors_through_the_edge_are_413_and_400_not_502() {
    let (mock, _egress, edge) = stack().await;
    let addr = edge.addr("small");
    let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";

    // A chunked body far over the listener's 4 KB limit (1 MB sent; the edge stops early).
    let (status, body) = raw(addr, head, &chunked(1024 * 1024, 8192)).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");

    // Broken chunk framing: a size line that is not hex.
    let (status, body) = raw(addr, head, b"zz\r\nabc\r\n0\r\n\r\n").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_request"), "{body}");

    // The Anthropic route answers in its own shape.
    let head_messages = head.replace("/v1/chat/completions", "/v1/messages");
    let (status, body) = raw(addr, &head_messages, &chunked(64 * 1024, 4096)).await;
    assert_eq!(status, 413, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["type"], "request_too_large");

    // HTTP/2 without a content-length: data frames past the limit.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let parts: Vec<Result<Bytes, std::io::Error>> =
        (0..64).map(|_| Ok(Bytes::from(vec![b'x'; 1024]))).collect();
    let r = h2
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            parts,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "payload_too_large");
    assert!(mock.requests().is_empty(), "nothing reached the provider");
}

#[tokio::test]
async fn auth_comes_before_routing_and_duplicate_keys_are_refused() {
    let (mock, _egress, edge) = stack().await;
    let c = http_client();
    let base = format!("http://{}", edge.addr("guarded"));
    // An unknown path tells a client without a key nothing: 401, then 404 with the key.
    let r = c.get(format!("{base}/admin/secret")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(format!("{base}/admin/secret"))
        .bearer_auth("edge-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Two Authorization headers (one of them valid) or two x-api-key: 400, never first-wins.
    for (name, good) in [
        ("authorization", "Bearer edge-key"),
        ("x-api-key", "edge-key"),
    ] {
        let mut h = reqwest::header::HeaderMap::new();
        h.append(name, good.parse().unwrap());
        h.append(name, "other".parse().unwrap());
        let r = c
            .post(format!("{base}/v1/chat/completions"))
            .headers(h)
            .json(&chat(false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{name}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "duplicate_credentials");
    }
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn content_types_that_cannot_be_json_get_415() {
    let (mock, _egress, edge) = stack().await;
    let c = http_client();
    let url = format!("http://{}/v1/chat/completions", edge.addr("small"));
    for ct in [
        "multipart/form-data; boundary=x",
        "application/xml",
        "image/png",
    ] {
        let r = c
            .post(&url)
            .header("content-type", ct)
            .body(chat(false).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 415, "{ct}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unsupported_media_type");
    }
    assert!(mock.requests().is_empty());
    // What clients in the wild send with JSON bodies passes.
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
    ] {
        let r = c
            .post(&url)
            .header("content-type", ct)
            .body(chat(false).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{ct}");
    }
    // Forwarded requests record the edge's own time.
    let text = edge.ctx.metrics.render();
    assert!(
        text.lines()
            .any(|l| l.starts_with("plano_overhead_seconds_count{component=\"edge\"}")),
        "no edge overhead recorded"
    );
}

#[tokio::test]
async fn a_long_path_is_answered_and_echoed_only_in_part() {
    let (_mock, _egress, edge) = stack().await;
    let path = format!("/{}", "a".repeat(40 * 1024));
    let r = http_client()
        .get(format!("http://{}{path}", edge.addr("small")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.len() < 400, "{} bytes", msg.len());
    assert!(msg.contains("40961 bytes"), "{msg}");
}

#[tokio::test]
async fn a_stream_cut_by_the_listener_timeout_ends_with_an_error_event() {
    let (mock, _egress, edge) = stack().await;
    let c = http_client();
    for (path, body, shape) in [
        ("/v1/chat/completions", chat(true), "chat"),
        (
            "/v1/messages",
            json!({"model": "gpt-4o", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
            "messages",
        ),
    ] {
        // One event, then the upstream stalls past the edge's 1 s listener timeout.
        mock.push(Reply::stream(
            vec![chunk("partial", None)],
            Duration::ZERO,
            true,
        ));
        let r = c
            .post(format!("http://{}{path}", edge.addr("small")))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // A clean end of stream (not a reset: reading the body succeeds)…
        let text = tokio::time::timeout(Duration::from_secs(10), r.text())
            .await
            .expect("the stream ends")
            .expect("the stream ends cleanly");
        // …whose last event is the API's error event.
        let last = text
            .trim_end()
            .rsplit("\n\n")
            .next()
            .unwrap_or_default()
            .to_string();
        match shape {
            "chat" => {
                let data = last.strip_prefix("data: ").unwrap_or_default();
                let v: Value = serde_json::from_str(data).unwrap();
                assert_eq!(v["error"]["code"], "timeout", "{text}");
            }
            _ => {
                assert!(last.starts_with("event: error\n"), "{text}");
                let data = last.split_once("data: ").map_or("", |(_, d)| d);
                let v: Value = serde_json::from_str(data).unwrap();
                assert_eq!(v["type"], "error", "{text}");
                assert_eq!(v["error"]["type"], "api_error", "{text}");
            }
        }
        assert!(text.contains("partial"), "{text}");
    }
}

/// An HTTPS service (prompt-target endpoint and filter) whose certificate is issued by a
/// private CA: `/filter…` answers 204 (keep the body), anything else a JSON string.
async fn tls_service(ca: &integration_tests::certs::TestCa) -> (u16, tokio::task::JoinHandle<()>) {
    use std::sync::Arc;
    let leaf = ca.issue(&["127.0.0.1"]).unwrap();
    let certs = rustls_pemfile::certs(&mut leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut leaf.key_pem.as_bytes())
        .unwrap()
        .unwrap();
    let server_tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        if req.uri().path().starts_with("/filter") {
                            http::Response::builder()
                                .status(204)
                                .body(http_body_util::Full::new(Bytes::new()))
                        } else {
                            http::Response::builder()
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(Bytes::from_static(
                                    b"\"Booked over TLS\"",
                                )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, task)
}

#[tokio::test]
async fn endpoints_and_filters_behind_a_private_ca_work_with_upstream_tls_ca_path() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = integration_tests::certs::TestCa::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let (port, server) = tls_service(&ca).await;
    let (mock, egress) = egress_with_mock(EGRESS_YAML).await;
    let yaml = |with_ca: bool| {
        let overrides = if with_ca {
            format!(
                "overrides:\n  upstream_tls_ca_path: {}\n",
                ca_path.display()
            )
        } else {
            String::new()
        };
        format!(
            r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    default: true
listeners:
  - type: prompt
    name: prompts
    port: 10000
    input_filters: [guard]
filters:
  - id: guard
    url: https://127.0.0.1:{port}/filter
    type: http
endpoints:
  app:
    endpoint: 127.0.0.1:{port}
    protocol: https
    connect_timeout: 2s
    timeout: 5s
prompt_targets:
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
{overrides}"#
        )
    };
    let tool_call = || Reply {
        body: integration_tests::mock::ReplyBody::Json(json!({
            "id": "chatcmpl-x", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "book_flight", "arguments": "{\"to\": \"Rome\"}"}}
            ]}}],
        })),
        ..Reply::default()
    };
    let ask = |edge: &Edge| {
        let url = format!("http://{}/v1/chat/completions", edge.addr("prompts"));
        async move {
            http_client()
                .post(url)
                .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "fly me to Rome"}]}))
                .send()
                .await
                .unwrap()
        }
    };
    // With the CA: the filter and the endpoint are reached over TLS.
    let edge = ready_edge(&yaml(true), &egress).await;
    mock.push(tool_call());
    let r = ask(&edge).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "Booked over TLS");
    edge.stop().await.unwrap();

    // Without it the filter's certificate is not trusted: the chain fails closed (502).
    let edge = ready_edge(&yaml(false), &egress).await;
    let r = ask(&edge).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "filter_failed", "{v}");
    server.abort();
}

/// The egress's model listener asked to move onto a busy port keeps its old one; the edge,
/// given the new URL, keeps sending to the egress (nothing reaches the port's squatter)
/// and follows only once the egress reports that it serves the new port.
#[tokio::test]
async fn the_edge_follows_only_an_egress_address_the_egress_serves() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let (mock, egress, edge) = stack().await;
    let old = egress.addr;
    let squatter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let busy = squatter.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let accept = {
        let hits = hits.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = squatter.accept().await {
                hits.fetch_add(1, Ordering::SeqCst);
                drop(tcp);
            }
        })
    };
    let egress_on = |port: u16| {
        let yaml = format!(
            "{}listeners:\n  - type: model\n    name: models\n    address: 127.0.0.1\n    port: {port}\n",
            EGRESS_YAML.replace("MOCK", &mock.url())
        );
        Arc::new(plano_config::load_str(&yaml, None, &|_| None).unwrap())
    };
    let url = format!("http://{}/v1/chat/completions", edge.addr("small"));
    let c = http_client();

    // The egress cannot move (the port is taken) and keeps serving the old one.
    egress.control.config.send(egress_on(busy.port())).unwrap();
    let mut moved = (*edge.ctx.current_config()).clone();
    moved.egress.url = format!("http://{busy}").parse().unwrap();
    edge.control.config.send(Arc::new(moved)).unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = c.post(&url).json(&chat(false)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing went to the squatter"
    );

    // The port frees up, the egress moves there (its old port drains), the edge follows.
    accept.abort();
    let _ = accept.await;
    egress.control.config.send(egress_on(busy.port())).unwrap();
    eventually(Duration::from_secs(10), || async move {
        tokio::net::TcpStream::connect(old).await.is_err()
    })
    .await;
    eventually(Duration::from_secs(10), || {
        let (c, url) = (c.clone(), url.clone());
        async move {
            c.post(&url)
                .json(&chat(false))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
}
