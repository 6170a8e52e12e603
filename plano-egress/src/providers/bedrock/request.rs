//! Chat request → Converse request. The mapping rules are in the parent module's doc.

use serde_json::{Map, Value, json};

use crate::providers::TranslateError;

type Result<T> = std::result::Result<T, TranslateError>;

/// A chat completions request (model already the provider's own id) → a Converse body.
pub fn request_from_chat(chat: &Map<String, Value>) -> Result<Map<String, Value>> {
    let messages = chat
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::at("messages", "`messages` must be an array"))?;
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let m = m
            .as_object()
            .ok_or_else(|| TranslateError::at(&at, "a message must be an object"))?;
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| TranslateError::at(format!("{at}.role"), "missing or not a string"))?;
        match role {
            "system" | "developer" => system.extend(text_blocks(m.get("content"), &at)?),
            "user" => push_turn(&mut turns, "user", user_blocks(m.get("content"), &at)?),
            "assistant" => push_turn(&mut turns, "assistant", assistant_blocks(m, &at)?),
            "tool" => push_turn(&mut turns, "user", vec![tool_result(m, &at)?]),
            other => {
                return Err(TranslateError::at(
                    format!("{at}.role"),
                    format!("role `{other}` is not supported by Bedrock Converse"),
                ));
            }
        }
    }
    if turns.is_empty() {
        return Err(TranslateError::at(
            "messages",
            "Bedrock Converse needs at least one user or assistant message with content",
        ));
    }

    let mut out = Map::new();
    let history_has_tools = turns
        .iter()
        .flat_map(|(_, blocks)| blocks)
        .any(|b| b.get("toolUse").is_some() || b.get("toolResult").is_some());
    if let Some(tool_config) = tool_config(chat, &turns, history_has_tools)? {
        out.insert("toolConfig".into(), tool_config);
    }
    out.insert(
        "messages".into(),
        Value::Array(
            turns
                .into_iter()
                .map(|(role, content)| json!({ "role": role, "content": content }))
                .collect(),
        ),
    );
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    let inference = inference_config(chat)?;
    if !inference.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(inference));
    }
    let metadata = request_metadata(chat)?;
    if !metadata.is_empty() {
        out.insert("requestMetadata".into(), Value::Object(metadata));
    }
    reject_unsupported(chat)?;
    Ok(out)
}

/// Append a turn, merging into the previous one of the same role.
fn push_turn(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last, content)) if *last == role => content.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

/// Converse rejects blank text blocks, so they are left out.
fn text_block(text: &str) -> Option<Value> {
    (!text.trim().is_empty()).then(|| json!({ "text": text }))
}

/// Content that may only hold text (system messages, assistant text, tool results).
fn text_blocks(content: Option<&Value>, at: &str) -> Result<Vec<Value>> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(text_block(s).into_iter().collect()),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                let at = format!("{at}.content[{j}]");
                match part_type(part, &at)? {
                    "text" | "refusal" => {
                        out.extend(text_block(part_text(part, &at)?));
                        cache_point(part, &mut out);
                    }
                    other => {
                        return Err(TranslateError::at(
                            format!("{at}.type"),
                            format!("content part `{other}` is not allowed here"),
                        ));
                    }
                }
            }
            Ok(out)
        }
        Some(_) => Err(TranslateError::at(
            format!("{at}.content"),
            "content must be a string or an array of parts",
        )),
    }
}

fn part_type<'a>(part: &'a Value, at: &str) -> Result<&'a str> {
    part.get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::at(format!("{at}.type"), "missing or not a string"))
}

fn part_text<'a>(part: &'a Value, at: &str) -> Result<&'a str> {
    part.get("text")
        .or_else(|| part.get("refusal"))
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::at(format!("{at}.text"), "missing or not a string"))
}

fn user_blocks(content: Option<&Value>, at: &str) -> Result<Vec<Value>> {
    let Some(Value::Array(parts)) = content else {
        return text_blocks(content, at);
    };
    let mut out = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        match part_type(part, &at)? {
            "text" => out.extend(text_block(part_text(part, &at)?)),
            "image_url" => out.push(image_block(part, &at)?),
            other => {
                return Err(TranslateError::at(
                    format!("{at}.type"),
                    format!("content part `{other}` is not supported by Bedrock Converse"),
                ));
            }
        }
        cache_point(part, &mut out);
    }
    Ok(out)
}

