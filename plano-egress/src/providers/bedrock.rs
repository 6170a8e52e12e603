//! (placeholder: being written on branch t-bedrock)
use serde_json::{Map, Value};

use super::sse::SseEvent;
use super::{TranslateError, UpstreamStream};

fn pending() -> TranslateError {
    TranslateError::new("Bedrock translation is not available in this build")
}
pub fn request_from_chat(_: &Map<String, Value>) -> Result<Map<String, Value>, TranslateError> {
    Err(pending())
}
pub fn response_to_chat(_: &Value, _model: &str) -> Result<Value, TranslateError> {
    Err(pending())
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
