//! Both binaries, in-process and as real processes: `--check`, start-up to SERVING, the
//! `health` subcommand, exit 0 on SIGTERM, and config reload.
//!
//! Finding the binaries: `CARGO_BIN_EXE_*` exists only for bins of the test's own package,
//! and cargo does not build other packages' bins for this test. So the test runs
//! `cargo build --bins -p plano-egress -p plano-edge` once per test process (cargo has
//! released its lock by the time tests run) into the same target directory, and uses the
//! executables next to this test's `deps/` folder. They are always current, and
//! `cargo test -p integration-tests` alone works.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use plano_common::reload::{ReloadOutcome, Reloader};
use plano_common::{Component, Context, admin, cli, metrics};
use plano_config::Config;

use crate::support::{Plano, assert_prometheus_text, binary, eventually, http_client};

const BOUND: Duration = Duration::from_secs(30);

fn seed_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/seed_listeners.yaml")
}

/// A config with a model listener, an edge listener and both admin ports on 127.0.0.1;
/// a port 0 is chosen by the OS when the process binds it (the edge listener's always is).
fn config(provider: &str, model: u16, egress_admin: u16, edge_admin: u16) -> String {
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
  - model: {provider}
    access_key: test-key
    default: true
admin:
  edge: "127.0.0.1:{edge_admin}"
  egress: "127.0.0.1:{egress_admin}"
"#
    )
}

