//! Prompt targets on `type: prompt` listeners (docs/prompt_targets.md).
//!
//! 1. The targets become tools; a function-calling LLM call through the egress
//!    (`overrides.function_calling_model`, else the egress default) picks one.
//! 2. No tool called: the `default: true` target, else the model's own answer.
//! 3. The arguments are validated (`args.rs`): required, type, enum, defaults filled in.
//!    Missing required ones: the model is asked for a clarifying question (a synthesized
//!    question naming them when that call fails). Arguments the model got wrong: 502.
//! 4. The endpoint is called (`endpoints` table, `{name}` path parameters, GET query or POST
//!    JSON, `http_headers`, the endpoint's timeouts). A 4xx keeps its status, a 5xx is
//!    502, a timeout 504; the error names target, endpoint, path and status, with the
//!    start of the endpoint's body (`error.rs`).
//! 5. `auto_llm_dispatch_on_response` (default true): a second LLM call answers from the
//!    result with the target's or the global `system_prompt`, streamed as the client asked;
//!    otherwise the endpoint's answer is the assistant message.

mod args;
mod endpoint;

use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};
use plano_config::{HttpMethod, PromptTarget};
use serde_json::{Map, Value, json};

use crate::body::Inner;
use crate::calls;
use crate::error::EdgeError;
use crate::error::LlmError;
use crate::llm::first_message;
use crate::route::{RouteCtx, Routed};

pub(crate) use args::{ArgError, validate};

pub const X_PLANO_PROMPT_TARGET: HeaderName = HeaderName::from_static("x-plano-prompt-target");

pub(crate) async fn handle(ctx: RouteCtx<'_>) -> Routed {
    match run(&ctx).await {
        Ok(r) => r,
        Err(e) => Routed {
            response: calls::error_response(&e),
            upstream: "-",
        },
    }
}

/// What the function-calling answer asks for.
enum Plan<'a> {
    Call {
        target: &'a PromptTarget,
        args: Map<String, Value>,
    },
    Clarify {
        target: &'a PromptTarget,
        missing: Vec<String>,
    },
    /// No tool chosen: the `default: true` target.
    Default(&'a PromptTarget),
    OwnAnswer(Value),
}

async fn run(ctx: &RouteCtx<'_>) -> Result<Routed, EdgeError> {
    let status = ctx.edge.egress.borrow().clone();
    if !status.up {
        return Err(EdgeError::EgressUnavailable(status.detail));
    }
    let targets = &ctx.config.prompt_targets;
    let body = function_calling_request(
        targets,
        &with_system(ctx.config.system_prompt.as_deref(), ctx.messages()),
        ctx.config.overrides.function_calling_model.as_deref(),
    );
    let span = tracing::info_span!(
        "routing",
        otel.name = "routing prompt_targets",
        plano.operation = "routing"
    );
    let completion =
        tracing::Instrument::instrument(ctx.llm().complete(&body, ctx.remaining()), span)
            .await
            .map_err(|e| llm_error("the function-calling call", e))?;
    match plan(targets, completion)? {
        Plan::OwnAnswer(completion) => Ok(Routed {
            response: own_answer(ctx, completion),
            upstream: "egress",
        }),
        Plan::Clarify { target, missing } => {
            Ok(tagged(clarify(ctx, target, &missing).await, target))
        }
        Plan::Default(target) => {
            let mut args = args::defaults(target);
            // No model filled its parameters: a POST catch-all sees the conversation.
            if target.endpoint.method == HttpMethod::Post && !args.contains_key("messages") {
                args.insert("messages".into(), Value::Array(ctx.messages().to_vec()));
            }
            call_target(ctx, target, args).await
        }
        Plan::Call { target, args } => call_target(ctx, target, args).await,
    }
}

async fn call_target(
    ctx: &RouteCtx<'_>,
    target: &PromptTarget,
    args: Map<String, Value>,
) -> Result<Routed, EdgeError> {
    use tracing::Instrument;
    // One span per prompt target: the endpoint call and the dispatch LLM call inside it.
    let span = tracing::info_span!(
        "prompt_target",
        otel.name = %format_args!("prompt_target {}", target.name),
        plano.operation = "prompt_target",
        plano.target = %target.name,
    );
    let answer = endpoint::call(ctx, target, args.clone())
        .instrument(span.clone())
        .await?;
    let routed = if target.auto_llm_dispatch_on_response {
        dispatch(ctx, target, &args, &answer)
            .instrument(span)
            .await?
    } else {
        Routed {
            response: message_response(ctx, &answer),
            upstream: "endpoint",
        }
    };
    Ok(tagged(routed, target))
}

fn tagged(mut routed: Routed, target: &PromptTarget) -> Routed {
    if let Ok(v) = HeaderValue::from_str(&target.name) {
        routed
            .response
            .headers_mut()
            .insert(X_PLANO_PROMPT_TARGET, v);
    }
    routed
}

fn llm_error(what: &'static str, err: LlmError) -> EdgeError {
    EdgeError::Llm { what, err }
}

