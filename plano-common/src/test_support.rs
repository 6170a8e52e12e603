//! Helpers for tests that need a `Config` without going through the loader.

use std::collections::BTreeMap;

use plano_config::{
    Admin, Config, EgressLink, Overrides, PromptCaching, RateLimitStorage, Routing, StateStorage,
};

/// A config with nothing configured: no listeners, no providers. Valid enough for tests of
/// the admin plane and reload, which never look inside it.
pub fn bare_config() -> Config {
    Config {
        version: "v0.1".into(),
        source: None,
        model_listener: plano_config::Listener::predefined_model(),
        listeners: Vec::new(),
        providers: Vec::new(),
        aliases: BTreeMap::new(),
        models: Default::default(),
        agents: Vec::new(),
        filters: Vec::new(),
        endpoints: BTreeMap::new(),
        prompt_targets: Vec::new(),
        system_prompt: None,
        ratelimits: Vec::new(),
        ratelimit_storage: RateLimitStorage::Memory,
        overrides: Overrides::default(),
        egress: EgressLink {
            url: url("http://127.0.0.1:12000"),
            health: url("http://127.0.0.1:9902"),
        },
        admin: Admin {
            edge: ([127, 0, 0, 1], 9901).into(),
            egress: ([127, 0, 0, 1], 9902).into(),
        },
        state_storage: StateStorage::default(),
        tracing: None,
        routing: Routing::default(),
        routing_preferences: Vec::new(),
        model_metrics_sources: Vec::new(),
        prompt_caching: PromptCaching::default(),
        mode: None,
        prompt_guards: None,
        warnings: Vec::new(),
    }
}

fn url(s: &str) -> url::Url {
    url::Url::parse(s).unwrap()
}
