//! `state_storage` and `tracing`.

use serde_json::Value;

use crate::load::{Problems, section};
use crate::model::*;
use crate::raw::*;

pub(super) fn tracing(value: &Value, p: &mut Problems) -> Option<TracingConfig> {
    match value {
        Value::Null => None,
        v => section::<RawTracing>(v, "tracing", p).map(|t| {
            if t.exporters.is_some() {
                p.warn(
                    "tracing.exporters",
                    "not acted on (only OTLP/gRPC export to opentracing_grpc_endpoint is implemented)",
                );
            }
            if t.trace_arch_internal.is_some() {
                p.warn(
                    "tracing.trace_arch_internal",
                    "not acted on (every span Plano records is exported)",
                );
            }
            let attributes = t.span_attributes.unwrap_or(RawSpanAttributes {
                header_prefixes: None,
                static_attributes: None,
            });
            TracingConfig {
                random_sampling: t.random_sampling,
                opentracing_grpc_endpoint: t.opentracing_grpc_endpoint,
                header_prefixes: attributes
                    .header_prefixes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
                static_attributes: attributes
                    .static_attributes
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            }
        }),
    }
}

pub(super) fn state_storage(value: &Value, p: &mut Problems) -> StateStorage {
    if value.is_null() {
        return StateStorage::Memory;
    }
    let Some(raw) = section::<RawStateStorage>(value, "state_storage", p) else {
        return StateStorage::Memory;
    };
    match (raw.kind.as_str(), raw.connection_string) {
        ("memory", _) => StateStorage::Memory,
        ("postgres", Some(c)) => {
            p.warn(
                "state_storage",
                "`type: postgres` is parsed but not acted on yet",
            );
            StateStorage::Postgres {
                connection_string: Secret::new(c),
            }
        }
        ("postgres", None) => {
            p.error(
                "state_storage.connection_string",
                "required when `type: postgres`",
            );
            StateStorage::Memory
        }
        (other, _) => {
            p.error(
                "state_storage.type",
                format!("`{other}` is not memory or postgres"),
            );
            StateStorage::Memory
        }
    }
}
