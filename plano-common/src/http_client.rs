//! The one outbound HTTP client builder: hyper-util's pooled client over hyper-rustls
//! (ring), HTTP/1.1 and (optionally) HTTP/2 by ALPN, the web PKI roots plus the CA
//! certificates in `overrides.upstream_tls_ca_path`, and `overrides.upstream_connect_timeout`.
//!
//! Every call either binary makes goes through a client built here: the edge's calls to
//! the egress, agents and prompt-target endpoints, the filter chains, and the egress's
//! calls to providers — so a private CA configured once is trusted everywhere.
//!
//! Two clients share these settings: [`HttpClientBuilder::build_pooled`] ([`PooledClient`],
//! module `pool`: HTTP/1 connections driven by the requests' own tasks, no task per
//! connection or per request) for the hot paths — the egress's provider calls (and its
//! router-model calls and routing sources, which share that client) and the edge's calls
//! to the egress, agents and endpoints —, and [`HttpClientBuilder::build`] (hyper-util's
//! legacy client) for the rest (filter chains, Google tokens).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use hyper_rustls::{HttpsConnector, ResolveServerName};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use plano_config::Config;
use rustls::pki_types::ServerName;

mod pool;

pub use pool::{Body as PooledBody, Client as PooledClient, Error as PooledError};

/// A pooled HTTP(S) client sending bodies of type `B`.
pub type HttpsClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// Why a client could not be built (only the CA file or the TLS setup can fail).
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error("overrides.upstream_tls_ca_path: cannot read {path}: {source}")]
    ReadCa {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("overrides.upstream_tls_ca_path: {path}: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

type SharedResolver = Arc<dyn ResolveServerName + Send + Sync>;

/// Settings of one client. Cheap to clone; [`HttpClientBuilder::build`] may be called
/// for several body types.
#[derive(Clone)]
pub struct HttpClientBuilder {
    connect_timeout: Duration,
    ca_path: Option<PathBuf>,
    http2: bool,
    pool_idle_timeout: Duration,
    pool_max_idle_per_host: usize,
    tcp_keepalive: Option<Duration>,
    server_names: Option<SharedResolver>,
}

impl HttpClientBuilder {
    /// HTTP/1.1 and HTTP/2, web PKI roots only, idle connections kept 90 s.
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            ca_path: None,
            http2: true,
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: usize::MAX,
            tcp_keepalive: None,
            server_names: None,
        }
    }

    /// `overrides.upstream_connect_timeout` and `overrides.upstream_tls_ca_path`.
    pub fn from_config(config: &Config) -> Self {
        Self::new(config.overrides.upstream_connect_timeout)
            .ca_path(config.overrides.upstream_tls_ca_path.clone())
    }

    /// Extra trusted CA certificates (PEM), next to the web PKI roots.
    pub fn ca_path(mut self, path: Option<PathBuf>) -> Self {
        self.ca_path = path;
        self
    }

    /// Offer HTTP/2 by ALPN (on by default); off for peers that only speak HTTP/1.1 well.
    pub fn http2(mut self, on: bool) -> Self {
        self.http2 = on;
        self
    }

    pub fn pool_idle_timeout(mut self, d: Duration) -> Self {
        self.pool_idle_timeout = d;
        self
    }

    pub fn pool_max_idle_per_host(mut self, n: usize) -> Self {
        self.pool_max_idle_per_host = n;
        self
    }

    pub fn tcp_keepalive(mut self, d: Option<Duration>) -> Self {
        self.tcp_keepalive = d;
        self
    }

    /// The TLS server name for a connection (e.g. a provider's `http_host`), instead of
    /// the URL's host.
    pub fn server_names(
        mut self,
        resolver: impl ResolveServerName + Send + Sync + 'static,
    ) -> Self {
        self.server_names = Some(Arc::new(resolver));
        self
    }

    /// The connect timeout and CA path: what makes two clients differ (a cache key).
    pub fn key(&self) -> (Duration, Option<PathBuf>) {
        (self.connect_timeout, self.ca_path.clone())
    }

    /// The pooled client.
    pub fn build<B>(&self) -> Result<HttpsClient<B>, ClientSetupError>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
    {
        let connector = self.connector()?;
        // Without a timer hyper-util never closes an idle pooled connection: it only
        // skips an expired one at checkout, so connections opened for a burst stayed open
        // (and held their buffers) for as long as the process ran.
        Ok(Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .build(connector))
    }

    /// The pooled client whose HTTP/1 connections have no task of their own (module
    /// `pool`); HTTP/2 (by ALPN, HTTPS only) uses hyper's multiplexed connection.
    pub fn build_pooled<B>(&self) -> Result<PooledClient<B>, ClientSetupError>
    where
        B: http_body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Ok(PooledClient::new(
            self.connector()?,
            self.pool_idle_timeout,
            self.pool_max_idle_per_host,
        ))
    }

    fn connector(&self) -> Result<HttpsConnector<HttpConnector>, ClientSetupError> {
        let tls = tls_config(self.ca_path.as_deref())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.connect_timeout));
        http.set_keepalive(self.tcp_keepalive);
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let builder = match &self.server_names {
            Some(r) => builder.with_server_name_resolver(Shared(r.clone())),
            None => builder,
        };
        Ok(if self.http2 {
            builder.enable_all_versions().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        })
    }
}

