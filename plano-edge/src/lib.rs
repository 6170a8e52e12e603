//! `plano-edge`: the inbound proxy. Public listeners with TLS (static or ACME) and client
//! auth, filter chains, forwarding the chat APIs to the egress while watching its gRPC
//! health. Read
//! `proxy.rs` for the request path.

pub mod access_log;
mod agents;
mod auth;
mod body;
mod calls;
mod error;
mod forward;
mod in_flight;
mod listener;
mod llm;
mod prompt_targets;
pub mod proxy;
mod route;
mod state;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use plano_common::Context;
use plano_common::peer::{PeerStatus, watch_peer};
use plano_config::{Listener, TlsConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::listener::Bound;
use crate::proxy::ListenerInfo;
use crate::state::{Edge, Loaded};
use crate::tls::Terminator;

pub use listener::HEADER_READ_TIMEOUT;

/// Every inbound listener bound, not yet serving (tests learn ports first).
pub struct EdgeServer {
    bound: Vec<Bound>,
    edge: Arc<Edge>,
    egress: watch::Receiver<PeerStatus>,
    ctx: Context,
}

pub async fn bind(ctx: &Context) -> anyhow::Result<EdgeServer> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = ctx.current_config();
    // One builder for the edge's outbound calls (egress, agents, filters; endpoints use
    // it with their own connect timeout): `overrides.upstream_tls_ca_path` applies to all.
    let builder = plano_common::http_client::HttpClientBuilder::from_config(&config);
    let client = forward::client(&builder).context("outbound HTTP client")?;
    let egress = watch_peer(
        "egress",
        config.egress.health.as_str(),
        plano_common::health::EGRESS_SERVICE,
        ctx.shutdown.clone(),
    );
    let mut bound = Vec::new();
    for l in config.inbound_listeners() {
        bound.push(bind_listener(l, ctx).await?);
    }
    let filters =
        Arc::new(plano_common::filters::FilterRunner::new(&builder).context("filter HTTP client")?);
    let edge = Arc::new(Edge {
        loaded: ArcSwap::from_pointee(Loaded::new(config)),
        client,
        filters,
        egress: egress.clone(),
        in_flight: Arc::new(AtomicUsize::new(0)),
        endpoint_clients: calls::ClientCache::default(),
    });
    Ok(EdgeServer {
        bound,
        edge,
        egress,
        ctx: ctx.clone(),
    })
}

/// Bind one inbound listener, with its TLS terminator when it has one.
async fn bind_listener(l: &Listener, ctx: &Context) -> anyhow::Result<Bound> {
    let tls = match &l.tls {
        None => None,
        Some(TlsConfig::Static {
            cert_path,
            key_path,
        }) => Some(Arc::new(static_tls(l, cert_path, key_path)?)),
        Some(TlsConfig::Acme(acme)) => Some(Arc::new(
            Terminator::start_acme(&l.name, acme, ctx.shutdown.clone())
                .with_context(|| format!("listener `{}`: ACME", l.name))?,
        )),
    };
    let tcp = TcpListener::bind(l.addr)
        .await
        .with_context(|| format!("cannot bind listener `{}` on {}", l.name, l.addr))?;
    Ok(Bound {
        info: Arc::new(ListenerInfo {
            name: l.name.clone(),
            addr: l.addr,
            metrics: Arc::new(access_log::ListenerMetrics::new(&l.name)),
        }),
        tcp,
        tls,
        opts: plano_common::listen::ListenOptions::new("edge", l),
    })
}

/// How often a new, not yet served `egress.url` is checked again.
const EGRESS_URL_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether the egress reports serving the port of `config.egress.url`.
async fn egress_serves(config: &plano_config::Config) -> bool {
    let Some(port) = config.egress.url.port_or_known_default() else {
        return false;
    };
    let service = plano_common::health::model_listener_service(port);
    match plano_common::peer::check_service(config.egress.health.as_str(), &service).await {
        Ok(serving) => serving,
        Err(e) => {
            tracing::debug!(error = %e, "egress health check of the new egress.url failed");
            false
        }
    }
}

/// A listener being served: where it was configured, how to stop it, its TLS.
struct Running {
    addr: SocketAddr,
    stop: CancellationToken,
    tls: Option<Arc<Terminator>>,
}

impl EdgeServer {
    /// `(listener name, bound address)` for each inbound listener.
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.bound
            .iter()
            .map(|b| (b.info.name.clone(), b.local_addr()))
            .collect()
    }

    /// Serve every listener until shutdown, then drain them.
    pub async fn serve(self) -> anyhow::Result<()> {
        let EdgeServer {
            bound,
            edge,
            egress,
            ctx,
        } = self;
        let tasks = TaskTracker::new();
        let mut running = HashMap::new();
        for b in bound {
            let (name, r) = start(&tasks, b, &edge, &ctx);
            running.insert(name, r);
        }
        tokio::spawn(follow_egress(ctx.clone(), egress));
        tokio::spawn(follow_reloads(ctx.clone(), edge, tasks.clone(), running));
        ctx.shutdown.requested().await;
        tasks.close();
        tasks.wait().await;
        Ok(())
    }
}