fn load(yaml: &str) -> Config {
    plano_config::load_str(yaml, None, &|_| None).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

#[test]
fn check_accepts_the_seed_fixture_and_names_a_missing_key() {
    let exe = binary("plano-egress");
    let ok = Command::new(&exe)
        .arg("--config")
        .arg(seed_fixture())
        .arg("--check")
        .env("OPENAI_API_KEY", "sk-test-not-a-real-key")
        .env_remove("PLANO_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(stdout.contains("valid"), "{stdout}");
    assert!(
        !stdout.contains("sk-test-not-a-real-key"),
        "the summary must not show secrets: {stdout}"
    );

    let bad = Command::new(&exe)
        .arg("--config")
        .arg(seed_fixture())
        .arg("--check")
        .env_remove("OPENAI_API_KEY")
        .env_remove("PLANO_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(78), "{bad:?}");
    assert!(stderr.contains("OPENAI_API_KEY"), "{stderr}");

    // PLANO_CONFIG works like --config.
    let env = Command::new(binary("plano-edge"))
        .arg("--check")
        .env("PLANO_CONFIG", seed_fixture())
        .env("OPENAI_API_KEY", "sk-test")
        .output()
        .unwrap();
    assert_eq!(env.status.code(), Some(0), "{env:?}");
}

/// `--check` runs what each binary's start reads beyond the YAML: a Vertex provider's
/// `GOOGLE_APPLICATION_CREDENTIALS` file (egress) and a listener's TLS certificate (edge).
/// A bad one fails the check (exit 78, naming it) exactly where the start would fail.
#[test]
fn check_reads_credential_files_and_certificates_like_the_start_does() {
    let dir = tempfile::tempdir().unwrap();
    let egress_yaml = dir.path().join("egress.yaml");
    std::fs::write(
        &egress_yaml,
        "version: v0.4.0\nmodel_providers:\n  - model: vertex_ai/gemini-2.5-flash\n    base_url: http://127.0.0.1:9/v1\n    default: true\n",
    )
    .unwrap();
    let not_a_key = dir.path().join("not-a-key.json");
    std::fs::write(&not_a_key, "{\"type\": \"service_account\"}").unwrap();
    let check = |creds: &std::path::Path| {
        Command::new(binary("plano-egress"))
            .arg("--config")
            .arg(&egress_yaml)
            .arg("--check")
            .env("GOOGLE_APPLICATION_CREDENTIALS", creds)
            .env_remove("PLANO_CONFIG")
            .output()
            .unwrap()
    };
    for creds in [dir.path().join("missing.json"), not_a_key] {
        let out = check(&creds);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{creds:?}: {out:?}");
        assert!(
            stderr.contains("GOOGLE_APPLICATION_CREDENTIALS")
                && stderr.contains("model_providers[0]"),
            "{stderr}"
        );
    }
    let key = dir.path().join("sa.json");
    std::fs::write(
        &key,
        serde_json::json!({
            "type": "service_account",
            "client_email": "check@plano-test.iam.gserviceaccount.com",
            "private_key": include_str!("fixtures/vertex-test-only-rsa-key.pem"),
            "token_uri": "http://127.0.0.1:9/token",
        })
        .to_string(),
    )
    .unwrap();
    let ok = check(&key);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");

    // The edge: a static TLS listener whose certificate file is not a certificate.
    let cert = dir.path().join("tls.crt");
    let tls_key = dir.path().join("tls.key");
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&tls_key, "not a key").unwrap();
    let edge_yaml = dir.path().join("edge.yaml");
    std::fs::write(
        &edge_yaml,
        format!(
            "version: v0.4.0\nlisteners:\n  - type: edge\n    name: secure\n    port: 10443\n    tls:\n      cert_path: {}\n      key_path: {}\nmodel_providers:\n  - model: openai/gpt-4o\n    access_key: sk-test\n    default: true\n",
            cert.display(),
            tls_key.display()
        ),
    )
    .unwrap();
    let out = Command::new(binary("plano-edge"))
        .arg("--config")
        .arg(&edge_yaml)
        .arg("--check")
        .env_remove("PLANO_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(stderr.contains("listener `secure`: TLS"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_a_config_error() {
    let out = Command::new(binary("plano-egress"))
        .args(["--config", "/nonexistent/plano.yaml", "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/plano.yaml"));
}

async fn wait_serving(admin: SocketAddr, service: &str, child: &mut tokio::process::Child) {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        if let Ok(status) = cli::check_health(&admin.to_string(), service).await
            && status == "SERVING"
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("exited before serving: {status}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{service:?} not SERVING at {admin} within {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().unwrap();
    // The shell's builtin `kill`: no extra package, no unsafe code for libc::kill.
    let status = Command::new("sh")
        .args(["-c", &format!("kill -{name} {pid}")])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn both_binaries_serve_health_and_exit_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plano_config.yaml");
    let provider = "openai/gpt-4o";
    std::fs::write(&path, config(provider, 0, 0, 0)).unwrap();

    // The egress first: the edge reports SERVING only while the egress it watches does.
    // Each binary binds port 0s; the file is then rewritten with the ports it got, so the
    // edge finds the egress and `health` (which reads the admin address from the config)
    // finds each process.
    let mut running = Vec::new();
    let (mut model, mut egress_admin) = (0, 0);
    for (name, component) in [
        ("plano-egress", Component::Egress),
        ("plano-edge", Component::Edge),
    ] {
        let exe = binary(name);
        let mut plano = Plano::start(name, &path, &["--grace", "5s"], 1).await;
        let admin = plano.admin;
        let edge_admin = match component {
            Component::Egress => {
                (model, egress_admin) = (plano.addr("model").port(), admin.port());
                0
            }
            Component::Edge => admin.port(),
        };
        std::fs::write(&path, config(provider, model, egress_admin, edge_admin)).unwrap();
        wait_serving(admin, "", &mut plano.child).await;
        wait_serving(admin, component.service(), &mut plano.child).await;

        // The Docker HEALTHCHECK form, reading the admin address from the same config.
        let health = tokio::process::Command::new(&exe)
            .arg("--config")
            .arg(&path)
            .arg("health")
            .output()
            .await
            .unwrap();
        assert_eq!(health.status.code(), Some(0), "{name}: {health:?}");
        running.push((name, admin, exe, plano.child));
    }

    // Then stop them, edge first.
    for (name, admin, exe, mut child) in running.into_iter().rev() {
        signal(&child, "TERM");
        let status = tokio::time::timeout(BOUND, child.wait())
            .await
            .unwrap_or_else(|_| panic!("{name} did not exit after SIGTERM"))
            .unwrap();
        assert_eq!(status.code(), Some(0), "{name}: {status}");

        // Nothing answers any more: the health command says so with exit 1.
        let health = tokio::process::Command::new(&exe)
            .args(["health", "--addr", &admin.to_string()])
            .output()
            .await
            .unwrap();
        assert_eq!(health.status.code(), Some(1), "{name}: {health:?}");
    }
}

#[tokio::test]
async fn run_in_process_reports_serving_and_stops_on_shutdown() {
    let http = http_client();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    // The edge is ready only while its egress is: keep the egress running while the edge
    // is checked, and stop it last. The edge's config names the ports the egress got.
    let mut keep = Vec::new();
    let mut yaml = config("openai/gpt-4o", 0, 0, 0);
    for component in [Component::Egress, Component::Edge] {
        let (ctx, control) = Context::new(component, load(&yaml), Duration::from_secs(5));
        let admin = admin::bind(any, &ctx).await.unwrap();
        let addr = admin.local_addr();
        let task = match component {
            Component::Egress => {
                let server = plano_egress::bind(&ctx).await.unwrap();
                yaml = config("openai/gpt-4o", server.local_addr().port(), addr.port(), 0);
                tokio::spawn(server.serve())
            }
            Component::Edge => tokio::spawn(plano_edge::run(ctx.clone())),
        };

        for service in ["", component.service()] {
            eventually(BOUND, || async {
                cli::check_health(&addr.to_string(), service)
                    .await
                    .is_ok_and(|s| s == "SERVING")
            })
            .await;
        }
        let ready = http
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
        let text = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_prometheus_text(&text);
        assert!(text.contains("plano_build_info"), "{text}");
        keep.push((control, task, admin));
    }
    for (control, task, admin) in keep.into_iter().rev() {
        control.shutdown.trigger();
        tokio::time::timeout(BOUND, task)
            .await
            .expect("run did not return after shutdown")
            .unwrap()
            .unwrap();
        tokio::time::timeout(BOUND, admin.stopped()).await.unwrap();
    }
}

/// Current value of `plano_config_reloads_total{outcome}` (0 before the first increment).
fn reloads(outcome: &str) -> f64 {
    let text = metrics::install("egress").render();
    let series = format!("plano_config_reloads_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn reload_publishes_a_valid_config_and_keeps_the_old_one_when_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plano_config.yaml");
    let first = config("openai/gpt-4o", 0, 0, 0);
    std::fs::write(&path, &first).unwrap();
    let (ctx, control) = Context::new(
        Component::Egress,
        plano_config::load_file(&path).unwrap(),
        Duration::from_secs(1),
    );
    let reloader = Reloader::new(&path, plano_config::load_file, control.config);
    let held: Arc<Config> = ctx.current_config();

    let second = config("anthropic/claude-sonnet-4-5", 0, 0, 0);
    std::fs::write(&path, &second).unwrap();
    let success_before = reloads("success");
    assert_eq!(reloader.reload(), ReloadOutcome::Success);
    assert!(reloads("success") > success_before);
    let now = ctx.current_config();
    assert_eq!(now.providers[0].model, "anthropic/claude-sonnet-4-5");
    // Whoever held the old config (an in-flight request) still has it, unchanged.
    assert_eq!(held.providers[0].model, "openai/gpt-4o");

    std::fs::write(&path, second.replace("port:", "port: not-a-port #")).unwrap();
    let invalid_before = reloads("invalid");
    assert_eq!(reloader.reload(), ReloadOutcome::Invalid);
    assert!(reloads("invalid") > invalid_before);
    assert_eq!(
        ctx.current_config().providers[0].model,
        "anthropic/claude-sonnet-4-5",
        "the previous config keeps serving"
    );
}

/// `plano_config_reloads_total{outcome}` as scraped from a running process.
async fn scraped_reloads(http: &reqwest::Client, admin: SocketAddr, outcome: &str) -> f64 {
    let Ok(resp) = http.get(format!("http://{admin}/metrics")).send().await else {
        return -1.0;
    };
    let text = resp.text().await.unwrap_or_default();
    let series = format!("plano_config_reloads_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn the_binary_reloads_on_file_change_and_on_sighup_and_rejects_bad_configs() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = config("openai/gpt-4o", 0, 0, 0);
    let path = dir.path().join("plano_config.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let plano = Plano::start("plano-egress", &path, &["--watch"], 1).await;
    let (admin, mut child) = (plano.admin, plano.child);
    wait_serving(admin, "", &mut child).await;
    let http = http_client();

    // --watch: a changed, valid file is picked up without a signal.
    std::fs::write(&path, yaml.replace("openai/gpt-4o", "openai/gpt-4o-mini")).unwrap();
    eventually(BOUND, || async {
        scraped_reloads(&http, admin, "success").await >= 1.0
    })
    .await;

    // SIGHUP with a broken file: rejected, counted, and the process keeps serving.
    std::fs::write(&path, yaml.replace("port:", "port: not-a-port #")).unwrap();
    // Give the watcher its chance first so the count below is deterministic either way.
    eventually(BOUND, || async {
        scraped_reloads(&http, admin, "invalid").await >= 1.0
    })
    .await;
    let before = scraped_reloads(&http, admin, "invalid").await;
    signal(&child, "HUP");
    eventually(BOUND, || async {
        scraped_reloads(&http, admin, "invalid").await > before
    })
    .await;
    assert_eq!(
        cli::check_health(&admin.to_string(), "").await.unwrap(),
        "SERVING"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the process"
    );

    signal(&child, "TERM");
    let status = tokio::time::timeout(BOUND, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// The Plano-shaped fixtures of plano-config (every key and form Plano 0.4.36's configs
/// use, written here): each valid one passes `--check` on both binaries, with a warning
/// naming each key that is not acted on yet; each invalid one fails with exit 78 and
/// every problem of its `.errors` file, key paths included.
#[test]
fn check_runs_every_plano_shaped_fixture_on_both_binaries() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plano-config/tests/fixtures");
    let fixtures = |dir: &str| -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == "yaml")
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("plano_"))
            })
            .collect();
        files.sort();
        files
    };
    let check = |exe: &Path, file: &Path| {
        let mut cmd = Command::new(exe);
        cmd.arg("--config").arg(file).arg("--check");
        cmd.env_remove("PLANO_CONFIG")
            .env_remove("CHATGPT_ACCOUNT_ID");
        for var in [
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "GROQ_API_KEY",
            "MISTRAL_API_KEY",
            "CUSTOM_API_KEY",
            "AZURE_KEY",
            "GEMINI_KEY",
            "BEDROCK_KEY",
        ] {
            cmd.env(var, "test-key");
        }
        cmd.output().unwrap()
    };
    let valid = fixtures("valid");
    let invalid = fixtures("invalid");
    assert!(
        valid.len() >= 4 && invalid.len() >= 6,
        "{valid:?} {invalid:?}"
    );
    for bin in ["plano-egress", "plano-edge"] {
        let exe = binary(bin);
        for file in &valid {
            let out = check(&exe, file);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{bin} {}: {out:?}",
                file.display()
            );
            assert!(stdout.contains("configuration is valid"), "{stdout}");
            if file.ends_with("plano_routing.yaml") {
                for key in [
                    // `routing_preferences`, `model_metrics_sources`, `prompt_caching`,
                    // `overrides.llm_routing_model` and `orchestrator_model_context_length`
                    // are acted on (docs/routing.md): no warning.
                    "`routing`",
                    "`overrides.use_agent_orchestrator`",
                ] {
                    assert!(
                        stdout.contains(&format!("warning: {key}: ")),
                        "{bin}: no warning for {key}:\n{stdout}"
                    );
                }
                for key in [
                    "`overrides.llm_routing_model`",
                    "`overrides.orchestrator_model_context_length`",
                    "`routing_preferences`",
                ] {
                    assert!(
                        !stdout.contains(&format!("warning: {key}: ")),
                        "{bin}: {key} is acted on, yet warned about:\n{stdout}"
                    );
                }
            }
        }
        for file in &invalid {
            let out = check(&exe, file);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(78),
                "{bin} {}: {out:?}",
                file.display()
            );
            let expected = std::fs::read_to_string(file.with_extension("errors")).unwrap();
            assert!(!expected.trim().is_empty(), "{}", file.display());
            for line in expected.lines() {
                assert!(
                    stderr.contains(line),
                    "{bin} {}: missing `{line}` in:\n{stderr}",
                    file.display()
                );
            }
        }
    }
}
