//! The fast part of the abuse and fault suite (docs/hardening.md lists every probe and its
//! expected answer): slow and silent clients, connection floods at a low cap, header floods,
//! request-smuggling patterns, malformed and oversized bodies — against the egress model
//! listener and the edge, with short timeouts so each probe ends in a second or two.
//! Every loop is bounded in count and time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use integration_tests::harness::{Edge, Egress};
use integration_tests::mock::MockProvider;
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
    assert_eq!(status_of(&r), 431, "{r}");
    // Many small headers (hyper's limit is 100).
    let many: String = (0..150).map(|i| format!("x-h-{i}: v\r\n")).collect();
    let r = exchange(egress.addr, post(chat_body(), &many).as_bytes()).await;
    assert_eq!(status_of(&r), 431, "{r}");
    // A request line that is not HTTP.
    let r = exchange(egress.addr, b"\x16\x03\x01garbage\r\n\r\n").await;
    assert_eq!(status_of(&r), 400, "{r}");
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
    assert_eq!(status_of(&r), 400, "{r}");
    // An obsolete folded header line.
    let r = exchange(
        egress.addr,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n folded\r\ncontent-length: 2\r\n\r\n{}",
    )
    .await;
    assert_eq!(status_of(&r), 400, "{r}");
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
