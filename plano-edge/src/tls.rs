//! TLS termination on inbound listeners: a static certificate (re-read on reload) or ACME.
//!
//! Both go through one accept path: read the ClientHello, then pick the server config.
//! With ACME, a ClientHello offering only `acme-tls/1` is a TLS-ALPN-01 validation from the
//! CA: it gets the challenge certificate and the connection ends after the handshake, so
//! issuance needs no extra port. Every other handshake gets the current certificate.
//!
//! `plano_tls_certificate_expiry_timestamp_seconds{listener}` is set from the leaf's
//! notAfter whenever a new certificate is loaded (static) or first served (ACME).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use metrics::gauge;
use plano_common::Shutdown;
use plano_common::metrics::TLS_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS;
use plano_config::AcmeConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

/// Protocols offered to clients, in preference order.
const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {kind} file {path}: {source}")]
    Read {
        kind: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("certificate and key are not usable together: {0}")]
    Rustls(#[from] rustls::Error),
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How one listener terminates TLS.
pub(crate) enum Terminator {
    Static {
        listener: String,
        current: ArcSwap<ServerConfig>,
    },
    Acme {
        /// Normal traffic: ALPN h2/http1.1, certificate from the ACME resolver.
        serving: Arc<ServerConfig>,
        /// TLS-ALPN-01 validations: ALPN `acme-tls/1`, challenge certificate.
        challenge: Arc<ServerConfig>,
    },
}

impl fmt::Debug for Terminator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Terminator::Static { listener, .. } => write!(f, "Terminator::Static({listener})"),
            Terminator::Acme { .. } => f.write_str("Terminator::Acme"),
        }
    }
}

impl Terminator {
    /// A static terminator from PEM files; fails if they cannot be used.
    pub(crate) fn load_static(listener: &str, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Terminator::Static {
            listener: listener.to_string(),
            current: ArcSwap::new(static_config(listener, cert, key)?),
        })
    }

    /// Re-read a static certificate. On failure the old one keeps serving.
    pub(crate) fn reload_static(&self, cert: &Path, key: &Path) {
        if let Terminator::Static { listener, current } = self {
            match static_config(listener, cert, key) {
                Ok(config) => {
                    current.store(config);
                    tracing::info!(listener = %listener, cert = %cert.display(), "TLS certificate reloaded");
                }
                Err(e) => tracing::warn!(
                    listener = %listener,
                    error = %e,
                    "TLS certificate reload failed; the previous certificate keeps serving"
                ),
            }
        }
    }

    /// Start ACME for a listener: certificates are ordered, cached and renewed by a
    /// background task that ends on shutdown.
    pub(crate) fn start_acme(
        listener: &str,
        acme: &AcmeConfig,
        shutdown: Shutdown,
    ) -> Result<Self, TlsError> {
        let client = Arc::new(acme_client_config(acme.ca_path.as_deref())?);
        let mut state = rustls_acme::AcmeConfig::new_with_client_config(&acme.domains, client)
            .contact(&acme.contact)
            .cache(rustls_acme::caches::DirCache::new(acme.cache_dir.clone()))
            .directory(acme.directory.as_str())
            .state();
        let challenge = state.challenge_rustls_config_with_provider(provider());
        let resolver = Arc::new(ObservedResolver {
            inner: state.resolver(),
            listener: listener.to_string(),
            last: Mutex::new(None),
        });
        let mut serving = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        serving.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();

        let name = listener.to_string();
        let domains = acme.domains.join(",");
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.requested() => break,
                    event = state.next() => match event {
                        Some(Ok(ok)) => tracing::info!(listener = %name, domains = %domains, event = ?ok, "ACME"),
                        Some(Err(err)) => tracing::warn!(listener = %name, domains = %domains, error = %err, "ACME failed; will retry"),
                        None => break,
                    },
                }
            }
        });
        Ok(Terminator::Acme {
            serving: Arc::new(serving),
            challenge,
        })
    }

    /// TLS handshake. `Ok(None)` when the connection was an ACME validation, now answered.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> io::Result<Option<TlsStream<TcpStream>>> {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
        let config = match self {
            Terminator::Static { current, .. } => current.load_full(),
            Terminator::Acme { serving, challenge } => {
                if rustls_acme::is_tls_alpn_challenge(&start.client_hello()) {
                    start.into_stream(challenge.clone()).await?;
                    return Ok(None);
                }
                serving.clone()
            }
        };
        start.into_stream(config).await.map(Some)
    }
}

fn static_config(
    listener: &str,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(cert_path)?;
    let key = read_key(key_path)?;
    if let Some(leaf) = certs.first() {
        record_expiry(listener, leaf);
    }
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn read(kind: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        kind,
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read("certificate", path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            kind: "certificate",
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("key", path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| TlsError::Read {
            kind: "key",
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey {
            path: path.to_path_buf(),
        })
}

/// The client config rustls-acme uses to talk to the ACME directory: the public web roots,
/// plus `ca_path` when given (private or test CAs such as pebble).
fn acme_client_config(ca_path: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_path {
        for cert in read_certs(path)? {
            roots.add(cert)?;
        }
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Set the expiry gauge from a leaf certificate's notAfter.
pub(crate) fn record_expiry(listener: &str, leaf: &CertificateDer<'_>) {
    match not_after(leaf) {
        Some(ts) => {
            gauge!(TLS_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS, "listener" => listener.to_string())
                .set(ts as f64)
        }
        None => {
            tracing::warn!(listener = %listener, "could not read the certificate's expiry date")
        }
    }
}

/// notAfter of a DER certificate, in Unix seconds.
pub fn not_after(der: &[u8]) -> Option<i64> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, cert)| cert.validity().not_after.timestamp())
}

/// Wraps the ACME resolver to notice when a new certificate starts being served.
#[derive(Debug)]
struct ObservedResolver {
    inner: Arc<rustls_acme::ResolvesServerCertAcme>,
    listener: String,
    last: Mutex<Option<Arc<CertifiedKey>>>,
}

impl ResolvesServerCert for ObservedResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let key = self.inner.resolve(hello)?;
        if let Ok(mut last) = self.last.lock()
            && last.as_ref().is_none_or(|l| !Arc::ptr_eq(l, &key))
        {
            if let Some(leaf) = key.cert.first() {
                record_expiry(&self.listener, leaf);
            }
            *last = Some(key.clone());
        }
        Some(key)
    }
}
