//! The normalised, validated configuration.
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

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// `version` as written (v0.1 … v0.4.0).
    pub version: String,
    /// File the config was loaded from, when it came from a file.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Every listener. Exactly one has `kind == Model` (the predefined 127.0.0.1:12000 one
    /// when the file configures none).
    pub listeners: Vec<Listener>,
    /// `model_providers` (or the deprecated `llm_providers`), in file order.
    pub providers: Vec<Provider>,
    /// `model_aliases`, keyed by alias name.
    pub aliases: BTreeMap<String, Alias>,
    /// Every model name a request may use (providers, bare ids, wildcards, aliases),
    /// resolved once at validation (`resolve.rs`); the egress selects through it.
    #[serde(skip)]
    pub models: crate::resolve::ModelTable,
    /// Top-level `agents` (id → url).
    pub agents: Vec<Agent>,
    /// Top-level `filters`.
    pub filters: Vec<Filter>,
    /// `endpoints`, keyed by name.
    pub endpoints: BTreeMap<String, Endpoint>,
    pub prompt_targets: Vec<PromptTarget>,
    pub system_prompt: Option<String>,
    pub ratelimits: Vec<RateLimit>,
    pub ratelimit_storage: RateLimitStorage,
    pub overrides: Overrides,
    pub egress: EgressLink,
    pub admin: Admin,
    pub state_storage: StateStorage,
    pub tracing: Option<TracingConfig>,
    /// One line per key that is parsed but not acted on yet, each naming its key path.
    /// The binaries log each once at start-up.
    pub warnings: Vec<String>,
}

impl Config {
    /// The egress (model) listener; validation guarantees there is exactly one.
    pub fn model_listener(&self) -> Option<&Listener> {
        self.listeners
            .iter()
            .find(|l| l.kind == ListenerKind::Model)
    }

    /// Listeners served by the edge (`edge`, `prompt`, `agent`).
    pub fn inbound_listeners(&self) -> impl Iterator<Item = &Listener> {
        self.listeners
            .iter()
            .filter(|l| l.kind != ListenerKind::Model)
    }

    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name == name)
    }

    pub fn default_provider(&self) -> Option<&Provider> {
        self.providers.iter().find(|p| p.default)
    }

    pub fn filter(&self, id: &str) -> Option<&Filter> {
        self.filters.iter().find(|f| f.id == id)
    }

    pub fn agent(&self, id: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.id == id)
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
    /// `passthrough_auth`: forward the client's credentials instead of `access_key`.
    pub passthrough_auth: bool,
    /// `headers`: extra headers sent upstream, in file order.
    pub headers: Vec<(String, String)>,
    pub default: bool,
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
    pub random_sampling: Option<u32>,
    pub opentracing_grpc_endpoint: Option<String>,
}

/// Serialises durations as humantime strings (`30s`, `500ms`) for readable snapshots.
pub(crate) mod duration_str {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}
