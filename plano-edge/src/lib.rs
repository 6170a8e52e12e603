//! `plano-edge`: the inbound proxy.

use plano_common::Context;

/// Serve the edge until `ctx.shutdown` is requested.
///
/// Minimal placeholder from the `common` branch so the binary and the admin plane can be
/// exercised: it reports SERVING and waits. The edge branch replaces it with the real
/// inbound listeners (same signature).
pub async fn run(ctx: Context) -> anyhow::Result<()> {
    ctx.mark_serving();
    ctx.shutdown.requested().await;
    Ok(())
}
