//! The routing phase of the egress request path, between parsing and selection: decide
//! which model a request should be selected for, and afterwards remember where it went.
//!
//! - A request's own preferences (`routing_preferences`, `metadata.plano_preference_config`)
//!   are always taken out of its body, routed or not: no provider knows those fields.
//! - A request is a routing target when a router model is configured, preferences are in
//!   force (configured or its own) and it carries no provider hint header (a hint pins a
//!   provider explicitly). Its model is replaced by the route's best model; the route's
//!   other models follow it as failover candidates, after the chosen model's own alias
//!   fallbacks. The normal selection, retries and failover then run unchanged.
//! - With `routing.route_on_user_only`, a routing target whose last message is not a user
//!   turn (a tool result, an assistant continuation) goes where its session's last routed
//!   turn went, without a router call; with nothing to replay it is routed normally.
//! - With `prompt_caching.session_affinity`, a conversation that already went somewhere
//!   goes there again while its pin lives: a routing target skips the router, any other
//!   request tries the pinned provider first when it is among its candidates. The pin is
//!   (re)set to the provider that answered, on every successful answer.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use metrics::counter;
use plano_common::metrics as m;
use plano_config::{Config, Provider};
use serde_json::{Map, Value};

use super::client::Upstream;
use super::prompt::Conversation;
use super::{Decision, Pin, Router, affinity, take_inline_preferences};
use crate::dispatch::select::{self, Candidate, HINT_HEADER, LEGACY_HINT_HEADER, Selection};
use crate::error::EgressError;
use crate::providers::api::Api;
use crate::providers::responses;
use crate::state::Runtime;

/// What the routing phase decided for one request.
#[derive(Default)]
pub struct Routing {
    router: Option<Arc<Router>>,
    /// The route chosen (shown in `x-plano-route`).
    pub route: Option<String>,
    /// The model to select instead of the requested one.
    pub model: Option<String>,
    /// The route's other models, best first: failover candidates after `model`'s own.
    pub also: Vec<String>,
    /// The conversation's session key (session affinity on).
    pub session: Option<String>,
    /// Not a routing target but pinned: the provider to try first.
    pub pinned: Option<String>,
    /// The model the request asked for (`route_on_user_only` replays only within it).
    requested: String,
}

fn hinted(headers: &HeaderMap) -> bool {
    headers.contains_key(HINT_HEADER) || headers.contains_key(LEGACY_HINT_HEADER)
}

/// Run the phase. `history`: a Responses conversation stored under `previous_response_id`.
pub async fn run(
    rt: &Runtime,
    api: Api,
    headers: &HeaderMap,
    body: &mut Map<String, Value>,
    history: Option<&[Value]>,
    request_id: &HeaderValue,
) -> Routing {
    let inline = take_inline_preferences(body);
    let Some(router) = rt.router.clone() else {
        return Routing::default();
    };
    if hinted(headers) {
        return Routing {
            router: Some(router),
            ..Routing::default()
        };
    }
    let target = router.has_router()
        && (inline.as_ref().is_some_and(|p| !p.is_empty())
            || !router.settings().preferences.is_empty());
    if !target && !router.affinity_enabled() {
        return Routing {
            router: Some(router),
            ..Routing::default()
        };
    }
    let conversation = Conversation::of(api, &with_history(api, body, history));
    let session = if router.sessions_enabled() {
        affinity::session_key(headers, &conversation)
    } else {
        None
    };
    let requested = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut out = Routing {
        router: Some(router.clone()),
        session: session.clone(),
        ..Routing::default()
    };
    if !target {
        out.pinned = session
            .as_deref()
            .and_then(|s| router.pinned(s))
            .map(|p| p.model);
        return out;
    }
    let backend = Upstream {
        config: &rt.config,
        prepared: &rt.prepared,
        client: &rt.client,
        request_id,
    };
    let decision = match router.replay(&conversation, session.as_deref(), &requested) {
        Some(replayed) => replayed,
        None => {
            router
                .decide(
                    &backend,
                    &conversation,
                    inline.as_deref(),
                    session.as_deref(),
                )
                .await
        }
    };
    out.requested = requested;
    match decision {
        Decision::Routed {
            route,
            models,
            source,
        } => {
            let mut usable = models
                .into_iter()
                .filter(|m| select::select(&rt.config, &HeaderMap::new(), Some(m)).is_ok());
            match usable.next() {
                Some(first) => {
                    tracing::info!(request_id = ?request_id, route = route.as_deref().unwrap_or("-"), model = %first, source = source.label(), "routed");
                    out.model = Some(first);
                    out.also = usable.collect();
                    out.route = route;
                }
                None => {
                    tracing::warn!(request_id = ?request_id, route = route.as_deref().unwrap_or("-"), "no model of the chosen route is configured; using the requested model");
                    counter!(m::ROUTING_FALLBACKS_TOTAL, "reason" => "route_model_not_configured")
                        .increment(1);
                }
            }
        }
        Decision::NoRoute { .. } => {
            tracing::debug!(request_id = ?request_id, "no route fits; using the requested model");
        }
        Decision::Fallback { .. } | Decision::NotRouted => {}
    }
    out
}

