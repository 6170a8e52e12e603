//! Cost of one rate-limit check, memory and Redis (local `redis-server`).
//!
//! Run: `cargo bench -p plano-egress --bench ratelimit`. Prints one line per case in
//! ns/op or µs/op. The Redis cases start their own `redis-server` on a free port and are
//! skipped (with a note) when it is not installed.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark reports on stdout and aborts on setup failure"
)]

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use plano_config::{
    LimitKind, LimitUnit, RateLimit, RateLimitStorage, Secret, Selector, SelectorValue,
};
use plano_egress::ratelimit::{Decision, LimitRequest, RateLimiter, tokens};

fn rule(kind: LimitKind) -> RateLimit {
    RateLimit {
        model: "openai/gpt-4o".into(),
        selector: Selector {
            key: "x-user".into(),
            value: SelectorValue::Any,
        },
        kind,
        // Large enough never to deny: we measure the admission path.
        amount: 1_000_000_000_000,
        unit: LimitUnit::Second,
    }
}

fn body_1kb() -> Vec<u8> {
    let msg = "The quick brown fox jumps over the lazy dog. ".repeat(21);
    format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{msg}"}}]}}"#).into_bytes()
}

async fn check(l: &RateLimiter, h: &HeaderMap, body: &[u8]) -> bool {
    matches!(
        l.check(&LimitRequest {
            provider: "openai/gpt-4o",
            alias: None,
            upstream_model: "gpt-4o",
            headers: h,
            body,
        })
        .await,
        Decision::Allow { .. }
    )
}

async fn sequential(name: &str, l: &RateLimiter, n: u32, users: u32, body: &[u8]) {
    let headers: Vec<HeaderMap> = (0..users)
        .map(|i| {
            let mut h = HeaderMap::new();
            h.insert(
                "x-user",
                HeaderValue::from_str(&format!("user-{i}")).unwrap(),
            );
            h
        })
        .collect();
    for h in headers.iter().take(100) {
        assert!(check(l, h, body).await);
    }
    let start = Instant::now();
    for i in 0..n {
        assert!(check(l, &headers[(i % users) as usize], body).await);
    }
    report(name, start.elapsed(), n);
}

async fn concurrent(name: &str, l: Arc<RateLimiter>, tasks: u32, per_task: u32) {
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let l = l.clone();
            tokio::spawn(async move {
                let mut h = HeaderMap::new();
                h.insert(
                    "x-user",
                    HeaderValue::from_str(&format!("user-{t}")).unwrap(),
                );
                for _ in 0..per_task {
                    assert!(check(&l, &h, b"{}").await);
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let n = tasks * per_task;
    let el = start.elapsed();
    println!(
        "{name:<58} {:>10.0} checks/s ({tasks} concurrent tasks)",
        f64::from(n) / el.as_secs_f64()
    );
}

fn report(name: &str, el: Duration, n: u32) {
    let ns = el.as_nanos() as f64 / f64::from(n);
    if ns < 10_000.0 {
        println!("{name:<58} {ns:>10.0} ns/op");
    } else {
        println!("{name:<58} {:>10.1} µs/op", ns / 1000.0);
    }
}

fn estimate_cost(name: &str, model: &str, body: &[u8], n: u32) {
    tokens::warm(model);
    let start = Instant::now();
    let mut total = 0;
    for _ in 0..n {
        total += tokens::estimate(model, std::hint::black_box(body));
    }
    std::hint::black_box(total);
    report(name, start.elapsed(), n);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let body = body_1kb();
    println!("body for token cases: {} bytes", body.len());

    estimate_cost(
        "token estimate, gpt-4o (tiktoken o200k), 1 KB",
        "gpt-4o",
        &body,
        2_000,
    );
    estimate_cost(
        "token estimate, other model (bytes/4), 1 KB",
        "llama3",
        &body,
        2_000,
    );

    let requests =
        RateLimiter::from_parts(&[rule(LimitKind::Requests)], &RateLimitStorage::Memory).unwrap();
    sequential(
        "memory, 1 requests rule, 1 client",
        &requests,
        1_000_000,
        1,
        b"{}",
    )
    .await;
    sequential(
        "memory, 1 requests rule, 10k clients (\"*\")",
        &requests,
        1_000_000,
        10_000,
        b"{}",
    )
    .await;
    let both = RateLimiter::from_parts(
        &[rule(LimitKind::Requests), rule(LimitKind::Tokens)],
        &RateLimitStorage::Memory,
    )
    .unwrap();
    sequential(
        "memory, requests + tokens rules, 1 KB body (tiktoken)",
        &both,
        20_000,
        100,
        &body,
    )
    .await;
    concurrent(
        "memory, 1 requests rule",
        Arc::new(
            RateLimiter::from_parts(&[rule(LimitKind::Requests)], &RateLimitStorage::Memory)
                .unwrap(),
        ),
        64,
        20_000,
    )
    .await;

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        println!("redis cases skipped: `redis-server` is not installed");
        return;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let storage = RateLimitStorage::Redis {
        url: Secret::new(format!("redis://127.0.0.1:{port}/")),
        timeout: Duration::from_secs(1),
        fail_open: false,
    };
    let redis = RateLimiter::from_parts(&[rule(LimitKind::Requests)], &storage).unwrap();
    sequential(
        "redis (local), 1 requests rule, one at a time",
        &redis,
        20_000,
        1_000,
        b"{}",
    )
    .await;
    let redis2 = RateLimiter::from_parts(
        &[rule(LimitKind::Requests), rule(LimitKind::Tokens)],
        &storage,
    )
    .unwrap();
    sequential(
        "redis (local), requests + tokens rules, 1 KB body",
        &redis2,
        10_000,
        1_000,
        &body,
    )
    .await;
    concurrent("redis (local), 1 requests rule", Arc::new(redis), 64, 1_000).await;
    let _ = child.kill();
    let _ = child.wait();
}
