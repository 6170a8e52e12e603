//! Watch a peer's gRPC health (the edge watching the egress) with one long-lived
//! `grpc.health.v1.Health/Watch` stream.
//!
//! The current status is published on a `tokio::sync::watch` channel so request handlers
//! read it without waiting, and on the gauge `plano_peer_up{peer}`. Failures reconnect with
//! capped, jittered exponential backoff; only changes between up and down are logged, so a
//! peer that stays away for an hour does not fill the log.

use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::errors::error_chain;
use crate::metrics::PEER_UP;
use crate::runtime::Shutdown;

/// A refused or black-holed connection must turn into "down" quickly: requests that need
/// the peer fail fast with 503 instead of waiting on it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound on the wait for the first answer on a fresh stream (a peer that accepts TCP but
/// never answers counts as down).
const FIRST_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings notice a peer that vanished without closing the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// What the watcher knows about the peer right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// True only while the peer's last Watch update said SERVING.
    pub up: bool,
    /// Why the peer is down (or "serving"), for logs and 503 messages.
    pub detail: String,
}

impl PeerStatus {
    fn down(detail: impl Into<String>) -> Self {
        Self {
            up: false,
            detail: detail.into(),
        }
    }
}

/// Start watching `service` at `url` (e.g. `http://127.0.0.1:9902`), reporting as `peer`
/// (e.g. `"egress"`). The watch ends when `shutdown` is requested.
///
/// The first status is "down, not checked yet" until the first answer arrives.
pub fn watch_peer(
    peer: &str,
    url: &str,
    service: &str,
    shutdown: Shutdown,
) -> watch::Receiver<PeerStatus> {
    let (tx, rx) = watch::channel(PeerStatus::down("not checked yet"));
    let gauge = metrics::gauge!(PEER_UP, "peer" => peer.to_string());
    gauge.set(0.0);
    let watcher = Watcher {
        peer: peer.to_string(),
        url: url.to_string(),
        service: service.to_string(),
        tx,
        gauge,
        logged: None,
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.requested() => {}
            _ = watcher.run() => {}
        }
    });
    rx
}

struct Watcher {
    peer: String,
    url: String,
    service: String,
    tx: watch::Sender<PeerStatus>,
    gauge: metrics::Gauge,
    /// The up/down state last written to the log, so each change is logged once.
    logged: Option<bool>,
}

impl Watcher {
    async fn run(mut self) {
        let mut backoff = BACKOFF_START;
        loop {
            let started = Instant::now();
            let reason = self.watch_once().await;
            self.publish(PeerStatus::down(reason));
            if self.tx.is_closed() {
                return;
            }
            // A stream that lived a while means the peer was fine: start backing off afresh.
            if started.elapsed() > BACKOFF_CAP {
                backoff = BACKOFF_START;
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(BACKOFF_CAP);
        }
    }

    /// One connection and Watch stream; returns why it ended.
    async fn watch_once(&mut self) -> String {
        let endpoint = match Endpoint::from_shared(self.url.clone()) {
            Ok(e) => e
                .connect_timeout(CONNECT_TIMEOUT)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                .keep_alive_while_idle(true),
            Err(e) => return format!("invalid health URL {}: {e}", self.url),
        };
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => return format!("cannot connect to {}: {}", self.url, error_chain(&e)),
        };
        let mut client = HealthClient::new(channel);
        let request = HealthCheckRequest {
            service: self.service.clone(),
        };
        let mut stream =
            match tokio::time::timeout(FIRST_ANSWER_TIMEOUT, client.watch(request)).await {
                Ok(Ok(resp)) => resp.into_inner(),
                Ok(Err(status)) => return format!("health Watch refused: {}", status.message()),
                Err(_) => {
                    return format!(
                        "no answer from {} within {FIRST_ANSWER_TIMEOUT:?}",
                        self.url
                    );
                }
            };
        loop {
            match stream.message().await {
                Ok(Some(update)) => {
                    let status =
                        ServingStatus::try_from(update.status).unwrap_or(ServingStatus::Unknown);
                    self.publish(match status {
                        ServingStatus::Serving => PeerStatus {
                            up: true,
                            detail: "serving".into(),
                        },
                        other => PeerStatus::down(format!(
                            "{} reports {}",
                            self.service_label(),
                            other.as_str_name()
                        )),
                    });
                }
                Ok(None) => return "health Watch stream ended".into(),
                Err(status) => {
                    return format!("health Watch stream failed: {}", status.message());
                }
            }
        }
    }

    fn service_label(&self) -> String {
        if self.service.is_empty() {
            format!("{} (overall)", self.peer)
        } else {
            self.service.clone()
        }
    }

    fn publish(&mut self, status: PeerStatus) {
        self.gauge.set(if status.up { 1.0 } else { 0.0 });
        if self.logged != Some(status.up) {
            if status.up {
                tracing::info!(peer = %self.peer, url = %self.url, "peer is up");
            } else {
                tracing::warn!(peer = %self.peer, url = %self.url, reason = %status.detail, "peer is down");
            }
            self.logged = Some(status.up);
        }
        self.tx.send_if_modified(|current| {
            if *current == status {
                return false;
            }
            *current = status;
            true
        });
    }
}

/// One `grpc.health.v1.Health/Check` of `service` at `url`: `Ok(true)` when SERVING,
/// `Ok(false)` when it is not (or not registered), `Err` when the peer gave no answer.
pub async fn check_service(url: &str, service: &str) -> Result<bool, String> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("invalid health URL {url}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(FIRST_ANSWER_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {url}: {}", error_chain(&e)))?;
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    match HealthClient::new(channel).check(request).await {
        Ok(r) => Ok(r.into_inner().status == ServingStatus::Serving as i32),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(false),
        Err(status) => Err(format!("health Check failed: {}", status.message())),
    }
}

/// ±25% so many edge replicas do not reconnect to a restarted egress in lockstep.
fn jitter(d: Duration) -> Duration {
    let factor = rand::rng().random_range(0.75..1.25);
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_near_the_base() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(4));
            assert!(
                d >= Duration::from_secs(3) && d <= Duration::from_secs(5),
                "{d:?}"
            );
        }
    }
}
