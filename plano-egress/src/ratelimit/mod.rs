//! Rate limits (`ratelimits` in the config): requests or tokens per second/minute/hour/day,
//! per model and per selector header, enforced in memory or across replicas in Redis.
//!
//! The dispatch calls [`RateLimiter::check`] once, after selecting the provider and before
//! the first upstream attempt, and [`RateLimiter::reconcile`] with the real token usage when
//! the response or stream ends. Semantics and the algorithm are explained in
//! `docs/ratelimits.md`.

mod bucket;
mod format;
mod memory;
mod redis_backend;
pub mod tokens;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderName};
use plano_common::errors::ApiShape;
use plano_common::metrics::{RATELIMIT_BACKEND_ERRORS_TOTAL, RATELIMIT_REJECTIONS_TOTAL};
use plano_config::{Config, LimitUnit, RateLimit, RateLimitStorage, SelectorValue};

pub use plano_config::LimitKind;

use bucket::Limit;
use format::KindState;
use memory::RuleBuckets;
use redis_backend::{Charge, Outcome, RedisBackend, RedisError};

/// Plano's request header naming the header whose value selects the bucket. Rules here read
/// their own header directly, which covers every request Plano would limit; the header is
/// accepted but never narrows the rules applied (see docs/ratelimits.md).
pub const SELECTOR_HEADER: &str = "x-arch-ratelimit-selector";

/// At most one "storage unreachable" log line per this many milliseconds.
const LOG_EVERY_MS: u64 = 10_000;

/// What the dispatch knows about a request when it asks for admission.
pub struct LimitRequest<'a> {
    /// The configured provider name that will serve the request. Rules naming it apply.
    pub provider: &'a str,
    /// The alias the request came through (`model_aliases` key), if any. Rules naming it
    /// apply too.
    pub alias: Option<&'a str>,
    /// The model id sent upstream (prefix stripped), which picks the tokenizer.
    pub upstream_model: &'a str,
    pub headers: &'a HeaderMap,
    /// The request body as received: the input-token estimate counts it.
    pub body: &'a [u8],
}

#[derive(Debug)]
pub enum Decision {
    /// Go ahead. `headers` (the `x-ratelimit-*` of each limited kind) go on the response.
    Allow { ticket: Ticket, headers: HeaderMap },
    /// Answer 429 in the client's API shape with `message`, adding `headers`
    /// (`retry-after` included).
    Deny {
        retry_after: Duration,
        headers: HeaderMap,
        message: String,
        kind: LimitKind,
    },
}

impl Decision {
    /// The 429 answer for a denial, in the client's API shape (OpenAI
    /// `rate_limit_exceeded` or Anthropic `rate_limit_error`), carrying `retry-after` and
    /// the `x-ratelimit-*` headers. `None` for [`Decision::Allow`].
    pub fn rejection(&self, shape: ApiShape) -> Option<axum::response::Response> {
        let Decision::Deny {
            headers, message, ..
        } = self
        else {
            return None;
        };
        let err = crate::error::EgressError::RateLimited {
            message: message.clone(),
            headers: headers.clone(),
        };
        Some(err.into_response(shape))
    }
}

/// The token estimates charged at admission, to be corrected by [`RateLimiter::reconcile`].
/// Dropping it without reconciling leaves the estimate charged.
pub struct Ticket {
    charges: Vec<TicketCharge>,
    backend: Option<Arc<Backend>>,
}

struct TicketCharge {
    rule: Arc<Rule>,
    key: String,
    charged: u64,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("token_charges", &self.charges.len())
            .finish()
    }
}

impl Ticket {
    /// The input tokens estimated and charged for this request (0 when no token rule
    /// applied).
    pub fn estimated_tokens(&self) -> u64 {
        self.charges.first().map_or(0, |c| c.charged)
    }
}

/// One configured rule with its stable identity and (memory backend) its buckets.
struct Rule {
    /// model, selector, kind, amount and unit: equal ids share counters across reloads.
    id: String,
    redis_prefix: String,
    model: String,
    /// The selector header, parsed once (`None`: not a valid name, so never sent).
    header: Option<HeaderName>,
    value: SelectorValue,
    kind: LimitKind,
    amount: u64,
    unit: LimitUnit,
    limit: Limit,
    buckets: RuleBuckets,
}

