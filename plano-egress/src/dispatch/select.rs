//! Which provider serves a request. Names are resolved by the config's model table
//! (`plano-config/src/resolve.rs`), the same resolver `--check` uses, so a name that
//! validates is a name that selects:
//! 1. header `x-plano-llm-provider-hint` (legacy `x-arch-llm-provider-hint`), resolved like
//!    a model (alias, provider name, `provider/model`, bare model id, `provider/model` on a
//!    wildcard) or naming a wildcard provider (which then serves the body's model); a hint
//!    that matches nothing is logged and counted, and selection goes on as if it were absent;
//! 2. else the body's `model`: alias → its target (then its fallbacks), or a model;
//! 3. a missing, empty, `none` or `default` model → the `default: true` provider;
//! 4. anything else → 404 `model_not_found`.

use http::{HeaderMap, HeaderName};
use plano_config::Config;
use plano_config::resolve::{Lookup, Target};

use crate::error::EgressError;

pub const HINT_HEADER: &str = "x-plano-llm-provider-hint";
pub const LEGACY_HINT_HEADER: &str = "x-arch-llm-provider-hint";
/// The hint headers as names (a lookup by `&str` parses the name every time), with the
/// string each is counted under.
const HINTS: [(HeaderName, &str); 2] = [
    (HeaderName::from_static(HINT_HEADER), HINT_HEADER),
    (
        HeaderName::from_static(LEGACY_HINT_HEADER),
        LEGACY_HINT_HEADER,
    ),
];

/// One provider to try, with the model id to put in the upstream body.
pub type Candidate = Target;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The alias the request came through, if any.
    pub alias: Option<String>,
    /// The target first, then the alias's fallbacks in order.
    pub candidates: Vec<Candidate>,
    /// The hint header that was sent but matched nothing (selection ignored it).
    pub hint_missed: Option<&'static str>,
}

impl Selection {
    fn of(alias: Option<String>, candidates: Vec<Candidate>) -> Self {
        Selection {
            alias,
            candidates,
            hint_missed: None,
        }
    }
}

pub fn select(
    config: &Config,
    headers: &HeaderMap,
    model: Option<&str>,
) -> Result<Selection, EgressError> {
    let model = model.map(str::trim).unwrap_or_default();
    let hint = HINTS.iter().find_map(|(name, h)| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|v| (*h, v))
    });
    let mut hint_missed = None;
    if let Some((header, hint)) = hint {
        match by_name(config, hint, model) {
            Some(selection) => return Ok(selection),
            None => {
                tracing::info!(
                    header,
                    hint = %bounded(hint),
                    "provider hint matches no configured model; selecting by the body's model"
                );
                hint_missed = Some(header);
            }
        }
    }
    let mut selection = if model.is_empty() || model == "none" || model == "default" {
        let i = config.models.default_provider().ok_or_else(|| {
            EgressError::ModelNotFound(if model.is_empty() {
                "(none)".into()
            } else {
                model.into()
            })
        })?;
        Selection::of(
            None,
            vec![Target {
                provider: i,
                model_id: config.providers[i].model_id.clone(),
            }],
        )
    } else {
        match config.models.lookup(model) {
            Some(Lookup::Alias(name, targets)) => {
                Selection::of(Some(name.to_string()), targets.to_vec())
            }
            Some(Lookup::Model(t)) => Selection::of(None, vec![t]),
            // A wildcard provider names no model.
            Some(Lookup::Wildcard(_)) | None => {
                return Err(EgressError::ModelNotFound(model.into()));
            }
        }
    };
    selection.hint_missed = hint_missed;
    Ok(selection)
}

