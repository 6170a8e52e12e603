//! `model_aliases`, and resolving model references (alias targets, fallbacks, rate-limit
//! models, overrides) to configured providers.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::load::{Problems, join, map};
use crate::model::*;
use crate::raw::*;

/// Resolve a model reference (alias target, fallback, rate-limit model, override) to a
/// provider name: exact provider name, `provider/model`, a bare model id that only one
/// provider serves, or a `provider/*` wildcard (the reference is kept as written: the
/// egress resolves it against the wildcard at request time).
pub fn resolve_model(reference: &str, providers: &[Provider]) -> Result<String, String> {
    if let Some(pr) = providers
        .iter()
        .find(|pr| pr.name == reference || pr.model == reference)
    {
        return Ok(pr.name.clone());
    }
    let bare: Vec<&Provider> = providers
        .iter()
        .filter(|pr| !pr.wildcard && pr.model_id == reference)
        .collect();
    match bare.len() {
        1 => return Ok(bare[0].name.clone()),
        n if n > 1 => {
            let names: Vec<&str> = bare.iter().map(|pr| pr.name.as_str()).collect();
            return Err(format!(
                "`{reference}` is ambiguous: served by {}",
                names.join(", ")
            ));
        }
        _ => {}
    }
    if let Some((prefix, _)) = reference.split_once('/')
        && providers
            .iter()
            .any(|pr| pr.wildcard && pr.prefix == prefix)
    {
        return Ok(reference.to_string());
    }
    Err(format!("`{reference}` is not a configured model"))
}

pub(super) fn aliases(
    value: &Value,
    providers: &[Provider],
    p: &mut Problems,
) -> BTreeMap<String, Alias> {
    let raws = map::<RawAlias>(value, "model_aliases", p);
    let names: BTreeSet<&str> = raws.iter().map(|(k, _)| k.as_str()).collect();
    let mut out = BTreeMap::new();
    for (name, raw) in &raws {
        let path = format!("model_aliases.{name}");
        // Alias → alias chains: follow them (cycles are reported) to a provider.
        let resolve = |r: &str, key: &str, p: &mut Problems| -> Option<String> {
            let mut seen: Vec<String> = vec![name.clone()];
            let mut cur = r.to_string();
            while names.contains(cur.as_str()) {
                let cycle = seen.contains(&cur);
                seen.push(cur.clone());
                if cycle {
                    p.error(
                        join(&path, key),
                        format!("alias cycle: {}", seen.join(" → ")),
                    );
                    return None;
                }
                cur = raws
                    .iter()
                    .find(|(k, _)| *k == cur)
                    .map(|(_, a)| a.target.clone())
                    .unwrap_or_default();
            }
            match resolve_model(&cur, providers) {
                Ok(n) => Some(n),
                Err(e) => {
                    p.error(join(&path, key), e);
                    None
                }
            }
        };
        let target = resolve(&raw.target, "target", p);
        let fallbacks: Vec<String> = raw
            .fallbacks
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, f)| resolve(f, &format!("fallbacks[{i}]"), p))
            .collect();
        if let Some(target) = target {
            out.insert(name.clone(), Alias { target, fallbacks });
        }
    }
    out
}

pub(super) fn model_ref_ok(
    r: &str,
    providers: &[Provider],
    aliases: &BTreeMap<String, Alias>,
) -> Result<(), String> {
    if aliases.contains_key(r) {
        return Ok(());
    }
    resolve_model(r, providers).map(|_| ())
}
