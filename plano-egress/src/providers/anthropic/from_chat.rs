//! A whole chat completion → an Anthropic Message, read and written without JSON trees
//! (a `Value` tree of the answer and of the Message, then its serialisation, were ~47k
//! instructions of a ~1 KB answer; callgrind, `bench/instructions.sh messages`). The chat
//! answer is read into the few fields the translation uses, strings borrowed from the
//! answer; the Message is written straight into its bytes.
//!
//! Same reading as the tree's lookups (`response.rs` kept the tree version, which the
//! tests compare this one with): a field of the wrong type is absent, a repeated key keeps
//! its last value, unknown fields are ignored; tool-call arguments are still parsed into a
//! `Value` (they must be checked to be an object, and are written as the tree wrote them).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::lenient::{
    ArrayOr, Count, Elements, Members, ObjectOr, Str, skip_map, skip_seq, strings_are,
    write_read_str, write_str as string,
};
use super::{ResponseCtx, Tokens, message_id, stop_reason_from_chat, tool_input};
use crate::providers::TranslateError;
use crate::providers::usage::Usage;

/// Chat completion (its JSON text) → Message (its JSON text), with the answer's usage in
/// chat terms (what [`Usage::of`] reads from the answer's tree).
pub fn message_from_chat_json(
    chat: &[u8],
    ctx: &ResponseCtx,
) -> Result<(Vec<u8>, Usage), TranslateError> {
    let answer = serde_json::from_slice::<ObjectOr<Answer>>(chat)
        .map_err(|e| TranslateError::new(format!("the provider's answer is not valid JSON: {e}")))?
        .or_default();
    let usage = answer
        .usage
        .as_ref()
        .map(ChatUsage::usage)
        .unwrap_or_default();
    Ok((write_message(&answer, ctx)?, usage))
}

/// Chat completion → Message. An upstream answer without a first choice is an error.
/// `ctx`: [`ResponseCtx::from_request`] of the client's request, or just its model.
/// The request path translates the answer's bytes ([`message_from_chat_json`]);
/// this is the same translation on trees.
pub fn response_from_chat(
    chat: &serde_json::Value,
    ctx: impl Into<ResponseCtx>,
) -> Result<serde_json::Value, TranslateError> {
    let bytes = serde_json::to_vec(chat)
        .map_err(|e| TranslateError::new(format!("cannot encode the answer: {e}")))?;
    let (message, _) = message_from_chat_json(&bytes, &ctx.into())?;
    serde_json::from_slice(&message)
        .map_err(|e| TranslateError::new(format!("cannot decode the answer: {e}")))
}

