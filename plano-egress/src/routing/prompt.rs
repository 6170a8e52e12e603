//! The router prompt, in the format of Plano's router (Plano 0.4.36's
//! `Plano-Orchestrator`, which replaced Arch-Router for LLM routing): the routes as one JSON
//! object per line inside `<routes>`, the recent conversation as a 4-space indented JSON
//! list inside `<conversation>`, and an instruction to answer `{"route": [names]}`.
//! The text has to be this one word for word: the router models were trained on it.
//!
//! The conversation is taken from the request in whichever API the client spoke (Messages
//! and Responses bodies are read through their chat translations), keeping only user and
//! assistant text: system prompts, tool results and tool calls say nothing about intent
//! that the router was trained to read. It is bounded to the last [`MAX_TURNS`] turns and
//! to the router's context budget (a bytes / 4 token estimate), keeping the newest turns;
//! a user turn that does not fit is cut in the middle, never dropped, so the router always
//! sees the latest ask.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::providers::api::Api;
use crate::providers::{anthropic, responses};

/// Plano's router prompt template; `{routes}` and `{conversation}` are filled in.
pub const ROUTER_PROMPT: &str = r#"
You are a helpful assistant that selects the most suitable routes based on user intent.
You are provided with a list of available routes enclosed within <routes></routes> XML tags:
<routes>
{routes}
</routes>

You are also given the conversation context enclosed within <conversation></conversation> XML tags:
<conversation>
{conversation}
</conversation>

## Instructions
1. Analyze the latest user intent from the conversation.
2. Compare it against the available routes to find which routes can help fulfill the request.
3. Respond only with the exact route names from <routes>.
4. If no routes can help or the intent is already fulfilled, return an empty list.

## Response Format
Return your answer strictly in JSON as follows:
{"route": ["route_name_1", "route_name_2", "..."]}
If no routes are needed, return an empty list for `route`.
"#;

/// At most this many recent user/assistant turns are shown to the router.
pub const MAX_TURNS: usize = 16;
/// The router's context budget when none is configured (Plano's default).
pub const DEFAULT_CONTEXT_TOKENS: usize = 8192;
/// Cheap token estimate: bytes / 4.
const BYTES_PER_TOKEN: usize = 4;
const TRIM_MARKER: &str = "…";

/// One message of the conversation, as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Turn {
    pub role: String,
    pub content: String,
}

impl Turn {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// What routing reads from a request: every message as text (system prompts included:
/// session affinity keys on them) and the names of the tools offered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conversation {
    pub turns: Vec<Turn>,
    pub tools: Vec<String>,
}

impl Conversation {
    /// Read the conversation of a request body in `api`. A body that cannot be read as a
    /// conversation yields an empty one (the request then is not routed).
    pub fn of(api: Api, body: &Map<String, Value>) -> Self {
        let chat = match api {
            Api::Chat => None,
            Api::Messages => anthropic::request_to_chat(body).ok(),
            Api::Responses => responses::request_to_chat(body).ok(),
            Api::Converse => return Self::default(),
        };
        Self::of_chat(chat.as_ref().unwrap_or(body))
    }