impl Rule {
    fn new(r: &RateLimit) -> Self {
        let value = match &r.selector.value {
            SelectorValue::Exact(v) => format!("={v}"),
            SelectorValue::Any => "*".to_string(),
        };
        let id = format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
            r.model,
            r.selector.key,
            value,
            kind_word(r.kind),
            r.amount,
            unit_word(r.unit)
        );
        let limit = Limit::new(r.amount, r.unit.duration());
        Self {
            redis_prefix: format!("plano:rl:{:016x}:", fnv1a64(id.as_bytes())),
            id,
            model: r.model.clone(),
            header: HeaderName::from_bytes(r.selector.key.to_ascii_lowercase().as_bytes()).ok(),
            value: r.selector.value.clone(),
            kind: r.kind,
            amount: r.amount,
            unit: r.unit,
            buckets: RuleBuckets::new(&limit),
            limit,
        }
    }

    /// The bucket this request falls in, if the rule applies to it.
    fn bucket_for(&self, req: &LimitRequest<'_>) -> Option<String> {
        if self.model != req.provider && Some(self.model.as_str()) != req.alias {
            return None;
        }
        let raw = req.headers.get(self.header.as_ref()?)?;
        let value = String::from_utf8_lossy(raw.as_bytes());
        if value.is_empty() {
            return None;
        }
        match &self.value {
            SelectorValue::Exact(v) if *v == value => Some(value.into_owned()),
            SelectorValue::Exact(_) => None,
            SelectorValue::Any => Some(value.into_owned()),
        }
    }
}

enum Backend {
    Memory,
    Redis {
        redis: RedisBackend,
        fail_open: bool,
        last_log_ms: AtomicU64,
    },
}

struct Active {
    rules: Vec<Arc<Rule>>,
    backend: Arc<Backend>,
    storage_fingerprint: String,
}

/// Enforces the configured `ratelimits`. Cheap to share (`Arc`); safe to call concurrently.
pub struct RateLimiter {
    active: ArcSwap<Active>,
    /// Origin of the memory backend's clock (tokio time, so paused-clock tests drive it).
    epoch: tokio::time::Instant,
}

/// Per matched rule: its bucket, the cost charged now, and (after the backend answered)
/// its level and time until full.
struct Matched {
    rule: Arc<Rule>,
    key: String,
    cost: f64,
}

impl RateLimiter {
    /// Build from the config. Must run inside a tokio runtime (the Redis connection is
    /// created lazily there); never connects, so a replica starts even while Redis is down.
    pub async fn new(cfg: &Config) -> anyhow::Result<Self> {
        Self::from_parts(&cfg.ratelimits, &cfg.ratelimit_storage)
    }

    /// Same as [`RateLimiter::new`] from the two config sections it reads. With Redis
    /// storage, call it inside a tokio runtime (it returns an error otherwise).
    pub fn from_parts(rules: &[RateLimit], storage: &RateLimitStorage) -> anyhow::Result<Self> {
        let active = build(rules, storage, None)?;
        Ok(Self {
            active: ArcSwap::from_pointee(active),
            epoch: tokio::time::Instant::now(),
        })
    }

    /// Swap in the limits of a reloaded config. Rules whose identity (model, selector,
    /// kind, amount, unit) is unchanged keep their counters; Redis counters live in Redis.
    pub async fn update(&self, cfg: &Config) -> anyhow::Result<()> {
        self.update_parts(&cfg.ratelimits, &cfg.ratelimit_storage)
    }

    pub fn update_parts(
        &self,
        rules: &[RateLimit],
        storage: &RateLimitStorage,
    ) -> anyhow::Result<()> {
        let old = self.active.load_full();
        let new = build(rules, storage, Some(&old))?;
        self.active.store(Arc::new(new));
        Ok(())
    }

