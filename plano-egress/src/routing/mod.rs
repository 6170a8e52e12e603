//! Routing by preference: a router model picks the model for a request (Plano's
//! `routing_preferences`), ranked by cost or latency (`selection_policy.prefer`,
//! `model_metrics_sources`), with decisions cached per conversation and conversations
//! kept on one provider (`prompt_caching.session_affinity`).
//!
//! [`Router::decide`] is the whole decision for one request:
//! 1. a conversation pinned by session affinity goes where it went before (no router call);
//! 2. the preferences in force are the request's own (`routing_preferences` in the body, or
//!    Plano's `metadata.plano_preference_config`), else the configured ones; none → the
//!    request is not routed;
//! 3. the router prompt (`prompt.rs`) is built from the recent conversation; the same
//!    routes and conversation seen within the decision cache's TTL reuse the route chosen
//!    then; otherwise the router model is called (`client.rs`) and its answer parsed
//!    leniently (`answer.rs`);
//! 4. the route's models are ranked by the preference's `selection_policy`
//!    (`sources.rs`), after the cache, so a new price list takes effect at once.
//!
//! A router that fails (down, slow, an error status, nonsense, a route it was not offered)
//! never fails the request: the decision is "no route", the request goes to the model it
//! asked for, and the reason is counted in `plano_routing_fallbacks_total`.

pub mod affinity;
pub mod answer;
pub mod cache;
pub mod cache_control;
pub mod client;
pub mod phase;
pub mod prompt;
pub mod settings;
pub mod sources;

use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, histogram};
use plano_common::metrics as m;
use plano_common::telemetry;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::answer::Parsed;
use self::cache::TtlCache;
use self::client::RouterBackend;
use self::prompt::{Conversation, RouteText};
pub use self::sources::{ModelMetrics, Prefer, SourceSettings};
use crate::upstream::HttpClient;

/// One routing preference: a route the router can pick, and the models that serve it.
#[derive(Debug, Clone, PartialEq)]
pub struct Preference {
    pub name: String,
    pub description: String,
    /// Configured model names (`provider/model`, a provider name or an alias), best first
    /// unless `prefer` reorders them.
    pub models: Vec<String>,
    pub prefer: Prefer,
}

/// Everything routing needs from the config, as plain values.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingSettings {
    pub preferences: Vec<Preference>,
    /// The configured model that serves routing decisions (`overrides.llm_routing_model`,
    /// else `routing.model` / `routing.llm_provider`). Without one nothing is routed.
    pub router_model: Option<String>,
    pub router_timeout: Duration,
    /// The router's context budget in tokens (`overrides.orchestrator_model_context_length`).
    pub context_tokens: usize,
    pub decision_ttl: Duration,
    pub decision_max_entries: usize,
    pub sources: Vec<SourceSettings>,
    /// `prompt_caching.session_affinity`: how long a conversation stays on its provider.
    pub affinity: Option<AffinitySettings>,
    /// `prompt_caching.inject_cache_control`: the `min_prefix_tokens` above which Anthropic
    /// requests get cache breakpoints (`cache_control.rs`); `None`: off.
    pub cache_control_min_tokens: Option<usize>,
    /// `routing.route_on_user_only`: only a request whose last message is a user turn asks
    /// the router; tool results and other non-user tails replay the session's last
    /// routed model.
    pub route_on_user_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffinitySettings {
    pub ttl: Duration,
    pub max_entries: usize,
}

/// Plano's defaults: decisions and sessions live 10 minutes, at most 10,000 of each.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
/// A router call that takes longer than this falls back (the request is waiting).
pub const DEFAULT_ROUTER_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for RoutingSettings {
    fn default() -> Self {
        Self {
            preferences: Vec::new(),
            router_model: None,
            router_timeout: DEFAULT_ROUTER_TIMEOUT,
            context_tokens: prompt::DEFAULT_CONTEXT_TOKENS,
            decision_ttl: DEFAULT_TTL,
            decision_max_entries: DEFAULT_MAX_ENTRIES,
            sources: Vec::new(),
            affinity: None,
            cache_control_min_tokens: None,
            route_on_user_only: false,
        }
    }
}

