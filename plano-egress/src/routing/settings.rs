//! The routing settings of a config: `routing_preferences` (top level, with the deprecated
//! per-provider form already lifted into it by `plano-config`), the router model
//! (`overrides.llm_routing_model`, else `routing.model` / `routing.llm_provider`),
//! `model_metrics_sources`, `prompt_caching`, `routing.session_*`, `routing.timeout` and
//! `routing.route_on_user_only`.

use plano_config::{Config, CostCatalog, MetricsSource, SelectionPolicy};

use super::sources::{CostFormat, CostSource, LatencySource};
use super::{AffinitySettings, Prefer, Preference, RoutingSettings, SourceSettings};

/// The routing settings `config` asks for (inactive ones included; see [`active`]).
pub fn from_config(config: &Config) -> Option<RoutingSettings> {
    let routing = &config.routing;
    let router_model = config
        .overrides
        .llm_routing_model
        .clone()
        .or_else(|| routing.model.clone())
        .or_else(|| routing.llm_provider.clone());
    let preferences: Vec<Preference> = config
        .routing_preferences
        .iter()
        .map(|p| Preference {
            name: p.name.clone(),
            description: p.description.clone(),
            models: p.models.clone(),
            prefer: match p.prefer {
                Some(SelectionPolicy::Cheapest) => Prefer::Cheapest,
                Some(SelectionPolicy::Fastest) => Prefer::Fastest,
                Some(SelectionPolicy::None) | None => Prefer::None,
            },
        })
        .collect();
    if !preferences.is_empty() && router_model.is_none() {
        tracing::warn!(
            "routing_preferences are configured without a router model (overrides.llm_routing_model): requests are not routed"
        );
    }
    let sources = config
        .model_metrics_sources
        .iter()
        .map(|s| match s {
            MetricsSource::Cost {
                provider,
                url,
                refresh_interval,
                model_aliases,
            } => {
                let format = match provider {
                    CostCatalog::DigitalOcean => CostFormat::DigitalOcean,
                    CostCatalog::ModelsDev => CostFormat::ModelsDev,
                };
                SourceSettings::Cost(CostSource {
                    format,
                    url: url
                        .as_ref()
                        .map_or_else(|| format.default_url().to_string(), |u| u.to_string()),
                    refresh: *refresh_interval,
                    aliases: model_aliases
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                })
            }
            MetricsSource::Latency {
                url,
                query,
                refresh_interval,
            } => SourceSettings::Latency(LatencySource {
                url: url.to_string(),
                query: query.clone(),
                refresh: *refresh_interval,
            }),
        })
        .collect();
    let caching = &config.prompt_caching;
    let max_entries = usize::try_from(routing.session_max_entries).unwrap_or(10_000);
    Some(RoutingSettings {
        preferences,
        router_model,
        router_timeout: routing.timeout,
        route_on_user_only: routing.route_on_user_only,
        context_tokens: usize::try_from(config.overrides.orchestrator_model_context_length)
            .unwrap_or(super::prompt::DEFAULT_CONTEXT_TOKENS),
        decision_ttl: routing.session_ttl,
        decision_max_entries: max_entries,
        sources,
        affinity: (caching.enabled && caching.session_affinity).then(|| AffinitySettings {
            ttl: caching.session_ttl.unwrap_or(routing.session_ttl),
            max_entries,
        }),
        cache_control_min_tokens: (caching.enabled && caching.inject_cache_control)
            .then(|| usize::try_from(caching.min_prefix_tokens).unwrap_or(1024)),
    })
}

/// Whether these settings do anything at all (a router, affinity, cache breakpoints or
/// metrics to fetch).
pub fn active(s: &RoutingSettings) -> bool {
    s.router_model.is_some()
        || s.affinity.is_some()
        || !s.sources.is_empty()
        || s.cache_control_min_tokens.is_some()
}
