//! Helpers for tests that need a `Config` without going through the loader.

use std::collections::BTreeMap;
use std::time::Duration;

use plano_config::{Admin, Config, EgressLink, Overrides, RateLimitStorage, StateStorage};

/// A config with nothing configured: no listeners, no providers. Valid enough for tests of
/// the admin plane and reload, which never look inside it.
pub fn bare_config() -> Config {
    Config {
        version: "v0.1".into(),
        source: None,
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
        overrides: Overrides {
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_tls_ca_path: None,
            agent_orchestration_model: None,
            function_calling_model: None,
        },
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
        warnings: Vec::new(),
    }
}

fn url(s: &str) -> url::Url {
    url::Url::parse(s).unwrap()
}
