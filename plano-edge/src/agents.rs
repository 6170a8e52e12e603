//! Agent routing on `type: agent` listeners (docs/agents.md).
//!
//! Choice, in order: the `x-plano-agent` header (an unknown id is 400); the only agent;
//! an orchestration call through the egress that asks the model for `{"agent": "<id>"}`;
//! when that call fails or names no listed agent, the `default: true` agent, else the
//! first. Then the agent's `input_filters`, then the request goes to the agent and its
//! answer streams back as it comes. The choice is in the response headers
//! `x-plano-agent` / `x-plano-agent-reason` and in `plano_agent_selections_total`.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use metrics::counter;
use plano_common::errors::ApiShape;
use plano_common::filters::FilterCtx;
use plano_config::ListenerAgent;
use serde_json::{Value, json};

use crate::calls;
use crate::error::{EdgeError, Failure};
use crate::llm::first_message;
use crate::route::{RouteCtx, Routed};

pub const X_PLANO_AGENT: HeaderName = HeaderName::from_static("x-plano-agent");
pub const X_PLANO_AGENT_REASON: HeaderName = HeaderName::from_static("x-plano-agent-reason");

/// Messages of the conversation shown to the orchestrator (the most recent ones), and the
/// characters kept of each: the choice needs the gist, not the whole history.
const TRANSCRIPT_MESSAGES: usize = 20;
const TRANSCRIPT_CHARS: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Header,
    Single,
    Llm,
    Default,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Header => "header",
            Reason::Single => "single",
            Reason::Llm => "llm",
            Reason::Default => "default",
        }
    }
}

pub(crate) async fn handle(ctx: RouteCtx<'_>) -> Routed {
    let agents = &ctx.listener.agents;
    let (agent, reason) = match choose(&ctx).await {
        Ok(c) => c,
        Err(e) => return local(e),
    };
    counter!(
        plano_common::metrics::AGENT_SELECTIONS_TOTAL,
        "listener" => ctx.listener.name.clone(),
        "agent" => agent.id.clone(),
        "reason" => reason.as_str(),
    )
    .increment(1);
    tracing::debug!(listener = %ctx.listener.name, agent = %agent.id, reason = reason.as_str(), candidates = agents.len(), "agent chosen");
    let mut routed = forward(&ctx, agent).await;
    let h = routed.response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&agent.id) {
        h.insert(X_PLANO_AGENT, v);
    }
    h.insert(
        X_PLANO_AGENT_REASON,
        HeaderValue::from_static(reason.as_str()),
    );
    routed
}

fn local(e: EdgeError) -> Routed {
    Routed {
        response: calls::error_response(&e),
        upstream: "-",
    }
}

async fn choose<'a>(ctx: &'a RouteCtx<'_>) -> Result<(&'a ListenerAgent, Reason), EdgeError> {
    let agents = &ctx.listener.agents;
    if let Some(wanted) = ctx.headers.get(&X_PLANO_AGENT) {
        let wanted = wanted.to_str().unwrap_or_default().trim();
        return match agents.iter().find(|a| a.id == wanted) {
            Some(a) => Ok((a, Reason::Header)),
            None => Err(EdgeError::UnknownAgent {
                wanted: wanted.chars().take(128).collect(),
                valid: ids(agents).join(", "),
            }),
        };
    }
    match agents.as_slice() {
        [] => Err(EdgeError::NoAgents),
        [only] => Ok((only, Reason::Single)),
        [first, ..] => match orchestrate(ctx).await {
            Ok(id) => Ok(agents
                .iter()
                .find(|a| a.id == id)
                .map_or((fallback(agents, first), Reason::Default), |a| {
                    (a, Reason::Llm)
                })),
            Err(why) => {
                tracing::warn!(listener = %ctx.listener.name, reason = %why, "agent orchestration gave no usable choice; using the default agent");
                Ok((fallback(agents, first), Reason::Default))
            }
        },
    }
}

fn ids(agents: &[ListenerAgent]) -> Vec<&str> {
    agents.iter().map(|a| a.id.as_str()).collect()
}

/// The `default: true` agent, else the first (validation allows one default at most).
fn fallback<'a>(agents: &'a [ListenerAgent], first: &'a ListenerAgent) -> &'a ListenerAgent {
    agents.iter().find(|a| a.default).unwrap_or(first)
}

/// Ask the orchestration model which agent should answer; the id it names, or why not.
async fn orchestrate(ctx: &RouteCtx<'_>) -> Result<String, String> {
    let agents = &ctx.listener.agents;
    let body = orchestration_request(
        agents,
        ctx.messages(),
        ctx.config.overrides.agent_orchestration_model.as_deref(),
    );
    // Half the time left at most, so the chosen agent still has time to answer.
    let limit = ctx.remaining() / 2;
    let completion = ctx
        .llm()
        .complete(&body, limit)
        .await
        .map_err(|e| e.to_string())?;
    let content = calls::content_text(&first_message(&completion)["content"]);
    parse_choice(&content, &ids(agents)).ok_or_else(|| {
        let shown: String = content.chars().take(80).collect();
        format!("the model's choice `{shown}` names no listed agent")
    })
}

