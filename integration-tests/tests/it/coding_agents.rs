//! The real coding agents, unchanged, through Plano: OpenAI's Codex CLI (`@openai/codex`)
//! and Anthropic's Claude Code (`@anthropic-ai/claude-code`), both from npm, driven
//! non-interactively against the egress and through the edge, on three providers served by
//! the mock: an OpenAI chat-only provider (`groq/…`), an Anthropic provider and OpenAI's
//! Responses API (`openai/…`).
//!
//! The mock's directives (`mock:text`, `mock:call <tool> <args>`, see `src/mock/mod.rs`)
//! steer the answers, so each tool round trip is the client really running its tool (Codex's
//! `exec_command` running `cat`, Claude Code's `Read`) and the mock answering from the result.
//!
//! The clients are looked for in `$PLANO_AGENTS_BIN`, else `.ci/node_modules/.bin` (where
//! `.ci/run` installs them with `npm install --prefix .ci`). Without them the tests are
//! skipped with a message, unless `PLANO_REQUIRE_AGENTS` is set (as `.ci/run` does). Each
//! client gets its own home (`HOME`, `CODEX_HOME`) in a temporary folder, telemetry and
//! update checks off.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use integration_tests::harness::{Edge, Egress};
use integration_tests::mock::MockProvider;
use serde_json::Value;

use crate::support::{install_ring, ready_edge};

/// One model per provider API: chat-only, Anthropic Messages, OpenAI Responses.
const MODELS: [&str; 3] = [
    "groq/llama-3.3",
    "anthropic/claude-sonnet-4-5",
    "openai/gpt-5",
];

fn bin_dir() -> PathBuf {
    std::env::var_os("PLANO_AGENTS_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.ci/node_modules/.bin"),
        PathBuf::from,
    )
}

/// The client's path, or `None` (the test is skipped) when it is not installed and
/// `PLANO_REQUIRE_AGENTS` is not set.
async fn client(name: &str) -> Option<PathBuf> {
    let path = bin_dir().join(name);
    let works = tokio::process::Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .is_ok_and(|s| s.success());
    if works {
        return Some(path);
    }
    assert!(
        std::env::var_os("PLANO_REQUIRE_AGENTS").is_none(),
        "PLANO_REQUIRE_AGENTS is set but `{} --version` fails (install with `npm install --prefix .ci @openai/codex @anthropic-ai/claude-code`)",
        path.display()
    );
    eprintln!(
        "skipped: `{name}` is not installed in {} (npm install --prefix .ci @openai/codex @anthropic-ai/claude-code, or set PLANO_AGENTS_BIN)",
        bin_dir().display()
    );
    None
}

struct Stack {
    _mock: MockProvider,
    egress: Egress,
    edge: Edge,
}

impl Stack {
    async fn start() -> Self {
        install_ring();
        let mock = MockProvider::start().await.unwrap();
        let providers = |base: &str| {
            MODELS
                .iter()
                .map(|m| format!("  - model: {m}\n    access_key: sk-provider\n{base}"))
                .collect::<String>()
        };
        let egress_yaml = format!(
            "version: v0.4.0\nmodel_providers:\n{}listeners:\n  - type: model\n    name: models\n    port: 12000\n    timeout: 60s\n    max_retries: 0\n",
            providers(&format!("    base_url: {}\n", mock.url()))
        );
        let egress = Egress::start(&egress_yaml, &[]).await.unwrap();
        let edge_yaml = format!(
            "version: v0.4.0\nmodel_providers:\n{}listeners:\n  - type: edge\n    name: agents\n    port: 10000\n    timeout: 60s\n",
            providers("")
        );
        let edge = ready_edge(&edge_yaml, &egress).await;
        Stack {
            _mock: mock,
            egress,
            edge,
        }
    }

