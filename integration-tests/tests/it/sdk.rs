//! The official Python SDKs (`openai`, `anthropic` from PyPI) against the real egress:
//! every client API × provider API pair, stream and not, tools included
//! (`integration-tests/sdk/e2e.py`). The interpreter is `$PLANO_PYTHON` or `python3`;
//! without the SDKs the test is skipped with a message, unless `PLANO_REQUIRE_SDK` is set
//! (as `.ci/run` does), when it fails instead.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use integration_tests::harness::Egress;
use integration_tests::mock::{MockOptions, MockProvider};

fn python() -> String {
    std::env::var("PLANO_PYTHON").unwrap_or_else(|_| "python3".into())
}

async fn sdks_available() -> bool {
    tokio::process::Command::new(python())
        .args(["-c", "import openai, anthropic"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn official_sdks_through_every_pair() {
    if !sdks_available().await {
        assert!(
            std::env::var_os("PLANO_REQUIRE_SDK").is_none(),
            "PLANO_REQUIRE_SDK is set but `{} -c 'import openai, anthropic'` fails",
            python()
        );
        eprintln!("skipped: the openai/anthropic Python SDKs are not installed (set PLANO_PYTHON)");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Strict: the mock rejects what the real APIs reject before answering (no credentials,
    // no `anthropic-version`, no `max_tokens` on Messages).
    let mock = MockProvider::start_on(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        MockOptions {
            strict: true,
            ..MockOptions::default()
        },
    )
    .await
    .unwrap();
    let yaml = format!(
        r#"
version: v0.4.0
model_providers:
  - model: openai/gpt-4o-mini
    access_key: sk-openai
    base_url: {url}
    default: true
  - model: anthropic/claude-sonnet-4-5
    access_key: sk-ant
    base_url: {url}
  - model: amazon_bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0
    access_key: bedrock-api-key
    base_url: {url}
listeners:
  - type: model
    name: models
    port: 12000
    timeout: 10s
    max_retries: 0
"#,
        url = mock.url()
    );
    let egress = Egress::start(&yaml, &[]).await.unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sdk/e2e.py");
    let run = tokio::process::Command::new(python())
        .arg(&script)
        .arg(egress.url(""))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the SDK run did not finish within 240s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK end-to-end run failed:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
    egress.stop().await.unwrap();
}
