//! Hosted (server-side) tools: the tools a provider runs itself, such as OpenAI's
//! Responses `web_search` or Anthropic's `web_search_20250305`. They have no form in the
//! chat pivot, so the client-side translators (`responses::request_to_chat`,
//! `anthropic::request_to_chat`) set them aside under [`KEY`] in the chat request, and
//! [`resolve`] decides per provider API what becomes of each: mapped to the provider's
//! own equivalent, or dropped (the answer says so in `x-plano-dropped-tools`). A provider
//! configured with `hosted_tools: refuse` turns a drop into a 400 instead.
//!
//! | client tool | Anthropic provider | chat / Bedrock provider |
//! |---|---|---|
//! | Responses `web_search`, `web_search_preview`, `web_search_2025_08_26` | `web_search_20250305` (`filters.allowed_domains` → `allowed_domains`, `user_location` kept) | dropped |
//! | Responses `file_search`, `code_interpreter`, `image_generation`, `computer_use_preview`, `mcp`, `local_shell`, … | dropped | dropped |
//! | Anthropic `web_search_*`, `web_fetch_*`, `code_execution_*`, `bash_*`, `text_editor_*`, `memory_*`, `computer_*` | (native: never translated) | dropped |
//!
//! OpenAI's own Responses API is only reached natively by Responses clients, so its hosted
//! tools pass through there untouched.

use serde_json::{Map, Value, json};

use super::TranslateError;
use super::api::Api;

/// Where the client translators leave hosted tools in a chat request. Never sent upstream:
/// [`take`] removes it before the chat request leaves (or is translated further).
pub const KEY: &str = "__plano_hosted_tools";

/// What to do with a hosted tool the provider has no equivalent for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Send the request without the tool; the answer names it in `x-plano-dropped-tools`.
    #[default]
    Drop,
    /// Answer 400 naming the tool.
    Refuse,
}

/// Sets a hosted tool aside in a chat request (called by the client translators).
pub fn set_aside(chat: &mut Map<String, Value>, tool: &Value) {
    if let Value::Array(list) = chat.entry(KEY).or_insert_with(|| Value::Array(Vec::new())) {
        list.push(tool.clone());
    }
}

/// Removes the hosted tools set aside in a chat request.
pub fn take(chat: &mut Map<String, Value>) -> Vec<Value> {
    match chat.remove(KEY) {
        Some(Value::Array(list)) => list,
        _ => Vec::new(),
    }
}

/// The hosted tools of a client's request, as the client translators set them aside:
/// Responses tools other than `function` and `namespace`; Messages tools with a `type`
/// other than `custom`.
pub fn of_client_request(client: Api, body: &Map<String, Value>) -> Vec<Value> {
    let Some(tools) = body.get("tools").and_then(Value::as_array) else {
        return Vec::new();
    };
    tools
        .iter()
        .filter(|t| match (client, t.get("type").and_then(Value::as_str)) {
            (Api::Responses, Some(ty)) => !matches!(ty, "function" | "namespace"),
            (Api::Messages, Some(ty)) => ty != "custom",
            _ => false,
        })
        .cloned()
        .collect()
}

/// What a request's hosted tools become for one provider API.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Resolved {
    /// Tools in the provider's own shape, to add to its request's `tools`.
    pub mapped: Vec<Value>,
    /// The client's type of each tool that was left out (e.g. `web_search`,
    /// `code_interpreter`), in request order, without repeats.
    pub dropped: Vec<String>,
}

/// The client's `type` of a hosted tool (what `x-plano-dropped-tools` names).
pub fn kind(tool: &Value) -> &str {
    tool.get("type")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
}

/// Maps or drops each hosted tool for a provider speaking `upstream`; with
/// [`Policy::Refuse`] a tool that would be dropped is a 400 instead.
pub fn resolve(tools: &[Value], upstream: Api, policy: Policy) -> Result<Resolved, TranslateError> {
    let mut out = Resolved::default();
    for tool in tools {
        let kind = kind(tool);
        match mapped(tool, kind, upstream) {
            Some(m) => out.mapped.push(m),
            None if policy == Policy::Refuse => {
                return Err(TranslateError::at(
                    "tools",
                    format!(
                        "hosted tool `{kind}` has no equivalent on this provider (configured `hosted_tools: refuse`)"
                    ),
                ));
            }
            None => {
                if !out.dropped.iter().any(|d| d == kind) {
                    out.dropped.push(kind.to_owned());
                }
            }
        }
    }
    Ok(out)
}