    /// The egress's model listener and the edge's listener, as base URLs without `/v1`.
    fn targets(&self) -> [(&'static str, String); 2] {
        [
            ("egress", self.egress.url("")),
            ("edge", format!("http://{}", self.edge.addr("agents"))),
        ]
    }
}

/// Runs a client to its end (at most 120 s); stdout, and the whole output on failure.
async fn run(mut cmd: tokio::process::Command, what: &str) -> String {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what}: did not finish within 120s"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what}: exit {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}

fn marker_file(dir: &Path) -> (PathBuf, String) {
    let path = dir.join("marker.txt");
    let content = "plano-marker-7f3a";
    std::fs::write(&path, format!("{content}\n")).unwrap();
    (path, content.to_owned())
}

fn codex(bin: &Path, home: &Path, base: &str, work: &Path) -> tokio::process::Command {
    let codex_home = home.join("codex");
    std::fs::create_dir_all(&codex_home).unwrap();
    std::fs::write(
        codex_home.join("config.toml"),
        format!(
            "model_provider = \"plano\"\n\n[model_providers.plano]\nname = \"plano\"\nbase_url = \"{base}/v1\"\nwire_api = \"responses\"\nenv_key = \"PLANO_TEST_KEY\"\nrequest_max_retries = 0\nstream_max_retries = 0\n\n[analytics]\nenabled = false\n"
        ),
    )
    .unwrap();
    let mut cmd = tokio::process::Command::new(bin);
    cmd.current_dir(work)
        .env("HOME", home)
        .env("CODEX_HOME", &codex_home)
        .env("PLANO_TEST_KEY", "sk-client")
        .env("NO_COLOR", "1")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL");
    cmd
}

/// The agent's last message in `codex exec --json` output.
fn codex_last_message(jsonl: &str) -> String {
    jsonl
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "item.completed" && e["item"]["type"] == "agent_message")
        .filter_map(|e| e["item"]["text"].as_str().map(str::to_owned))
        .next_back()
        .unwrap_or_default()
}

#[tokio::test]
async fn codex_cli_runs_unchanged_on_every_provider_api() {
    let Some(bin) = client("codex").await else {
        return;
    };
    let stack = Stack::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let (marker, content) = marker_file(tmp.path());
    for (via, base) in stack.targets() {
        for model in MODELS {
            let what = format!("codex via {via} on {model}");
            let home = tmp
                .path()
                .join(format!("{via}-{}", model.replace('/', "_")));
            std::fs::create_dir_all(&home).unwrap();
            let exec = |args: &[&str]| {
                let mut cmd = codex(&bin, &home, &base, tmp.path());
                cmd.args(["exec", "--skip-git-repo-check", "--json", "-m", model])
                    .args(args);
                cmd
            };

            // Text: Codex's default request (function tools, the multi-agent namespace,
            // hosted web search) is accepted by every provider.
            let out = run(
                exec(&["mock:say hello from plano"]),
                &format!("{what}: text"),
            )
            .await;
            assert_eq!(
                codex_last_message(&out),
                "hello from plano",
                "{what}: text\n{out}"
            );

            // A tool round trip: the mock asks for `exec_command`, Codex runs it, the mock
            // answers from its output.
            let prompt = format!(
                "read the marker\nmock:call exec_command {{\"cmd\": \"cat {}\"}}",
                marker.display()
            );
            let out = run(exec(&[&prompt]), &format!("{what}: tool")).await;
            let last = codex_last_message(&out);
            assert!(
                last.starts_with("tool result:") && last.contains(&content),
                "{what}: tool round trip\n{out}"
            );

            // A call to a member of the `multi_agent_v1` namespace comes back in the form
            // Codex routes to that tool (it answers about the agent id, not "unknown tool").
            // On OpenAI's Responses API the namespace is OpenAI's own: not translated.
            if !model.starts_with("openai/") {
                let prompt = "wait for it\nmock:call multi_agent_v1__wait_agent {\"targets\": [\"nobody\"], \"timeout_ms\": 10}";
                let out = run(exec(&[prompt]), &format!("{what}: namespace")).await;
                let last = codex_last_message(&out);
                assert!(
                    last.starts_with("tool result:") && last.contains("nobody"),
                    "{what}: namespaced call\n{out}"
                );
            }

            // The second turn of the last session (`codex exec resume`).
            let out = run(
                exec(&["resume", "--last", "mock:say second turn"]),
                &format!("{what}: resume"),
            )
            .await;
            assert_eq!(
                codex_last_message(&out),
                "second turn",
                "{what}: resume\n{out}"
            );
        }
    }
    stack.edge.control.shutdown.trigger();
    stack.egress.stop().await.unwrap();
}

