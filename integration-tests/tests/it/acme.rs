//! ACME end to end: Debian's `pebble` issues a certificate to the edge over TLS-ALPN-01 on
//! the listener itself (with `pebble-challtestsrv` as its DNS), then a client completes a
//! TLS handshake trusting pebble's root.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use integration_tests::harness::Edge;

use crate::support::start_on_some_port;

fn tokio_command(program: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn tcp_up(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
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

    // Neither pebble nor its DNS server reports an OS-chosen port, so each starts on ports
    // of its own (and again on others when one is taken: it exits) — see
    // `start_on_some_port`. The DNS server: UDP `port` for DNS, TCP `port` for management.
    let spawn_dns = |port: u16| {
        tokio_command("pebble-challtestsrv").args([
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
            "-dns01",
            &format!("127.0.0.1:{port}"),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{port}"),
        ])
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start pebble-challtestsrv ({e}); install Debian's `pebble` package (.ci/run does)"))
    };
    let (_dns, dns_port) = start_on_some_port(spawn_dns, tcp_up).await;
    // pebble: the directory on `port`, management on `port + 1`; it validates on
    // `port + 2` (TLS-ALPN, the edge's listener) and `port + 3` (HTTP-01, unused).
    let config_path = dir.path().join("pebble.json");
    let spawn_pebble = |port: u16| {
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{}", port + 1),
            "certificate": dir.path().join("pebble.pem"),
            "privateKey": dir.path().join("pebble.key"),
            "httpPort": port + 3,
            "tlsPort": port + 2,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }});
        std::fs::write(&config_path, config.to_string()).unwrap();
        tokio_command("pebble")
            .args([
                "-config",
                &config_path.to_string_lossy(),
                "-dnsserver",
                &format!("127.0.0.1:{dns_port}"),
            ])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start pebble ({e}); install Debian's `pebble` package (.ci/run does)"
                )
            })
    };
    let (_pebble, dir_port) = start_on_some_port(spawn_pebble, tcp_up).await;
    let (mgmt_port, tls_port) = (dir_port + 1, dir_port + 2);

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
    // No egress runs: the handshake is what is tested (requests would get 503). Port 1
    // (tcpmux) refuses connections.
    let nowhere = SocketAddr::from(([127, 0, 0, 1], 1));
    // The listener binds the port pebble validates on; taken by someone else since pebble
    // started is a (rare) failure with a clear message, never a silent wrong peer.
    let edge = Edge::start_with(&yaml, &[], (nowhere, nowhere), true)
        .await
        .unwrap_or_else(|e| {
            panic!("the edge could not bind pebble's TLS-ALPN port {tls_port}: {e:#}")
        });

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
