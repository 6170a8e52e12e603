//! The fast part of the abuse and fault suite (docs/hardening.md lists every probe and its
//! expected answer): slow and silent clients, connection floods at a low cap, header floods,
//! request-smuggling patterns, malformed and oversized bodies — against the egress model
//! listener and the edge, with short timeouts so each probe ends in a second or two.
//! Every loop is bounded in count and time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use integration_tests::harness::{Edge, Egress};
use integration_tests::mock::MockProvider;
use integration_tests::mock_http::MockHttp;

use crate::support::{egress_with_mock, ready_edge};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every timeout of the listeners under test.
const SHORT: Duration = Duration::from_secs(1);

fn egress_yaml(mock: &str, connections: &str) -> String {
    format!(
        r#"
version: v0.4.0
listeners:
  - type: model
    name: models
    max_body_bytes: 1000
    connections: {connections}
model_providers:
  - model: openai/gpt-4o
    base_url: {mock}
    default: true
"#
    )
}

const SHORT_TIMEOUTS: &str =
    "{header_read_timeout: 1s, body_idle_timeout: 1s, keepalive_timeout: 1s}";

async fn egress(connections: &str) -> (MockProvider, Egress) {
    let mock = MockProvider::start().await.unwrap();
    let egress = Egress::start(&egress_yaml(&mock.url(), connections), &[])
        .await
        .unwrap();
    (mock, egress)
}

/// Read until the peer closes; the bytes read, or `None` if still open after `bound`.
async fn read_until_closed(conn: &mut TcpStream, bound: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(bound, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(out)
}

/// Send `raw` on a new connection and return what came back before the close.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(raw).await.unwrap();
    let out = read_until_closed(&mut conn, Duration::from_secs(5))
        .await
        .expect("the server neither answered nor closed within 5s");
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The JSON error body of a raw HTTP/1.1 answer, checked to be the API's error shape
/// (`content-type: application/json`, `error.message`); the message. `None` (with why) if
/// the answer has no such body — hyper's own refusals had none before `h1_errors.rs`.
fn error_message(response: &str) -> Result<String, String> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no complete head: {response:?}"))?;
    let head_lower = head.to_ascii_lowercase();
    if !head_lower.contains("\r\ncontent-type: application/json") {
        return Err(format!("not JSON: {head:?}"));
    }
    let body = if head_lower.contains("\r\ntransfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    let v: Value =
        serde_json::from_str(&body).map_err(|e| format!("body is not JSON ({e}): {body:?}"))?;
    v["error"]["message"]
        .as_str()
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("no error.message: {body}"))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// `response` is `status` with the API's JSON error body, its message containing `names`.
#[track_caller]
fn assert_refused(response: &str, status: u16, names: &str) {
    assert_eq!(status_of(response), status, "{response}");
    let message = error_message(response).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        message.contains(names),
        "{message:?} does not name {names:?}"
    );
    assert!(
        response
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{response}"
    );
}

fn chat_body() -> &'static str {
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#
}

fn post(body: &str, extra_headers: &str) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: close\r\n{extra_headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn metric(egress: &Egress, name: &str, labels: &str) -> f64 {
    let text = egress.metrics().render();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// ------------------------------------------------------------------ slow and silent clients

/// A connection that sends nothing, or only part of the HTTP/2 preface, is closed after the
/// header-read timeout instead of holding its slot forever.
#[tokio::test]
async fn silent_and_half_preface_connections_are_closed_after_the_header_timeout() {
    let (_mock, egress) = egress(SHORT_TIMEOUTS).await;
    for sent in [&b""[..], b"PRI * HTTP/2.0\r\n", b"POST /v1/chat/compl"] {
        let started = Instant::now();
        let mut conn = TcpStream::connect(egress.addr).await.unwrap();
        conn.write_all(sent).await.unwrap();
        let closed = read_until_closed(&mut conn, SHORT * 4).await;
        assert!(
            closed.is_some(),
            "{:?}: still open after {:?}",
            String::from_utf8_lossy(sent),
            SHORT * 4
        );
        assert!(
            started.elapsed() >= SHORT - Duration::from_millis(100),
            "closed too early"
        );
    }
    assert!(
        metric(
            &egress,
            "plano_connections_closed_total",
            r#"reason="header_timeout""#
        ) >= 3.0
    );
}

/// Slowloris: a header line every 300 ms never completes the head in time.
#[tokio::test]
async fn slow_headers_are_cut_off() {
    let (_mock, egress) = egress(SHORT_TIMEOUTS).await;
    let mut conn = TcpStream::connect(egress.addr).await.unwrap();
    conn.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if conn
            .write_all(format!("x-slow-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), conn.read(&mut probe)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a slowloris kept its connection for 6 s");
    assert!(started.elapsed() < SHORT * 4);
}

/// A body that stops arriving ends the request after the body-idle timeout.
#[tokio::test]
async fn a_stalled_body_is_ended_after_the_body_idle_timeout() {
    let (_mock, egress) = egress(SHORT_TIMEOUTS).await;
    let mut conn = TcpStream::connect(egress.addr).await.unwrap();
    conn.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let out = read_until_closed(&mut conn, SHORT * 5)
        .await
        .expect("a stalled upload held its connection");
    let text = String::from_utf8_lossy(&out);
    assert!(started.elapsed() >= SHORT - Duration::from_millis(100));
    // The request gets a client error in the API's shape (or, at worst, a close).
    if !text.is_empty() {
        assert_eq!(status_of(&text) / 100, 4, "{text}");
    }
}

/// Keep-alive, then silence: closed after the keep-alive timeout, not before.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout() {
    let (_mock, egress) =
        egress("{header_read_timeout: 1s, body_idle_timeout: 1s, keepalive_timeout: 2s}").await;
    let mut conn = TcpStream::connect(egress.addr).await.unwrap();
    let req = post(chat_body(), "").replace("connection: close\r\n", "");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = conn.read(&mut buf).await.unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), 200);
    let idle_from = Instant::now();
    assert!(
        read_until_closed(&mut conn, Duration::from_secs(6))
            .await
            .is_some()
    );
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(1900),
        "closed after {idle:?}, before the 2 s keep-alive timeout"
    );
}

