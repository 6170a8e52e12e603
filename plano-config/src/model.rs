//! The parts of the normalised, validated configuration (`Config` itself, which holds them,
//! is in `config.rs`).
//!
//! Everything here is produced by the validation pass (`validate/`) from the raw serde
//! mirror of the YAML (`raw.rs`). Defaults are filled in, references are checked, and no
//! `Option` is left where the runtime needs a value. The runtime treats a `Config` as
//! immutable: a reload builds a new one and swaps it in whole.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use url::Url;

use crate::duration::{duration_str, opt_duration_str};

/// A secret value (API key). `Debug`, `Display` and `Serialize` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call only where it goes on the wire or into a comparison.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerKind {
    /// The egress model listener (`type: model`, legacy `egress_traffic`, or predefined).
    Model,
    Edge,
    Prompt,
    Agent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerOrigin {
    /// From the list form.
    List,
    /// From the legacy `ingress_traffic` / `egress_traffic` object form.
    Legacy,
    /// Not in the file: the predefined egress listener 127.0.0.1:12000.
    Predefined,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    /// `name`; for legacy and predefined listeners: `ingress_traffic`, `egress_traffic`,
    /// or `model_listener`.
    pub name: String,
    pub kind: ListenerKind,
    pub origin: ListenerOrigin,
    /// `address` + `port` (`localhost` is accepted as 127.0.0.1).
    pub addr: SocketAddr,
    /// `timeout`: bounds the whole request. Default 30s (see docs/config.md).
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// Extension `first_token_timeout`: how long a stream may take to produce its first
    /// event. Default: equal to `timeout`.
    #[serde(with = "duration_str")]
    pub first_token_timeout: Duration,
    /// `max_retries` (model listener): retries per target before failing over. Default 2.
    pub max_retries: u32,
    /// Extension `max_body_bytes`: request body limit. Default 10 MiB.
    pub max_body_bytes: usize,
    pub input_filters: Vec<String>,
    pub output_filters: Vec<String>,
    /// `agents` of an `agent` listener.
    pub agents: Vec<ListenerAgent>,
    /// `router` as written (Plano's orchestrator name), when present.
    pub router: Option<String>,
    pub tls: Option<TlsConfig>,
    pub auth: Option<ClientAuth>,
    /// Extension `connections`: connection cap and slow/idle client timeouts.
    pub connections: crate::ConnectionLimits,
}

impl Listener {
    /// Default `timeout` (and `first_token_timeout`) of every listener.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default `max_retries` of the model listener.
    pub const DEFAULT_MAX_RETRIES: u32 = 2;
    /// Default `max_body_bytes`: 10 MiB.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

