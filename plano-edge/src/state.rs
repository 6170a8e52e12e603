//! What every request on every listener shares: the current config (with what the edge
//! derives from it once per load), the HTTP clients, the filter runner, the egress's health
//! and the in-flight count.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use arc_swap::ArcSwap;
use plano_common::filters::FilterRunner;
use plano_common::peer::PeerStatus;
use plano_config::Config;
use tokio::sync::watch;

use crate::calls::ClientCache;
use crate::forward::{Client, EgressTarget};

/// What every request on every listener shares.
pub struct Edge {
    /// The config requests follow; a reload swaps it whole, a request keeps the one it
    /// started with.
    pub loaded: ArcSwap<Loaded>,
    pub client: Client,
    /// Filter chains (HTTP client and MCP sessions shared by every listener and agent).
    pub filters: Arc<FilterRunner>,
    pub egress: watch::Receiver<PeerStatus>,
    pub in_flight: Arc<AtomicUsize>,
    /// Clients for prompt-target endpoints (by connect timeout).
    pub endpoint_clients: ClientCache,
}

/// A config the edge follows and what it derives from it, built once per (re)load.
pub struct Loaded {
    pub config: Arc<Config>,
    /// Where requests are forwarded: `config.egress.url`, parsed.
    pub(crate) egress: EgressTarget,
}

impl Loaded {
    pub fn new(config: Arc<Config>) -> Self {
        let egress = EgressTarget::new(&config.egress.url);
        Self { config, egress }
    }
}
