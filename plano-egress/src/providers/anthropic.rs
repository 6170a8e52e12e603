//! (placeholder: being written on branch t-anthropic)
use serde_json::{Map, Value};

use super::sse::SseEvent;
use super::{ClientStream, TranslateError, UpstreamStream};

fn pending() -> TranslateError {
    TranslateError::new("Anthropic translation is not available in this build")
}
pub fn request_to_chat(_: &Map<String, Value>) -> Result<Map<String, Value>, TranslateError> {
    Err(pending())
}
pub fn response_from_chat(_: &Value, _model: &str) -> Result<Value, TranslateError> {
    Err(pending())
}
pub fn request_from_chat(_: &Map<String, Value>) -> Result<Map<String, Value>, TranslateError> {
    Err(pending())
}
pub fn response_to_chat(_: &Value) -> Result<Value, TranslateError> {
    Err(pending())
}
pub struct StreamFromChat;
impl StreamFromChat {
    pub fn new(_model: &str) -> Self {
        Self
    }
}
impl ClientStream for StreamFromChat {
    fn chunk(&mut self, _: &Value) -> Vec<SseEvent> {
        Vec::new()
    }
    fn finish(&mut self) -> Vec<SseEvent> {
        Vec::new()
    }
    fn fail(&mut self, _: &str, _: &str) -> Vec<SseEvent> {
        Vec::new()
    }
}
pub struct StreamToChat;
impl StreamToChat {
    pub fn new(_model: &str) -> Self {
        Self
    }
}
impl UpstreamStream for StreamToChat {
    fn event(&mut self, _: &SseEvent) -> Result<Vec<Value>, TranslateError> {
        Err(pending())
    }
    fn finish(&mut self) -> Result<Vec<Value>, TranslateError> {
        Err(pending())
    }
}
