//! (placeholder: being written on branch t-responses)
use serde_json::{Map, Value};

use super::sse::SseEvent;
use super::{ClientStream, TranslateError};

fn pending() -> TranslateError {
    TranslateError::new("Responses translation is not available in this build")
}
pub struct ResponseCtx {
    pub id: String,
    pub model: String,
    pub request: Map<String, Value>,
}
pub fn request_to_chat(_: &Map<String, Value>) -> Result<Map<String, Value>, TranslateError> {
    Err(pending())
}
pub fn response_from_chat(_: &Value, _: &ResponseCtx) -> Result<Value, TranslateError> {
    Err(pending())
}
pub fn conversation_items(_: &Map<String, Value>) -> Result<Vec<Value>, TranslateError> {
    Err(pending())
}
pub fn output_items(_: &Value) -> Vec<Value> {
    Vec::new()
}
pub struct StreamFromChat;
impl StreamFromChat {
    pub fn new(_: ResponseCtx) -> Self {
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
