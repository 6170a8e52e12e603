//! (placeholder: being written on branch t-bedrock)
use super::sse::SseEvent;

#[derive(Debug, thiserror::Error)]
#[error("AWS event-stream decoding is not available in this build")]
pub struct EventStreamError;

#[derive(Debug, Default)]
pub struct Decoder;
impl Decoder {
    pub fn new(_max: usize) -> Self {
        Self
    }
    pub fn push(&mut self, _: &[u8]) {}
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, EventStreamError> {
        Err(EventStreamError)
    }
    pub fn finish(&mut self) -> Result<Option<SseEvent>, EventStreamError> {
        Err(EventStreamError)
    }
}
