//! `endpoints.<name>.prefix_affinity` through the real egress: a provider whose base_url
//! is the endpoint is served by every address its host resolves to (here a test hosts
//! table naming several 127.0.0.x addresses, all routed to loopback on Linux), and each
//! request goes to the replica its prompt-prefix hash picks.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use integration_tests::harness::{Egress, TestHosts};
use integration_tests::mock::{MockOptions, MockProvider};
use serde_json::json;

use crate::support::{http_client, metric};

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Mock providers on 127.0.0.{lasts}, all on one port (a name's replicas serve one port).
async fn replicas(lasts: &[u8]) -> (u16, Vec<MockProvider>) {
    for _ in 0..20 {
        let Ok(first) =
            MockProvider::start_on(SocketAddr::new(ip(lasts[0]), 0), MockOptions::default()).await
        else {
            continue;
        };
        let port = first.addr().port();
        let mut all = vec![first];
        for last in &lasts[1..] {
            match MockProvider::start_on(SocketAddr::new(ip(*last), port), MockOptions::default())
                .await
            {
                Ok(m) => all.push(m),
                Err(_) => break,
            }
        }
        if all.len() == lasts.len() {
            return (port, all);
        }
    }
    panic!("no port free on every replica address");
}

fn config(model: &str, endpoint: &str, port: u16, extra: &str) -> String {
    format!(
        r#"
version: v0.4.0
model_providers:
  - model: {model}
    base_url: http://replicas.test:{port}
    access_key: k
    default: true
{extra}
endpoints:
  {endpoint}:
    endpoint: replicas.test:{port}
    prefix_affinity: true
listeners:
  - type: model
    name: models
    port: 12000
    timeout: 10s
    max_retries: 0
"#
    )
}

async fn chat(egress: &Egress, model: &str, system: &str, user: &str) -> (u16, String) {
    let r = http_client()
        .post(egress.url("/v1/chat/completions"))
        .json(&json!({
            "model": model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Which mock received the request whose body holds `marker`, with its headers.
fn landed(mocks: &[MockProvider], marker: &str) -> (usize, http::HeaderMap) {
    let found: Vec<(usize, http::HeaderMap)> = mocks
        .iter()
        .enumerate()
        .flat_map(|(i, m)| {
            m.requests()
                .into_iter()
                .filter(|r| r.body.to_string().contains(marker))
                .map(move |r| (i, r.headers))
        })
        .collect();
    assert_eq!(found.len(), 1, "`{marker}` arrived {} times", found.len());
    found.into_iter().next().unwrap()
}

#[tokio::test]
async fn one_prefix_sticks_to_one_replica_and_prefixes_spread_over_all() {
    let (port, mocks) = replicas(&[2, 3, 4]).await;
    let plain = MockProvider::start().await.unwrap();
    let model = "openai/llama-spread";
    let extra = format!(
        "  - model: openai/plain\n    base_url: {}\n    access_key: k\n",
        plain.url()
    );
    let hosts = TestHosts::default().with("replicas.test", &[ip(2), ip(3), ip(4)]);
    let egress = Egress::start_resolved(&config(model, "spread", port, &extra), hosts)
        .await
        .unwrap();
    assert_eq!(
        metric(&egress, "plano_endpoint_replicas", "endpoint=\"spread\""),
        3.0
    );

    let mut placed = Vec::new();
    for i in 0..24 {
        let system = format!("You are assistant number {i}.");
        let mut seen = Vec::new();
        // The same prefix (system prompt) with different questions: one replica.
        for turn in ["a", "b"] {
            let marker = format!("question-{i}-{turn}");
            let (status, body) = chat(&egress, model, &system, &marker).await;
            assert_eq!(status, 200, "{body}");
            seen.push(landed(&mocks, &marker));
        }
        assert_eq!(seen[0].0, seen[1].0, "prefix {i} moved between replicas");
        let hash = |h: &http::HeaderMap| {
            h.get("x-plano-prefix-hash")
                .map(|v| v.to_str().unwrap().to_string())
        };
        let h0 = hash(&seen[0].1).expect("x-plano-prefix-hash is sent");
        assert_eq!(h0.len(), 16, "{h0}");
        assert!(h0.chars().all(|c| c.is_ascii_hexdigit()), "{h0}");
        assert_eq!(Some(h0), hash(&seen[1].1));
        // Sent to an address, named by its host.
        assert_eq!(seen[0].1["host"], format!("replicas.test:{port}").as_str());
        placed.push(seen[0].0);
    }
    // Different prefixes use every replica.
    for r in 0..mocks.len() {
        assert!(placed.contains(&r), "replica {r} got nothing: {placed:?}");
    }

    // A Messages request with the same system prompt goes where the chat ones went: the
    // prefix is read the same way whatever the client's API.
    let r = http_client()
        .post(egress.url("/v1/messages"))
        .json(&json!({
            "model": model,
            "max_tokens": 64,
            "system": "You are assistant number 5.",
            "messages": [{"role": "user", "content": "question-5-messages"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(landed(&mocks, "question-5-messages").0, placed[5]);

    // A provider without prefix_affinity: its own address, no prefix hash.
    let (status, body) = chat(&egress, "openai/plain", "You are plain.", "plain-q").await;
    assert_eq!(status, 200, "{body}");
    let sent = plain.requests();
    assert_eq!(sent.len(), 1);
    assert!(!sent[0].headers.contains_key("x-plano-prefix-hash"));
    assert_eq!(sent[0].headers["host"], plain.addr().to_string().as_str());
}

/// A replica that refuses connections is skipped to the next one on the ring: every
/// prefix lands exactly where it would were that replica not in the name at all (so only
/// its own prefixes move), and the skip is counted.
#[tokio::test]
async fn a_dead_replica_falls_over_to_the_next_one_on_the_ring() {
    let (port, mocks) = replicas(&[5, 6, 7]).await;
    let model = "openai/llama-dead";
    // 127.0.0.8 has nothing listening on the port: connections are refused.
    let with_dead = TestHosts::default().with("replicas.test", &[ip(5), ip(6), ip(7), ip(8)]);
    let without = TestHosts::default().with("replicas.test", &[ip(5), ip(6), ip(7)]);
    let a = Egress::start_resolved(&config(model, "dead", port, ""), with_dead)
        .await
        .unwrap();
    let b = Egress::start_resolved(&config(model, "alive", port, ""), without)
        .await
        .unwrap();
    let label = format!("provider=\"{model}\"");
    for i in 0..24 {
        let system = format!("Replica test prefix {i}.");
        let (status, body) = chat(&a, model, &system, &format!("dead-{i}")).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = chat(&b, model, &system, &format!("alive-{i}")).await;
        assert_eq!(status, 200, "{body}");
        let there = landed(&mocks, &format!("dead-{i}")).0;
        assert_eq!(there, landed(&mocks, &format!("alive-{i}")).0, "prefix {i}");
    }
    assert!(
        metric(&a, "plano_endpoint_replica_skips_total", &label) >= 1.0,
        "no prefix hashed to the dead replica, or its skip was not counted"
    );
    assert_eq!(
        metric(&a, "plano_endpoint_replicas", "endpoint=\"dead\""),
        4.0
    );
}

/// HTTPS replicas are reached by address with the host's name kept for SNI (the
/// certificate names only the host) and `Host`.
#[tokio::test]
async fn https_replicas_keep_the_host_name_for_sni_and_host() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = integration_tests::certs::TestCa::new().unwrap();
    let leaf = ca.issue(&["replicas.test"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let mut upstreams = Vec::new();
    for _ in 0..20 {
        use integration_tests::tls_upstream::TlsUpstream;
        let first = TlsUpstream::start(SocketAddr::new(ip(10), 0), &leaf)
            .await
            .unwrap();
        let port = first.addr.port();
        if let Ok(second) = TlsUpstream::start(SocketAddr::new(ip(11), port), &leaf).await {
            upstreams = vec![first, second];
            break;
        }
    }
    assert_eq!(upstreams.len(), 2, "no port free on both replica addresses");
    let port = upstreams[0].addr.port();
    let model = "openai/llama-tls";
    let yaml = format!(
        r#"
version: v0.4.0
model_providers:
  - model: {model}
    base_url: https://replicas.test:{port}
    access_key: k
    default: true
endpoints:
  tls_replicas:
    endpoint: replicas.test:{port}
    protocol: https
    prefix_affinity: true
overrides:
  upstream_tls_ca_path: {}
listeners:
  - type: model
    name: models
    port: 12000
    timeout: 10s
    max_retries: 0
"#,
        ca_path.display()
    );
    let hosts = TestHosts::default().with("replicas.test", &[ip(10), ip(11)]);
    let egress = Egress::start_resolved(&yaml, hosts).await.unwrap();
    for i in 0..12 {
        let (status, body) = chat(&egress, model, &format!("TLS prefix {i}"), "hi").await;
        assert_eq!(status, 200, "{body}");
    }
    let expected = integration_tests::tls_upstream::Seen {
        sni: Some("replicas.test".into()),
        host: Some(format!("replicas.test:{port}")),
    };
    for (i, u) in upstreams.iter().enumerate() {
        let seen = u.seen();
        assert!(!seen.is_empty(), "replica {i} got nothing");
        assert!(seen.iter().all(|s| *s == expected), "{seen:?}");
    }
}
