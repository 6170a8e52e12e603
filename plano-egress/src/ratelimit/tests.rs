//! Behaviour of the limiter on the memory backend, on a paused tokio clock.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use plano_config::{LimitKind, LimitUnit, RateLimit, RateLimitStorage, Selector, SelectorValue};

use super::*;

fn rule(
    model: &str,
    key: &str,
    value: &str,
    kind: LimitKind,
    amount: u64,
    unit: LimitUnit,
) -> RateLimit {
    RateLimit {
        model: model.to_string(),
        selector: Selector {
            key: key.to_string(),
            value: if value == "*" {
                SelectorValue::Any
            } else {
                SelectorValue::Exact(value.to_string())
            },
        },
        kind,
        amount,
        unit,
    }
}

fn limiter(rules: &[RateLimit]) -> RateLimiter {
    RateLimiter::from_parts(rules, &RateLimitStorage::Memory).unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

async fn check(l: &RateLimiter, provider: &str, h: &HeaderMap, body: &[u8]) -> Decision {
    l.check(&LimitRequest {
        provider,
        alias: None,
        upstream_model: "some-model",
        headers: h,
        body,
    })
    .await
}

fn allowed(d: &Decision) -> bool {
    matches!(d, Decision::Allow { .. })
}

fn header<'a>(d: &'a Decision, name: &str) -> Option<&'a str> {
    let h = match d {
        Decision::Allow { headers, .. } | Decision::Deny { headers, .. } => headers,
    };
    h.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(start_paused = true)]
