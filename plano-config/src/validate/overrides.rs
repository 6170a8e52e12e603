//! `overrides`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

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
    let mut out = Overrides {
        upstream_connect_timeout: Duration::from_secs(5),
        upstream_tls_ca_path: None,
        agent_orchestration_model: None,
        function_calling_model: None,
    };
    if value.is_null() {
        return out;
    }
    let Some(raw) = section::<RawOverrides>(value, "overrides", p) else {
        return out;
    };
    for (key, set) in [
        (
            "prompt_target_intent_matching_threshold",
            raw.prompt_target_intent_matching_threshold.is_some(),
        ),
        (
            "optimize_context_window",
            raw.optimize_context_window.is_some(),
        ),
        (
            "use_agent_orchestrator",
            raw.use_agent_orchestrator.is_some(),
        ),
        ("disable_signals", raw.disable_signals.is_some()),
        ("llm_routing_model", raw.llm_routing_model.is_some()),
        (
            "orchestrator_model_context_length",
            raw.orchestrator_model_context_length.is_some(),
        ),
    ] {
        if set {
            p.warn(&format!("overrides.{key}"), "parsed but not acted on yet");
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
            if let Err(e) = model_ref_ok(&v, providers, aliases) {
                p.error(format!("overrides.{key}"), e);
            }
            *slot = Some(v);
        }
    }
    out
}
