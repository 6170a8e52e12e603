//! Start the real egress in-process, from YAML, on an OS-chosen port.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use plano_common::{Component, Context, Control};
use plano_config::Config;

pub struct Egress {
    pub addr: SocketAddr,
    pub ctx: Context,
    pub control: Control,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Egress {
    /// Load `yaml` (variables from `env`), move the model listener to 127.0.0.1:0, start.
    pub async fn start(yaml: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let lookup = |k: &str| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let mut config: Config = plano_config::load_str(yaml, None, &lookup)?;
        for l in &mut config.listeners {
            if l.kind == plano_config::ListenerKind::Model {
                l.addr = SocketAddr::from(([127, 0, 0, 1], 0));
            }
        }
        let (ctx, control) = Context::new(Component::Egress, config, Duration::from_secs(5));
        let server = plano_egress::bind(&ctx).await?;
        let addr = server.local_addr();
        let task = tokio::spawn(server.serve());
        Ok(Self {
            addr,
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