struct Shared(SharedResolver);

impl ResolveServerName for Shared {
    fn resolve(
        &self,
        uri: &Uri,
    ) -> Result<ServerName<'static>, Box<dyn std::error::Error + Sync + Send>> {
        self.0.resolve(uri)
    }
}

/// rustls client settings: ring, safe default versions, web PKI roots plus the PEM
/// certificates in `ca_path`.
pub fn tls_config(ca_path: Option<&Path>) -> Result<rustls::ClientConfig, ClientSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_path {
        let pem = std::fs::read(path).map_err(|source| ClientSetupError::ReadCa {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |reason: String| ClientSetupError::BadCa {
            path: path.to_path_buf(),
            reason,
        };
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            // Bundles often hold certificates rustls rejects as roots; skip those.
            if roots.add(cert).is_ok() {
                added += 1;
            }
        }
        if added == 0 {
            return Err(bad("holds no usable PEM certificate".into()));
        }
        tracing::debug!(path = %path.display(), added, "extra upstream CA certificates loaded");
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_a_clear_error() {
        let e = tls_config(Some(Path::new("/nonexistent/ca.pem"))).err();
        assert!(matches!(e, Some(ClientSetupError::ReadCa { .. })), "{e:?}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = tls_config(Some(&empty)).err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|m| m.contains("no usable PEM")),
            "{e:?}"
        );
        assert!(tls_config(None).is_ok());
    }

    #[tokio::test]
    async fn idle_pooled_connections_are_closed_after_the_idle_timeout() {
        use http_body_util::{BodyExt, Empty};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A server that answers one keep-alive request, then reports when the client
        // closes the connection (read returns 0).
        let closed = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut buf).await.unwrap();
                assert!(n > 0, "client closed before sending its request");
                seen.extend_from_slice(&buf[..n]);
            }
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            loop {
                if sock.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
            }
        });
        let client: HttpsClient<Empty<bytes::Bytes>> =
            HttpClientBuilder::new(Duration::from_secs(1))
                .http2(false)
                .pool_idle_timeout(Duration::from_millis(200))
                .build()
                .unwrap();
        let res = client
            .get(format!("http://{addr}/").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
        // The client stays alive (its pool too); only the idle timeout can close it.
        tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .expect("the idle pooled connection was never closed")
            .unwrap();
        drop(client);
    }

    #[tokio::test]
    async fn builds_for_any_body_type() {
        let b = HttpClientBuilder::new(Duration::from_secs(1)).http2(false);
        let _full: HttpsClient<http_body_util::Full<bytes::Bytes>> = b.build().unwrap();
        let _empty: HttpsClient<http_body_util::Empty<bytes::Bytes>> = b.build().unwrap();
        assert_eq!(b.key(), (Duration::from_secs(1), None));
    }
}
