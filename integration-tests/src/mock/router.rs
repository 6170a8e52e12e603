//! The mock as a router model: a request whose user message is a routing prompt in Plano's
//! router format (`<routes>` with one JSON route per line, `<conversation>` with the
//! conversation as JSON) gets a routing answer, `{"route": ["<name>"]}`, in whichever API
//! it arrived, decided by keywords in the conversation's last user message:
//! - "function" or "code" → the first route whose name or description mentions code;
//! - anything else → the first route that mentions chat, conversation or general, else the
//!   first route that does not mention code;
//! - no such route → `{"route": []}`.
//!
//! Failure modes, chosen by the router request's model name (so a `mock-llm` process,
//! which tests cannot script, plays them too):
//! - a name containing `router-down` → 503 in the route's error shape;
//! - `router-slow` → the same answer after [`SLOW`];
//! - `router-nonsense` → a text that is no routing answer.

use std::time::Duration;

use serde_json::Value;

/// How long a `router-slow` model takes to answer.
pub const SLOW: Duration = Duration::from_secs(10);

pub(crate) struct Routed {
    pub delay: Duration,
    /// The answer text, or the error status to answer with.
    pub text: Result<String, http::StatusCode>,
}

/// The routing answer for this request, or `None` when it is not a routing prompt.
pub(crate) fn answer(model: &str, user_text: Option<&str>) -> Option<Routed> {
    let prompt = user_text?;
    let routes = routes(prompt)?;
    let last_user = last_user_text(prompt)?;
    let mut delay = Duration::ZERO;
    if model.contains("router-down") {
        return Some(Routed {
            delay,
            text: Err(http::StatusCode::SERVICE_UNAVAILABLE),
        });
    }
    if model.contains("router-nonsense") {
        return Some(Routed {
            delay,
            text: Ok("I would pick the blue one, probably.".into()),
        });
    }
    if model.contains("router-slow") {
        delay = SLOW;
    }
    let mentions = |(name, description): &(String, String), words: &[&str]| {
        let text = format!("{name} {description}").to_lowercase();
        words.iter().any(|w| text.contains(w))
    };
    let asks = last_user.to_lowercase();
    let pick = if asks.contains("function") || asks.contains("code") {
        routes.iter().find(|r| mentions(r, &["code"]))
    } else {
        routes
            .iter()
            .find(|r| mentions(r, &["chat", "conversation", "general"]))
            .or_else(|| routes.iter().find(|r| !mentions(r, &["code"])))
    };
    let names: Vec<&str> = pick.iter().map(|(n, _)| n.as_str()).collect();
    Some(Routed {
        delay,
        text: Ok(serde_json::json!({ "route": names }).to_string()),
    })
}

/// The text between the last `<tag>` line and the `</tag>` after it.
fn block<'a>(prompt: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>\n");
    let close = format!("\n</{tag}>");
    let start = prompt.rfind(&open)? + open.len();
    let len = prompt[start..].find(&close)?;
    Some(&prompt[start..start + len])
}

/// (name, description) of each route, one JSON object per line.
fn routes(prompt: &str) -> Option<Vec<(String, String)>> {
    let lines = block(prompt, "routes")?;
    let routes: Vec<(String, String)> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            Some((
                v.get("name")?.as_str()?.to_string(),
                v.get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ))
        })
        .collect();
    (!routes.is_empty()).then_some(routes)
}

fn last_user_text(prompt: &str) -> Option<String> {
    let conversation: Value = serde_json::from_str(block(prompt, "conversation")?).ok()?;
    conversation
        .as_array()?
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(ask: &str) -> String {
        format!(
            "You are given routes within <routes></routes> XML tags:\n<routes>\n{}\n{}\n</routes>\n\n<conversation></conversation>:\n<conversation>\n{}\n</conversation>\n",
            r#"{"name": "code_generation", "description": "writing code", "parameters": {}}"#,
            r#"{"name": "small_talk", "description": "casual chat", "parameters": {}}"#,
            serde_json::json!([{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "ok"}, {"role": "user", "content": ask}])
        )
    }

    fn text(model: &str, ask: &str) -> Result<String, http::StatusCode> {
        answer(model, Some(&prompt(ask))).unwrap().text
    }

    #[test]
    fn keywords_pick_the_route() {
        assert_eq!(
            text("router", "write a Python function").unwrap(),
            r#"{"route":["code_generation"]}"#
        );
        assert_eq!(
            text("router", "hello there").unwrap(),
            r#"{"route":["small_talk"]}"#
        );
        assert!(answer("router", Some("just a question")).is_none());
        assert!(answer("router", None).is_none());
    }

    #[test]
    fn failure_modes_by_model_name() {
        assert_eq!(
            text("mock-router-down", "hi"),
            Err(http::StatusCode::SERVICE_UNAVAILABLE)
        );
        assert!(!text("router-nonsense", "hi").unwrap().contains("route"));
        assert_eq!(
            answer("router-slow", Some(&prompt("hi"))).unwrap().delay,
            SLOW
        );
    }
}
