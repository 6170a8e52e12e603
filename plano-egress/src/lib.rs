//! `plano-egress`: the model proxy.

pub mod providers;
pub mod ratelimit;

use plano_common::Context;

/// Serve the egress until `ctx.shutdown` is requested.
///
/// Minimal placeholder from the `common` branch so the binary and the admin plane can be
/// exercised: it reports SERVING and waits. The egress branch replaces it with the real
/// model listener (same signature).
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    ctx.mark_serving();
    ctx.shutdown.requested().await;
    Ok(())
}
