//! `model_providers` (or the deprecated `llm_providers`): each provider against the
//! provider table (`crate::providers`), its `base_url` path rules and auth style.

use serde_json::{Map, Value};
use url::Url;

use super::http_url;
use crate::load::{Problems, join, list};
use crate::model::*;
use crate::providers;
use crate::raw::*;

pub(super) fn model_providers(doc: &Map<String, Value>, p: &mut Problems) -> Vec<Provider> {
    let (key, value) = match (doc.get("model_providers"), doc.get("llm_providers")) {
        (Some(_), Some(_)) => {
            p.error(
                "llm_providers",
                "`llm_providers` is the deprecated spelling of `model_providers`; use only one",
            );
            return Vec::new();
        }
        (Some(v), None) => ("model_providers", v),
        (None, Some(v)) => {
            p.warn(
                "llm_providers",
                "deprecated spelling; rename to `model_providers`",
            );
            ("llm_providers", v)
        }
        (None, None) => return Vec::new(),
    };
    let raws = list::<RawProvider>(value, key, p);
    let mut out: Vec<Provider> = Vec::new();
    let mut defaults = Vec::new();
    for (i, r) in raws.into_iter().enumerate() {
        let path = format!("{key}[{i}]");
        if r.default == Some(true) {
            defaults.push(path.clone());
        }
        if let Some(pr) = provider(r, &path, p) {
            if let Some(prev) = out.iter().position(|o| o.name == pr.name) {
                p.error(
                    join(&path, "name"),
                    format!(
                        "provider name `{}` is already used by {key}[{prev}]",
                        pr.name
                    ),
                );
            }
            out.push(pr);
        }
    }
    if defaults.len() > 1 {
        p.error(
            key,
            format!(
                "more than one provider has `default: true`: {}",
                defaults.join(", ")
            ),
        );
    }
    out
}

pub(super) fn provider(r: RawProvider, path: &str, p: &mut Problems) -> Option<Provider> {
    if r.routing_preferences.is_some() {
        p.warn(
            &join(path, "routing_preferences"),
            "parsed but not acted on yet",
        );
    }
    let Some((prefix, model_id)) = r
        .model
        .split_once('/')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
    else {
        p.error(
            join(path, "model"),
            format!(
                "`{}` must be `<provider>/<model-id>` (e.g. openai/gpt-4o)",
                r.model
            ),
        );
        return None;
    };
    let defaults = match &r.provider_interface {
        Some(iface) => match providers::interface(iface) {
            Some(d) => Some(d),
            None => {
                p.error(
                    join(path, "provider_interface"),
                    format!("`{iface}` is not a known provider interface"),
                );
                return None;
            }
        },
        None => providers::lookup(prefix),
    };
    let Some(defaults) = defaults else {
        p.error(
            join(path, "model"),
            format!("unknown provider prefix `{prefix}`: set `base_url` and `provider_interface` (e.g. openai)"),
        );
        return None;
    };
    let (base_url, path_prefix) = match &r.base_url {
        Some(b) => {
            let url = http_url(b, &join(path, "base_url"), p)?;
            let own_path = url.path().trim_end_matches('/').to_string();
            let mut origin = url.clone();
            origin.set_path("");
            origin.set_query(None);
            let prefix_path = if own_path.is_empty() {
                defaults.path_prefix.to_string()
            } else {
                own_path
            };
            (origin, prefix_path)
        }
        None => match defaults.base_url.and_then(|u| Url::parse(u).ok()) {
            Some(u) => (u, defaults.path_prefix.to_string()),
            None => {
                p.error(
                    join(path, "base_url"),
                    format!("required for `{prefix}` providers (there is no public default)"),
                );
                return None;
            }
        },
    };
    let access_key = r.access_key.filter(|k| !k.is_empty()).map(Secret::new);
    let auth = match (defaults.auth, &access_key) {
        (AuthStyle::None, Some(_)) => AuthStyle::Bearer,
        (style, _) => style,
    };
    let wildcard = model_id == "*";
    Some(Provider {
        name: r.name.unwrap_or_else(|| r.model.clone()),
        prefix: prefix.to_string(),
        model_id: model_id.to_string(),
        model: r.model.clone(),
        wildcard,
        api: defaults.api,
        base_url,
        path_prefix,
        query: defaults.query.map(str::to_string),
        http_host: r.http_host,
        access_key,
        auth,
        passthrough_auth: r.passthrough_auth.unwrap_or(false),
        headers: r.headers.unwrap_or_default().into_iter().collect(),
        default: r.default.unwrap_or(false),
    })
}
