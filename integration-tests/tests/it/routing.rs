//! Routing by preference end to end: the real egress, a router model played by the mock
//! (keywords: "function"/"code" → the code route, anything else → the chat route), and the
//! egress's own selection, retries and failover behind it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use integration_tests::harness::Egress;
use integration_tests::mock::MockProvider;
use plano_egress::routing::sources::{CostFormat, CostSource};
use plano_egress::routing::{
    AffinitySettings, Prefer, Preference, RoutingSettings, SourceSettings,
};
use serde_json::{Value, json};

use crate::support::{eventually, http_client, metric};

const REQUESTED: &str = "openai/gpt-4o-mini";
const CODE_MODEL: &str = "anthropic/claude-sonnet";
const CHAT_MODEL: &str = "openai/gpt-4o";

fn yaml(mock: &str, router_base: &str) -> String {
    format!(
        r#"
version: v0.4.0
listeners:
  - type: model
    name: model_listener
    port: 12000
model_providers:
  - model: openai/gpt-4o-mini
    base_url: {mock}
    access_key: k
    default: true
  - model: openai/gpt-4o
    base_url: {mock}
    access_key: k
  - model: anthropic/claude-sonnet
    base_url: {mock}
    access_key: k
  - model: openai/router
    base_url: {router_base}
    access_key: k
  - model: openai/mock-router-down
    base_url: {mock}
    access_key: k
  - model: openai/mock-router-slow
    base_url: {mock}
    access_key: k
  - model: openai/mock-router-nonsense
    base_url: {mock}
    access_key: k
  - model: anthropic/claude-router
    base_url: {mock}
    access_key: k
"#
    )
}

fn preferences(prefer: Prefer) -> Vec<Preference> {
    vec![
        Preference {
            name: "code_generation".into(),
            description: "generating new code, writing functions".into(),
            models: vec![CODE_MODEL.into(), CHAT_MODEL.into()],
            prefer,
        },
        Preference {
            name: "small_talk".into(),
            description: "casual chat and greetings".into(),
            models: vec![CHAT_MODEL.into()],
            prefer: Prefer::None,
        },
    ]
}

fn settings(router: &str) -> RoutingSettings {
    RoutingSettings {
        preferences: preferences(Prefer::None),
        router_model: Some(router.into()),
        router_timeout: Duration::from_millis(500),
        ..RoutingSettings::default()
    }
}

async fn start(router: &str, mut s: RoutingSettings) -> (Egress, MockProvider) {
    let mock = MockProvider::start().await.unwrap();
    s.router_model = Some(router.into());
    let egress = Egress::start_routed(&yaml(&mock.url(), &mock.url()), s)
        .await
        .unwrap();
    (egress, mock)
}

#[derive(Clone, Copy, Debug)]
enum Api {
    Chat,
    Messages,
    Responses,
}

