//! Input-token estimate charged before the upstream call, reconciled with the provider's
//! reported usage afterwards.
//!
//! Models tiktoken knows (OpenAI's gpt-3.5 … gpt-5, o-series) are counted with their real
//! BPE (the `tiktoken-rs` crate embeds the vocabularies, so this works offline). Everything
//! else is estimated as bytes / 4, OpenAI's own rule of thumb for English text. The raw
//! request body is counted, JSON framing included, so the estimate errs high; reconciliation
//! corrects it once the usage is known.

use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};
use tiktoken_rs::{CoreBPE, cl100k_base_singleton, o200k_base_singleton, o200k_harmony_singleton};

/// Bodies are tokenized up to this many bytes; the rest is estimated at bytes / 4. Keeps a
/// multi-megabyte body from costing the request path tens of milliseconds of CPU.
const TOKENIZE_MAX_BYTES: usize = 256 * 1024;

fn bpe_for(model_id: &str) -> Option<&'static CoreBPE> {
    match get_tokenizer(model_id)? {
        Tokenizer::O200kBase => Some(o200k_base_singleton()),
        Tokenizer::O200kHarmony => Some(o200k_harmony_singleton()),
        Tokenizer::Cl100kBase => Some(cl100k_base_singleton()),
        // Legacy completion-era encodings: the byte estimate is close enough for them.
        _ => None,
    }
}

/// Whether `model_id` is counted with a real tokenizer.
pub fn has_tokenizer(model_id: &str) -> bool {
    bpe_for(model_id).is_some()
}

/// Load the vocabulary now (≈100 ms once) rather than on the first limited request.
pub fn warm(model_id: &str) {
    let _ = bpe_for(model_id);
}

fn bytes_estimate(n: usize) -> u64 {
    (n as u64).div_ceil(4)
}

/// Estimated input tokens of `body` for the upstream model `model_id`; at least 1.
pub fn estimate(model_id: &str, body: &[u8]) -> u64 {
    let n = match bpe_for(model_id) {
        Some(bpe) => {
            let head = &body[..body.len().min(TOKENIZE_MAX_BYTES)];
            // Cut at a UTF-8 boundary; invalid bytes fall back to the byte estimate.
            let valid = match std::str::from_utf8(head) {
                Ok(s) => s,
                Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default(),
            };
            bpe.count_ordinary(valid) as u64 + bytes_estimate(body.len() - valid.len())
        }
        None => bytes_estimate(body.len()),
    };
    n.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_models_use_the_real_tokenizer() {
        assert!(has_tokenizer("gpt-4o"));
        assert!(has_tokenizer("gpt-4o-mini"));
        assert!(has_tokenizer("gpt-3.5-turbo"));
        // "hello world" is two tokens in both o200k and cl100k; bytes/4 would say 3.
        assert_eq!(estimate("gpt-4o", b"hello world"), 2);
        assert_eq!(estimate("gpt-3.5-turbo", b"hello world"), 2);
    }

    #[test]
    fn other_models_use_bytes_over_four() {
        assert!(!has_tokenizer("claude-sonnet-4-5"));
        assert_eq!(estimate("claude-sonnet-4-5", b"hello world"), 3);
        assert_eq!(estimate("llama3", b""), 1);
    }

    #[test]
    fn invalid_utf8_tail_is_estimated_not_dropped() {
        let mut body = b"hello world".to_vec();
        body.extend_from_slice(&[0xff; 8]);
        assert_eq!(estimate("gpt-4o", &body), 2 + 2);
    }
}
