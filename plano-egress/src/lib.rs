//! `plano-egress`: the model proxy. One OpenAI-compatible endpoint in front of many LLM
//! providers. Read `dispatch/mod.rs` for the request path.

pub mod dispatch;
pub mod error;
pub mod providers;
pub mod ratelimit;
pub mod routes;
pub mod state;
pub mod stream;
pub mod upstream;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::serve::ListenerExt;
use plano_common::Context;
use tokio::net::TcpListener;

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
    let addr = config
        .model_listener()
        .map(|l| l.addr)
        .context("the config has no model listener")?;
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
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serve until shutdown is requested, then stop accepting and let in-flight requests
    /// (streams included) finish; the CLI bounds that drain by the grace period.
    pub async fn serve(self) -> anyhow::Result<()> {
        let EgressServer {
            listener,
            state,
            ctx,
        } = self;
        let addr = listener.local_addr()?;
        tokio::spawn(follow_reloads(ctx.clone(), state.clone()));
        let app = routes::router(state);
        ctx.mark_serving();
        tracing::info!(%addr, "model listener serving");
        let shutdown = ctx.shutdown.clone();
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.requested().await })
            .into_future();
        // The drain is bounded here too (not only by the CLI) so an in-process caller gets
        // `run` back within the grace period; requests still running past it end at their
        // own listener `timeout`.
        let grace_over = async {
            ctx.shutdown.requested().await;
            tokio::time::sleep(ctx.shutdown.grace()).await;
        };
        tokio::select! {
            served = server => {
                served?;
                tracing::info!("model listener drained");
            }
            () = grace_over => {
                tracing::warn!(grace = ?ctx.shutdown.grace(), "grace period over: the model listener stops waiting for requests still in flight");
            }
        }
        Ok(())
    }
}

/// Serve the egress until `ctx.shutdown` is requested.
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    bind(&ctx).await?.serve().await
}

/// Apply each new config published on `ctx.config`. The listener address is fixed at
/// start: a moved model listener needs a restart (logged).
async fn follow_reloads(mut ctx: Context, state: Arc<AppState>) {
    let bound = ctx.current_config().model_listener().map(|l| l.addr);
    loop {
        tokio::select! {
            _ = ctx.shutdown.requested() => return,
            changed = ctx.config.changed() => if changed.is_err() { return },
        }
        let config = ctx.current_config();
        if config.model_listener().map(|l| l.addr) != bound {
            tracing::warn!("the model listener's address changed; it takes effect after a restart");
        }
        match state.reload(config).await {
            Ok(()) => tracing::info!("egress applied the new configuration"),
            Err(e) => {
                tracing::error!(error = %e, "egress could not apply the new configuration; the previous one keeps serving")
            }
        }
    }
}
