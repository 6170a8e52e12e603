//! `ratelimits` and `ratelimit_storage`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::aliases::model_ref_ok;
use super::duration_or;
use crate::load::{Problems, join, list, section};
use crate::model::*;
use crate::raw::*;

pub(super) fn ratelimits(
    value: &Value,
    providers: &[Provider],
    aliases: &BTreeMap<String, Alias>,
    p: &mut Problems,
) -> Vec<RateLimit> {
    list::<RawRateLimit>(value, "ratelimits", p)
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let path = format!("ratelimits[{i}]");
            if let Err(e) = model_ref_ok(&r.model, providers, aliases) {
                p.error(join(&path, "model"), e);
            }
            let unit = match r.limit.unit.as_str() {
                "second" => LimitUnit::Second,
                "minute" => LimitUnit::Minute,
                "hour" => LimitUnit::Hour,
                "day" => LimitUnit::Day,
                other => {
                    p.error(
                        join(&path, "limit.unit"),
                        format!("`{other}` is not second, minute, hour or day"),
                    );
                    return None;
                }
            };
            let (kind, amount) = match (r.limit.tokens, r.limit.requests) {
                (Some(t), None) => (LimitKind::Tokens, t),
                (None, Some(n)) => (LimitKind::Requests, n),
                _ => {
                    p.error(
                        join(&path, "limit"),
                        "set exactly one of `tokens` or `requests`",
                    );
                    return None;
                }
            };
            if amount == 0 {
                p.error(join(&path, "limit"), "the limit must be greater than 0");
            }
            if r.selector.key.trim().is_empty() {
                p.error(join(&path, "selector.key"), "must name a request header");
            }
            Some(RateLimit {
                model: r.model,
                selector: Selector {
                    key: r.selector.key.to_ascii_lowercase(),
                    value: if r.selector.value == "*" {
                        SelectorValue::Any
                    } else {
                        SelectorValue::Exact(r.selector.value)
                    },
                },
                kind,
                amount,
                unit,
            })
        })
        .collect()
}

pub(super) fn ratelimit_storage(value: &Value, p: &mut Problems) -> RateLimitStorage {
    if value.is_null() {
        return RateLimitStorage::Memory;
    }
    let Some(raw) = section::<RawRateLimitStorage>(value, "ratelimit_storage", p) else {
        return RateLimitStorage::Memory;
    };
    match raw.kind.as_str() {
        "memory" => RateLimitStorage::Memory,
        "redis" => {
            let timeout = duration_or(
                raw.timeout.as_ref(),
                "ratelimit_storage.timeout",
                Duration::from_millis(100),
                p,
            );
            let url = match raw.url {
                Some(u) if u.starts_with("redis://") || u.starts_with("rediss://") => u,
                Some(_) => {
                    p.error(
                        "ratelimit_storage.url",
                        "must be a redis:// or rediss:// URL",
                    );
                    String::new()
                }
                None => {
                    p.error("ratelimit_storage.url", "required when `type: redis`");
                    String::new()
                }
            };
            RateLimitStorage::Redis {
                url: Secret::new(url),
                timeout,
                fail_open: raw.fail_open.unwrap_or(true),
            }
        }
        other => {
            p.error(
                "ratelimit_storage.type",
                format!("`{other}` is not memory or redis"),
            );
            RateLimitStorage::Memory
        }
    }
}