    /// True when no rule is configured: the dispatch may skip the call entirely.
    pub fn is_empty(&self) -> bool {
        self.active.load().rules.is_empty()
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Admit or refuse a request, charging every applicable rule atomically: one request
    /// (and the input-token estimate, for token rules) against each, or nothing at all.
    pub async fn check(&self, req: &LimitRequest<'_>) -> Decision {
        let active = self.active.load_full();
        let mut matched: Vec<(Arc<Rule>, String)> = active
            .rules
            .iter()
            .filter_map(|r| r.bucket_for(req).map(|k| (r.clone(), k)))
            .collect();
        if matched.is_empty() {
            return self.allow_unlimited();
        }
        // A global lock order (stable ids) keeps the memory backend free of deadlocks.
        matched.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        let estimate = if matched.iter().any(|(r, _)| r.kind == LimitKind::Tokens) {
            tokens::estimate(req.upstream_model, req.body)
        } else {
            0
        };
        let matched: Vec<Matched> = matched
            .into_iter()
            .map(|(rule, key)| {
                let cost = match rule.kind {
                    LimitKind::Requests => 1.0,
                    LimitKind::Tokens => estimate as f64,
                };
                Matched { rule, key, cost }
            })
            .collect();

        // A request larger than a whole bucket can never pass; say so instead of asking
        // the client to retry forever.
        if let Some(m) = matched.iter().find(|m| m.cost > m.rule.limit.capacity) {
            return self.deny_too_large(m);
        }

        let outcome = match &*active.backend {
            Backend::Memory => self.memory_run(&matched, false),
            Backend::Redis {
                redis,
                fail_open,
                last_log_ms,
            } => {
                let keys = redis_keys(&matched);
                match redis.run(&redis_charges(&matched, &keys), false).await {
                    Ok(o) => o,
                    Err(e) => {
                        return self.backend_failed(*fail_open, last_log_ms, &e, &matched);
                    }
                }
            }
        };
        self.decide(&active, matched, outcome)
    }

    /// Charge the difference between the admission estimate and `actual_tokens` (the
    /// provider-reported input + output tokens; 0 when nothing was produced). A result
    /// over the estimate leaves the bucket in debt, which later requests wait out.
    pub async fn reconcile(&self, ticket: Ticket, actual_tokens: u64) {
        let Some(backend) = &ticket.backend else {
            return;
        };
        let matched: Vec<Matched> = ticket
            .charges
            .iter()
            .filter(|c| c.charged != actual_tokens)
            .map(|c| Matched {
                rule: c.rule.clone(),
                key: c.key.clone(),
                cost: actual_tokens as f64 - c.charged as f64,
            })
            .collect();
        if matched.is_empty() {
            return;
        }
        match &**backend {
            Backend::Memory => {
                self.memory_run(&matched, true);
            }
            Backend::Redis {
                redis,
                fail_open,
                last_log_ms,
            } => {
                let keys = redis_keys(&matched);
                if let Err(e) = redis.run(&redis_charges(&matched, &keys), true).await {
                    count_backend_error(*fail_open);
                    log_backend_error(last_log_ms, self.epoch, &e, *fail_open);
                }
            }
        }
    }

    /// Check-and-charge (or with `force`, charge unconditionally) in process memory.
    fn memory_run(&self, matched: &[Matched], force: bool) -> Outcome {
        let now = self.now_us();
        let mut guards: Vec<_> = matched
            .iter()
            .map(|m| m.rule.buckets.lock(&m.key))
            .collect();
        let levels: Vec<f64> = matched
            .iter()
            .zip(&guards)
            .map(|(m, g)| m.rule.limit.level(g.get(&m.key), now))
            .collect();
        let mut denied_by = None;
        let mut wait_us = 0.0;
        if !force {
            for (i, (m, level)) in matched.iter().zip(&levels).enumerate() {
                let w = m.rule.limit.wait_us(*level, m.cost);
                if *level < m.cost && (denied_by.is_none() || w > wait_us) {
                    denied_by = Some(i);
                    wait_us = w;
                }
            }
        }
        let admitted = denied_by.is_none();
        let states = matched
            .iter()
            .zip(levels)
            .zip(guards.iter_mut())
            .map(|((m, level), g)| {
                let level = if admitted {
                    let after = (level - m.cost).min(m.rule.limit.capacity);
                    g.set(&m.key, after, now, &m.rule.limit);
                    after
                } else {
                    level
                };
                (level, m.rule.limit.reset_us(level))
            })
            .collect();
        Outcome {
            admitted,
            denied_by,
            wait_us,
            states,
        }
    }

    fn decide(&self, active: &Arc<Active>, matched: Vec<Matched>, o: Outcome) -> Decision {
        let headers = kind_headers(&matched, &o.states);
        if o.admitted {
            let charges = matched
                .into_iter()
                .filter(|m| m.rule.kind == LimitKind::Tokens)
                .map(|m| TicketCharge {
                    rule: m.rule,
                    key: m.key,
                    charged: m.cost as u64,
                })
                .collect();
            return Decision::Allow {
                ticket: Ticket {
                    charges,
                    backend: Some(active.backend.clone()),
                },
                headers,
            };
        }
        let m = o.denied_by.and_then(|i| matched.get(i)).or(matched.first());
        let Some(m) = m else {
            return self.allow_unlimited();
        };
        let mut headers = headers;
        format::put_retry_after(&mut headers, o.wait_us);
        let retry_after = Duration::from_secs(format::retry_after_secs(o.wait_us));
        count_rejection(&m.rule);
        Decision::Deny {
            retry_after,
            headers,
            message: format!(
                "Rate limit reached for {} on {} per {}: limit {}, requested {}. Please try again in {}.",
                m.rule.model,
                kind_word(m.rule.kind),
                unit_word(m.rule.unit),
                m.rule.amount,
                m.cost as u64,
                format::go_duration(o.wait_us),
            ),
            kind: m.rule.kind,
        }
    }

    fn deny_too_large(&self, m: &Matched) -> Decision {
        count_rejection(&m.rule);
        let wait_us = m.rule.limit.period_us;
        let mut headers = HeaderMap::new();
        format::put_state(
            &mut headers,
            &KindState {
                kind: m.rule.kind,
                limit: m.rule.amount,
                remaining: m.rule.limit.capacity,
                reset_us: 0.0,
            },
        );
        format::put_retry_after(&mut headers, wait_us);
        Decision::Deny {
            retry_after: Duration::from_secs(format::retry_after_secs(wait_us)),
            headers,
            message: format!(
                "Request too large for {} on {} per {}: limit {}, requested {}. Send a smaller request.",
                m.rule.model,
                kind_word(m.rule.kind),
                unit_word(m.rule.unit),
                m.rule.amount,
                m.cost as u64,
            ),
            kind: m.rule.kind,
        }
    }

    fn backend_failed(
        &self,
        fail_open: bool,
        last_log_ms: &AtomicU64,
        err: &RedisError,
        matched: &[Matched],
    ) -> Decision {
        count_backend_error(fail_open);
        log_backend_error(last_log_ms, self.epoch, err, fail_open);
        if fail_open {
            return self.allow_unlimited();
        }
        let kind = matched.first().map_or(LimitKind::Requests, |m| m.rule.kind);
        let mut headers = HeaderMap::new();
        format::put_retry_after(&mut headers, 1_000_000.0);
        Decision::Deny {
            retry_after: Duration::from_secs(1),
            headers,
            message: "Rate-limit storage is unavailable and the limiter is configured to fail closed; please retry shortly.".to_string(),
            kind,
        }
    }

    fn allow_unlimited(&self) -> Decision {
        Decision::Allow {
            ticket: Ticket {
                charges: Vec::new(),
                backend: None,
            },
            headers: HeaderMap::new(),
        }
    }
}

/// `plano:rl:<rule hash>:<selector value>` for each matched bucket.
fn redis_keys(matched: &[Matched]) -> Vec<String> {
    matched
        .iter()
        .map(|m| format!("{}{}", m.rule.redis_prefix, m.key))
        .collect()
}

fn redis_charges<'a>(matched: &[Matched], keys: &'a [String]) -> Vec<Charge<'a>> {
    matched
        .iter()
        .zip(keys)
        .map(|(m, key)| Charge {
            key,
            cost: m.cost,
            capacity: m.rule.limit.capacity,
            period_us: m.rule.limit.period_us,
        })
        .collect()
}

