//! Responses request → chat completions request.

use serde_json::{Map, Value, json};

use crate::providers::{TranslateError, hosted};

/// Request fields that only OpenAI's own servers can honour; a translated request
/// carrying them would quietly answer something else.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "conversation",
        "the Conversations API is not available for this model; send the history in `input` or use `previous_response_id`",
    ),
    (
        "prompt",
        "stored prompt templates are not available for this model; send `instructions` and `input` instead",
    ),
];

pub fn request_to_chat(req: &Map<String, Value>) -> Result<Map<String, Value>, TranslateError> {
    for (key, why) in UNSUPPORTED {
        if req.get(*key).is_some_and(|v| !v.is_null()) {
            return Err(TranslateError::at(*key, format!("`{key}`: {why}")));
        }
    }
    if req.get("background").and_then(Value::as_bool) == Some(true) {
        return Err(TranslateError::at(
            "background",
            "`background: true` is not available for this model; send the request without it",
        ));
    }

    let mut chat = Map::new();
    match req.get("model") {
        None | Some(Value::Null) => {}
        Some(m @ Value::String(_)) => {
            chat.insert("model".into(), m.clone());
        }
        Some(_) => return Err(TranslateError::at("model", "`model` must be a string")),
    }

    let mut messages = Vec::new();
    match req.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(_) => {
            return Err(TranslateError::at(
                "instructions",
                "`instructions` must be a string",
            ));
        }
    }
    for (i, item) in conversation_items(req)?.iter().enumerate() {
        item_to_messages(item, &format!("input[{i}]"), &mut messages)?;
    }
    if !messages.iter().any(|m| m["role"] != "system") {
        return Err(TranslateError::at(
            "input",
            "`input` is required: a string or a list of input items",
        ));
    }
    chat.insert("messages".into(), Value::Array(messages));

    let mut tools = Vec::new();
    match req.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, t) in list.iter().enumerate() {
                tool(t, &format!("tools[{i}]"), &mut tools, &mut chat)?;
            }
        }
        Some(_) => return Err(TranslateError::at("tools", "`tools` must be a list")),
    }
    // Chat providers reject `tool_choice` and `parallel_tool_calls` without tools.
    if !tools.is_empty() {
        if let Some(choice) = req.get("tool_choice").filter(|v| !v.is_null()) {
            chat.insert("tool_choice".into(), tool_choice(choice)?);
        }
        if let Some(p) = req.get("parallel_tool_calls").filter(|v| !v.is_null()) {
            let p = p.as_bool().ok_or_else(|| {
                TranslateError::at(
                    "parallel_tool_calls",
                    "`parallel_tool_calls` must be a boolean",
                )
            })?;
            chat.insert("parallel_tool_calls".into(), Value::Bool(p));
        }
        chat.insert("tools".into(), Value::Array(tools));
    }

    if let Some(n) = number(req, "max_output_tokens", true)? {
        chat.insert("max_tokens".into(), n);
    }
    for key in ["temperature", "top_p"] {
        if let Some(n) = number(req, key, false)? {
            chat.insert(key.into(), n);
        }
    }
    match req.get("user") {
        None | Some(Value::Null) => {}
        Some(u @ Value::String(_)) => {
            chat.insert("user".into(), u.clone());
        }
        Some(_) => return Err(TranslateError::at("user", "`user` must be a string")),
    }
    match req.get("stream") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => {
            chat.insert("stream".into(), Value::Bool(*b));
        }
        Some(_) => return Err(TranslateError::at("stream", "`stream` must be a boolean")),
    }
    if let Some(format) = req
        .get("text")
        .and_then(|t| t.get("format"))
        .filter(|f| !f.is_null())
        && let Some(rf) = response_format(format)?
    {
        chat.insert("response_format".into(), rf);
    }
    match req.get("reasoning").and_then(|r| r.get("effort")) {
        None | Some(Value::Null) => {}
        Some(e @ Value::String(_)) => {
            chat.insert("reasoning_effort".into(), e.clone());
        }
        Some(_) => {
            return Err(TranslateError::at(
                "reasoning.effort",
                "`reasoning.effort` must be a string",
            ));
        }
    }
    Ok(chat)
}

/// The request's `input` as a list of input items: a string is one user message. What
/// the lead stores for `previous_response_id` (with the response's `output` after it).
pub fn conversation_items(req: &Map<String, Value>) -> Result<Vec<Value>, TranslateError> {
    match req.get("input") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![
            json!({"type": "message", "role": "user", "content": s}),
        ]),
        Some(Value::Array(items)) => Ok(items.clone()),
        Some(_) => Err(TranslateError::at(
            "input",
            "`input` must be a string or a list of input items",
        )),
    }
}