/// A Responses request's conversation includes what `previous_response_id` stands for.
fn with_history<'a>(
    api: Api,
    body: &'a Map<String, Value>,
    history: Option<&[Value]>,
) -> Cow<'a, Map<String, Value>> {
    let (Api::Responses, Some(history)) = (api, history) else {
        return Cow::Borrowed(body);
    };
    let mut items = history.to_vec();
    items.extend(responses::conversation_items(body).unwrap_or_default());
    let mut b = body.clone();
    b.insert("input".into(), Value::Array(items));
    Cow::Owned(b)
}

impl Routing {
    /// The providers to try: the routed model's (then the route's other models'), or the
    /// requested model's with a pinned provider first.
    pub fn select(
        &self,
        config: &Config,
        headers: &HeaderMap,
        requested: Option<&str>,
    ) -> Result<Selection, EgressError> {
        let Some(model) = &self.model else {
            let mut selection = select::select(config, headers, requested)?;
            if let Some(pinned) = &self.pinned
                && let Some(i) = selection
                    .candidates
                    .iter()
                    .position(|c| config.providers[c.provider].name == *pinned)
            {
                let c = selection.candidates.remove(i);
                selection.candidates.insert(0, c);
            }
            return Ok(selection);
        };
        let none = HeaderMap::new();
        let mut selection = select::select(config, &none, Some(model))?;
        for other in &self.also {
            if let Ok(more) = select::select(config, &none, Some(other)) {
                for c in more.candidates {
                    push_new(&mut selection.candidates, c);
                }
            }
        }
        Ok(selection)
    }

    /// `provider` answered: pin the session to it and show the route.
    pub fn answered(&self, provider: &Provider, response_headers: &mut HeaderMap) {
        if let Some(route) = &self.route
            && let Ok(v) = HeaderValue::from_str(route)
        {
            response_headers.insert("x-plano-route", v);
        }
        if let (Some(router), Some(session)) = (&self.router, &self.session) {
            let pin = Pin {
                model: provider.name.clone(),
                route: self.route.clone(),
            };
            if self.model.is_some() {
                router.remember_route(session, &self.requested, pin.clone());
            }
            router.pin(session, pin);
        }
    }
}

fn push_new(candidates: &mut Vec<Candidate>, c: Candidate) {
    if !candidates.contains(&c) {
        candidates.push(c);
    }
}

/// The upstream body with Anthropic cache breakpoints added, when
/// `prompt_caching.inject_cache_control` asks for them (`cache_control.rs`).
pub fn upstream_body(rt: &Runtime, upstream: Api, body: Bytes) -> Bytes {
    let Some(min) = rt
        .router
        .as_ref()
        .and_then(|r| r.settings().cache_control_min_tokens)
    else {
        return body;
    };
    if upstream != Api::Messages {
        return body;
    }
    let Ok(mut map) = serde_json::from_slice::<Map<String, Value>>(&body) else {
        return body;
    };
    if !super::cache_control::inject(&mut map, min) {
        return body;
    }
    serde_json::to_vec(&map).map(Bytes::from).unwrap_or(body)
}