/// Per kind, the headers of the most constraining matched rule (least remaining).
fn kind_headers(matched: &[Matched], states: &[(f64, f64)]) -> HeaderMap {
    // Room for these six and what the answer adds (`dispatch/respond.rs`), so the map is
    // allocated once.
    let mut headers = HeaderMap::with_capacity(16);
    for kind in [LimitKind::Requests, LimitKind::Tokens] {
        let tightest = matched
            .iter()
            .zip(states)
            .filter(|(m, _)| m.rule.kind == kind)
            .min_by(|a, b| a.1.0.total_cmp(&b.1.0));
        if let Some((m, (level, reset))) = tightest {
            format::put_state(
                &mut headers,
                &KindState {
                    kind,
                    limit: m.rule.amount,
                    remaining: *level,
                    reset_us: *reset,
                },
            );
        }
    }
    headers
}

fn build(
    rules: &[RateLimit],
    storage: &RateLimitStorage,
    old: Option<&Active>,
) -> anyhow::Result<Active> {
    let mut built: Vec<Arc<Rule>> = Vec::with_capacity(rules.len());
    for r in rules {
        let fresh = Rule::new(r);
        // Identical rules written twice are one rule (and one lock).
        if built.iter().any(|b| b.id == fresh.id) {
            continue;
        }
        let kept = old.and_then(|o| o.rules.iter().find(|k| k.id == fresh.id).cloned());
        built.push(kept.unwrap_or_else(|| Arc::new(fresh)));
    }
    let fingerprint = storage_fingerprint(storage);
    let backend = match old {
        Some(o) if o.storage_fingerprint == fingerprint => o.backend.clone(),
        _ => Arc::new(match storage {
            RateLimitStorage::Memory => Backend::Memory,
            RateLimitStorage::Redis {
                url,
                timeout,
                fail_open,
            } => Backend::Redis {
                // The connection manager spawns its reconnect task on the current runtime.
                redis: match tokio::runtime::Handle::try_current() {
                    Ok(_) => RedisBackend::new(url.expose(), *timeout)?,
                    Err(_) => anyhow::bail!("the Redis rate-limit backend needs a tokio runtime"),
                },
                fail_open: *fail_open,
                last_log_ms: AtomicU64::new(0),
            },
        }),
    };
    if built.iter().any(|r| r.kind == LimitKind::Tokens) {
        // Load the OpenAI vocabularies off the request path.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn_blocking(|| {
                tokens::warm("gpt-4o");
                tokens::warm("gpt-4");
            });
        }
    }
    Ok(Active {
        rules: built,
        backend,
        storage_fingerprint: fingerprint,
    })
}