    fn of_chat(chat: &Map<String, Value>) -> Self {
        let turns = chat
            .get("messages")
            .and_then(Value::as_array)
            .map(|msgs| {
                msgs.iter()
                    .filter_map(|m| {
                        let role = m.get("role")?.as_str()?;
                        Some(Turn::new(role, &text_of(m.get("content"))))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let tools = chat
            .get("tools")
            .and_then(Value::as_array)
            .map(|tools| {
                tools
                    .iter()
                    .filter_map(|t| {
                        t.get("function")
                            .and_then(|f| f.get("name"))
                            .or_else(|| t.get("name"))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self { turns, tools }
    }

    /// Whether the last message is a user turn with text (Plano's test for
    /// `route_on_user_only`): a tool result, an assistant continuation or an empty user
    /// message is not.
    pub fn ends_with_user_turn(&self) -> bool {
        self.turns
            .last()
            .is_some_and(|t| t.role == "user" && !t.content.trim().is_empty())
    }

    /// The text of the last user turn, if any.
    pub fn last_user_text(&self) -> Option<&str> {
        self.turns
            .iter()
            .rev()
            .find(|t| t.role == "user")
            .map(|t| t.content.as_str())
    }

    /// The turns the router sees: user and assistant text only, the newest [`MAX_TURNS`],
    /// within `context_tokens` (counting the prompt itself).
    pub fn for_router(&self, context_tokens: usize) -> Vec<Turn> {
        let relevant: Vec<&Turn> = self
            .turns
            .iter()
            .filter(|t| matches!(t.role.as_str(), "user" | "assistant") && !t.content.is_empty())
            .collect();
        let recent = &relevant[relevant.len().saturating_sub(MAX_TURNS)..];
        let mut used = ROUTER_PROMPT.len() / BYTES_PER_TOKEN;
        let mut picked: Vec<Turn> = Vec::new();
        for turn in recent.iter().rev() {
            let cost = turn.content.len() / BYTES_PER_TOKEN;
            if used + cost > context_tokens {
                let left = context_tokens.saturating_sub(used);
                if turn.role == "user" && left > 0 {
                    picked.push(Turn {
                        role: turn.role.clone(),
                        content: trim_middle(&turn.content, left * BYTES_PER_TOKEN),
                    });
                }
                break;
            }
            used += cost;
            picked.push((*turn).clone());
        }
        if picked.is_empty()
            && let Some(last) = recent.last()
        {
            picked.push(Turn {
                role: last.role.clone(),
                content: trim_middle(&last.content, context_tokens * BYTES_PER_TOKEN),
            });
        }
        picked.reverse();
        picked
    }
}

/// Text of a chat message's `content`: a string, or the text parts of a list.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(s.as_str()),
                Value::Object(o) => o.get("text").and_then(Value::as_str),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Keep about 60 % of the budget from the start and 40 % from the end, with an ellipsis
/// between: people frame a task at the start and ask at the end of a long paste.
fn trim_middle(s: &str, max_bytes: usize) -> String {
    if s.len() <= max_bytes {
        return s.to_string();
    }
    if max_bytes <= TRIM_MARKER.len() {
        return s[..floor_boundary(s, max_bytes)].to_string();
    }
    let room = max_bytes - TRIM_MARKER.len();
    let head = floor_boundary(s, room * 3 / 5);
    let tail_len = room - head;
    let mut tail = s.len().saturating_sub(tail_len);
    while tail < s.len() && !s.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}{TRIM_MARKER}{}", &s[..head], &s[tail..])
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A route as the router sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteText<'a> {
    pub name: &'a str,
    pub description: &'a str,
}

/// The `<routes>` block: one JSON object per line with Python-style spacing, each with the
/// empty `parameters` schema Plano's router expects.
pub fn routes_block<'a>(routes: impl IntoIterator<Item = RouteText<'a>>) -> String {
    routes
        .into_iter()
        .map(|r| {
            format!(
                r#"{{"name": {}, "description": {}, "parameters": {{"type": "object", "properties": {{}}, "required": []}}}}"#,
                json_string(r.name),
                json_string(r.description)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The conversation block: a JSON list indented by four spaces (as Python's
/// `json.dumps(…, indent=4)` writes it).
pub fn conversation_block(turns: &[Turn]) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    if turns.serialize(&mut ser).is_err() {
        return "[]".into();
    }
    String::from_utf8(out).unwrap_or_else(|_| "[]".into())
}

/// The whole prompt for these routes and turns.
pub fn prompt(routes_block: &str, turns: &[Turn]) -> String {
    ROUTER_PROMPT
        .replace("{routes}", routes_block)
        .replace("{conversation}", &conversation_block(turns))
}

/// The chat completions body sent to the router model.
pub fn router_body(model_id: &str, prompt: String) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("model".into(), Value::String(model_id.to_string()));
    body.insert(
        "messages".into(),
        serde_json::json!([{ "role": "user", "content": prompt }]),
    );
    body.insert("temperature".into(), serde_json::json!(0.01));
    body.insert("stream".into(), Value::Bool(false));
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn the_prompt_is_plano_routers_format() {
        let routes = routes_block([
            RouteText {
                name: "code_generation",
                description: "generating new code",
            },
            RouteText {
                name: "chat",
                description: "casual \"small\" talk",
            },
        ]);
        let p = prompt(&routes, &[Turn::new("user", "hi")]);
        let expected = r#"
You are a helpful assistant that selects the most suitable routes based on user intent.
You are provided with a list of available routes enclosed within <routes></routes> XML tags:
<routes>
{"name": "code_generation", "description": "generating new code", "parameters": {"type": "object", "properties": {}, "required": []}}
{"name": "chat", "description": "casual \"small\" talk", "parameters": {"type": "object", "properties": {}, "required": []}}
</routes>

You are also given the conversation context enclosed within <conversation></conversation> XML tags:
<conversation>
[
    {
        "role": "user",
        "content": "hi"
    }
]
</conversation>

## Instructions
1. Analyze the latest user intent from the conversation.
2. Compare it against the available routes to find which routes can help fulfill the request.
3. Respond only with the exact route names from <routes>.
4. If no routes can help or the intent is already fulfilled, return an empty list.

## Response Format
Return your answer strictly in JSON as follows:
{"route": ["route_name_1", "route_name_2", "..."]}
If no routes are needed, return an empty list for `route`.
"#;
        assert_eq!(p, expected);
    }

    #[test]
    fn system_tool_and_empty_turns_are_not_shown_to_the_router() {
        let c = Conversation::of(
            Api::Chat,
            &obj(json!({"messages": [
                {"role": "system", "content": "be terse"},
                {"role": "user", "content": [{"type": "text", "text": "what is 2+2"}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "1", "type": "function", "function": {"name": "calc", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "1", "content": "4"},
                {"role": "assistant", "content": "4"},
                {"role": "user", "content": "thanks"}
            ], "tools": [{"type": "function", "function": {"name": "calc"}}]})),
        );
        assert_eq!(c.tools, vec!["calc"]);
        assert_eq!(c.turns.len(), 6);
        assert_eq!(
            c.for_router(DEFAULT_CONTEXT_TOKENS),
            vec![
                Turn::new("user", "what is 2+2"),
                Turn::new("assistant", "4"),
                Turn::new("user", "thanks")
            ]
        );
        assert_eq!(c.last_user_text(), Some("thanks"));
    }

    #[test]
    fn messages_and_responses_bodies_are_read_through_chat() {
        let m = Conversation::of(
            Api::Messages,
            &obj(json!({"model": "x", "max_tokens": 10, "system": "sys",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "write a Python function"}]}]})),
        );
        assert_eq!(m.turns.first(), Some(&Turn::new("system", "sys")));
        assert_eq!(m.last_user_text(), Some("write a Python function"));
        let r = Conversation::of(
            Api::Responses,
            &obj(json!({"model": "x", "instructions": "sys", "input": "hello there"})),
        );
        assert_eq!(r.last_user_text(), Some("hello there"));
        let r2 = Conversation::of(
            Api::Responses,
            &obj(
                json!({"model": "x", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}),
            ),
        );
        assert_eq!(r2.last_user_text(), Some("hi"));
    }

    #[test]
    fn only_the_newest_turns_within_the_budget_are_kept() {
        let turns: Vec<Value> = (0..40)
            .map(|i| json!({"role": if i % 2 == 0 {"user"} else {"assistant"}, "content": format!("turn {i}")}))
            .collect();
        let c = Conversation::of(Api::Chat, &obj(json!({ "messages": turns })));
        let kept = c.for_router(DEFAULT_CONTEXT_TOKENS);
        assert_eq!(kept.len(), MAX_TURNS);
        assert_eq!(kept.last().unwrap().content, "turn 39");
        assert_eq!(kept.first().unwrap().content, "turn 24");

        // A tight budget: the prompt itself takes ~270 tokens; each old turn ~100.
        let long = "x".repeat(400);
        let c = Conversation::of(
            Api::Chat,
            &obj(json!({"messages": [
                {"role": "user", "content": long},
                {"role": "assistant", "content": long},
                {"role": "user", "content": "short ask"}
            ]})),
        );
        // Room for the ask and the assistant turn, then the older user turn is cut down.
        let budget = ROUTER_PROMPT.len() / 4 + 110;
        let kept = c.for_router(budget);
        assert_eq!(kept.len(), 3, "{kept:?}");
        assert_eq!(kept[2].content, "short ask");
        assert!(kept[0].content.len() <= 8 * 4 && kept[0].content.contains('…'));
        // No room for the assistant turn: it and everything older is dropped.
        let kept = c.for_router(ROUTER_PROMPT.len() / 4 + 50);
        assert_eq!(kept, vec![Turn::new("user", "short ask")]);
    }

    #[test]
    fn an_oversized_last_user_turn_is_cut_in_the_middle() {
        let ask = format!("START {} END", "y".repeat(100_000));
        let c = Conversation::of(
            Api::Chat,
            &obj(json!({"messages": [{"role": "user", "content": ask}]})),
        );
        let kept = c.for_router(1000);
        assert_eq!(kept.len(), 1);
        let text = &kept[0].content;
        assert!(text.starts_with("START "), "{}", &text[..20]);
        assert!(text.ends_with(" END"));
        assert!(text.contains('…'));
        assert!(text.len() <= 1000 * 4);
    }

    #[test]
    fn trimming_respects_utf8() {
        let s = "é".repeat(1000);
        for max in [0, 1, 2, 3, 4, 5, 17, 100] {
            let t = trim_middle(&s, max);
            assert!(t.len() <= max.max(TRIM_MARKER.len()), "{max}: {}", t.len());
        }
    }

    #[test]
    fn the_router_body_is_a_plain_chat_request() {
        let b = router_body("Plano-Orchestrator", "P".into());
        assert_eq!(
            Value::Object(b),
            json!({"model": "Plano-Orchestrator", "messages": [{"role": "user", "content": "P"}], "temperature": 0.01, "stream": false})
        );
    }
}