fn item_to_messages(item: &Value, path: &str, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    let Some(obj) = item.as_object() else {
        return Err(TranslateError::at(
            path,
            "each input item must be an object",
        ));
    };
    let ty = match obj.get("type") {
        None | Some(Value::Null) if obj.contains_key("role") => "message",
        Some(Value::String(t)) => t.as_str(),
        _ => {
            return Err(TranslateError::at(
                format!("{path}.type"),
                "each input item needs a `type`",
            ));
        }
    };
    match ty {
        "message" => out.push(message(obj, path)?),
        "function_call" => function_call(obj, path, out)?,
        "function_call_output" => out.push(function_call_output(obj, path)?),
        // Chat providers take no reasoning as input; the answer stands without it.
        "reasoning" => {}
        other => {
            return Err(TranslateError::at(
                format!("{path}.type"),
                format!("input item type `{other}` is not supported for this model"),
            ));
        }
    }
    Ok(())
}

fn message(obj: &Map<String, Value>, path: &str) -> Result<Value, TranslateError> {
    let role = match obj.get("role").and_then(Value::as_str) {
        Some(r @ ("user" | "assistant" | "system")) => r,
        Some("developer") => "system",
        _ => {
            return Err(TranslateError::at(
                format!("{path}.role"),
                "`role` must be one of user, assistant, system, developer",
            ));
        }
    };
    let content_path = format!("{path}.content");
    let parts: Vec<(String, &Map<String, Value>)> = match obj.get("content") {
        Some(Value::String(s)) => return Ok(json!({"role": role, "content": s})),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let at = format!("{content_path}[{i}]");
                match p.as_object() {
                    Some(o) => Ok((at, o)),
                    None => Err(TranslateError::at(
                        at,
                        "each content part must be an object",
                    )),
                }
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(TranslateError::at(
                content_path,
                "`content` must be a string or a list of content parts",
            ));
        }
    };
    if role == "assistant" {
        return assistant_message(&parts);
    }
    let mut chat_parts = Vec::with_capacity(parts.len());
    for (at, part) in &parts {
        let converted = content_part(part, at)?;
        if role == "system" && converted["type"] != "text" {
            return Err(TranslateError::at(
                format!("{at}.type"),
                "system and developer messages take text only",
            ));
        }
        chat_parts.push(converted);
    }
    let content = match chat_parts.as_slice() {
        [only] if only["type"] == "text" => only["text"].clone(),
        _ => Value::Array(chat_parts),
    };
    Ok(json!({"role": role, "content": content}))
}

/// Earlier assistant output replayed as input: the text parts are pieces of one answer,
/// so they are joined. A refusal is what the assistant said, so it joins the text: chat
/// providers other than OpenAI have no `refusal` field.
fn assistant_message(parts: &[(String, &Map<String, Value>)]) -> Result<Value, TranslateError> {
    let mut text = String::new();
    for (at, part) in parts {
        let key = match part.get("type").and_then(Value::as_str) {
            Some("output_text" | "input_text") => "text",
            Some("refusal") => "refusal",
            other => {
                return Err(TranslateError::at(
                    format!("{at}.type"),
                    format!(
                        "assistant content part type `{}` is not supported; use output_text or refusal",
                        other.unwrap_or("(missing)")
                    ),
                ));
            }
        };
        text.push_str(str_field(part, key, at)?);
    }
    Ok(json!({"role": "assistant", "content": text}))
}

