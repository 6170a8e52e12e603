//! What the mock answers when a test scripted nothing: decided from the conversation,
//! the same way for every API, so multi-turn tool use works end to end without scripting.
//!
//! Each API module reads its own request shape into a [`Conversation`]; [`Conversation::answer`]
//! picks the answer; the API module renders it in its wire format.

use serde_json::{Map, Value, json};

/// What an assistant turn says: text, or one call to a tool.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Text(String),
    ToolCall { name: String, arguments: Value },
}

/// The parts of a request that decide the default answer.
#[derive(Debug, Default)]
pub(crate) struct Conversation {
    /// The tool a default answer calls, with its JSON schema: the one `tool_choice` names,
    /// else the first offered; `None` when none is offered or `tool_choice` is "none".
    pub tool: Option<(String, Value)>,
    /// The text of the tool result(s) when the last message carries them.
    pub tool_result: Option<String>,
    /// The text of the last user message.
    pub user_text: Option<String>,
}

/// Token counts the mock reports. `input` is the whole prompt, cached parts included (the
/// OpenAI convention); Anthropic and Bedrock report [`Usage::uncached`] as their input
/// tokens, beside cache reads and writes, as their APIs do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Usage {
    pub input: u64,
    pub output: u64,
    pub cached: u64,
    pub cache_write: u64,
}

impl Usage {
    /// Input: a quarter of the request body's bytes (deterministic, grows with the prompt),
    /// at least the scripted cache reads and writes; output: the words of the answer.
    pub fn of(request_bytes: usize, answer: &Answer, cached: u64, cache_write: u64) -> Self {
        let words = match answer {
            Answer::Text(t) => t.split_whitespace().count(),
            Answer::ToolCall { arguments, .. } => arguments.to_string().split_whitespace().count(),
        };
        Usage {
            input: ((request_bytes / 4).max(1) as u64).max(cached + cache_write),
            output: words.max(1) as u64,
            cached,
            cache_write,
        }
    }

    /// A scripted stream's usage: `input` prompt tokens, `output` generated, no cache.
    pub fn fixed(input: u64, output: u64) -> Self {
        Usage {
            input,
            output,
            ..Usage::default()
        }
    }

    /// Prompt tokens neither read from nor written to the cache.
    pub fn uncached(&self) -> u64 {
        self.input.saturating_sub(self.cached + self.cache_write)
    }

    pub fn total(&self) -> u64 {
        self.input + self.output
    }
}

impl Conversation {
    pub fn answer(&self) -> Answer {
        if let Some(result) = &self.tool_result {
            return Answer::Text(format!("tool result: {result}"));
        }
        // Directives in the last user text, for clients whose tool lists a test does not
        // control (Codex, Claude Code): `mock:say <words>` answers those words (to the end
        // of the line), `mock:text` the usual reply, although tools are offered; `mock:call <tool> <JSON arguments>` (to the end of the line) calls that
        // tool when the request offers any.
        if let Some(text) = &self.user_text {
            if let Some((_, rest)) = text.rsplit_once("mock:say ")
                && let Some(line) = rest.lines().next()
            {
                return Answer::Text(line.trim().to_owned());
            }
            if text.contains("mock:text") {
                return Answer::Text(self.reply());
            }
            if self.tool.is_some()
                && let Some((name, arguments)) = call_directive(text)
            {
                return Answer::ToolCall { name, arguments };
            }
        }
        if let Some((name, schema)) = &self.tool {
            return Answer::ToolCall {
                name: name.clone(),
                arguments: arguments_for(schema),
            };
        }
        Answer::Text(self.reply())
    }

    /// `mock reply to: <last user text, first 200 chars>`, or `mock reply` without one.
    pub fn reply(&self) -> String {
        match &self.user_text {
            Some(text) => format!(
                "mock reply to: {}",
                text.chars().take(200).collect::<String>()
            ),
            None => "mock reply".into(),
        }
    }
}

/// `mock:call <tool> <JSON object>` in `text` (the last such line), as a tool call.
fn call_directive(text: &str) -> Option<(String, Value)> {
    let (_, rest) = text.rsplit_once("mock:call ")?;
    let line = rest.lines().next()?.trim();
    let (name, args) = line.split_once(' ')?;
    let arguments: Value = serde_json::from_str(args.trim()).ok()?;
    arguments.is_object().then(|| (name.to_owned(), arguments))
}

/// What a request's `tool_choice` allows.
pub(crate) enum Choice {
    /// Unset, auto, required or any: the first tool.
    First,
    None,
    Named(String),
}

/// The tool a default answer calls among `tools` (name, schema) under `choice`. A named
/// tool that is not offered is still called (with `{}`), as a model told to would.
pub(crate) fn pick_tool(tools: Vec<(String, Value)>, choice: Choice) -> Option<(String, Value)> {
    match choice {
        Choice::None => None,
        Choice::First => tools.into_iter().next(),
        Choice::Named(name) => {
            let schema = tools
                .into_iter()
                .find(|(n, _)| *n == name)
                .map_or_else(|| json!({}), |(_, s)| s);
            Some((name, schema))
        }
    }
}