/// Where a decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The router model was asked now.
    Router,
    /// The decision cache held the answer for this conversation.
    Cache,
    /// Session affinity: the conversation's pinned model.
    Session,
    /// `route_on_user_only`: not a user turn, so the session's last routed model again.
    Replay,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Router => "router",
            Source::Cache => "cache",
            Source::Session => "session",
            Source::Replay => "replay",
        }
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not a routing target: no preferences, no router, nothing to route on.
    NotRouted,
    /// Send the request to `models[0]`, then the rest in order on failure.
    Routed {
        /// The route's name (`None` for a session pin without one).
        route: Option<String>,
        models: Vec<String>,
        source: Source,
    },
    /// The router chose no route: the requested model serves the request.
    NoRoute { source: Source },
    /// The router failed; the requested model serves the request. `reason` is the label.
    Fallback { reason: &'static str },
}

/// What a session remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub model: String,
    pub route: Option<String>,
}

pub struct Router {
    settings: RoutingSettings,
    /// The `<routes>` block for the configured preferences, built once.
    routes_block: String,
    metrics: Arc<ModelMetrics>,
    /// hash(routes, conversation) → route name (`None`: the router chose none).
    decisions: TtlCache<u64, Option<String>>,
    sessions: Option<TtlCache<String, Pin>>,
    /// `route_on_user_only`: session → (requested model, where its last routed turn went).
    replays: Option<TtlCache<String, (String, Pin)>>,
    /// Stops the metrics sources' refresh tasks when this router is replaced.
    cancel: CancellationToken,
}

impl Drop for Router {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Router {
    /// Build the router and start fetching its metrics sources with `client`.
    pub fn new(settings: RoutingSettings, client: HttpClient) -> Self {
        let router = Self::without_sources(settings);
        sources::spawn(
            &router.settings.sources,
            client,
            router.metrics.clone(),
            router.cancel.clone(),
        );
        router
    }

    /// A router whose metrics are set by hand (tests, or no sources).
    pub fn without_sources(settings: RoutingSettings) -> Self {
        let count = |cost: bool| {
            settings
                .sources
                .iter()
                .filter(|s| matches!(s, SourceSettings::Cost(_)) == cost)
                .count()
        };
        let metrics = Arc::new(ModelMetrics::new(count(true), count(false)));
        let routes_block = prompt::routes_block(settings.preferences.iter().map(route_text));
        Self {
            routes_block,
            metrics,
            decisions: TtlCache::new(settings.decision_ttl, settings.decision_max_entries),
            sessions: settings
                .affinity
                .map(|a| TtlCache::new(a.ttl, a.max_entries)),
            replays: settings
                .route_on_user_only
                .then(|| TtlCache::new(settings.decision_ttl, settings.decision_max_entries)),
            cancel: CancellationToken::new(),
            settings,
        }
    }

    pub fn settings(&self) -> &RoutingSettings {
        &self.settings
    }

    pub fn metrics(&self) -> &ModelMetrics {
        &self.metrics
    }

    /// Whether any request could be routed (a router model and some preferences, or a
    /// router model for requests that bring their own).
    pub fn has_router(&self) -> bool {
        self.settings.router_model.is_some()
    }

    pub fn affinity_enabled(&self) -> bool {
        self.sessions.is_some()
    }

    /// Whether sessions are tracked at all (affinity, or `route_on_user_only` replays).
    pub fn sessions_enabled(&self) -> bool {
        self.sessions.is_some() || self.replays.is_some()
    }

    /// `route_on_user_only`: the routed decision to replay for a request of `session`
    /// asking for `requested` whose conversation does not end in a user turn. `None`:
    /// route it normally (a user turn, no earlier routed turn, or another model asked for).
    pub fn replay(
        &self,
        conversation: &Conversation,
        session: Option<&str>,
        requested: &str,
    ) -> Option<Decision> {
        let replays = self.replays.as_ref()?;
        if conversation.ends_with_user_turn() {
            return None;
        }
        let (lane, pin) = replays.get(&session?.to_string())?;
        if lane != requested {
            return None;
        }
        counter!(m::ROUTING_DECISIONS_TOTAL, "route" => pin.route.as_deref().map_or("none", |r| self.route_label(r, None)).to_string(), "source" => "replay").increment(1);
        Some(Decision::Routed {
            route: pin.route,
            models: vec![pin.model],
            source: Source::Replay,
        })
    }

    /// `route_on_user_only`: remember where a routed request of `session` went.
    pub fn remember_route(&self, session: &str, requested: &str, pin: Pin) {
        if let Some(replays) = &self.replays {
            replays.insert(session.to_string(), (requested.to_string(), pin));
        }
    }

    /// The pin of a session, if it is still live.
    pub fn pinned(&self, session: &str) -> Option<Pin> {
        let sessions = self.sessions.as_ref()?;
        let pin = sessions.get(&session.to_string());
        let outcome = if pin.is_some() { "hit" } else { "miss" };
        counter!(m::ROUTING_CACHE_LOOKUPS_TOTAL, "cache" => "session", "outcome" => outcome)
            .increment(1);
        pin
    }