fn content_part(part: &Map<String, Value>, at: &str) -> Result<Value, TranslateError> {
    match part.get("type").and_then(Value::as_str) {
        Some("input_text" | "output_text") => {
            Ok(json!({"type": "text", "text": str_field(part, "text", at)?}))
        }
        Some("input_image") => {
            if let Some(url) = part.get("image_url").and_then(Value::as_str) {
                let mut image = json!({"url": url});
                if let Some(d) = part.get("detail").and_then(Value::as_str) {
                    image["detail"] = Value::String(d.to_owned());
                }
                Ok(json!({"type": "image_url", "image_url": image}))
            } else if part.get("file_id").is_some_and(|v| !v.is_null()) {
                Err(TranslateError::at(
                    format!("{at}.file_id"),
                    "images by `file_id` are not available for this model; send `image_url` (a URL or a data: URL)",
                ))
            } else {
                Err(TranslateError::at(
                    format!("{at}.image_url"),
                    "`input_image` needs `image_url`",
                ))
            }
        }
        Some("input_file") => {
            if let Some(data) = part.get("file_data").and_then(Value::as_str) {
                let mut file = json!({"file_data": data});
                if let Some(name) = part.get("filename").and_then(Value::as_str) {
                    file["filename"] = Value::String(name.to_owned());
                }
                Ok(json!({"type": "file", "file": file}))
            } else {
                Err(TranslateError::at(
                    at,
                    "files are accepted inline only (`file_data`); `file_id` and `file_url` are not available for this model",
                ))
            }
        }
        Some("input_audio") => match part.get("input_audio") {
            Some(audio @ Value::Object(_)) => {
                Ok(json!({"type": "input_audio", "input_audio": audio}))
            }
            _ => Err(TranslateError::at(
                format!("{at}.input_audio"),
                "`input_audio` needs an `input_audio` object with `data` and `format`",
            )),
        },
        other => Err(TranslateError::at(
            format!("{at}.type"),
            format!(
                "content part type `{}` is not supported for this model",
                other.unwrap_or("(missing)")
            ),
        )),
    }
}

/// A tool call from an earlier turn. Chat carries a turn's text and tool calls in one
/// assistant message, so the call joins the assistant message right before it.
fn function_call(
    obj: &Map<String, Value>,
    path: &str,
    out: &mut Vec<Value>,
) -> Result<(), TranslateError> {
    let call_id = str_field(obj, "call_id", path)?;
    let name = str_field(obj, "name", path)?;
    // A call to a namespace member comes back as `{name, namespace}`: chat knows it by
    // its flat name.
    let name = match obj.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() => flat_name(ns, name),
        _ => name.to_owned(),
    };
    let arguments = match obj.get("arguments") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => "{}".to_owned(),
        // Lenient: some clients send the arguments object itself.
        Some(v @ Value::Object(_)) => v.to_string(),
        Some(_) => {
            return Err(TranslateError::at(
                format!("{path}.arguments"),
                "`arguments` must be a JSON string",
            ));
        }
    };
    let call = json!({
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    });
    if let Some(last) = out.last_mut().and_then(Value::as_object_mut)
        && last.get("role").and_then(Value::as_str) == Some("assistant")
    {
        // An assistant turn that only called tools has no text: chat wants null there.
        if last.get("content").and_then(Value::as_str) == Some("") {
            last.insert("content".into(), Value::Null);
        }
        match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
            Some(calls) => calls.push(call),
            None => {
                last.insert("tool_calls".into(), Value::Array(vec![call]));
            }
        }
        return Ok(());
    }
    out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
    Ok(())
}

fn function_call_output(obj: &Map<String, Value>, path: &str) -> Result<Value, TranslateError> {
    let call_id = str_field(obj, "call_id", path)?;
    let content = match obj.get("output") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (i, p) in parts.iter().enumerate() {
                let at = format!("{path}.output[{i}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text") => match p.get("text") {
                        Some(Value::String(t)) => text.push_str(t),
                        _ => {
                            return Err(TranslateError::at(
                                format!("{at}.text"),
                                "`text` must be a string",
                            ));
                        }
                    },
                    _ => {
                        return Err(TranslateError::at(
                            format!("{at}.type"),
                            "tool output other than text is not available for this model",
                        ));
                    }
                }
            }
            text
        }
        _ => {
            return Err(TranslateError::at(
                format!("{path}.output"),
                "`output` must be a string or a list of text parts",
            ));
        }
    };
    Ok(json!({"role": "tool", "tool_call_id": call_id, "content": content}))
}

