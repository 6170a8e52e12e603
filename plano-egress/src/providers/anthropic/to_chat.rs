//! A plain Messages request → a chat request, read and written without JSON trees (the
//! client body's tree, the chat request's tree and its serialisation were ~12k
//! instructions of a 150-byte request; callgrind, `bench/instructions.sh messages`).
//!
//! Only for requests whose every field this module knows: a system prompt, turns of text
//! (strings or text blocks; thinking blocks in assistant turns), `max_tokens`,
//! `temperature`, `top_p`, `stop_sequences`, `stream`, `metadata.user_id`. Anything else
//! read by [`super::request_to_chat`] (tools, `tool_choice`, `output_config`, images,
//! documents, tool results, …), any value of an unexpected type, and any repeated field
//! make it answer `None`, and the request takes the tree translation, which gives the same
//! chat request or the error for the client. The tests compare both on varied requests.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

use super::client_request::chat_user;
use super::lenient::{Skip, members, strings_are, write_read_str, write_str as string};

/// What the chat request is sent with, besides the client's fields.
pub struct ChatTarget<'a> {
    /// The provider's model id.
    pub model: &'a str,
    /// `max_tokens` is sent as `max_completion_tokens` (OpenAI's own API).
    pub max_completion_tokens: bool,
    /// `stream_options.include_usage: true` is added (a stream's usage is always asked for).
    pub include_usage: bool,
}

/// The chat request (its JSON text) for the client's Messages request `raw`; `None` when
/// the request is not a plain one (see the module's header): then translate its tree.
pub fn plain_request_to_chat_json(raw: &[u8], target: &ChatTarget<'_>) -> Option<Vec<u8>> {
    let req: Request<'_> = serde_json::from_slice(raw).ok()?;
    if req.other.contains(&true) {
        return None;
    }
    let mut messages: Vec<ChatMessage<'_>> = Vec::with_capacity(req.messages.as_ref()?.len() + 1);
    if let Some(system) = &req.system {
        messages.push(ChatMessage {
            role: "system",
            content: ChatContent::Text(system.text()?),
        });
    }
    for turn in req.messages.as_ref()? {
        let content = turn.content.as_ref()?;
        match turn.role.as_deref()? {
            "user" => match content {
                TextOrBlocks::Text(s) => messages.push(ChatMessage {
                    role: "user",
                    content: ChatContent::Text(s.clone()),
                }),
                TextOrBlocks::Blocks(blocks) => {
                    let mut parts = Vec::with_capacity(blocks.len());
                    for b in blocks {
                        match b.kind.as_deref()? {
                            "text" => parts.push(b.text.as_ref()?),
                            _ => return None,
                        }
                    }
                    match parts.as_slice() {
                        [] => {}
                        [only] => messages.push(ChatMessage {
                            role: "user",
                            content: ChatContent::Text((*only).clone()),
                        }),
                        _ => messages.push(ChatMessage {
                            role: "user",
                            content: ChatContent::Parts(parts),
                        }),
                    }
                }
            },
            "assistant" => {
                let text = match content {
                    TextOrBlocks::Text(s) => s.clone(),
                    TextOrBlocks::Blocks(blocks) => {
                        let mut text = String::new();
                        for b in blocks {
                            match b.kind.as_deref()? {
                                "text" => text.push_str(b.text.as_deref()?),
                                "thinking" | "redacted_thinking" => {}
                                _ => return None,
                            }
                        }
                        Cow::Owned(text)
                    }
                };
                messages.push(ChatMessage {
                    role: "assistant",
                    content: ChatContent::Text(text),
                });
            }
            // Joins the leading system message, as in the tree translation.
            "system" => {
                let text = content.text()?;
                match messages.first_mut() {
                    Some(ChatMessage {
                        role: "system",
                        content: ChatContent::Text(s),
                    }) => {
                        let s = s.to_mut();
                        s.push_str("\n\n");
                        s.push_str(&text);
                    }
                    _ => messages.insert(
                        0,
                        ChatMessage {
                            role: "system",
                            content: ChatContent::Text(text),
                        },
                    ),
                }
            }
            _ => return None,
        }
    }
    Some(write_request(&req, &messages, target))
}

