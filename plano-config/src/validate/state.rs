//! `state_storage` and `tracing`.

use std::time::Duration;

use serde_json::Value;

use super::duration_or;

use crate::load::{Problems, section};
use crate::model::*;
use crate::raw::*;

pub(super) fn tracing(value: &Value, p: &mut Problems) -> Option<TracingConfig> {
    match value {
        Value::Null => None,
        v => section::<RawTracing>(v, "tracing", p).map(|t| {
            p.warn("tracing", "parsed but not acted on yet (no trace export)");
            TracingConfig {
                random_sampling: t.random_sampling,
                opentracing_grpc_endpoint: t.opentracing_grpc_endpoint,
            }
        }),
    }
}

pub(super) fn state_storage(value: &Value, p: &mut Problems) -> StateStorage {
    let default = StateStorage::default();
    if value.is_null() {
        return default;
    }
    let Some(raw) = section::<RawStateStorage>(value, "state_storage", p) else {
        return default;
    };
    let positive = |v: Option<u64>, key: &str, default: usize, p: &mut Problems| match v {
        None => default,
        Some(0) => {
            p.error(format!("state_storage.{key}"), "must be greater than 0");
            default
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let ttl = duration_or(raw.ttl.as_ref(), "state_storage.ttl", default.ttl, p);
    let max_conversation_bytes = positive(
        raw.max_conversation_bytes,
        "max_conversation_bytes",
        default.max_conversation_bytes,
        p,
    );
    let backend = match raw.kind.as_str() {
        "memory" => {
            for (key, set) in [
                ("connection_string", raw.connection_string.is_some()),
                ("pool_size", raw.pool_size.is_some()),
                ("timeout", raw.timeout.is_some()),
            ] {
                if set {
                    p.error(
                        format!("state_storage.{key}"),
                        "applies to `type: postgres` only",
                    );
                }
            }
            StateBackend::Memory {
                max_conversations: positive(raw.max_conversations, "max_conversations", 10_000, p),
                max_total_bytes: positive(raw.max_total_bytes, "max_total_bytes", 128 << 20, p),
            }
        }
        "postgres" => {
            for (key, set) in [
                ("max_conversations", raw.max_conversations.is_some()),
                ("max_total_bytes", raw.max_total_bytes.is_some()),
            ] {
                if set {
                    p.error(
                        format!("state_storage.{key}"),
                        "applies to `type: memory` only (Postgres rows are bounded by `ttl` and `max_conversation_bytes`)",
                    );
                }
            }
            let connection_string = match raw.connection_string {
                Some(c) if c.starts_with("postgres://") || c.starts_with("postgresql://") => c,
                Some(c) if c.contains('=') => c, // key=value form: `host=db user=plano ...`
                Some(_) => {
                    p.error(
                        "state_storage.connection_string",
                        "must be a postgres:// or postgresql:// URL, or `key=value` pairs",
                    );
                    String::new()
                }
                None => {
                    p.error(
                        "state_storage.connection_string",
                        "required when `type: postgres`",
                    );
                    String::new()
                }
            };
            StateBackend::Postgres {
                connection_string: Secret::new(connection_string),
                pool_size: positive(raw.pool_size, "pool_size", 8, p),
                timeout: duration_or(
                    raw.timeout.as_ref(),
                    "state_storage.timeout",
                    Duration::from_secs(2),
                    p,
                ),
            }
        }
        other => {
            p.error(
                "state_storage.type",
                format!("`{other}` is not memory or postgres"),
            );
            return default;
        }
    };
    StateStorage {
        backend,
        ttl,
        max_conversation_bytes,
    }
}