/// One Responses tool into chat `tools`: a function as is; a `namespace` as its member
/// functions, each under the flat name `<namespace>__<name>` ([`flat_name`]); a hosted
/// tool set aside for [`hosted::resolve`].
fn tool(
    t: &Value,
    path: &str,
    out: &mut Vec<Value>,
    chat: &mut Map<String, Value>,
) -> Result<(), TranslateError> {
    let Some(obj) = t.as_object() else {
        return Err(TranslateError::at(path, "each tool must be an object"));
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("function") => out.push(function_tool(obj, path, None)?),
        Some("namespace") => {
            let ns = str_field(obj, "name", path)?;
            let Some(members) = obj.get("tools").and_then(Value::as_array) else {
                return Err(TranslateError::at(
                    format!("{path}.tools"),
                    "a `namespace` tool needs a list of `tools`",
                ));
            };
            for (j, m) in members.iter().enumerate() {
                let at = format!("{path}.tools[{j}]");
                let Some(m) = m.as_object() else {
                    return Err(TranslateError::at(at, "each tool must be an object"));
                };
                if m.get("type").and_then(Value::as_str) != Some("function") {
                    return Err(TranslateError::at(
                        format!("{at}.type"),
                        "a namespace holds `function` tools only",
                    ));
                }
                out.push(function_tool(m, &at, Some(ns))?);
            }
        }
        Some(kind) => {
            hosted::check(kind, obj, path)?;
            hosted::set_aside(chat, t);
        }
        None => {
            return Err(TranslateError::at(
                format!("{path}.type"),
                "each tool needs a `type`",
            ));
        }
    }
    Ok(())
}

fn function_tool(
    obj: &Map<String, Value>,
    path: &str,
    namespace: Option<&str>,
) -> Result<Value, TranslateError> {
    let name = str_field(obj, "name", path)?;
    let mut function = Map::new();
    function.insert(
        "name".into(),
        Value::String(match namespace {
            Some(ns) => flat_name(ns, name),
            None => name.to_owned(),
        }),
    );
    for key in ["description", "parameters", "strict"] {
        if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
            function.insert(key.into(), v.clone());
        }
    }
    Ok(json!({"type": "function", "function": function}))
}

/// The chat name of a namespace member: Codex's own flat form, `<namespace>__<name>`.
pub(crate) fn flat_name(namespace: &str, name: &str) -> String {
    format!(
        "{}__{}",
        namespace.trim_end_matches('_'),
        name.trim_start_matches('_')
    )
}

/// The `(namespace, name)` a chat tool name stands for, when the request declared it as a
/// member of a `namespace` tool (and no plain function of the request has that name).
pub(crate) fn namespace_member<'a>(
    req: &'a Map<String, Value>,
    flat: &str,
) -> Option<(&'a str, &'a str)> {
    let tools = req.get("tools")?.as_array()?;
    let plain = |t: &Value| {
        t.get("type").and_then(Value::as_str) == Some("function")
            && t.get("name").and_then(Value::as_str) == Some(flat)
    };
    if tools.iter().any(plain) {
        return None;
    }
    tools
        .iter()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("namespace"))
        .find_map(|t| {
            let ns = t.get("name")?.as_str()?;
            t.get("tools")?.as_array()?.iter().find_map(|m| {
                let name = m.get("name")?.as_str()?;
                (flat_name(ns, name) == flat).then_some((ns, name))
            })
        })
}

fn tool_choice(choice: &Value) -> Result<Value, TranslateError> {
    match choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => {
            Ok(choice.clone())
        }
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = str_field(o, "name", "tool_choice")?;
            Ok(json!({"type": "function", "function": {"name": name}}))
        }
        _ => Err(TranslateError::at(
            "tool_choice",
            "`tool_choice` must be auto, none, required or {\"type\": \"function\", \"name\": …} for this model",
        )),
    }
}

fn response_format(format: &Value) -> Result<Option<Value>, TranslateError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let Some(obj) = format.as_object() else {
                return Ok(None);
            };
            let mut schema = Map::new();
            schema.insert(
                "name".into(),
                Value::String(str_field(obj, "name", "text.format")?.to_owned()),
            );
            for key in ["schema", "description", "strict"] {
                if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
                    schema.insert(key.into(), v.clone());
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        _ => Err(TranslateError::at(
            "text.format.type",
            "`text.format.type` must be text, json_object or json_schema",
        )),
    }
}

/// A numeric field, absent or null as `None`. `integer` asks for a whole number ≥ 1.
fn number(
    req: &Map<String, Value>,
    key: &str,
    integer: bool,
) -> Result<Option<Value>, TranslateError> {
    match req.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) if integer && v.as_u64().is_some_and(|n| n >= 1) => Ok(Some(v.clone())),
        Some(v) if !integer && v.is_number() => Ok(Some(v.clone())),
        Some(_) if integer => Err(TranslateError::at(
            key,
            format!("`{key}` must be a positive integer"),
        )),
        Some(_) => Err(TranslateError::at(key, format!("`{key}` must be a number"))),
    }
}

