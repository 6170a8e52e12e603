//! The validated configuration as a whole: the value `load_str` returns and the runtime
//! holds. Its parts are defined in `model.rs`, its model-name table in `resolve.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::model::{
    Admin, Agent, Alias, EgressLink, Endpoint, Filter, Listener, MetricsSource, Mode, Overrides,
    PromptCaching, PromptGuards, PromptTarget, Provider, RateLimit, RateLimitStorage, Routing,
    RoutingPreference, StateStorage, TracingConfig,
};
use crate::resolve::ModelTable;

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// `version` as written (v0.1 … v0.4.0).
    pub version: String,
    /// File the config was loaded from, when it came from a file.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// The egress model listener: `type: model`, the legacy `egress_traffic`, or the
    /// predefined 127.0.0.1:12000 one ([`Listener::predefined_model`]) when the file
    /// configures none.
    pub model_listener: Listener,
    /// The inbound listeners the edge serves (`edge`, `prompt`, `agent`), in file order.
    pub listeners: Vec<Listener>,
    /// `model_providers` (or the deprecated `llm_providers`), in file order.
    pub providers: Vec<Provider>,
    /// `model_aliases`, keyed by alias name.
    pub aliases: BTreeMap<String, Alias>,
    /// Every model name a request may use (providers, bare ids, wildcards, aliases),
    /// resolved once at validation (`resolve.rs`); the egress selects through it.
    #[serde(skip)]
    pub models: ModelTable,
    /// Top-level `agents` (id → url).
    pub agents: Vec<Agent>,
    /// Top-level `filters`.
    pub filters: Vec<Filter>,
    /// `endpoints`, keyed by name.
    pub endpoints: BTreeMap<String, Endpoint>,
    pub prompt_targets: Vec<PromptTarget>,
    pub system_prompt: Option<String>,
    pub ratelimits: Vec<RateLimit>,
    pub ratelimit_storage: RateLimitStorage,
    pub overrides: Overrides,
    pub egress: EgressLink,
    pub admin: Admin,
    pub state_storage: StateStorage,
    pub tracing: Option<TracingConfig>,
    /// `routing`: session pinning and the switching budget (defaults when absent).
    pub routing: Routing,
    /// Top-level `routing_preferences`, plus the deprecated per-provider form lifted into
    /// it the way Plano does (one entry per name, `models` in file order).
    pub routing_preferences: Vec<RoutingPreference>,
    /// `model_metrics_sources`: where cost and latency figures for routing come from.
    pub model_metrics_sources: Vec<MetricsSource>,
    /// `prompt_caching` (disabled when absent).
    pub prompt_caching: PromptCaching,
    /// `mode`, when set.
    pub mode: Option<Mode>,
    /// `prompt_guards`, when set.
    pub prompt_guards: Option<PromptGuards>,
    /// One line per key that is parsed but not acted on yet, each naming its key path.
    /// The binaries log each once at start-up.
    pub warnings: Vec<String>,
}

impl Config {
    /// Listeners served by the edge (`edge`, `prompt`, `agent`).
    pub fn inbound_listeners(&self) -> impl Iterator<Item = &Listener> {
        self.listeners.iter()
    }

    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name == name)
    }

    pub fn default_provider(&self) -> Option<&Provider> {
        self.providers.iter().find(|p| p.default)
    }

    pub fn filter(&self, id: &str) -> Option<&Filter> {
        self.filters.iter().find(|f| f.id == id)
    }

    pub fn agent(&self, id: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.id == id)
    }

    /// The `prefix_affinity` endpoint whose address is this provider's `base_url`, if any:
    /// the provider's requests are then spread over every address its host resolves to.
    pub fn affinity_endpoint(&self, provider: &Provider) -> Option<&Endpoint> {
        self.endpoints
            .values()
            .find(|e| e.prefix_affinity && e.serves(&provider.base_url))
    }
}
