//! The client's request body as the request path needs it. It is split at its top level
//! when it is read (every value checked to be JSON, none built into a tree), and parsed
//! into a `serde_json` tree only when something needs more than the top level: a
//! translation, routing by preference, Responses history, prefix affinity, the filters of
//! a count. A pass-through, whose only changes are `model` (and for a chat stream
//! `stream_options.include_usage`), is written from the client's own bytes instead: the
//! other fields go upstream byte for byte, in the client's order.
//!
//! Once the tree is built it is the body: edits are made to it, and a pass-through is then
//! serialised from it as before.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{LazyLock, OnceLock};

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::TranslateError;

/// One top-level field: its name (unescaped) and its value as the client wrote it.
type Field<'r> = (Cow<'r, str>, &'r RawValue);

#[derive(Clone, Debug)]
pub struct ClientBody<'r> {
    /// The top-level fields in the client's order; empty when the body was made from a tree.
    fields: Vec<Field<'r>>,
    /// The body as a tree, built on first need (`Err`: a value `serde_json` would not build,
    /// such as a number out of `f64` range).
    tree: OnceLock<Result<Map<String, Value>, String>>,
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Not JSON (serde_json's message, with its line and column).
    Json(serde_json::Error),
    /// JSON, but not an object.
    NotAnObject,
    /// Nested deeper than a full parse allows ([`MAX_DEPTH`]).
    TooDeep,
}

/// The deepest nesting of arrays and objects a full `serde_json` parse accepts (its
/// recursion limit of 128 allows 127 levels; the test pins it). A split body is not
/// built into a tree, so the limit is checked by [`too_deep`] instead: a body nested past
/// it is refused here as it was before the split, and never reaches a provider's parser.
pub const MAX_DEPTH: usize = 127;

impl<'r> ClientBody<'r> {
    /// Split `raw` at its top level.
    pub fn split(raw: &'r [u8]) -> Result<Self, BodyError> {
        if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            // Tell "not JSON" from "JSON but not an object", as a full parse would.
            return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(raw) {
                Ok(_) => BodyError::NotAnObject,
                Err(e) => BodyError::Json(e),
            });
        }
        let Fields(fields) = serde_json::from_slice(raw).map_err(BodyError::Json)?;
        if too_deep(raw, MAX_DEPTH) {
            return Err(BodyError::TooDeep);
        }
        Ok(ClientBody {
            fields: keep_last(fields),
            tree: OnceLock::new(),
        })
    }

    /// A body that is a tree from the start (a request we build ourselves, a Responses
    /// body with its history prepended).
    pub fn from_tree(tree: Map<String, Value>) -> Self {
        ClientBody {
            fields: Vec::new(),
            tree: OnceLock::from(Ok(tree)),
        }
    }

    /// A top-level field as the client sent it (unaffected by later edits of the tree;
    /// `None` for a body made from a tree).
    pub fn sent(&self, name: &str) -> Option<&'r RawValue> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    /// Whether the body has a top-level field `name` (in its tree once that is built).
    pub fn has(&self, name: &str) -> bool {
        match self.tree.get() {
            Some(Ok(tree)) => tree.contains_key(name),
            Some(Err(_)) => false,
            None => self.sent(name).is_some(),
        }
    }

    /// The body as a tree (built the first time).
    pub fn tree(&self) -> Result<&Map<String, Value>, TranslateError> {
        self.tree
            .get_or_init(|| build(&self.fields))
            .as_ref()
            .map_err(|e| TranslateError::new(e.clone()))
    }

    /// The body as a tree to edit; from now on the body is the tree.
    pub fn tree_mut(&mut self) -> Result<&mut Map<String, Value>, TranslateError> {
        self.tree()?;
        match self.tree.get_mut() {
            Some(Ok(tree)) => Ok(tree),
            _ => Err(TranslateError::new("the request body has no tree")),
        }
    }

    /// The body with `model` set to `model` (added last when absent) and, with
    /// `include_usage`, `stream_options.include_usage: true`, written from the client's
    /// bytes; `None` once the body is a tree (serialise the tree then).
    pub fn pass_through(&self, model: &str, include_usage: bool) -> Option<Vec<u8>> {
        if self.tree.get().is_some() {
            return None;
        }
        let extra = model.len() + if include_usage { 40 } else { 0 } + 16;
        let mut out = Vec::with_capacity(
            self.fields
                .iter()
                .map(|(k, v)| k.len() + v.get().len() + 4)
                .sum::<usize>()
                + extra,
        );
        out.push(b'{');
        let (mut model_done, mut usage_done) = (false, !include_usage);
        for (name, value) in &self.fields {
            if out.len() > 1 {
                out.push(b',');
            }
            write_str(&mut out, name)?;
            out.push(b':');
            if name == "model" {
                write_str(&mut out, model)?;
                model_done = true;
            } else if include_usage && name == "stream_options" {
                usage_done = true;
                match serde_json::from_str::<Value>(value.get()) {
                    Ok(Value::Object(mut options)) => {
                        options.insert("include_usage".into(), Value::Bool(true));
                        serde_json::to_writer(&mut out, &options).ok()?;
                    }
                    // Not an object: left as the client sent it (the provider judges it).
                    _ => out.extend_from_slice(value.get().as_bytes()),
                }
            } else {
                out.extend_from_slice(value.get().as_bytes());
            }
        }
        if !model_done {
            if out.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(b"\"model\":");
            write_str(&mut out, model)?;
        }
        if !usage_done {
            if out.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
        }
        out.push(b'}');
        Some(out)
    }
}