fn start(tasks: &TaskTracker, b: Bound, edge: &Arc<Edge>, ctx: &Context) -> (String, Running) {
    tracing::info!(listener = %b.info.name, addr = %b.local_addr(), tls = b.tls.is_some(), "inbound listener serving");
    let stop = ctx.shutdown.token().child_token();
    let running = Running {
        addr: b.info.addr,
        stop: stop.clone(),
        tls: b.tls.clone(),
    };
    let name = b.info.name.clone();
    tasks.spawn(listener::serve(b, edge.clone(), stop));
    (name, running)
}

/// `plano-edge --check`: what the start reads beyond the config itself, by the start's own
/// code — each listener's static TLS certificate and key, and the outbound client's CA
/// file (`overrides.upstream_tls_ca_path`). ACME listeners are not contacted.
pub fn check(config: &plano_config::Config) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    for l in config.inbound_listeners() {
        if let Some(TlsConfig::Static {
            cert_path,
            key_path,
        }) = &l.tls
        {
            static_tls(l, cert_path, key_path)?;
        }
    }
    forward::client(&plano_common::http_client::HttpClientBuilder::from_config(
        config,
    ))
    .context("outbound HTTP client")?;
    Ok(())
}

/// A listener's static TLS certificate and key, loaded (by [`bind`] and [`check`]).
fn static_tls(
    l: &Listener,
    cert_path: &std::path::Path,
    key_path: &std::path::Path,
) -> anyhow::Result<Terminator> {
    Terminator::load_static(&l.name, cert_path, key_path)
        .with_context(|| format!("listener `{}`: TLS", l.name))
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    bind(&ctx).await?.serve().await
}

/// The edge is ready exactly when its listeners are up and the egress is SERVING.
async fn follow_egress(ctx: Context, mut egress: watch::Receiver<PeerStatus>) {
    loop {
        let up = egress.borrow_and_update().up;
        if up && !ctx.shutdown.is_requested() {
            ctx.mark_serving();
        } else {
            ctx.mark_not_serving();
        }
        tokio::select! {
            _ = ctx.shutdown.requested() => { ctx.mark_not_serving(); return; }
            changed = egress.changed() => if changed.is_err() { return },
        }
    }
}

/// New configs: auth keys, timeouts and limits apply to new requests at once; static
/// certificates are re-read; listeners added, removed or moved are bound or drained without
/// touching the others (a new address that cannot be bound is logged and the listener keeps
/// its old one). A new `egress.url` is followed only once the egress's health says it
/// serves that port (`plano.egress.listener.<port>`): until then, and if it never does
/// (the egress could not bind it and kept its old one), requests keep going to the old
/// URL. The egress health URL is fixed at start (logged).
async fn follow_reloads(
    mut ctx: Context,
    edge: Arc<Edge>,
    tasks: TaskTracker,
    mut running: HashMap<String, Running>,
) {
    // A new egress URL not yet confirmed by the egress's health.
    let mut pending: Option<url::Url> = None;
    let mut recheck = tokio::time::interval(EGRESS_URL_RECHECK);
    loop {
        tokio::select! {
            _ = ctx.shutdown.requested() => return,
            changed = ctx.config.changed() => if changed.is_err() { return },
            _ = recheck.tick(), if pending.is_some() => {
                let config = ctx.current_config();
                if pending.as_ref() != Some(&config.egress.url) {
                    pending = None;
                } else if egress_serves(&config).await {
                    tracing::info!(url = %config.egress.url, "the egress serves its new address; following it");
                    pending = None;
                    edge.loaded.store(Arc::new(Loaded::new(config)));
                }
                continue;
            }
        }
        let config = ctx.current_config();
        let followed = edge.loaded.load().config.egress.clone();
        if followed.health != config.egress.health {
            tracing::warn!("`egress.health` changed; it takes effect after a restart");
        }
        let followed = followed.url;
        pending = None;
        if config.egress.url == followed || egress_serves(&config).await {
            edge.loaded.store(Arc::new(Loaded::new(config.clone())));
        } else {
            tracing::warn!(from = %followed, to = %config.egress.url, "the egress does not (yet) serve the new `egress.url`; requests keep going to the old one until it does");
            pending = Some(config.egress.url.clone());
            let mut kept = (*config).clone();
            kept.egress.url = followed;
            edge.loaded.store(Arc::new(Loaded::new(Arc::new(kept))));
        }
        // Removed listeners drain.
        running.retain(|name, r| {
            let keep = config.inbound_listeners().any(|l| &l.name == name);
            if !keep {
                tracing::info!(listener = %name, "listener removed; draining");
                r.stop.cancel();
            }
            keep
        });
        for l in config.inbound_listeners() {
            match running.get(&l.name) {
                Some(r) if r.addr == l.addr => {
                    if let (
                        Some(TlsConfig::Static {
                            cert_path,
                            key_path,
                        }),
                        Some(t),
                    ) = (&l.tls, &r.tls)
                    {
                        t.reload_static(cert_path, key_path);
                    }
                }
                previous => match bind_listener(l, &ctx).await {
                    Ok(b) => {
                        if let Some(old) = previous {
                            tracing::info!(listener = %l.name, from = %old.addr, to = %l.addr, "listener moved; the old address drains");
                            old.stop.cancel();
                        }
                        let (name, r) = start(&tasks, b, &edge, &ctx);
                        running.insert(name, r);
                    }
                    Err(e) => {
                        tracing::error!(listener = %l.name, error = %e, "cannot bind the listener; its previous address (if any) keeps serving")
                    }
                },
            }
        }
        tracing::info!("edge applied the new configuration");
    }
}