fn str_field<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a str, TranslateError> {
    obj.get(key).and_then(Value::as_str).ok_or_else(|| {
        TranslateError::at(format!("{path}.{key}"), format!("`{key}` must be a string"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::responses::{ResponseCtx, StreamFromChat, response_from_chat};
    use crate::providers::{ClientStream, hosted};

    /// What Codex sends: plain functions, a `namespace` of functions, a hosted web search.
    fn codex_request() -> Map<String, Value> {
        json!({
            "model": "m",
            "input": "hi",
            "tools": [
                {"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
                {"type": "namespace", "name": "multi_agent_v1", "description": "agents",
                 "tools": [
                    {"type": "function", "name": "spawn_agent", "description": "spawn",
                     "parameters": {"type": "object"}},
                    {"type": "function", "name": "wait_agent", "parameters": {"type": "object"}}
                 ]},
                {"type": "web_search", "external_web_access": false}
            ]
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    #[test]
    fn namespaces_flatten_and_hosted_tools_are_set_aside() {
        let mut chat = request_to_chat(&codex_request()).unwrap();
        let names: Vec<&str> = chat["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "exec_command",
                "multi_agent_v1__spawn_agent",
                "multi_agent_v1__wait_agent"
            ]
        );
        assert_eq!(chat["tools"][1]["function"]["description"], "spawn");
        let set_aside = hosted::take(&mut chat);
        assert_eq!(
            set_aside,
            [json!({"type": "web_search", "external_web_access": false})]
        );
    }

    #[test]
    fn a_call_to_a_member_comes_back_with_its_namespace() {
        let ctx = ResponseCtx::new(codex_request());
        let chat = json!({"choices": [{"finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "multi_agent_v1__spawn_agent", "arguments": "{}"}},
            {"id": "c2", "type": "function",
             "function": {"name": "exec_command", "arguments": "{}"}}
        ]}}]});
        let r = response_from_chat(&chat, &ctx).unwrap();
        let out = r["output"].as_array().unwrap();
        assert_eq!(out[0]["name"], "spawn_agent");
        assert_eq!(out[0]["namespace"], "multi_agent_v1");
        assert_eq!(out[1]["name"], "exec_command");
        assert!(out[1].get("namespace").is_none());

        // Replayed as input (Codex's next turn, or a stored conversation), it is the flat
        // name again.
        let mut next = codex_request();
        next.insert(
            "input".into(),
            json!([
                {"role": "user", "content": "hi"},
                out[0],
                {"type": "function_call_output", "call_id": "c1", "output": "ok"}
            ]),
        );
        let chat = request_to_chat(&next).unwrap();
        assert_eq!(
            chat["messages"][1]["tool_calls"][0]["function"]["name"],
            "multi_agent_v1__spawn_agent"
        );
    }

    #[test]
    fn streamed_member_calls_carry_the_namespace() {
        let mut s = StreamFromChat::new(ResponseCtx::new(codex_request()));
        let mut events = s.chunk(&json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "c1", "type": "function",
             "function": {"name": "multi_agent_v1__wait_agent", "arguments": "{\"a\""}}]}}]}));
        events.extend(
            s.chunk(&json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": ":1}"}}]}, "finish_reason": "tool_calls"}]})),
        );
        events.extend(s.finish());
        let data: Vec<Value> = events
            .iter()
            .filter_map(|e| serde_json::from_str(&e.data).ok())
            .collect();
        let added = data
            .iter()
            .find(|d| d["type"] == "response.output_item.added")
            .unwrap();
        assert_eq!(added["item"]["name"], "wait_agent");
        assert_eq!(added["item"]["namespace"], "multi_agent_v1");
        let args_done = data
            .iter()
            .find(|d| d["type"] == "response.function_call_arguments.done")
            .unwrap();
        assert_eq!(args_done["name"], "wait_agent");
        let completed = data.last().unwrap();
        assert_eq!(
            completed["response"]["output"][0]["namespace"],
            "multi_agent_v1"
        );
        assert_eq!(completed["response"]["output"][0]["arguments"], "{\"a\":1}");
    }

    #[test]
    fn a_plain_function_named_like_a_member_stays_plain() {
        let mut req = codex_request();
        if let Some(Value::Array(tools)) = req.get_mut("tools") {
            tools.push(json!({"type": "function", "name": "multi_agent_v1__wait_agent"}));
        }
        assert_eq!(namespace_member(&req, "multi_agent_v1__wait_agent"), None);
        assert_eq!(
            namespace_member(&req, "multi_agent_v1__spawn_agent"),
            Some(("multi_agent_v1", "spawn_agent"))
        );
    }
}