fn write_message(answer: &Answer<'_>, ctx: &ResponseCtx) -> Result<Vec<u8>, TranslateError> {
    let choice = answer
        .choice
        .as_ref()
        .ok_or_else(|| TranslateError::at("choices", "the chat completion has no choices"))?;
    let message = choice.message.as_ref().ok_or_else(|| {
        TranslateError::at("choices[0].message", "the chat completion has no message")
    })?;
    let id = message_id(answer.id.as_deref());
    let mut out = Vec::with_capacity(256 + message.len_hint() + ctx.model.len());
    out.extend_from_slice(br#"{"id":"#);
    string(&mut out, &id);
    out.extend_from_slice(br#","type":"message","role":"assistant","model":"#);
    string(&mut out, &ctx.model);
    out.extend_from_slice(br#","content":["#);
    let mut first = true;
    let mut block = |out: &mut Vec<u8>, kind: &str| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"type":""#);
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\"");
    };
    // `reasoning_content`, else `reasoning`: the first of them that is a string.
    let reasoning = message
        .reasoning_content
        .as_ref()
        .or(message.reasoning.as_ref())
        .filter(|s| !s.is_empty());
    if let Some(thinking) = reasoning {
        block(&mut out, "thinking");
        out.extend_from_slice(br#","thinking":"#);
        write_read_str(&mut out, thinking);
        out.extend_from_slice(br#","signature":""}"#);
    }
    if !message.content.text().is_empty() {
        block(&mut out, "text");
        out.extend_from_slice(br#","text":"#);
        match &message.content {
            Content::Text(s) => write_read_str(&mut out, s),
            other => string(&mut out, other.text()),
        }
        out.push(b'}');
    }
    let refusal = message.refusal.as_ref().filter(|s| !s.is_empty());
    if let Some(r) = refusal {
        block(&mut out, "text");
        out.extend_from_slice(br#","text":"#);
        write_read_str(&mut out, r);
        out.push(b'}');
    }
    for (i, call) in message.tool_calls.iter().enumerate() {
        block(&mut out, "tool_use");
        out.extend_from_slice(br#","id":"#);
        match call.id.as_ref().filter(|s| !s.is_empty()) {
            Some(call_id) => write_read_str(&mut out, call_id),
            None => string(
                &mut out,
                &format!("toolu_{}_{i}", id.trim_start_matches("msg_")),
            ),
        }
        out.extend_from_slice(br#","name":"#);
        match &call.name {
            Some(name) => write_read_str(&mut out, name),
            None => out.extend_from_slice(br#""""#),
        }
        out.extend_from_slice(br#","input":"#);
        serde_json::to_writer(&mut out, &tool_input(call.arguments.as_ref()))
            .map_err(|e| TranslateError::new(format!("cannot encode the answer: {e}")))?;
        out.push(b'}');
    }
    out.push(b']');

    let finish = choice.finish_reason.as_deref();
    let has_calls = !message.tool_calls.is_empty();
    // The matched stop sequence, when the provider names it (vLLM's `stop_reason`) and the
    // client asked for it.
    let stop_sequence = choice
        .stop_reason
        .as_deref()
        .and_then(|s| ctx.stop_sequences.iter().find(|a| a.as_str() == s));
    let stop_reason = match (stop_sequence, refusal) {
        (_, Some(_)) => "refusal",
        (Some(_), None) if finish == Some("stop") && !has_calls => "stop_sequence",
        _ => stop_reason_from_chat(finish, has_calls),
    };
    out.extend_from_slice(br#","stop_reason":""#);
    out.extend_from_slice(stop_reason.as_bytes());
    out.extend_from_slice(br#"","stop_sequence":"#);
    match stop_sequence {
        Some(s) if stop_reason == "stop_sequence" => string(&mut out, s),
        _ => out.extend_from_slice(b"null"),
    }
    let t = answer
        .usage
        .as_ref()
        .map(ChatUsage::tokens)
        .unwrap_or_default();
    out.extend_from_slice(br#","usage":{"input_tokens":"#);
    number(&mut out, t.input);
    out.extend_from_slice(br#","cache_creation_input_tokens":"#);
    number(&mut out, t.cache_write);
    out.extend_from_slice(br#","cache_read_input_tokens":"#);
    number(&mut out, t.cache_read);
    out.extend_from_slice(br#","output_tokens":"#);
    number(&mut out, t.output);
    if let Some(n) = t.thinking {
        out.extend_from_slice(br#","output_tokens_details":{"thinking_tokens":"#);
        number(&mut out, n);
        out.push(b'}');
    }
    out.extend_from_slice(b"}}");
    Ok(out)
}

fn number(out: &mut Vec<u8>, n: u64) {
    let mut ser = serde_json::Serializer::new(out);
    let _ = serde::Serializer::serialize_u64(&mut ser, n);
}

/// What the translation reads of a chat completion.
#[derive(Default)]
struct Answer<'a> {
    id: Option<Cow<'a, str>>,
    /// The first choice; `None` when `choices` is not an array or is empty.
    choice: Option<Choice<'a>>,
    /// `None` when the answer has no `usage`.
    usage: Option<ChatUsage>,
}

#[derive(Default)]
struct Choice<'a> {
    /// `None` when absent or not an object.
    message: Option<Message<'a>>,
    finish_reason: Option<Cow<'a, str>>,
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Default)]
struct Message<'a> {
    content: Content<'a>,
    reasoning_content: Option<Cow<'a, str>>,
    reasoning: Option<Cow<'a, str>>,
    refusal: Option<Cow<'a, str>>,
    /// Empty when absent or not an array; one per element, whatever the element.
    tool_calls: Vec<ToolCall<'a>>,
}

impl Message<'_> {
    fn len_hint(&self) -> usize {
        self.content.text().len()
            + self.reasoning_content.as_deref().map_or(0, str::len)
            + self.reasoning.as_deref().map_or(0, str::len)
            + self.refusal.as_deref().map_or(0, str::len)
            + 64 * self.tool_calls.len()
    }
}

/// Chat message content: a string, or the text of its parts joined.
#[derive(Default)]
enum Content<'a> {
    #[default]
    None,
    Text(Cow<'a, str>),
    Parts(String),
}

impl Content<'_> {
    fn text(&self) -> &str {
        match self {
            Content::None => "",
            Content::Text(s) => s,
            Content::Parts(s) => s,
        }
    }
}

#[derive(Default)]
struct ToolCall<'a> {
    id: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
    /// `function.arguments`, any value (`None` when absent or `function` is not an object).
    arguments: Option<Value>,
}

/// A `function` object of a tool call.
#[derive(Default)]
struct Function<'a> {
    name: Option<Cow<'a, str>>,
    arguments: Option<Value>,
}

/// The counts of a chat `usage`: `None` for a count that is absent or not a non-negative
/// integer. `cached` and `cache_hit` tell absent (`None`) from present but not a count
/// (`Some(None)`): `cached_tokens` present shadows DeepSeek's `prompt_cache_hit_tokens`.
#[derive(Default)]
struct ChatUsage {
    prompt: Option<u64>,
    completion: Option<u64>,
    cached: Option<Option<u64>>,
    cache_write: Option<u64>,
    cache_hit: Option<Option<u64>>,
    reasoning: Option<u64>,
}

impl ChatUsage {
    /// What [`Tokens::from_chat`] reads from the same `usage`.
    fn tokens(&self) -> Tokens {
        let prompt = self.prompt.unwrap_or(0);
        let cached = self
            .cached
            .or(self.cache_hit)
            .flatten()
            .unwrap_or(0)
            .min(prompt);
        let written = self.cache_write.unwrap_or(0).min(prompt - cached);
        Tokens {
            input: prompt - cached - written,
            output: self.completion.unwrap_or(0),
            cache_read: cached,
            cache_write: written,
            thinking: self.reasoning,
        }
    }

    /// What [`Usage::of_usage`] reads from the same `usage` (chat terms).
    fn usage(&self) -> Usage {
        Usage {
            input: self.prompt.unwrap_or(0),
            output: self.completion.unwrap_or(0),
            cached_input: self.cached.flatten().unwrap_or(0),
            reasoning: self.reasoning.unwrap_or(0),
        }
    }
}

/// `Members` for a struct: `$ty` read from an object's members (through [`ObjectOr`]:
/// nothing from any other value, as lookups in a tree find nothing in a non-object).
macro_rules! object {
    ($ty:ty, $names:expr, |$out:ident, $i:ident, $map:ident| $body:block) => {
        impl<'de> Members<'de> for $ty {
            const NAMES: &'static [&'static str] = $names;
            fn member<A: MapAccess<'de>>(
                &mut self,
                $i: usize,
                $map: &mut A,
            ) -> Result<(), A::Error> {
                let $out = self;
                $body
            }
        }
    };
}

object!(Answer<'de>, &["id", "choices", "usage"], |out, i, map| {
    match i {
        0 => out.id = map.next_value::<Str>()?.0,
        1 => out.choice = map.next_value::<ArrayOr<FirstChoice>>()?.or_default().0,
        _ => out.usage = Some(map.next_value::<ObjectOr<ChatUsage>>()?.or_default()),
    }
    Ok(())
});

object!(
    Choice<'de>,
    &["message", "finish_reason", "stop_reason"],
    |out, i, map| {
        match i {
            0 => out.message = map.next_value::<ObjectOr<Message>>()?.0,
            1 => out.finish_reason = map.next_value::<Str>()?.0,
            _ => out.stop_reason = map.next_value::<Str>()?.0,
        }
        Ok(())
    }
);

object!(
    Message<'de>,
    &[
        "content",
        "reasoning_content",
        "reasoning",
        "refusal",
        "tool_calls"
    ],
    |out, i, map| {
        match i {
            0 => out.content = map.next_value()?,
            1 => out.reasoning_content = map.next_value::<Str>()?.0,
            2 => out.reasoning = map.next_value::<Str>()?.0,
            3 => out.refusal = map.next_value::<Str>()?.0,
            _ => out.tool_calls = map.next_value::<ArrayOr<ToolCalls>>()?.or_default().0,
        }
        Ok(())
    }
);

object!(ToolCall<'de>, &["id", "function"], |out, i, map| {
    match i {
        0 => out.id = map.next_value::<Str>()?.0,
        _ => {
            let f = map.next_value::<ObjectOr<Function>>()?.or_default();
            (out.name, out.arguments) = (f.name, f.arguments);
        }
    }
    Ok(())
});

object!(Function<'de>, &["name", "arguments"], |out, i, map| {
    match i {
        0 => out.name = map.next_value::<Str>()?.0,
        _ => out.arguments = Some(map.next_value()?),
    }
    Ok(())
});

/// `choices` (an array): its first element, a [`Choice`] (a default one when it is not an
/// object); `None` when it is empty.
#[derive(Default)]
struct FirstChoice<'a>(Option<Choice<'a>>);

impl<'de> Elements<'de> for FirstChoice<'de> {
    fn elements<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let first = seq.next_element::<ObjectOr<Choice>>()?;
        skip_seq(seq)?;
        Ok(FirstChoice(first.map(ObjectOr::or_default)))
    }
}

