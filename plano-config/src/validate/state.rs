//! `state_storage` and `tracing`.

use serde_json::Value;

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
