//! A chat completions request → a Messages request for an Anthropic provider (upstream
//! side).

use serde_json::{Value, json};

use super::{Obj, as_array, as_obj, as_str, present, req_str, tool_input};
use crate::providers::TranslateError;

/// `max_tokens` sent when the chat request has none: Anthropic requires one, and 4096 is
/// within every Claude model's output limit.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

const JSON_OBJECT_HINT: &str =
    "Respond only with a valid JSON object, without any text before or after it.";

/// Chat request → Messages request. `model` is already the provider's own id; `stream` is
/// kept and `stream_options` dropped.
pub fn request_from_chat(chat: &Obj) -> Result<Obj, TranslateError> {
    let mut out = Obj::new();
    if let Some(model) = chat.get("model") {
        out.insert("model".into(), model.clone());
    }
    if let Some(n) = present(chat, "n")
        && n.as_u64() != Some(1)
    {
        return Err(TranslateError::at(
            "n",
            "`n` must be 1: Anthropic returns a single choice",
        ));
    }

    for legacy in ["functions", "function_call"] {
        if present(chat, legacy).is_some() {
            return Err(TranslateError::at(
                legacy,
                format!(
                    "`{legacy}` is deprecated and not translated: use `tools` and `tool_choice`"
                ),
            ));
        }
    }
    let Some(input) = present(chat, "messages") else {
        return Err(TranslateError::at("messages", "`messages` is required"));
    };
    let mut system = Vec::new();
    let mut turns = Turns::default();
    for (i, m) in as_array(input, "messages", "an array of messages")?
        .iter()
        .enumerate()
    {
        let at = format!("messages[{i}]");
        let o = as_obj(m, &at, "an object with `role` and `content`")?;
        let content = present(o, "content");
        let c_at = format!("{at}.content");
        match req_str(o, &at, "role")? {
            "system" | "developer" => {
                if let Some(c) = content {
                    system.extend(content_blocks(c, &c_at, false)?);
                }
            }
            "user" => {
                let blocks = match content {
                    Some(c) => content_blocks(c, &c_at, true)?,
                    None => Vec::new(),
                };
                turns.push("user", blocks);
            }
            "assistant" => turns.push("assistant", assistant_blocks(o, &at)?),
            "tool" => turns.push("user", vec![tool_result(o, &at)?]),
            other => {
                return Err(TranslateError::at(
                    format!("{at}.role"),
                    format!("role `{other}` cannot be sent to Anthropic"),
                ));
            }
        }
    }

    if let Some(format) = present(chat, "response_format") {
        let f = as_obj(format, "response_format", "an object")?;
        match req_str(f, "response_format", "type")? {
            "text" => {}
            "json_object" => system.push(json!({"type": "text", "text": JSON_OBJECT_HINT})),
            "json_schema" => {
                let schema = format
                    .pointer("/json_schema/schema")
                    .filter(|s| s.is_object())
                    .ok_or_else(|| {
                        TranslateError::at(
                            "response_format.json_schema.schema",
                            "`response_format.json_schema.schema` must be a JSON schema object",
                        )
                    })?;
                out.insert(
                    "output_config".into(),
                    json!({"format": {"type": "json_schema", "schema": schema}}),
                );
            }
            other => {
                return Err(TranslateError::at(
                    "response_format.type",
                    format!("unknown response_format `{other}`"),
                ));
            }
        }
    }
    if let Some(s) = system_value(system) {
        out.insert("system".into(), s);
    }
    out.insert("messages".into(), turns.into_value());

    let max = match present(chat, "max_completion_tokens").or_else(|| present(chat, "max_tokens")) {
        Some(v) => v.as_u64().ok_or_else(|| {
            TranslateError::at("max_tokens", "`max_tokens` must be a non-negative integer")
        })?,
        None => DEFAULT_MAX_TOKENS,
    };
    out.insert("max_tokens".into(), max.into());
    if let Some(v) = present(chat, "temperature") {
        let t = v
            .as_f64()
            .ok_or_else(|| TranslateError::at("temperature", "`temperature` must be a number"))?;
        out.insert(
            "temperature".into(),
            if t > 1.0 { json!(1.0) } else { v.clone() },
        );
    }
    for key in ["top_p", "top_k"] {
        if let Some(v) = present(chat, key) {
            if !v.is_number() {
                return Err(TranslateError::at(key, format!("`{key}` must be a number")));
            }
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(v) = present(chat, "stop") {
        let stops = match v {
            Value::String(s) => vec![s.clone()],
            _ => as_array(v, "stop", "a string or an array of strings")?
                .iter()
                .enumerate()
                .map(|(i, s)| as_str(s, &format!("stop[{i}]")).map(str::to_owned))
                .collect::<Result<_, _>>()?,
        };
        if !stops.is_empty() {
            out.insert("stop_sequences".into(), json!(stops));
        }
    }
    if let Some(v) = present(chat, "stream") {
        let b = v
            .as_bool()
            .ok_or_else(|| TranslateError::at("stream", "`stream` must be a boolean"))?;
        out.insert("stream".into(), b.into());
    }
    if let Some(u) = present(chat, "user") {
        out.insert("metadata".into(), json!({"user_id": as_str(u, "user")?}));
    }
    convert_tools(chat, &mut out)?;
    Ok(out)
}

/// Messages in Anthropic's alternating form: a turn of the same role as the previous one
/// is merged into it.
#[derive(Default)]
struct Turns(Vec<(&'static str, Vec<Value>)>);

impl Turns {
    fn push(&mut self, role: &'static str, blocks: Vec<Value>) {
        if blocks.is_empty() {
            return;
        }
        match self.0.last_mut() {
            Some((last, prev)) if *last == role => prev.extend(blocks),
            _ => self.0.push((role, blocks)),
        }
    }

    fn into_value(self) -> Value {
        Value::Array(
            self.0
                .into_iter()
                .map(|(role, blocks)| json!({"role": role, "content": blocks}))
                .collect(),
        )
    }
}

/// System blocks as one string, or as blocks when a part carries `cache_control`.
fn system_value(blocks: Vec<Value>) -> Option<Value> {
    if blocks.is_empty() {
        return None;
    }
    if blocks.iter().any(|b| b.get("cache_control").is_some()) {
        return Some(Value::Array(blocks));
    }
    let texts: Vec<&str> = blocks
        .iter()
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    Some(texts.join("\n").into())
}

/// Chat message content (a string or parts) as Anthropic blocks. Empty text is left out:
/// Anthropic refuses empty text blocks.
fn content_blocks(
    content: &Value,
    at: &str,
    media_allowed: bool,
) -> Result<Vec<Value>, TranslateError> {
    if let Some(s) = content.as_str() {
        return Ok(if s.is_empty() {
            Vec::new()
        } else {
            vec![json!({"type": "text", "text": s})]
        });
    }
    let parts = as_array(content, at, "a string or an array of content parts")?;
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let p_at = format!("{at}[{j}]");
        let o = as_obj(part, &p_at, "an object")?;
        let mut block = match req_str(o, &p_at, "type")? {
            "text" => {
                let text = req_str(o, &p_at, "text")?;
                if text.is_empty() {
                    continue;
                }
                json!({"type": "text", "text": text})
            }
            "refusal" => json!({"type": "text", "text": req_str(o, &p_at, "refusal")?}),
            "image_url" if media_allowed => image_block(o, &p_at)?,
            "file" if media_allowed => document_block(o, &p_at)?,
            other => {
                return Err(TranslateError::at(
                    format!("{p_at}.type"),
                    format!("`{other}` content cannot be sent to Anthropic here"),
                ));
            }
        };
        if let (Some(cc), Some(b)) = (o.get("cache_control"), block.as_object_mut())
            && cc.is_object()
        {
            b.insert("cache_control".into(), cc.clone());
        }
        blocks.push(block);
    }
    Ok(blocks)
}

fn image_block(part: &Obj, at: &str) -> Result<Value, TranslateError> {
    let u_at = format!("{at}.image_url");
    let url = match present(part, "image_url") {
        Some(Value::String(s)) => s.as_str(),
        Some(v) => req_str(as_obj(v, &u_at, "an object")?, &u_at, "url")?,
        None => return Err(TranslateError::at(&u_at, format!("`{u_at}` is required"))),
    };
    let source = match parse_data_url(url, &format!("{u_at}.url"))? {
        Some((media, data)) => json!({"type": "base64", "media_type": media, "data": data}),
        None => json!({"type": "url", "url": url}),
    };
    Ok(json!({"type": "image", "source": source}))
}

fn document_block(part: &Obj, at: &str) -> Result<Value, TranslateError> {
    let f_at = format!("{at}.file");
    let file = present(part, "file")
        .ok_or_else(|| TranslateError::at(&f_at, format!("`{f_at}` is required")))?;
    let file = as_obj(file, &f_at, "an object")?;
    let Some(data_url) = present(file, "file_data") else {
        return Err(TranslateError::at(
            format!("{f_at}.file_data"),
            "only inline `file_data` can be sent to Anthropic, not uploaded file ids",
        ));
    };
    let d_at = format!("{f_at}.file_data");
    let Some((media, data)) = parse_data_url(as_str(data_url, &d_at)?, &d_at)? else {
        return Err(TranslateError::at(
            &d_at,
            format!("`{d_at}` must be a base64 data URL"),
        ));
    };
    let mut block = json!({
        "type": "document",
        "source": {"type": "base64", "media_type": media, "data": data},
    });
    if let Some(name) = present(file, "filename").and_then(Value::as_str) {
        block["title"] = name.into();
    }
    Ok(block)
}

/// `Some((media_type, data))` for a base64 `data:` URL, `None` for any other URL.
fn parse_data_url<'a>(
    url: &'a str,
    at: &str,
) -> Result<Option<(&'a str, &'a str)>, TranslateError> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Ok(None);
    };
    rest.split_once(',')
        .and_then(|(head, data)| Some((head.strip_suffix(";base64")?, data)))
        .filter(|(media, _)| !media.is_empty())
        .map(Some)
        .ok_or_else(|| {
            TranslateError::at(
                at,
                "data URLs must look like `data:<media type>;base64,<data>`",
            )
        })
}