fn claude(
    bin: &Path,
    home: &Path,
    base: &str,
    model: &str,
    work: &Path,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.current_dir(work)
        .env("HOME", home)
        .env("ANTHROPIC_BASE_URL", base)
        .env("ANTHROPIC_API_KEY", "sk-client")
        .env("ANTHROPIC_SMALL_FAST_MODEL", model)
        .env("ANTHROPIC_DEFAULT_HAIKU_MODEL", model)
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env_remove("ANTHROPIC_AUTH_TOKEN")
        .env_remove("CLAUDE_CODE_USE_BEDROCK")
        .env_remove("CLAUDE_CODE_USE_VERTEX")
        .args(["--model", model]);
    cmd
}

#[tokio::test]
async fn claude_code_runs_unchanged_on_every_provider_api() {
    let Some(bin) = client("claude").await else {
        return;
    };
    let stack = Stack::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let (marker, content) = marker_file(tmp.path());
    for (via, base) in stack.targets() {
        for model in MODELS {
            let what = format!("claude via {via} on {model}");
            let home = tmp
                .path()
                .join(format!("claude-{via}-{}", model.replace('/', "_")));
            std::fs::create_dir_all(&home).unwrap();

            // Text, `--output-format json`.
            let mut cmd = claude(&bin, &home, &base, model, tmp.path());
            cmd.args(["-p", "mock:say hello from plano", "--output-format", "json"]);
            let out = run(cmd, &format!("{what}: text")).await;
            let result: Value = serde_json::from_str(out.trim())
                .unwrap_or_else(|e| panic!("{what}: not one JSON result ({e}):\n{out}"));
            assert_eq!(result["is_error"], false, "{what}: text\n{out}");
            assert_eq!(result["result"], "hello from plano", "{what}: text\n{out}");
            let session = result["session_id"].as_str().unwrap().to_owned();

            // A second turn of that session.
            let mut cmd = claude(&bin, &home, &base, model, tmp.path());
            cmd.args(["-p", "mock:say second turn", "--output-format", "json"])
                .args(["--resume", &session]);
            let out = run(cmd, &format!("{what}: resume")).await;
            let result: Value = serde_json::from_str(out.trim())
                .unwrap_or_else(|e| panic!("{what}: resume: not JSON ({e}):\n{out}"));
            assert_eq!(result["is_error"], false, "{what}: resume\n{out}");
            assert_eq!(result["result"], "second turn", "{what}: resume\n{out}");
            assert_eq!(
                result["session_id"],
                session.as_str(),
                "{what}: resume\n{out}"
            );

            // A tool round trip (Claude Code's Read tool), `--output-format stream-json`.
            let prompt = format!(
                "read the marker\nmock:call Read {{\"file_path\": \"{}\"}}",
                marker.display()
            );
            let mut cmd = claude(&bin, &home, &base, model, tmp.path());
            cmd.args(["-p", &prompt, "--output-format", "stream-json", "--verbose"]);
            let out = run(cmd, &format!("{what}: tool")).await;
            let events: Vec<Value> = out
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            let used_read = events.iter().any(|e| {
                e["type"] == "assistant"
                    && e["message"]["content"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|b| b["type"] == "tool_use" && b["name"] == "Read")
                    })
            });
            assert!(used_read, "{what}: no Read tool_use in the stream\n{out}");
            let result = events
                .iter()
                .find(|e| e["type"] == "result")
                .unwrap_or_else(|| panic!("{what}: no result event\n{out}"));
            assert_eq!(result["is_error"], false, "{what}: tool\n{out}");
            let text = result["result"].as_str().unwrap_or_default();
            assert!(
                text.starts_with("tool result:") && text.contains(&content),
                "{what}: tool round trip\n{out}"
            );
        }
    }
    stack.edge.control.shutdown.trigger();
    stack.egress.stop().await.unwrap();
}

