//! `endpoints` and the `prompt_targets` that call them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::{DEFAULT_TIMEOUT, duration_or, http_url, unique};
use crate::load::{Problems, join, list, map};
use crate::model::*;
use crate::raw::*;

pub(super) fn endpoints(value: &Value, p: &mut Problems) -> BTreeMap<String, Endpoint> {
    map::<RawEndpoint>(value, "endpoints", p)
        .into_iter()
        .filter_map(|(name, e)| {
            let path = format!("endpoints.{name}");
            let scheme = e.protocol.as_deref().unwrap_or("http");
            if !matches!(scheme, "http" | "https") {
                p.error(
                    join(&path, "protocol"),
                    format!("`{scheme}` is not http or https"),
                );
                return None;
            }
            let connect_timeout = duration_or(
                e.connect_timeout.as_ref(),
                &join(&path, "connect_timeout"),
                Duration::from_secs(5),
                p,
            );
            let timeout = duration_or(
                e.timeout.as_ref(),
                &join(&path, "timeout"),
                DEFAULT_TIMEOUT,
                p,
            );
            if let Some(h) = &e.http_host {
                super::providers::check_http_host(h, &join(&path, "http_host"), p);
            }
            let prefix_affinity = e.prefix_affinity.unwrap_or(false);
            let base_url = http_url(
                &format!("{scheme}://{}", e.endpoint),
                &join(&path, "endpoint"),
                p,
            )?;
            Some((
                name.clone(),
                Endpoint {
                    name,
                    base_url,
                    connect_timeout,
                    timeout,
                    http_host: e.http_host,
                    prefix_affinity,
                },
            ))
        })
        .collect()
}

/// `prefix_affinity` acts on the model providers whose `base_url` is the endpoint's
/// address (docs/routing.md); one that serves none of them does nothing, and says so.
pub(super) fn check_prefix_affinity(
    endpoints: &BTreeMap<String, Endpoint>,
    providers: &[Provider],
    p: &mut Problems,
) {
    for e in endpoints.values().filter(|e| e.prefix_affinity) {
        if !providers.iter().any(|m| e.serves(&m.base_url)) {
            p.warn(
                &format!("endpoints.{}.prefix_affinity", e.name),
                &format!(
                    "no model provider's base_url is {} (prefix affinity spreads model requests over the replicas of a provider's base_url; prompt targets and agents are called on one address)",
                    e.base_url
                ),
            );
        }
    }
}

pub(super) fn prompt_targets(
    value: &Value,
    endpoints: &BTreeMap<String, Endpoint>,
    p: &mut Problems,
) -> Vec<PromptTarget> {
    let raws = list::<RawPromptTarget>(value, "prompt_targets", p);
    let out: Vec<PromptTarget> = raws
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let path = format!("prompt_targets[{i}]");
            let parameters = t
                .parameters
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .filter_map(|(j, prm)| {
                    let ppath = format!("{path}.parameters[{j}]");
                    let ty = match prm.ty.as_str() {
                        "str" | "string" => ParamType::String,
                        "int" | "integer" => ParamType::Int,
                        "float" | "number" => ParamType::Float,
                        "bool" | "boolean" => ParamType::Bool,
                        "list" | "array" => ParamType::List,
                        "dict" | "object" => ParamType::Dict,
                        other => {
                            p.error(join(&ppath, "type"), format!("`{other}` is not a parameter type (str, int, float, bool, list, dict)"));
                            return None;
                        }
                    };
                    Some(PromptParameter {
                        name: prm.name,
                        description: prm.description,
                        required: prm.required.unwrap_or(false),
                        ty,
                        format: prm.format,
                        enum_values: prm.enum_values.unwrap_or_default(),
                        default: prm.default,
                    })
                })
                .collect();
            let Some(ep) = t.endpoint else {
                p.error(join(&path, "endpoint"), "missing: a prompt target needs an endpoint");
                return None;
            };
            if !endpoints.contains_key(&ep.name) {
                p.error(join(&path, "endpoint.name"), format!("`{}` is not an endpoint in `endpoints`", ep.name));
            }
            let method = match ep.http_method.as_deref().map(str::to_ascii_uppercase).as_deref() {
                None | Some("POST") => HttpMethod::Post,
                Some("GET") => HttpMethod::Get,
                Some(other) => {
                    p.error(join(&path, "endpoint.http_method"), format!("`{other}` is not GET or POST"));
                    HttpMethod::Post
                }
            };
            Some(PromptTarget {
                name: t.name,
                description: t.description,
                parameters,
                endpoint: PromptTargetEndpoint {
                    name: ep.name,
                    path: ep.path.unwrap_or_else(|| "/".into()),
                    method,
                    http_headers: ep.http_headers.unwrap_or_default().into_iter().collect(),
                },
                system_prompt: t.system_prompt,
                auto_llm_dispatch_on_response: t.auto_llm_dispatch_on_response.unwrap_or(true),
                default: t.default.unwrap_or(false),
            })
        })
        .collect();
    unique(
        out.iter().map(|t| t.name.as_str()),
        "prompt_targets",
        "name",
        p,
    );
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefix_affinity_applies_to_providers_whose_base_url_is_the_endpoint() {
        let yaml = r#"
version: v0.4.0
model_providers:
  - model: openai/llama
    base_url: http://VLLM.internal:8000/v1
    default: true
  - model: openai/gpt-4o
endpoints:
  vllm:
    endpoint: vllm.internal:8000
    prefix_affinity: true
  other_port:
    endpoint: vllm.internal:9000
    prefix_affinity: true
  plain:
    endpoint: api.openai.com
    protocol: https
"#;
        let config = crate::load_str(yaml, None, &|_| None).unwrap();
        let llama = config.provider("openai/llama").unwrap();
        let gpt = config.provider("openai/gpt-4o").unwrap();
        assert_eq!(
            config.affinity_endpoint(llama).map(|e| e.name.as_str()),
            Some("vllm")
        );
        // Same address but no prefix_affinity: nothing changes.
        assert!(config.affinity_endpoint(gpt).is_none());
        // The endpoint no provider uses is reported, the used one is not.
        let warned: Vec<&String> = config
            .warnings
            .iter()
            .filter(|w| w.contains("prefix_affinity"))
            .collect();
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(warned[0].contains("endpoints.other_port"), "{warned:?}");
    }
}
