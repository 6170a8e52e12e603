//! `overrides`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::aliases::model_ref_ok;
use super::duration_or;
use crate::load::{Problems, section};
use crate::model::*;
use crate::raw::*;

pub(super) fn overrides(
    value: &Value,
    providers: &[Provider],
    aliases: &BTreeMap<String, Alias>,
    p: &mut Problems,
) -> Overrides {
    let mut out = Overrides::default();
    if value.is_null() {
        return out;
    }
    let Some(raw) = section::<RawOverrides>(value, "overrides", p) else {
        return out;
    };
    for (key, set, why) in [
        (
            "prompt_target_intent_matching_threshold",
            raw.prompt_target_intent_matching_threshold.is_some(),
            "not acted on (prompt targets are chosen by the model's tool calls, not an intent threshold)",
        ),
        (
            "optimize_context_window",
            raw.optimize_context_window.is_some(),
            "not acted on yet (no context-window trimming)",
        ),
        (
            "use_agent_orchestrator",
            raw.use_agent_orchestrator.is_some(),
            "parsed, not acted on yet (agent listeners pick agents as docs/agents.md says)",
        ),
        (
            "disable_signals",
            raw.disable_signals.is_some(),
            "has no effect (this data plane runs no signal analysis)",
        ),
    ] {
        if set {
            p.warn(&format!("overrides.{key}"), why);
        }
    }
    if let Some(t) = raw.prompt_target_intent_matching_threshold
        && !(0.0..=1.0).contains(&t)
    {
        p.error(
            "overrides.prompt_target_intent_matching_threshold",
            format!("{t} is out of range (0–1)"),
        );
    }
    out.use_agent_orchestrator = raw.use_agent_orchestrator.unwrap_or(false);
    out.llm_routing_model = raw.llm_routing_model;
    if let Some(n) = raw.orchestrator_model_context_length {
        match u32::try_from(n) {
            Ok(n) if n > 0 => out.orchestrator_model_context_length = n,
            _ => p.error(
                "overrides.orchestrator_model_context_length",
                format!("{n} is out of range (1–{})", u32::MAX),
            ),
        }
    }
    out.upstream_connect_timeout = duration_or(
        raw.upstream_connect_timeout.as_ref(),
        "overrides.upstream_connect_timeout",
        out.upstream_connect_timeout,
        p,
    );
    out.upstream_tls_ca_path = raw.upstream_tls_ca_path.map(PathBuf::from);
    for (key, v, slot) in [
        (
            "agent_orchestration_model",
            raw.agent_orchestration_model,
            &mut out.agent_orchestration_model,
        ),
        (
            "function_calling_model",
            raw.function_calling_model,
            &mut out.function_calling_model,
        ),
    ] {
        if let Some(v) = v {
            // Plano adds its hosted model when this names no provider; there is no hosted
            // model here, so the call fails and the fallback in docs/config.md applies.
            if let Err(e) = model_ref_ok(&v, providers, aliases) {
                p.warn(
                    &format!("overrides.{key}"),
                    &format!("{e}: calls to it fail (configure a provider for it, e.g. `plano/{v}` with a `base_url`)"),
                );
            }
            *slot = Some(v);
        }
    }
    out
}
