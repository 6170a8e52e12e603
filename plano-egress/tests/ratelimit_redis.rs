//! Limits under concurrency and across replicas, against a real `redis-server`.
//!
//! Needs the Debian `redis-server` binary on PATH (`.ci/run` installs it); without it the
//! Redis tests fail with a message saying so rather than passing silently.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a failed setup should abort the test"
)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use plano_config::{
    LimitKind, LimitUnit, RateLimit, RateLimitStorage, Secret, Selector, SelectorValue,
};
use plano_egress::ratelimit::{Decision, LimitRequest, RateLimiter};

/// A `redis-server` child on a free loopback port, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port).await
    }

    async fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `redis-server` ({e}): these tests need a real Redis; \
                     install it with `apt-get install -y redis-server` (.ci/run does)"
                )
            });
        let server = Self { child, port };
        let client = redis::Client::open(server.url()).unwrap();
        for _ in 0..100 {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
                if pong.is_ok() {
                    return server;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {port} did not answer PING within 5s");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn rule(kind: LimitKind, amount: u64, unit: LimitUnit) -> RateLimit {
    RateLimit {
        model: "openai/gpt-4o".to_string(),
        selector: Selector {
            key: "x-user".to_string(),
            value: SelectorValue::Any,
        },
        kind,
        amount,
        unit,
    }
}

fn redis_storage(url: &str, timeout: Duration, fail_open: bool) -> RateLimitStorage {
    RateLimitStorage::Redis {
        url: Secret::new(url),
        timeout,
        fail_open,
    }
}

fn user(name: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-user", HeaderValue::from_str(name).unwrap());
    h
}

async fn check(l: &RateLimiter, h: &HeaderMap, body: &[u8]) -> Decision {
    l.check(&LimitRequest {
        provider: "openai/gpt-4o",
        alias: None,
        upstream_model: "gpt-4o",
        headers: h,
        body,
    })
    .await
}

/// Fire `n` checks at once, spread round-robin over `limiters`; count the admitted ones.
async fn burst(limiters: &[Arc<RateLimiter>], n: usize, who: &str) -> usize {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let l = limiters[i % limiters.len()].clone();
            let h = user(who);
            tokio::spawn(
                async move { matches!(check(&l, &h, b"{}").await, Decision::Allow { .. }) },
            )
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        if t.await.unwrap() {
            admitted += 1;
        }
    }
    admitted
}

