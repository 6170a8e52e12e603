//! What requests share: the runtime derived from the current config (swapped whole on a
//! reload; a request keeps the `Arc<Runtime>` it started with) and the circuit breakers
//! (kept across reloads, keyed by provider name).

use std::sync::Arc;

use arc_swap::ArcSwap;
use plano_common::filters::FilterRunner;
use plano_common::health::HealthRegistry;
use plano_config::Config;

use crate::conversations::{self, ConversationStore};
use crate::dispatch::circuit::Circuits;
use crate::dispatch::record::ProviderMetrics;
use crate::providers::upstream_request::Prepared;
use crate::ratelimit::RateLimiter;
use crate::replicas::{self, Replicas, Resolver};
use crate::routing::{self, Router, RoutingSettings};
use crate::upstream::{self, HttpClient, ReplicaNames};

#[derive(Clone)]
pub struct Runtime {
    pub config: Arc<Config>,
    pub client: HttpClient,
    pub limiter: Option<Arc<RateLimiter>>,
    /// Routing by preference, when the config (or the embedder) asks for it.
    pub router: Option<Arc<Router>>,
    /// Per provider (same index as `config.providers`): its headers, parsed once.
    pub prepared: Vec<Prepared>,
    /// Per provider (same index): its metric handles, registered once.
    pub metrics: Vec<ProviderMetrics>,
    /// Per provider (same index): the replicas of its `prefix_affinity` endpoint.
    pub replicas: Vec<Option<Arc<Replicas>>>,
}

/// The router for `config`, unless `set` (from [`AppState::set_routing`]) replaces its
/// settings. `previous` is kept when its settings are the same: its decision and session
/// caches and fetched metrics survive a reload that did not change routing.
fn router_for(
    config: &Config,
    set: Option<&RoutingSettings>,
    client: &HttpClient,
    previous: Option<&Arc<Router>>,
) -> Option<Arc<Router>> {
    let settings = set
        .cloned()
        .or_else(|| routing::settings::from_config(config))?;
    if !routing::settings::active(&settings) {
        return None;
    }
    if let Some(p) = previous.filter(|p| *p.settings() == settings) {
        return Some(p.clone());
    }
    Some(Arc::new(Router::new(settings, client.clone())))
}

/// Every provider's fixed request parts. A provider whose `headers`, `http_host`, key or
/// URL cannot go on the wire stops the config from being used (at start, or on reload,
/// which keeps the old config): requests never discover it.
pub(crate) fn prepare(config: &Config) -> anyhow::Result<Vec<Prepared>> {
    config
        .providers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Prepared::new(p).map_err(|e| anyhow::anyhow!("model_providers[{i}] ({}): {e}", p.name))
        })
        .collect()
}

pub struct AppState {
    runtime: ArcSwap<Runtime>,
    pub circuits: Circuits,
    /// Responses conversations (`previous_response_id`), kept across reloads.
    /// Built from `state_storage` at start; a reload does not change it.
    pub conversations: Arc<ConversationStore>,
    /// The model listener's filter chains (HTTP client and MCP sessions), kept across reloads.
    pub filters: Arc<FilterRunner>,
    /// Routing settings set by the embedder, kept across reloads (they win over the config's).
    routing: std::sync::Mutex<Option<RoutingSettings>>,
    /// How `prefix_affinity` hosts are resolved (the system resolver unless replaced).
    resolver: std::sync::Mutex<Resolver>,
    /// Replica addresses' TLS names, shared by every runtime's client.
    replica_names: ReplicaNames,
}

impl AppState {
    /// The state of a one-provider config (`openai/gpt-5`, the default), for unit tests
    /// that need a real `AppState` without serving.
    #[cfg(test)]
    pub(crate) async fn for_tests() -> Arc<Self> {
        let yaml = "version: v0.4.0\nmodel_providers:\n  - model: openai/gpt-5\n    access_key: k\n    default: true\n";
        let config = Arc::new(plano_config::load_str(yaml, None, &|_| None).unwrap());
        let health = HealthRegistry::new("plano.egress");
        Arc::new(Self::new(config, health).await.unwrap())
    }

