//! OpenAI's own API (prefix `openai`, and Azure OpenAI where it shares OpenAI's rules), as
//! opposed to the many OpenAI-compatible chat providers.

use plano_config::Provider;

/// Providers that serve `/responses` natively, as in Plano (hermesllm's provider ids):
/// OpenAI, xAI and ChatGPT (whose Codex backend speaks only Responses). Every other
/// OpenAI-style provider gets Responses requests translated to chat completions.
pub fn serves_responses(provider: &Provider) -> bool {
    matches!(provider.prefix.as_str(), "openai" | "xai" | "chatgpt")
}

/// ChatGPT's Codex backend stores nothing and wants `input` as a list (as Plano sends it):
/// `store: false`, and a plain-string `input` becomes one user message.
pub fn chatgpt_responses_body(body: &mut serde_json::Map<String, serde_json::Value>) {
    use serde_json::{Value, json};
    body.insert("store".into(), Value::Bool(false));
    match body.get("input") {
        Some(Value::String(text)) => {
            let item = json!([{"type": "message", "role": "user", "content": text}]);
            body.insert("input".into(), item);
        }
        Some(Value::Object(_)) => {
            if let Some(one) = body.remove("input") {
                body.insert("input".into(), Value::Array(vec![one]));
            }
        }
        _ => {}
    }
}

/// OpenAI's API (and Azure's) wants `max_completion_tokens`: its reasoning models refuse
/// `max_tokens`, which the translations produce. Others keep the widely understood
/// `max_tokens`.
pub fn wants_max_completion_tokens(provider: &Provider) -> bool {
    matches!(provider.prefix.as_str(), "openai" | "azure_openai")
}