/// A part marked with `cache_control` (the Anthropic-style marker some chat clients send)
/// ends a cacheable prefix: Converse spells that as a `cachePoint` block after it.
fn cache_point(part: &Value, out: &mut Vec<Value>) {
    let marked = part.get("cache_control").is_some_and(Value::is_object);
    let after_content = out.last().is_some_and(|b| b.get("cachePoint").is_none());
    if marked && after_content {
        out.push(json!({ "cachePoint": { "type": "default" } }));
    }
}

fn image_block(part: &Value, at: &str) -> Result<Value> {
    let url = match part.get("image_url") {
        Some(Value::String(s)) => Some(s.as_str()),
        Some(obj) => obj.get("url").and_then(Value::as_str),
        None => None,
    }
    .ok_or_else(|| TranslateError::at(format!("{at}.image_url.url"), "missing or not a string"))?;
    let param = format!("{at}.image_url.url");
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(TranslateError::at(
            param,
            "Bedrock cannot fetch image URLs: send the image inline as a base64 `data:` URL",
        ));
    };
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| TranslateError::at(&param, "malformed data URL"))?;
    let Some(mime) = meta.strip_suffix(";base64") else {
        return Err(TranslateError::at(
            param,
            "the data URL must be base64-encoded",
        ));
    };
    let format = match mime.to_ascii_lowercase().as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => {
            return Err(TranslateError::at(
                param,
                format!("image type `{other}` is not supported by Bedrock (png, jpeg, gif, webp)"),
            ));
        }
    };
    Ok(json!({ "image": { "format": format, "source": { "bytes": data } } }))
}

fn assistant_blocks(m: &Map<String, Value>, at: &str) -> Result<Vec<Value>> {
    let mut out = text_blocks(m.get("content"), at)?;
    match m.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (j, call) in calls.iter().enumerate() {
                out.push(tool_use(call, &format!("{at}.tool_calls[{j}]"))?);
            }
        }
        Some(_) => {
            return Err(TranslateError::at(
                format!("{at}.tool_calls"),
                "tool_calls must be an array",
            ));
        }
    }
    Ok(out)
}

fn tool_use(call: &Value, at: &str) -> Result<Value> {
    let str_at = |path: &str| {
        call.pointer(path).and_then(Value::as_str).ok_or_else(|| {
            TranslateError::at(
                format!("{at}{}", path.replace('/', ".")),
                "missing or not a string",
            )
        })
    };
    let id = str_at("/id")?;
    let name = str_at("/function/name")?;
    let arguments = match call.pointer("/function/arguments") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(TranslateError::at(
                format!("{at}.function.arguments"),
                "arguments must be a JSON string",
            ));
        }
    };
    let input: Value = if arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(arguments).map_err(|e| {
            TranslateError::at(
                format!("{at}.function.arguments"),
                format!("arguments are not valid JSON: {e}"),
            )
        })?
    };
    Ok(json!({ "toolUse": { "toolUseId": id, "name": name, "input": input } }))
}

fn tool_result(m: &Map<String, Value>, at: &str) -> Result<Value> {
    let id = m
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            TranslateError::at(format!("{at}.tool_call_id"), "missing or not a string")
        })?;
    let mut content = text_blocks(m.get("content"), at)?;
    // A cache point is a message-level block; inside a tool result it is invalid.
    content.retain(|b| b.get("cachePoint").is_none());
    Ok(json!({ "toolResult": { "toolUseId": id, "content": content } }))
}

fn tool_config(
    chat: &Map<String, Value>,
    turns: &[(&'static str, Vec<Value>)],
    history_has_tools: bool,
) -> Result<Option<Value>> {
    let mut tools = match chat.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tools)) => tools
            .iter()
            .enumerate()
            .map(|(i, t)| tool_spec(t, &format!("tools[{i}]")))
            .collect::<Result<Vec<_>>>()?,
        Some(_) => return Err(TranslateError::at("tools", "tools must be an array")),
    };
    let choice = tool_choice(chat.get("tool_choice"))?;
    if tools.is_empty() {
        if !history_has_tools {
            return Ok(None);
        }
        tools = declared_from_history(turns);
    }
    let mut config = Map::new();
    config.insert("tools".into(), Value::Array(tools));
    match choice {
        Choice::Default => {}
        Choice::None if history_has_tools => {}
        Choice::None => return Ok(None),
        Choice::Set(c) => {
            config.insert("toolChoice".into(), c);
        }
    }
    Ok(Some(Value::Object(config)))
}

