//! `model_aliases`, and resolving model references (alias targets, fallbacks, rate-limit
//! models, overrides) to configured providers.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::load::{Problems, join, map};
use crate::model::*;
use crate::raw::*;

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
            match crate::resolve::resolve_model(&cur, providers) {
                Ok(t) => Some(crate::resolve::canonical(&t, providers)),
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
    crate::resolve::resolve(r, providers).map(|_| ())
}