/// Send `text` as a one-turn conversation (after `history`) asking for the default model;
/// (status, x-plano-provider, x-plano-route, body).
async fn ask_on(
    egress: &Egress,
    api: Api,
    history: &[(&str, &str)],
    text: &str,
) -> (u16, String, Option<String>, Value) {
    let mut messages: Vec<Value> = history
        .iter()
        .map(|(r, c)| json!({"role": r, "content": c}))
        .collect();
    messages.push(json!({"role": "user", "content": text}));
    let (path, body) = match api {
        Api::Chat => (
            "/v1/chat/completions",
            json!({"model": REQUESTED, "messages": messages}),
        ),
        Api::Messages => (
            "/v1/messages",
            json!({"model": REQUESTED, "max_tokens": 64, "messages": messages}),
        ),
        Api::Responses => (
            "/v1/responses",
            json!({"model": REQUESTED, "input": messages}),
        ),
    };
    let res = http_client()
        .post(egress.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let header = |n: &str| {
        res.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let provider = header("x-plano-provider").unwrap_or_default();
    let route = header("x-plano-route");
    (
        status,
        provider,
        route,
        res.json().await.unwrap_or(Value::Null),
    )
}

async fn ask(egress: &Egress, text: &str) -> (u16, String, Option<String>) {
    let (s, p, r, _) = ask_on(egress, Api::Chat, &[], text).await;
    (s, p, r)
}

/// How many requests the mock got for this upstream model id.
fn calls(mock: &MockProvider, model_id: &str) -> usize {
    mock.requests()
        .iter()
        .filter(|r| r.body.get("model").and_then(Value::as_str) == Some(model_id))
        .count()
}

#[tokio::test]
async fn preferences_send_code_and_chat_to_different_models_on_every_api() {
    let (egress, mock) = start("openai/router", settings("openai/router")).await;
    for api in [Api::Chat, Api::Messages, Api::Responses] {
        let (status, provider, route, body) =
            ask_on(&egress, api, &[], "write a Python function").await;
        assert_eq!(status, 200, "{api:?}: {body}");
        assert_eq!(provider, CODE_MODEL, "{api:?}");
        assert_eq!(route.as_deref(), Some("code_generation"), "{api:?}");
        let (status, provider, route, body) = ask_on(&egress, api, &[], "hello there").await;
        assert_eq!(status, 200, "{api:?}: {body}");
        assert_eq!(provider, CHAT_MODEL, "{api:?}");
        assert_eq!(route.as_deref(), Some("small_talk"), "{api:?}");
    }
    // The upstreams got their own model ids; the router saw the prompt in Plano's format.
    assert!(calls(&mock, "claude-sonnet") >= 3);
    assert!(calls(&mock, "gpt-4o") >= 3);
    assert_eq!(calls(&mock, "gpt-4o-mini"), 0);
    let router_req = mock
        .requests()
        .into_iter()
        .find(|r| r.body["model"] == "router")
        .unwrap();
    let prompt = router_req.body["messages"][0]["content"].as_str().unwrap();
    assert!(prompt.contains(
        r#"{"name": "code_generation", "description": "generating new code, writing functions""#
    ));
    assert!(prompt.contains("\"content\": \"write a Python function\""));
    // Chat and Messages ask the same question: the second was answered from the cache.
    assert!(metric(&egress, "plano_routing_decisions_total", "source=\"cache\"") >= 1.0);
    assert!(
        metric(
            &egress,
            "plano_routing_decisions_total",
            "route=\"code_generation\""
        ) >= 3.0
    );
    egress.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_router_falls_back_to_the_requested_model_and_is_counted() {
    // Nothing listens on port 1: unreachable.
    let mock = MockProvider::start().await.unwrap();
    for (router, base, reason) in [
        ("openai/mock-router-down", mock.url(), "router_status"),
        ("openai/mock-router-slow", mock.url(), "router_timeout"),
        ("openai/mock-router-nonsense", mock.url(), "router_nonsense"),
        (
            "openai/router",
            "http://127.0.0.1:1".to_string(),
            "router_unreachable",
        ),
    ] {
        let egress = Egress::start_routed(&yaml(&mock.url(), &base), settings(router))
            .await
            .unwrap();
        let label = format!("reason=\"{reason}\"");
        let before = metric(&egress, "plano_routing_fallbacks_total", &label);
        let started = std::time::Instant::now();
        let (status, provider, route) = ask(&egress, "write a Python function").await;
        assert_eq!(status, 200, "{router}");
        assert_eq!(provider, REQUESTED, "{router}");
        assert_eq!(route, None, "{router}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{router}: the router timeout bounds the wait"
        );
        assert_eq!(
            metric(&egress, "plano_routing_fallbacks_total", &label),
            before + 1.0,
            "{router}"
        );
        egress.stop().await.unwrap();
    }
}

/// A models.dev price list on a local server; the test changes the prices.
async fn price_list(prices: Arc<Mutex<Value>>) -> String {
    let app = axum::Router::new().route(
        "/api.json",
        axum::routing::get(move || {
            let prices = prices.clone();
            async move { axum::Json(prices.lock().unwrap().clone()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/api.json")
}

fn prices(claude: f64, gpt4o: f64) -> Value {
    json!({
        "anthropic": {"models": {"claude-sonnet": {"cost": {"input": claude, "output": claude * 5.0}}}},
        "openai": {"models": {"gpt-4o": {"cost": {"input": gpt4o, "output": gpt4o * 4.0}}}}
    })
}

#[tokio::test]
async fn cheapest_follows_a_changed_price_list_without_a_restart() {
    let list = Arc::new(Mutex::new(prices(3.0, 2.5)));
    let url = price_list(list.clone()).await;
    let mut s = settings("openai/router");
    s.preferences = preferences(Prefer::Cheapest);
    s.sources = vec![SourceSettings::Cost(CostSource {
        format: CostFormat::ModelsDev,
        url,
        refresh: Some(Duration::from_millis(100)),
        aliases: Default::default(),
    })];
    let (egress, _mock) = start("openai/router", s).await;
    // gpt-4o: 2.5 + 10 = 12.5 per million; claude: 3 + 15 = 18.
    eventually(Duration::from_secs(10), || async {
        ask(&egress, "write a Python function").await.1 == CHAT_MODEL
    })
    .await;
    *list.lock().unwrap() = prices(0.25, 2.5);
    eventually(Duration::from_secs(10), || async {
        ask(&egress, "write a Python function").await.1 == CODE_MODEL
    })
    .await;
    assert!(
        metric(
            &egress,
            "plano_routing_metrics_refreshes_total",
            "outcome=\"ok\""
        ) >= 2.0
    );
    egress.stop().await.unwrap();
}

#[tokio::test]
async fn a_conversation_sticks_to_its_provider_under_session_affinity() {
    let mut s = settings("openai/router");
    s.affinity = Some(AffinitySettings {
        ttl: Duration::from_secs(60),
        max_entries: 100,
    });
    let (egress, mock) = start("openai/router", s).await;
    let system = ("system", "You are a helpful assistant.");
    let (status, provider, route, _) = ask_on(&egress, Api::Chat, &[system], "hello there").await;
    assert_eq!((status, provider.as_str()), (200, CHAT_MODEL));
    assert_eq!(route.as_deref(), Some("small_talk"));
    let routed_before = calls(&mock, "router");
    // Turn 2 of the same conversation asks for code: it stays where its cache is warm.
    let (status, provider, route, _) = ask_on(
        &egress,
        Api::Chat,
        &[system, ("user", "hello there"), ("assistant", "hi!")],
        "now write a Python function",
    )
    .await;
    assert_eq!((status, provider.as_str()), (200, CHAT_MODEL));
    assert_eq!(route.as_deref(), Some("small_talk"));
    assert_eq!(
        calls(&mock, "router"),
        routed_before,
        "a pinned turn skips the router"
    );
    // On Messages too, the same conversation is the same session.
    let (_, provider, _, _) = ask_on(
        &egress,
        Api::Messages,
        &[("user", "hello there"), ("assistant", "hi!")],
        "write code",
    )
    .await;
    assert_eq!(
        provider, CODE_MODEL,
        "another conversation (no system prompt) is routed afresh"
    );
    // A new conversation asking for code goes to the code model.
    let (_, provider, _, _) =
        ask_on(&egress, Api::Chat, &[system], "write a Python function").await;
    assert_eq!(provider, CODE_MODEL);
    // The client can name the session itself.
    let res = http_client()
        .post(egress.url("/v1/chat/completions"))
        .header("x-model-affinity", "my-session")
        .json(&json!({"model": REQUESTED, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-plano-provider"], CHAT_MODEL);
    let res = http_client()
        .post(egress.url("/v1/chat/completions"))
        .header("x-model-affinity", "my-session")
        .json(&json!({"model": REQUESTED, "messages": [{"role": "user", "content": "a function please"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-plano-provider"], CHAT_MODEL);
    assert!(
        metric(
            &egress,
            "plano_routing_cache_lookups_total",
            "cache=\"session\",outcome=\"hit\""
        ) >= 2.0
    );
    egress.stop().await.unwrap();
}

#[tokio::test]
async fn request_preferences_route_and_never_reach_the_provider() {
    let (egress, mock) = start("openai/router", settings("openai/router")).await;
    let res = http_client()
        .post(egress.url("/v1/chat/completions"))
        .json(&json!({
            "model": REQUESTED,
            "messages": [{"role": "user", "content": "write a Python function"}],
            "routing_preferences": [
                {"name": "coding", "description": "code", "models": [CHAT_MODEL]}
            ]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-plano-provider"], CHAT_MODEL);
    assert_eq!(res.headers()["x-plano-route"], "coding");
    let upstream = mock
        .requests()
        .into_iter()
        .find(|r| r.body["model"] == "gpt-4o")
        .unwrap();
    assert!(upstream.body.get("routing_preferences").is_none());
    // A provider hint pins the provider: no routing.
    let res = http_client()
        .post(egress.url("/v1/chat/completions"))
        .header("x-plano-llm-provider-hint", REQUESTED)
        .json(&json!({"model": REQUESTED, "messages": [{"role": "user", "content": "write a Python function"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-plano-provider"], REQUESTED);
    assert!(res.headers().get("x-plano-route").is_none());
    egress.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_routed_model_fails_over_to_the_routes_next_model() {
    let mock = MockProvider::start().await.unwrap();
    // The code route's first model is down; its second answers.
    let yaml = yaml(&mock.url(), &mock.url()).replace(
        "  - model: anthropic/claude-sonnet\n    base_url: ",
        "  - model: anthropic/claude-sonnet\n    base_url: http://127.0.0.1:1\n    name: claude-down\n  - model: anthropic/claude-unused\n    base_url: ",
    );
    let mut s = settings("openai/router");
    s.preferences[0].models = vec!["claude-down".into(), CHAT_MODEL.into()];
    let egress = Egress::start_routed(&yaml, s).await.unwrap();
    let (status, provider, route) = ask(&egress, "write a Python function").await;
    assert_eq!(status, 200);
    assert_eq!(provider, CHAT_MODEL);
    assert_eq!(route.as_deref(), Some("code_generation"));
    egress.stop().await.unwrap();
}

/// `prefer: fastest` with latencies from a real Prometheus server, which scrapes a local
/// endpoint the test controls. Needs Debian's `prometheus` (skipped without it unless
/// `PLANO_REQUIRE_PROMETHEUS` is set).
#[tokio::test]
async fn fastest_follows_latencies_queried_from_prometheus() {
    let Some(prometheus) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    }) else {
        assert!(
            std::env::var_os("PLANO_REQUIRE_PROMETHEUS").is_none(),
            "PLANO_REQUIRE_PROMETHEUS is set but `prometheus` is not on PATH"
        );
        eprintln!(
            "SKIPPED fastest_follows_latencies_queried_from_prometheus: no `prometheus` on PATH"
        );
        return;
    };
    // The scraped endpoint: p50 latency per model, changed by the test.
    let latencies = Arc::new(Mutex::new((0.9, 0.2)));
    let shown = latencies.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (claude, gpt4o) = *shown.lock().unwrap();
            async move {
                format!(
                    "# TYPE model_latency_p50_seconds gauge\nmodel_latency_p50_seconds{{model_name=\"{CODE_MODEL}\"}} {claude}\nmodel_latency_p50_seconds{{model_name=\"{CHAT_MODEL}\"}} {gpt4o}\n"
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: models\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .unwrap();
    // On a port Prometheus proved it could bind (crate::support::start_on_some_port).
    let (_prometheus, prom_port) = crate::support::start_on_some_port(
        |port| {
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            tokio::process::Command::new(&prometheus)
                .args([
                    format!("--config.file={}", config.display()),
                    format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()),
                    format!("--web.listen-address=127.0.0.1:{port}"),
                ])
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        },
        |port| async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
    let prom_addr = format!("127.0.0.1:{prom_port}");

    let mut s = settings("openai/router");
    s.preferences = preferences(Prefer::Fastest);
    s.sources = vec![SourceSettings::Latency(
        plano_egress::routing::sources::LatencySource {
            url: format!("http://{prom_addr}"),
            query: "model_latency_p50_seconds".into(),
            refresh: Some(Duration::from_millis(200)),
        },
    )];
    let (egress, _mock) = start("openai/router", s).await;
    eventually(Duration::from_secs(30), || async {
        ask(&egress, "write a Python function").await.1 == CHAT_MODEL
    })
    .await;
    *latencies.lock().unwrap() = (0.1, 0.5);
    eventually(Duration::from_secs(30), || async {
        ask(&egress, "write a Python function").await.1 == CODE_MODEL
    })
    .await;
    egress.stop().await.unwrap();
}

#[tokio::test]
async fn the_router_can_be_any_configured_provider() {
    // An Anthropic model as router: the prompt goes out as a Messages request and its
    // answer is read back through the translation.
    let (egress, mock) = start(
        "anthropic/claude-router",
        settings("anthropic/claude-router"),
    )
    .await;
    let (status, provider, route) = ask(&egress, "write a Python function").await;
    assert_eq!((status, provider.as_str()), (200, CODE_MODEL));
    assert_eq!(route.as_deref(), Some("code_generation"));
    let router_req = mock
        .requests()
        .into_iter()
        .find(|r| r.body["model"] == "claude-router")
        .unwrap();
    assert!(
        router_req.path.ends_with("/messages"),
        "{}",
        router_req.path
    );
    assert_eq!(router_req.headers["x-api-key"], "k");
    egress.stop().await.unwrap();
}

#[tokio::test]
async fn long_stable_prefixes_get_anthropic_cache_breakpoints() {
    let s = RoutingSettings {
        cache_control_min_tokens: Some(1024),
        ..RoutingSettings::default()
    };
    let (egress, mock) = start("openai/router", s).await;
    let long_system = "You are a careful assistant. ".repeat(300);
    for (system, expect) in [(long_system.as_str(), true), ("be terse", false)] {
        let res = http_client()
            .post(egress.url("/v1/chat/completions"))
            .json(&json!({"model": CODE_MODEL, "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": "hi"}
            ]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let sent = mock.requests().pop().unwrap();
        assert!(sent.path.ends_with("/messages"));
        let marked = sent.body["system"]
            .as_array()
            .and_then(|b| b.last())
            .and_then(|b| b.get("cache_control"))
            .is_some();
        assert_eq!(marked, expect, "{}", sent.body["system"]);
    }
    egress.stop().await.unwrap();
}

#[tokio::test]
async fn a_routing_config_file_routes() {
    let mock = MockProvider::start().await.unwrap();
    let yaml = format!(
        "{}\noverrides:\n  llm_routing_model: openai/router\nrouting_preferences:\n  - name: code_generation\n    description: generating new code, writing functions\n    models: [{CODE_MODEL}, {CHAT_MODEL}]\n  - name: small_talk\n    description: casual chat and greetings\n    models: [{CHAT_MODEL}]\nprompt_caching:\n  enabled: true\n",
        yaml(&mock.url(), &mock.url())
    );
    let egress = Egress::start(&yaml, &[]).await.unwrap();
    let (status, provider, route) = ask(&egress, "write a Python function").await;
    assert_eq!((status, provider.as_str()), (200, CODE_MODEL));
    assert_eq!(route.as_deref(), Some("code_generation"));
    let (_, provider, route) = ask(&egress, "hello there").await;
    assert_eq!(provider, CHAT_MODEL);
    assert_eq!(route.as_deref(), Some("small_talk"));
    egress.stop().await.unwrap();
}

/// A reload that leaves the routing keys alone keeps the router and its caches (the same
/// conversation is not sent to the router again); one that changes them starts afresh.
#[tokio::test]
async fn routing_caches_survive_a_reload_that_does_not_change_routing() {
    let mock = MockProvider::start().await.unwrap();
    let routing = |description: &str| {
        format!(
            "\noverrides:\n  llm_routing_model: openai/router\nrouting_preferences:\n  - name: code_generation\n    description: {description}\n    models: [{CODE_MODEL}]\n  - name: small_talk\n    description: casual chat and greetings\n    models: [{CHAT_MODEL}]\n"
        )
    };
    let base = yaml(&mock.url(), &mock.url());
    let extra = format!(
        "  - model: openai/gpt-4.1\n    base_url: {}\n    access_key: k\n",
        mock.url()
    );
    let first = format!(
        "{base}{}",
        routing("generating new code, writing functions")
    );
    let egress = Egress::start(&first, &[]).await.unwrap();
    let router_calls = || calls(&mock, "router");
    let (_, provider, _) = ask(&egress, "write a Python function").await;
    assert_eq!(provider, CODE_MODEL);
    assert_eq!(router_calls(), 1);

    // Reload with one more provider, routing unchanged.
    let reload = |yaml: String| {
        let mut config = plano_config::load_str(&yaml, None, &|_| None).unwrap();
        // Stay on the port the test server was moved to.
        config.model_listener.addr = egress.addr;
        egress
            .control
            .config
            .send(std::sync::Arc::new(config))
            .unwrap();
    };
    reload(format!(
        "{base}{extra}{}",
        routing("generating new code, writing functions")
    ));
    let hinted = || async {
        http_client()
            .post(egress.url("/v1/chat/completions"))
            .header("x-plano-llm-provider-hint", "openai/gpt-4.1")
            .json(&json!({"model": REQUESTED, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .is_ok_and(|r| {
                r.headers()
                    .get("x-plano-provider")
                    .is_some_and(|p| p == "openai/gpt-4.1")
            })
    };
    eventually(Duration::from_secs(5), hinted).await;
    let (_, provider, route) = ask(&egress, "write a Python function").await;
    assert_eq!(provider, CODE_MODEL);
    assert_eq!(route.as_deref(), Some("code_generation"));
    assert_eq!(router_calls(), 1, "the cached decision survived the reload");

    // Changed routing: a new router, so the same conversation is asked about again.
    reload(format!(
        "{base}{}",
        routing("writing functions and programs")
    ));
    eventually(Duration::from_secs(5), || async { !hinted().await }).await;
    let (_, provider, _) = ask(&egress, "write a Python function").await;
    assert_eq!(provider, CODE_MODEL);
    assert_eq!(router_calls(), 2);
    egress.stop().await.unwrap();
}

/// `routing.route_on_user_only`: a tool-result turn goes where the conversation's last
/// routed turn went, without asking the router; the next user turn is routed again.
#[tokio::test]
async fn route_on_user_only_replays_the_last_route_for_tool_results() {
    let mock = MockProvider::start().await.unwrap();
    let config = |on: bool| {
        format!(
            "{}\noverrides:\n  llm_routing_model: openai/router\nrouting:\n  route_on_user_only: {on}\nrouting_preferences:\n  - name: code_generation\n    description: generating new code, writing functions\n    models: [{CODE_MODEL}]\n  - name: small_talk\n    description: casual chat and greetings\n    models: [{CHAT_MODEL}]\n",
            yaml(&mock.url(), &mock.url())
        )
    };
    let first = json!({"role": "user", "content": "write a Python function"});
    let tool_turn = json!([
        {"role": "system", "content": "you are a coding agent"},
        first,
        // Assistant text makes the router's view of the conversation new (no decision-cache hit).
        {"role": "assistant", "content": "running it now", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "run", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}
    ]);
    let send = |egress: &Egress, messages: Value| {
        let url = egress.url("/v1/chat/completions");
        async move {
            let r = http_client()
                .post(url)
                .json(&json!({"model": REQUESTED, "messages": messages, "tools": [{"type": "function", "function": {"name": "run", "parameters": {"type": "object"}}}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
            (h("x-plano-provider").unwrap(), h("x-plano-route"))
        }
    };
    for on in [true, false] {
        let before = calls(&mock, "router");
        let egress = Egress::start(&config(on), &[]).await.unwrap();
        let (provider, route) = send(
            &egress,
            json!([{"role": "system", "content": "you are a coding agent"}, first]),
        )
        .await;
        assert_eq!(provider, CODE_MODEL);
        assert_eq!(route.as_deref(), Some("code_generation"));
        assert_eq!(calls(&mock, "router") - before, 1);

        let (provider, route) = send(&egress, tool_turn.clone()).await;
        assert_eq!(provider, CODE_MODEL);
        assert_eq!(route.as_deref(), Some("code_generation"));
        // On: replayed, no router call. Off: the router is asked again.
        let expected = if on { 1 } else { 2 };
        assert_eq!(calls(&mock, "router") - before, expected, "on={on}");
        if on {
            assert!(
                metric(
                    &egress,
                    "plano_routing_decisions_total",
                    "source=\"replay\""
                ) >= 1.0
            );
        }
        egress.stop().await.unwrap();
    }
}
