//! The pooled upstream client both binaries use for their hot calls
//! (`plano_common::http_client::PooledClient`) against HTTPS servers with a private CA:
//! HTTP/1.1 over TLS (pooled, one connection for requests in turn), HTTP/2 when the server
//! picks it by ALPN (one multiplexed connection), HTTP/1.1 only when asked, and the CA
//! path is what makes the certificate trusted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use integration_tests::certs::TestCa;
use plano_common::http_client::{HttpClientBuilder, PooledClient};

struct Server {
    port: u16,
    connections: Arc<AtomicUsize>,
    versions: Arc<Mutex<Vec<http::Version>>>,
}

/// An HTTPS server for 127.0.0.1 offering `alpn` (HTTP/1.1 and HTTP/2 served as the
/// connection negotiated), answering `ok`.
async fn server(ca: &TestCa, alpn: &[&[u8]]) -> Server {
    let leaf = ca.issue(&["127.0.0.1"]).unwrap();
    let certs = rustls_pemfile::certs(&mut leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut leaf.key_pem.as_bytes())
        .unwrap()
        .unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let versions = Arc::new(Mutex::new(Vec::new()));
    let (count, seen) = (connections.clone(), versions.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        seen.lock().unwrap().push(req.version());
                        async {
                            http::Response::builder().body(Full::new(Bytes::from_static(b"ok")))
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    Server {
        port,
        connections,
        versions,
    }
}

fn client(ca: Option<std::path::PathBuf>, http2: bool) -> PooledClient<Full<Bytes>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    HttpClientBuilder::new(Duration::from_secs(2))
        .ca_path(ca)
        .http2(http2)
        .build_pooled()
        .unwrap()
}

async fn get(c: &PooledClient<Full<Bytes>>, port: u16) -> String {
    let req = http::Request::post(format!("https://127.0.0.1:{port}/v1/chat/completions"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let res = c.request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

fn ca_file(ca: &TestCa) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, ca.pem()).unwrap();
    (dir, path)
}

#[tokio::test]
async fn http1_over_tls_with_the_private_ca_reuses_one_connection() {
    let ca = TestCa::new().unwrap();
    let (_dir, path) = ca_file(&ca);
    let s = server(&ca, &[b"http/1.1"]).await;
    let c = client(Some(path), true);
    for _ in 0..3 {
        assert_eq!(get(&c, s.port).await, "ok");
    }
    assert_eq!(s.connections.load(Ordering::SeqCst), 1);
    assert_eq!(*s.versions.lock().unwrap(), vec![http::Version::HTTP_11; 3]);
}

#[tokio::test]
async fn http2_by_alpn_shares_one_connection() {
    let ca = TestCa::new().unwrap();
    let (_dir, path) = ca_file(&ca);
    let s = server(&ca, &[b"h2", b"http/1.1"]).await;
    let c = client(Some(path.clone()), true);
    assert_eq!(get(&c, s.port).await, "ok");
    let (a, b) = tokio::join!(get(&c, s.port), get(&c, s.port));
    assert_eq!((a.as_str(), b.as_str()), ("ok", "ok"));
    assert_eq!(s.connections.load(Ordering::SeqCst), 1);
    assert_eq!(*s.versions.lock().unwrap(), vec![http::Version::HTTP_2; 3]);

    // HTTP/1.1 only when the builder says so, even to a server that offers h2.
    let s1 = server(&ca, &[b"h2", b"http/1.1"]).await;
    let c1 = client(Some(path), false);
    assert_eq!(get(&c1, s1.port).await, "ok");
    assert_eq!(get(&c1, s1.port).await, "ok");
    assert_eq!(s1.connections.load(Ordering::SeqCst), 1);
    assert_eq!(
        *s1.versions.lock().unwrap(),
        vec![http::Version::HTTP_11; 2]
    );
}

#[tokio::test]
async fn without_the_ca_the_handshake_fails_as_a_connect_error() {
    let ca = TestCa::new().unwrap();
    let s = server(&ca, &[b"http/1.1"]).await;
    let c = client(None, true);
    let req = http::Request::get(format!("https://127.0.0.1:{}/", s.port))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let e = c.request(req).await.unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    let chain = plano_common::errors::error_chain(&e);
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");
}
