//! Token usage as each API reports it, read into one normalised [`Usage`] for metering
//! (`plano_llm_tokens_total`) and rate-limit reconciliation. The translators keep their own
//! usage arithmetic (chat ⇄ family); this is only the reading side.

use serde_json::Value;

use super::api::Api;
use super::top_level::{self, ScanError};

/// Token usage as providers report it, normalised: `input` is every prompt token (cache
/// reads and writes included), `cached_input` the cache reads among them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub reasoning: u64,
}

impl Usage {
    /// From a whole answer (or one event object) of `api`; zero when it has none.
    pub fn of(api: Api, v: &Value) -> Self {
        match v.get("usage") {
            Some(u) => Self::of_usage(api, u),
            None => Usage::default(),
        }
    }

    /// From the `usage` object itself. Anthropic and Bedrock count cache reads and writes
    /// apart from their input tokens; they are added in (saturating: a provider's numbers
    /// are not trusted not to overflow).
    pub fn of_usage(api: Api, u: &Value) -> Self {
        if !u.is_object() {
            return Usage::default();
        }
        // Key paths, not JSON pointers: `Value::pointer` unescapes every segment into a
        // new `String` (two `str::replace` per segment), which was ~4 % of the egress's
        // instructions per request (callgrind, bench/run.sh's chat row).
        let n = |path: &[&str]| {
            path.iter()
                .try_fold(u, |v, key| v.get(*key))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        let paths = counted(api);
        Self::of_counts(api, paths.map(n))
    }

    /// From the JSON text of a `usage` value of `api` (found by [`top_level::member`]), read
    /// without building a tree (a tree and its lookups were ~4,500 instructions per
    /// pass-through answer): the same numbers as [`Usage::of_usage`] on its tree. An object
    /// is checked as [`top_level::members`] checks one (`Err` otherwise); a value that is
    /// not an object counts nothing.
    pub fn of_usage_json(api: Api, raw: &[u8]) -> Result<Self, ScanError> {
        let mut counts = [0u64; 4];
        read_counts(raw, &counted(api), 0b1111, 0, &mut counts)?;
        Ok(Self::of_counts(api, counts))
    }

    /// The numbers at the four [`counted`] paths of `api`, as a `Usage`.
    fn of_counts(api: Api, [a, b, c, d]: [u64; 4]) -> Self {
        match api {
            Api::Chat | Api::Responses => Usage {
                input: a,
                output: b,
                cached_input: c,
                reasoning: d,
            },
            Api::Messages | Api::Converse => Usage {
                input: a.saturating_add(b).saturating_add(c),
                output: d,
                cached_input: b,
                reasoning: 0,
            },
        }
    }

    /// Usage carried by one relayed stream event of `api`, folded into `self`. Chat: the
    /// chunk's `usage`; Messages: `message_start` carries `message.usage`, `message_delta`
    /// carries `usage`; Responses: `response.completed` / `.incomplete` / `.failed` carry
    /// `response.usage`.
    pub fn read_event(&mut self, api: Api, event: &Value) {
        match api {
            Api::Chat => {
                if event.get("usage").is_some_and(Value::is_object) {
                    *self = Usage::of(Api::Chat, event);
                }
            }
            Api::Messages => {
                let source = event.get("message").unwrap_or(event);
                self.merge(Usage::of(Api::Messages, source));
            }
            Api::Responses => {
                if let Some(r) = event.get("response") {
                    self.merge(Usage::of(Api::Responses, r));
                }
            }
            Api::Converse => {}
        }
    }

    /// Fold a later report into this one: Anthropic streams give input tokens at the start
    /// and output tokens at the end, each event carrying only what it knows.
    pub fn merge(&mut self, later: Usage) {
        let pick = |a: u64, b: u64| if b > 0 { b } else { a };
        self.input = pick(self.input, later.input);
        self.output = pick(self.output, later.output);
        self.cached_input = pick(self.cached_input, later.cached_input);
        self.reasoning = pick(self.reasoning, later.reasoning);
    }

    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

/// Where each API's `usage` keeps the four numbers [`Usage::of_counts`] reads: for chat and
/// Responses input, output, cached input, reasoning; for Messages and Converse input, cache
/// reads, cache writes, output.
fn counted(api: Api) -> [&'static [&'static str]; 4] {
    match api {
        Api::Chat => [
            &["prompt_tokens"],
            &["completion_tokens"],
            &["prompt_tokens_details", "cached_tokens"],
            &["completion_tokens_details", "reasoning_tokens"],
        ],
        Api::Messages => [
            &["input_tokens"],
            &["cache_read_input_tokens"],
            &["cache_creation_input_tokens"],
            &["output_tokens"],
        ],
        Api::Responses => [
            &["input_tokens"],
            &["output_tokens"],
            &["input_tokens_details", "cached_tokens"],
            &["output_tokens_details", "reasoning_tokens"],
        ],
        Api::Converse => [
            &["inputTokens"],
            &["cacheReadInputTokens"],
            &["cacheWriteInputTokens"],
            &["outputTokens"],
        ],
    }
}

/// Reads one level of a `usage` value: the [`counted`] paths still `live` (a bit each)
/// whose first `depth` names led here. What is on no path is skipped; a path that meets
/// something other than an object (inside) or a non-negative integer (at its end) counts
/// 0, and a name given twice counts its last value, as on the tree.
fn read_counts(
    raw: &[u8],
    paths: &[&[&str]; 4],
    live: u8,
    depth: usize,
    counts: &mut [u64; 4],
) -> Result<(), ScanError> {
    if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Ok(());
    }
    let mut inner_values: [&[u8]; 4] = [b""; 4];
    top_level::members(raw, |key, value| {
        for (i, path) in paths.iter().enumerate() {
            if live & (1 << i) != 0 && top_level::names_equal(key, path[depth]) {
                if path.len() == depth + 1 {
                    counts[i] = count(value);
                } else {
                    inner_values[i] = value;
                }
            }
        }
    })?;
    for (i, path) in paths.iter().enumerate() {
        if live & (1 << i) != 0 && path.len() > depth + 1 {
            // The last value of the path's next name (if any): its own level.
            counts[i] = 0;
            read_counts(inner_values[i], paths, 1 << i, depth + 1, counts)?;
        }
    }
    Ok(())
}

