//! Small helpers shared by the integration tests.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use integration_tests::harness::{Edge, Egress};
use integration_tests::mock::MockProvider;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Poll `check` until it returns true; panics after `bound` (a hang guard, not a timing
/// assertion).
pub async fn eventually<F, Fut>(bound: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + bound;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sum of the egress's `name` series whose labels contain `label`.
pub fn metric(egress: &Egress, name: &str, label: &str) -> f64 {
    egress
        .metrics()
        .render()
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every line of a Prometheus text exposition is a comment (`# HELP`, `# TYPE`), blank, or
/// `name{labels} value` with a metric name starting `plano_` and a number as value.
pub fn assert_prometheus_text(text: &str) {
    assert!(!text.trim().is_empty(), "empty exposition");
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let kind = rest.split_whitespace().nth(1).unwrap_or_default();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "bad TYPE line: {line}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in: {line}"
        );
        assert!(
            name.starts_with("plano_"),
            "metric without plano_ prefix: {line}"
        );
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(
                labels.starts_with('{') && labels.ends_with('}'),
                "bad labels in: {line}"
            );
            for pair in labels[1..labels.len() - 1].split("\",") {
                let key = pair.split_once("=\"").map(|(k, _)| k);
                assert!(
                    key.is_some_and(|k| !k.is_empty()),
                    "bad label {pair:?} in: {line}"
                );
            }
        }
        let ok = value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value);
        assert!(ok, "bad value in: {line}");
    }
}

/// The stack most end-to-end tests share, step by step: [`install_ring`], then
/// [`egress_with_mock`] (a mock provider and the real egress in front of it), then
/// [`ready_edge`] (the real edge pointed at that egress, once it reports ready).
///
/// Install ring as the process's rustls provider (reqwest and the servers need one; safe
/// to call more than once).
pub fn install_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A mock provider and the real egress (in-process, OS-chosen ports) on `yaml`, with
/// every `MOCK` in it replaced by the mock's URL.
pub async fn egress_with_mock(yaml: &str) -> (MockProvider, Egress) {
    install_ring();
    let mock = MockProvider::start().await.unwrap();
    let egress = Egress::start(&yaml.replace("MOCK", &mock.url()), &[])
        .await
        .unwrap();
    (mock, egress)
}

/// The real edge (in-process, every listener on an OS-chosen port) on `yaml`, pointed at
/// `egress`, returned once it reports ready (bounded: 10 s).
pub async fn ready_edge(yaml: &str, egress: &Egress) -> Edge {
    install_ring();
    let edge = Edge::start(yaml, &[], (egress.addr, egress.admin))
        .await
        .unwrap();
    wait_ready(&edge).await;
    edge
}

/// Wait (bounded: 10 s) until `edge` reports ready (its egress is SERVING).
pub async fn wait_ready(edge: &Edge) {
    let health = edge.ctx.health.clone();
    eventually(Duration::from_secs(10), || {
        let h = health.clone();
        async move { h.is_ready() }
    })
    .await;
}

/// A plain HTTP client. reqwest is built without a bundled TLS provider (ring only, no
/// aws-lc), so the process-wide provider is installed first.
pub fn http_client() -> reqwest::Client {
    install_ring();
    reqwest::Client::new()
}

/// Path of a workspace binary, built on first use: cargo only exposes `CARGO_BIN_EXE_*`
/// for a test's own package, so the test runs `cargo build --bins -p plano-egress -p
/// plano-edge` once per test process into the same target directory.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // target/<profile>/deps/it-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .ok_or("unexpected test executable location")?
            .to_path_buf();
        let target_dir = profile_dir.parent().ok_or("no target dir")?;
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--bins", "-p", "plano-egress", "-p", "plano-edge"])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build of the binaries failed: {status}"));
        }
        Ok(profile_dir)
    });
    match dir {
        Ok(d) => d.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)),
        Err(e) => panic!("{e}"),
    }
}

/// A `plano-egress` or `plano-edge` process on a config whose ports may all be 0: the OS
/// picks them when the process binds (no bind-release-rebind race), and the harness learns
/// them from the process's JSON log (stderr), which names every socket it binds:
/// `admin port listening` (`local_addr`), `model listener serving` (`addr`) and `inbound
/// listener serving` (`listener`, `addr`) — docs/deployment.md, "Port 0".
pub struct Plano {
    pub child: tokio::process::Child,
    /// The admin port (`/metrics`, `/healthz`, gRPC health).
    pub admin: SocketAddr,
    /// Each serving listener as it was first bound: `("model", addr)` for the egress,
    /// `(name, addr)` for each inbound listener of the edge.
    pub listeners: Vec<(String, SocketAddr)>,
    log: Arc<Mutex<Vec<Value>>>,
}