/// The orchestration call: agents and their descriptions in the system message, the
/// conversation as a transcript (so the model judges it rather than answers it), and a
/// JSON schema whose `agent` must be one of the ids.
pub(crate) fn orchestration_request(
    agents: &[ListenerAgent],
    messages: &[Value],
    model: Option<&str>,
) -> Value {
    let listing: Vec<String> = agents
        .iter()
        .map(|a| {
            format!(
                "- {}: {}",
                a.id,
                a.description.as_deref().unwrap_or("(no description)")
            )
        })
        .collect();
    let system = format!(
        "You route a conversation to the one agent best suited to answer the user's latest \
         message. The agents are:\n{}\n\nAnswer only with a JSON object {{\"agent\": \"<id>\"}} \
         using one of the ids above.",
        listing.join("\n")
    );
    let start = messages.len().saturating_sub(TRANSCRIPT_MESSAGES);
    let transcript: Vec<String> = messages[start..]
        .iter()
        .map(|m| {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
            let text: String = calls::content_text(m.get("content").unwrap_or(&Value::Null))
                .chars()
                .take(TRANSCRIPT_CHARS)
                .collect();
            format!("[{role}] {text}")
        })
        .collect();
    let ids = ids(agents);
    let mut body = json!({
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": format!("Conversation:\n{}\n\nWhich agent should answer?", transcript.join("\n"))},
        ],
        "stream": false,
        "temperature": 0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "agent_choice",
                "strict": true,
                "schema": {
                    "type": "object",
                    "properties": {"agent": {"type": "string", "enum": ids}},
                    "required": ["agent"],
                    "additionalProperties": false,
                },
            },
        },
    });
    if let Some(m) = model {
        body["model"] = Value::String(m.to_string());
    }
    body
}

/// The agent id in a model's answer. Models do not always honour `response_format`, so
/// this accepts the JSON object (also inside a code fence or surrounded by prose) or a bare
/// id, and nothing that is not one of `ids`.
pub(crate) fn parse_choice(content: &str, ids: &[&str]) -> Option<String> {
    let text = content.trim();
    let known = |s: &str| {
        let s = s.trim().trim_matches(|c| c == '"' || c == '`' || c == '\'');
        ids.iter().find(|id| **id == s).map(|id| id.to_string())
    };
    if let Some(id) = known(text) {
        return Some(id);
    }
    let object = match (text.find('{'), text.rfind('}')) {
        (Some(a), Some(b)) if a < b => &text[a..=b],
        _ => return None,
    };
    let v: Value = serde_json::from_str(object).ok()?;
    ["agent", "agent_id", "id"]
        .iter()
        .find_map(|k| v.get(k).and_then(Value::as_str))
        .and_then(known)
}

