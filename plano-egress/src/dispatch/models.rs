//! `GET /v1/models`, and `GET /` / `HEAD /` (clients such as Claude Code probe the base
//! URL before their first request).

use axum::response::{IntoResponse, Response};
use plano_config::Config;
use serde_json::Value;

/// Configured providers (wildcards excluded: their models are whatever the provider
/// serves) and aliases, in OpenAI's list shape.
pub fn list(config: &Config) -> Value {
    let mut data: Vec<Value> = config
        .providers
        .iter()
        .filter(|p| !p.wildcard)
        .map(|p| serde_json::json!({"id": p.name, "object": "model", "created": 0, "owned_by": p.prefix}))
        .collect();
    for name in config.aliases.keys() {
        data.push(
            serde_json::json!({"id": name, "object": "model", "created": 0, "owned_by": "plano"}),
        );
    }
    serde_json::json!({"object": "list", "data": data})
}

/// `GET /` and `HEAD /`: 200, naming the service.
pub fn root() -> Response {
    "plano-egress: an OpenAI, Anthropic and Responses API gateway (POST /v1/chat/completions, /v1/messages, /v1/responses; GET /v1/models)\n".into_response()
}