impl Plano {
    /// Start `binary` (`plano-egress` or `plano-edge`) with `--config config` and `args`,
    /// and wait (bounded) until its admin port and `listeners` listeners are bound.
    pub async fn start(binary_name: &str, config: &Path, args: &[&str], listeners: usize) -> Self {
        Self::start_with(binary_name, config, args, listeners, |cmd| {
            cmd.env("RUST_LOG", "info")
                .env_remove("PLANO_CONFIG")
                .env_remove("OTEL_SERVICE_NAME");
        })
        .await
    }

    /// [`Plano::start`] with the process's environment set by `env` (which may clear it;
    /// without `RUST_LOG` the binary's default filter applies).
    pub async fn start_with(
        binary_name: &str,
        config: &Path,
        args: &[&str],
        listeners: usize,
        env: impl FnOnce(&mut tokio::process::Command),
    ) -> Self {
        let mut cmd = tokio::process::Command::new(binary(binary_name));
        env(&mut cmd);
        let mut child = cmd
            .arg("--config")
            .arg(config)
            .args(["--log-format", "json"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary_name}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // Shown with the test's output when it fails.
                eprintln!("{line}");
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        let mut plano = Plano {
            child,
            admin: SocketAddr::from(([0, 0, 0, 0], 0)),
            listeners: Vec::new(),
            log,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            plano.listeners = plano.serving();
            if let Some(admin) = plano.find_addr("admin port listening", "local_addr")
                && plano.listeners.len() >= listeners
            {
                plano.admin = admin;
                return plano;
            }
            if let Ok(Some(status)) = plano.child.try_wait() {
                panic!("{binary_name} exited at start: {status}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{binary_name} did not report its ports within 30s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every log event so far (JSON objects, `message` and fields flattened).
    pub fn log(&self) -> Vec<Value> {
        self.log.lock().unwrap().clone()
    }

    /// The `field` of the first log event whose message starts with `message`, as an
    /// address.
    fn find_addr(&self, message: &str, field: &str) -> Option<SocketAddr> {
        self.log()
            .iter()
            .filter(|v| {
                v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
            })
            .find_map(|v| v[field].as_str()?.parse().ok())
    }

    /// Every listener the process reported serving, in order (a moved listener appears
    /// again with its new address).
    pub fn serving(&self) -> Vec<(String, SocketAddr)> {
        self.log()
            .iter()
            .filter_map(|v| {
                let name = match v["message"].as_str()? {
                    "model listener serving" => "model".to_string(),
                    "inbound listener serving" => v["listener"].as_str()?.to_string(),
                    _ => return None,
                };
                Some((name, v["addr"].as_str()?.parse().ok()?))
            })
            .collect()
    }

    /// The address of the listener called `name` (`model` for the egress).
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no listener {name} in {:?}", self.listeners))
    }

    /// Send a signal by name (`HUP`, `TERM`) with the shell's `kill`.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap();
        let status = std::process::Command::new("sh")
            .args(["-c", &format!("kill -{name} {pid}")])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// Start a process that cannot report an OS-chosen port (`redis-server`, a test server
/// binary) on a port of its own: `spawn(port)` starts it, and `up(port)` says whether it
/// serves. A port another process took in the meantime makes the start fail (the child
/// exits), and the next candidate is tried — never a port released for someone else.
pub async fn start_on_some_port<S, U, Fut>(mut spawn: S, up: U) -> (tokio::process::Child, u16)
where
    S: FnMut(u16) -> tokio::process::Child,
    U: Fn(u16) -> Fut,
    Fut: Future<Output = bool>,
{
    for port in port_candidates() {
        let mut child = spawn(port);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break; // could not bind: try another port
            }
            if up(port).await {
                // Whoever answered, it is ours only if our child still runs (a child that
                // could not bind exits at once).
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Ok(None) = child.try_wait() {
                    return (child, port);
                }
                break;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.start_kill();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("no port found in 20 attempts");
}

/// 20 ports to try for a process that must be told its port (see [`start_on_some_port`]):
/// spread over 20000..60000 from a time-based start, so parallel tests rarely collide.
/// Each candidate leaves 3 ports above it free for processes that take a block.
pub fn port_candidates() -> impl Iterator<Item = u16> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos()) as u16;
    (0..20u16).map(move |attempt| 20_000 + (seed.wrapping_add(attempt.wrapping_mul(7919)) % 40_000))
}