/// A count as `Value::as_u64` reads one: a JSON integer that fits a `u64`, else 0 (serde_json
/// reads a larger one as a float, a negative one as a negative integer).
fn count(value: &[u8]) -> u64 {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    value
        .iter()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .unwrap_or(0)
}

/// The chat chunk we ask for with `include_usage`: usage and no choices (hidden from a
/// client that did not ask for it).
pub fn is_usage_only_chunk(chunk: &Value) -> bool {
    chunk
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
        && chunk.get("usage").is_some_and(Value::is_object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_api_reads_into_one_shape() {
        let chat = json!({"usage": {"prompt_tokens": 3, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 1}, "completion_tokens_details": {"reasoning_tokens": 2}}});
        assert_eq!(
            Usage::of(Api::Chat, &chat),
            Usage {
                input: 3,
                output: 5,
                cached_input: 1,
                reasoning: 2
            }
        );
        let messages = json!({"usage": {"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}});
        assert_eq!(
            Usage::of(Api::Messages, &messages),
            Usage {
                input: 115,
                output: 4,
                cached_input: 100,
                reasoning: 0
            }
        );
        let converse = json!({"usage": {"inputTokens": 10, "outputTokens": 4, "cacheReadInputTokens": 1, "cacheWriteInputTokens": 2}});
        assert_eq!(
            Usage::of(Api::Converse, &converse),
            Usage {
                input: 13,
                output: 4,
                cached_input: 1,
                reasoning: 0
            }
        );
        let responses = json!({"usage": {"input_tokens": 7, "output_tokens": 8, "input_tokens_details": {"cached_tokens": 6}, "output_tokens_details": {"reasoning_tokens": 1}}});
        assert_eq!(
            Usage::of(Api::Responses, &responses),
            Usage {
                input: 7,
                output: 8,
                cached_input: 6,
                reasoning: 1
            }
        );
        assert_eq!(
            Usage::of(Api::Chat, &json!({"usage": null})),
            Usage::default()
        );
    }

    #[test]
    fn the_json_reader_counts_what_the_tree_reader_counts() {
        let texts = [
            r#"{"prompt_tokens": 3, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 1}, "completion_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 8}"#,
            r#"{"input_tokens":10,"output_tokens":4,"cache_read_input_tokens":100,"cache_creation_input_tokens":5}"#,
            r#"{"inputTokens": 10, "outputTokens": 4, "cacheReadInputTokens": 1, "cacheWriteInputTokens": 2}"#,
            r#"{"input_tokens": 7, "output_tokens": 8, "input_tokens_details": {"cached_tokens": 6}, "output_tokens_details": {"reasoning_tokens": 1}}"#,
            // Not counts: floats, negatives, strings, null, objects, past u64 → 0.
            r#"{"prompt_tokens": 1.5, "completion_tokens": -2, "input_tokens": "3", "output_tokens": null, "inputTokens": {"a": 1}, "outputTokens": 18446744073709551616}"#,
            r#"{"prompt_tokens": 18446744073709551615, "completion_tokens": 0, "input_tokens": [1]}"#,
            // Details that are not objects, or absent names inside them.
            r#"{"prompt_tokens_details": 4, "completion_tokens_details": {"x": 1}, "input_tokens_details": null}"#,
            // A name given twice: the last value, for counts and for details.
            r#"{"prompt_tokens": 1, "prompt_tokens": 2, "prompt_tokens_details": {"cached_tokens": 5}, "prompt_tokens_details": 3}"#,
            r#"{"input_tokens_details": {"cached_tokens": 5, "cached_tokens": 6}, "output_tokens_details": 1, "output_tokens_details": {"reasoning_tokens": 9}}"#,
            // Escaped names read as their unescaped selves.
            r#"{"prompt_\u0074okens": 4, "\u0069nput_tokens": 5}"#,
            r#"{}"#,
            r#"null"#,
            r#"[1, 2]"#,
            r#"7"#,
            r#""usage""#,
        ];
        for text in texts {
            let tree: Value = serde_json::from_str(text).unwrap();
            for api in [Api::Chat, Api::Messages, Api::Responses, Api::Converse] {
                assert_eq!(
                    Usage::of_usage_json(api, text.as_bytes()),
                    Ok(Usage::of_usage(api, &tree)),
                    "{api:?} {text}"
                );
            }
        }
        // A usage object that is not one is refused, like the answer around it.
        for bad in [
            r#"{"prompt_tokens": 1"#,
            r#"{"prompt_tokens" 1}"#,
            r#"{"a":1}}"#,
        ] {
            assert!(
                Usage::of_usage_json(Api::Chat, bad.as_bytes()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn huge_counts_saturate_instead_of_overflowing() {
        let messages = json!({"input_tokens": u64::MAX, "cache_read_input_tokens": 1, "output_tokens": u64::MAX});
        let u = Usage::of_usage(Api::Messages, &messages);
        assert_eq!(u.input, u64::MAX);
        assert_eq!(u.total(), u64::MAX);
        let converse = json!({"inputTokens": u64::MAX, "cacheWriteInputTokens": 9});
        assert_eq!(Usage::of_usage(Api::Converse, &converse).input, u64::MAX);
    }

    #[test]
    fn stream_events_merge_what_each_knows() {
        let mut u = Usage::default();
        u.read_event(Api::Messages, &json!({"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}}));
        u.read_event(
            Api::Messages,
            &json!({"type": "message_delta", "usage": {"output_tokens": 30}}),
        );
        assert_eq!((u.input, u.output), (9, 30));
        let mut r = Usage::default();
        r.read_event(Api::Responses, &json!({"type": "response.completed", "response": {"usage": {"input_tokens": 2, "output_tokens": 3}}}));
        assert_eq!(r.total(), 5);
    }
}
