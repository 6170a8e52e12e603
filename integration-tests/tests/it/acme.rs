//! ACME end to end: Debian's `pebble` issues a certificate to the edge over TLS-ALPN-01 on
//! the listener itself (with `pebble-challtestsrv` as its DNS), then a client completes a
//! TLS handshake trusting pebble's root.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use integration_tests::harness::Edge;

use crate::support::free_port;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(cmd: &mut Command) -> Killed {
    let program = format!("{:?}", cmd.get_program());
    Killed(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {program} ({e}); install Debian's `pebble` package (.ci/run does)"
                )
            }),
    )
}

async fn wait_tcp(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {addr}");
}

#[tokio::test]
async fn a_certificate_is_issued_by_pebble_and_served() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();

    // Pebble's own HTTPS certificate, from a throwaway CA we trust for the directory.
    let ca = integration_tests::certs::TestCa::new().unwrap();
    let pebble = ca.issue(&["localhost", "127.0.0.1"]).unwrap();
    let ca_path = dir.path().join("pebble-ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(dir.path().join("pebble.pem"), &pebble.cert_pem).unwrap();
    std::fs::write(dir.path().join("pebble.key"), &pebble.key_pem).unwrap();

    let (dir_port, mgmt_port, tls_port) = (free_port(), free_port(), free_port());
    let (dns_port, chall_mgmt, http_port) = (free_udp_port(), free_port(), free_port());
    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{dir_port}"),
        "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
        "certificate": dir.path().join("pebble.pem"),
        "privateKey": dir.path().join("pebble.key"),
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false
    }});
    let config_path = dir.path().join("pebble.json");
    std::fs::write(&config_path, config.to_string()).unwrap();

    let _dns = spawn(Command::new("pebble-challtestsrv").args([
        "-defaultIPv4",
        "127.0.0.1",
        "-defaultIPv6",
        "",
        "-dns01",
        &format!("127.0.0.1:{dns_port}"),
        "-http01",
        "",
        "-https01",
        "",
        "-tlsalpn01",
        "",
        "-management",
        &format!("127.0.0.1:{chall_mgmt}"),
    ]));
    let _pebble = spawn(
        Command::new("pebble")
            .args([
                "-config",
                &config_path.to_string_lossy(),
                "-dnsserver",
                &format!("127.0.0.1:{dns_port}"),
            ])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0"),
    );
    wait_tcp(SocketAddr::from(([127, 0, 0, 1], dir_port))).await;

    let domain = "edge.plano.test";
    let yaml = format!(
        r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o
    default: true
listeners:
  - type: edge
    name: public
    address: 127.0.0.1
    port: {tls_port}
    tls:
      acme:
        domains: [{domain}]
        contact: [mailto:ops@plano.test]
        directory: https://localhost:{dir_port}/dir
        cache_dir: {cache}
        ca_path: {ca}
"#,
        cache = dir.path().join("acme-cache").display(),
        ca = ca_path.display(),
    );
    // No egress runs: the handshake is what is tested (requests would get 503).
    let nowhere = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let edge = Edge::start_with(&yaml, &[], (nowhere, nowhere), true)
        .await
        .unwrap();

    // pebble's issuing root, from its management interface.
    let mgmt = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let target = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        let root = mgmt
            .get(format!("https://localhost:{mgmt_port}/roots/0"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes()).unwrap())
            .resolve(domain, target)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        match client
            .get(format!("https://{domain}:{tls_port}/v1/models"))
            .send()
            .await
        {
            Ok(r) => break r.status(),
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no certificate issued within 60s: {e}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    assert_eq!(
        status, 503,
        "TLS works; the request itself waits for an egress"
    );
    let metrics = edge.ctx.metrics.render();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("plano_tls_certificate_expiry_timestamp_seconds{listener=\"public\"}")
        })
        .unwrap_or_else(|| panic!("no expiry gauge:\n{metrics}"));
    let expiry: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        expiry > now + 86_400.0,
        "certificate valid for more than a day: {line}"
    );
    assert!(
        dir.path()
            .join("acme-cache")
            .read_dir()
            .unwrap()
            .next()
            .is_some(),
        "cached for restarts"
    );
}
