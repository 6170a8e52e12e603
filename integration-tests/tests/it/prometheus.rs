//! A real Prometheus server scrapes both real binaries: the scrape config shipped in
//! `deploy/prometheus/` only helps if what the binaries serve on their admin ports is
//! something Prometheus accepts, and `plano_` series arrive with the labels the alert rules
//! and dashboard query.
//!
//! Needs Debian's `prometheus` package. Without it on PATH the test is skipped with a
//! message, unless `PLANO_REQUIRE_PROMETHEUS` is set (CI sets it), then it fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use integration_tests::mock::MockProvider;
use plano_common::cli;
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::support::{Plano, eventually, http_client, start_on_some_port};

/// Prometheus starts, reads its config and scrapes every second: far inside this bound.
const BOUND: Duration = Duration::from_secs(60);

fn find_prometheus() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file())
}

/// Start `exe` with `args`; the process is killed when the returned handle is dropped, so a
/// failing assertion leaves nothing running.
fn spawn(exe: &Path, args: &[&str], dir: &Path, name: &str) -> Child {
    // Logs go to files in the temp dir: Prometheus is chatty, and on failure they are
    // printed with the panic.
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Command::new(exe)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()))
}

fn logs(dir: &Path) -> String {
    ["plano-egress", "plano-edge", "prometheus"]
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("--- {n} (last lines)\n{}\n", tail.join("\n"))
        })
        .collect()
}

/// `deploy/prometheus/prometheus.yml` and `alerts.yml` copied into `dir`, with the compose
/// targets replaced by the given admin addresses and 1 s intervals.
fn shipped_prometheus_config(dir: &Path, edge: SocketAddr, egress: SocketAddr) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    let config = std::fs::read_to_string(shipped.join("prometheus.yml")).unwrap();
    let rewritten = config
        .replace("\"edge:9901\"", &format!("\"{edge}\""))
        .replace("\"egress:9902\"", &format!("\"{egress}\""))
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        .replace("scrape_timeout: 5s", "scrape_timeout: 1s");
    assert!(
        rewritten.contains(&edge.to_string()) && rewritten.contains(&egress.to_string()),
        "deploy/prometheus/prometheus.yml no longer has the targets edge:9901 and egress:9902"
    );
    std::fs::copy(shipped.join("alerts.yml"), dir.join("alerts.yml")).unwrap();
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, rewritten).unwrap();
    path
}

