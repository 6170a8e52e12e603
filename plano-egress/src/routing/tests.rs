use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use super::client::CallError;
use super::prompt::Turn;
use super::*;

type Script = Box<dyn Fn(&str) -> Result<String, CallError> + Send + Sync>;

/// A router backend that answers from a script and records the prompts it saw.
struct Fake {
    answer: Script,
    calls: AtomicUsize,
    prompts: Mutex<Vec<Map<String, Value>>>,
}

impl Fake {
    fn new(f: impl Fn(&str) -> Result<String, CallError> + Send + Sync + 'static) -> Self {
        Self {
            answer: Box::new(f),
            calls: AtomicUsize::new(0),
            prompts: Mutex::new(Vec::new()),
        }
    }

    /// Routes by keyword, like the mock: "function"/"code" → code, else chat.
    fn keywords() -> Self {
        Self::new(|prompt| {
            let conv = prompt
                .rsplit("<conversation>")
                .next()
                .and_then(|c| c.split("</conversation>").next())
                .unwrap_or_default();
            Ok(if conv.contains("function") || conv.contains("code") {
                r#"{"route": ["code"]}"#.into()
            } else {
                r#"{"route": ["chat"]}"#.into()
            })
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl RouterBackend for Fake {
    async fn complete(
        &self,
        _model: &str,
        body: Map<String, Value>,
        _timeout: Duration,
    ) -> Result<String, CallError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let prompt = body["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.prompts.lock().unwrap().push(body);
        (self.answer)(&prompt)
    }
}

fn pref(name: &str, models: &[&str], prefer: Prefer) -> Preference {
    Preference {
        name: name.into(),
        description: format!("{name} things"),
        models: models.iter().map(|s| s.to_string()).collect(),
        prefer,
    }
}

fn settings() -> RoutingSettings {
    RoutingSettings {
        preferences: vec![
            pref("code", &["openai/gpt-4o", "anthropic/claude"], Prefer::None),
            pref("chat", &["openai/gpt-4o-mini"], Prefer::None),
        ],
        router_model: Some("router".into()),
        ..RoutingSettings::default()
    }
}

fn ask(text: &str) -> Conversation {
    Conversation {
        turns: vec![Turn::new("system", "sys"), Turn::new("user", text)],
        tools: vec![],
    }
}

fn routed(route: &str, models: &[&str], source: Source) -> Decision {
    Decision::Routed {
        route: Some(route.into()),
        models: models.iter().map(|s| s.to_string()).collect(),
        source,
    }
}

#[tokio::test]
async fn the_router_picks_the_route_and_its_models() {
    let r = Router::without_sources(settings());
    let fake = Fake::keywords();
    assert_eq!(
        r.decide(&fake, &ask("write a Python function"), None, None)
            .await,
        routed(
            "code",
            &["openai/gpt-4o", "anthropic/claude"],
            Source::Router
        )
    );
    assert_eq!(
        r.decide(&fake, &ask("hello there"), None, None).await,
        routed("chat", &["openai/gpt-4o-mini"], Source::Router)
    );
    let prompts = fake.prompts.lock().unwrap();
    assert_eq!(prompts[0]["model"], "router");
    let p = prompts[0]["messages"][0]["content"].as_str().unwrap();
    assert!(
        p.contains(r#"{"name": "code", "description": "code things""#),
        "{p}"
    );
    assert!(p.contains("write a Python function"));
    assert!(
        !p.contains("\"sys\""),
        "system prompts are not shown to the router"
    );
}

#[tokio::test(start_paused = true)]
async fn decisions_are_cached_per_conversation_for_the_ttl() {
    let mut s = settings();
    s.decision_ttl = Duration::from_secs(30);
    let r = Router::without_sources(s);
    let fake = Fake::keywords();
    r.decide(&fake, &ask("write code"), None, None).await;
    let again = r.decide(&fake, &ask("write code"), None, None).await;
    assert_eq!(
        again,
        routed(
            "code",
            &["openai/gpt-4o", "anthropic/claude"],
            Source::Cache
        )
    );
    assert_eq!(fake.calls(), 1);
    // Another conversation is another key.
    r.decide(&fake, &ask("hi"), None, None).await;
    assert_eq!(fake.calls(), 2);
    tokio::time::advance(Duration::from_secs(31)).await;
    let later = r.decide(&fake, &ask("write code"), None, None).await;
    assert!(matches!(
        later,
        Decision::Routed {
            source: Source::Router,
            ..
        }
    ));
    assert_eq!(fake.calls(), 3);
}

#[tokio::test]
async fn router_failures_fall_back_and_are_not_cached() {
    let r = Router::without_sources(settings());
    for (err, reason) in [
        (
            CallError::Unreachable("refused".into()),
            "router_unreachable",
        ),
        (CallError::Timeout, "router_timeout"),
        (CallError::Status(503), "router_status"),
        (CallError::Protocol("x".into()), "router_bad_answer"),
    ] {
        let fake = Fake::new(move |_| Err(err.clone()));
        assert_eq!(
            r.decide(&fake, &ask("write code"), None, None).await,
            Decision::Fallback { reason }
        );
    }
    let nonsense = Fake::new(|_| Ok("I like turtles".into()));
    assert_eq!(
        r.decide(&nonsense, &ask("write code"), None, None).await,
        Decision::Fallback {
            reason: "router_nonsense"
        }
    );
    let unknown = Fake::new(|_| Ok(r#"{"route": ["poetry"]}"#.into()));
    assert_eq!(
        r.decide(&unknown, &ask("write code"), None, None).await,
        Decision::Fallback {
            reason: "unknown_route"
        }
    );
    // Nothing above was cached: a working router is asked next time.
    let fake = Fake::keywords();
    assert!(matches!(
        r.decide(&fake, &ask("write code"), None, None).await,
        Decision::Routed {
            source: Source::Router,
            ..
        }
    ));
}

#[tokio::test]
async fn no_route_is_a_decision_and_is_cached() {
    let r = Router::without_sources(settings());
    let fake = Fake::new(|_| Ok(r#"{"route": []}"#.into()));
    assert_eq!(
        r.decide(&fake, &ask("what's the weather"), None, None)
            .await,
        Decision::NoRoute {
            source: Source::Router
        }
    );
    assert_eq!(
        r.decide(&fake, &ask("what's the weather"), None, None)
            .await,
        Decision::NoRoute {
            source: Source::Cache
        }
    );
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn without_router_preferences_or_text_nothing_is_routed() {
    let fake = Fake::keywords();
    let mut s = settings();
    s.router_model = None;
    assert_eq!(
        Router::without_sources(s)
            .decide(&fake, &ask("code"), None, None)
            .await,
        Decision::NotRouted
    );
    let mut s = settings();
    s.preferences.clear();
    let r = Router::without_sources(s);
    assert_eq!(
        r.decide(&fake, &ask("code"), None, None).await,
        Decision::NotRouted
    );
    // … unless the request brings its own.
    let inline = vec![pref("code", &["x/y"], Prefer::None)];
    assert_eq!(
        r.decide(&fake, &ask("code"), Some(&inline), None).await,
        routed("code", &["x/y"], Source::Router)
    );
    let empty = Conversation {
        turns: vec![Turn::new("system", "only a system prompt")],
        tools: vec![],
    };
    assert_eq!(
        Router::without_sources(settings())
            .decide(&fake, &empty, None, None)
            .await,
        Decision::NotRouted
    );
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn inline_preferences_replace_the_configured_ones() {
    let r = Router::without_sources(settings());
    let fake = Fake::keywords();
    let inline = vec![
        pref("code", &["groq/llama"], Prefer::None),
        pref("chat", &["groq/small"], Prefer::None),
    ];
    assert_eq!(
        r.decide(&fake, &ask("a function"), Some(&inline), None)
            .await,
        routed("code", &["groq/llama"], Source::Router)
    );
    let p = fake.prompts.lock().unwrap()[0]["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(p.contains("code things"));
    // The cache keys on what the router saw (route names and descriptions, the same here),
    // and the models come from the preferences in force.
    assert_eq!(
        r.decide(&fake, &ask("a function"), None, None).await,
        routed(
            "code",
            &["openai/gpt-4o", "anthropic/claude"],
            Source::Cache
        )
    );
    // Other descriptions are another question for the router.
    let mut other = inline.clone();
    other[0].description = "programming".into();
    assert_eq!(
        r.decide(&fake, &ask("a function"), Some(&other), None)
            .await,
        routed("code", &["groq/llama"], Source::Router)
    );
    assert_eq!(fake.calls(), 2);
}

#[tokio::test]
async fn cheapest_follows_the_current_price_list_even_from_the_cache() {
    let mut s = settings();
    s.preferences[0].prefer = Prefer::Cheapest;
    s.sources = vec![SourceSettings::Cost(sources::CostSource {
        format: sources::CostFormat::ModelsDev,
        url: "http://unused".into(),
        refresh: None,
        aliases: Default::default(),
    })];
    let r = Router::without_sources(s);
    let fake = Fake::keywords();
    r.metrics().set_cost(
        0,
        [
            ("openai/gpt-4o".to_string(), 12.5),
            ("anthropic/claude".to_string(), 3.0),
        ]
        .into(),
    );
    assert_eq!(
        r.decide(&fake, &ask("code"), None, None).await,
        routed(
            "code",
            &["anthropic/claude", "openai/gpt-4o"],
            Source::Router
        )
    );
    r.metrics().set_cost(
        0,
        [
            ("openai/gpt-4o".to_string(), 1.0),
            ("anthropic/claude".to_string(), 3.0),
        ]
        .into(),
    );
    assert_eq!(
        r.decide(&fake, &ask("code"), None, None).await,
        routed(
            "code",
            &["openai/gpt-4o", "anthropic/claude"],
            Source::Cache
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_pinned_session_skips_the_router_until_its_ttl_ends() {
    let mut s = settings();
    s.affinity = Some(AffinitySettings {
        ttl: Duration::from_secs(60),
        max_entries: 100,
    });
    let r = Router::without_sources(s);
    assert!(r.affinity_enabled());
    let fake = Fake::keywords();
    let first = r.decide(&fake, &ask("hello"), None, Some("s1")).await;
    assert_eq!(
        first,
        routed("chat", &["openai/gpt-4o-mini"], Source::Router)
    );
    r.pin(
        "s1",
        Pin {
            model: "openai/gpt-4o-mini".into(),
            route: Some("chat".into()),
        },
    );
    // The next turn asks for code, but the conversation stays where its cache is warm.
    assert_eq!(
        r.decide(&fake, &ask("now write a function"), None, Some("s1"))
            .await,
        routed("chat", &["openai/gpt-4o-mini"], Source::Session)
    );
    assert_eq!(fake.calls(), 1);
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(
        r.decide(&fake, &ask("now write a function"), None, Some("s1"))
            .await,
        routed(
            "code",
            &["openai/gpt-4o", "anthropic/claude"],
            Source::Router
        )
    );
}

#[test]
fn inline_preferences_are_taken_out_of_the_body() {
    let mut body = json!({
        "model": "x",
        "messages": [],
        "routing_preferences": [
            {"name": "code", "description": "code", "models": ["a/b", "c/d"], "selection_policy": {"prefer": "cheapest"}}
        ],
        "metadata": {"plano_preference_config": "ignored when routing_preferences is there"}
    })
    .as_object()
    .cloned()
    .unwrap();
    let p = take_inline_preferences(&mut body).unwrap();
    assert_eq!(
        p,
        vec![pref("code", &["a/b", "c/d"], Prefer::Cheapest)]
            .into_iter()
            .map(|mut p| {
                p.description = "code".into();
                p
            })
            .collect::<Vec<_>>()
    );
    assert!(!body.contains_key("routing_preferences"));
    assert!(
        !body.contains_key("metadata"),
        "an emptied metadata is dropped"
    );

    let yaml = "- model: openai/gpt-4o\n  routing_preferences:\n    - name: code\n      description: writing code\n- model: openai/gpt-4o-mini\n  routing_preferences:\n    - name: chat\n      description: small talk\n";
    let mut body = json!({"metadata": {"archgw_preference_config": yaml, "user": "u1"}})
        .as_object()
        .cloned()
        .unwrap();
    let p = take_inline_preferences(&mut body).unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p[1].name, "chat");
    assert_eq!(p[1].models, vec!["openai/gpt-4o-mini"]);
    assert_eq!(body["metadata"], json!({"user": "u1"}));

    for bad in [
        json!({"routing_preferences": "x"}),
        json!({"routing_preferences": [{"name": "a", "description": "b", "models": []}]}),
        json!({"routing_preferences": [{"name": "a", "description": "b", "models": ["m"], "selection_policy": {"prefer": "random"}}]}),
        json!({"metadata": {"plano_preference_config": "::: not yaml ["}}),
    ] {
        let mut body = bad.as_object().cloned().unwrap();
        assert_eq!(take_inline_preferences(&mut body), None, "{bad}");
        assert!(!body.contains_key("routing_preferences"));
    }
    let mut plain = json!({"model": "x", "metadata": {"k": "v"}})
        .as_object()
        .cloned()
        .unwrap();
    assert_eq!(take_inline_preferences(&mut plain), None);
    assert_eq!(plain["metadata"], json!({"k": "v"}));
}

#[test]
fn the_router_timeout_comes_from_routing_timeout() {
    let yaml = |extra: &str| {
        format!(
            "version: v0.4.0\nmodel_providers:\n  - model: openai/gpt-4o\n    default: true\n    access_key: k\n  - model: openai/router\n    access_key: k\noverrides:\n  llm_routing_model: openai/router\nrouting_preferences:\n  - name: code\n    description: writing code\n    models: [openai/gpt-4o]\n{extra}"
        )
    };
    let load = |extra: &str| plano_config::load_str(&yaml(extra), None, &|_| None);
    let settings = |extra: &str| super::settings::from_config(&load(extra).unwrap()).unwrap();
    assert_eq!(settings("").router_timeout, DEFAULT_ROUTER_TIMEOUT);
    assert_eq!(DEFAULT_ROUTER_TIMEOUT, Duration::from_secs(5));
    assert_eq!(
        settings("routing:\n  timeout: 250ms\n").router_timeout,
        Duration::from_millis(250)
    );
    let err = load("routing:\n  timeout: 0s\n").unwrap_err().to_string();
    assert!(err.contains("routing.timeout"), "{err}");
    // A routing section with only acted-on keys leaves no warning.
    let config = load("routing:\n  session_ttl_seconds: 60\n  timeout: 2s\n").unwrap();
    assert!(
        !config.warnings.iter().any(|w| w.contains("`routing`")),
        "{:?}",
        config.warnings
    );
}

#[test]
fn route_on_user_only_replays_the_sessions_route_for_non_user_tails() {
    let off = Router::without_sources(settings());
    let on = Router::without_sources(RoutingSettings {
        route_on_user_only: true,
        ..settings()
    });
    assert!(!off.sessions_enabled());
    assert!(on.sessions_enabled());
    let mut tool_tail = ask("write a function");
    tool_tail.turns.push(Turn::new("assistant", ""));
    tool_tail.turns.push(Turn::new("tool", "42"));
    assert!(!tool_tail.ends_with_user_turn());
    assert!(ask("write a function").ends_with_user_turn());
    assert!(!ask("  ").ends_with_user_turn());

    // Nothing remembered yet: route normally.
    assert_eq!(on.replay(&tool_tail, Some("s"), "openai/gpt-4o-mini"), None);
    let pin = Pin {
        model: "openai/gpt-4o".into(),
        route: Some("code".into()),
    };
    on.remember_route("s", "openai/gpt-4o-mini", pin.clone());
    off.remember_route("s", "openai/gpt-4o-mini", pin);
    assert_eq!(
        on.replay(&tool_tail, Some("s"), "openai/gpt-4o-mini"),
        Some(routed("code", &["openai/gpt-4o"], Source::Replay))
    );
    // A user turn is routed; another session, another requested model or the option off
    // replay nothing.
    assert_eq!(
        on.replay(&ask("and now"), Some("s"), "openai/gpt-4o-mini"),
        None
    );
    assert_eq!(on.replay(&tool_tail, Some("t"), "openai/gpt-4o-mini"), None);
    assert_eq!(on.replay(&tool_tail, None, "openai/gpt-4o-mini"), None);
    assert_eq!(on.replay(&tool_tail, Some("s"), "openai/gpt-4o"), None);
    assert_eq!(
        off.replay(&tool_tail, Some("s"), "openai/gpt-4o-mini"),
        None
    );
}
