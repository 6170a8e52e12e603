//! Reading the router's answer, leniently. Plano's router answers
//! `{"route": ["name", …]}` (the older Arch-Router `{"route": "name"}`, with `"other"`
//! for no route); small models also wrap it in code fences or prose, or use single
//! quotes. Anything that still names no known shape is nonsense, and the request falls
//! back to the model it asked for.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Route names, best first (possibly empty: no route fits).
    Routes(Vec<String>),
    /// Not an answer in any shape we know.
    Nonsense,
}

/// Parse the router's text. `known` are the route names offered: a bare answer that is
/// exactly one of them is accepted too.
pub fn parse(content: &str, known: &[&str]) -> Parsed {
    let text = content.trim();
    if text.is_empty() {
        return Parsed::Nonsense;
    }
    if let Some(routes) = json_routes(text) {
        return Parsed::Routes(routes);
    }
    // Single quotes (Python-style dicts) are a common small-model slip.
    if text.contains('\'')
        && let Some(routes) = json_routes(&text.replace('\'', "\""))
    {
        return Parsed::Routes(routes);
    }
    let bare = text.trim_matches(|c: char| c == '"' || c == '\'' || c == '`' || c.is_whitespace());
    if let Some(name) = known.iter().find(|k| **k == bare) {
        return Parsed::Routes(vec![(*name).to_string()]);
    }
    Parsed::Nonsense
}

/// The routes of the first JSON object in `text` that has a `route` key.
fn json_routes(text: &str) -> Option<Vec<String>> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    if end < start {
        return None;
    }
    let candidate = &text[start..=end];
    let value: Value = serde_json::from_str(candidate)
        .or_else(|_| serde_json::from_str(&candidate.replace("\\n", "")))
        .ok()?;
    let route = value.as_object()?.get("route")?;
    let names = match route {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => {
            let mut names = Vec::with_capacity(items.len());
            for item in items {
                names.push(item.as_str()?.to_string());
            }
            names
        }
        _ => return None,
    };
    Some(
        names
            .into_iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty() && n != "other")
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &["code_generation", "chat"];

    fn routes(v: &[&str]) -> Parsed {
        Parsed::Routes(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn plano_answers() {
        assert_eq!(
            parse(r#"{"route": ["code_generation"]}"#, KNOWN),
            routes(&["code_generation"])
        );
        assert_eq!(
            parse(r#"{"route": ["chat", "code_generation"]}"#, KNOWN),
            routes(&["chat", "code_generation"])
        );
        assert_eq!(parse(r#"{"route": []}"#, KNOWN), routes(&[]));
    }

    #[test]
    fn arch_router_answers() {
        assert_eq!(parse(r#"{"route": "chat"}"#, KNOWN), routes(&["chat"]));
        assert_eq!(parse(r#"{"route": "other"}"#, KNOWN), routes(&[]));
    }

    #[test]
    fn wrapped_and_quoted_answers() {
        assert_eq!(
            parse("```json\n{\"route\": [\"chat\"]}\n```", KNOWN),
            routes(&["chat"])
        );
        assert_eq!(
            parse("Sure! {'route': ['code_generation']}", KNOWN),
            routes(&["code_generation"])
        );
        assert_eq!(parse("  \"chat\"\n", KNOWN), routes(&["chat"]));
        assert_eq!(
            parse("{\"route\": [\"chat\"]}\\n", KNOWN),
            routes(&["chat"])
        );
    }

    #[test]
    fn nonsense() {
        for s in [
            "",
            "   ",
            "I think bananas",
            "{\"answer\": 1}",
            "{\"route\": 5}",
            "{\"route\": [1, 2]}",
            "{not json}",
            "} {",
            "chatty",
        ] {
            assert_eq!(parse(s, KNOWN), Parsed::Nonsense, "{s:?}");
        }
    }
}
