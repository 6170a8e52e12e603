//! OpenAI's own API (prefix `openai`, and Azure OpenAI where it shares OpenAI's rules), as
//! opposed to the many OpenAI-compatible chat providers.

use plano_config::Provider;

/// Only OpenAI itself is assumed to serve `/responses`; every other OpenAI-style provider
/// gets Responses requests translated to chat completions.
pub fn serves_responses(provider: &Provider) -> bool {
    provider.prefix == "openai"
}

/// OpenAI's API (and Azure's) wants `max_completion_tokens`: its reasoning models refuse
/// `max_tokens`, which the translations produce. Others keep the widely understood
/// `max_tokens`.
pub fn wants_max_completion_tokens(provider: &Provider) -> bool {
    matches!(provider.prefix.as_str(), "openai" | "azure_openai")
}
