//! The health registry: one source of truth for what this process reports, served over
//! gRPC `grpc.health.v1.Health` (Check and Watch) and over HTTP `/readyz`.
//!
//! Services: `""` (the whole process), the component (`plano.edge` / `plano.egress`), and
//! per-provider entries `plano.egress.provider.<name>`. Updates may come from sync code (a
//! circuit breaker tripping inside a request), so they go through a channel to one task
//! that applies them in order; `/readyz` reads the local map, which is updated at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;

pub const EDGE_SERVICE: &str = "plano.edge";
pub const EGRESS_SERVICE: &str = "plano.egress";

/// Health service the egress reports SERVING for each port its model listener serves (and
/// NOT_SERVING once that socket closed): the edge follows a new `egress.url` only when its
/// port is served, so a reload that moved the listener onto a busy port (the egress keeps
/// the old one) does not send traffic to whatever listens there.
pub fn model_listener_service(port: u16) -> String {
    format!("plano.egress.listener.{port}")
}

/// Health service name of one provider's circuit.
pub fn provider_service(provider: &str) -> String {
    format!("plano.egress.provider.{provider}")
}

#[derive(Clone)]
pub struct HealthRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    statuses: Mutex<BTreeMap<String, bool>>,
    updates: mpsc::UnboundedSender<(String, ServingStatus)>,
    reporter: HealthReporter,
}

impl HealthRegistry {
    /// A registry for `component` (`plano.edge` or `plano.egress`), with `""` and the
    /// component registered as NOT_SERVING until the caller marks them ready.
    ///
    /// Must be called inside a Tokio runtime (it spawns the task that feeds tonic-health).
    pub fn new(component: &str) -> Self {
        let reporter = HealthReporter::new();
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, ServingStatus)>();
        let feeder = reporter.clone();
        tokio::spawn(async move {
            while let Some((service, status)) = rx.recv().await {
                feeder.set_service_status(service, status).await;
            }
        });
        let registry = Self {
            inner: Arc::new(Inner {
                statuses: Mutex::new(BTreeMap::new()),
                updates: tx,
                reporter,
            }),
        };
        registry.set("", false);
        registry.set(component, false);
        registry
    }

    /// Set a service's status. Cheap and non-blocking; callable from sync code.
    pub fn set(&self, service: &str, serving: bool) {
        let changed = match self.inner.statuses.lock() {
            Ok(mut map) => map.insert(service.to_string(), serving) != Some(serving),
            Err(_) => true,
        };
        if changed {
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            // The receiver lives as long as the runtime; a send after shutdown is moot.
            let _ = self.inner.updates.send((service.to_string(), status));
        }
    }

    /// Current status of a service (`None` when never registered).
    pub fn get(&self, service: &str) -> Option<bool> {
        self.inner
            .statuses
            .lock()
            .ok()
            .and_then(|m| m.get(service).copied())
    }

    /// Every registered service and its status, for `/readyz` bodies and logs.
    pub fn snapshot(&self) -> BTreeMap<String, bool> {
        self.inner
            .statuses
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Ready means the overall service `""` is SERVING.
    pub fn is_ready(&self) -> bool {
        self.get("").unwrap_or(false)
    }

    /// The tonic service to mount on the admin port.
    pub fn grpc_service(&self) -> HealthServer<impl Health + use<>> {
        HealthServer::new(tonic_health::server::HealthService::from_health_reporter(
            self.inner.reporter.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::HealthCheckRequest;

    #[tokio::test]
    async fn starts_not_serving_then_serves() {
        let reg = HealthRegistry::new(EGRESS_SERVICE);
        assert!(!reg.is_ready());
        reg.set("", true);
        reg.set(EGRESS_SERVICE, true);
        reg.set(&provider_service("openai/gpt-4o"), false);
        assert!(reg.is_ready());
        assert_eq!(reg.get("plano.egress.provider.openai/gpt-4o"), Some(false));

        // The gRPC side sees the updates once the feeder task ran.
        let svc =
            tonic_health::server::HealthService::from_health_reporter(reg.inner.reporter.clone());
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        let res = svc
            .check(tonic::Request::new(HealthCheckRequest {
                service: EGRESS_SERVICE.into(),
            }))
            .await
            .map(|r| r.into_inner().status);
        assert_eq!(res.ok(), Some(ServingStatus::Serving as i32));
    }
}