fn storage_fingerprint(s: &RateLimitStorage) -> String {
    match s {
        RateLimitStorage::Memory => "memory".to_string(),
        RateLimitStorage::Redis {
            url,
            timeout,
            fail_open,
        } => format!(
            "redis\u{1f}{}\u{1f}{timeout:?}\u{1f}{fail_open}",
            url.expose()
        ),
    }
}

fn count_rejection(rule: &Rule) {
    metrics::counter!(
        RATELIMIT_REJECTIONS_TOTAL,
        "model" => rule.model.clone(),
        "kind" => kind_word(rule.kind),
    )
    .increment(1);
}

fn count_backend_error(fail_open: bool) {
    metrics::counter!(
        RATELIMIT_BACKEND_ERRORS_TOTAL,
        "backend" => "redis",
        "policy" => if fail_open { "open" } else { "closed" },
    )
    .increment(1);
}

fn log_backend_error(
    last_log_ms: &AtomicU64,
    epoch: tokio::time::Instant,
    err: &RedisError,
    fail_open: bool,
) {
    // +LOG_EVERY_MS so the very first failure is logged even right after start.
    if !claim_log_slot(
        last_log_ms,
        epoch.elapsed().as_millis() as u64 + LOG_EVERY_MS,
    ) {
        return;
    }
    let policy = if fail_open {
        "admitting requests (fail_open: true)"
    } else {
        "refusing limited requests (fail_open: false)"
    };
    tracing::warn!(error = %err, "rate-limit storage unreachable; {policy}; further errors are counted in {RATELIMIT_BACKEND_ERRORS_TOTAL} and logged at most every 10s");
}

/// True for at most one caller per `LOG_EVERY_MS`, however many fail at once.
fn claim_log_slot(last_log_ms: &AtomicU64, now_ms: u64) -> bool {
    let last = last_log_ms.load(Ordering::Relaxed);
    now_ms.saturating_sub(last) >= LOG_EVERY_MS
        && last_log_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

fn kind_word(k: LimitKind) -> &'static str {
    match k {
        LimitKind::Tokens => "tokens",
        LimitKind::Requests => "requests",
    }
}

fn unit_word(u: LimitUnit) -> &'static str {
    match u {
        LimitUnit::Second => "second",
        LimitUnit::Minute => "minute",
        LimitUnit::Hour => "hour",
        LimitUnit::Day => "day",
    }
}

/// FNV-1a: a hash that is the same in every build and on every replica (std's is not).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;