/// Arguments that satisfy `schema`'s required properties: strings "mock" (or the first
/// enum value), numbers 1, booleans true, arrays empty, objects filled the same way.
pub fn arguments_for(schema: &Value) -> Value {
    let mut out = Map::new();
    let props = schema.get("properties").and_then(Value::as_object);
    let required = schema.get("required").and_then(Value::as_array);
    if let (Some(props), Some(required)) = (props, required) {
        for name in required.iter().filter_map(Value::as_str) {
            let prop = props.get(name).unwrap_or(&Value::Null);
            out.insert(name.to_string(), value_for(prop));
        }
    }
    Value::Object(out)
}

fn value_for(prop: &Value) -> Value {
    if let Some(first) = prop
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    // `type` may be a list such as ["string", "null"]: take the first non-null one.
    let ty = match prop.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("string"),
        _ => "string",
    };
    match ty {
        "integer" | "number" => json!(1),
        "boolean" => json!(true),
        "array" => json!([]),
        "object" => arguments_for(prop),
        "null" => Value::Null,
        _ => json!("mock"),
    }
}

/// Text pieces a stream sends: one per word (spaces kept), so every text answer of more
/// than one word arrives as several deltas.
pub fn text_pieces(text: &str) -> Vec<String> {
    let pieces: Vec<String> = text.split_inclusive(' ').map(str::to_string).collect();
    if pieces.is_empty() {
        vec![String::new()]
    } else {
        pieces
    }
}

/// Tool arguments as a stream sends them: the JSON text cut into three fragments (two when
/// it is too short), never inside a UTF-8 sequence.
pub fn argument_fragments(arguments: &str) -> Vec<String> {
    let chars: Vec<char> = arguments.chars().collect();
    let parts = if chars.len() >= 3 {
        3
    } else {
        chars.len().max(1)
    };
    let size = chars.len().div_ceil(parts).max(1);
    chars
        .chunks(size)
        .map(|c| c.iter().collect::<String>())
        .collect()
}

/// The text of a content value: a string, or the `text` of each part of an array.
pub fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            (!texts.is_empty()).then(|| texts.join(""))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_pick_text_or_a_named_call() {
        let mut c = Conversation {
            tool: Some(("first".into(), json!({}))),
            tool_result: None,
            user_text: Some("run it\nmock:call Bash {\"command\": \"echo hi\"}\nthanks".into()),
        };
        assert_eq!(
            c.answer(),
            Answer::ToolCall {
                name: "Bash".into(),
                arguments: json!({"command": "echo hi"})
            }
        );
        c.user_text = Some("<context>\nmock:say hello there\nmore".into());
        assert_eq!(c.answer(), Answer::Text("hello there".into()));
        c.user_text = Some("say hi mock:text".into());
        assert_eq!(
            c.answer(),
            Answer::Text("mock reply to: say hi mock:text".into())
        );
        // No tools offered: a call directive is ignored.
        c.tool = None;
        c.user_text = Some("mock:call Bash {}".into());
        assert_eq!(
            c.answer(),
            Answer::Text("mock reply to: mock:call Bash {}".into())
        );
        // After the tool ran, its result is answered.
        c.tool_result = Some("hi".into());
        assert_eq!(c.answer(), Answer::Text("tool result: hi".into()));
    }

    #[test]
    fn arguments_fill_required_properties_by_type() {
        let schema = json!({"type": "object", "properties": {
            "query": {"type": "string"}, "n": {"type": "integer"}, "ok": {"type": "boolean"},
            "unit": {"type": "string", "enum": ["c", "f"]}, "opt": {"type": "string"},
            "maybe": {"type": ["null", "number"]}
        }, "required": ["query", "n", "ok", "unit", "maybe"]});
        assert_eq!(
            arguments_for(&schema),
            json!({"query": "mock", "n": 1, "ok": true, "unit": "c", "maybe": 1})
        );
        assert_eq!(arguments_for(&json!({})), json!({}));
    }

    #[test]
    fn fragments_rejoin_and_are_at_least_two() {
        let args = r#"{"query":"mock"}"#;
        let f = argument_fragments(args);
        assert!(f.len() >= 2);
        assert_eq!(f.concat(), args);
        assert_eq!(argument_fragments("{}").concat(), "{}");
        assert_eq!(text_pieces("a b c").concat(), "a b c");
    }

    #[test]
    fn tool_result_wins_over_tools() {
        let c = Conversation {
            tool: Some(("f".into(), json!({}))),
            tool_result: Some("42".into()),
            user_text: Some("hi".into()),
        };
        assert_eq!(c.answer(), Answer::Text("tool result: 42".into()));
    }
}
