//! The admin port (HTTP + gRPC health on one socket) and the peer health watcher, against
//! real sockets on 127.0.0.1.

use std::net::SocketAddr;
use std::time::Duration;

use plano_common::admin::{self, AdminServer};
use plano_common::health::{EGRESS_SERVICE, HealthRegistry};
use plano_common::peer::{PeerStatus, watch_peer};
use plano_common::{Shutdown, metrics};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{assert_prometheus_text, eventually, http_client};

const BOUND: Duration = Duration::from_secs(15);

struct Admin {
    server: AdminServer,
    health: HealthRegistry,
    stop: CancellationToken,
}

async fn start_admin(addr: SocketAddr) -> Admin {
    let health = HealthRegistry::new(EGRESS_SERVICE);
    let stop = CancellationToken::new();
    let server = admin::bind_with(
        addr,
        health.clone(),
        metrics::install("egress"),
        stop.clone(),
    )
    .await
    .unwrap();
    Admin {
        server,
        health,
        stop,
    }
}

async fn grpc_status(addr: SocketAddr, service: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let res = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(res.into_inner().status).ok()
}

#[tokio::test]
async fn one_port_serves_http_and_grpc_health() {
    let a = start_admin("127.0.0.1:0".parse().unwrap()).await;
    let addr = a.server.local_addr();
    assert_ne!(addr.port(), 0);
    let http = http_client();
    let base = format!("http://{addr}");

    let r = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap().trim(), "ok");

    // Not ready until someone marks the process serving; the body says what is down.
    let r = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["ready"], false);
    assert_eq!(body["services"][EGRESS_SERVICE], "NOT_SERVING");
    assert_eq!(grpc_status(addr, "").await, Some(ServingStatus::NotServing));

    a.health.set(EGRESS_SERVICE, true);
    a.health.set("", true);
    let r = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["services"][""], "SERVING");
    for service in ["", EGRESS_SERVICE] {
        eventually(BOUND, || async {
            grpc_status(addr, service).await == Some(ServingStatus::Serving)
        })
        .await;
    }

    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert_prometheus_text(&text);
    assert!(text.contains("plano_build_info{"), "{text}");

    // A gRPC call to a service we do not serve gets a gRPC status, not an HTML-ish 404.
    let r = http
        .post(format!("{base}/some.Other/Method"))
        .header("content-type", "application/grpc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["grpc-status"], "12");
    let r = http.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    a.stop.cancel();
    tokio::time::timeout(BOUND, a.server.stopped())
        .await
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

async fn wait_up(rx: &mut watch::Receiver<PeerStatus>, up: bool) -> PeerStatus {
    tokio::time::timeout(BOUND, rx.wait_for(|s| s.up == up))
        .await
        .unwrap_or_else(|_| panic!("peer never became up={up}"))
        .unwrap()
        .clone()
}

fn peer_gauge(peer: &str) -> Option<f64> {
    let text = metrics::install("egress").render();
    let prefix = format!("plano_peer_up{{peer=\"{peer}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn peer_watcher_follows_the_peer_through_not_serving_loss_and_return() {
    let a = start_admin("127.0.0.1:0".parse().unwrap()).await;
    let addr = a.server.local_addr();
    let shutdown = Shutdown::new(Duration::from_secs(1));
    // With a trailing slash, as `url::Url` (the config's `egress.health`) prints it.
    let mut rx = watch_peer(
        "egress-it-1",
        &format!("http://{addr}/"),
        EGRESS_SERVICE,
        shutdown.clone(),
    );
    assert!(!rx.borrow().up);

    a.health.set(EGRESS_SERVICE, true);
    wait_up(&mut rx, true).await;
    assert_eq!(peer_gauge("egress-it-1"), Some(1.0));

    // NOT_SERVING arrives on the open Watch stream.
    a.health.set(EGRESS_SERVICE, false);
    let down = wait_up(&mut rx, false).await;
    assert!(down.detail.contains("NOT_SERVING"), "{down:?}");
    assert_eq!(peer_gauge("egress-it-1"), Some(0.0));

    a.health.set(EGRESS_SERVICE, true);
    wait_up(&mut rx, true).await;

    // The peer goes away entirely.
    a.stop.cancel();
    a.server.stopped().await;
    wait_up(&mut rx, false).await;

    // And comes back on the same address: the watcher reconnects by itself.
    let b = start_admin(addr).await;
    b.health.set(EGRESS_SERVICE, true);
    wait_up(&mut rx, true).await;
    assert_eq!(peer_gauge("egress-it-1"), Some(1.0));

    shutdown.trigger();
    b.stop.cancel();
}

#[tokio::test]
async fn peer_watcher_reports_a_refused_connection() {
    // A port that was just free: nothing listens there.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);

    let shutdown = Shutdown::new(Duration::from_secs(1));
    let mut rx = watch_peer(
        "egress-it-2",
        &format!("http://{addr}"),
        EGRESS_SERVICE,
        shutdown.clone(),
    );
    let status = tokio::time::timeout(BOUND, rx.wait_for(|s| s.detail.contains("connect")))
        .await
        .unwrap()
        .unwrap()
        .clone();
    assert!(!status.up);
    assert_eq!(peer_gauge("egress-it-2"), Some(0.0));
    shutdown.trigger();
}
