//! Start the real egress in-process, from YAML, on an OS-chosen port.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use plano_common::{Component, Context, Control};
use plano_config::Config;

pub struct Egress {
    pub addr: SocketAddr,
    /// The egress admin port (HTTP /metrics… and gRPC health).
    pub admin: SocketAddr,
    pub ctx: Context,
    pub control: Control,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Egress {
    /// Load `yaml` (variables from `env`), move the model listener to 127.0.0.1:0, start.
    pub async fn start(yaml: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_at(yaml, env, any, any).await
    }

    /// Like [`Egress::start`], on given model-listener and admin addresses (to restart an
    /// egress where the edge expects it).
    pub async fn start_at(
        yaml: &str,
        env: &[(&str, &str)],
        listen: SocketAddr,
        admin: SocketAddr,
    ) -> anyhow::Result<Self> {
        Self::start_set_up(yaml, env, listen, admin, |server| async move { server }).await
    }

    /// Load, bind, let `set_up` adjust the bound server, then serve.
    async fn start_set_up<F, Fut>(
        yaml: &str,
        env: &[(&str, &str)],
        listen: SocketAddr,
        admin: SocketAddr,
        set_up: F,
    ) -> anyhow::Result<Self>
    where
        F: FnOnce(plano_egress::EgressServer) -> Fut,
        Fut: std::future::Future<Output = plano_egress::EgressServer>,
    {
        let mut config = load(yaml, env)?;
        config.model_listener.addr = listen;
        let (ctx, control) = Context::new(Component::Egress, config, Duration::from_secs(5));
        let admin = plano_common::admin::bind(admin, &ctx).await?.local_addr();
        let server = set_up(plano_egress::bind(&ctx).await?).await;
        let addr = server.local_addr();
        let task = tokio::spawn(server.serve());
        Ok(Self {
            addr,
            admin,
            ctx,
            control,
            task,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn metrics(&self) -> PrometheusHandle {
        self.ctx.metrics.clone()
    }

    /// Trigger shutdown and wait for the drain.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.control.shutdown.trigger();
        self.task.await?
    }
}

/// The real edge in-process: every inbound listener moved to 127.0.0.1:0, and the egress
/// link pointed at `egress` (model listener and admin port).
pub struct Edge {
    pub listeners: Vec<(String, SocketAddr)>,
    pub ctx: Context,
    pub control: Control,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Edge {
    pub async fn start(
        yaml: &str,
        env: &[(&str, &str)],
        egress: (SocketAddr, SocketAddr),
    ) -> anyhow::Result<Self> {
        Self::start_with(yaml, env, egress, false).await
    }

    /// Like [`Edge::start`]; with `keep_ports` the listeners bind where the YAML says (an
    /// ACME server must know the TLS-ALPN port in advance).
    pub async fn start_with(
        yaml: &str,
        env: &[(&str, &str)],
        egress: (SocketAddr, SocketAddr),
        keep_ports: bool,
    ) -> anyhow::Result<Self> {
        let mut config = load(yaml, env)?;
        if !keep_ports {
            for l in &mut config.listeners {
                l.addr = SocketAddr::from(([127, 0, 0, 1], 0));
            }
        }
        config.egress.url = format!("http://{}", egress.0).parse()?;
        config.egress.health = format!("http://{}", egress.1).parse()?;
        let (ctx, control) = Context::new(Component::Edge, config, Duration::from_secs(5));
        let server = plano_edge::bind(&ctx).await?;
        let listeners = server.local_addrs();
        let task = tokio::spawn(server.serve());
        Ok(Self {
            listeners,
            ctx,
            control,
            task,
        })
    }

    /// Address of the listener called `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)), |(_, a)| *a)
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.control.shutdown.trigger();
        self.task.await?
    }
}

/// Load `yaml`, resolving `$VARS` from `env` only.
fn load(yaml: &str, env: &[(&str, &str)]) -> anyhow::Result<Config> {
    let lookup = |k: &str| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    Ok(plano_config::load_str(yaml, None, &lookup)?)
}

impl Egress {
    /// Like [`Egress::start`], routing by preference with `routing` (instead of the
    /// config's routing keys).
    pub async fn start_routed(
        yaml: &str,
        routing: plano_egress::routing::RoutingSettings,
    ) -> anyhow::Result<Self> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_set_up(yaml, &[], any, any, |server| async move {
            server.with_routing(routing)
        })
        .await
    }

    /// Like [`Egress::start`], resolving the hosts of `prefix_affinity` endpoints with
    /// `hosts` instead of the system resolver; returns once they are resolved.
    pub async fn start_resolved(yaml: &str, hosts: TestHosts) -> anyhow::Result<Self> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let resolver = plano_egress::replicas::Resolver::new(hosts, Duration::from_secs(3600));
        Self::start_set_up(yaml, &[], any, any, |server| server.with_resolver(resolver)).await
    }
}

/// A hosts table for tests: each name resolves to its addresses (with the port asked
/// for), like several `/etc/hosts` lines for one name; any other name does not resolve.
#[derive(Debug, Clone, Default)]
pub struct TestHosts(Vec<(String, Vec<std::net::IpAddr>)>);

impl TestHosts {
    pub fn with(mut self, name: &str, addrs: &[std::net::IpAddr]) -> Self {
        self.0.push((name.to_string(), addrs.to_vec()));
        self
    }
}

impl plano_egress::replicas::Resolve for TestHosts {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> plano_egress::replicas::Lookup<'a> {
        let found: Vec<SocketAddr> = self
            .0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(host))
            .flat_map(|(_, ips)| ips.iter().map(move |ip| SocketAddr::new(*ip, port)))
            .collect();
        Box::pin(async move {
            if found.is_empty() {
                Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{host}: not in the test hosts"),
                ))
            } else {
                Ok(found)
            }
        })
    }
}
