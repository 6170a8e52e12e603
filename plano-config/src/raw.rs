//! Serde mirror of the YAML: field names and shapes only, unknown keys rejected, no logic.
//! Each top-level section (and each list item) is deserialised on its own so that one bad
//! item does not hide problems in the others.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value as Json;

use crate::duration::RawDuration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyListeners {
    pub ingress_traffic: Option<LegacyListener>,
    pub egress_traffic: Option<LegacyListener>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyListener {
    pub address: Option<String>,
    pub port: Option<u32>,
    pub message_format: Option<String>,
    pub timeout: Option<RawDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListListener {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub address: Option<String>,
    pub port: Option<u32>,
    pub timeout: Option<RawDuration>,
    pub router: Option<String>,
    pub max_retries: Option<u32>,
    pub agents: Option<Vec<RawListenerAgent>>,
    pub input_filters: Option<Vec<String>>,
    pub output_filters: Option<Vec<String>>,
    pub message_format: Option<String>,
    // Extensions.
    pub tls: Option<RawTls>,
    pub auth: Option<RawAuth>,
    pub first_token_timeout: Option<RawDuration>,
    pub max_body_bytes: Option<u64>,
    pub connections: Option<crate::connections::RawConnections>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerAgent {
    pub id: String,
    pub description: Option<String>,
    pub default: Option<bool>,
    pub input_filters: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert_path: Option<String>,
    pub key_path: Option<String>,
    pub acme: Option<RawAcme>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    pub domains: Vec<String>,
    pub contact: Option<Vec<String>>,
    pub directory: Option<String>,
    pub cache_dir: Option<String>,
    pub ca_path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub api_keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub name: Option<String>,
    pub model: String,
    pub access_key: Option<String>,
    pub default: Option<bool>,
    pub base_url: Option<String>,
    pub passthrough_auth: Option<bool>,
    pub http_host: Option<String>,
    pub provider_interface: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub routing_preferences: Option<Vec<RawProviderPreference>>,
    pub hosted_tools: Option<String>,
}

/// Plano's deprecated inline form of a routing preference (v0.3.0).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProviderPreference {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlias {
    pub target: String,
    pub fallbacks: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    pub id: String,
    pub url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilter {
    pub id: String,
    pub url: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub transport: Option<String>,
    pub tool: Option<String>,
    pub fail_open: Option<bool>,
    pub timeout: Option<RawDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    pub endpoint: String,
    pub connect_timeout: Option<RawDuration>,
    pub timeout: Option<RawDuration>,
    pub protocol: Option<String>,
    pub http_host: Option<String>,
    pub prefix_affinity: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPromptTarget {
    pub name: String,
    pub default: Option<bool>,
    pub description: String,
    pub auto_llm_dispatch_on_response: Option<bool>,
    pub parameters: Option<Vec<RawParameter>>,
    pub endpoint: Option<RawTargetEndpoint>,
    pub system_prompt: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParameter {
    pub name: String,
    pub required: Option<bool>,
    pub default: Option<Json>,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(rename = "enum")]
    pub enum_values: Option<Vec<Json>>,
    #[allow(
        dead_code,
        reason = "accepted for Plano compatibility; path parameters are found by name"
    )]
    pub in_path: Option<bool>,
    pub format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTargetEndpoint {
    pub name: String,
    pub path: Option<String>,
    pub http_method: Option<String>,
    pub http_headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub model: String,
    pub selector: RawSelector,
    pub limit: RawLimit,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelector {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub tokens: Option<u64>,
    pub requests: Option<u64>,
    pub unit: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimitStorage {
    #[serde(rename = "type")]
    pub kind: String,
    pub url: Option<String>,
    pub timeout: Option<RawDuration>,
    pub fail_open: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverrides {
    pub prompt_target_intent_matching_threshold: Option<f64>,
    pub optimize_context_window: Option<bool>,
    pub use_agent_orchestrator: Option<bool>,
    pub disable_signals: Option<bool>,
    pub upstream_connect_timeout: Option<RawDuration>,
    pub upstream_tls_ca_path: Option<String>,
    pub llm_routing_model: Option<String>,
    pub agent_orchestration_model: Option<String>,
    pub orchestrator_model_context_length: Option<u64>,
    pub function_calling_model: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    pub random_sampling: Option<u32>,
    pub trace_arch_internal: Option<bool>,
    pub opentracing_grpc_endpoint: Option<String>,
    pub span_attributes: Option<RawSpanAttributes>,
    pub exporters: Option<Vec<RawExporter>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpanAttributes {
    pub header_prefixes: Option<Vec<String>>,
    #[serde(rename = "static")]
    pub fixed: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExporter {
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    pub api_key: String,
    pub distinct_id_header: Option<String>,
    pub capture_messages: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    pub llm_provider: Option<String>,
    pub model: Option<String>,
    pub session_ttl_seconds: Option<u64>,
    pub session_max_entries: Option<u64>,
    pub session_cache: Option<RawSessionCache>,
    pub routing_budget: Option<RawRoutingBudget>,
    pub route_on_user_only: Option<bool>,
    /// Extension: how long a router-model call may take.
    pub timeout: Option<RawDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSessionCache {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub url: Option<String>,
    pub tenant_header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoutingBudget {
    pub max_switch_spend_pct: f64,
    pub replenish_on_rebind: Option<bool>,
    pub cache_read_discount: Option<f64>,
    pub record_counterfactual: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoutingPreference {
    pub name: String,
    pub description: String,
    pub models: Vec<String>,
    pub selection_policy: Option<RawSelectionPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelectionPolicy {
    pub prefer: String,
}

/// One `model_metrics_sources` item; which keys a `type` allows is checked in validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetricsSource {
    #[serde(rename = "type")]
    pub kind: String,
    pub provider: String,
    pub url: Option<String>,
    pub query: Option<String>,
    pub refresh_interval: Option<u64>,
    pub model_aliases: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPromptCaching {
    pub enabled: Option<bool>,
    pub session_affinity: Option<bool>,
    pub inject_cache_control: Option<bool>,
    pub min_prefix_tokens: Option<u64>,
    pub session_ttl_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPromptGuards {
    pub input_guards: RawInputGuards,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInputGuards {
    pub jailbreak: RawJailbreak,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJailbreak {
    pub on_exception: RawOnException,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOnException {
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStateStorage {
    #[serde(rename = "type")]
    pub kind: String,
    pub connection_string: Option<String>,
    // Extensions (ours, not Plano's): see docs/config.md `state_storage`.
    pub ttl: Option<RawDuration>,
    pub max_conversation_bytes: Option<u64>,
    pub max_conversations: Option<u64>,
    pub max_total_bytes: Option<u64>,
    pub pool_size: Option<u64>,
    pub timeout: Option<RawDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEgress {
    pub url: Option<String>,
    pub health: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub edge: Option<String>,
    pub egress: Option<String>,
}
