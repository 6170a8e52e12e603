//! Conversation state for the Responses API's `previous_response_id` (`state_storage:
//! memory`): each stored response keeps the whole conversation up to and including its
//! output, as Responses input items, so a follow-up request can be expanded into a full
//! conversation for any provider.
//!
//! Bounded: at most `capacity` responses are kept, the oldest dropped first, so a busy
//! egress cannot grow without limit. State is per process (replicas do not share it);
//! a client that needs it across replicas pins a replica or sends the whole conversation.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::Value;

/// Default number of stored responses.
pub const DEFAULT_CAPACITY: usize = 10_000;

pub struct Conversations {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    items: HashMap<String, std::sync::Arc<Vec<Value>>>,
    order: VecDeque<String>,
}

impl Conversations {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The conversation that ended with response `id` (input and output items, in order).
    pub fn get(&self, id: &str) -> Option<std::sync::Arc<Vec<Value>>> {
        self.inner.lock().ok()?.items.get(id).cloned()
    }

    pub fn put(&self, id: String, items: Vec<Value>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner
            .items
            .insert(id.clone(), std::sync::Arc::new(items))
            .is_none()
        {
            inner.order.push_back(id);
        }
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.items.remove(&old);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.items.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for Conversations {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn oldest_are_dropped_beyond_capacity() {
        let c = Conversations::new(2);
        c.put("a".into(), vec![json!(1)]);
        c.put("b".into(), vec![json!(2)]);
        c.put("c".into(), vec![json!(3)]);
        assert!(c.get("a").is_none());
        assert_eq!(c.get("c").map(|v| v.len()), Some(1));
        assert_eq!(c.len(), 2);
        // Replacing an id does not count twice.
        c.put("c".into(), vec![json!(3), json!(4)]);
        assert_eq!(c.len(), 2);
        assert!(c.get("b").is_some());
    }
}