fn write_request(
    req: &Request<'_>,
    messages: &[ChatMessage<'_>],
    target: &ChatTarget<'_>,
) -> Vec<u8> {
    let size: usize = messages.iter().map(ChatMessage::len_hint).sum();
    let mut out = Vec::with_capacity(size + target.model.len() + 160);
    out.extend_from_slice(br#"{"model":"#);
    string(&mut out, target.model);
    out.extend_from_slice(br#","messages":["#);
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"role":""#);
        out.extend_from_slice(m.role.as_bytes());
        out.extend_from_slice(br#"","content":"#);
        match &m.content {
            ChatContent::Text(s) => write_read_str(&mut out, s),
            ChatContent::Parts(parts) => {
                out.push(b'[');
                for (j, p) in parts.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(br#"{"type":"text","text":"#);
                    write_read_str(&mut out, p);
                    out.push(b'}');
                }
                out.push(b']');
            }
        }
        out.push(b'}');
    }
    out.push(b']');
    if let Some(n) = req.max_tokens {
        out.extend_from_slice(if target.max_completion_tokens {
            br#","max_completion_tokens":"#.as_slice()
        } else {
            br#","max_tokens":"#.as_slice()
        });
        value(&mut out, &n);
    }
    if let Some(t) = &req.temperature {
        out.extend_from_slice(br#","temperature":"#);
        value(&mut out, t);
    }
    if let Some(p) = &req.top_p {
        out.extend_from_slice(br#","top_p":"#);
        value(&mut out, p);
    }
    if let Some(stops) = req.stop_sequences.as_ref().filter(|s| !s.is_empty()) {
        out.extend_from_slice(br#","stop":"#);
        value(&mut out, stops);
    }
    if let Some(b) = req.stream {
        out.extend_from_slice(if b {
            br#","stream":true"#.as_slice()
        } else {
            br#","stream":false"#.as_slice()
        });
    }
    if target.include_usage {
        out.extend_from_slice(br#","stream_options":{"include_usage":true}"#);
    }
    if let Some(user) = req.metadata.as_ref().and_then(|m| m.user_id.as_deref()) {
        out.extend_from_slice(br#","user":"#);
        string(&mut out, &chat_user(user));
    }
    out.push(b'}');
    out
}

fn value<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Writing strings, numbers and arrays of strings into a `Vec` cannot fail.
    let _ = serde_json::to_writer(out, v);
}

/// The fields of a Messages request the plain translation reads; `null` reads as absent
/// (as in the tree translation), `model` is the provider's. A value of another type than
/// expected is an error (the request then takes the tree translation).
#[derive(Default)]
struct Request<'a> {
    system: Option<TextOrBlocks<'a>>,
    messages: Option<Vec<Turn<'a>>>,
    max_tokens: Option<u64>,
    temperature: Option<Number>,
    top_p: Option<Number>,
    stop_sequences: Option<Vec<Cow<'a, str>>>,
    stream: Option<bool>,
    metadata: Option<Metadata<'a>>,
    /// `tools`, `tool_choice`, `output_config` (only the tree translation handles them)
    /// present and not `null`.
    other: [bool; 3],
}

#[derive(Default)]
struct Turn<'a> {
    role: Option<Cow<'a, str>>,
    content: Option<TextOrBlocks<'a>>,
}

#[derive(Default)]
struct Metadata<'a> {
    user_id: Option<Cow<'a, str>>,
}

/// A content block: its type and, for a text block, its text.
#[derive(Default)]
struct Block<'a> {
    kind: Option<Cow<'a, str>>,
    text: Option<Cow<'a, str>>,
}

/// `Deserialize` for a struct read from a JSON object only (anything else is an error):
/// `|out, i, map| …` reads the member `names[i]` into `out`.
macro_rules! object_only {
    ($ty:ident, $names:expr, |$out:ident, $i:ident, $map:ident| $body:block) => {
        impl<'de> Deserialize<'de> for $ty<'de> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty<'de>;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                        let mut $out = $ty::default();
                        members(map, $names, |$i, $map| $body)?;
                        Ok($out)
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

object_only!(
    Request,
    &[
        "system",
        "messages",
        "max_tokens",
        "temperature",
        "top_p",
        "stop_sequences",
        "stream",
        "metadata",
        "tools",
        "tool_choice",
        "output_config",
    ],
    |out, i, map| {
        match i {
            0 => out.system = map.next_value()?,
            1 => out.messages = map.next_value()?,
            2 => out.max_tokens = map.next_value()?,
            3 => out.temperature = map.next_value()?,
            4 => out.top_p = map.next_value()?,
            5 => {
                out.stop_sequences = match map.next_value::<Option<Vec<Text>>>()? {
                    // A `null` in the list is refused by the tree translation.
                    Some(list) => Some(
                        list.into_iter()
                            .map(|t| {
                                t.0.ok_or_else(|| {
                                    <A::Error as serde::de::Error>::custom("null stop sequence")
                                })
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    None => None,
                }
            }
            6 => out.stream = map.next_value()?,
            7 => out.metadata = map.next_value()?,
            // The last occurrence of a field counts, as in a tree.
            _ => out.other[i - 8] = map.next_value::<Option<Skip>>()?.is_some(),
        }
        Ok(())
    }
);

object_only!(Turn, &["role", "content"], |out, i, map| {
    match i {
        0 => out.role = map.next_value::<Text>()?.0,
        _ => out.content = map.next_value()?,
    }
    Ok(())
});

object_only!(Metadata, &["user_id"], |out, _i, map| {
    out.user_id = map.next_value::<Text>()?.0;
    Ok(())
});

object_only!(Block, &["type", "text"], |out, i, map| {
    match i {
        0 => out.kind = map.next_value::<Text>()?.0,
        _ => out.text = map.next_value::<Text>()?.0,
    }
    Ok(())
});

/// A string or `null` (`None`); any other value is an error.
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            strings_are!('de, |s| Text(Some(s)));
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string, or an array of content blocks.
enum TextOrBlocks<'a> {
    Text(Cow<'a, str>),
    Blocks(Vec<Block<'a>>),
}

impl<'a> TextOrBlocks<'a> {
    /// A string, or text blocks joined with newlines (`None` for other blocks).
    fn text(&self) -> Option<Cow<'a, str>> {
        match self {
            TextOrBlocks::Text(s) => Some(s.clone()),
            TextOrBlocks::Blocks(blocks) => {
                let mut texts = Vec::with_capacity(blocks.len());
                for b in blocks {
                    match b.kind.as_deref()? {
                        "text" => texts.push(b.text.as_deref()?),
                        _ => return None,
                    }
                }
                Some(Cow::Owned(texts.join("\n")))
            }
        }
    }
}

impl<'de> Deserialize<'de> for TextOrBlocks<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TextOrBlocks<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of content blocks")
            }
            strings_are!('de, TextOrBlocks::Text);
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut blocks = Vec::with_capacity(seq.size_hint().unwrap_or(1));
                while let Some(b) = seq.next_element()? {
                    blocks.push(b);
                }
                Ok(TextOrBlocks::Blocks(blocks))
            }
        }
        d.deserialize_any(V)
    }
}

struct ChatMessage<'a> {
    role: &'static str,
    content: ChatContent<'a>,
}

impl ChatMessage<'_> {
    fn len_hint(&self) -> usize {
        32 + match &self.content {
            ChatContent::Text(s) => s.len(),
            ChatContent::Parts(p) => p.iter().map(|s| s.len() + 24).sum(),
        }
    }
}

enum ChatContent<'a> {
    Text(Cow<'a, str>),
    /// Text parts (more than one).
    Parts(Vec<&'a Cow<'a, str>>),
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::providers::api::Api;
    use crate::providers::body::ClientBody;
    use crate::providers::plan::{ClientRequest, Route};

    /// Requests the plain translation takes, and requests it must leave to the tree
    /// translation (tools, images, wrong types, nulls, repeated fields, numbers a tree
    /// cannot hold, …).
    const REQUESTS: &[&str] = &[
        r#"{"model":"bench-json","max_tokens":256,"messages":[{"role":"user","content":"Say hello"}]}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"a\"b\\c\n\u0001 é ✓ \ud83d\ude00 \u2028"}],"max_tokens":1,"temperature":0.7,"top_p":1,"stream":true}"#,
        r#"{"model":"m","messages":[],"temperature":1.0,"top_p":1e0,"stream":false,"stop_sequences":[]}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop_sequences":["END","a\"b"],"metadata":{"user_id":"u-1"}}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":{"user_id":"user_ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff_account_a_session_b"}}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":{"user_id":null,"other":[1]}}"#,
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":{}}"#,
        r#"{"system":"be brief","messages":[{"role":"user","content":[{"type":"text","text":"a","cache_control":{"type":"ephemeral"}}]},{"role":"assistant","content":[{"type":"thinking","thinking":"t","signature":"s"},{"type":"text","text":"b"},{"type":"redacted_thinking","data":"x"},{"type":"text","text":"c"}]},{"role":"user","content":[{"type":"text","text":"d"},{"type":"text","text":"e"}]}]}"#,
        r#"{"system":[{"type":"text","text":"one"},{"type":"text","text":"two","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":[]},{"role":"system","content":"late"},{"role":"assistant","content":""},{"role":"system","content":[{"type":"text","text":"later"}]}]}"#,
        r#"{"messages":[{"role":"user","content":"hi"},{"role":"system","content":"s"}]}"#,
        r#"{"messages":[{"role":"assistant","content":[]}],"system":null,"max_tokens":null,"temperature":null,"stream":null,"metadata":null,"tools":null,"tool_choice":null,"output_config":null,"stop_sequences":null}"#,
        r#"{"messages":[{"role":"user","content":"x","extra":{"deep":[1,2.5,"s",null,true]}}],"unknown":{"a":[{}]},"top_k":5,"thinking":{"type":"enabled"}}"#,
        r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"name":"t","input_schema":{"type":"object"}}],"tools":null}"#,
        r#"{"messages":[{"role":"user","content":"first"}],"messages":[{"role":"user","content":"second"}],"max_tokens":1,"max_tokens":2}"#,
        r#"{"messages":[{"role":"user","role":"assistant","content":"a","content":"b"}]}"#,
        // Left to the tree translation.
        r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"name":"t","input_schema":{"type":"object"}}]}"#,
        r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"web_search_20250305","name":"web_search"}]}"#,
        r#"{"messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"auto"}}"#,
        r#"{"messages":[{"role":"user","content":"x"}],"output_config":{"format":{"type":"json_schema","schema":{"type":"object"}}}}"#,
        r#"{"messages":[{"role":"user","content":"x"}],"output_config":{"effort":"high"}}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"https://x/i.png"}}]}]}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"42"}]}]}"#,
        r#"{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{}}]}]}"#,
        // Errors the tree translation reports.
        r#"{"model":"m"}"#,
        r#"{"messages":null}"#,
        r#"{"messages":{}}"#,
        r#"{"messages":[["user","hi"]]}"#,
        r#"{"messages":[{"role":"user"}]}"#,
        r#"{"messages":[{"role":"user","content":null}]}"#,
        r#"{"messages":[{"role":7,"content":"x"}]}"#,
        r#"{"messages":[{"role":"tool","content":"x"}]}"#,
        r#"{"messages":[{"role":"user","content":5}]}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"text"}]}]}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"text","text":null}]}]}"#,
        r#"{"messages":[{"role":"user","content":[{"text":"x"}]}]}"#,
        r#"{"messages":[{"role":"user","content":["x"]}]}"#,
        r#"{"messages":[{"role":"assistant","content":[{"type":"tool_result","tool_use_id":"t"}]}]}"#,
        r#"{"messages":[{"role":"assistant","content":[{"type":"image"}]}]}"#,
        r#"{"messages":[{"role":"system","content":[{"type":"image"}]}]}"#,
        r#"{"system":5,"messages":[]}"#,
        r#"{"system":[{"type":"image"}],"messages":[]}"#,
        r#"{"messages":[],"max_tokens":-1}"#,
        r#"{"messages":[],"max_tokens":1.0}"#,
        r#"{"messages":[],"max_tokens":"1"}"#,
        r#"{"messages":[],"temperature":"hot"}"#,
        r#"{"messages":[],"stop_sequences":"END"}"#,
        r#"{"messages":[],"stop_sequences":["END",null]}"#,
        r#"{"messages":[],"stop_sequences":[1]}"#,
        r#"{"messages":[],"stream":"yes"}"#,
        r#"{"messages":[],"metadata":"m"}"#,
        r#"{"messages":[],"metadata":{"user_id":5}}"#,
        r#"{"messages":[],"unknown":1e400}"#,
        r#"{"messages":[{"role":"user","content":"x","extra":-1e999}]}"#,
    ];

    fn request_body(route: &Route, body: &ClientBody<'_>, stream: bool) -> Result<Value, String> {
        let req = ClientRequest {
            api: Api::Messages,
            body,
            model: "client-model",
            stream,
            response_id: "",
        };
        route
            .request_body(&req, "provider-model")
            .map(|b| serde_json::from_slice(&b).unwrap())
            .map_err(|e| format!("{:?}: {}", e.param, e.message))
    }

    #[test]
    fn bytes_translation_equals_the_tree_translation() {
        let yaml = "version: v0.4.0\nmodel_providers:\n  - model: openai/gpt-5\n    access_key: k\n    default: true\n  - model: groq/llama\n    access_key: k\n";
        let config = plano_config::load_str(yaml, None, &|_| None).unwrap();
        let mut plain = 0;
        for provider in &config.providers {
            let route = Route::new(provider, Api::Messages);
            for raw in REQUESTS {
                for stream in [false, true] {
                    let split = ClientBody::split(raw.as_bytes()).unwrap();
                    let by_bytes = request_body(&route, &split, stream);
                    let by_tree = match serde_json::from_str::<Value>(raw) {
                        Ok(Value::Object(tree)) => {
                            request_body(&route, &ClientBody::from_tree(tree), stream)
                        }
                        // A body whose tree cannot be built: refused all the same.
                        _ => {
                            assert!(by_bytes.is_err(), "{raw}");
                            continue;
                        }
                    };
                    assert_eq!(by_bytes, by_tree, "{} {raw}", provider.name);
                    let target = super::ChatTarget {
                        model: "provider-model",
                        max_completion_tokens: false,
                        include_usage: false,
                    };
                    if super::plain_request_to_chat_json(raw.as_bytes(), &target).is_some() {
                        plain += 1;
                        assert!(by_tree.is_ok(), "{raw}");
                    }
                }
            }
        }
        // The plain translation did take the plain requests.
        assert_eq!(plain, 2 * 2 * 15);
    }

    #[test]
    fn plain_request_bytes() {
        let raw = br#"{"model":"claude","max_tokens":256,"stream":true,"messages":[{"role":"user","content":"Say \"hi\""}]}"#;
        let target = super::ChatTarget {
            model: "gpt-x",
            max_completion_tokens: true,
            include_usage: true,
        };
        let out = super::plain_request_to_chat_json(raw, &target).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"model":"gpt-x","messages":[{"role":"user","content":"Say \"hi\""}],"max_completion_tokens":256,"stream":true,"stream_options":{"include_usage":true}}"#
        );
    }
}
