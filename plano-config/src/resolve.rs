//! Model names → providers: the one resolver, used by validation (alias targets and
//! fallbacks, `overrides.*_model`, `ratelimits[].model`) and, through the [`ModelTable`]
//! built once per validated [`Config`](crate::Config), by the egress at request time. Both
//! sides therefore agree on what a name means.
//!
//! A reference is, in this order:
//! 1. a provider's `name` or its `model` string (`openai/gpt-4o`);
//! 2. a bare model id (`gpt-4o`) served by exactly one non-wildcard provider (served by
//!    several: ambiguous, an error);
//! 3. `prefix/model-id` served by a wildcard provider `prefix/*` (the id is sent as is).
//!
//! A reference naming a wildcard provider itself (`mistral/*`, or its `name`) names no model:
//! it cannot be an alias target or a request's model (a hint header may name it, then the
//! request's own model is sent to it; see `plano-egress/src/dispatch/select.rs`).

use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxHashMap;

use crate::model::{Alias, Provider};

/// A concrete model on a configured provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Index into `Config::providers`.
    pub provider: usize,
    /// The model id put in the upstream request (prefix stripped).
    pub model_id: String,
}

/// What a reference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A model on a provider.
    Model(Target),
    /// A wildcard provider itself (index into `Config::providers`): no model chosen.
    Wildcard(usize),
}

/// Resolve `reference` against `providers` (aliases not included: see [`ModelTable`]).
pub fn resolve(reference: &str, providers: &[Provider]) -> Result<Reference, String> {
    if let Some(i) = providers
        .iter()
        .position(|p| p.name == reference || p.model == reference)
    {
        let p = &providers[i];
        return Ok(if p.wildcard {
            Reference::Wildcard(i)
        } else {
            Reference::Model(Target {
                provider: i,
                model_id: p.model_id.clone(),
            })
        });
    }
    let bare: Vec<usize> = providers
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.wildcard && p.model_id == reference)
        .map(|(i, _)| i)
        .collect();
    match bare.as_slice() {
        [i] => {
            return Ok(Reference::Model(Target {
                provider: *i,
                model_id: providers[*i].model_id.clone(),
            }));
        }
        [] => {}
        several => {
            let names: Vec<&str> = several
                .iter()
                .map(|i| providers[*i].name.as_str())
                .collect();
            return Err(format!(
                "`{reference}` is ambiguous: served by {}",
                names.join(", ")
            ));
        }
    }
    if let Some((prefix, id)) = reference.split_once('/')
        && !id.is_empty()
        && id != "*"
        && let Some(i) = providers
            .iter()
            .position(|p| p.wildcard && p.prefix == prefix)
    {
        return Ok(Reference::Model(Target {
            provider: i,
            model_id: id.to_string(),
        }));
    }
    Err(format!("`{reference}` is not a configured model"))
}

/// Resolve `reference` to a model: as [`resolve`], but a wildcard provider is an error.
pub fn resolve_model(reference: &str, providers: &[Provider]) -> Result<Target, String> {
    match resolve(reference, providers)? {
        Reference::Model(t) => Ok(t),
        Reference::Wildcard(i) => Err(format!(
            "`{reference}` is the wildcard provider `{}`, not a model: name one of its models, e.g. `{}/<model-id>`",
            providers[i].model, providers[i].prefix
        )),
    }
}

/// How an alias target or fallback is written down in `Config::aliases`: the provider's
/// name, or `prefix/model-id` for a model of a wildcard provider.
pub fn canonical(target: &Target, providers: &[Provider]) -> String {
    let p = &providers[target.provider];
    if p.wildcard {
        format!("{}/{}", p.prefix, target.model_id)
    } else {
        p.name.clone()
    }
}

/// Every name a request may use, resolved once when the config is validated. Looked up on
/// every request with FxHash, not SipHash: the tables are fixed by the config (a client's
/// name is only looked up, never inserted), so there is nothing to flood.
#[derive(Debug, Clone, Default)]
pub struct ModelTable {
    /// Provider names, `model` strings and unambiguous bare ids of non-wildcard providers.
    exact: FxHashMap<String, Target>,
    /// Names of wildcard providers (`name` and `model`) → index.
    wildcard_names: FxHashMap<String, usize>,
    /// Wildcard provider prefix → index (the first listed).
    wildcard_prefixes: FxHashMap<String, usize>,
    /// Alias → its target, then its fallbacks in order.
    aliases: FxHashMap<String, Vec<Target>>,
    default: Option<usize>,
}

/// What a name found in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// An alias: its name and its targets (target first, then fallbacks).
    Alias(&'a str, &'a [Target]),
    /// A model on one provider.
    Model(Target),
    /// A wildcard provider itself.
    Wildcard(usize),
}

