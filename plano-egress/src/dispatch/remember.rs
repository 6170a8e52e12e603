//! Responses conversations stored after an answer, so a later `previous_response_id` can
//! be expanded (`conversations.rs` holds them). Called once per answer: from the request
//! path for a whole answer, from the stream relay (`stream.rs`) at `response.completed`.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::conversations::ConversationStore;
use crate::providers::responses;

/// Where a Responses answer's conversation goes, and the request it answers.
pub struct Remember {
    pub conversations: Arc<ConversationStore>,
    /// The request as sent (its input already holds any earlier conversation).
    pub request: Map<String, Value>,
}

impl Remember {
    /// Store the request's input items followed by `response`'s output items under the
    /// response's id, unless the client said `store: false`. A failure is logged and
    /// counted by the store and never fails the answer.
    pub async fn store(&self, response: &Value) {
        if self.request.get("store").and_then(Value::as_bool) == Some(false) {
            return;
        }
        let Some(id) = response.get("id").and_then(Value::as_str) else {
            return;
        };
        let Ok(mut items) = responses::conversation_items(&self.request) else {
            return;
        };
        items.extend(responses::output_items(response));
        let _ = self.conversations.put(id, &items).await;
    }
}
