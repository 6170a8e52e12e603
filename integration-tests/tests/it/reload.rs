//! Reloads that add, remove or move listeners: new sockets are bound, old ones drain, the
//! others keep serving; the edge follows a new `egress.url`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use integration_tests::harness::{Edge, Egress};
use integration_tests::mock::MockProvider;
use serde_json::json;

use crate::support::{Plano, eventually, install_ring, wait_ready};

fn chat() -> serde_json::Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
}

async fn answers(addr: SocketAddr) -> bool {
    reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&chat())
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

async fn refused(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

/// The ports the egress reports serving (health services `plano.egress.listener.<port>`).
fn served_ports(egress: &Egress) -> Vec<u16> {
    egress
        .ctx
        .health
        .snapshot()
        .into_iter()
        .filter(|(_, serving)| *serving)
        .filter_map(|(service, _)| service.strip_prefix("plano.egress.listener.")?.parse().ok())
        .collect()
}

/// An egress config: one provider (the mock) and the model listener on `address`, port 0.
fn egress_yaml(mock: &MockProvider, address: &str) -> String {
    format!(
        "version: v0.4.0\nmodel_providers:\n  - model: openai/gpt-4o\n    base_url: {}\n    default: true\nlisteners:\n  - type: model\n    name: models\n    address: {address}\n    port: 0\n",
        mock.url()
    )
}

/// The model listener's new address once the egress serves a port on 127.0.0.2 other
/// than `old`'s (after a reload that moved it there; the OS picks the port).
async fn moved_to_127_0_0_2(egress: &Egress, old: SocketAddr) -> SocketAddr {
    let mut new = None;
    eventually(Duration::from_secs(5), || {
        new = served_ports(egress)
            .into_iter()
            .find(|p| *p != old.port())
            .map(|p| SocketAddr::from(([127, 0, 0, 2], p)));
        let found = new.is_some();
        async move { found }
    })
    .await;
    new.expect("eventually returned, so a new port was found")
}

#[tokio::test]
async fn a_moved_model_listener_is_rebound_without_a_restart() {
    let mock = MockProvider::start().await.unwrap();
    // Port 0 on both sides: the move is from 127.0.0.1 to 127.0.0.2 (both loopback), each
    // on a port the OS picks.
    let egress = Egress::start(&egress_yaml(&mock, "127.0.0.1"), &[])
        .await
        .unwrap();
    let old = egress.addr;
    assert!(answers(old).await);
    assert_eq!(served_ports(&egress), [old.port()]);

    let config = plano_config::load_str(&egress_yaml(&mock, "127.0.0.2"), None, &|_| None).unwrap();
    egress.control.config.send(Arc::new(config)).unwrap();
    let new = moved_to_127_0_0_2(&egress, old).await;
    eventually(Duration::from_secs(5), || answers(new)).await;
    eventually(Duration::from_secs(5), || refused(old)).await;
}

/// The real `plano-edge` binary (its listeners on OS-chosen ports, learned from its log),
/// reloaded with SIGHUP: listeners added, removed and moved.
#[tokio::test]
async fn edge_listeners_are_added_removed_and_moved_by_a_reload() {
    let mock = MockProvider::start().await.unwrap();
    let egress = Egress::start(
        &format!(
            "version: v0.4.0\nmodel_providers:\n  - model: openai/gpt-4o\n    base_url: {}\n    default: true\n",
            mock.url()
        ),
        &[],
    )
    .await
    .unwrap();
    let listeners = |entries: &[(&str, &str)]| {
        let mut y = format!(
            "version: v0.4.0\nmodel_providers:\n  - model: openai/gpt-4o\n    default: true\negress:\n  url: http://{}\n  health: http://{}\nadmin:\n  edge: 127.0.0.1:0\n  egress: 127.0.0.1:0\nlisteners:\n",
            egress.addr, egress.admin
        );
        for (name, address) in entries {
            y.push_str(&format!(
                "  - type: edge\n    name: {name}\n    address: {address}\n    port: 0\n"
            ));
        }
        y
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plano.yaml");
    std::fs::write(&path, listeners(&[("a", "127.0.0.1"), ("b", "127.0.0.1")])).unwrap();
    let edge = Plano::start("plano-edge", &path, &[], 2).await;
    let (a, b) = (edge.addr("a"), edge.addr("b"));
    eventually(Duration::from_secs(10), || answers(a)).await;
    assert!(answers(b).await);
    // The latest address each listener reported serving on.
    let latest = |name: &str, not: &[SocketAddr]| {
        edge.serving()
            .into_iter()
            .rev()
            .find(|(n, addr)| n == name && !not.contains(addr))
            .map(|(_, addr)| addr)
    };

    // `a` stays, `b` moves to 127.0.0.2, `c` is added.
    std::fs::write(
        &path,
        listeners(&[("a", "127.0.0.1"), ("b", "127.0.0.2"), ("c", "127.0.0.1")]),
    )
    .unwrap();
    edge.signal("HUP");
    eventually(Duration::from_secs(5), || {
        let done = latest("c", &[]).is_some() && latest("b", &[b]).is_some();
        async move { done }
    })
    .await;
    let (b2, c) = (latest("b", &[b]).unwrap(), latest("c", &[]).unwrap());
    assert_eq!(b2.ip().to_string(), "127.0.0.2");
    eventually(Duration::from_secs(5), || answers(c)).await;
    eventually(Duration::from_secs(5), || answers(b2)).await;
    eventually(Duration::from_secs(5), || refused(b)).await;
    assert!(answers(a).await, "an unchanged listener keeps serving");
    assert_eq!(latest("a", &[]), Some(a), "`a` was not rebound");

    // `c` is removed.
    std::fs::write(&path, listeners(&[("a", "127.0.0.1"), ("b", "127.0.0.2")])).unwrap();
    edge.signal("HUP");
    eventually(Duration::from_secs(5), || refused(c)).await;
    assert!(answers(a).await && answers(b2).await);
}

async fn status(addr: SocketAddr) -> Option<u16> {
    reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&chat())
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// The egress moves its model listener; the edge, pointed at the old address, answers 502
/// until a reload gives it the new `egress.url`, then forwards there.
#[tokio::test]
async fn the_edge_forwards_to_a_reloaded_egress_url() {
    install_ring();
    let mock = MockProvider::start().await.unwrap();
    let egress = Egress::start(&egress_yaml(&mock, "127.0.0.1"), &[])
        .await
        .unwrap();
    let old = egress.addr;
    let edge_yaml = |url: SocketAddr| {
        format!(
            "version: v0.4.0\nmodel_providers:\n  - model: openai/gpt-4o\n    default: true\negress:\n  url: http://{url}\n  health: http://{}\nlisteners:\n  - type: edge\n    name: public\n    address: 127.0.0.1\n    port: 0\n",
            egress.admin
        )
    };
    let edge = Edge::start(&edge_yaml(old), &[], (old, egress.admin))
        .await
        .unwrap();
    wait_ready(&edge).await;
    let public = edge.addr("public");
    assert_eq!(status(public).await, Some(200));

    // The egress moves to 127.0.0.2 (a port the OS picks); the old address closes.
    let config = plano_config::load_str(&egress_yaml(&mock, "127.0.0.2"), None, &|_| None).unwrap();
    egress.control.config.send(Arc::new(config)).unwrap();
    let new = moved_to_127_0_0_2(&egress, old).await;
    eventually(Duration::from_secs(5), || refused(old)).await;
    // The edge still forwards to the old address: nobody answers there.
    eventually(Duration::from_secs(5), || async {
        status(public).await == Some(502)
    })
    .await;

    // A reload with the new `egress.url` (the egress's health says it serves that port):
    // the edge's requests go there.
    let config = plano_config::load_str(&edge_yaml(new), None, &|_| None).unwrap();
    edge.control.config.send(Arc::new(config)).unwrap();
    eventually(Duration::from_secs(5), || async {
        status(public).await == Some(200)
    })
    .await;
    edge.stop().await.unwrap();
    egress.stop().await.unwrap();
}
