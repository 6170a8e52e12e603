//! Rate limits through the egress, across two real egress processes sharing a real Redis,
//! and a config reload under load.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use integration_tests::harness::Egress;
use integration_tests::mock::MockProvider;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::support::{Plano, start_on_some_port};

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn a_limited_request_gets_429_with_headers_in_the_client_shape() {
    let mock = MockProvider::start().await.unwrap();
    let yaml = format!(
        r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    base_url: {}
    default: true
ratelimits:
  - model: openai/gpt-4o
    selector: {{key: x-user-id, value: "*"}}
    limit: {{requests: 2, unit: minute}}
"#,
        mock.url()
    );
    let egress = Egress::start(&yaml, &[]).await.unwrap();
    let c = reqwest::Client::new();
    let send = |user: &'static str| {
        c.post(egress.url("/v1/chat/completions"))
            .header("x-user-id", user)
            .json(&chat("gpt-4o"))
            .send()
    };
    for _ in 0..2 {
        let r = send("alice").await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers().contains_key("x-ratelimit-remaining-requests"),
            "{:?}",
            r.headers()
        );
    }
    let r = send("alice").await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.headers()["x-ratelimit-limit-requests"], "2");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(
        send("bob").await.unwrap().status(),
        200,
        "another user has their own bucket"
    );
    // Without the selector header, the rule does not apply.
    let r = c
        .post(egress.url("/v1/chat/completions"))
        .json(&chat("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        mock.requests().len(),
        4,
        "the refused request never reached the provider"
    );
    let m = egress.metrics().render();
    assert!(m.contains("plano_ratelimit_rejections_total{"), "{m}");
}

/// A `redis-server` on a port it could bind (see `start_on_some_port`).
async fn redis_server() -> (Child, u16) {
    let spawn = |port: u16| {
        Command::new("redis-server")
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}); install Debian's `redis-server` (.ci/run does)"
                )
            })
    };
    start_on_some_port(spawn, |port| async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await
}

#[tokio::test]
async fn two_egress_processes_share_one_limit_through_redis() {
    let (_redis, redis_port) = redis_server().await;
    let mock = MockProvider::start().await.unwrap();
    const LIMIT: usize = 200;
    let mut replicas = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..2 {
        let yaml = format!(
            r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    base_url: {mock}
    default: true
listeners:
  - type: model
    name: models
    address: 127.0.0.1
    port: 0
ratelimits:
  - model: openai/gpt-4o
    selector: {{key: x-team, value: "*"}}
    limit: {{requests: {LIMIT}, unit: hour}}
ratelimit_storage:
  type: redis
  url: redis://127.0.0.1:{redis_port}
  timeout: 2s
admin:
  egress: 127.0.0.1:0
  edge: 127.0.0.1:0
"#,
            mock = mock.url()
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plano.yaml");
        std::fs::write(&path, yaml).unwrap();
        let egress = Plano::start("plano-egress", &path, &[], 1).await;
        urls.push(format!(
            "http://{}/v1/chat/completions",
            egress.addr("model")
        ));
        replicas.push((egress, dir));
    }

    // 3× the limit, split over both replicas, 16 at a time.
    let allowed = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let (client, urls) = (client.clone(), urls.clone());
        let (allowed, refused) = (allowed.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..(3 * LIMIT / 16 + 1) {
                let url = &urls[(worker + i) % 2];
                let r = client
                    .post(url)
                    .header("x-team", "blue")
                    .json(&chat("gpt-4o"))
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    200 => allowed.fetch_add(1, Ordering::SeqCst),
                    429 => refused.fetch_add(1, Ordering::SeqCst),
                    s => panic!("unexpected status {s}"),
                };
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let allowed = allowed.load(Ordering::SeqCst);
    assert!(refused.load(Ordering::SeqCst) > 0);
    // Within 1% of the limit for the whole fleet, not 2× (one per replica).
    assert!(
        allowed.abs_diff(LIMIT) <= LIMIT / 100,
        "{allowed} requests admitted across two replicas for a limit of {LIMIT}"
    );
}

#[tokio::test]
async fn reload_under_load_fails_no_request_and_applies_the_new_config() {
    let mock = MockProvider::start().await.unwrap();
    let yaml = |target: &str| {
        format!(
            r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    base_url: {url}
    default: true
  - model: openai/gpt-4o-mini
    base_url: {url}
model_aliases:
  house:
    target: {target}
"#,
            url = mock.url()
        )
    };
    let egress = Egress::start(&yaml("openai/gpt-4o"), &[]).await.unwrap();
    let url = egress.url("/v1/chat/completions");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (url, stop, failures, served) =
            (url.clone(), stop.clone(), failures.clone(), served.clone());
        load.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            while !stop.load(Ordering::SeqCst) {
                match c.post(&url).json(&chat("house")).send().await {
                    Ok(r) if r.status() == 200 => served.fetch_add(1, Ordering::SeqCst),
                    _ => failures.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..10 {
        let target = if i % 2 == 0 {
            "gpt-4o-mini"
        } else {
            "openai/gpt-4o"
        };
        let config = plano_config::load_str(&yaml(target), None, &|_| None).unwrap();
        let mut config = config;
        config.model_listener.addr = egress.addr;
        egress.control.config.send(Arc::new(config)).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.await.unwrap();
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    assert!(served.load(Ordering::SeqCst) > 20);
    // The last config points the alias at gpt-4o: new requests see it.
    let r = reqwest::Client::new()
        .post(&url)
        .json(&chat("house"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-plano-provider"], "openai/gpt-4o");
    let minis = mock
        .requests()
        .iter()
        .filter(|r| r.body["model"] == "gpt-4o-mini")
        .count();
    assert!(minis > 0, "the reloaded alias target served requests");
}
