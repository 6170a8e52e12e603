//! The admin port: HTTP `/metrics`, `/healthz`, `/readyz` and gRPC `grpc.health.v1.Health`
//! (Check and Watch) on one socket, HTTP/1.1 and h2c.
//!
//! One port keeps probes, scrapes and the edge's health watch on a single address per
//! binary. gRPC requests are told apart by their path (`/grpc.health.v1.Health/...`); any
//! other request with `content-type: application/grpc*` gets a gRPC `UNIMPLEMENTED` instead
//! of an HTTP 404 so gRPC clients see a status they understand.
//!
//! The accept loop is ours rather than `axum::serve` because gRPC Watch streams never end
//! on their own: on stop we send GOAWAY, give open streams a short linger, then cut them.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::health::HealthRegistry;
use crate::runtime::Context;

/// How long open connections (Watch streams, a scrape in progress) get after a stop.
const LINGER: Duration = Duration::from_secs(1);
/// Bound on receiving an HTTP/1 request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A running admin server. Dropping it does not stop it; cancel its token (or the context's
/// shutdown it was bound with) and optionally await [`AdminServer::stopped`].
pub struct AdminServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Resolves once the accept loop ended and open connections were closed.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Bind the admin port for `ctx`; it stops when `ctx.shutdown` is triggered.
///
/// The CLI instead uses [`bind_with`] with its own token so the admin port keeps answering
/// (NOT_SERVING) while requests drain.
pub async fn bind(addr: SocketAddr, ctx: &Context) -> io::Result<AdminServer> {
    bind_with(
        addr,
        ctx.health.clone(),
        ctx.metrics.clone(),
        ctx.shutdown.token().clone(),
    )
    .await
}

/// Bind the admin port with explicit parts; it stops when `stop` is cancelled.
pub async fn bind_with(
    addr: SocketAddr,
    health: HealthRegistry,
    metrics: PrometheusHandle,
    stop: CancellationToken,
) -> io::Result<AdminServer> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let app = router(health, metrics);
    let task = tokio::spawn(serve(listener, app, stop));
    tracing::info!(%local_addr, "admin port listening (HTTP /metrics /healthz /readyz, gRPC health)");
    Ok(AdminServer { local_addr, task })
}

/// The admin routes: HTTP endpoints plus the gRPC health service.
pub fn router(health: HealthRegistry, metrics: PrometheusHandle) -> Router {
    let http = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AdminState {
            health: health.clone(),
            metrics,
        })
        .fallback(fallback);
    tonic::service::Routes::from(http)
        .add_service(health.grpc_service())
        .prepare()
        .into_axum_router()
}

#[derive(Clone)]
struct AdminState {
    health: HealthRegistry,
    metrics: PrometheusHandle,
}

async fn metrics_text(State(s): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AdminState>) -> Response {
    let services: serde_json::Map<String, serde_json::Value> = s
        .health
        .snapshot()
        .into_iter()
        .map(|(name, up)| {
            let status = if up { "SERVING" } else { "NOT_SERVING" };
            (name, serde_json::Value::from(status))
        })
        .collect();
    let ready = s.health.is_ready();
    let body = serde_json::json!({ "ready": ready, "services": services });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn fallback(headers: HeaderMap) -> Response {
    let is_grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if is_grpc {
        let (parts, ()) = tonic::Status::unimplemented("no such gRPC service on the admin port")
            .into_http::<()>()
            .into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    (
        StatusCode::NOT_FOUND,
        "not found: the admin port serves /metrics, /healthz, /readyz and grpc.health.v1.Health\n",
    )
        .into_response()
}

async fn serve(listener: TcpListener, app: Router, stop: CancellationToken) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that opens a connection and never finishes its request headers must not
    // hold a slot forever (the admin port is often reachable from the whole pod network).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(ok) => ok,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "admin port: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let svc = TowerToHyperService::new(app.clone());
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .into_owned();
                let conn = graceful.watch(conn);
                conns.spawn(async move {
                    // A client hanging up mid-request is not worth a log line on the admin port.
                    let _ = conn.await;
                });
            }
            // Reap finished connections so the set does not grow with every probe.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    if tokio::time::timeout(LINGER, graceful.shutdown())
        .await
        .is_err()
    {
        conns.abort_all();
    }
    while conns.join_next().await.is_some() {}
}
