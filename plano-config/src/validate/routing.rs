//! Routing keys: `routing`, `routing_preferences` (top level, and the deprecated
//! per-provider form), `model_metrics_sources`, `prompt_caching`. They load into typed
//! models with every range Plano's schema sets. The egress's router (docs/routing.md) acts
//! on them (`routing.timeout` is ours: the router call's bound), except
//! `routing.session_cache: redis` and `routing.routing_budget`, which leave
//! a start-up warning.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::aliases::model_ref_ok;
use super::http_url;
use crate::load::{Problems, join, list, section};
use crate::model::*;
use crate::raw::*;

const NOT_ROUTED: &str = "parsed and checked, not acted on yet";

pub(super) fn routing(value: &Value, p: &mut Problems) -> Routing {
    let mut out = Routing::default();
    if value.is_null() {
        return out;
    }
    let Some(raw) = section::<RawRouting>(value, "routing", p) else {
        return out;
    };
    out.llm_provider = raw.llm_provider;
    out.model = raw.model;
    if let Some(ttl) = raw.session_ttl_seconds {
        out.session_ttl = seconds(ttl, "routing.session_ttl_seconds", p);
    }
    if let Some(n) = raw.session_max_entries {
        match u32::try_from(n) {
            Ok(n) if (1..=Routing::MAX_SESSION_ENTRIES).contains(&n) => {
                out.session_max_entries = n;
            }
            _ => p.error(
                "routing.session_max_entries",
                format!("{n} is out of range (1–{})", Routing::MAX_SESSION_ENTRIES),
            ),
        }
    }
    if let Some(c) = raw.session_cache {
        let path = "routing.session_cache";
        match (c.kind.as_deref().unwrap_or("memory"), c.url) {
            ("memory", None) => {}
            ("memory", Some(_)) => p.error(join(path, "url"), "only allowed with `type: redis`"),
            ("redis", Some(u)) if u.starts_with("redis://") || u.starts_with("rediss://") => {
                out.session_cache = SessionCache::Redis {
                    url: Secret::new(u),
                };
            }
            ("redis", Some(_)) => {
                p.error(join(path, "url"), "must be a redis:// or rediss:// URL");
            }
            ("redis", None) => p.error(join(path, "url"), "required when `type: redis`"),
            (other, _) => p.error(
                join(path, "type"),
                format!("`{other}` is not memory or redis"),
            ),
        }
        if let Some(h) = c.tenant_header {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                p.error(
                    join(path, "tenant_header"),
                    format!("`{h}` is not a valid HTTP header name"),
                );
            }
            out.tenant_header = Some(h.to_ascii_lowercase());
        }
    }
    if let Some(b) = raw.routing_budget {
        let path = "routing.routing_budget";
        if !(0.0..=100.0).contains(&b.max_switch_spend_pct) {
            p.error(
                join(path, "max_switch_spend_pct"),
                format!("{} is out of range (0–100)", b.max_switch_spend_pct),
            );
        }
        let discount = b.cache_read_discount.unwrap_or(0.1);
        if !(0.0..=1.0).contains(&discount) {
            p.error(
                join(path, "cache_read_discount"),
                format!("{discount} is out of range (0–1)"),
            );
        }
        out.routing_budget = Some(RoutingBudget {
            max_switch_spend_pct: b.max_switch_spend_pct,
            replenish_on_rebind: b.replenish_on_rebind.unwrap_or(true),
            cache_read_discount: discount,
            record_counterfactual: b.record_counterfactual.unwrap_or(false),
        });
    }
    out.route_on_user_only = raw.route_on_user_only.unwrap_or(false);
    out.timeout = super::duration_or(
        raw.timeout.as_ref(),
        "routing.timeout",
        Routing::DEFAULT_TIMEOUT,
        p,
    );
    let unacted: Vec<&str> = [
        (
            matches!(out.session_cache, SessionCache::Redis { .. }),
            "`session_cache: redis` (sessions and routing decisions are per replica, in memory)",
        ),
        (
            out.routing_budget.is_some(),
            "`routing_budget` (no per-session switch-cost gate; docs/routing.md says why)",
        ),
    ]
    .into_iter()
    .filter_map(|(on, what)| on.then_some(what))
    .collect();
    if !unacted.is_empty() {
        p.warn("routing", &format!("{NOT_ROUTED}: {}", unacted.join("; ")));
    }
    out
}