/// Where a chat request for an agent goes: an agent `url` that already ends in
/// `/chat/completions` is used as it is; otherwise the client's path (`/v1/chat/completions`)
/// is appended to the url's path. The client's query string is kept.
pub(crate) fn agent_uri(agent: &url::Url, path_and_query: &str) -> String {
    let base = agent.as_str().trim_end_matches('/');
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut out = if agent
        .path()
        .trim_end_matches('/')
        .ends_with("/chat/completions")
    {
        // Keep the url without a query of its own: the client's takes its place.
        base.split('?').next().unwrap_or(base).to_string()
    } else {
        format!("{}{path}", base.split('?').next().unwrap_or(base))
    };
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Filter the request body through the agent's `input_filters`, then send it to the agent.
async fn forward(ctx: &RouteCtx<'_>, agent: &ListenerAgent) -> Routed {
    let Some(target) = ctx.config.agent(&agent.id) else {
        return local(EdgeError::AgentNotConfigured(agent.id.clone()));
    };
    let body = Bytes::from(Value::Object(ctx.body.clone()).to_string());
    let body = match run_agent_input_filters(ctx, agent, body).await {
        Ok(b) => b,
        Err(e) => return local(e),
    };
    let path_and_query = ctx
        .uri
        .path_and_query()
        .map_or("/v1/chat/completions", |p| p.as_str());
    let uri = agent_uri(&target.url, path_and_query);
    let mut headers = ctx.headers.clone();
    crate::forward::forwarding_headers(&mut headers, ctx.request_id, ctx.client);
    headers.remove(header::CONTENT_LENGTH);
    if let Ok(v) = HeaderValue::from_str(&agent.id) {
        // The agent learns which id it serves as; the client's pick is no longer needed.
        headers.insert(X_PLANO_AGENT, v);
    }
    let failed = |failure: Failure| {
        tracing::warn!(listener = %ctx.listener.name, agent = %agent.id, error = %failure, "agent request failed");
        local(EdgeError::Agent {
            id: agent.id.clone(),
            failure,
        })
    };
    let req = match calls::build(http::Method::POST, &uri, headers, body) {
        Ok(r) => r,
        Err(e) => return failed(Failure::from(&e)),
    };
    let started = tokio::time::Instant::now();
    let limit = ctx.remaining();
    match calls::send(&ctx.edge.client, req, limit).await {
        Ok(res) if res.status().is_success() => Routed {
            response: calls::stream_body(res),
            upstream: "agent",
        },
        // The agent's error in our shape: a 4xx keeps its status, anything else is 502;
        // the body names the agent and carries the start of what it said.
        Ok(res) => {
            let status = res.status();
            let body = calls::read_body(res, limit.saturating_sub(started.elapsed()))
                .await
                .unwrap_or_default();
            let mut routed = failed(Failure::status(status, &body));
            routed.upstream = "agent";
            routed
        }
        Err(e) => failed(Failure::from(&e)),
    }
}

/// Per-agent `input_filters`, in order, each seeing the previous one's output (after the
/// listener's own `input_filters`, which ran before routing).
async fn run_agent_input_filters(
    ctx: &RouteCtx<'_>,
    agent: &ListenerAgent,
    body: Bytes,
) -> Result<Bytes, EdgeError> {
    if agent.input_filters.is_empty() {
        return Ok(body);
    }
    let filter_ctx = FilterCtx {
        path: ctx.uri.path(),
        headers: ctx.headers,
        request_id: ctx.request_id,
    };
    let chain = ctx
        .edge
        .filters
        .run_input(ctx.config, &agent.input_filters, &filter_ctx, body);
    match tokio::time::timeout(ctx.remaining(), chain).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => Err(EdgeError::Filter(e.to_api_error(ApiShape::OpenAi))),
        Err(_) => Err(EdgeError::AgentFiltersTimeout {
            id: agent.id.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, default: bool) -> ListenerAgent {
        ListenerAgent {
            id: id.into(),
            description: Some(format!("does {id} things")),
            default,
            input_filters: vec![],
        }
    }

    #[test]
    fn parse_choice_is_robust_and_strict() {
        let ids = ["weather", "flights"];
        assert_eq!(
            parse_choice(r#"{"agent":"flights"}"#, &ids).as_deref(),
            Some("flights")
        );
        assert_eq!(
            parse_choice("```json\n{\"agent\": \"weather\"}\n```", &ids).as_deref(),
            Some("weather")
        );
        assert_eq!(
            parse_choice("Sure! {\"id\": \"flights\"} is best.", &ids).as_deref(),
            Some("flights")
        );
        assert_eq!(
            parse_choice(" \"weather\" ", &ids).as_deref(),
            Some("weather")
        );
        assert_eq!(parse_choice(r#"{"agent":"hotels"}"#, &ids), None);
        assert_eq!(parse_choice("I think the weather one", &ids), None);
        assert_eq!(parse_choice("", &ids), None);
        assert_eq!(parse_choice("} {", &ids), None);
    }

    #[test]
    fn fallback_prefers_the_default() {
        let a = [agent("a", false), agent("b", true)];
        assert_eq!(fallback(&a, &a[0]).id, "b");
        let a = [agent("a", false), agent("b", false)];
        assert_eq!(fallback(&a, &a[0]).id, "a");
    }

    #[test]
    fn agent_uri_joins_paths() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(
            agent_uri(&u("http://127.0.0.1:10510"), "/v1/chat/completions"),
            "http://127.0.0.1:10510/v1/chat/completions"
        );
        assert_eq!(
            agent_uri(&u("http://h:1/agents/weather/"), "/v1/chat/completions?x=1"),
            "http://h:1/agents/weather/v1/chat/completions?x=1"
        );
        assert_eq!(
            agent_uri(
                &u("http://h:1/api/chat/completions"),
                "/v1/chat/completions"
            ),
            "http://h:1/api/chat/completions"
        );
    }

    #[test]
    fn orchestration_request_lists_agents_and_constrains_the_answer() {
        let agents = [agent("weather", true), agent("flights", false)];
        let msgs = vec![json!({"role": "user", "content": "fly me to Rome"})];
        let body = orchestration_request(&agents, &msgs, Some("fast-llm"));
        assert_eq!(body["model"], "fast-llm");
        let system = body["messages"][0]["content"].as_str().unwrap();
        assert!(system.contains("- weather: does weather things"));
        assert!(system.contains("- flights: does flights things"));
        assert!(
            body["messages"][1]["content"]
                .as_str()
                .unwrap()
                .contains("[user] fly me to Rome")
        );
        assert_eq!(
            body["response_format"]["json_schema"]["schema"]["properties"]["agent"]["enum"],
            json!(["weather", "flights"])
        );
        assert!(
            orchestration_request(&agents, &msgs, None)
                .get("model")
                .is_none()
        );
    }
}