impl ModelTable {
    /// Build the table from validated providers and aliases (whose targets resolve; any
    /// that would not are left out).
    pub fn new(providers: &[Provider], aliases: &BTreeMap<String, Alias>) -> Self {
        let mut table = ModelTable {
            default: providers.iter().position(|p| p.default),
            ..ModelTable::default()
        };
        // Bare ids first, so names and `model` strings (rule 1) win over them.
        let mut bare: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, p) in providers.iter().enumerate().filter(|(_, p)| !p.wildcard) {
            bare.entry(p.model_id.as_str()).or_default().push(i);
        }
        for (id, is) in bare {
            if let [i] = is.as_slice() {
                table.exact.insert(
                    id.to_string(),
                    Target {
                        provider: *i,
                        model_id: providers[*i].model_id.clone(),
                    },
                );
            } else {
                // Ambiguous: a name or `model` string of the same spelling may still win below.
                table.exact.remove(id);
            }
        }
        // Rule 1 keeps the first provider listed for a name, so insert in reverse order.
        for (i, p) in providers.iter().enumerate().rev() {
            for key in [&p.name, &p.model] {
                if p.wildcard {
                    table.exact.remove(key.as_str());
                    table.wildcard_names.insert(key.clone(), i);
                } else {
                    table.wildcard_names.remove(key.as_str());
                    table.exact.insert(
                        key.clone(),
                        Target {
                            provider: i,
                            model_id: p.model_id.clone(),
                        },
                    );
                }
            }
            if p.wildcard {
                table.wildcard_prefixes.insert(p.prefix.clone(), i);
            }
        }
        for (name, alias) in aliases {
            let targets: Vec<Target> = std::iter::once(&alias.target)
                .chain(&alias.fallbacks)
                .filter_map(|r| table.model(r))
                .collect();
            if !targets.is_empty() {
                table.aliases.insert(name.clone(), targets);
            }
        }
        table
    }

    /// A model reference (not an alias) → the model it names, exactly as [`resolve_model`]
    /// decides; `None` for a wildcard provider itself and for unknown names.
    pub fn model(&self, reference: &str) -> Option<Target> {
        if let Some(t) = self.exact.get(reference) {
            return Some(t.clone());
        }
        if self.wildcard_names.contains_key(reference) {
            return None;
        }
        let (prefix, id) = reference.split_once('/')?;
        if id.is_empty() || id == "*" {
            return None;
        }
        self.wildcard_prefixes.get(prefix).map(|&i| Target {
            provider: i,
            model_id: id.to_string(),
        })
    }

    /// Any name a request may carry: an alias, a model, or a wildcard provider itself.
    pub fn lookup(&self, name: &str) -> Option<Lookup<'_>> {
        if let Some((k, targets)) = self.aliases.get_key_value(name) {
            return Some(Lookup::Alias(k.as_str(), targets.as_slice()));
        }
        if let Some(t) = self.model(name) {
            return Some(Lookup::Model(t));
        }
        self.wildcard_names.get(name).map(|&i| Lookup::Wildcard(i))
    }

    /// The `default: true` provider, if any (index into `Config::providers`).
    pub fn default_provider(&self) -> Option<usize> {
        self.default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml_tail: &str) -> Result<crate::Config, String> {
        let yaml = format!(
            r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    default: true
  - name: fast
    model: groq/gpt-4o
  - model: anthropic/claude-sonnet-4-0
  - model: mistral/*
  - name: local
    model: ollama/llama3.2
    base_url: http://127.0.0.1:11434
{yaml_tail}"#
        );
        crate::load_str(&yaml, None, &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn table_and_resolver_agree_on_every_name() {
        let c = config("").unwrap();
        let names = [
            "openai/gpt-4o",
            "fast",
            "groq/gpt-4o",
            "gpt-4o",
            "claude-sonnet-4-0",
            "local",
            "llama3.2",
            "mistral/*",
            "mistral/mistral-large",
            "mistral/",
            "ollama/llama3.2",
            "nope",
            "nope/x",
        ];
        for n in names {
            let direct = resolve_model(n, &c.providers).ok();
            assert_eq!(c.models.model(n), direct, "{n}");
        }
        // A bare id served twice is ambiguous, a full name is not.
        assert!(
            resolve_model("gpt-4o", &c.providers)
                .unwrap_err()
                .contains("ambiguous")
        );
        assert_eq!(c.models.model("fast").map(|t| t.provider), Some(1));
        assert_eq!(
            c.models.model("mistral/mistral-large"),
            Some(Target {
                provider: 3,
                model_id: "mistral-large".into()
            })
        );
        assert_eq!(c.models.lookup("mistral/*"), Some(Lookup::Wildcard(3)));
        assert_eq!(c.models.default_provider(), Some(0));
    }

    #[test]
    fn aliases_resolve_at_validation_to_what_requests_get() {
        let c = config(
            "model_aliases:\n  smart:\n    target: claude-sonnet-4-0\n    fallbacks: [mistral/mistral-large, local]\n  chain:\n    target: smart\n",
        )
        .unwrap();
        let Some(Lookup::Alias(_, targets)) = c.models.lookup("smart") else {
            panic!("smart is an alias");
        };
        let got: Vec<(usize, &str)> = targets
            .iter()
            .map(|t| (t.provider, t.model_id.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, "claude-sonnet-4-0"),
                (3, "mistral-large"),
                (4, "llama3.2")
            ]
        );
        let Some(Lookup::Alias(_, chain)) = c.models.lookup("chain") else {
            panic!("chain is an alias");
        };
        assert_eq!(chain[0].provider, 2);
    }

    #[test]
    fn an_alias_to_a_wildcard_provider_is_refused_by_check() {
        for target in ["mistral/*", "\"mistral/*\""] {
            let err =
                config(&format!("model_aliases:\n  any:\n    target: {target}\n")).unwrap_err();
            assert!(err.contains("model_aliases.any.target"), "{err}");
            assert!(err.contains("wildcard provider"), "{err}");
        }
    }
}
