//! `prompt_caching.inject_cache_control`: Anthropic caches a prompt prefix only up to an
//! explicit `cache_control` breakpoint. For a request to an Anthropic Messages upstream
//! whose stable prefix (tools, then system prompt) is estimated at `min_prefix_tokens` or
//! more (bytes / 4), an ephemeral breakpoint is put on the last tool and on the last system
//! block, so the next turn of the conversation reads that prefix from the cache. A body
//! that already carries a `cache_control` anywhere is the client's own caching plan and is
//! left alone.

use serde_json::{Map, Value, json};

const BYTES_PER_TOKEN: usize = 4;

/// Add the breakpoints; true when the body changed.
pub fn inject(body: &mut Map<String, Value>, min_prefix_tokens: usize) -> bool {
    if has_cache_control(&Value::Object(body.clone())) {
        return false;
    }
    let prefix_bytes = ["tools", "system"]
        .iter()
        .filter_map(|k| body.get(*k))
        .map(|v| match v {
            Value::String(s) => s.len(),
            other => other.to_string().len(),
        })
        .sum::<usize>();
    if prefix_bytes / BYTES_PER_TOKEN < min_prefix_tokens.max(1) {
        return false;
    }
    let mut changed = false;
    if let Some(Value::Array(tools)) = body.get_mut("tools")
        && let Some(Value::Object(last)) = tools.last_mut()
    {
        last.insert("cache_control".into(), json!({"type": "ephemeral"}));
        changed = true;
    }
    match body.get_mut("system") {
        Some(Value::String(text)) if !text.is_empty() => {
            let text = std::mem::take(text);
            body.insert(
                "system".into(),
                json!([{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]),
            );
            changed = true;
        }
        Some(Value::Array(blocks)) => {
            if let Some(Value::Object(last)) = blocks.last_mut() {
                last.insert("cache_control".into(), json!({"type": "ephemeral"}));
                changed = true;
            }
        }
        _ => {}
    }
    changed
}

fn has_cache_control(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.contains_key("cache_control") || o.values().any(has_cache_control),
        Value::Array(a) => a.iter().any(has_cache_control),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn a_long_stable_prefix_gets_breakpoints() {
        let system = "x".repeat(5000);
        let mut body = obj(json!({
            "model": "claude", "max_tokens": 10, "system": system,
            "tools": [{"name": "a", "input_schema": {}}, {"name": "b", "input_schema": {}}],
            "messages": [{"role": "user", "content": "hi"}]
        }));
        assert!(inject(&mut body, 1024));
        assert_eq!(
            body["system"][0]["cache_control"],
            json!({"type": "ephemeral"})
        );
        assert_eq!(body["system"][0]["text"].as_str().unwrap().len(), 5000);
        assert_eq!(
            body["tools"][1]["cache_control"],
            json!({"type": "ephemeral"})
        );
        assert!(body["tools"][0].get("cache_control").is_none());
        // Idempotent: a body with breakpoints is left alone.
        let before = body.clone();
        assert!(!inject(&mut body, 1024));
        assert_eq!(body, before);
    }

    #[test]
    fn short_prefixes_and_client_breakpoints_are_left_alone() {
        let mut short = obj(json!({"system": "be terse", "messages": []}));
        assert!(!inject(&mut short, 1024));
        assert_eq!(short["system"], "be terse");
        let mut own = obj(json!({
            "system": [{"type": "text", "text": "x".repeat(8000)}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]
        }));
        assert!(!inject(&mut own, 10));
        assert!(own["system"][0].get("cache_control").is_none());
        let mut blocks = obj(
            json!({"system": [{"type": "text", "text": "a"}, {"type": "text", "text": "x".repeat(8000)}]}),
        );
        assert!(inject(&mut blocks, 1024));
        assert!(blocks["system"][1].get("cache_control").is_some());
        assert!(blocks["system"][0].get("cache_control").is_none());
    }
}