/// Top-level `routing_preferences` followed by the per-provider ones lifted into it: a
/// provider's preference joins the top-level entry of the same name (its model appended),
/// or becomes a new entry with `models: [<provider model>]`.
pub(super) fn routing_preferences(
    value: &Value,
    inline: &[(String, String, Vec<RawProviderPreference>)],
    providers: &[Provider],
    aliases: &BTreeMap<String, Alias>,
    p: &mut Problems,
) -> Vec<RoutingPreference> {
    let mut out: Vec<RoutingPreference> = Vec::new();
    let raws = list::<RawRoutingPreference>(value, "routing_preferences", p);
    for (i, r) in raws.into_iter().enumerate() {
        let path = format!("routing_preferences[{i}]");
        if out.iter().any(|o| o.name == r.name) {
            p.error(
                join(&path, "name"),
                format!("`{}` is used more than once", r.name),
            );
        }
        if r.models.is_empty() {
            p.error(join(&path, "models"), "must list at least one model");
        }
        for (j, m) in r.models.iter().enumerate() {
            if let Err(e) = model_ref_ok(m, providers, aliases) {
                p.error(format!("{path}.models[{j}]"), e);
            }
        }
        let prefer = r.selection_policy.and_then(|s| match s.prefer.as_str() {
            "cheapest" => Some(SelectionPolicy::Cheapest),
            "fastest" => Some(SelectionPolicy::Fastest),
            "none" => Some(SelectionPolicy::None),
            other => {
                p.error(
                    join(&path, "selection_policy.prefer"),
                    format!("`{other}` is not cheapest, fastest or none"),
                );
                None
            }
        });
        out.push(RoutingPreference {
            name: r.name,
            description: r.description,
            models: r.models,
            prefer,
        });
    }
    for (path, model, prefs) in inline {
        let ppath = join(path, "routing_preferences");
        p.warn(
            &ppath,
            "deprecated per-provider form, lifted into top-level `routing_preferences`",
        );
        if model.ends_with("/*") {
            p.error(
                &ppath,
                "a wildcard provider cannot have routing preferences",
            );
            continue;
        }
        for pref in prefs {
            match out.iter_mut().find(|o| o.name == pref.name) {
                Some(o) => {
                    if !o.models.contains(model) {
                        o.models.push(model.clone());
                    }
                }
                None => out.push(RoutingPreference {
                    name: pref.name.clone(),
                    description: pref.description.clone(),
                    models: vec![model.clone()],
                    prefer: None,
                }),
            }
        }
    }
    out
}

pub(super) fn model_metrics_sources(value: &Value, p: &mut Problems) -> Vec<MetricsSource> {
    let raws = list::<RawMetricsSource>(value, "model_metrics_sources", p);
    raws.into_iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let path = format!("model_metrics_sources[{i}]");
            let refresh_interval = r
                .refresh_interval
                .map(|s| seconds(s, &join(&path, "refresh_interval"), p));
            match r.kind.as_str() {
                "cost" => {
                    let provider = match r.provider.as_str() {
                        "digitalocean" => CostCatalog::DigitalOcean,
                        "models.dev" => CostCatalog::ModelsDev,
                        other => {
                            p.error(
                                join(&path, "provider"),
                                format!(
                                    "`{other}` is not a cost source (digitalocean, models.dev)"
                                ),
                            );
                            return None;
                        }
                    };
                    if r.query.is_some() {
                        p.error(join(&path, "query"), "only allowed with `type: latency`");
                    }
                    let url = match r.url {
                        Some(u) => Some(http_url(&u, &join(&path, "url"), p)?),
                        None => None,
                    };
                    Some(MetricsSource::Cost {
                        provider,
                        url,
                        refresh_interval,
                        model_aliases: r.model_aliases.unwrap_or_default(),
                    })
                }
                "latency" => {
                    if r.provider != "prometheus" {
                        p.error(
                            join(&path, "provider"),
                            format!("`{}` is not a latency source (prometheus)", r.provider),
                        );
                    }
                    if r.model_aliases.is_some() {
                        p.error(
                            join(&path, "model_aliases"),
                            "only allowed with `type: cost`",
                        );
                    }
                    let Some(query) = r.query else {
                        p.error(join(&path, "query"), "required when `type: latency`");
                        return None;
                    };
                    let Some(url) = r.url else {
                        p.error(join(&path, "url"), "required when `type: latency`");
                        return None;
                    };
                    let url = http_url(&url, &join(&path, "url"), p)?;
                    Some(MetricsSource::Latency {
                        url,
                        query,
                        refresh_interval,
                    })
                }
                other => {
                    p.error(
                        join(&path, "type"),
                        format!("`{other}` is not cost or latency"),
                    );
                    None
                }
            }
        })
        .collect()
}

pub(super) fn prompt_caching(value: &Value, p: &mut Problems) -> PromptCaching {
    let mut out = PromptCaching::default();
    if value.is_null() {
        return out;
    }
    let Some(raw) = section::<RawPromptCaching>(value, "prompt_caching", p) else {
        return out;
    };
    out.enabled = raw.enabled.unwrap_or(false);
    out.session_affinity = raw.session_affinity.unwrap_or(true);
    out.inject_cache_control = raw.inject_cache_control.unwrap_or(true);
    if let Some(n) = raw.min_prefix_tokens {
        match u32::try_from(n) {
            Ok(n) if n >= 1 => out.min_prefix_tokens = n,
            _ => p.error(
                "prompt_caching.min_prefix_tokens",
                format!("{n} is out of range (1–{})", u32::MAX),
            ),
        }
    }
    out.session_ttl = raw
        .session_ttl_seconds
        .map(|s| seconds(s, "prompt_caching.session_ttl_seconds", p));
    out
}

/// A whole number of seconds that must be at least 1.
fn seconds(n: u64, path: &str, p: &mut Problems) -> Duration {
    if n == 0 {
        p.error(path, "must be at least 1");
    }
    Duration::from_secs(n.max(1))
}