fn assistant_blocks(msg: &Obj, at: &str) -> Result<Vec<Value>, TranslateError> {
    let mut blocks = match present(msg, "content") {
        Some(c) => content_blocks(c, &format!("{at}.content"), false)?,
        None => Vec::new(),
    };
    if let Some(calls) = present(msg, "tool_calls") {
        let c_at = format!("{at}.tool_calls");
        for (j, call) in as_array(calls, &c_at, "an array of tool calls")?
            .iter()
            .enumerate()
        {
            let call_at = format!("{c_at}[{j}]");
            let o = as_obj(call, &call_at, "an object")?;
            let f_at = format!("{call_at}.function");
            let f = present(o, "function")
                .ok_or_else(|| TranslateError::at(&f_at, format!("`{f_at}` is required")))?;
            let f = as_obj(f, &f_at, "an object")?;
            let args = present(f, "arguments");
            blocks.push(json!({
                "type": "tool_use",
                "id": tool_id(req_str(o, &call_at, "id")?),
                "name": req_str(f, &f_at, "name")?,
                "input": tool_input(args),
            }));
        }
    }
    Ok(blocks)
}

/// Anthropic tool ids match `[A-Za-z0-9_-]+`; other providers' ids may not.
fn tool_id(id: &str) -> String {
    if id.is_empty() {
        return "toolu_".to_owned();
    }
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn tool_result(msg: &Obj, at: &str) -> Result<Value, TranslateError> {
    let mut block = json!({
        "type": "tool_result",
        "tool_use_id": tool_id(req_str(msg, at, "tool_call_id")?),
    });
    if let Some(c) = present(msg, "content") {
        let c_at = format!("{at}.content");
        let content = match c {
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(Value::String(s.clone())),
            _ => Some(Value::Array(content_blocks(c, &c_at, true)?)),
        };
        if let Some(content) = content {
            block["content"] = content;
        }
    }
    Ok(block)
}

fn convert_tools(chat: &Obj, out: &mut Obj) -> Result<(), TranslateError> {
    let mut tools = Vec::new();
    if let Some(v) = present(chat, "tools") {
        for (k, tool) in as_array(v, "tools", "an array of tools")?
            .iter()
            .enumerate()
        {
            tools.push(anthropic_tool(tool, &format!("tools[{k}]"))?);
        }
    }
    if tools.is_empty() {
        return Ok(());
    }
    let mut choice = match present(chat, "tool_choice") {
        None => json!({"type": "auto"}),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => json!({"type": "none"}),
            other => {
                return Err(TranslateError::at(
                    "tool_choice",
                    format!("unknown tool_choice `{other}`: expected auto, required or none"),
                ));
            }
        },
        Some(c) => {
            let name = c
                .pointer("/function/name")
                .and_then(Value::as_str)
                .filter(|_| c.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| {
                    TranslateError::at(
                        "tool_choice",
                        "`tool_choice` must be auto, required, none or {\"type\": \"function\", \"function\": {\"name\": …}}",
                    )
                })?;
            json!({"type": "tool", "name": name})
        }
    };
    let parallel = present(chat, "parallel_tool_calls").and_then(Value::as_bool);
    if parallel == Some(false) && choice["type"] != "none" {
        choice["disable_parallel_tool_use"] = true.into();
    }
    out.insert("tools".into(), Value::Array(tools));
    out.insert("tool_choice".into(), choice);
    Ok(())
}