    /// Pin a session to the model that answered it (refreshing its TTL).
    pub fn pin(&self, session: &str, pin: Pin) {
        if let Some(sessions) = &self.sessions {
            sessions.insert(session.to_string(), pin);
        }
    }

    /// Decide where a request goes. `inline`: the request's own preferences.
    pub async fn decide<B: RouterBackend>(
        &self,
        backend: &B,
        conversation: &Conversation,
        inline: Option<&[Preference]>,
        session: Option<&str>,
    ) -> Decision {
        if let Some(pin) = session.and_then(|s| self.pinned(s)) {
            counter!(m::ROUTING_DECISIONS_TOTAL, "route" => pin.route.as_deref().map_or("none", |r| self.route_label(r, inline)).to_string(), "source" => "session").increment(1);
            return Decision::Routed {
                route: pin.route,
                models: vec![pin.model],
                source: Source::Session,
            };
        }
        let preferences = match inline {
            Some(p) if !p.is_empty() => p,
            _ => &self.settings.preferences,
        };
        let Some(router_model) = self.settings.router_model.as_deref() else {
            return Decision::NotRouted;
        };
        if preferences.is_empty() {
            return Decision::NotRouted;
        }
        let turns = conversation.for_router(self.settings.context_tokens);
        if turns.is_empty() {
            return Decision::NotRouted;
        }
        let inline_block;
        let routes_block = if std::ptr::eq(preferences, self.settings.preferences.as_slice()) {
            &self.routes_block
        } else {
            inline_block = prompt::routes_block(preferences.iter().map(route_text));
            &inline_block
        };
        let conversation_block = prompt::conversation_block(&turns);
        let key = affinity::fnv1a(&[routes_block, &conversation_block]);

        let cached = self.decisions.get(&key);
        counter!(m::ROUTING_CACHE_LOOKUPS_TOTAL, "cache" => "decision", "outcome" => if cached.is_some() { "hit" } else { "miss" })
            .increment(1);
        let (route, source) = match cached {
            Some(route) => (route, Source::Cache),
            None => {
                let prompt = prompt::ROUTER_PROMPT
                    .replace("{routes}", routes_block)
                    .replace("{conversation}", &conversation_block);
                let body = prompt::router_body(router_model, prompt);
                let span = telemetry::client_span("routing", router_model);
                let started = Instant::now();
                let answer = backend
                    .complete(router_model, body, self.settings.router_timeout)
                    .instrument(span.clone())
                    .await;
                let took = started.elapsed();
                histogram!(m::ROUTING_ROUTER_DURATION_SECONDS).record(took.as_secs_f64());
                let routed = match answer {
                    Err(e) => Err((e.reason(), e.to_string())),
                    Ok(text) => {
                        let names: Vec<&str> =
                            preferences.iter().map(|p| p.name.as_str()).collect();
                        match answer::parse(&text, &names) {
                            Parsed::Nonsense => Err((
                                "router_nonsense",
                                "the router's answer names no route".to_string(),
                            )),
                            Parsed::Routes(routes) if routes.is_empty() => Ok(None),
                            // Several intents: the first one the router listed that we offered.
                            Parsed::Routes(routes) => {
                                match routes.iter().find(|r| names.contains(&r.as_str())) {
                                    Some(r) => Ok(Some(r.clone())),
                                    None => Err((
                                        "unknown_route",
                                        "the router chose a route it was not offered".to_string(),
                                    )),
                                }
                            }
                        }
                    }
                };
                let route = match routed {
                    Err((reason, detail)) => {
                        telemetry::record_routing(&span, reason, None, took);
                        return fallback(reason, &detail);
                    }
                    Ok(route) => {
                        let outcome = if route.is_some() {
                            "routed"
                        } else {
                            "no_route"
                        };
                        telemetry::record_routing(&span, outcome, route.as_deref(), took);
                        route
                    }
                };
                self.decisions.insert(key, route.clone());
                (route, Source::Router)
            }
        };
        let Some(route) = route else {
            counter!(m::ROUTING_DECISIONS_TOTAL, "route" => "none", "source" => source.label())
                .increment(1);
            return Decision::NoRoute { source };
        };
        let Some(pref) = preferences.iter().find(|p| p.name == route) else {
            return fallback("unknown_route", "the cached route is no longer offered");
        };
        counter!(m::ROUTING_DECISIONS_TOTAL, "route" => self.route_label(&route, inline).to_string(), "source" => source.label())
            .increment(1);
        Decision::Routed {
            models: self.metrics.rank(&pref.models, pref.prefer),
            route: Some(route),
            source,
        }
    }

