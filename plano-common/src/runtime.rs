//! What a binary's `run` function receives, and how it is told to stop.
//!
//! `plano_egress::run(ctx)` and `plano_edge::run(ctx)` have the same shape. The CLI
//! (`cli.rs`) builds the context from the command line; tests build one directly with
//! [`Context::new`] and drive shutdown and reloads through the returned [`Control`].

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use plano_config::Config;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::health::HealthRegistry;

/// Default time in-flight requests (streams included) get to finish after SIGTERM.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Edge,
    Egress,
}

impl Component {
    /// gRPC health service name of the component.
    pub fn service(self) -> &'static str {
        match self {
            Component::Edge => crate::health::EDGE_SERVICE,
            Component::Egress => crate::health::EGRESS_SERVICE,
        }
    }

    /// Short name for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Component::Edge => "edge",
            Component::Egress => "egress",
        }
    }
}

/// Stop signal with a grace period. Cloning is cheap; every clone sees the same signal.
#[derive(Clone, Debug)]
pub struct Shutdown {
    token: CancellationToken,
    grace: Duration,
}

impl Shutdown {
    pub fn new(grace: Duration) -> Self {
        Self {
            token: CancellationToken::new(),
            grace,
        }
    }

    /// Resolves when the process should stop accepting new work.
    pub async fn requested(&self) {
        self.token.cancelled().await
    }

    pub fn is_requested(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Ask everything holding a clone to stop accepting and drain.
    pub fn trigger(&self) {
        self.token.cancel()
    }

    /// How long draining may take before in-flight work is abandoned.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

/// Everything a binary's `run` needs.
#[derive(Clone)]
pub struct Context {
    pub component: Component,
    /// The current config. A reload publishes a new, already validated `Arc<Config>`;
    /// requests keep the `Arc` they started with.
    pub config: watch::Receiver<Arc<Config>>,
    pub health: HealthRegistry,
    pub metrics: PrometheusHandle,
    pub shutdown: Shutdown,
}

/// The other end of a [`Context`]: publish reloads, trigger shutdown.
pub struct Control {
    pub config: watch::Sender<Arc<Config>>,
    pub shutdown: Shutdown,
}

impl Context {
    /// A context for `component` with `config`. Installs the metrics recorder (once per
    /// process) and creates the health registry; must be called inside a Tokio runtime.
    pub fn new(component: Component, config: Config, grace: Duration) -> (Context, Control) {
        let (tx, rx) = watch::channel(Arc::new(config));
        let shutdown = Shutdown::new(grace);
        let ctx = Context {
            component,
            config: rx,
            health: HealthRegistry::new(component.service()),
            metrics: crate::metrics::install(component.name()),
            shutdown: shutdown.clone(),
        };
        (
            ctx,
            Control {
                config: tx,
                shutdown,
            },
        )
    }

    /// Report the process ready: `""` and the component SERVING (gRPC health, `/readyz`).
    ///
    /// `run` calls this itself once its listeners are bound and it can take traffic; the
    /// CLI does not guess. The CLI marks both NOT_SERVING again when shutdown starts.
    pub fn mark_serving(&self) {
        self.health.set(self.component.service(), true);
        self.health.set("", true);
    }

    /// Report the process not ready (draining, or lost something it needs).
    pub fn mark_not_serving(&self) {
        self.health.set("", false);
        self.health.set(self.component.service(), false);
    }

    /// The config as of now.
    pub fn current_config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }
}