fn anthropic_tool(tool: &Value, at: &str) -> Result<Value, TranslateError> {
    let o = as_obj(tool, at, "an object")?;
    let kind = req_str(o, at, "type")?;
    if kind != "function" {
        return Err(TranslateError::at(
            format!("{at}.type"),
            format!("`{kind}` tools cannot be sent to Anthropic: use function tools"),
        ));
    }
    let f_at = format!("{at}.function");
    let f = present(o, "function")
        .ok_or_else(|| TranslateError::at(&f_at, format!("`{f_at}` is required")))?;
    let f = as_obj(f, &f_at, "an object")?;
    // Anthropic requires an object schema; a function without parameters takes none.
    let mut schema = match present(f, "parameters") {
        Some(p) => {
            Value::Object(as_obj(p, &format!("{f_at}.parameters"), "a JSON schema object")?.clone())
        }
        None => json!({"type": "object", "properties": {}}),
    };
    if let Some(s) = schema.as_object_mut() {
        s.entry("type").or_insert_with(|| "object".into());
    }
    let mut out = json!({"name": req_str(f, &f_at, "name")?, "input_schema": schema});
    if let Some(d) = present(f, "description") {
        out["description"] = as_str(d, &format!("{f_at}.description"))?.into();
    }
    Ok(out)
}