/// The configured system prompt first (when there is one), then the client's messages.
fn with_system(system: Option<&str>, messages: &[Value]) -> Vec<Value> {
    let mut out = Vec::with_capacity(messages.len() + 1);
    if let Some(s) = system.filter(|s| !s.trim().is_empty()) {
        out.push(json!({"role": "system", "content": s}));
    }
    out.extend(messages.iter().cloned());
    out
}

/// The targets as OpenAI tools, in config order.
pub(crate) fn tools(targets: &[PromptTarget]) -> Vec<Value> {
    targets
        .iter()
        .map(|t| {
            let mut properties = Map::new();
            for p in &t.parameters {
                properties.insert(p.name.clone(), args::schema(p));
            }
            let required: Vec<&str> = t
                .parameters
                .iter()
                .filter(|p| p.required)
                .map(|p| p.name.as_str())
                .collect();
            json!({
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": {"type": "object", "properties": properties, "required": required},
                },
            })
        })
        .collect()
}

pub(crate) fn function_calling_request(
    targets: &[PromptTarget],
    messages: &[Value],
    model: Option<&str>,
) -> Value {
    let mut body = json!({
        "messages": messages,
        "tools": tools(targets),
        "tool_choice": "auto",
        "stream": false,
    });
    if let Some(m) = model {
        body["model"] = Value::String(m.to_string());
    }
    body
}

/// Read the function-calling answer. The first tool call counts (a prompt targets one
/// endpoint per turn); a call to an unknown target or with arguments that do not fit is
/// the model's mistake, answered with 502 so the client can retry.
fn plan(targets: &[PromptTarget], completion: Value) -> Result<Plan<'_>, EdgeError> {
    let call = first_message(&completion)
        .get("tool_calls")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(|c| c.get("function"))
        .cloned();
    let Some(call) = call else {
        return Ok(match targets.iter().find(|t| t.default) {
            Some(target) => Plan::Default(target),
            None => Plan::OwnAnswer(completion),
        });
    };
    let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
    let Some(target) = targets.iter().find(|t| t.name == name) else {
        return Err(EdgeError::InvalidToolCall {
            name: name.chars().take(128).collect(),
            valid: targets
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let raw = call.get("arguments").cloned().unwrap_or(Value::Null);
    match validate(target, &raw) {
        Ok(args) => Ok(Plan::Call { target, args }),
        Err(ArgError::Missing(missing)) => Ok(Plan::Clarify { target, missing }),
        Err(ArgError::Invalid(why)) => Err(EdgeError::InvalidToolArguments {
            target: target.name.clone(),
            why,
        }),
    }
}

/// The endpoint's answer as the assistant's content: a JSON string is unwrapped, anything
/// else is its text.
pub(crate) fn answer_text(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::String(s)) => s,
        _ => String::from_utf8_lossy(body).into_owned(),
    }
}

/// Second LLM call: answer the conversation from the endpoint's result.
async fn dispatch(
    ctx: &RouteCtx<'_>,
    target: &PromptTarget,
    args: &Map<String, Value>,
    answer: &str,
) -> Result<Routed, EdgeError> {
    let system = target
        .system_prompt
        .as_deref()
        .or(ctx.config.system_prompt.as_deref());
    let context = format!(
        "Answer the user with this result of `{}` (called with {}):\n{answer}",
        target.name,
        Value::Object(args.clone())
    );
    let system = match system {
        Some(s) if !s.trim().is_empty() => format!("{}\n\n{context}", s.trim_end()),
        _ => context,
    };
    let body = client_body_with(ctx, &with_system(Some(&system), ctx.messages()));
    let res = ctx
        .llm()
        .open(&body, ctx.remaining())
        .await
        .map_err(|e| llm_error("the answer call", e))?;
    // Whatever the egress answered (stream, completion or its error) goes to the client.
    Ok(Routed {
        response: calls::stream_body(res),
        upstream: "egress",
    })
}

/// Missing required parameters: the model asks the user for them. When that call fails,
/// the edge asks itself, naming the parameters, so the user still learns what is needed.
async fn clarify(ctx: &RouteCtx<'_>, target: &PromptTarget, missing: &[String]) -> Routed {
    let described: Vec<String> = missing
        .iter()
        .map(|name| {
            let desc = target
                .parameters
                .iter()
                .find(|p| &p.name == name)
                .and_then(|p| p.description.as_deref());
            match desc {
                Some(d) => format!("{name} ({d})"),
                None => name.clone(),
            }
        })
        .collect();
    let instruction = format!(
        "To help with this the assistant will use `{}` ({}), which still needs: {}. Ask the \
         user one short question for exactly these details. Do not answer anything else.",
        target.name,
        target.description,
        described.join("; ")
    );
    let system = match ctx.config.system_prompt.as_deref() {
        Some(s) if !s.trim().is_empty() => format!("{}\n\n{instruction}", s.trim_end()),
        _ => instruction,
    };
    let body = client_body_with(ctx, &with_system(Some(&system), ctx.messages()));
    match ctx.llm().open(&body, ctx.remaining()).await {
        Ok(res) if res.status().is_success() => Routed {
            response: calls::stream_body(res),
            upstream: "egress",
        },
        outcome => {
            let why = match outcome {
                Ok(res) => format!("status {}", res.status()),
                Err(e) => e.to_string(),
            };
            tracing::warn!(listener = %ctx.listener.name, target = %target.name, reason = %why, "clarifying-question call failed; asking with a fixed question");
            let question = format!(
                "To continue I need a few more details: {}. Could you provide them?",
                described.join(", ")
            );
            Routed {
                response: message_response(ctx, &question),
                upstream: "-",
            }
        }
    }
}

