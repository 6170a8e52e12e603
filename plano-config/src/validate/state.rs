//! `state_storage`, `tracing`, and Plano's `mode` and `prompt_guards`.

use std::time::Duration;

use serde_json::Value;

use super::{duration_or, http_url};

use crate::load::{Problems, join, section};
use crate::model::*;
use crate::raw::*;

pub(super) fn tracing(value: &Value, p: &mut Problems) -> Option<TracingConfig> {
    if value.is_null() {
        return None;
    }
    let t = section::<RawTracing>(value, "tracing", p)?;
    p.warn(
        "tracing",
        "parsed and checked, not acted on yet (no trace export)",
    );
    if let Some(n) = t.random_sampling
        && n > 100
    {
        p.error(
            "tracing.random_sampling",
            format!("{n} is not a percentage (0–100)"),
        );
    }
    // Plano's rule: an OTLP/gRPC endpoint is `http://host:port` with no path.
    let endpoint = t.opentracing_grpc_endpoint.and_then(|e| {
        let path = "tracing.opentracing_grpc_endpoint";
        let url = http_url(&e, path, p)?;
        if url.scheme() != "http" {
            p.error(path, format!("`{e}` must use http:// (OTLP over gRPC)"));
            return None;
        }
        if !matches!(url.path(), "" | "/") {
            p.error(path, format!("`{e}` must not have a path"));
            return None;
        }
        Some(url)
    });
    let span_attributes = t
        .span_attributes
        .map(|a| SpanAttributes {
            header_prefixes: a
                .header_prefixes
                .unwrap_or_default()
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            fixed: a.fixed.unwrap_or_default(),
        })
        .unwrap_or_default();
    let exporters = t
        .exporters
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, x)| {
            let path = format!("tracing.exporters[{i}]");
            if x.kind != "posthog" {
                p.error(
                    join(&path, "type"),
                    format!("`{}` is not an exporter type (posthog)", x.kind),
                );
                return None;
            }
            let url = http_url(&x.url, &join(&path, "url"), p)?;
            Some(TraceExporter::Posthog {
                url,
                api_key: Secret::new(x.api_key),
                distinct_id_header: x.distinct_id_header,
                capture_messages: x.capture_messages.unwrap_or(false),
            })
        })
        .collect();
    Some(TracingConfig {
        random_sampling: t.random_sampling,
        trace_arch_internal: t.trace_arch_internal.unwrap_or(false),
        opentracing_grpc_endpoint: endpoint,
        span_attributes,
        exporters,
    })
}

/// `mode`: Plano's gateway mode. This data plane's behaviour follows the listener types
/// instead, so the key is checked and warned about.
pub(super) fn mode(value: &Value, p: &mut Problems) -> Option<Mode> {
    if value.is_null() {
        return None;
    }
    let m = match section::<String>(value, "mode", p)?.as_str() {
        "llm" => Mode::Llm,
        "prompt" => Mode::Prompt,
        other => {
            p.error("mode", format!("`{other}` is not llm or prompt"));
            return None;
        }
    };
    p.warn(
        "mode",
        "parsed and checked, not acted on (listener types decide what each port serves)",
    );
    Some(m)
}

/// `prompt_guards`: Plano's jailbreak guard needs its guard model, which this data plane
/// does not run; the key is checked and warned about.
pub(super) fn prompt_guards(value: &Value, p: &mut Problems) -> Option<PromptGuards> {
    if value.is_null() {
        return None;
    }
    let g = section::<RawPromptGuards>(value, "prompt_guards", p)?;
    p.warn(
        "prompt_guards",
        "parsed and checked, not acted on yet (no jailbreak guard model; use `filters` for guardrails)",
    );
    Some(PromptGuards {
        jailbreak_message: g.input_guards.jailbreak.on_exception.message,
    })
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