fn tool_spec(tool: &Value, at: &str) -> Result<Value> {
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {}
        other => {
            return Err(TranslateError::at(
                format!("{at}.type"),
                format!(
                    "tool type `{}` is not supported by Bedrock Converse",
                    other.unwrap_or("(missing)")
                ),
            ));
        }
    }
    let f = tool
        .get("function")
        .ok_or_else(|| TranslateError::at(format!("{at}.function"), "missing"))?;
    let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
        TranslateError::at(format!("{at}.function.name"), "missing or not a string")
    })?;
    let schema = match f.get("parameters") {
        None | Some(Value::Null) => json!({ "type": "object", "properties": {} }),
        Some(p) => p.clone(),
    };
    let mut spec = Map::new();
    spec.insert("name".into(), json!(name));
    if let Some(d) = f
        .get("description")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
    {
        spec.insert("description".into(), json!(d));
    }
    spec.insert("inputSchema".into(), json!({ "json": schema }));
    Ok(json!({ "toolSpec": spec }))
}

fn declared_from_history(turns: &[(&'static str, Vec<Value>)]) -> Vec<Value> {
    let mut names: Vec<&str> = turns
        .iter()
        .flat_map(|(_, blocks)| blocks)
        .filter_map(|b| b.pointer("/toolUse/name").and_then(Value::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        // Only tool results, whose tool names chat does not record.
        names.push("tool");
    }
    names
        .into_iter()
        .map(|name| {
            json!({ "toolSpec": {
                "name": name,
                "description": "A tool used earlier in this conversation.",
                "inputSchema": { "json": { "type": "object" } },
            }})
        })
        .collect()
}

enum Choice {
    Default,
    None,
    Set(Value),
}

fn tool_choice(choice: Option<&Value>) -> Result<Choice> {
    let bad = || {
        TranslateError::at(
            "tool_choice",
            "tool_choice must be `auto`, `required`, `none` or {\"type\":\"function\",\"function\":{\"name\":…}}",
        )
    };
    Ok(match choice {
        None | Some(Value::Null) => Choice::Default,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Choice::Set(json!({ "auto": {} })),
            "required" => Choice::Set(json!({ "any": {} })),
            "none" => Choice::None,
            _ => return Err(bad()),
        },
        Some(obj) => {
            let name = obj
                .pointer("/function/name")
                .and_then(Value::as_str)
                .filter(|_| obj.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(bad)?;
            Choice::Set(json!({ "tool": { "name": name } }))
        }
    })
}

fn inference_config(chat: &Map<String, Value>) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for key in ["max_completion_tokens", "max_tokens"] {
        match chat.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => {
                let n = v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
                    TranslateError::at(key, format!("`{key}` must be a positive integer"))
                })?;
                out.insert("maxTokens".into(), json!(n));
                break;
            }
        }
    }
    for (key, name) in [("temperature", "temperature"), ("top_p", "topP")] {
        match chat.get(key) {
            None | Some(Value::Null) => {}
            Some(v) if v.is_number() => {
                out.insert(name.into(), v.clone());
            }
            Some(_) => return Err(TranslateError::at(key, format!("`{key}` must be a number"))),
        }
    }
    let stops = match chat.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![json!(s)],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a.clone(),
        Some(_) => {
            return Err(TranslateError::at(
                "stop",
                "`stop` must be a string or an array of strings",
            ));
        }
    };
    if !stops.is_empty() {
        out.insert("stopSequences".into(), Value::Array(stops));
    }
    Ok(out)
}

fn request_metadata(chat: &Map<String, Value>) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    match chat.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let v = v.as_str().ok_or_else(|| {
                    TranslateError::at(format!("metadata.{k}"), "metadata values must be strings")
                })?;
                out.insert(k.clone(), json!(v));
            }
        }
        Some(_) => {
            return Err(TranslateError::at(
                "metadata",
                "`metadata` must be an object",
            ));
        }
    }
    if let Some(user) = chat.get("user").and_then(Value::as_str) {
        out.entry("user").or_insert_with(|| json!(user));
    }
    Ok(out)
}

fn reject_unsupported(chat: &Map<String, Value>) -> Result<()> {
    if chat
        .get("n")
        .is_some_and(|n| !n.is_null() && n.as_u64() != Some(1))
    {
        return Err(TranslateError::at(
            "n",
            "Bedrock Converse returns one choice: `n` must be 1",
        ));
    }
    if let Some(rf) = chat.get("response_format").filter(|v| !v.is_null()) {
        let kind = rf
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("(missing)");
        if kind != "text" {
            return Err(TranslateError::at(
                "response_format.type",
                format!(
                    "response_format `{kind}` is not supported by Bedrock Converse; use a tool with a JSON schema instead"
                ),
            ));
        }
    }
    Ok(())
}