/// An empty tree, for readers that only ever see a body whose tree was already built.
pub fn empty_tree() -> &'static Map<String, Value> {
    static EMPTY: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);
    &EMPTY
}

/// Whether arrays and objects in `raw` (valid JSON) nest deeper than `limit` levels: brackets
/// are counted outside strings, so one pass over the bytes, no allocation. Most bodies
/// have fewer opening brackets in all than `limit`, which a plain count (vectorised by the
/// compiler, far cheaper per byte than the pass) shows first.
fn too_deep(raw: &[u8], limit: usize) -> bool {
    if raw.iter().filter(|&&b| b == b'[' || b == b'{').count() <= limit {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in raw {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// A name given twice keeps its last value, as serde_json's tree does (at the place of its
/// first).
fn keep_last(fields: Vec<Field<'_>>) -> Vec<Field<'_>> {
    let duplicated = if fields.len() <= 16 {
        (1..fields.len()).any(|i| fields[..i].iter().any(|(k, _)| *k == fields[i].0))
    } else {
        let mut seen = HashSet::with_capacity(fields.len());
        !fields.iter().all(|(k, _)| seen.insert(k.as_ref()))
    };
    if !duplicated {
        return fields;
    }
    let mut at: HashMap<String, usize> = HashMap::with_capacity(fields.len());
    let mut kept: Vec<Field<'_>> = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        match at.get(name.as_ref()) {
            Some(&i) => kept[i].1 = value,
            None => {
                at.insert(name.to_string(), kept.len());
                kept.push((name, value));
            }
        }
    }
    kept
}

fn write_str(out: &mut Vec<u8>, s: &str) -> Option<()> {
    serde_json::to_writer(out, s).ok()
}

fn build(fields: &[Field<'_>]) -> Result<Map<String, Value>, String> {
    let mut tree = Map::new();
    for (name, value) in fields {
        let value = serde_json::from_str(value.get())
            .map_err(|e| format!("request body is not valid JSON: {e}"))?;
        tree.insert(name.to_string(), value);
    }
    Ok(tree)
}

/// The top level of a JSON object, values borrowed as written.
struct Fields<'r>(Vec<Field<'r>>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Top;
        impl<'de> Visitor<'de> for Top {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(8);
                while let Some(Name(name)) = map.next_key()? {
                    fields.push((name, map.next_value()?));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(Top)
    }
}

/// A field name, borrowed unless it had escapes.
struct Name<'r>(Cow<'r, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(raw: &str, model: &str, usage: bool) -> String {
        let body = ClientBody::split(raw.as_bytes()).unwrap();
        String::from_utf8(body.pass_through(model, usage).unwrap()).unwrap()
    }

    #[test]
    fn a_pass_through_changes_only_the_model_and_keeps_the_rest_as_sent() {
        let raw = r#"{ "zeta": 1.50, "model" : "alias", "messages":[{"role":"user","content":"h\u00e9"}], "x-unknown": {"a": [1, 2]} }"#;
        assert_eq!(
            pass(raw, "gpt-5", false),
            r#"{"zeta":1.50,"model":"gpt-5","messages":[{"role":"user","content":"h\u00e9"}],"x-unknown":{"a": [1, 2]}}"#
        );
        // No model: added last. A model id with a quote is escaped.
        assert_eq!(
            pass(r#"{"messages":[]}"#, "a\"b", false),
            r#"{"messages":[],"model":"a\"b"}"#
        );
        assert_eq!(pass("{}", "m", false), r#"{"model":"m"}"#);
    }

    #[test]
    fn a_stream_asks_for_usage() {
        assert_eq!(
            pass(r#"{"model":"x","stream":true}"#, "m", true),
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#
        );
        assert_eq!(
            pass(
                r#"{"stream_options":{"include_usage":false,"other":1},"model":"x"}"#,
                "m",
                true
            ),
            r#"{"stream_options":{"include_usage":true,"other":1},"model":"m"}"#
        );
        assert_eq!(
            pass(r#"{"stream_options":null}"#, "m", true),
            r#"{"stream_options":null,"model":"m"}"#
        );
    }

    #[test]
    fn the_tree_is_built_on_demand_and_then_is_the_body() {
        let mut body = ClientBody::split(br#"{"model":"x","n":2}"#).unwrap();
        assert_eq!(body.sent("n").map(RawValue::get), Some("2"));
        assert_eq!(body.tree().unwrap()["n"], 2);
        assert!(body.pass_through("m", false).is_none());
        body.tree_mut().unwrap().remove("n");
        assert!(!body.tree().unwrap().contains_key("n"));
    }

    #[test]
    fn bodies_that_are_not_objects_or_not_json_are_told_apart() {
        assert!(matches!(
            ClientBody::split(b"[1, 2]"),
            Err(BodyError::NotAnObject)
        ));
        assert!(matches!(
            ClientBody::split(b" \"text\" "),
            Err(BodyError::NotAnObject)
        ));
        assert!(matches!(
            ClientBody::split(b"{\"a\": }"),
            Err(BodyError::Json(_))
        ));
        assert!(matches!(
            ClientBody::split(b"{} x"),
            Err(BodyError::Json(_))
        ));
        assert!(matches!(
            ClientBody::split(b"nope"),
            Err(BodyError::Json(_))
        ));
        assert!(matches!(ClientBody::split(b""), Err(BodyError::Json(_))));
    }

    #[test]
    fn a_duplicated_field_keeps_its_last_value_as_a_full_parse_does() {
        let raw = br#"{"model":"a","n":1,"model":"b","n":2}"#;
        let body = ClientBody::split(raw).unwrap();
        assert_eq!(body.sent("model").map(RawValue::get), Some("\"b\""));
        assert_eq!(
            String::from_utf8(body.pass_through("m", false).unwrap()).unwrap(),
            r#"{"model":"m","n":2}"#
        );
        assert_eq!(body.tree().unwrap()["n"], 2);
        // Past 16 fields the check is hashed; same answer.
        let many: Vec<String> = (0..20).map(|i| format!("\"k{i}\":{i}")).collect();
        let raw = format!("{{{},\"k3\":\"last\"}}", many.join(","));
        let body = ClientBody::split(raw.as_bytes()).unwrap();
        assert_eq!(body.sent("k3").map(RawValue::get), Some("\"last\""));
        assert_eq!(body.tree().unwrap().len(), 20);
    }

    #[test]
    fn bodies_nested_past_a_full_parses_limit_are_refused() {
        let nested = |n: usize| {
            format!(
                r#"{{"model":"m","messages":{}{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        // The body object itself is one level.
        assert!(ClientBody::split(nested(MAX_DEPTH - 1).as_bytes()).is_ok());
        assert!(matches!(
            ClientBody::split(nested(MAX_DEPTH).as_bytes()),
            Err(BodyError::TooDeep)
        ));
        // A full parse draws the line at the same depth.
        assert!(serde_json::from_str::<Value>(&nested(MAX_DEPTH - 1)).is_ok());
        assert!(serde_json::from_str::<Value>(&nested(MAX_DEPTH)).is_err());
        // Brackets inside strings (escaped quotes too) are not nesting.
        let in_strings = format!(
            r#"{{"model":"m","x":"{}\"{}","y":"\\"}}"#,
            "[".repeat(500),
            "{".repeat(500)
        );
        assert!(ClientBody::split(in_strings.as_bytes()).is_ok());
    }

    #[test]
    fn escaped_field_names_are_unescaped() {
        let body = ClientBody::split(br#"{"mo\u0064el":"a"}"#).unwrap();
        assert_eq!(body.sent("model").map(RawValue::get), Some("\"a\""));
        assert_eq!(
            pass(r#"{"mo\u0064el":"a"}"#, "m", false),
            r#"{"model":"m"}"#
        );
    }
}
