//! Raw sections → normalised [`Config`]. Every check records its problem with the key path
//! and carries on, so one run reports everything that is wrong.
//!
//! One file per section: `listeners.rs` (listeners, admin, egress link), `providers.rs`,
//! `aliases.rs` (aliases and model references), `filters.rs` (filters, agents),
//! `targets.rs` (endpoints, prompt targets), `overrides.rs`, `limits.rs` (rate limits and
//! their storage), `routing.rs` (routing, routing preferences, metrics sources, prompt
//! caching), `state.rs` (state storage, tracing, mode, prompt guards). This file holds the top-level keys,
//! the order sections are built in, and the helpers they share.

mod aliases;
mod filters;
mod limits;
mod listeners;
mod overrides;
mod providers;
mod routing;
mod state;
mod targets;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};
use url::Url;

use crate::config::Config;
use crate::duration::{RawDuration, parse_duration};
use crate::load::{Problems, kind};
use crate::model::*;

use aliases::aliases;
use filters::{agents, filters};
use limits::{ratelimit_storage, ratelimits};
use listeners::{admin, check_addresses, check_listener_refs, egress, listeners};
use overrides::overrides;
use providers::model_providers;
use routing::{model_metrics_sources, prompt_caching, routing, routing_preferences};
use state::{mode, prompt_guards, state_storage, tracing};
use targets::{check_prefix_affinity, endpoints, prompt_targets};

const VERSIONS: &[&str] = &[
    "v0.1",
    "v0.1.0",
    "0.1-beta",
    "v0.1-beta",
    "0.2.0",
    "v0.2.0",
    "v0.3.0",
    "v0.4.0",
];
const DEFAULT_TIMEOUT: Duration = Listener::DEFAULT_TIMEOUT;
const DEFAULT_MAX_RETRIES: u32 = Listener::DEFAULT_MAX_RETRIES;
const DEFAULT_MAX_BODY: usize = Listener::DEFAULT_MAX_BODY_BYTES;

const TOP_LEVEL: &[&str] = &[
    "version",
    "listeners",
    "model_providers",
    "llm_providers",
    "model_aliases",
    "agents",
    "filters",
    "endpoints",
    "prompt_targets",
    "system_prompt",
    "ratelimits",
    "ratelimit_storage",
    "overrides",
    "tracing",
    "state_storage",
    "egress",
    "admin",
    "mode",
    "routing",
    "prompt_guards",
    "routing_preferences",
    "model_metrics_sources",
    "prompt_caching",
];

/// Top-level sections that are mappings of keys (not lists, not scalars).
const MAPPINGS: &[&str] = &[
    "model_aliases",
    "endpoints",
    "ratelimit_storage",
    "overrides",
    "tracing",
    "state_storage",
    "egress",
    "admin",
    "routing",
    "prompt_guards",
    "prompt_caching",
];