    /// A bounded metrics label: configured route names as they are; a request's own
    /// preferences could name anything, so they all count as `inline`.
    fn route_label<'a>(&'a self, route: &'a str, inline: Option<&[Preference]>) -> &'a str {
        if inline.is_some_and(|p| !p.is_empty())
            || !self.settings.preferences.iter().any(|p| p.name == route)
        {
            "inline"
        } else {
            route
        }
    }
}

fn fallback(reason: &'static str, detail: &str) -> Decision {
    tracing::warn!(reason, detail, "routing fell back to the requested model");
    counter!(m::ROUTING_FALLBACKS_TOTAL, "reason" => reason).increment(1);
    Decision::Fallback { reason }
}

fn route_text(p: &Preference) -> RouteText<'_> {
    RouteText {
        name: &p.name,
        description: &p.description,
    }
}

/// The top-level fields [`take_inline_preferences`] takes from (or, emptied, removes).
pub const INLINE_PREFERENCE_FIELDS: [&str; 2] = ["routing_preferences", "metadata"];

/// Take the request's own routing preferences out of its body (they are never sent
/// upstream): `routing_preferences` (Plano's top-level form: `name`, `description`,
/// `models`, `selection_policy.prefer`), else `metadata.plano_preference_config` /
/// `metadata.archgw_preference_config` (Plano's older form, a YAML or JSON string:
/// `[{model, routing_preferences: [{name, description}]}]`). Unreadable preferences are
/// logged and ignored: the request is then routed by the configured ones.
pub fn take_inline_preferences(body: &mut Map<String, Value>) -> Option<Vec<Preference>> {
    let top = body.remove("routing_preferences");
    let mut from_metadata = None;
    if let Some(Value::Object(meta)) = body.get_mut("metadata") {
        for key in ["plano_preference_config", "archgw_preference_config"] {
            if let Some(v) = meta.remove(key) {
                from_metadata = from_metadata.or(Some(v));
            }
        }
    }
    if body
        .get("metadata")
        .and_then(Value::as_object)
        .is_some_and(Map::is_empty)
    {
        body.remove("metadata");
    }
    if let Some(v) = top.filter(|v| !v.is_null()) {
        return match parse_top_level(v) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(error = %e, "request `routing_preferences` ignored");
                None
            }
        };
    }
    let v = from_metadata?;
    match parse_model_usage(v) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(error = %e, "request `metadata.plano_preference_config` ignored");
            None
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopLevel {
    name: String,
    description: String,
    models: Vec<String>,
    #[serde(default)]
    selection_policy: Option<Policy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    prefer: String,
}

fn parse_prefer(s: &str) -> Result<Prefer, String> {
    match s {
        "cheapest" => Ok(Prefer::Cheapest),
        "fastest" => Ok(Prefer::Fastest),
        "none" => Ok(Prefer::None),
        other => Err(format!("unknown selection_policy.prefer `{other}`")),
    }
}

fn parse_top_level(v: Value) -> Result<Vec<Preference>, String> {
    let items: Vec<TopLevel> = serde_json::from_value(v).map_err(|e| e.to_string())?;
    items
        .into_iter()
        .map(|t| {
            if t.models.is_empty() {
                return Err(format!("route `{}` has no models", t.name));
            }
            Ok(Preference {
                prefer: match t.selection_policy {
                    Some(p) => parse_prefer(&p.prefer)?,
                    None => Prefer::None,
                },
                name: t.name,
                description: t.description,
                models: t.models,
            })
        })
        .collect()
}

#[derive(Deserialize)]
struct ModelUsage {
    model: String,
    routing_preferences: Vec<NameDescription>,
}

#[derive(Deserialize)]
struct NameDescription {
    name: String,
    description: String,
}

fn parse_model_usage(v: Value) -> Result<Vec<Preference>, String> {
    let items: Vec<ModelUsage> = match v {
        Value::String(s) => serde_norway::from_str(&s).map_err(|e| e.to_string())?,
        other => serde_json::from_value(other).map_err(|e| e.to_string())?,
    };
    Ok(items
        .into_iter()
        .flat_map(|u| {
            let model = u.model;
            u.routing_preferences.into_iter().map(move |r| Preference {
                name: r.name,
                description: r.description,
                models: vec![model.clone()],
                prefer: Prefer::None,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests;