/// Every alert rule Prometheus loaded has been evaluated without error.
fn rules_healthy(data: &Value) -> bool {
    let rules: Vec<&Value> = data["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    !rules.is_empty() && rules.iter().all(|r| r["health"] == "ok")
}

async fn wait_serving(admin: SocketAddr, child: &mut Child, dir: &Path) {
    let deadline = tokio::time::Instant::now() + BOUND;
    while !cli::check_health(&admin.to_string(), "")
        .await
        .is_ok_and(|s| s == "SERVING")
    {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("exited before serving: {status}\n{}", logs(dir));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{admin} not SERVING within {BOUND:?}\n{}",
            logs(dir)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /api/v1/<path>` on the Prometheus server; `None` until it answers with success.
async fn api(http: &reqwest::Client, prom: SocketAddr, path: &str) -> Option<Value> {
    let resp = http
        .get(format!("http://{prom}/api/v1/{path}"))
        .send()
        .await
        .ok()?;
    let body: Value = resp.json().await.ok()?;
    (body["status"] == "success").then(|| body["data"].clone())
}

/// `(job, health)` of each active target.
fn target_health(data: &Value) -> Vec<(String, String)> {
    data["activeTargets"]
        .as_array()
        .map(|targets| {
            targets
                .iter()
                .map(|t| {
                    (
                        t["labels"]["job"].as_str().unwrap_or("").to_string(),
                        t["health"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The `component` label of every series a query returned.
fn components(data: &Value) -> Vec<String> {
    let mut found: Vec<String> = data["result"]
        .as_array()
        .map(|series| {
            series
                .iter()
                .filter_map(|s| s["metric"]["component"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.dedup();
    found
}

#[tokio::test]
async fn prometheus_scrapes_both_admin_ports() {
    let Some(prometheus) = find_prometheus() else {
        assert!(
            std::env::var_os("PLANO_REQUIRE_PROMETHEUS").is_none(),
            "PLANO_REQUIRE_PROMETHEUS is set but `prometheus` is not on PATH (apt-get install prometheus)"
        );
        eprintln!(
            "SKIPPED prometheus_scrapes_both_admin_ports: `prometheus` is not on PATH \
             (apt-get install prometheus; set PLANO_REQUIRE_PROMETHEUS=1 to make this a failure)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mock = MockProvider::start().await.unwrap();

    // Every port is chosen by the OS: the egress binds first, then the config is rewritten
    // with the ports it got so the edge finds it.
    let yaml = |model: u16, egress_admin: u16| {
        format!(
            r#"version: v0.4.0
listeners:
  - name: model_listener
    type: model
    address: 127.0.0.1
    port: {model}
  - name: public
    type: edge
    address: 127.0.0.1
    port: 0
model_providers:
  - model: openai/gpt-4o-mini
    base_url: {mock}
    access_key: test-key
    default: true
admin:
  edge: "127.0.0.1:0"
  egress: "127.0.0.1:{egress_admin}"
"#,
            mock = mock.url(),
        )
    };
    let config = dir.path().join("plano_config.yaml");
    std::fs::write(&config, yaml(0, 0)).unwrap();

    // The egress first: the edge is SERVING only while the egress it watches is.
    let mut egress = Plano::start("plano-egress", &config, &[], 1).await;
    let egress_admin = egress.admin;
    wait_serving(egress_admin, &mut egress.child, dir.path()).await;
    std::fs::write(
        &config,
        yaml(egress.addr("model").port(), egress_admin.port()),
    )
    .unwrap();
    let mut edge = Plano::start("plano-edge", &config, &[], 1).await;
    let (edge_admin, edge_port) = (edge.admin, edge.addr("public").port());
    wait_serving(edge_admin, &mut edge.child, dir.path()).await;

    // Requests through the edge, so both binaries have request series to export.
    let http = http_client();
    for _ in 0..2 {
        let resp = http
            .post(format!("http://127.0.0.1:{edge_port}/v1/chat/completions"))
            .json(&serde_json::json!({
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "hello"}]
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", logs(dir.path()));
    }

    // The shipped scrape config and alert rules, pointed at the test's ports and scraping
    // every second.
    let prom_config = shipped_prometheus_config(dir.path(), edge_admin, egress_admin);
    let tsdb = dir.path().join("tsdb");
    // Prometheus does not report a port it was given as 0: it is started on a port of its
    // own choosing, and on another when that one is taken (it then exits).
    let (mut prom, prom_port) = start_on_some_port(
        |port| {
            spawn(
                &prometheus,
                &[
                    &format!("--config.file={}", prom_config.display()),
                    &format!("--storage.tsdb.path={}", tsdb.display()),
                    &format!("--web.listen-address=127.0.0.1:{port}"),
                    "--log.level=warn",
                ],
                dir.path(),
                "prometheus",
            )
        },
        |port| {
            let http = http.clone();
            async move {
                http.get(format!("http://127.0.0.1:{port}/-/healthy"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        },
    )
    .await;
    let prom_addr = SocketAddr::from(([127, 0, 0, 1], prom_port));

    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        if let Some(status) = prom.try_wait().unwrap() {
            panic!("prometheus exited: {status}\n{}", logs(dir.path()));
        }
        let targets = api(&http, prom_addr, "targets").await;
        let health = targets.as_ref().map(target_health).unwrap_or_default();
        let both_up = health.len() == 2 && health.iter().all(|(_, h)| h == "up");
        let build = api(&http, prom_addr, "query?query=plano_build_info").await;
        let requests = api(&http, prom_addr, "query?query=plano_http_requests_total").await;
        let build_from = build.as_ref().map(components).unwrap_or_default();
        let requests_from = requests.as_ref().map(components).unwrap_or_default();
        if both_up && build_from == ["edge", "egress"] && requests_from == ["edge", "egress"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus did not see both binaries within {BOUND:?}: targets {health:?}; \
             plano_build_info from {build_from:?}; plano_http_requests_total from \
             {requests_from:?}\n{}",
            logs(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The upstream call the egress made is a series too, labelled with the provider.
    eventually(BOUND, || async {
        api(
            &http,
            prom_addr,
            "query?query=plano_llm_upstream_requests_total%7Boutcome%3D%22success%22%7D",
        )
        .await
        .and_then(|d| d["result"].as_array().map(|r| !r.is_empty()))
        .unwrap_or(false)
    })
    .await;

    // The shipped alert rules loaded and evaluate cleanly against real series, and none is
    // pending or firing while both binaries are healthy.
    eventually(BOUND, || async {
        api(&http, prom_addr, "rules")
            .await
            .is_some_and(|d| rules_healthy(&d))
    })
    .await;
    let alerts = api(&http, prom_addr, "alerts").await.unwrap();
    assert_eq!(
        alerts["alerts"].as_array().map(Vec::len),
        Some(0),
        "alerts active with both binaries healthy: {alerts}"
    );

    for mut child in [prom, edge.child, egress.child] {
        let _ = child.kill().await;
    }
}
