//! Reloads that add, remove or move listeners: new sockets are bound, old ones drain, the
//! others keep serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use integration_tests::harness::{Edge, Egress};
use integration_tests::mock::MockProvider;
use serde_json::json;

use crate::support::{eventually, free_port};

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

#[tokio::test]
async fn a_moved_model_listener_is_rebound_without_a_restart() {
    let mock = MockProvider::start().await.unwrap();
    let yaml = |port: u16| {
        format!(
            "version: v0.4.0\nmodel_providers:\n  - model: openai/gpt-4o\n    base_url: {}\n    default: true\nlisteners:\n  - type: model\n    name: models\n    address: 127.0.0.1\n    port: {port}\n",
            mock.url()
        )
    };
    let first = free_port();
    let old = SocketAddr::from(([127, 0, 0, 1], first));
    let egress = Egress::start_at(
        &yaml(first),
        &[],
        old,
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    assert!(answers(old).await);

    let moved = free_port();
    let new = SocketAddr::from(([127, 0, 0, 1], moved));
    let config = plano_config::load_str(&yaml(moved), None, &|_| None).unwrap();
    egress.control.config.send(Arc::new(config)).unwrap();
    eventually(Duration::from_secs(5), || answers(new)).await;
    eventually(Duration::from_secs(5), || refused(old)).await;
}

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
    let listeners = |entries: &[(&str, u16)]| {
        let mut y = String::from(
            "version: v0.4.0\nmodel_providers:\n  - model: openai/gpt-4o\n    default: true\nlisteners:\n",
        );
        for (name, port) in entries {
            y.push_str(&format!(
                "  - type: edge\n    name: {name}\n    address: 127.0.0.1\n    port: {port}\n"
            ));
        }
        y
    };
    let (a, b, c, b2) = (free_port(), free_port(), free_port(), free_port());
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let edge = Edge::start_with(
        &listeners(&[("a", a), ("b", b)]),
        &[],
        (egress.addr, egress.admin),
        true,
    )
    .await
    .unwrap();
    let health = edge.ctx.health.clone();
    eventually(Duration::from_secs(10), || {
        let h = health.clone();
        async move { h.is_ready() }
    })
    .await;
    assert!(answers(addr(a)).await && answers(addr(b)).await);

    // `a` stays, `b` moves to b2, `c` is added.
    let mut config =
        plano_config::load_str(&listeners(&[("a", a), ("b", b2), ("c", c)]), None, &|_| {
            None
        })
        .unwrap();
    config.egress = edge.ctx.current_config().egress.clone();
    edge.control.config.send(Arc::new(config)).unwrap();
    eventually(Duration::from_secs(5), || answers(addr(c))).await;
    eventually(Duration::from_secs(5), || answers(addr(b2))).await;
    eventually(Duration::from_secs(5), || refused(addr(b))).await;
    assert!(
        answers(addr(a)).await,
        "an unchanged listener keeps serving"
    );

    // `c` is removed.
    let mut config =
        plano_config::load_str(&listeners(&[("a", a), ("b", b2)]), None, &|_| None).unwrap();
    config.egress = edge.ctx.current_config().egress.clone();
    edge.control.config.send(Arc::new(config)).unwrap();
    eventually(Duration::from_secs(5), || refused(addr(c))).await;
    assert!(answers(addr(a)).await && answers(addr(b2)).await);
}
