//! One inbound listener: the shared accept loop and connection limits of
//! `plano_common::listen` (cap, idle shedding, header/body/keep-alive timeouts, drain), with
//! optional TLS (ALPN picks HTTP/2 or HTTP/1.1; plain TCP detects HTTP/2 prior knowledge).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use plano_common::listen::{self, Handshake, ListenOptions, Plain};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::proxy::{self, ListenerInfo};
use crate::state::Edge;
use crate::tls::Terminator;

/// Default time a client has to finish its TLS handshake and first request head (the
/// listener's `connections.header_read_timeout`).
pub const HEADER_READ_TIMEOUT: Duration = plano_config::DEFAULT_HEADER_READ_TIMEOUT;

pub(crate) struct Bound {
    pub info: Arc<ListenerInfo>,
    pub tcp: TcpListener,
    pub tls: Option<Arc<Terminator>>,
    pub opts: ListenOptions,
}

impl Bound {
    pub fn local_addr(&self) -> SocketAddr {
        self.tcp.local_addr().unwrap_or(self.info.addr)
    }
}

/// TLS termination as the shared listener's handshake step.
struct Tls {
    terminator: Arc<Terminator>,
    listener: String,
}

impl Handshake for Tls {
    type Io = TlsStream<TcpStream>;

    async fn handshake(&self, tcp: TcpStream, peer: SocketAddr) -> Option<Self::Io> {
        match self.terminator.accept(tcp).await {
            Ok(Some(tls)) => Some(tls),
            Ok(None) => None, // an ACME validation, answered during the handshake
            Err(e) => {
                tracing::debug!(listener = %self.listener, %peer, error = %e, "TLS handshake failed");
                None
            }
        }
    }
}

/// Accept and serve until shutdown; then let open connections finish their requests.
pub(crate) async fn serve(bound: Bound, edge: Arc<Edge>, stop: CancellationToken) {
    let Bound {
        info,
        tcp,
        tls,
        opts,
    } = bound;
    let https = tls.is_some();
    let name = info.name.clone();
    let handler = move |req, peer| proxy::handle(edge.clone(), info.clone(), peer, https, req);
    match tls {
        None => listen::serve(tcp, opts, Plain, stop, handler).await,
        Some(terminator) => {
            let tls = Tls {
                terminator,
                listener: name,
            };
            listen::serve(tcp, opts, tls, stop, handler).await
        }
    }
}