/// `tool_calls` (an array): one [`ToolCall`] per element, whatever the element.
#[derive(Default)]
struct ToolCalls<'a>(Vec<ToolCall<'a>>);

impl<'de> Elements<'de> for ToolCalls<'de> {
    fn elements<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut calls = Vec::new();
        while let Some(call) = seq.next_element::<ObjectOr<ToolCall>>()? {
            calls.push(call.or_default());
        }
        Ok(ToolCalls(calls))
    }
}

impl<'de> Deserialize<'de> for Content<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Content<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            strings_are!('de, Content::Text);
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Content::None)
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Content::None)
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Content::None)
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Content::None)
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(Content::None)
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(Content::None)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                skip_map(map)?;
                Ok(Content::None)
            }
            /// The `text` strings of the parts, joined (parts without one add nothing).
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut text = String::new();
                while let Some(part) = seq.next_element::<ObjectOr<PartText>>()? {
                    if let Some(PartText(Some(t))) = part.0 {
                        text.push_str(&t);
                    }
                }
                Ok(Content::Parts(text))
            }
        }
        d.deserialize_any(V)
    }
}

/// The `text` string of a content part (`None` when it has none).
#[derive(Default)]
struct PartText<'a>(Option<Cow<'a, str>>);

object!(PartText<'de>, &["text"], |out, _i, map| {
    out.0 = map.next_value::<Str>()?.0;
    Ok(())
});