/// A Responses hosted tool's options that we read when translating, checked so a
/// nonsensical value is a 400 naming the field instead of silently ignored: `web_search`
/// `filters` (an object whose only key is `allowed_domains`, a list of domain strings) and
/// `user_location` (an object).
pub fn check(kind: &str, tool: &Map<String, Value>, path: &str) -> Result<(), TranslateError> {
    if !matches!(
        kind,
        "web_search" | "web_search_preview" | "web_search_2025_08_26"
    ) {
        return Ok(());
    }
    match tool.get("filters") {
        None | Some(Value::Null) => {}
        Some(Value::Object(filters)) => {
            for (key, value) in filters {
                let at = format!("{path}.filters.{key}");
                match (key.as_str(), value) {
                    ("allowed_domains", Value::Null) => {}
                    ("allowed_domains", Value::Array(domains))
                        if domains
                            .iter()
                            .all(|d| d.as_str().is_some_and(|d| !d.trim().is_empty())) => {}
                    ("allowed_domains", _) => {
                        return Err(TranslateError::at(
                            at,
                            "`allowed_domains` must be a list of domain names (strings)",
                        ));
                    }
                    _ => {
                        return Err(TranslateError::at(
                            at,
                            format!("unknown web_search filter `{key}` (known: allowed_domains)"),
                        ));
                    }
                }
            }
        }
        Some(_) => {
            return Err(TranslateError::at(
                format!("{path}.filters"),
                "`filters` must be an object such as {\"allowed_domains\": [\"example.com\"]}",
            ));
        }
    }
    match tool.get("user_location") {
        None | Some(Value::Null | Value::Object(_)) => Ok(()),
        Some(_) => Err(TranslateError::at(
            format!("{path}.user_location"),
            "`user_location` must be an object (type, city, region, country, timezone)",
        )),
    }
}

fn mapped(tool: &Value, kind: &str, upstream: Api) -> Option<Value> {
    match (upstream, kind) {
        (Api::Messages, "web_search" | "web_search_preview" | "web_search_2025_08_26") => {
            let mut m = Map::new();
            m.insert("type".into(), json!("web_search_20250305"));
            m.insert("name".into(), json!("web_search"));
            if let Some(domains) = tool
                .get("filters")
                .and_then(|f| f.get("allowed_domains"))
                .filter(|d| d.is_array())
            {
                m.insert("allowed_domains".into(), domains.clone());
            }
            // Both APIs describe the user's place the same way: type approximate, city,
            // region, country, timezone.
            if let Some(loc) = tool.get("user_location").filter(|l| l.is_object()) {
                let mut loc = loc.clone();
                if let Some(o) = loc.as_object_mut() {
                    o.retain(|k, v| {
                        !v.is_null()
                            && matches!(
                                k.as_str(),
                                "type" | "city" | "region" | "country" | "timezone"
                            )
                    });
                    o.insert("type".into(), json!("approximate"));
                }
                m.insert("user_location".into(), loc);
            }
            Some(Value::Object(m))
        }
        _ => None,
    }
}

/// Says that a provider's request went without some hosted tools: the answer's
/// `x-plano-dropped-tools` header (comma-separated client types), a log line and
/// `plano_llm_dropped_tools_total`. Nothing when none was dropped.
pub fn announce(
    headers: &mut http::HeaderMap,
    dropped: &[String],
    provider: &str,
    request_id: &http::HeaderValue,
) {
    if dropped.is_empty() {
        return;
    }
    let list = dropped.join(", ");
    tracing::info!(request_id = ?request_id, provider = %provider, dropped_tools = %list,
        "hosted tools have no equivalent on this provider: sent without them");
    for kind in dropped {
        metrics::counter!(plano_common::metrics::LLM_DROPPED_TOOLS_TOTAL,
            "provider" => provider.to_owned(), "tool" => label(kind))
        .increment(1);
    }
    if let Ok(v) = http::HeaderValue::from_str(&list) {
        headers.insert("x-plano-dropped-tools", v);
    }
}

