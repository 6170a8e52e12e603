//! One inbound listener: accept with a connection limit, optional TLS, HTTP/1.1 and HTTP/2
//! (ALPN on TLS, prior knowledge on plain TCP), header-read timeout against slow clients,
//! and graceful drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::proxy::{self, Edge, ListenerInfo};
use crate::tls::Terminator;

/// Open connections per listener beyond which new ones wait in the accept backlog.
pub const MAX_CONNECTIONS: usize = 10_000;
/// A client must finish sending request headers within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS handshake must finish within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Marks a request in flight (gauge `plano_active_requests{component="edge"}`).
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub(crate) fn new(counter: &Arc<AtomicUsize>) -> Self {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::gauge!(plano_common::metrics::ACTIVE_REQUESTS, "component" => "edge")
            .set(n as f64);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let n = self.0.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        metrics::gauge!(plano_common::metrics::ACTIVE_REQUESTS, "component" => "edge")
            .set(n as f64);
    }
}

pub(crate) struct Bound {
    pub info: Arc<ListenerInfo>,
    pub tcp: TcpListener,
    pub tls: Option<Arc<Terminator>>,
}

impl Bound {
    pub fn local_addr(&self) -> SocketAddr {
        self.tcp.local_addr().unwrap_or(self.info.addr)
    }
}

/// Accept and serve until shutdown; then let open connections finish their requests.
pub(crate) async fn serve(bound: Bound, edge: Arc<Edge>, stop: CancellationToken) {
    let Bound { info, tcp, tls } = bound;
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .max_header_list_size(64 * 1024);
    let builder = Arc::new(builder);
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(listener = %info.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let edge = edge.clone();
        let info = info.clone();
        let tls = tls.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let https = tls.is_some();
            let svc_info = info.clone();
            let service = service_fn(move |req| {
                let edge = edge.clone();
                let info = svc_info.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        proxy::handle(edge, info, peer, https, req).await,
                    )
                }
            });
            match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                Some(t) => {
                    let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, t.accept(stream)).await;
                    match accepted {
                        Ok(Ok(Some(tls_stream))) => {
                            let conn = builder.serve_connection(TokioIo::new(tls_stream), service);
                            let _ = watcher.watch(conn.into_owned()).await;
                        }
                        Ok(Ok(None)) => {} // an ACME validation, answered during the handshake
                        Ok(Err(e)) => {
                            tracing::debug!(listener = %info.name, %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::debug!(listener = %info.name, %peer, "TLS handshake timed out")
                        }
                    }
                }
            }
        });
    }
    drop(tcp);
    tracing::info!(listener = %info.name, "stopped accepting; draining");
    graceful.shutdown().await;
}