/// The client's request with these messages (its model and sampling settings kept).
fn client_body_with(ctx: &RouteCtx<'_>, messages: &[Value]) -> Value {
    let mut body = ctx.body.clone();
    body.insert("messages".into(), Value::Array(messages.to_vec()));
    Value::Object(body)
}

/// The function-calling model answered without a tool and there is no default target.
fn own_answer(ctx: &RouteCtx<'_>, completion: Value) -> Response<Inner> {
    if ctx.streaming() {
        let content = calls::content_text(&first_message(&completion)["content"]);
        message_response(ctx, &content)
    } else {
        calls::json_response(
            StatusCode::OK,
            bytes::Bytes::from(completion.to_string()),
            "application/json",
        )
    }
}

/// `content` as the assistant's message: a chat completion, or (when the client streams) a
/// stream of one chunk carrying all of it, then `[DONE]`.
fn message_response(ctx: &RouteCtx<'_>, content: &str) -> Response<Inner> {
    let id = format!("chatcmpl-{}", ctx.request_id.to_str().unwrap_or("plano"));
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let model = ctx
        .body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("plano-prompt-target");
    let usage = json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0});
    if !ctx.streaming() {
        let body = json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": usage,
        });
        return calls::json_response(
            StatusCode::OK,
            bytes::Bytes::from(body.to_string()),
            "application/json",
        );
    }
    let chunk = json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    });
    let mut sse = format!("data: {chunk}\n\n");
    let wants_usage = ctx
        .body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if wants_usage {
        let u = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": usage});
        sse.push_str(&format!("data: {u}\n\n"));
    }
    sse.push_str("data: [DONE]\n\n");
    calls::json_response(StatusCode::OK, bytes::Bytes::from(sse), "text/event-stream")
}

#[cfg(test)]
mod tests {
    use super::*;
    use plano_config::{ParamType, PromptParameter, PromptTargetEndpoint};

    pub(crate) fn target(name: &str, default: bool) -> PromptTarget {
        PromptTarget {
            name: name.into(),
            description: format!("{name} things"),
            parameters: vec![PromptParameter {
                name: "city".into(),
                description: Some("a city".into()),
                required: true,
                ty: ParamType::String,
                format: None,
                enum_values: vec![],
                default: None,
            }],
            endpoint: PromptTargetEndpoint {
                name: "app".into(),
                path: "/x".into(),
                method: HttpMethod::Post,
                http_headers: vec![],
            },
            system_prompt: None,
            auto_llm_dispatch_on_response: true,
            default,
        }
    }

    fn completion(message: Value) -> Value {
        json!({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
    }

    fn tool_call(name: &str, arguments: &str) -> Value {
        completion(json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}
        ]}))
    }

    #[test]
    fn tools_carry_the_parameter_schema() {
        let t = tools(&[target("weather", false)]);
        assert_eq!(t[0]["function"]["name"], "weather");
        assert_eq!(
            t[0]["function"]["parameters"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(t[0]["function"]["parameters"]["required"], json!(["city"]));
    }

    #[test]
    fn plans_from_the_function_calling_answer() {
        let ts = [target("weather", false), target("fallback", true)];
        match plan(&ts, tool_call("weather", r#"{"city":"Paris"}"#)) {
            Ok(Plan::Call { target, args }) => {
                assert_eq!(target.name, "weather");
                assert_eq!(args["city"], "Paris");
            }
            _ => panic!("expected a call"),
        }
        assert!(
            matches!(plan(&ts, tool_call("weather", "{}")), Ok(Plan::Clarify { missing, .. }) if missing == ["city"])
        );
        let e = plan(&ts, tool_call("weather", "{not json")).err().unwrap();
        assert_eq!(
            (e.status().as_u16(), e.reason()),
            (502, "invalid_tool_arguments")
        );
        let e = plan(&ts, tool_call("hotels", "{}")).err().unwrap();
        assert_eq!(e.reason(), "invalid_tool_call");
        let own = completion(json!({"role": "assistant", "content": "hello"}));
        assert!(
            matches!(plan(&ts, own.clone()), Ok(Plan::Default(target)) if target.name == "fallback")
        );
        assert!(matches!(plan(&ts[..1], own), Ok(Plan::OwnAnswer(_))));
    }

    #[test]
    fn answer_text_unwraps_json_strings() {
        assert_eq!(answer_text(br#""sunny""#), "sunny");
        assert_eq!(answer_text(br#"{"t":20}"#), r#"{"t":20}"#);
        assert_eq!(answer_text(b"plain"), "plain");
    }
}