    /// The model listener used when the file configures none: 127.0.0.1:12000 with the
    /// defaults above. The one place those defaults are written down.
    pub fn predefined_model() -> Self {
        Self {
            name: "model_listener".into(),
            kind: ListenerKind::Model,
            origin: ListenerOrigin::Predefined,
            addr: SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 12000)),
            timeout: Self::DEFAULT_TIMEOUT,
            first_token_timeout: Self::DEFAULT_TIMEOUT,
            max_retries: Self::DEFAULT_MAX_RETRIES,
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            input_filters: Vec::new(),
            output_filters: Vec::new(),
            agents: Vec::new(),
            router: None,
            tls: None,
            auth: None,
            connections: crate::ConnectionLimits::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ListenerAgent {
    pub id: String,
    pub description: Option<String>,
    pub default: bool,
    pub input_filters: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsConfig {
    Static {
        cert_path: PathBuf,
        key_path: PathBuf,
    },
    Acme(AcmeConfig),
}

#[derive(Debug, Clone, Serialize)]
pub struct AcmeConfig {
    pub domains: Vec<String>,
    pub contact: Vec<String>,
    /// Default: Let's Encrypt production.
    pub directory: Url,
    /// Default: `./acme-cache` (see docs/config.md).
    pub cache_dir: PathBuf,
    pub ca_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientAuth {
    pub api_keys: Vec<Secret>,
}

/// How a provider authenticates upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthStyle {
    /// `Authorization: Bearer <key>` (OpenAI family).
    Bearer,
    /// `x-api-key: <key>` plus `anthropic-version`.
    AnthropicKey,
    /// `api-key: <key>` (Azure OpenAI).
    AzureApiKey,
    /// No credentials sent (e.g. a local Ollama).
    None,
    /// AWS Signature Version 4 with credentials from the standard AWS chain (Bedrock
    /// without an `access_key`), in `Provider::region`.
    AwsSigV4,
    /// Google Cloud OAuth access token (Vertex AI without an `access_key`): service
    /// account key file or the workload's metadata server.
    GoogleOAuth,
}

/// The wire API a provider speaks upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderApi {
    /// OpenAI chat completions (and, for OpenAI itself, Responses).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Azure OpenAI: OpenAI wire format on a deployment path with `api-version`.
    AzureOpenAi,
    /// Amazon Bedrock Converse.
    Bedrock,
}

#[derive(Debug, Clone, Serialize)]
pub struct Provider {
    /// Unique name: the provider's `name` key if given, else its `model` string.
    /// Used in hints, metrics labels, health service names and error messages.
    pub name: String,
    /// `model` as configured, e.g. `openai/gpt-4o` or `mistral/*`.
    pub model: String,
    /// Prefix before the first `/`, e.g. `openai`.
    pub prefix: String,
    /// The provider's own model id (after the prefix), `*` for a wildcard.
    pub model_id: String,
    pub wildcard: bool,
    /// `provider_interface` if given, else the table's API for the prefix.
    pub api: ProviderApi,
    /// Scheme, host and port of the upstream (no path), from `base_url` or the table.
    pub base_url: Url,
    /// Path prefix under which the API's routes live (e.g. `/v1`, `/openai/v1`,
    /// `/v1beta/openai`), after the `base_url` path rules of docs/config.md.
    pub path_prefix: String,
    /// Query string appended to every upstream request (Azure's `api-version=…`).
    pub query: Option<String>,
    /// `http_host`: Host header (and TLS SNI) override.
    pub http_host: Option<String>,
    pub access_key: Option<Secret>,
    pub auth: AuthStyle,
    /// Cloud region for signed auth (Bedrock: from `base_url`'s
    /// `bedrock-runtime.<region>.amazonaws.com`, else `AWS_REGION` / `AWS_DEFAULT_REGION`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `passthrough_auth`: forward the client's credentials instead of `access_key`.
    pub passthrough_auth: bool,
    /// `headers`: extra headers sent upstream, in file order.
    pub headers: Vec<(String, String)>,
    pub default: bool,
    /// `hosted_tools: refuse`: a hosted tool (web search, code interpreter, …) this
    /// provider has no equivalent for is a 400 instead of being dropped (the default).
    pub refuse_hosted_tools: bool,
}

impl Provider {
    /// Upstream path for OpenAI chat completions (for `Anthropic`: `/v1/messages`).
    pub fn chat_path(&self) -> String {
        match self.api {
            ProviderApi::Anthropic => format!("{}/messages", self.path_prefix),
            ProviderApi::AzureOpenAi => format!(
                "{}/deployments/{}/chat/completions",
                self.path_prefix, self.model_id
            ),
            ProviderApi::Bedrock => {
                format!("{}/model/{}/converse", self.path_prefix, self.model_id)
            }
            ProviderApi::OpenAi => format!("{}/chat/completions", self.path_prefix),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Alias {
    /// The provider name the alias resolves to (validated to exist), or `prefix/model-id`
    /// for a model of a wildcard provider.
    pub target: String,
    /// Providers tried in order after the target fails with a retryable error.
    pub fallbacks: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    pub id: String,
    pub url: Url,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterKind {
    Http,
    Mcp,
}

#[derive(Debug, Clone, Serialize)]
pub struct Filter {
    pub id: String,
    pub url: Url,
    /// Plano's default is `mcp`.
    pub kind: FilterKind,
    /// MCP tool name; default: the filter id.
    pub tool: String,
    /// Extension `fail_open` (default false: a failing filter blocks the request).
    pub fail_open: bool,
    /// Extension `timeout` (default 5s).
    #[serde(with = "duration_str")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub name: String,
    /// `protocol://endpoint`, e.g. `http://127.0.0.1:8080`.
    pub base_url: Url,
    #[serde(with = "duration_str")]
    pub connect_timeout: Duration,
    /// Extension `timeout` for the whole call (default 30s).
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    pub http_host: Option<String>,
    /// `prefix_affinity`: consistent-hash requests over the endpoint's replicas by the
    /// `x-plano-prefix-hash` header. Default false.
    pub prefix_affinity: bool,
}

impl Endpoint {
    /// Whether `url` addresses this endpoint: same scheme, host and port (the path aside).
    pub fn serves(&self, url: &Url) -> bool {
        self.base_url.scheme() == url.scheme()
            && self.base_url.port_or_known_default() == url.port_or_known_default()
            && self
                .base_url
                .host_str()
                .zip(url.host_str())
                .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    String,
    Int,
    Float,
    Bool,
    List,
    Dict,
}

#[derive(Debug, Clone, Serialize)]
pub struct PromptParameter {
    pub name: String,
    pub description: Option<String>,
    pub required: bool,
    pub ty: ParamType,
    pub format: Option<String>,
    pub enum_values: Vec<serde_json::Value>,
    pub default: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
}

#[derive(Debug, Clone, Serialize)]
pub struct PromptTargetEndpoint {
    /// Name in `endpoints` (validated to exist).
    pub name: String,
    pub path: String,
    pub method: HttpMethod,
    pub http_headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PromptTarget {
    pub name: String,
    pub description: String,
    pub parameters: Vec<PromptParameter>,
    pub endpoint: PromptTargetEndpoint,
    pub system_prompt: Option<String>,
    /// Default true.
    pub auto_llm_dispatch_on_response: bool,
    pub default: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectorValue {
    Exact(String),
    /// `"*"`: one bucket per distinct header value.
    Any,
}

#[derive(Debug, Clone, Serialize)]
pub struct Selector {
    /// Header name, lower-cased.
    pub key: String,
    pub value: SelectorValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    Tokens,
    Requests,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitUnit {
    Second,
    Minute,
    Hour,
    Day,
}

impl LimitUnit {
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            LimitUnit::Second => 1,
            LimitUnit::Minute => 60,
            LimitUnit::Hour => 3600,
            LimitUnit::Day => 86_400,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RateLimit {
    /// `model` as written (a provider name or an alias; validated to resolve).
    pub model: String,
    pub selector: Selector,
    pub kind: LimitKind,
    pub amount: u64,
    pub unit: LimitUnit,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum RateLimitStorage {
    Memory,
    Redis {
        url: Secret,
        /// Default 100ms.
        #[serde(with = "duration_str")]
        timeout: Duration,
        /// Default true: when Redis is unreachable, requests pass.
        fail_open: bool,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Overrides {
    /// Default 5s.
    #[serde(with = "duration_str")]
    pub upstream_connect_timeout: Duration,
    pub upstream_tls_ca_path: Option<PathBuf>,
    pub agent_orchestration_model: Option<String>,
    pub function_calling_model: Option<String>,
    /// `llm_routing_model`: the model that picks a route from `routing_preferences`
    /// (Plano's default is `Plano-Orchestrator`).
    pub llm_routing_model: Option<String>,
    /// `use_agent_orchestrator`. Default false.
    pub use_agent_orchestrator: bool,
    /// `orchestrator_model_context_length`: token budget of the routing/orchestrator
    /// model's prompt. Default 8192.
    pub orchestrator_model_context_length: u32,
}

impl Overrides {
    pub const DEFAULT_ORCHESTRATOR_CONTEXT_LENGTH: u32 = 8192;
}

impl Default for Overrides {
    fn default() -> Self {
        Self {
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_tls_ca_path: None,
            agent_orchestration_model: None,
            function_calling_model: None,
            llm_routing_model: None,
            use_agent_orchestrator: false,
            orchestrator_model_context_length: Self::DEFAULT_ORCHESTRATOR_CONTEXT_LENGTH,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EgressLink {
    /// Where the edge sends LLM calls. Default: `http://` + the model listener's address
    /// (0.0.0.0 / :: mapped to loopback).
    pub url: Url,
    /// Where the edge watches the egress's gRPC health. Default: `http://` + `admin.egress`.
    pub health: Url,
}

#[derive(Debug, Clone, Serialize)]
pub struct Admin {
    /// Default 127.0.0.1:9901.
    pub edge: SocketAddr,
    /// Default 127.0.0.1:9902.
    pub egress: SocketAddr,
}

/// Where Responses conversations (`previous_response_id`) are kept, and their bounds.
/// `ttl` and the size limits are extensions of ours (Plano has only `type` and
/// `connection_string`).
#[derive(Debug, Clone, Serialize)]
pub struct StateStorage {
    #[serde(flatten)]
    pub backend: StateBackend,
    /// How long a stored conversation can be continued. Default 30 days.
    #[serde(with = "duration_str")]
    pub ttl: Duration,
    /// A conversation larger than this (serialised JSON) is not stored (logged, counted).
    /// Default 8 MiB.
    pub max_conversation_bytes: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum StateBackend {
    /// In the egress process; the oldest dropped first beyond either bound.
    Memory {
        /// Default 10,000.
        max_conversations: usize,
        /// Sum of the stored conversations' sizes. Default 128 MiB.
        max_total_bytes: usize,
    },
    Postgres {
        connection_string: Secret,
        /// Connections per egress process. Default 8.
        pool_size: usize,
        /// Bound on each database call (connect included). Default 2s.
        #[serde(with = "duration_str")]
        timeout: Duration,
    },
}

impl Default for StateStorage {
    fn default() -> Self {
        Self {
            backend: StateBackend::Memory {
                max_conversations: 10_000,
                max_total_bytes: 128 << 20,
            },
            ttl: Duration::from_secs(30 * 24 * 3600),
            max_conversation_bytes: 8 << 20,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TracingConfig {
    /// Percentage of requests traced, 0–100.
    pub random_sampling: Option<u32>,
    /// `trace_arch_internal`: also trace Plano's own internal calls. Default false.
    pub trace_arch_internal: bool,
    /// OTLP/gRPC collector (`http://host:port`, no path).
    pub opentracing_grpc_endpoint: Option<Url>,
    pub span_attributes: SpanAttributes,
    pub exporters: Vec<TraceExporter>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SpanAttributes {
    /// Request headers whose name starts with one of these become span attributes.
    pub header_prefixes: Vec<String>,
    /// `static`: attributes added to every span.
    pub fixed: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum TraceExporter {
    Posthog {
        url: Url,
        api_key: Secret,
        distinct_id_header: Option<String>,
        /// Default false.
        capture_messages: bool,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Routing {
    /// `llm_provider` and `model`: the router model, as written.
    pub llm_provider: Option<String>,
    pub model: Option<String>,
    /// `session_ttl_seconds`: lifetime of a session's pinned model. Default 600s.
    #[serde(with = "duration_str")]
    pub session_ttl: Duration,
    /// `session_max_entries`, 1–10000. Default 10000.
    pub session_max_entries: u32,
    pub session_cache: SessionCache,
    /// `session_cache.tenant_header`: header whose value scopes cache keys per tenant.
    pub tenant_header: Option<String>,
    /// `routing_budget`: present = on.
    pub routing_budget: Option<RoutingBudget>,
    /// `route_on_user_only`. Default false.
    pub route_on_user_only: bool,
    /// Extension `timeout`: a router-model call that takes longer falls back to the
    /// requested model. Default 5s.
    #[serde(with = "duration_str")]
    pub timeout: Duration,
}

impl Routing {
    pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(600);
    pub const MAX_SESSION_ENTRIES: u32 = 10_000;
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            llm_provider: None,
            model: None,
            session_ttl: Self::DEFAULT_SESSION_TTL,
            session_max_entries: Self::MAX_SESSION_ENTRIES,
            session_cache: SessionCache::Memory,
            tenant_header: None,
            routing_budget: None,
            route_on_user_only: false,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum SessionCache {
    Memory,
    Redis { url: Secret },
}

#[derive(Debug, Clone, Serialize)]
pub struct RoutingBudget {
    /// 0–100: switching spend allowed, as a percentage of the never-switch baseline.
    pub max_switch_spend_pct: f64,
    /// Default true.
    pub replenish_on_rebind: bool,
    /// 0–1. Default 0.1.
    pub cache_read_discount: f64,
    /// Default false.
    pub record_counterfactual: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoutingPreference {
    pub name: String,
    pub description: String,
    /// Model references (non-empty), each validated to resolve to a configured provider.
    pub models: Vec<String>,
    pub prefer: Option<SelectionPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectionPolicy {
    Cheapest,
    Fastest,
    None,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum MetricsSource {
    Cost {
        provider: CostCatalog,
        /// Catalogue URL override.
        url: Option<Url>,
        #[serde(with = "opt_duration_str")]
        refresh_interval: Option<Duration>,
        /// Catalogue key → Plano model name.
        model_aliases: BTreeMap<String, String>,
    },
    Latency {
        /// Always Prometheus.
        url: Url,
        query: String,
        #[serde(with = "opt_duration_str")]
        refresh_interval: Option<Duration>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CostCatalog {
    #[serde(rename = "digitalocean")]
    DigitalOcean,
    #[serde(rename = "models.dev")]
    ModelsDev,
}

#[derive(Debug, Clone, Serialize)]
pub struct PromptCaching {
    /// Default false.
    pub enabled: bool,
    /// Default true.
    pub session_affinity: bool,
    /// Default true.
    pub inject_cache_control: bool,
    /// Default 1024.
    pub min_prefix_tokens: u32,
    /// `session_ttl_seconds`; `None`: `routing.session_ttl_seconds`.
    #[serde(with = "opt_duration_str")]
    pub session_ttl: Option<Duration>,
}

impl Default for PromptCaching {
    fn default() -> Self {
        Self {
            enabled: false,
            session_affinity: true,
            inject_cache_control: true,
            min_prefix_tokens: 1024,
            session_ttl: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Llm,
    Prompt,
}

#[derive(Debug, Clone, Serialize)]
pub struct PromptGuards {
    /// `input_guards.jailbreak.on_exception.message`.
    pub jailbreak_message: String,
}