object!(
    ChatUsage,
    &[
        "prompt_tokens",
        "completion_tokens",
        "prompt_tokens_details",
        "prompt_cache_hit_tokens",
        "completion_tokens_details",
    ],
    |u, i, map| {
        match i {
            0 => u.prompt = map.next_value::<Count>()?.0,
            1 => u.completion = map.next_value::<Count>()?.0,
            2 => {
                let Details([cached, _, written]) =
                    map.next_value::<ObjectOr<Details>>()?.or_default();
                u.cached = cached;
                u.cache_write = written.flatten();
            }
            3 => u.cache_hit = Some(map.next_value::<Count>()?.0),
            _ => {
                let Details([_, reasoning, _]) =
                    map.next_value::<ObjectOr<Details>>()?.or_default();
                u.reasoning = reasoning.flatten();
            }
        }
        Ok(())
    }
);

/// A `*_tokens_details` object: its `cached_tokens`, `reasoning_tokens` and
/// `cache_write_tokens`, each `None` when absent, `Some(None)` when present but not a
/// count (all `None` when it is not an object).
#[derive(Default)]
struct Details([Option<Option<u64>>; 3]);

object!(
    Details,
    &["cached_tokens", "reasoning_tokens", "cache_write_tokens"],
    |out, i, map| {
        out.0[i] = Some(map.next_value::<Count>()?.0);
        Ok(())
    }
);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::response::response_from_chat_tree;
    use super::*;
    use crate::providers::api::Api;

    /// A translated answer (or the error's param and message) and the usage read.
    type Outcome = (Result<Value, (Option<String>, String)>, Usage);

    /// The tree translation's answer (or error) and usage for the answer's text.
    fn by_tree(raw: &str, ctx: &ResponseCtx) -> Outcome {
        let chat: Value = serde_json::from_str(raw).unwrap();
        let out = response_from_chat_tree(&chat, ctx.clone()).map_err(|e| (e.param, e.message));
        (out, Usage::of(Api::Chat, &chat))
    }

    fn by_bytes(raw: &str, ctx: &ResponseCtx) -> Outcome {
        match message_from_chat_json(raw.as_bytes(), ctx) {
            Ok((bytes, usage)) => (Ok(serde_json::from_slice(&bytes).unwrap()), usage),
            Err(e) => (Err((e.param, e.message)), Usage::of(Api::Chat, &json!({}))),
        }
    }

    /// Answers covering every field the translation reads, each also in shapes a tree
    /// lookup treats as absent (wrong types, non-objects), repeated keys, escapes.
    const ANSWERS: &[&str] = &[
        r#"{"id":"chatcmpl-1","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":160,"total_tokens":174}}"#,
        r#"{"id":"x","choices":[{"message":{"content":"a\"b\\c\n\t\u0001\u001f\u007f é ✓ \ud83d\ude00 \u2028</script>"},"finish_reason":"length"}]}"#,
        r#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"image"},"str",7,{"text":5},{"text":"b"}]},"finish_reason":"stop"}]}"#,
        r#"{"choices":[{"message":{"content":[]}}]}"#,
        r#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"city\":\"Paris\",\"n\":1.0,\"big\":12345678901234567890,\"f\":1e3}"}},{"function":{"name":"broken","arguments":"{\"a\":"}},{"id":"","function":{"name":"obj","arguments":{"z":1,"a":[true,null]}}},{"function":{"arguments":"[1,2]"}},"not a call",{"id":7,"function":"x"},{"function":{"name":"n","arguments":null}}]},"finish_reason":"tool_calls"}]}"#,
        r#"{"id":"chatcmpl-","choices":[{"message":{"content":"t","tool_calls":[{"id":"c","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop"}]}"#,
        r#"{"choices":[{"message":{"content":"x","tool_calls":{"id":"c"}},"finish_reason":"content_filter"}]}"#,
        r#"{"choices":[{"message":{"reasoning_content":"think","reasoning":"other","content":"a"},"finish_reason":"stop"}]}"#,
        r#"{"choices":[{"message":{"reasoning_content":"","reasoning":"other","content":"a"}}]}"#,
        r#"{"choices":[{"message":{"reasoning_content":5,"reasoning":"other","content":"a"}}]}"#,
        r#"{"choices":[{"message":{"reasoning":"only","refusal":"no way","content":"a"},"finish_reason":"stop"}]}"#,
        r#"{"choices":[{"message":{"refusal":"","content":"a"},"stop_reason":"END","finish_reason":"stop"}]}"#,
        r#"{"choices":[{"message":{"content":"a"},"stop_reason":"END","finish_reason":"stop"}]}"#,
        r#"{"choices":[{"message":{"content":"a"},"stop_reason":"other","finish_reason":"stop"}]}"#,
        r#"{"choices":[{"message":{"content":"a"},"stop_reason":"END","finish_reason":"length"}]}"#,
        r#"{"choices":[{"message":{"content":"a"},"stop_reason":7,"finish_reason":7}]}"#,
        r#"{"choices":[{"message":{"content":"a"},"finish_reason":"function_call"}],"usage":null}"#,
        r#"{"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":100,"completion_tokens":50,"prompt_tokens_details":{"cached_tokens":30,"cache_write_tokens":20},"completion_tokens_details":{"reasoning_tokens":10}}}"#,
        r#"{"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":40,"prompt_cache_hit_tokens":32,"completion_tokens":1}}"#,
        r#"{"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":40,"prompt_tokens_details":{"cached_tokens":null},"prompt_cache_hit_tokens":32}}"#,
        r#"{"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":40,"prompt_tokens_details":{},"prompt_cache_hit_tokens":32}}"#,
        r#"{"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":40,"prompt_tokens_details":[1],"prompt_cache_hit_tokens":"32"}}"#,
        r#"{"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":9,"cache_write_tokens":9}}}"#,
        r#"{"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":1.0,"completion_tokens":-2,"completion_tokens_details":{"reasoning_tokens":1.5,"cached_tokens":3}}}"#,
        r#"{"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":18446744073709551615,"completion_tokens_details":{"reasoning_tokens":0}}}"#,
        r#"{"choices":[{"message":{"content":"a"}}],"usage":"lots"}"#,
        r#"{"choices":[{"message":{"content":"a"}}],"usage":{"completion_tokens_details":"x","prompt_tokens_details":{"cached_tokens":"5"}}}"#,
        r#"{"id":"one","id":"two","choices":[{"message":{"content":"first"}}],"choices":[{"message":{"content":"second","content":"third"},"finish_reason":"stop","finish_reason":"length"}],"usage":{"prompt_tokens":1,"prompt_tokens":2}}"#,
        r#"{"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens_details":{"cached_tokens":1},"prompt_tokens_details":"x","prompt_tokens":5,"prompt_cache_hit_tokens":2}}"#,
        r#"{"id":5,"choices":[{"message":{"content":"a"}},{"message":{"content":"b"}}],"extra":{"deep":[[[{}]]]}}"#,
        r#"{"id":"a\u0000b","choices":[{"message":{"content":"\ud800\udc00"}}]}"#,
        r#"{"choices":[{"message":{"content":""}}]}"#,
        r#"{"choices":[{"message":{}}]}"#,
        // Errors.
        r#"{"choices":[]}"#,
        r#"{"choices":{}}"#,
        r#"{"choices":"x"}"#,
        r#"{}"#,
        r#"[]"#,
        r#""text""#,
        r#"{"choices":[{"message":"hi"}]}"#,
        r#"{"choices":[{"message":null}]}"#,
        r#"{"choices":[{}]}"#,
        r#"{"choices":[7]}"#,
        r#"{"choices":[{"message":[]}]}"#,
    ];

    #[test]
    fn bytes_translation_equals_the_tree_translation() {
        let ctxs = [
            ResponseCtx::from("claude-x"),
            ResponseCtx {
                model: "m \"quoted\" ✓".into(),
                stop_sequences: vec!["END".into(), "STOP".into()],
                input_tokens_estimate: 0,
            },
        ];
        for raw in ANSWERS {
            for ctx in &ctxs {
                let (old, old_usage) = by_tree(raw, ctx);
                let (new, new_usage) = by_bytes(raw, ctx);
                // Ids made up when the answer has none are random: compare around them.
                let (old, new) = match (old, new) {
                    (Ok(mut o), Ok(mut n)) => {
                        let made_up = o["id"] != n["id"];
                        if made_up {
                            assert!(n["id"].as_str().unwrap().starts_with("msg_"), "{raw}");
                            normalize_ids(&mut o);
                            normalize_ids(&mut n);
                        }
                        (Ok(o), Ok(n))
                    }
                    other => other,
                };
                assert_eq!(old, new, "answer {raw}");
                if old.is_ok() {
                    assert_eq!(old_usage, new_usage, "usage of {raw}");
                }
            }
        }
    }

    /// Random ids (`msg_<uuid>` and the tool-use ids made from them) replaced by fixed ones.
    fn normalize_ids(m: &mut Value) {
        let id = m["id"]
            .as_str()
            .unwrap()
            .trim_start_matches("msg_")
            .to_owned();
        m["id"] = "msg_ID".into();
        for b in m["content"].as_array_mut().unwrap() {
            if let Some(s) = b.get("id").and_then(Value::as_str) {
                let s = s.replace(&id, "ID");
                b["id"] = s.into();
            }
        }
    }

    #[test]
    fn invalid_json_is_refused_as_before() {
        for raw in [
            "",
            "{",
            r#"{"choices":[{"message":{"content":"a"}}]"#,
            r#"{"choices":[]} x"#,
            r#"{"a":1e400}"#,
            r#"{"choices":[{"message":{"content":"\ud800"}}]}"#,
        ] {
            let tree = serde_json::from_str::<Value>(raw).map_err(|e| e.to_string());
            let new = message_from_chat_json(raw.as_bytes(), &ResponseCtx::from("m"));
            match (tree, new) {
                (Err(old), Err(new)) => assert_eq!(
                    new.message,
                    format!("the provider's answer is not valid JSON: {old}"),
                    "{raw}"
                ),
                (old, new) => panic!("{raw}: tree {old:?}, bytes {:?}", new.map(|_| ())),
            }
        }
    }

    #[test]
    fn the_message_is_written_in_anthropics_order_with_escapes() {
        let raw = r#"{"id":"chatcmpl-9","choices":[{"message":{"content":"a\"\n\u0001é"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
        let (bytes, usage) = message_from_chat_json(raw.as_bytes(), &"claude".into()).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"id":"msg_9","type":"message","role":"assistant","model":"claude","content":[{"type":"text","text":"a\"\n\u0001é"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":2}}"#
        );
        assert_eq!((usage.input, usage.output), (3, 2));
    }
}
