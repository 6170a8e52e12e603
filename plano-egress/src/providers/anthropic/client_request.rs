//! A client's Messages request → a chat completions request (client side).

use serde_json::{Value, json};

use super::{Obj, as_array, as_obj, as_str, block_type, present, req_str};
use crate::providers::{TranslateError, hosted};

/// Messages request → chat request. The client's `model` is kept as is (the dispatcher
/// resolves it); `stream` survives.
pub fn request_to_chat(req: &Obj) -> Result<Obj, TranslateError> {
    let mut out = Obj::new();
    if let Some(model) = req.get("model") {
        out.insert("model".into(), model.clone());
    }

    let mut messages = Vec::new();
    if let Some(system) = present(req, "system") {
        let text = text_of_blocks(system, "system")?;
        messages.push(json!({"role": "system", "content": text}));
    }
    let Some(input) = present(req, "messages") else {
        return Err(TranslateError::at("messages", "`messages` is required"));
    };
    for (i, m) in as_array(input, "messages", "an array of messages")?
        .iter()
        .enumerate()
    {
        convert_message(m, &format!("messages[{i}]"), &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));

    if let Some(v) = present(req, "max_tokens") {
        let n = v.as_u64().ok_or_else(|| {
            TranslateError::at("max_tokens", "`max_tokens` must be a non-negative integer")
        })?;
        out.insert("max_tokens".into(), n.into());
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = present(req, key) {
            if !v.is_number() {
                return Err(TranslateError::at(key, format!("`{key}` must be a number")));
            }
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(v) = present(req, "stop_sequences") {
        let stops = strings(v, "stop_sequences")?;
        if !stops.is_empty() {
            out.insert("stop".into(), json!(stops));
        }
    }
    if let Some(v) = present(req, "stream") {
        let b = v
            .as_bool()
            .ok_or_else(|| TranslateError::at("stream", "`stream` must be a boolean"))?;
        out.insert("stream".into(), b.into());
    }
    if let Some(meta) = present(req, "metadata") {
        let meta = as_obj(meta, "metadata", "an object")?;
        if let Some(user) = present(meta, "user_id") {
            out.insert(
                "user".into(),
                chat_user(as_str(user, "metadata.user_id")?).into(),
            );
        }
    }
    convert_tools(req, &mut out)?;
    if let Some(format) = req
        .get("output_config")
        .and_then(|c| c.get("format"))
        .filter(|f| !f.is_null())
    {
        out.insert(
            "response_format".into(),
            response_format(format, "output_config.format")?,
        );
    }
    Ok(out)
}

/// OpenAI refuses a `user` longer than 64 characters, and Claude Code sends about 150:
/// a longer id is replaced by a stable digest of it, so it still identifies the user.
pub(super) fn chat_user(id: &str) -> String {
    const MAX: usize = 64;
    if id.len() <= MAX {
        return id.to_owned();
    }
    // FNV-1a, forwards and backwards: stable across builds and Rust versions, which a
    // `std` hasher is not promised to be.
    let fnv = |bytes: &mut dyn Iterator<Item = &u8>| {
        bytes.fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let a = fnv(&mut id.as_bytes().iter());
    let b = fnv(&mut id.as_bytes().iter().rev());
    format!("user_{a:016x}{b:016x}")
}

fn convert_message(m: &Value, at: &str, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    let o = as_obj(m, at, "an object with `role` and `content`")?;
    let role = req_str(o, at, "role")?;
    let content_at = format!("{at}.content");
    let Some(content) = present(o, "content") else {
        return Err(TranslateError::at(
            &content_at,
            format!("`{content_at}` is required"),
        ));
    };
    match role {
        "user" => user_message(content, &content_at, out),
        "assistant" => {
            out.push(assistant_message(content, &content_at)?);
            Ok(())
        }
        // Claude Code sends a `system` turn inside `messages`; many chat providers reject a
        // system message after a user turn, so its text joins the leading system message.
        "system" => {
            let text = text_of_blocks(content, &content_at)?;
            match out
                .first_mut()
                .filter(|m| m["role"] == "system")
                .and_then(|m| m.get_mut("content"))
            {
                Some(Value::String(s)) => {
                    s.push_str("\n\n");
                    s.push_str(&text);
                }
                _ => out.insert(0, json!({"role": "system", "content": text})),
            }
            Ok(())
        }
        other => Err(TranslateError::at(
            format!("{at}.role"),
            format!("unknown role `{other}`: expected `user`, `assistant` or `system`"),
        )),
    }
}

/// A user turn: its `tool_result` blocks become `tool` messages, in order, then the rest of
/// the turn (text, images, documents, and images the tool results carried) one user message.
fn user_message(content: &Value, at: &str, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    if let Some(text) = content.as_str() {
        out.push(json!({"role": "user", "content": text}));
        return Ok(());
    }
    let blocks = as_array(content, at, "a string or an array of content blocks")?;
    let mut parts = Vec::new();
    let mut moved_images = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let b_at = format!("{at}[{j}]");
        match block_type(block, &b_at)? {
            "tool_result" => out.push(tool_message(block, &b_at, &mut moved_images)?),
            _ => parts.push(user_part(block, &b_at)?),
        }
    }
    parts.extend(moved_images);
    if let Some(content) = chat_content(parts) {
        out.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

/// A text, image or document block of a user turn as a chat content part.
fn user_part(block: &Value, at: &str) -> Result<Value, TranslateError> {
    match block_type(block, at)? {
        "text" => Ok(text_part(block_text(block, at)?)),
        "image" => image_part(block, at),
        "document" => document_part(block, at),
        "search_result" => search_result_part(block, at),
        "tool_use" => Err(TranslateError::at(
            format!("{at}.type"),
            "`tool_use` blocks belong in assistant turns",
        )),
        other => Err(unsupported(at, other)),
    }
}

/// Chat content from parts: one text part reads as a plain string, which every provider
/// accepts; none means no message.
fn chat_content(parts: Vec<Value>) -> Option<Value> {
    match parts.as_slice() {
        [] => None,
        [only] if only.get("type").and_then(Value::as_str) == Some("text") => {
            only.get("text").cloned()
        }
        _ => Some(Value::Array(parts)),
    }
}

fn tool_message(
    block: &Value,
    at: &str,
    moved_images: &mut Vec<Value>,
) -> Result<Value, TranslateError> {
    let o = as_obj(block, at, "an object")?;
    let id = req_str(o, at, "tool_use_id")?;
    let mut texts = Vec::new();
    match present(o, "content") {
        None => {}
        Some(Value::String(s)) => texts.push(s.clone()),
        Some(content) => {
            let c_at = format!("{at}.content");
            for (k, inner) in as_array(content, &c_at, "a string or an array of content blocks")?
                .iter()
                .enumerate()
            {
                let i_at = format!("{c_at}[{k}]");
                let part = match block_type(inner, &i_at)? {
                    "text" | "image" | "document" | "search_result" => user_part(inner, &i_at)?,
                    other => return Err(unsupported(&i_at, other)),
                };
                match part.get("text").and_then(Value::as_str) {
                    Some(t) => texts.push(t.to_owned()),
                    None => {
                        texts.push("(attachment in the next user message)".to_owned());
                        moved_images.push(part);
                    }
                }
            }
        }
    }
    let mut text = texts.join("\n");
    if o.get("is_error").and_then(Value::as_bool) == Some(true) {
        text = format!("Error: {text}");
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": text}))
}

fn assistant_message(content: &Value, at: &str) -> Result<Value, TranslateError> {
    if let Some(text) = content.as_str() {
        return Ok(json!({"role": "assistant", "content": text}));
    }
    let blocks = as_array(content, at, "a string or an array of content blocks")?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let b_at = format!("{at}[{j}]");
        match block_type(block, &b_at)? {
            "text" => text.push_str(block_text(block, &b_at)?),
            "tool_use" => calls.push(tool_call(block, &b_at)?),
            "thinking" | "redacted_thinking" => {}
            "tool_result" => {
                return Err(TranslateError::at(
                    format!("{b_at}.type"),
                    "`tool_result` blocks belong in user turns",
                ));
            }
            other => return Err(unsupported(&b_at, other)),
        }
    }
    let mut msg = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        if text.is_empty() {
            msg["content"] = Value::Null;
        }
        msg["tool_calls"] = Value::Array(calls);
    }
    Ok(msg)
}

fn tool_call(block: &Value, at: &str) -> Result<Value, TranslateError> {
    let o = as_obj(block, at, "an object")?;
    let id = req_str(o, at, "id")?;
    let name = req_str(o, at, "name")?;
    let input = present(o, "input").cloned().unwrap_or_else(|| json!({}));
    Ok(json!({
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": input.to_string()},
    }))
}

fn block_text<'a>(block: &'a Value, at: &str) -> Result<&'a str, TranslateError> {
    let o = as_obj(block, at, "an object")?;
    req_str(o, at, "text")
}

fn text_part(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

fn image_part(block: &Value, at: &str) -> Result<Value, TranslateError> {
    let s_at = format!("{at}.source");
    let source = block
        .get("source")
        .ok_or_else(|| TranslateError::at(&s_at, format!("`{s_at}` is required")))?;
    let source = as_obj(source, &s_at, "an object")?;
    let url = match req_str(source, &s_at, "type")? {
        "base64" => format!(
            "data:{};base64,{}",
            req_str(source, &s_at, "media_type")?,
            req_str(source, &s_at, "data")?
        ),
        "url" => req_str(source, &s_at, "url")?.to_owned(),
        other => {
            return Err(TranslateError::at(
                format!("{s_at}.type"),
                format!(
                    "image source `{other}` cannot be sent to this provider: use `base64` or `url`"
                ),
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// Plain-text and content documents become text (titled when they have a title); base64
/// PDFs a chat `file` part.
fn document_part(block: &Value, at: &str) -> Result<Value, TranslateError> {
    let o = as_obj(block, at, "an object")?;
    let title = present(o, "title").and_then(Value::as_str);
    let s_at = format!("{at}.source");
    let source = present(o, "source")
        .ok_or_else(|| TranslateError::at(&s_at, format!("`{s_at}` is required")))?;
    let source = as_obj(source, &s_at, "an object")?;
    let text = match req_str(source, &s_at, "type")? {
        "text" => req_str(source, &s_at, "data")?.to_owned(),
        "content" => {
            let c_at = format!("{s_at}.content");
            let content = present(source, "content")
                .ok_or_else(|| TranslateError::at(&c_at, format!("`{c_at}` is required")))?;
            text_of_blocks(content, &c_at)?
        }
        "base64" => {
            let media = req_str(source, &s_at, "media_type")?;
            let data = req_str(source, &s_at, "data")?;
            return Ok(json!({"type": "file", "file": {
                "filename": title.unwrap_or("document.pdf"),
                "file_data": format!("data:{media};base64,{data}"),
            }}));
        }
        other => {
            return Err(TranslateError::at(
                format!("{s_at}.type"),
                format!(
                    "document source `{other}` cannot be sent to this provider: use `text`, `content` or `base64`"
                ),
            ));
        }
    };
    Ok(match title {
        Some(t) => text_part(&format!("{t}\n\n{text}")),
        None => text_part(&text),
    })
}

/// A search result as text: its title and source, then its text blocks.
fn search_result_part(block: &Value, at: &str) -> Result<Value, TranslateError> {
    let o = as_obj(block, at, "an object")?;
    let title = req_str(o, at, "title")?;
    let source = req_str(o, at, "source")?;
    let c_at = format!("{at}.content");
    let content = present(o, "content")
        .ok_or_else(|| TranslateError::at(&c_at, format!("`{c_at}` is required")))?;
    let text = text_of_blocks(content, &c_at)?;
    Ok(text_part(&format!("{title} ({source})\n{text}")))
}

/// A string, or text blocks joined with newlines (system prompts, text documents).
fn text_of_blocks(v: &Value, at: &str) -> Result<String, TranslateError> {
    if let Some(s) = v.as_str() {
        return Ok(s.to_owned());
    }
    let blocks = as_array(v, at, "a string or an array of text blocks")?;
    let mut texts = Vec::with_capacity(blocks.len());
    for (j, block) in blocks.iter().enumerate() {
        let b_at = format!("{at}[{j}]");
        match block_type(block, &b_at)? {
            "text" => texts.push(block_text(block, &b_at)?),
            other => return Err(unsupported(&b_at, other)),
        }
    }
    Ok(texts.join("\n"))
}

fn convert_tools(req: &Obj, out: &mut Obj) -> Result<(), TranslateError> {
    let mut tools = Vec::new();
    if let Some(v) = present(req, "tools") {
        for (k, tool) in as_array(v, "tools", "an array of tools")?
            .iter()
            .enumerate()
        {
            // Server tools (web search, bash, …) have no chat form: set aside for
            // `hosted::resolve`, which maps or drops them per provider.
            match function_tool(tool, &format!("tools[{k}]"))? {
                Some(t) => tools.push(t),
                None => hosted::set_aside(out, tool),
            }
        }
    }
    let Some(choice) = present(req, "tool_choice") else {
        if !tools.is_empty() {
            out.insert("tools".into(), Value::Array(tools));
        }
        return Ok(());
    };
    let c = as_obj(choice, "tool_choice", "an object")?;
    let mapped = match req_str(c, "tool_choice", "type")? {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => json!({"type": "function", "function": {
            "name": req_str(c, "tool_choice", "name")?,
        }}),
        other => {
            return Err(TranslateError::at(
                "tool_choice.type",
                format!("unknown tool_choice `{other}`: expected auto, any, tool or none"),
            ));
        }
    };
    // Chat providers reject `tool_choice` and `parallel_tool_calls` without tools.
    if tools.is_empty() {
        return Ok(());
    }
    out.insert("tools".into(), Value::Array(tools));
    out.insert("tool_choice".into(), mapped);
    if c.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
        out.insert("parallel_tool_calls".into(), false.into());
    }
    Ok(())
}

/// A client tool as a chat function; `None` for a server tool (one with a `type` other
/// than `custom`). Claude Code's own tools (Read, Bash, …) are client tools.
fn function_tool(tool: &Value, at: &str) -> Result<Option<Value>, TranslateError> {
    let o = as_obj(tool, at, "an object")?;
    if let Some(t) = present(o, "type") {
        match t.as_str() {
            Some("custom") => {}
            Some(_) => return Ok(None),
            None => {
                return Err(TranslateError::at(
                    format!("{at}.type"),
                    "`type` must be a string",
                ));
            }
        }
    }
    let name = req_str(o, at, "name")?;
    let schema = match present(o, "input_schema") {
        Some(s) => {
            as_obj(s, &format!("{at}.input_schema"), "a JSON schema object")?;
            s.clone()
        }
        None => json!({"type": "object", "properties": {}}),
    };
    let mut function = json!({"name": name, "parameters": schema});
    if let Some(d) = present(o, "description") {
        function["description"] = as_str(d, &format!("{at}.description"))?.into();
    }
    if let Some(true) = o.get("strict").and_then(Value::as_bool) {
        function["strict"] = true.into();
    }
    Ok(Some(json!({"type": "function", "function": function})))
}

fn response_format(format: &Value, at: &str) -> Result<Value, TranslateError> {
    let o = as_obj(format, at, "an object")?;
    match req_str(o, at, "type")? {
        "json_schema" => {
            let s_at = format!("{at}.schema");
            let schema = present(o, "schema")
                .ok_or_else(|| TranslateError::at(&s_at, format!("`{s_at}` is required")))?;
            as_obj(schema, &s_at, "a JSON schema object")?;
            Ok(json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}))
        }
        other => Err(TranslateError::at(
            format!("{at}.type"),
            format!("unknown output format `{other}`: expected json_schema"),
        )),
    }
}

fn strings(v: &Value, at: &str) -> Result<Vec<String>, TranslateError> {
    as_array(v, at, "an array of strings")?
        .iter()
        .enumerate()
        .map(|(i, s)| as_str(s, &format!("{at}[{i}]")).map(str::to_owned))
        .collect()
}

fn unsupported(at: &str, kind: &str) -> TranslateError {
    TranslateError::at(
        format!("{at}.type"),
        format!("`{kind}` blocks cannot be sent to this provider"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_turns_inside_messages_join_the_leading_system_message() {
        let req = json!({"model": "m", "max_tokens": 10, "system": "top",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "text", "text": "reminder"}]},
            {"role": "assistant", "content": "ok"}
        ]});
        let chat = request_to_chat(req.as_object().unwrap()).unwrap();
        let roles: Vec<&str> = chat["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant"]);
        assert_eq!(chat["messages"][0]["content"], "top\n\nreminder");

        // Without a top-level system, the turn becomes the first message.
        let req = json!({"model": "m", "max_tokens": 10, "messages": [
            {"role": "user", "content": "hi"}, {"role": "system", "content": "s"}]});
        let chat = request_to_chat(req.as_object().unwrap()).unwrap();
        assert_eq!(
            chat["messages"][0],
            json!({"role": "system", "content": "s"})
        );
        assert_eq!(chat["messages"][1]["role"], "user");
    }

    #[test]
    fn server_tools_are_set_aside_and_client_tools_kept() {
        let req = json!({"model": "m", "max_tokens": 10,
        "messages": [{"role": "user", "content": "search"}],
        "tools": [
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 8},
            {"name": "Read", "description": "read a file",
             "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}}}
        ]});
        let mut chat = request_to_chat(req.as_object().unwrap()).unwrap();
        assert_eq!(chat["tools"].as_array().unwrap().len(), 1);
        assert_eq!(chat["tools"][0]["function"]["name"], "Read");
        let aside = hosted::take(&mut chat);
        assert_eq!(aside.len(), 1);
        assert_eq!(hosted::kind(&aside[0]), "web_search_20250305");
    }

    #[test]
    fn long_user_ids_become_a_stable_digest_openai_accepts() {
        assert_eq!(chat_user("user-1234"), "user-1234");
        let long = format!("user_{}_account_a_session_b", "f".repeat(64));
        let other = format!("user_{}_account_a_session_c", "f".repeat(64));
        // Pinned: the digest must not change between builds or Rust versions (a client's
        // `user` groups its requests at the provider).
        assert_eq!(chat_user(&long), "user_dc57a3cc9a7a2fc5d0521ec72554c30d");
        assert_ne!(chat_user(&long), chat_user(&other));
        assert!(chat_user(&long).len() <= 64);
        assert_eq!(chat_user(&"x".repeat(64)), "x".repeat(64));
    }
}
