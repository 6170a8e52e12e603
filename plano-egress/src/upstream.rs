//! The one pooled upstream client: hyper-util over hyper-rustls (ring), HTTP/1.1 and
//! HTTP/2 chosen by ALPN, web PKI roots plus `overrides.upstream_tls_ca_path`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use plano_config::Config;

pub type UpstreamBody = BoxBody<Bytes, hyper::Error>;
pub type HttpClient =
    Client<hyper_rustls::HttpsConnector<HttpConnector>, http_body_util::Full<Bytes>>;

/// Build the client from the config's overrides.
pub fn client(config: &Config) -> anyhow::Result<HttpClient> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &config.overrides.upstream_tls_ca_path {
        let pem = std::fs::read(path).map_err(|e| {
            anyhow::anyhow!(
                "overrides.upstream_tls_ca_path: cannot read {}: {e}",
                path.display()
            )
        })?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| {
                anyhow::anyhow!("overrides.upstream_tls_ca_path: {}: {e}", path.display())
            })?;
            // Bundles often hold certificates rustls rejects as roots; skip those.
            if roots.add(cert).is_ok() {
                added += 1;
            }
        }
        tracing::debug!(path = %path.display(), added, "extra upstream CA certificates loaded");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.overrides.upstream_connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(connector))
}
