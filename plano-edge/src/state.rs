//! What every request on every listener shares: the current config, the HTTP clients, the
//! filter runner, the egress's health and the in-flight count.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use arc_swap::ArcSwap;
use plano_common::filters::FilterRunner;
use plano_common::peer::PeerStatus;
use plano_config::Config;
use tokio::sync::watch;

use crate::calls::ClientCache;
use crate::forward::Client;

/// What every request on every listener shares.
pub struct Edge {
    pub config: ArcSwap<Config>,
    pub client: Client,
    /// Filter chains (HTTP client and MCP sessions shared by every listener and agent).
    pub filters: Arc<FilterRunner>,
    pub egress: watch::Receiver<PeerStatus>,
    pub in_flight: Arc<AtomicUsize>,
    /// Clients for prompt-target endpoints (by connect timeout).
    pub endpoint_clients: ClientCache,
}