    pub async fn new(config: Arc<Config>, health: HealthRegistry) -> anyhow::Result<Self> {
        let circuits = Circuits::new(health);
        let filters = Arc::new(FilterRunner::new(
            &plano_common::http_client::HttpClientBuilder::from_config(&config),
        )?);
        for p in &config.providers {
            circuits.register(&p.name);
        }
        let limiter = if config.ratelimits.is_empty() {
            None
        } else {
            Some(Arc::new(RateLimiter::new(&config).await?))
        };
        let conversations = Arc::new(ConversationStore::new(&config.state_storage)?);
        conversations.prepare().await;
        conversations.spawn_cleanup(conversations::cleanup_interval(config.state_storage.ttl));
        let replica_names = ReplicaNames::default();
        let resolver = Resolver::system();
        let client = upstream::client(&config, &replica_names)?;
        let runtime = Runtime {
            router: router_for(&config, None, &client, None),
            prepared: prepare(&config)?,
            metrics: ProviderMetrics::for_providers(&config.providers),
            replicas: replicas::for_config(&config, &resolver, &replica_names).await,
            client,
            config,
            limiter,
        };
        Ok(Self {
            runtime: ArcSwap::from_pointee(runtime),
            circuits,
            conversations,
            filters,
            routing: std::sync::Mutex::new(None),
            resolver: std::sync::Mutex::new(resolver),
            replica_names,
        })
    }

    fn resolver(&self) -> Resolver {
        self.resolver
            .lock()
            .map_or_else(|_| Resolver::system(), |r| r.clone())
    }

    /// Resolve `prefix_affinity` hosts with `resolver` from now on (across reloads too);
    /// returns once the current config's hosts have been resolved with it.
    pub async fn set_resolver(&self, resolver: Resolver) {
        if let Ok(mut r) = self.resolver.lock() {
            *r = resolver.clone();
        }
        let mut runtime = Runtime::clone(&self.runtime());
        runtime.replicas =
            replicas::for_config(&runtime.config, &resolver, &self.replica_names).await;
        self.runtime.store(Arc::new(runtime));
    }

    /// Route with these settings from now on, whatever the config says.
    pub fn set_routing(&self, settings: RoutingSettings) {
        let mut runtime = Runtime::clone(&self.runtime());
        runtime.router = router_for(&runtime.config, Some(&settings), &runtime.client, None);
        if let Ok(mut set) = self.routing.lock() {
            *set = Some(settings);
        }
        self.runtime.store(Arc::new(runtime));
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Apply a new (already validated) config. Limit counters of unchanged rules survive.
    pub async fn reload(&self, config: Arc<Config>) -> anyhow::Result<()> {
        // Everything that can refuse the config first, before any shared state changes.
        let prepared = prepare(&config)?;
        let old = self.runtime();
        let limiter = match (&old.limiter, config.ratelimits.is_empty()) {
            (_, true) => None,
            (Some(l), false) => {
                l.update(&config).await?;
                Some(l.clone())
            }
            (None, false) => Some(Arc::new(RateLimiter::new(&config).await?)),
        };
        for p in &config.providers {
            self.circuits.register(&p.name);
        }
        let client = upstream::client(&config, &self.replica_names)?;
        let set = self.routing.lock().ok().and_then(|s| s.clone());
        let replicas = replicas::for_config(&config, &self.resolver(), &self.replica_names).await;
        self.runtime.store(Arc::new(Runtime {
            router: router_for(&config, set.as_ref(), &client, old.router.as_ref()),
            prepared,
            metrics: ProviderMetrics::for_providers(&config.providers),
            replicas,
            config,
            client,
            limiter,
        }));
        Ok(())
    }
}
