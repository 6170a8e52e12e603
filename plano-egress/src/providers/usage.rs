//! Token usage as each API reports it, read into one normalised [`Usage`] for metering
//! (`plano_llm_tokens_total`) and rate-limit reconciliation. The translators keep their own
//! usage arithmetic (chat ⇄ family); this is only the reading side.

use serde_json::Value;

use super::api::Api;

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
        match api {
            Api::Chat => Usage {
                input: n(&["prompt_tokens"]),
                output: n(&["completion_tokens"]),
                cached_input: n(&["prompt_tokens_details", "cached_tokens"]),
                reasoning: n(&["completion_tokens_details", "reasoning_tokens"]),
            },
            Api::Messages => Usage {
                input: n(&["input_tokens"])
                    .saturating_add(n(&["cache_read_input_tokens"]))
                    .saturating_add(n(&["cache_creation_input_tokens"])),
                output: n(&["output_tokens"]),
                cached_input: n(&["cache_read_input_tokens"]),
                reasoning: 0,
            },
            Api::Responses => Usage {
                input: n(&["input_tokens"]),
                output: n(&["output_tokens"]),
                cached_input: n(&["input_tokens_details", "cached_tokens"]),
                reasoning: n(&["output_tokens_details", "reasoning_tokens"]),
            },
            Api::Converse => Usage {
                input: n(&["inputTokens"])
                    .saturating_add(n(&["cacheReadInputTokens"]))
                    .saturating_add(n(&["cacheWriteInputTokens"])),
                output: n(&["outputTokens"]),
                cached_input: n(&["cacheReadInputTokens"]),
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
