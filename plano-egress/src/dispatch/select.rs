//! Which provider serves a request (DESIGN.md §4 "Selecting a provider"):
//! 1. header `x-plano-llm-provider-hint` (legacy `x-arch-llm-provider-hint`) names a provider;
//! 2. else the body's `model`: alias → its target (then its fallbacks), exact
//!    `provider/model` or provider name, a bare model id served by exactly one provider, a
//!    `provider/*` wildcard;
//! 3. a missing, empty, `none` or `default` model → the `default: true` provider;
//! 4. anything else → 404 `model_not_found`.

use http::HeaderMap;
use plano_config::Config;

use crate::error::EgressError;

pub const HINT_HEADER: &str = "x-plano-llm-provider-hint";
pub const LEGACY_HINT_HEADER: &str = "x-arch-llm-provider-hint";

/// One provider to try, with the model id to put in the upstream body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Index into `config.providers`.
    pub provider: usize,
    pub model_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The alias the request came through, if any.
    pub alias: Option<String>,
    /// The target first, then the alias's fallbacks in order.
    pub candidates: Vec<Candidate>,
}

pub fn select(
    config: &Config,
    headers: &HeaderMap,
    model: Option<&str>,
) -> Result<Selection, EgressError> {
    let hint = headers
        .get(HINT_HEADER)
        .or_else(|| headers.get(LEGACY_HINT_HEADER))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty());
    if let Some(hint) = hint {
        let found = config
            .providers
            .iter()
            .position(|p| p.name == hint || p.model == hint)
            .map(|i| {
                let p = &config.providers[i];
                let model_id = if p.wildcard {
                    // A hinted wildcard serves the model the body asked for.
                    model
                        .map(|m| {
                            m.strip_prefix(&format!("{}/", p.prefix))
                                .unwrap_or(m)
                                .to_string()
                        })
                        .unwrap_or_default()
                } else {
                    p.model_id.clone()
                };
                Candidate {
                    provider: i,
                    model_id,
                }
            })
            .filter(|c| !c.model_id.is_empty());
        return match found {
            Some(c) => Ok(Selection {
                alias: None,
                candidates: vec![c],
            }),
            None => Err(EgressError::ModelNotFound(hint.to_string())),
        };
    }

    let model = model.map(str::trim).unwrap_or_default();
    if model.is_empty() || model == "none" || model == "default" {
        return config
            .providers
            .iter()
            .position(|p| p.default)
            .map(|i| Selection {
                alias: None,
                candidates: vec![Candidate {
                    provider: i,
                    model_id: config.providers[i].model_id.clone(),
                }],
            })
            .ok_or_else(|| {
                EgressError::ModelNotFound(if model.is_empty() {
                    "(none)".into()
                } else {
                    model.into()
                })
            });
    }
    if let Some(alias) = config.aliases.get(model) {
        let candidates: Vec<Candidate> = std::iter::once(&alias.target)
            .chain(alias.fallbacks.iter())
            .filter_map(|r| resolve(config, r))
            .collect();
        if candidates.is_empty() {
            return Err(EgressError::ModelNotFound(model.into()));
        }
        return Ok(Selection {
            alias: Some(model.to_string()),
            candidates,
        });
    }
    resolve(config, model)
        .map(|c| Selection {
            alias: None,
            candidates: vec![c],
        })
        .ok_or_else(|| EgressError::ModelNotFound(model.into()))
}

/// A model reference to a concrete provider and upstream model id.
fn resolve(config: &Config, r: &str) -> Option<Candidate> {
    let ps = &config.providers;
    if let Some(i) = ps
        .iter()
        .position(|p| !p.wildcard && (p.name == r || p.model == r))
    {
        return Some(Candidate {
            provider: i,
            model_id: ps[i].model_id.clone(),
        });
    }
    let mut bare = ps
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.wildcard && p.model_id == r);
    if let (Some((i, p)), None) = (bare.next(), bare.next()) {
        return Some(Candidate {
            provider: i,
            model_id: p.model_id.clone(),
        });
    }
    let (prefix, id) = r.split_once('/')?;
    if id.is_empty() || id == "*" {
        return None;
    }
    ps.iter()
        .position(|p| p.wildcard && p.prefix == prefix)
        .map(|i| Candidate {
            provider: i,
            model_id: id.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn config() -> Config {
        let yaml = r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    default: true
  - model: openai/gpt-4o-mini
  - model: anthropic/claude-sonnet-4-0
  - model: mistral/*
  - name: local
    model: ollama/llama3.2
    base_url: http://127.0.0.1:11434
model_aliases:
  smart:
    target: gpt-4o
    fallbacks: [anthropic/claude-sonnet-4-0, mistral/mistral-large]
"#;
        plano_config::load_str(yaml, None, &|_| None).unwrap()
    }

    fn pick(c: &Config, model: Option<&str>) -> Result<(String, String), String> {
        select(c, &HeaderMap::new(), model)
            .map(|s| {
                (
                    c.providers[s.candidates[0].provider].name.clone(),
                    s.candidates[0].model_id.clone(),
                )
            })
            .map_err(|e| e.reason().to_string())
    }

    #[test]
    fn selection_rules() {
        let c = config();
        let ok = |n: &str, m: &str| Ok((n.to_string(), m.to_string()));
        assert_eq!(
            pick(&c, Some("openai/gpt-4o-mini")),
            ok("openai/gpt-4o-mini", "gpt-4o-mini")
        );
        assert_eq!(
            pick(&c, Some("gpt-4o-mini")),
            ok("openai/gpt-4o-mini", "gpt-4o-mini")
        );
        assert_eq!(pick(&c, Some("local")), ok("local", "llama3.2"));
        assert_eq!(
            pick(&c, Some("mistral/mistral-small")),
            ok("mistral/*", "mistral-small")
        );
        for m in [None, Some(""), Some("none"), Some("default")] {
            assert_eq!(pick(&c, m), ok("openai/gpt-4o", "gpt-4o"));
        }
        assert_eq!(pick(&c, Some("gpt-5")), Err("model_not_found".into()));
        assert_eq!(pick(&c, Some("mistral/*")), Err("model_not_found".into()));
    }

    #[test]
    fn alias_gives_target_then_fallbacks() {
        let c = config();
        let s = select(&c, &HeaderMap::new(), Some("smart")).unwrap();
        assert_eq!(s.alias.as_deref(), Some("smart"));
        let names: Vec<(&str, &str)> = s
            .candidates
            .iter()
            .map(|k| (c.providers[k.provider].name.as_str(), k.model_id.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("openai/gpt-4o", "gpt-4o"),
                ("anthropic/claude-sonnet-4-0", "claude-sonnet-4-0"),
                ("mistral/*", "mistral-large")
            ]
        );
    }

    #[test]
    fn hint_header_wins() {
        let c = config();
        let mut h = HeaderMap::new();
        h.insert(LEGACY_HINT_HEADER, HeaderValue::from_static("local"));
        let s = select(&c, &h, Some("gpt-4o")).unwrap();
        assert_eq!(c.providers[s.candidates[0].provider].name, "local");
        h.insert(HINT_HEADER, HeaderValue::from_static("nope"));
        assert!(select(&c, &h, Some("gpt-4o")).is_err());
    }
}
