//! An HTTPS upstream for TLS tests: answers every request with a chat completion and
//! records the server name (SNI) the client presented and the `Host` it sent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::certs::Leaf;

/// What one request arrived with: the connection's SNI and the request's `Host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub sni: Option<String>,
    pub host: Option<String>,
}

pub struct TlsUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsUpstream {
    /// Serve HTTP/1.1 over TLS with `leaf` on `addr` (port 0: the OS picks).
    pub async fn start(addr: SocketAddr, leaf: &Leaf) -> anyhow::Result<Self> {
        let certs =
            rustls_pemfile::certs(&mut leaf.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
        let key = rustls_pemfile::private_key(&mut leaf.key_pem.as_bytes())?
            .ok_or_else(|| anyhow::anyhow!("no private key in the leaf"))?;
        let server_tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let recorded = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().map(str::to_string);
                    let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                        let host = req
                            .headers()
                            .get(http::header::HOST)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        if let Ok(mut s) = recorded.lock() {
                            s.push(Seen {
                                sni: sni.clone(),
                                host,
                            });
                        }
                        async {
                            let body = crate::mock::completion("gpt-4o", 64).to_string();
                            http::Response::builder()
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Ok(Self { addr, seen, task })
    }

    /// Every request so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
