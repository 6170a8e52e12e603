//! The provider table: for each known `model:` prefix, where its API lives and how it
//! authenticates. Values are the providers' documented public endpoints.

use crate::model::{AuthStyle, ProviderApi};

#[derive(Debug, Clone, Copy)]
pub struct ProviderDefaults {
    pub prefix: &'static str,
    /// Scheme and host of the public API; `None` when there is no public default and
    /// `base_url` is required.
    pub base_url: Option<&'static str>,
    /// Path under which the API's routes live (`/chat/completions`, `/messages`, …).
    pub path_prefix: &'static str,
    pub api: ProviderApi,
    pub auth: AuthStyle,
    pub query: Option<&'static str>,
    /// Headers sent upstream unless the provider's `headers` set the same name.
    pub headers: &'static [(&'static str, &'static str)],
    /// Forward the client's credentials when neither `access_key` nor `passthrough_auth`
    /// is configured (ChatGPT: the client's own subscription token).
    pub passthrough_by_default: bool,
}

/// Azure OpenAI `api-version` sent on every request (a GA version that serves chat
/// completions with tools and streaming usage).
pub const AZURE_API_VERSION: &str = "2024-10-21";

const fn openai_style(
    prefix: &'static str,
    base_url: Option<&'static str>,
    path_prefix: &'static str,
) -> ProviderDefaults {
    ProviderDefaults {
        prefix,
        base_url,
        path_prefix,
        api: ProviderApi::OpenAi,
        auth: AuthStyle::Bearer,
        query: None,
        headers: &[],
        passthrough_by_default: false,
    }
}

/// ChatGPT subscription (Codex backend): `originator` and `user-agent` as the Codex CLI
/// sends them, like Plano's config generator.
pub const CHATGPT_HEADERS: &[(&str, &str)] = &[
    ("originator", "codex_cli_rs"),
    (
        "user-agent",
        "codex_cli_rs/0.0.0 (Unknown 0; unknown) unknown",
    ),
];

/// Environment variable whose value becomes ChatGPT's `ChatGPT-Account-Id` header.
pub const CHATGPT_ACCOUNT_ENV: &str = "CHATGPT_ACCOUNT_ID";

pub const TABLE: &[ProviderDefaults] = &[
    openai_style("openai", Some("https://api.openai.com"), "/v1"),
    ProviderDefaults {
        prefix: "anthropic",
        base_url: Some("https://api.anthropic.com"),
        path_prefix: "/v1",
        api: ProviderApi::Anthropic,
        auth: AuthStyle::AnthropicKey,
        query: None,
        headers: &[],
        passthrough_by_default: false,
    },
    openai_style(
        "gemini",
        Some("https://generativelanguage.googleapis.com"),
        "/v1beta/openai",
    ),
    openai_style("groq", Some("https://api.groq.com"), "/openai/v1"),
    openai_style("mistral", Some("https://api.mistral.ai"), "/v1"),
    openai_style("deepseek", Some("https://api.deepseek.com"), "/v1"),
    openai_style("xai", Some("https://api.x.ai"), "/v1"),
    openai_style("together_ai", Some("https://api.together.xyz"), "/v1"),
    openai_style("moonshotai", Some("https://api.moonshot.ai"), "/v1"),
    openai_style("zhipu", Some("https://open.bigmodel.cn"), "/api/paas/v4"),
    openai_style("openrouter", Some("https://openrouter.ai"), "/api/v1"),
    openai_style("digitalocean", Some("https://inference.do-ai.run"), "/v1"),
    openai_style("vercel", Some("https://ai-gateway.vercel.sh"), "/v1"),
    openai_style("xiaomi", Some("https://api.xiaomimimo.com"), "/v1"),
    openai_style("edenai", Some("https://api.edenai.run"), "/v3"),
    ProviderDefaults {
        prefix: "chatgpt",
        base_url: Some("https://chatgpt.com"),
        path_prefix: "/backend-api/codex",
        api: ProviderApi::OpenAi,
        auth: AuthStyle::Bearer,
        query: None,
        headers: CHATGPT_HEADERS,
        passthrough_by_default: true,
    },
    // Plano's own models (Arch-Router, Plano-Orchestrator, …) served where `base_url` says.
    ProviderDefaults {
        prefix: "plano",
        base_url: None,
        path_prefix: "/v1",
        api: ProviderApi::OpenAi,
        auth: AuthStyle::None,
        query: None,
        headers: &[],
        passthrough_by_default: false,
    },
    ProviderDefaults {
        prefix: "ollama",
        base_url: None,
        path_prefix: "/v1",
        api: ProviderApi::OpenAi,
        auth: AuthStyle::None,
        query: None,
        headers: &[],
        passthrough_by_default: false,
    },
    openai_style("qwen", None, "/compatible-mode/v1"),
    ProviderDefaults {
        prefix: "azure_openai",
        base_url: None,
        path_prefix: "/openai",
        api: ProviderApi::AzureOpenAi,
        auth: AuthStyle::AzureApiKey,
        query: Some("api-version=2024-10-21"),
        headers: &[],
        passthrough_by_default: false,
    },
    // Vertex AI: Gemini through its OpenAI-compatible endpoint. The base URL and path come
    // from GOOGLE_CLOUD_PROJECT / GOOGLE_CLOUD_LOCATION unless `base_url` has a path.
    ProviderDefaults {
        prefix: "vertex_ai",
        base_url: None,
        path_prefix: "",
        api: ProviderApi::OpenAi,
        auth: AuthStyle::GoogleOAuth,
        query: None,
        headers: &[],
        passthrough_by_default: false,
    },
    ProviderDefaults {
        prefix: "amazon_bedrock",
        base_url: None,
        path_prefix: "",
        api: ProviderApi::Bedrock,
        auth: AuthStyle::Bearer,
        query: None,
        headers: &[],
        passthrough_by_default: false,
    },
];

pub fn lookup(prefix: &str) -> Option<&'static ProviderDefaults> {
    TABLE.iter().find(|d| d.prefix == prefix)
}

/// `provider_interface` values: Plano's spellings plus the API family names.
pub fn interface(name: &str) -> Option<&'static ProviderDefaults> {
    let prefix = match name {
        "claude" | "anthropic" => "anthropic",
        "azure" | "azure_openai" => "azure_openai",
        "bedrock" | "amazon_bedrock" => "amazon_bedrock",
        other => other,
    };
    lookup(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_required_prefix_is_known() {
        for p in [
            "openai",
            "anthropic",
            "gemini",
            "groq",
            "mistral",
            "deepseek",
            "xai",
            "together_ai",
            "moonshotai",
            "zhipu",
            "openrouter",
            "digitalocean",
            "vercel",
            "ollama",
            "azure_openai",
            "qwen",
            "amazon_bedrock",
            "xiaomi",
            "edenai",
            "chatgpt",
            "plano",
            "vertex_ai",
        ] {
            assert!(lookup(p).is_some(), "{p}");
        }
        assert_eq!(
            lookup("azure_openai").and_then(|d| d.query),
            Some("api-version=2024-10-21")
        );
        assert!(AZURE_API_VERSION.len() == 10);
    }

    /// Every `provider_interface` value in Plano 0.4.36's schema is known.
    #[test]
    fn every_plano_interface_is_known() {
        for i in [
            "plano",
            "deepseek",
            "groq",
            "mistral",
            "openai",
            "xiaomi",
            "gemini",
            "chatgpt",
            "digitalocean",
            "vercel",
            "openrouter",
            "edenai",
            "moonshotai",
        ] {
            assert_eq!(interface(i).map(|d| d.prefix), Some(i), "{i}");
        }
    }
}