/// A bounded word for a hosted tool type, for metric labels: the family without its
/// version date (`web_search_20250305` → `web_search`), `other` for anything unknown.
pub fn label(kind: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "web_search",
        "web_fetch",
        "file_search",
        "code_interpreter",
        "code_execution",
        "image_generation",
        "computer_use",
        "computer",
        "local_shell",
        "mcp",
        "bash",
        "text_editor",
        "memory",
        "tool_search",
    ];
    KNOWN
        .iter()
        .find(|k| {
            kind == **k
                || kind
                    .strip_prefix(**k)
                    .is_some_and(|rest| rest.starts_with('_'))
        })
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonsensical_web_search_filters_are_refused_naming_the_field() {
        let check = |t: Value| {
            let o = t.as_object().unwrap().clone();
            check(o["type"].as_str().unwrap(), &o, "tools[2]")
        };
        assert!(check(json!({"type": "web_search"})).is_ok());
        assert!(check(json!({"type": "web_search", "filters": null})).is_ok());
        assert!(
            check(json!({"type": "web_search", "filters": {"allowed_domains": ["docs.rs"]}}))
                .is_ok()
        );
        let e = check(json!({"type": "web_search", "filters": "docs.rs"})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools[2].filters"));
        let e = check(json!({"type": "web_search", "filters": {"allowed_domains": "docs.rs"}}))
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools[2].filters.allowed_domains"));
        let e = check(json!({"type": "web_search_preview", "filters": {"allowed_domains": [1]}}))
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools[2].filters.allowed_domains"));
        let e = check(json!({"type": "web_search", "filters": {"blocked": ["x"]}})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools[2].filters.blocked"));
        let e = check(json!({"type": "web_search", "user_location": 5})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools[2].user_location"));
        // Other hosted tools are not read, so not checked.
        assert!(check(json!({"type": "code_interpreter", "filters": 5})).is_ok());
    }

    #[test]
    fn web_search_maps_to_anthropic_and_drops_elsewhere() {
        let tools = vec![
            json!({"type": "web_search", "filters": {"allowed_domains": ["docs.rs"]},
                   "user_location": {"type": "approximate", "city": "Paris", "country": "FR", "extra": 1}}),
            json!({"type": "code_interpreter", "container": {"type": "auto"}}),
        ];
        let r = resolve(&tools, Api::Messages, Policy::Drop).unwrap();
        assert_eq!(
            r.mapped,
            vec![json!({"type": "web_search_20250305", "name": "web_search",
                "allowed_domains": ["docs.rs"],
                "user_location": {"type": "approximate", "city": "Paris", "country": "FR"}})]
        );
        assert_eq!(r.dropped, ["code_interpreter"]);

        let r = resolve(&tools, Api::Chat, Policy::Drop).unwrap();
        assert!(r.mapped.is_empty());
        assert_eq!(r.dropped, ["web_search", "code_interpreter"]);
    }

    #[test]
    fn refuse_names_the_first_tool_without_equivalent() {
        let tools = vec![json!({"type": "web_search_20250305", "name": "web_search"})];
        let e = resolve(&tools, Api::Chat, Policy::Refuse).unwrap_err();
        assert!(e.message.contains("web_search_20250305"), "{e}");
        // Mapped tools are never refused.
        let tools = vec![json!({"type": "web_search"})];
        assert!(resolve(&tools, Api::Messages, Policy::Refuse).is_ok());
    }

    #[test]
    fn dropped_kinds_are_listed_once() {
        let tools = vec![json!({"type": "mcp"}), json!({"type": "mcp"})];
        let r = resolve(&tools, Api::Converse, Policy::Drop).unwrap();
        assert_eq!(r.dropped, ["mcp"]);
    }

    #[test]
    fn labels_are_bounded_families() {
        assert_eq!(label("web_search_20250305"), "web_search");
        assert_eq!(label("web_search_preview"), "web_search");
        assert_eq!(label("code_execution_20250825"), "code_execution");
        assert_eq!(label("text_editor_20250728"), "text_editor");
        assert_eq!(label("computer_use_preview"), "computer_use");
        assert_eq!(label("mcp"), "mcp");
        assert_eq!(label("web_searcher"), "other");
        assert_eq!(label("anything at all"), "other");
    }

    #[test]
    fn set_aside_and_take_round_trip() {
        let mut chat = Map::new();
        set_aside(&mut chat, &json!({"type": "web_search"}));
        set_aside(&mut chat, &json!({"type": "mcp"}));
        assert_eq!(take(&mut chat).len(), 2);
        assert!(!chat.contains_key(KEY));
        assert!(take(&mut chat).is_empty());
    }
}
