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
            if prefix_affinity {
                p.warn(
                    &join(&path, "prefix_affinity"),
                    "parsed, not acted on yet (endpoints are called on one address, no replica hashing)",
                );
            }
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