pub(crate) fn build(
    doc: Map<String, Value>,
    p: &mut Problems,
    source: Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Config> {
    for key in doc.keys() {
        if !TOP_LEVEL.contains(&key.as_str()) {
            p.error(key.clone(), "unknown key");
        }
    }
    // serde would read a list as a struct's fields in order; these sections are mappings.
    let mut doc = doc;
    for key in MAPPINGS {
        if let Some(v) = doc.get(*key)
            && !matches!(v, Value::Object(_) | Value::Null)
        {
            p.error(*key, format!("expected a mapping, found {}", kind(v)));
            doc.remove(*key);
        }
    }
    let get = |k: &str| doc.get(k).cloned().unwrap_or(Value::Null);

    let version = match get("version") {
        Value::String(v) if VERSIONS.contains(&v.as_str()) => v,
        Value::String(v) => {
            p.error(
                "version",
                format!("`{v}` is not a supported version (v0.1 … v0.4.0)"),
            );
            v
        }
        Value::Null => {
            p.error(
                "version",
                "missing: set `version: v0.4.0` (v0.1 … v0.4.0 are accepted)",
            );
            String::new()
        }
        other => {
            p.error(
                "version",
                format!("expected a string, found {}", kind(&other)),
            );
            String::new()
        }
    };

    let filters = filters(&get("filters"), p);
    let agents = agents(&get("agents"), p);

    let (providers, inline_preferences) = model_providers(&doc, env, p);
    let aliases = aliases(&get("model_aliases"), &providers, p);
    let routing_preferences = routing_preferences(
        &get("routing_preferences"),
        &inline_preferences,
        &providers,
        &aliases,
        p,
    );
    let routing = routing(&get("routing"), p);
    let model_metrics_sources = model_metrics_sources(&get("model_metrics_sources"), p);
    let prompt_caching = prompt_caching(&get("prompt_caching"), p);
    let mode = mode(&get("mode"), p);
    let prompt_guards = prompt_guards(&get("prompt_guards"), p);
    let endpoints = endpoints(&get("endpoints"), p);
    let prompt_targets = prompt_targets(&get("prompt_targets"), &endpoints, p);
    check_prefix_affinity(&endpoints, &providers, p);
    let overrides = overrides(&get("overrides"), &providers, &aliases, p);
    let ratelimits = ratelimits(&get("ratelimits"), &providers, &aliases, p);
    let ratelimit_storage = ratelimit_storage(&get("ratelimit_storage"), p);
    let state_storage = state_storage(&get("state_storage"), p);
    let tracing = tracing(&get("tracing"), p);
    let system_prompt = match get("system_prompt") {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => {
            p.error(
                "system_prompt",
                format!("expected a string, found {}", kind(&other)),
            );
            None
        }
    };
    let admin = admin(&get("admin"), p);
    let mut listeners = listeners(&get("listeners"), p);
    check_listener_refs(&listeners, &filters, &agents, p);
    check_addresses(&listeners, &admin, p);
    let model_listener = match listeners.iter().position(|l| l.kind == ListenerKind::Model) {
        Some(i) => listeners.remove(i),
        None => Listener::predefined_model(),
    };
    let egress = egress(&get("egress"), &model_listener, &admin, p);

    if !p.errors.is_empty() {
        return None;
    }
    let egress = egress?;
    let models = crate::resolve::ModelTable::new(&providers, &aliases);
    Some(Config {
        version,
        source,
        model_listener,
        listeners,
        providers,
        aliases,
        models,
        agents,
        filters,
        endpoints,
        prompt_targets,
        system_prompt,
        ratelimits,
        ratelimit_storage,
        overrides,
        egress,
        admin,
        state_storage,
        tracing,
        routing,
        routing_preferences,
        model_metrics_sources,
        prompt_caching,
        mode,
        prompt_guards,
        warnings: std::mem::take(&mut p.warnings),
    })
}

// ---------------------------------------------------------------- shared helpers

pub(super) fn http_url(s: &str, path: &str, p: &mut Problems) -> Option<Url> {
    match Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        Ok(u) => {
            p.error(
                path,
                format!(
                    "`{s}` must be an http:// or https:// URL with a host (scheme is `{}`)",
                    u.scheme()
                ),
            );
            None
        }
        Err(e) => {
            p.error(path, format!("`{s}` is not a URL: {e}"));
            None
        }
    }
}

pub(super) fn unique<'a>(
    ids: impl Iterator<Item = &'a str>,
    list: &str,
    key: &str,
    p: &mut Problems,
) {
    let mut seen = BTreeSet::new();
    for (i, id) in ids.enumerate() {
        if !seen.insert(id) {
            p.error(
                format!("{list}[{i}].{key}"),
                format!("`{id}` is used more than once"),
            );
        }
    }
}

pub(super) fn duration_or(
    raw: Option<&RawDuration>,
    path: &str,
    default: Duration,
    p: &mut Problems,
) -> Duration {
    match raw.map(parse_duration) {
        None => default,
        Some(Ok(d)) if d.is_zero() => {
            p.error(path, "must be greater than 0");
            default
        }
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            p.error(path, e);
            default
        }
    }
}
