//! `plano-egress`: the model proxy. One OpenAI-compatible endpoint in front of many LLM
//! providers. Read `dispatch/mod.rs` for the request path.

pub mod conversations;
pub mod dispatch;
pub mod error;
pub mod providers;
pub mod ratelimit;
pub mod replicas;
pub mod routes;
pub mod routing;
pub mod state;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use plano_common::Context;
use plano_common::listen::{self, ListenOptions, Plain};
use plano_common::telemetry::SpanAttributes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::state::AppState;

/// A bound, not yet serving, egress (tests learn the port before traffic starts).
pub struct EgressServer {
    listener: TcpListener,
    state: Arc<AppState>,
    ctx: Context,
}

/// Bind the model listener of the current config.
pub async fn bind(ctx: &Context) -> anyhow::Result<EgressServer> {
    let config = ctx.current_config();
    let addr = config.model_listener.addr;
    for w in &config.warnings {
        tracing::debug!(warning = %w, "config");
    }
    let state = Arc::new(AppState::new(config, ctx.health.clone()).await?);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind the model listener on {addr}"))?;
    Ok(EgressServer {
        listener,
        state,
        ctx: ctx.clone(),
    })
}

impl EgressServer {
    /// Route by preference with these settings (instead of the config's routing keys),
    /// across reloads too.
    pub fn with_routing(self, settings: routing::RoutingSettings) -> Self {
        self.state.set_routing(settings);
        self
    }

    /// Resolve the hosts of `prefix_affinity` endpoints with `resolver` (instead of the
    /// system's), across reloads too; returns once they have been resolved with it.
    pub async fn with_resolver(self, resolver: replicas::Resolver) -> Self {
        self.state.set_resolver(resolver).await;
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serve until shutdown is requested, then stop accepting and let in-flight requests
    /// (streams included) finish; the CLI bounds that drain by the grace period.
    ///
    /// A reload that moves the model listener binds the new address first, then lets the
    /// old socket drain: nothing in flight is dropped, and a bad new address keeps the old
    /// one serving.
    pub async fn serve(self) -> anyhow::Result<()> {
        let EgressServer {
            listener,
            state,
            ctx,
        } = self;
        let servers = TaskTracker::new();
        let app = Arc::new(routes::Routes::new(
            state.clone(),
            Arc::new(SpanAttributes::of(ctx.current_config().tracing.as_ref())),
        ));
        let first = spawn_listener(&servers, listener, app.clone(), &ctx)?;
        tokio::spawn(follow_reloads(
            ctx.clone(),
            state,
            servers.clone(),
            app,
            first,
        ));
        ctx.mark_serving();
        ctx.shutdown.requested().await;
        servers.close();
        // The drain is bounded here too (not only by the CLI) so an in-process caller gets
        // `run` back within the grace period; requests still running past it end at their
        // own listener `timeout`.
        if tokio::time::timeout(ctx.shutdown.grace(), servers.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?ctx.shutdown.grace(), "grace period over: the model listener stops waiting for requests still in flight");
        } else {
            tracing::info!("model listener drained");
        }
        Ok(())
    }
}

/// Serve `listener` until its own token (a child of the shutdown token) is cancelled, with
/// the connection cap and timeouts of the current config's model listener.
fn spawn_listener(
    servers: &TaskTracker,
    listener: TcpListener,
    app: Arc<routes::Routes>,
    ctx: &Context,
) -> anyhow::Result<(SocketAddr, CancellationToken)> {
    let addr = listener.local_addr()?;
    let stop = ctx.shutdown.token().child_token();
    let config = ctx.current_config();
    let opts = ListenOptions::new("egress", &config.model_listener);
    let until = stop.clone();
    // The edge follows a moved listener only once this says the port is served.
    let listener_service = plano_common::health::model_listener_service(addr.port());
    let health = ctx.health.clone();
    health.set(&listener_service, true);
    servers.spawn(async move {
        tracing::info!(%addr, max_connections = opts.max_connections, "model listener serving");
        let handler = move |req: http::Request<listen::RequestBody>, _peer| {
            let app = app.clone();
            async move { app.serve(req).await }
        };
        listen::serve(listener, opts, Plain, until, handler).await;
        health.set(&listener_service, false);
        tracing::info!(%addr, "model listener closed");
    });
    Ok((addr, stop))
}

/// `plano-egress --check`: what the start reads beyond the config itself, by the start's
/// own code — every provider's request parts (headers, keys, URL, and its credential
/// source: a `GOOGLE_APPLICATION_CREDENTIALS` file is read and parsed) and the upstream
/// client (`overrides.upstream_tls_ca_path`).
pub fn check(config: &plano_config::Config) -> anyhow::Result<()> {
    state::prepare(config)?;
    upstream::client(config, &upstream::ReplicaNames::default())?;
    Ok(())
}

/// Serve the egress until `ctx.shutdown` is requested.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    bind(&ctx).await?.serve().await
}

/// Apply each new config published on `ctx.config`: providers, keys, aliases and limits
/// for new requests; a moved model listener is rebound (new socket first, old one drained).
async fn follow_reloads(
    mut ctx: Context,
    state: Arc<AppState>,
    servers: TaskTracker,
    app: Arc<routes::Routes>,
    mut current: (SocketAddr, CancellationToken),
) {
    let mut configured = ctx.current_config().model_listener.addr;
    loop {
        tokio::select! {
            _ = ctx.shutdown.requested() => return,
            changed = ctx.config.changed() => if changed.is_err() { return },
        }
        let config = ctx.current_config();
        let wanted = config.model_listener.addr;
        match state.reload(config).await {
            Ok(()) => tracing::info!("egress applied the new configuration"),
            Err(e) => {
                tracing::error!(error = %e, "egress could not apply the new configuration; the previous one keeps serving");
                continue;
            }
        }
        let addr = wanted;
        if addr == configured {
            continue;
        }
        match TcpListener::bind(addr).await {
            Ok(listener) => match spawn_listener(&servers, listener, app.clone(), &ctx) {
                Ok(next) => {
                    tracing::info!(from = %current.0, to = %next.0, "model listener moved; the old address drains");
                    current.1.cancel();
                    current = next;
                    configured = addr;
                }
                Err(e) => {
                    tracing::error!(%addr, error = %e, "cannot serve the new model listener address")
                }
            },
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot bind the new model listener address; the old one keeps serving")
            }
        }
    }
}