/// What Codex's default request carries besides its function tools: a namespace, a hosted
/// web search; plus a code interpreter no provider here has.
fn responses_request(stream: bool) -> Value {
    serde_json::json!({
        "model": "MODEL",
        "stream": stream,
        "input": "hi",
        "tools": [
            {"type": "namespace", "name": "multi_agent_v1", "description": "agents", "tools": [
                {"type": "function", "name": "spawn_agent", "parameters": {"type": "object",
                 "properties": {"task": {"type": "string"}}, "required": ["task"]}}]},
            {"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
            {"type": "web_search", "external_web_access": false},
            {"type": "code_interpreter", "container": {"type": "auto"}}
        ]
    })
}

fn with_model(mut body: Value, model: &str) -> Value {
    body["model"] = Value::String(model.to_owned());
    body
}

#[tokio::test]
async fn hosted_tools_are_mapped_dropped_or_refused_and_namespaces_round_trip() {
    let mock = MockProvider::start().await.unwrap();
    let yaml = format!(
        "version: v0.4.0\nmodel_providers:\n  - model: groq/hosted-chat\n    access_key: k\n    base_url: {url}\n  - model: anthropic/hosted-claude\n    access_key: k\n    base_url: {url}\n  - model: groq/strict\n    access_key: k\n    base_url: {url}\n    hosted_tools: refuse\n",
        url = mock.url()
    );
    let egress = Egress::start(&yaml, &[]).await.unwrap();
    let http = reqwest::Client::new();
    let url = egress.url("/v1/responses");

    for stream in [false, true] {
        // Chat-only provider: the namespace member is flattened, both hosted tools dropped
        // and named; the call comes back with its namespace.
        let res = http
            .post(&url)
            .json(&with_model(responses_request(stream), "groq/hosted-chat"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers()["x-plano-dropped-tools"],
            "web_search, code_interpreter"
        );
        let body = res.text().await.unwrap();
        let sent = mock.requests().pop().unwrap().body;
        let names: Vec<&str> = sent["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["multi_agent_v1__spawn_agent", "exec_command"]);
        assert!(sent.get("__plano_hosted_tools").is_none());
        let output = if stream {
            let completed = body
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .find(|e| e["type"] == "response.completed")
                .unwrap();
            completed["response"]["output"].clone()
        } else {
            serde_json::from_str::<Value>(&body).unwrap()["output"].clone()
        };
        assert_eq!(output[0]["type"], "function_call", "{body}");
        assert_eq!(output[0]["name"], "spawn_agent", "{body}");
        assert_eq!(output[0]["namespace"], "multi_agent_v1", "{body}");

        // Anthropic provider: web search becomes Anthropic's server tool, the code
        // interpreter is dropped.
        let res = http
            .post(&url)
            .json(&with_model(
                responses_request(stream),
                "anthropic/hosted-claude",
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-plano-dropped-tools"], "code_interpreter");
        let _ = res.text().await.unwrap();
        let sent = mock.requests().pop().unwrap().body;
        let tools = sent["tools"].as_array().unwrap();
        assert_eq!(tools[0]["name"], "multi_agent_v1__spawn_agent");
        assert!(
            tools
                .iter()
                .any(|t| t["type"] == "web_search_20250305" && t["name"] == "web_search"),
            "{sent}"
        );
    }

    // The second turn replays the namespaced call: the provider sees the flat name again.
    let mut next = with_model(responses_request(false), "groq/hosted-chat");
    next["input"] = serde_json::json!([
        {"role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "c1", "name": "spawn_agent",
         "namespace": "multi_agent_v1", "arguments": "{\"task\":\"x\"}"},
        {"type": "function_call_output", "call_id": "c1", "output": "spawned"}
    ]);
    let res = http.post(&url).json(&next).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let sent = mock.requests().pop().unwrap().body;
    assert_eq!(
        sent["messages"][1]["tool_calls"][0]["function"]["name"],
        "multi_agent_v1__spawn_agent"
    );

    // (Three Responses requests and the Messages one below reached groq with hosted tools;
    // the metrics recorder is the process's, so this test's providers have their own names.)
    // Claude Code's WebSearch sub-request toward a chat provider: sent without the server
    // tool, and said so.
    let res = http
        .post(egress.url("/v1/messages"))
        .json(
            &serde_json::json!({"model": "groq/hosted-chat", "max_tokens": 100,
            "messages": [{"role": "user", "content": "search"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 8}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["x-plano-dropped-tools"],
        "web_search_20250305"
    );
    let sent = mock.requests().pop().unwrap().body;
    assert!(sent.get("tools").is_none(), "{sent}");

    // `hosted_tools: refuse`: a 400 naming the tool instead.
    let res = http
        .post(&url)
        .json(&with_model(responses_request(false), "groq/strict"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let err: Value = res.json().await.unwrap();
    assert!(err.to_string().contains("web_search"), "{err}");

    let metrics = egress.metrics().render();
    assert!(
        metrics.contains(
            r#"plano_llm_dropped_tools_total{provider="groq/hosted-chat",tool="code_interpreter"} 3"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"plano_llm_dropped_tools_total{provider="groq/hosted-chat",tool="web_search"} 4"#
        ),
        "{metrics}"
    );
    egress.stop().await.unwrap();
}
