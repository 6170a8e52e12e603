//! `plano-edge`: the inbound proxy. Public listeners with TLS (static or ACME) and client
//! auth, forwarding the chat APIs to the egress while watching its gRPC health. Read
//! `proxy.rs` for the request path.

pub mod access_log;
mod auth;
mod body;
mod forward;
mod listener;
pub mod proxy;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use plano_common::Context;
use plano_common::peer::{PeerStatus, watch_peer};
use plano_config::TlsConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::listener::Bound;
use crate::proxy::{Edge, ListenerInfo};
use crate::tls::Terminator;

pub use listener::{HANDSHAKE_TIMEOUT, HEADER_READ_TIMEOUT, MAX_CONNECTIONS};

/// Every inbound listener bound, not yet serving (tests learn ports first).
pub struct EdgeServer {
    bound: Vec<Bound>,
    terminators: HashMap<String, Arc<Terminator>>,
    edge: Arc<Edge>,
    egress: watch::Receiver<PeerStatus>,
    ctx: Context,
}

pub async fn bind(ctx: &Context) -> anyhow::Result<EdgeServer> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = ctx.current_config();
    let client = forward::client(config.overrides.upstream_connect_timeout)
        .context("egress client TLS setup")?;
    let egress = watch_peer(
        "egress",
        config.egress.health.as_str(),
        plano_common::health::EGRESS_SERVICE,
        ctx.shutdown.clone(),
    );
    let mut bound = Vec::new();
    let mut terminators = HashMap::new();
    for l in config.inbound_listeners() {
        let tls = match &l.tls {
            None => None,
            Some(TlsConfig::Static {
                cert_path,
                key_path,
            }) => Some(Arc::new(
                Terminator::load_static(&l.name, cert_path, key_path)
                    .with_context(|| format!("listener `{}`: TLS", l.name))?,
            )),
            Some(TlsConfig::Acme(acme)) => Some(Arc::new(
                Terminator::start_acme(&l.name, acme, ctx.shutdown.clone())
                    .with_context(|| format!("listener `{}`: ACME", l.name))?,
            )),
        };
        if let Some(t) = &tls {
            terminators.insert(l.name.clone(), t.clone());
        }
        let tcp = TcpListener::bind(l.addr)
            .await
            .with_context(|| format!("cannot bind listener `{}` on {}", l.name, l.addr))?;
        bound.push(Bound {
            info: Arc::new(ListenerInfo {
                name: l.name.clone(),
                addr: l.addr,
            }),
            tcp,
            tls,
        });
    }
    let edge = Arc::new(Edge {
        config: ArcSwap::new(config),
        client,
        egress: egress.clone(),
        in_flight: Arc::new(AtomicUsize::new(0)),
    });
    Ok(EdgeServer {
        bound,
        terminators,
        edge,
        egress,
        ctx: ctx.clone(),
    })
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
            terminators,
            edge,
            egress,
            ctx,
        } = self;
        for b in &bound {
            tracing::info!(listener = %b.info.name, addr = %b.local_addr(), tls = b.tls.is_some(), "inbound listener serving");
        }
        tokio::spawn(follow_egress(ctx.clone(), egress));
        tokio::spawn(follow_reloads(ctx.clone(), edge.clone(), terminators));
        let tasks: Vec<_> = bound
            .into_iter()
            .map(|b| tokio::spawn(listener::serve(b, edge.clone(), ctx.shutdown.clone())))
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    }
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

/// New configs: auth keys, timeouts, limits and the egress URL apply to new requests at
/// once; static certificates are re-read. Listener addresses and the egress health URL are
/// fixed at start (a restart applies them; logged).
async fn follow_reloads(
    mut ctx: Context,
    edge: Arc<Edge>,
    terminators: HashMap<String, Arc<Terminator>>,
) {
    loop {
        tokio::select! {
            _ = ctx.shutdown.requested() => return,
            changed = ctx.config.changed() => if changed.is_err() { return },
        }
        let config = ctx.current_config();
        let old = edge.config.load_full();
        let addrs = |c: &plano_config::Config| {
            c.inbound_listeners()
                .map(|l| (l.name.clone(), l.addr))
                .collect::<Vec<_>>()
        };
        if addrs(&old) != addrs(&config) || old.egress.health != config.egress.health {
            tracing::warn!(
                "inbound listener addresses or the egress health URL changed; they take effect after a restart"
            );
        }
        for l in config.inbound_listeners() {
            if let (
                Some(TlsConfig::Static {
                    cert_path,
                    key_path,
                }),
                Some(t),
            ) = (&l.tls, terminators.get(&l.name))
            {
                t.reload_static(cert_path, key_path);
            }
        }
        edge.config.store(config);
        tracing::info!("edge applied the new configuration");
    }
}