async fn requests_per_minute_deny_then_refill() {
    let l = limiter(&[rule(
        "openai",
        "x-user",
        "*",
        LimitKind::Requests,
        3,
        LimitUnit::Minute,
    )]);
    let h = headers(&[("x-user", "alice")]);
    for left in ["2", "1", "0"] {
        let d = check(&l, "openai", &h, b"{}").await;
        assert!(allowed(&d));
        assert_eq!(header(&d, "x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(header(&d, "x-ratelimit-remaining-requests"), Some(left));
    }
    let d = check(&l, "openai", &h, b"{}").await;
    let Decision::Deny {
        retry_after,
        kind,
        message,
        ..
    } = &d
    else {
        panic!("fourth request admitted: {d:?}");
    };
    // 3 per minute refills one request every 20 s.
    assert_eq!(*retry_after, Duration::from_secs(20));
    assert_eq!(*kind, LimitKind::Requests);
    assert!(message.contains("requests per minute"), "{message}");
    assert_eq!(header(&d, "retry-after"), Some("20"));
    assert_eq!(header(&d, "x-ratelimit-reset-requests"), Some("1m0s"));

    tokio::time::advance(Duration::from_secs(20)).await;
    assert!(allowed(&check(&l, "openai", &h, b"{}").await));
    assert!(!allowed(&check(&l, "openai", &h, b"{}").await));
}

#[tokio::test(start_paused = true)]
async fn unit_boundary_admits_no_burst() {
    // Unlike a fixed window, draining the bucket just before a unit boundary does not buy
    // a second full burst just after it.
    let l = limiter(&[rule(
        "m",
        "x-user",
        "*",
        LimitKind::Requests,
        10,
        LimitUnit::Second,
    )]);
    let h = headers(&[("x-user", "a")]);
    for _ in 0..10 {
        assert!(allowed(&check(&l, "m", &h, b"").await));
    }
    tokio::time::advance(Duration::from_millis(99)).await;
    assert!(!allowed(&check(&l, "m", &h, b"").await));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(allowed(&check(&l, "m", &h, b"").await));
    assert!(!allowed(&check(&l, "m", &h, b"").await));
    // A full unit after draining, the whole allowance is back, and no more.
    tokio::time::advance(Duration::from_secs(1)).await;
    let mut n = 0;
    while allowed(&check(&l, "m", &h, b"").await) {
        n += 1;
    }
    assert_eq!(n, 10);
}

#[tokio::test(start_paused = true)]
async fn each_units_length_is_honoured() {
    for (unit, secs) in [
        (LimitUnit::Second, 1),
        (LimitUnit::Minute, 60),
        (LimitUnit::Hour, 3600),
        (LimitUnit::Day, 86_400),
    ] {
        let l = limiter(&[rule("m", "k", "*", LimitKind::Requests, 1, unit)]);
        let h = headers(&[("k", "v")]);
        assert!(allowed(&check(&l, "m", &h, b"").await));
        let d = check(&l, "m", &h, b"").await;
        let Decision::Deny { retry_after, .. } = d else {
            panic!("{unit:?}: second request admitted");
        };
        assert_eq!(retry_after, Duration::from_secs(secs), "{unit:?}");
        tokio::time::advance(Duration::from_secs(secs) - Duration::from_millis(1)).await;
        assert!(!allowed(&check(&l, "m", &h, b"").await), "{unit:?}");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(allowed(&check(&l, "m", &h, b"").await), "{unit:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn wildcard_gives_each_value_its_own_bucket() {
    let l = limiter(&[rule(
        "m",
        "x-user",
        "*",
        LimitKind::Requests,
        1,
        LimitUnit::Hour,
    )]);
    let alice = headers(&[("x-user", "alice")]);
    let bob = headers(&[("x-user", "bob")]);
    assert!(allowed(&check(&l, "m", &alice, b"").await));
    assert!(!allowed(&check(&l, "m", &alice, b"").await));
    assert!(allowed(&check(&l, "m", &bob, b"").await));
    assert!(!allowed(&check(&l, "m", &bob, b"").await));
}

#[tokio::test(start_paused = true)]
async fn exact_selector_limits_only_that_value() {
    let l = limiter(&[rule(
        "m",
        "x-tier",
        "free",
        LimitKind::Requests,
        1,
        LimitUnit::Hour,
    )]);
    let free = headers(&[("x-tier", "free")]);
    let paid = headers(&[("x-tier", "paid")]);
    assert!(allowed(&check(&l, "m", &free, b"").await));
    assert!(!allowed(&check(&l, "m", &free, b"").await));
    for _ in 0..5 {
        let d = check(&l, "m", &paid, b"").await;
        assert!(allowed(&d));
        // Unlimited requests carry no limit headers.
        assert_eq!(header(&d, "x-ratelimit-limit-requests"), None);
    }
}

#[tokio::test(start_paused = true)]
async fn missing_or_empty_header_is_not_limited_and_other_models_are_not_either() {
    let l = limiter(&[rule(
        "m",
        "x-user",
        "*",
        LimitKind::Requests,
        1,
        LimitUnit::Hour,
    )]);
    for _ in 0..5 {
        assert!(allowed(&check(&l, "m", &HeaderMap::new(), b"").await));
        assert!(allowed(
            &check(&l, "m", &headers(&[("x-user", "")]), b"").await
        ));
        assert!(allowed(
            &check(&l, "other", &headers(&[("x-user", "a")]), b"").await
        ));
    }
    // Plano's selector header naming another header does not exempt a request.
    let h = headers(&[("x-user", "a"), (SELECTOR_HEADER, "x-other")]);
    assert!(allowed(&check(&l, "m", &h, b"").await));
    assert!(!allowed(&check(&l, "m", &h, b"").await));
}

#[tokio::test(start_paused = true)]
async fn alias_rules_apply_via_the_alias_provider_rules_to_the_provider() {
    let l = limiter(&[
        rule("fast", "k", "*", LimitKind::Requests, 1, LimitUnit::Hour),
        rule(
            "openai/gpt-4o",
            "k",
            "*",
            LimitKind::Requests,
            2,
            LimitUnit::Hour,
        ),
    ]);
    let h = headers(&[("k", "v")]);
    let alias_req = LimitRequest {
        provider: "openai/gpt-4o",
        alias: Some("fast"),
        upstream_model: "gpt-4o",
        headers: &h,
        body: b"",
    };
    // Through the alias both rules apply; directly only the provider's.
    assert!(allowed(&l.check(&alias_req).await));
    assert!(!allowed(&l.check(&alias_req).await));
    assert!(allowed(&check(&l, "openai/gpt-4o", &h, b"").await));
    assert!(!allowed(&check(&l, "openai/gpt-4o", &h, b"").await));
}

#[tokio::test(start_paused = true)]
async fn tokens_charge_the_estimate_and_requests_charge_one() {
    let l = limiter(&[
        rule("m", "k", "*", LimitKind::Tokens, 100, LimitUnit::Minute),
        rule("m", "k", "*", LimitKind::Requests, 10, LimitUnit::Minute),
    ]);
    let h = headers(&[("k", "v")]);
    // 160 bytes to a model without a tokenizer: 40 tokens.
    let body = [b'a'; 160];
    let d = check(&l, "m", &h, &body).await;
    let Decision::Allow { ticket, .. } = &d else {
        panic!("{d:?}");
    };
    assert_eq!(ticket.estimated_tokens(), 40);
    assert_eq!(header(&d, "x-ratelimit-remaining-tokens"), Some("60"));
    assert_eq!(header(&d, "x-ratelimit-remaining-requests"), Some("9"));
    assert_eq!(header(&d, "x-ratelimit-limit-tokens"), Some("100"));
    let d = check(&l, "m", &h, &body).await;
    assert_eq!(header(&d, "x-ratelimit-remaining-tokens"), Some("20"));
    // 40 more do not fit in 20: denied on tokens, and the request rule is not charged.
    let d = check(&l, "m", &h, &body).await;
    let Decision::Deny { kind, .. } = &d else {
        panic!("{d:?}");
    };
    assert_eq!(*kind, LimitKind::Tokens);
    assert_eq!(header(&d, "x-ratelimit-remaining-requests"), Some("8"));
}

#[tokio::test(start_paused = true)]
async fn a_denial_by_one_rule_consumes_nothing_from_another() {
    let l = limiter(&[
        rule(
            "m",
            "x-user",
            "*",
            LimitKind::Requests,
            100,
            LimitUnit::Hour,
        ),
        rule("m", "x-team", "*", LimitKind::Requests, 1, LimitUnit::Hour),
    ]);
    let h = headers(&[("x-user", "u"), ("x-team", "t")]);
    assert!(allowed(&check(&l, "m", &h, b"").await));
    for _ in 0..5 {
        assert!(!allowed(&check(&l, "m", &h, b"").await));
    }
    let only_user = headers(&[("x-user", "u")]);
    let d = check(&l, "m", &only_user, b"").await;
    assert_eq!(header(&d, "x-ratelimit-remaining-requests"), Some("98"));
}

#[tokio::test(start_paused = true)]
async fn reconcile_refunds_and_carries_debt() {
    let l = limiter(&[rule("m", "k", "*", LimitKind::Tokens, 100, LimitUnit::Hour)]);
    let h = headers(&[("k", "v")]);
    let body = [b'a'; 200]; // 50 tokens estimated
    let Decision::Allow { ticket, .. } = check(&l, "m", &h, &body).await else {
        panic!("denied");
    };
    // Only 10 were used: 40 come back, 90 remain.
    l.reconcile(ticket, 10).await;
    let Decision::Allow { ticket, headers } = check(&l, "m", &h, &body).await else {
        panic!("denied");
    };
    assert_eq!(headers["x-ratelimit-remaining-tokens"], "40");
    // This one used 150: the bucket goes 100 into debt (40 - 100 = -60 after the
    // estimate was already taken).
    l.reconcile(ticket, 150).await;
    let d = check(&l, "m", &h, b"aaaa").await;
    let Decision::Deny { retry_after, .. } = &d else {
        panic!("admitted while in debt: {d:?}");
    };
    // From -60 to the 1 token asked: 61/100 of an hour.
    assert_eq!(*retry_after, Duration::from_secs(2196));
    assert_eq!(header(&d, "x-ratelimit-remaining-tokens"), Some("0"));
}

#[tokio::test(start_paused = true)]
async fn a_request_larger_than_the_limit_is_refused_with_a_clear_message() {
    let l = limiter(&[rule(
        "m",
        "k",
        "*",
        LimitKind::Tokens,
        10,
        LimitUnit::Minute,
    )]);
    let h = headers(&[("k", "v")]);
    let d = check(&l, "m", &h, &[b'a'; 400]).await;
    let Decision::Deny { message, .. } = &d else {
        panic!("{d:?}");
    };
    assert!(message.contains("Request too large"), "{message}");
    // The bucket was not touched.
    assert!(allowed(&check(&l, "m", &h, &[b'a'; 40]).await));
}

#[tokio::test(start_paused = true)]
async fn reload_keeps_counters_of_unchanged_rules_only() {
    let keep = rule("m", "a", "*", LimitKind::Requests, 1, LimitUnit::Hour);
    let change = rule("m", "b", "*", LimitKind::Requests, 1, LimitUnit::Hour);
    let l = limiter(&[keep.clone(), change.clone()]);
    let ha = headers(&[("a", "x")]);
    let hb = headers(&[("b", "x")]);
    assert!(allowed(&check(&l, "m", &ha, b"").await));
    assert!(allowed(&check(&l, "m", &hb, b"").await));

    let mut changed = change.clone();
    changed.amount = 2;
    l.update_parts(&[changed, keep], &RateLimitStorage::Memory)
        .unwrap();
    // Unchanged rule: still exhausted. Changed rule: a fresh bucket of 2.
    assert!(!allowed(&check(&l, "m", &ha, b"").await));
    assert!(allowed(&check(&l, "m", &hb, b"").await));
    assert!(allowed(&check(&l, "m", &hb, b"").await));
    assert!(!allowed(&check(&l, "m", &hb, b"").await));

    l.update_parts(&[], &RateLimitStorage::Memory).unwrap();
    assert!(l.is_empty());
    assert!(allowed(&check(&l, "m", &ha, b"").await));
}

#[tokio::test(start_paused = true)]
async fn idle_wildcard_buckets_are_evicted() {
    let r = rule("m", "k", "*", LimitKind::Requests, 5, LimitUnit::Second);
    let l = limiter(std::slice::from_ref(&r));
    for i in 0..2000 {
        let h = headers(&[("k", &format!("client-{i}"))]);
        assert!(allowed(&check(&l, "m", &h, b"").await));
    }
    let held = |l: &RateLimiter| l.active.load().rules[0].buckets.len();
    assert_eq!(held(&l), 2000);
    tokio::time::advance(Duration::from_secs(2)).await;
    for i in 0..1000 {
        let h = headers(&[("k", &format!("new-{i}"))]);
        assert!(allowed(&check(&l, "m", &h, b"").await));
    }
    assert_eq!(held(&l), 1000);
}

#[test]
fn fnv_is_stable() {
    // Redis keys must be identical in every build of every replica.
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
}

#[tokio::test(start_paused = true)]
async fn denial_renders_a_429_in_the_clients_shape() {
    let l = limiter(&[rule(
        "m",
        "k",
        "*",
        LimitKind::Requests,
        1,
        LimitUnit::Minute,
    )]);
    let h = headers(&[("k", "v")]);
    let ok = check(&l, "m", &h, b"").await;
    assert!(ok.rejection(ApiShape::OpenAi).is_none());
    let d = check(&l, "m", &h, b"").await;
    for (shape, type_path) in [
        (ApiShape::OpenAi, "/error/type"),
        (ApiShape::Anthropic, "/error/type"),
    ] {
        let res = d.rejection(shape).unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()["retry-after"], "60");
        assert_eq!(res.headers()["x-ratelimit-remaining-requests"], "0");
        assert_eq!(res.headers()["content-type"], "application/json");
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v.pointer(type_path).unwrap(), "rate_limit_error");
        let msg = v.pointer("/error/message").unwrap().as_str().unwrap();
        assert!(
            msg.starts_with("Rate limit reached for m on requests per minute"),
            "{msg}"
        );
    }
}

#[test]
fn redis_storage_outside_a_runtime_is_an_error_not_a_panic() {
    let storage = RateLimitStorage::Redis {
        url: plano_config::Secret::new("redis://127.0.0.1:1/"),
        timeout: Duration::from_millis(100),
        fail_open: true,
    };
    let r = [rule("m", "k", "*", LimitKind::Requests, 1, LimitUnit::Hour)];
    assert!(RateLimiter::from_parts(&r, &storage).is_err());
}

#[test]
fn backend_errors_are_logged_at_most_once_per_ten_seconds() {
    let last = AtomicU64::new(0);
    let start = LOG_EVERY_MS; // what the first failure after start passes
    assert!(claim_log_slot(&last, start));
    assert!(!claim_log_slot(&last, start));
    assert!(!claim_log_slot(&last, start + 9_999));
    assert!(claim_log_slot(&last, start + 10_000));
    assert!(!claim_log_slot(&last, start + 10_001));
}