// ------------------------------------------------------------------ connection floods

/// At the cap, idle connections are shed so a new client is still served; when every
/// connection is busy, new ones are refused and counted.
#[tokio::test]
async fn a_connection_flood_at_the_cap_sheds_idle_then_refuses_and_counts() {
    const CAP: usize = 20;
    let (_mock, egress) = egress(&format!(
        "{{max: {CAP}, header_read_timeout: 30s, body_idle_timeout: 30s, keepalive_timeout: 30s}}"
    ))
    .await;
    // Twice the cap of idle connections: the oldest are shed as new ones arrive.
    let mut idle = Vec::new();
    for _ in 0..CAP * 2 {
        idle.push(TcpStream::connect(egress.addr).await.unwrap());
    }
    let client = reqwest::Client::new();
    let r = client
        .post(egress.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(chat_body())
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a new client was not served at the cap");
    drop(client);
    assert!(
        metric(
            &egress,
            "plano_connections_closed_total",
            r#"reason="shed""#
        ) >= CAP as f64,
        "idle connections were not shed"
    );
    drop(idle);

    // Now every slot busy: requests whose bodies never finish.
    let mut busy = Vec::new();
    for _ in 0..CAP {
        let mut c = TcpStream::connect(egress.addr).await.unwrap();
        c.write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
        busy.push(c);
    }
    // Let the server see them as requests in flight (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(5);
    let rejected_before = metric(
        &egress,
        "plano_connections_rejected_total",
        r#"listener="models""#,
    );
    let mut refused = false;
    while Instant::now() < deadline && !refused {
        let mut extra = TcpStream::connect(egress.addr).await.unwrap();
        let _ = extra.write_all(post(chat_body(), "").as_bytes()).await;
        let out = read_until_closed(&mut extra, Duration::from_secs(2)).await;
        refused = out.is_some_and(|o| o.is_empty());
        if !refused {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(refused, "a connection over the cap was not refused");
    assert!(
        metric(
            &egress,
            "plano_connections_rejected_total",
            r#"listener="models""#
        ) > rejected_before
    );
    drop(busy);
}

// ------------------------------------------------------------------ malformed requests

#[tokio::test]
async fn header_floods_get_431_and_bad_framing_gets_400() {
    let (_mock, egress) = egress(SHORT_TIMEOUTS).await;
    // 100 KB of headers (the limit is 64 KiB).
    let big: String = (0..100)
        .map(|i| format!("x-flood-{i}: {}\r\n", "a".repeat(1000)))
        .collect();
    let r = exchange(egress.addr, post(chat_body(), &big).as_bytes()).await;
    assert_refused(&r, 431, "request head too large");
    // Many small headers (hyper's limit is 100).
    let many: String = (0..150).map(|i| format!("x-h-{i}: v\r\n")).collect();
    let r = exchange(egress.addr, post(chat_body(), &many).as_bytes()).await;
    assert_refused(&r, 431, "request head too large");
    // A request line that is not HTTP.
    let r = exchange(egress.addr, b"\x16\x03\x01garbage\r\n\r\n").await;
    assert_refused(&r, 400, "bad request line or header");
    // After a keep-alive answer on the same connection (pipelined): the first answer is
    // untouched, the refusal has its body.
    let r = exchange(
        egress.addr,
        b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\nx-a: 1\r\n folded\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), 200, "{r}");
    let second = r.find("HTTP/1.1 400 ").map(|i| &r[i..]).unwrap_or_default();
    assert_refused(second, 400, "bad request line or header");
}

/// Smuggling patterns are refused, or read one way only: never two requests from one.
#[tokio::test]
async fn request_smuggling_patterns_are_refused() {
    let (_mock, egress) = egress(SHORT_TIMEOUTS).await;
    // Two different Content-Lengths.
    let r = exchange(
        egress.addr,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 60\r\n\r\n{}{}{",
    )
    .await;
    assert_refused(&r, 400, "bad request line or header");
    // An obsolete folded header line.
    let r = exchange(
        egress.addr,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n folded\r\ncontent-length: 2\r\n\r\n{}",
    )
    .await;
    assert_refused(&r, 400, "bad request line or header");
    // Content-Length with Transfer-Encoding: the chunked framing wins (or 400); the bytes
    // after the chunked end are not answered as a second request.
    let smuggled = "GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n";
    let body = chat_body();
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n{smuggled}",
        body.len()
    );
    let r = exchange(egress.addr, raw.as_bytes()).await;
    assert!(
        r.matches("HTTP/1.1 ").count() <= 1,
        "the smuggled request was answered: {r}"
    );
    assert!(matches!(status_of(&r), 200 | 400), "{r}");
}

#[tokio::test]
async fn malformed_nested_and_oversized_bodies_get_client_errors_in_the_api_shape() {
    let (_mock, egress) = egress(SHORT_TIMEOUTS).await;
    let c = reqwest::Client::new();
    let send = |body: Vec<u8>| {
        c.post(egress.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .timeout(Duration::from_secs(5))
            .send()
    };
    // Not JSON, truncated JSON, deeply nested JSON (under the body limit).
    for body in [
        b"not json".to_vec(),
        br#"{"model":"gpt-4o","messages":[{"#.to_vec(),
        "[".repeat(900).into_bytes(),
        format!(
            r#"{{"model":"gpt-4o","messages":{}{}}}"#,
            "[".repeat(400),
            "]".repeat(400)
        )
        .into_bytes(),
    ] {
        let r = send(body).await.unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    // Over the 1000-byte limit with Content-Length, and chunked without it.
    let big = format!(r#"{{"model":"gpt-4o","x":"{}"}}"#, "a".repeat(5000));
    let r = send(big.clone().into_bytes()).await.unwrap();
    assert_eq!(r.status(), 413);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .into_bytes()
        .chunks(100)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let r = c
        .post(egress.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
}

// ------------------------------------------------------------------ the edge

const EDGE_EGRESS_YAML: &str = r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    base_url: MOCK
    default: true
"#;

/// The edge's protocol detection is bounded too: silent and half-preface connections go.
#[tokio::test]
async fn edge_closes_silent_and_half_preface_connections() {
    let mock = MockProvider::start().await.unwrap();
    let egress = Egress::start(&EDGE_EGRESS_YAML.replace("MOCK", &mock.url()), &[])
        .await
        .unwrap();
    let edge = Edge::start(
        r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    default: true
listeners:
  - type: edge
    name: open
    port: 10000
    connections: {max: 10, header_read_timeout: 1s, keepalive_timeout: 1s}
"#,
        &[],
        (egress.addr, egress.admin),
    )
    .await
    .unwrap();
    let addr = edge.addr("open");
    for sent in [&b""[..], b"PRI * HTTP/2.0\r\n\r\nSM"] {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(sent).await.unwrap();
        assert!(
            read_until_closed(&mut conn, SHORT * 4).await.is_some(),
            "the edge kept a {:?} connection open",
            String::from_utf8_lossy(sent)
        );
    }
    // Eleven silent connections on a cap of ten: a new client is still answered.
    let mut silent = Vec::new();
    for _ in 0..11 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let r = exchange(
        addr,
        b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), 200, "{r}");
    drop(silent);
}

/// hyper's own refusals (a head it cannot parse or that is too large) carry the API's
/// error body on the edge too, on a plain and on a TLS listener.
#[tokio::test]
async fn hyper_refusals_on_the_edge_carry_the_api_error_body_plain_and_tls() {
    use std::sync::Arc;
    let (_mock, egress) = egress_with_mock(EDGE_EGRESS_YAML).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = integration_tests::certs::TestCa::new().unwrap();
    let leaf = ca.issue(&["localhost"]).unwrap();
    let (cert_path, key_path) = leaf.write_to(dir.path()).unwrap();
    let edge = ready_edge(
        &format!(
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
    name: secure
    port: 10443
    tls:
      cert_path: {}
      key_path: {}
"#,
            cert_path.display(),
            key_path.display()
        ),
        &egress,
    )
    .await;
    let big: String = (0..100)
        .map(|i| format!("x-flood-{i}: {}\r\n", "a".repeat(1000)))
        .collect();
    let probes: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            post(chat_body(), &big).into_bytes(),
            431,
            "request head too large",
        ),
        (
            b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n folded\r\n\r\n".to_vec(),
            400,
            "bad request line or header",
        ),
        (
            b"G@T /v1/models HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
            400,
            "bad request line or header",
        ),
    ];

    for (raw, status, names) in &probes {
        let r = exchange(edge.addr("open"), raw).await;
        assert_refused(&r, *status, names);
    }

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca.pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let client_tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls));
    for (raw, status, names) in &probes {
        let tcp = TcpStream::connect(edge.addr("secure")).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(raw).await.unwrap();
        let mut out = Vec::new();
        // A TLS peer may close without close_notify; what arrived before counts.
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
        let r = String::from_utf8_lossy(&out);
        assert_refused(&r, *status, names);
    }
}

// ------------------------------------------------------------------ HTTP/2

async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn h2_post(addr: SocketAddr) -> http::Request<()> {
    http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(())
        .unwrap()
}

async fn still_serves(egress: &Egress) {
    let r = reqwest::Client::new()
        .post(egress.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(chat_body())
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Rapid reset (CVE-2023-44487): streams opened and cancelled at once, up to 2,000 or 5 s.
/// The server absorbs them or sends GOAWAY; either way it keeps serving everyone else.
#[tokio::test]
async fn h2_rapid_reset_leaves_the_server_serving() {
    let (_mock, egress) = egress(SHORT_TIMEOUTS).await;
    let mut client = h2_client(egress.addr).await;
    let started = Instant::now();
    let mut sent = 0;
    while sent < 2000 && started.elapsed() < Duration::from_secs(5) {
        let Ok(Ok(mut ready)) =
            tokio::time::timeout(Duration::from_secs(1), client.clone().ready()).await
        else {
            break;
        };
        match ready.send_request(h2_post(egress.addr), false) {
            Ok((_response, mut body)) => {
                body.send_reset(h2::Reason::CANCEL);
                sent += 1;
            }
            Err(_) => break, // GOAWAY: the server closed this connection
        }
        client = ready;
    }
    assert!(sent > 0, "no stream could be opened");
    still_serves(&egress).await;
}

/// Stream flood: stalled uploads on one connection stop at the advertised 200 concurrent
/// streams, end at the body-idle timeout, and other clients are served meanwhile.
#[tokio::test]
async fn h2_stream_floods_stop_at_the_concurrency_limit() {
    let (_mock, egress) = egress(SHORT_TIMEOUTS).await;
    let client = h2_client(egress.addr).await;
    let mut open = Vec::new();
    for _ in 0..300 {
        let Ok(Ok(mut ready)) =
            tokio::time::timeout(Duration::from_millis(500), client.clone().ready()).await
        else {
            break;
        };
        match ready.send_request(h2_post(egress.addr), false) {
            Ok((response, mut body)) => {
                let _ = body.send_data(bytes::Bytes::from_static(b"{"), false);
                open.push((response, body));
            }
            Err(_) => break,
        }
    }
    let opened = open.len();
    assert!(opened >= 100, "only {opened} streams opened");
    still_serves(&egress).await;
    // Streams over the limit are refused (the client may open them before it has seen the
    // server's SETTINGS); the others are answered 4xx after the body-idle timeout.
    let outcomes =
        futures_util::future::join_all(open.into_iter().map(|(response, body)| async move {
            let r = tokio::time::timeout(SHORT * 5, response).await;
            drop(body);
            r
        }))
        .await;
    let (mut refused, mut answered) = (0usize, 0usize);
    for outcome in outcomes {
        match outcome {
            Err(_) => panic!("a stalled HTTP/2 upload was held past the body-idle timeout"),
            Ok(Ok(res)) => {
                assert_eq!(res.status().as_u16() / 100, 4, "{:?}", res.status());
                answered += 1;
            }
            Ok(Err(_)) => refused += 1,
        }
    }
    assert!(
        answered <= plano_common::listen::MAX_CONCURRENT_STREAMS as usize,
        "{answered} streams served at once on one connection"
    );
    assert_eq!(answered + refused, opened);
}

// ------------------------------------------------------------------ auth bypass

const GUARDED_EDGE_YAML: &str = r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    default: true
agents:
  - id: helper
    url: AGENT
listeners:
  - type: edge
    name: guarded
    port: 10000
    auth:
      api_keys: [edge-key]
  - type: agent
    name: agents
    port: 10001
    auth:
      api_keys: [edge-key]
    agents:
      - id: helper
        description: helps
        default: true
"#;

/// An edge with an `edge` and an `agent` listener, both behind `auth.api_keys: [edge-key]`;
/// the provider mock and the agent count every request that reaches them.
async fn guarded_edge() -> (MockProvider, MockHttp, Egress, Edge) {
    let (mock, egress) = egress_with_mock(EDGE_EGRESS_YAML).await;
    let agent = MockHttp::agent("helper", Duration::ZERO).await.unwrap();
    let edge = ready_edge(&GUARDED_EDGE_YAML.replace("AGENT", &agent.url()), &egress).await;
    (mock, agent, egress, edge)
}

/// Request targets a client might hope the edge normalises differently from its auth check.
fn bypass_targets(addr: SocketAddr) -> Vec<String> {
    let mut targets: Vec<String> = [
        "/v1/chat/completions",
        "/v1/../v1/chat/completions",
        "/v1/%2e%2e/v1/chat/completions",
        "/%2E%2E/v1/chat/completions",
        "/v1%2Fchat%2Fcompletions",
        "/v1/chat%2Fcompletions",
        "//v1/chat/completions",
        "/v1//chat/completions",
        "/./v1/chat/completions",
        "/v1/chat/completions/",
        "/v1/chat/completions.",
        "/v1/chat/completions/.",
        "/v1/chat/completions;x=1",
        "/v1/chat/completions?api_key=edge-key",
        "/V1/CHAT/COMPLETIONS",
        "/v1/Chat/Completions",
        "/v1/models",
        "/v1/models/gpt-4o",
        "/v1/messages",
        "/v1/responses",
        "/healthz",
        "/readyz",
        "/metrics",
        "/",
        "http://other/v1/chat/completions",
        "HTTP://OTHER/v1/chat/completions",
        "http://user:edge-key@other/v1/chat/completions",
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    targets.push(format!("http://{addr}/v1/chat/completions"));
    targets
}

/// Headers that carry no valid key, one per probe (besides `host`).
const BAD_CREDENTIALS: &[&str] = &[
    "",
    "authorization: Bearer \r\n",
    "authorization: Bearer\r\n",
    "authorization: bearer wrong-key\r\n",
    "authorization: BEARER edge-ke\r\n",
    "authorization: Bearer edge-key-and-more\r\n",
    "authorization: Bearer edge key\r\n",
    "authorization: Bearer \"edge-key\"\r\n",
    "authorization: Bearer edge-key\x0b\r\n",
    "authorization: Bearer\tedge-key\r\n",
    "authorization: Beareredge-key\r\n",
    "authorization: Basic ZWRnZS1rZXk6\r\n",
    "authorization: edge-key\r\n",
    "authorization: Token edge-key\r\n",
    "proxy-authorization: Bearer edge-key\r\n",
    "x-api-key: \r\n",
    "x-api-key: edge-key, edge-key\r\n",
    "x-api-key: EDGE-KEY\r\n",
    "x_api_key: edge-key\r\n",
    "api-key: edge-key\r\n",
    "cookie: api_key=edge-key\r\n",
    "authorization: Bearer wrong\r\nauthorization: Bearer edge-key\r\n",
    "x-api-key: wrong\r\nx-api-key: edge-key\r\n",
];

/// A refusal: 401 (no valid key) or 400 (a request the edge will not read); 431 for
/// oversized heads.
fn refused_status(status: u16) -> bool {
    matches!(status, 400 | 401 | 431)
}

/// No path spelling, request-target form, `Host` trick, method or credential variant
/// reaches a provider or an agent behind an edge listener with `auth.api_keys`: each is
/// answered 401 (or 400/431), over HTTP/1.1 and HTTP/2. A valid key then gets through, so
/// the counters that stay at zero are live.
#[tokio::test]
async fn auth_bypass_attempts_never_reach_a_provider_or_an_agent() {
    let (mock, agent, _egress, edge) = guarded_edge().await;
    let body = chat_body();
    let mut probes = Vec::new();
    for listener in ["guarded", "agents"] {
        let addr = edge.addr(listener);
        for target in bypass_targets(addr) {
            for method in ["POST", "GET", "HEAD", "OPTIONS", "PUT", "DELETE"] {
                probes.push((addr, format!(
                    "{method} {target} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )));
            }
        }
        for creds in BAD_CREDENTIALS {
            probes.push((addr, post(body, creds)));
        }
        for host in [
            "host: localhost\r\n",
            "host: 127.0.0.1\r\n",
            "host: x\r\nhost: y\r\n",
            "host: \r\n",
            "host: x@127.0.0.1\r\n",
            "x-forwarded-host: localhost\r\nx-forwarded-for: 127.0.0.1\r\nx-real-ip: 127.0.0.1\r\n",
            "x-original-url: /healthz\r\nx-rewrite-url: /healthz\r\n",
        ] {
            probes.push((addr, format!(
                "POST /v1/chat/completions HTTP/1.1\r\n{host}content-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )));
        }
        // No Host at all, HTTP/1.0, and the asterisk form.
        probes.push((addr, format!(
            "POST /v1/chat/completions HTTP/1.1\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )));
        probes.push((addr, format!(
            "POST /v1/chat/completions HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )));
        probes.push((
            addr,
            "OPTIONS * HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_string(),
        ));
        // Overlong: a 70 KB key, a 70 KB path.
        let long = "k".repeat(70_000);
        probes.push((
            addr,
            post(body, &format!("authorization: Bearer {long}\r\n")),
        ));
        probes.push((
            addr,
            format!("GET /v1/{long} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
        ));
    }
    let mut wrong = Vec::new();
    for (addr, raw) in &probes {
        let answer = exchange(*addr, raw.as_bytes()).await;
        let status = status_of(&answer);
        // Every refusal, hyper's own included, in the API's error shape.
        // (A HEAD answer has no body.)
        let body = if raw.starts_with("HEAD ") {
            Ok(String::new())
        } else {
            error_message(&answer)
        };
        if !refused_status(status) || body.is_err() {
            wrong.push(format!(
                "{status} ({}) for {:?}",
                body.err().unwrap_or_default(),
                raw.chars().take(160).collect::<String>()
            ));
        }
    }
    assert!(wrong.is_empty(), "not refused:\n{}", wrong.join("\n"));

    // HTTP/2 (prior knowledge): `:path` and `:authority` variants, with and without a bad key.
    let mut h2_refusals = 0;
    for listener in ["guarded", "agents"] {
        let addr = edge.addr(listener);
        let client = h2_client(addr).await;
        for target in bypass_targets(addr) {
            let path = target
                .strip_prefix("http://other")
                .or_else(|| target.strip_prefix("HTTP://OTHER"))
                .unwrap_or(&target)
                .to_string();
            for authority in ["x", "localhost", "127.0.0.1"] {
                for key in [None, Some("Bearer wrong"), Some("Bearer ")] {
                    let Ok(uri) = http::Uri::builder()
                        .scheme("http")
                        .authority(authority)
                        .path_and_query(path.as_str())
                        .build()
                    else {
                        continue;
                    };
                    let mut req =
                        http::Request::post(uri).header("content-type", "application/json");
                    if let Some(k) = key {
                        req = req.header("authorization", k);
                    }
                    let Ok(Ok(mut ready)) =
                        tokio::time::timeout(Duration::from_secs(2), client.clone().ready()).await
                    else {
                        panic!("{listener}: the HTTP/2 connection went away");
                    };
                    let (response, mut send) =
                        ready.send_request(req.body(()).unwrap(), false).unwrap();
                    let _ = send.send_data(bytes::Bytes::from_static(chat_body().as_bytes()), true);
                    match tokio::time::timeout(Duration::from_secs(5), response).await {
                        Err(_) => panic!("{listener}: no HTTP/2 answer for {path}"),
                        // A stream the server refuses is as good as a 400.
                        Ok(Err(_)) => {}
                        Ok(Ok(res)) => {
                            assert!(
                                refused_status(res.status().as_u16()),
                                "{listener}: HTTP/2 {path} at {authority} with {key:?}: {}",
                                res.status()
                            );
                            h2_refusals += 1;
                        }
                    }
                }
            }
        }
    }

    assert!(
        h2_refusals > 100,
        "only {h2_refusals} HTTP/2 probes were answered"
    );
    assert_eq!(mock.requests().len(), 0, "a probe reached the provider");
    assert_eq!(agent.seen().len(), 0, "a probe reached the agent");

    // The counters are live: a valid key gets through to each.
    for (listener, creds) in [
        ("guarded", "authorization: bearer edge-key\r\n"),
        ("agents", "x-api-key: edge-key\r\n"),
    ] {
        let answer = exchange(edge.addr(listener), post(body, creds).as_bytes()).await;
        assert_eq!(status_of(&answer), 200, "{listener}: {answer}");
    }
    assert_eq!(mock.requests().len(), 1);
    assert_eq!(agent.seen().len(), 1);
}

// ------------------------------------------------------------------ providers that reset

/// A provider that answers every request `200 text/event-stream` (chunked), sends three
/// events in the format of the path it was called on (chat chunks, Responses events or
/// Anthropic Messages events), then resets the TCP connection (SO_LINGER 0). Counts calls.
async fn resetting_provider() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let hits = counter.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 8192];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                hits.fetch_add(1, Ordering::SeqCst);
                let text = String::from_utf8_lossy(&head).to_string();
                let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
                let events: Vec<String> = if path.ends_with("/responses") {
                    vec![
                        r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","created_at":1,"status":"in_progress","model":"gpt-4o","output":[]}}"#.to_string(),
                        r#"{"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"par","logprobs":[]}"#.to_string(),
                        r#"{"type":"response.output_text.delta","sequence_number":2,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"tial","logprobs":[]}"#.to_string(),
                    ]
                    .into_iter()
                    .map(|d| {
                        let name = serde_json::from_str::<Value>(&d).unwrap()["type"]
                            .as_str()
                            .unwrap()
                            .to_string();
                        format!("event: {name}\ndata: {d}\n\n")
                    })
                    .collect()
                } else if path.ends_with("/messages") {
                    vec![
                        ("message_start", r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[],"stop_reason":null,"usage":{"input_tokens":3,"output_tokens":0}}}"#),
                        ("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
                        ("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"partial"}}"#),
                    ]
                    .into_iter()
                    .map(|(n, d)| format!("event: {n}\ndata: {d}\n\n"))
                    .collect()
                } else {
                    ["par", "ti", "al"]
                        .iter()
                        .map(|c| format!("data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"{c}\"}},\"finish_reason\":null}}]}}\n\n"))
                        .collect()
                };
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                for e in events {
                    let _ = conn
                        .write_all(format!("{:x}\r\n{e}\r\n", e.len()).as_bytes())
                        .await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                // Half a chunk, then the reset.
                let _ = conn.write_all(b"40\r\ndata: {\"id\"").await;
                let _ = conn.flush().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = conn.set_zero_linger();
                drop(conn);
            });
        }
    });
    (format!("http://{addr}"), hits)
}

/// The last SSE event of a stream: its `event:` name (if any) and its `data:` JSON.
fn last_event(text: &str) -> (Option<String>, Value) {
    let block = text
        .trim_end()
        .rsplit("\n\n")
        .find(|b| b.contains("data:"))
        .unwrap_or_default();
    let mut name = None;
    let mut data = String::new();
    for line in block.lines() {
        if let Some(n) = line.strip_prefix("event:") {
            name = Some(n.trim().to_string());
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.trim_start());
        }
    }
    (name, serde_json::from_str(&data).unwrap_or(Value::Null))
}

/// A provider that resets the connection after a few events, on chat, Messages (native and
/// translated from chat) and Responses, directly and through the edge: the client gets a
/// 200 stream that ends, without a hang, with the error event of its API after the events
/// it already had; each break is counted in `plano_llm_streams_broken_total`.
#[tokio::test]
async fn a_provider_resetting_mid_stream_ends_each_api_with_its_error_event() {
    let (url, hits) = resetting_provider().await;
    let egress = Egress::start(
        &format!(
            r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    base_url: {url}
    default: true
  - model: anthropic/claude-x
    base_url: {url}
    access_key: k
"#
        ),
        &[],
    )
    .await
    .unwrap();
    let edge = ready_edge(
        "version: v0.4.0\nmodel_providers:\n  - model: openai/gpt-4o\n    default: true\nlisteners:\n  - type: edge\n    name: open\n    port: 10000\n",
        &egress,
    )
    .await;
    let broken = |provider: &str| {
        metric(
            &egress,
            "plano_llm_streams_broken_total",
            &format!("provider=\"{provider}\",reason=\"upstream_error\""),
        )
    };
    let messages = |model: &str| serde_json::json!({"model": model, "max_tokens": 16, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let cases = [
        (
            "/v1/chat/completions",
            serde_json::json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
            "openai/gpt-4o",
            None,
        ),
        (
            "/v1/responses",
            serde_json::json!({"model": "gpt-4o", "stream": true, "input": "hi"}),
            "openai/gpt-4o",
            Some("error"),
        ),
        (
            "/v1/messages",
            messages("claude-x"),
            "anthropic/claude-x",
            Some("error"),
        ),
        (
            "/v1/messages",
            messages("gpt-4o"),
            "openai/gpt-4o",
            Some("error"),
        ),
    ];
    let http = crate::support::http_client();
    for via_edge in [false, true] {
        let base = if via_edge {
            format!("http://{}", edge.addr("open"))
        } else {
            format!("http://{}", egress.addr)
        };
        for (path, body, provider, event_name) in &cases {
            let before = broken(provider);
            let r = http
                .post(format!("{base}{path}"))
                .json(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path} ({provider}, edge: {via_edge})");
            let text = tokio::time::timeout(Duration::from_secs(10), r.text())
                .await
                .unwrap_or_else(|_| panic!("{path} ({provider}): the stream never ended"))
                .unwrap_or_else(|e| {
                    panic!("{path} ({provider}, edge: {via_edge}): not a clean end: {e}")
                });
            assert!(text.contains("par"), "the events before the reset: {text}");
            let (name, data) = last_event(&text);
            assert_eq!(name.as_deref(), *event_name, "{path} ({provider}): {text}");
            let error = if data["type"] == "error" && data.get("error").is_some() {
                &data["error"]
            } else if data["type"] == "error" {
                &data
            } else {
                &data["error"]
            };
            assert!(
                error["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("broke off")),
                "{path} ({provider}, edge: {via_edge}): {text}"
            );
            assert!(
                !text.contains("[DONE]")
                    && !text.contains("response.completed")
                    && !text.contains("message_stop"),
                "a broken stream must not look finished: {text}"
            );
            crate::support::eventually(Duration::from_secs(5), || {
                let now = broken(provider);
                async move { now > before }
            })
            .await;
        }
    }
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        8,
        "one attempt each, no retry after the first event"
    );
}

// ------------------------------------------------------------------ faults under load

/// `workers` clients posting `body` to `url` until `stop`; every answer (status, or 0 for
/// a transport error or a request over 3 s) with the time it was received.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<(Instant, u16, bool)>>>,
}

impl Load {
    fn start(
        url: String,
        body: &'static str,
        workers: usize,
        header: (&'static str, &'static str),
    ) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let http = crate::support::http_client();
        let tasks = (0..workers)
            .map(|_| {
                let (stop, http, url) = (stop.clone(), http.clone(), url.clone());
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let r = http
                            .post(&url)
                            .header("content-type", "application/json")
                            .header(header.0, header.1)
                            .body(body)
                            .timeout(Duration::from_secs(3))
                            .send()
                            .await;
                        let (status, limited) = match r {
                            Ok(r) => (
                                r.status().as_u16(),
                                r.headers().contains_key("x-ratelimit-remaining-requests"),
                            ),
                            Err(_) => (0, false),
                        };
                        seen.push((Instant::now(), status, limited));
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    seen
                })
            })
            .collect();
        Load { stop, tasks }
    }

    async fn finish(self) -> Vec<(Instant, u16, bool)> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap());
        }
        all.sort_by_key(|(at, _, _)| *at);
        all
    }
}

fn redis_server(port: u16) -> tokio::process::Child {
    tokio::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start redis-server ({e}); install Debian's `redis-server` (.ci/run does)"
            )
        })
}

async fn serves_on(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

/// Redis killed under load (docs/ratelimits.md): with `fail_open: true` every request is
/// still served, with `fail_open: false` refused with 429 — promptly either way, never a
/// transport error or a hang — and both use Redis again (rate-limit headers back) once it
/// returns on the same address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_fails_open_or_closed_and_recovers() {
    let (mut redis, port) = crate::support::start_on_some_port(redis_server, serves_on).await;
    let mock = MockProvider::start().await.unwrap();
    let yaml = |fail_open: bool| {
        format!(
            r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    base_url: {mock}
    default: true
ratelimits:
  - model: openai/gpt-4o
    selector: {{key: x-team, value: "*"}}
    limit: {{requests: 1000000, unit: hour}}
ratelimit_storage:
  type: redis
  url: redis://127.0.0.1:{port}
  timeout: 100ms
  fail_open: {fail_open}
"#,
            mock = mock.url()
        )
    };
    let open = Egress::start(&yaml(true), &[]).await.unwrap();
    let closed = Egress::start(&yaml(false), &[]).await.unwrap();
    let loads = [&open, &closed].map(|e| {
        Load::start(
            e.url("/v1/chat/completions"),
            chat_body(),
            4,
            ("x-team", "blue"),
        )
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let killed_at = Instant::now();
    redis.start_kill().unwrap();
    redis.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let restarted_at = Instant::now();
    let _redis = redis_server(port);
    crate::support::eventually(Duration::from_secs(5), || serves_on(port)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let [open_seen, closed_seen] = {
        let [a, b] = loads;
        [a.finish().await, b.finish().await]
    };

    for (policy, seen) in [("open", &open_seen), ("closed", &closed_seen)] {
        let errors = seen.iter().filter(|(_, s, _)| *s == 0).count();
        assert_eq!(
            errors, 0,
            "fail {policy}: transport errors or requests over 3s"
        );
        let before: Vec<_> = seen.iter().filter(|(t, _, _)| *t < killed_at).collect();
        assert!(
            !before.is_empty() && before.iter().all(|(_, s, l)| *s == 200 && *l),
            "fail {policy}: Redis up, every request admitted with headers"
        );
        // Well after the kill and before the restart: the policy decides.
        let down: Vec<_> = seen
            .iter()
            .filter(|(t, _, _)| *t > killed_at + Duration::from_millis(200) && *t < restarted_at)
            .collect();
        assert!(
            down.len() >= 4,
            "fail {policy}: only {} requests while Redis was down",
            down.len()
        );
        let expected = if policy == "open" { 200 } else { 429 };
        assert!(
            down.iter().all(|(_, s, _)| *s == expected),
            "fail {policy}: {:?}",
            down.iter().map(|(_, s, _)| s).collect::<Vec<_>>()
        );
        // Recovered: the last requests use Redis again.
        let last = seen.iter().rev().take(4).collect::<Vec<_>>();
        assert!(
            last.iter().all(|(_, s, l)| *s == 200 && *l),
            "fail {policy}: not recovered after Redis returned: {last:?}"
        );
    }
    let errors = metric(
        &open,
        "plano_ratelimit_backend_errors_total",
        "policy=\"closed\"",
    );
    assert!(errors > 0.0, "backend errors are counted");
}

/// SIGHUP with a broken config under load (the real binary): the reload is refused and
/// counted, not one request fails, and a valid config after it is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_config_under_load_keeps_serving_the_old_one() {
    let mock = MockProvider::start().await.unwrap();
    let yaml = |target: &str| {
        format!(
            r#"version: v0.4.0
listeners:
  - type: model
    name: models
    address: 127.0.0.1
    port: 0
model_providers:
  - model: openai/gpt-4o
    base_url: {url}
    default: true
  - model: openai/gpt-4o-mini
    base_url: {url}
model_aliases:
  house:
    target: {target}
admin:
  egress: 127.0.0.1:0
  edge: 127.0.0.1:0
"#,
            url = mock.url()
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plano.yaml");
    std::fs::write(&path, yaml("openai/gpt-4o")).unwrap();
    let egress = crate::support::Plano::start("plano-egress", &path, &[], 1).await;
    let url = format!("http://{}/v1/chat/completions", egress.addr("model"));
    let http = crate::support::http_client();
    let reloads = |outcome: &'static str| {
        let (http, admin) = (http.clone(), egress.admin);
        async move {
            let text = http
                .get(format!("http://{admin}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let series = format!("plano_config_reloads_total{{outcome=\"{outcome}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&series))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };
    const HOUSE: &str = r#"{"model":"house","messages":[{"role":"user","content":"hi"}]}"#;
    let load = Load::start(url.clone(), HOUSE, 4, ("x-probe", "1"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for broken in [
        yaml("openai/gpt-4o").replace("port: 0", "port: not-a-port"),
        yaml("nowhere/model"),
        "version: v0.4.0\nmodel_providers: [\n".to_string(),
        String::new(),
    ] {
        std::fs::write(&path, broken).unwrap();
        let before = reloads("invalid").await;
        egress.signal("HUP");
        crate::support::eventually(Duration::from_secs(5), || {
            let n = reloads("invalid");
            async move { n.await > before }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then a valid one: applied while the load runs.
    std::fs::write(&path, yaml("openai/gpt-4o-mini")).unwrap();
    egress.signal("HUP");
    crate::support::eventually(Duration::from_secs(5), || {
        let n = reloads("success");
        async move { n.await >= 1.0 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = load.finish().await;
    let failed: Vec<u16> = seen
        .iter()
        .map(|(_, s, _)| *s)
        .filter(|s| *s != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        seen.len()
    );
    assert!(seen.len() > 20, "only {} requests under load", seen.len());
    let models: Vec<Value> = mock
        .requests()
        .iter()
        .map(|r| r.body["model"].clone())
        .collect();
    assert!(
        models.contains(&Value::from("gpt-4o")),
        "the old config served"
    );
    assert_eq!(
        models.last(),
        Some(&Value::from("gpt-4o-mini")),
        "the valid config after the broken ones is applied"
    );
}