/// A hint: any name a body's `model` may carry, or a wildcard provider itself, which then
/// serves the body's model (its `prefix/` stripped).
fn by_name(config: &Config, hint: &str, model: &str) -> Option<Selection> {
    Some(match config.models.lookup(hint)? {
        Lookup::Alias(name, targets) => Selection::of(Some(name.to_string()), targets.to_vec()),
        Lookup::Model(t) => Selection::of(None, vec![t]),
        Lookup::Wildcard(i) => {
            let p = &config.providers[i];
            let id = model
                .strip_prefix(p.prefix.as_str())
                .and_then(|m| m.strip_prefix('/'))
                .unwrap_or(model);
            if id.is_empty() || id == "none" || id == "default" || id == "*" {
                return None;
            }
            Selection::of(
                None,
                vec![Target {
                    provider: i,
                    model_id: id.to_string(),
                }],
            )
        }
    })
}

/// A client-sent value as it may appear in a log line: at most 64 characters.
fn bounded(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
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

    fn hinted(
        c: &Config,
        header: &'static str,
        hint: &'static str,
        model: Option<&str>,
    ) -> Selection {
        let mut h = HeaderMap::new();
        h.insert(header, HeaderValue::from_static(hint));
        select(c, &h, model).unwrap()
    }

    fn first(c: &Config, s: &Selection) -> (String, String) {
        (
            c.providers[s.candidates[0].provider].name.clone(),
            s.candidates[0].model_id.clone(),
        )
    }

    #[test]
    fn hint_header_wins() {
        let c = config();
        let s = hinted(&c, LEGACY_HINT_HEADER, "local", Some("gpt-4o"));
        assert_eq!(first(&c, &s).0, "local");
        assert_eq!(s.hint_missed, None);
    }

    #[test]
    fn hints_resolve_like_models() {
        let c = config();
        let cases = [
            ("gpt-4o-mini", ("openai/gpt-4o-mini", "gpt-4o-mini")),
            ("openai/gpt-4o-mini", ("openai/gpt-4o-mini", "gpt-4o-mini")),
            ("llama3.2", ("local", "llama3.2")),
            ("mistral/mistral-small", ("mistral/*", "mistral-small")),
            ("smart", ("openai/gpt-4o", "gpt-4o")),
        ];
        for (hint, (name, id)) in cases {
            for header in [HINT_HEADER, LEGACY_HINT_HEADER] {
                let s = hinted(&c, header, hint, Some("local"));
                assert_eq!(first(&c, &s), (name.to_string(), id.to_string()), "{hint}");
                assert_eq!(s.hint_missed, None);
            }
        }
        assert_eq!(
            hinted(&c, HINT_HEADER, "smart", None).alias.as_deref(),
            Some("smart")
        );
        // A wildcard provider named by the hint serves the body's model.
        let s = hinted(&c, HINT_HEADER, "mistral/*", Some("mistral/codestral"));
        assert_eq!(first(&c, &s), ("mistral/*".into(), "codestral".into()));
    }

    #[test]
    fn unknown_hints_fall_back_to_the_body_model_then_the_default() {
        let c = config();
        let s = hinted(&c, HINT_HEADER, "nope", Some("local"));
        assert_eq!(first(&c, &s).0, "local");
        assert_eq!(s.hint_missed, Some(HINT_HEADER));
        let s = hinted(&c, LEGACY_HINT_HEADER, "nope", None);
        assert_eq!(first(&c, &s).0, "openai/gpt-4o");
        assert_eq!(s.hint_missed, Some(LEGACY_HINT_HEADER));
        // A wildcard hint with no model to serve is a miss too, not a 404.
        let s = hinted(&c, HINT_HEADER, "mistral/*", None);
        assert_eq!(first(&c, &s).0, "openai/gpt-4o");
        assert_eq!(s.hint_missed, Some(HINT_HEADER));
        // The body's own unknown model is still a 404.
        let mut h = HeaderMap::new();
        h.insert(HINT_HEADER, HeaderValue::from_static("nope"));
        assert_eq!(
            select(&c, &h, Some("gpt-5")).unwrap_err().reason(),
            "model_not_found"
        );
    }

    #[test]
    fn bounded_log_values() {
        assert_eq!(bounded("abc"), "abc");
        assert_eq!(bounded(&"é".repeat(100)).chars().count(), 64);
    }
}
