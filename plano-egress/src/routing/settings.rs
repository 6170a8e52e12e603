//! The routing settings of a config.
//!
//! The typed routing keys (`routing_preferences`, `routing`, `model_metrics_sources`,
//! `prompt_caching`, `overrides.llm_routing_model`) are being added to `plano_config::Config`;
//! until they are there the config yields no settings, and routing runs only when an
//! embedder sets them ([`crate::EgressServer::with_routing`]).

use plano_config::Config;

use super::RoutingSettings;

/// The routing settings `config` asks for, or `None` when it asks for no routing.
pub fn from_config(_config: &Config) -> Option<RoutingSettings> {
    None
}

/// Whether these settings do anything at all (a router, affinity or metrics to fetch).
pub fn active(s: &RoutingSettings) -> bool {
    s.router_model.is_some()
        || s.affinity.is_some()
        || !s.sources.is_empty()
        || s.cache_control_min_tokens.is_some()
}