// A generous timeout: these tests are about correctness under load on a busy 2-core
// machine, and a timed-out check would fail open and over-admit.
const TEST_TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_burst_admits_exactly_the_limit() {
    let l = Arc::new(
        RateLimiter::from_parts(
            &[rule(LimitKind::Requests, 50, LimitUnit::Hour)],
            &RateLimitStorage::Memory,
        )
        .unwrap(),
    );
    assert_eq!(burst(&[l], 200, "burst").await, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_burst_admits_exactly_the_limit() {
    let server = RedisServer::start().await;
    let l = Arc::new(
        RateLimiter::from_parts(
            &[rule(LimitKind::Requests, 50, LimitUnit::Hour)],
            &redis_storage(&server.url(), TEST_TIMEOUT, false),
        )
        .unwrap(),
    );
    assert_eq!(burst(std::slice::from_ref(&l), 200, "burst").await, 50);

    // One namespaced key per bucket, expiring once the bucket would be full again.
    let client = redis::Client::open(server.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("plano:rl:") && keys[0].ends_with(":burst"),
        "{keys:?}"
    );
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl_ms > 3_000_000 && ttl_ms <= 3_601_000, "ttl {ttl_ms}ms");

    // A reload with the same rule keeps the (Redis) counter: still exhausted.
    l.update_parts(
        &[rule(LimitKind::Requests, 50, LimitUnit::Hour)],
        &redis_storage(&server.url(), TEST_TIMEOUT, false),
    )
    .unwrap();
    let d = check(&l, &user("burst"), b"{}").await;
    assert!(matches!(d, Decision::Deny { .. }), "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_one_limit() {
    let server = RedisServer::start().await;
    let rules = [rule(LimitKind::Requests, 1000, LimitUnit::Day)];
    // Separate limiters, separate connections: what two egress replicas would have.
    let a = Arc::new(
        RateLimiter::from_parts(&rules, &redis_storage(&server.url(), TEST_TIMEOUT, false))
            .unwrap(),
    );
    let b = Arc::new(
        RateLimiter::from_parts(&rules, &redis_storage(&server.url(), TEST_TIMEOUT, false))
            .unwrap(),
    );
    let mut admitted = 0;
    for _ in 0..6 {
        admitted += burst(&[a.clone(), b.clone()], 500, "shared").await;
    }
    // 3000 attempts against 1000/day: the fleet admits 1000 (±1%), not 2000.
    assert!(
        (990..=1010).contains(&admitted),
        "admitted {admitted} of 3000 against a shared limit of 1000"
    );
    // And a fresh replica sees the same exhausted bucket.
    let c = RateLimiter::from_parts(&rules, &redis_storage(&server.url(), TEST_TIMEOUT, false))
        .unwrap();
    let d = check(&c, &user("shared"), b"{}").await;
    assert!(matches!(d, Decision::Deny { .. }), "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tokens_are_reconciled_and_headers_reported() {
    let server = RedisServer::start().await;
    let l = RateLimiter::from_parts(
        &[
            rule(LimitKind::Tokens, 1000, LimitUnit::Minute),
            rule(LimitKind::Requests, 10, LimitUnit::Minute),
        ],
        &redis_storage(&server.url(), TEST_TIMEOUT, true),
    )
    .unwrap();
    let h = user("tok");
    let body = "hello world ".repeat(50); // 100 tokens for gpt-4o's tokenizer
    let Decision::Allow { ticket, headers } = check(&l, &h, body.as_bytes()).await else {
        panic!("denied");
    };
    let estimated = ticket.estimated_tokens();
    assert!((90..=110).contains(&estimated), "estimate {estimated}");
    assert_eq!(headers["x-ratelimit-limit-tokens"], "1000");
    assert_eq!(
        headers["x-ratelimit-remaining-tokens"],
        (1000 - estimated).to_string().as_str()
    );
    assert_eq!(headers["x-ratelimit-remaining-requests"], "9");
    // It really used 900 tokens: 800-odd more are charged, leaving about 100.
    l.reconcile(ticket, 900).await;
    let d = check(&l, &h, b"hi").await;
    let Decision::Allow { headers, .. } = &d else {
        panic!("{d:?}");
    };
    let left: u64 = headers["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // 1000 - 900 - 1, plus at most a few tokens refilled while the test ran.
    assert!((99..=110).contains(&left), "remaining {left}");
    // 200 tokens no longer fit.
    let d = check(&l, &h, "hello world ".repeat(100).as_bytes()).await;
    assert!(
        matches!(
            d,
            Decision::Deny {
                kind: LimitKind::Tokens,
                ..
            }
        ),
        "{d:?}"
    );
}

fn backend_errors(text: &str, policy: &str) -> u64 {
    let needle = format!("policy=\"{policy}\"");
    text.lines()
        .filter(|l| l.starts_with("plano_ratelimit_backend_errors_total") && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_open_or_closed_promptly_and_recovers() {
    let metrics = plano_common::metrics::install("test");
    let mut server = RedisServer::start().await;
    let rules = [rule(LimitKind::Requests, 1, LimitUnit::Hour)];
    let timeout = Duration::from_millis(100);
    let open =
        RateLimiter::from_parts(&rules, &redis_storage(&server.url(), timeout, true)).unwrap();
    let closed =
        RateLimiter::from_parts(&rules, &redis_storage(&server.url(), timeout, false)).unwrap();
    // While Redis is up, both enforce the shared limit.
    assert!(matches!(
        check(&open, &user("k"), b"").await,
        Decision::Allow { .. }
    ));
    assert!(matches!(
        check(&closed, &user("k"), b"").await,
        Decision::Deny { .. }
    ));
    let before_open = backend_errors(&metrics.render(), "open");
    let before_closed = backend_errors(&metrics.render(), "closed");

    server.kill();
    // Bounded, never a hang: each answer comes well within this guard.
    let guard = Duration::from_secs(5);
    for _ in 0..3 {
        let d = tokio::time::timeout(guard, check(&open, &user("k"), b""))
            .await
            .expect("fail-open check hung");
        assert!(
            matches!(d, Decision::Allow { .. }),
            "fail open denied: {d:?}"
        );
        let d = tokio::time::timeout(guard, check(&closed, &user("other"), b""))
            .await
            .expect("fail-closed check hung");
        let Decision::Deny {
            retry_after,
            message,
            ..
        } = &d
        else {
            panic!("fail closed admitted: {d:?}");
        };
        assert_eq!(*retry_after, Duration::from_secs(1));
        assert!(message.contains("unavailable"), "{message}");
    }
    let text = metrics.render();
    assert!(backend_errors(&text, "open") >= before_open + 3, "{text}");
    assert!(
        backend_errors(&text, "closed") >= before_closed + 3,
        "{text}"
    );

    // Redis comes back (empty): both limiters recover by themselves.
    let _server = RedisServer::start_on(server.port).await;
    let mut recovered = false;
    for _ in 0..50 {
        if let Decision::Allow { headers, .. } = check(&closed, &user("back"), b"").await
            && headers.contains_key("x-ratelimit-remaining-requests")
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "limiter did not use Redis again after it came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_at_start_does_not_prevent_start() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let l = RateLimiter::from_parts(
        &[rule(LimitKind::Requests, 1, LimitUnit::Hour)],
        &redis_storage(
            &format!("redis://127.0.0.1:{port}/"),
            Duration::from_millis(100),
            true,
        ),
    )
    .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), check(&l, &user("x"), b""))
        .await
        .expect("check hung on an unreachable Redis");
    assert!(matches!(d, Decision::Allow { .. }), "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_counted_by_model_and_kind() {
    let metrics = plano_common::metrics::install("test");
    let mut r = rule(LimitKind::Requests, 5, LimitUnit::Hour);
    r.model = "counted-model".to_string();
    let l = RateLimiter::from_parts(&[r], &RateLimitStorage::Memory).unwrap();
    let h = user("u");
    let mut denied = 0;
    for _ in 0..20 {
        let d = l
            .check(&LimitRequest {
                provider: "counted-model",
                alias: None,
                upstream_model: "x",
                headers: &h,
                body: b"",
            })
            .await;
        if matches!(d, Decision::Deny { .. }) {
            denied += 1;
        }
    }
    assert_eq!(denied, 15);
    let text = metrics.render();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("plano_ratelimit_rejections_total")
                && l.contains("model=\"counted-model\"")
                && l.contains("kind=\"requests\"")
        })
        .unwrap_or_else(|| panic!("no rejection counter in:\n{text}"));
    assert!(line.ends_with(" 15"), "{line}");
}
