//! `state_storage: memory`: conversations in this process, kept as their serialised JSON
//! (so the byte bound is what they really occupy, give or take the map's own overhead).
//! Bounded by count and by total bytes, oldest dropped first, and by age (`ttl`).
//! Replicas do not share it and a restart empties it: use `postgres` for either.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use plano_common::metrics as m;
use serde_json::Value;
use serde_json::value::RawValue;

pub struct MemoryStore {
    max_conversations: usize,
    max_total_bytes: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
}

struct Entry {
    json: Box<RawValue>,
    stored_at: Instant,
    /// Matches the `order` entry that is this entry's own (an id stored twice leaves a
    /// stale one behind).
    seq: u64,
}

#[derive(Default)]
struct Inner {
    items: HashMap<String, Entry>,
    /// Insertion order, oldest first: `(id, seq)`.
    order: VecDeque<(String, u64)>,
    bytes: usize,
    next_seq: u64,
}

impl Inner {
    fn remove(&mut self, id: &str) -> bool {
        match self.items.remove(id) {
            Some(e) => {
                self.bytes = self.bytes.saturating_sub(e.json.get().len());
                true
            }
            None => false,
        }
    }

    /// Drop the oldest live entry; false when there is none.
    fn pop_oldest(&mut self) -> bool {
        while let Some((id, seq)) = self.order.pop_front() {
            if self.items.get(&id).is_some_and(|e| e.seq == seq) {
                return self.remove(&id);
            }
        }
        false
    }

    /// Whether the oldest live entry is older than `ttl` (stale order entries in front
    /// of it are dropped on the way).
    fn oldest_expired(&mut self, ttl: Duration, now: Instant) -> bool {
        while let Some((id, seq)) = self.order.front() {
            match self.items.get(id) {
                Some(e) if e.seq == *seq => {
                    return now.saturating_duration_since(e.stored_at) >= ttl;
                }
                _ => {
                    self.order.pop_front();
                }
            }
        }
        false
    }

    fn publish(&self) {
        gauge!(m::CONVERSATIONS_STORED, "backend" => "memory").set(self.items.len() as f64);
        gauge!(m::CONVERSATIONS_STORED_BYTES, "backend" => "memory").set(self.bytes as f64);
    }
}

impl MemoryStore {
    pub fn new(max_conversations: usize, max_total_bytes: usize, ttl: Duration) -> Self {
        Self {
            max_conversations: max_conversations.max(1),
            max_total_bytes: max_total_bytes.max(1),
            ttl,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn max_total_bytes(&self) -> usize {
        self.max_total_bytes
    }

    pub fn get(&self, id: &str) -> Option<Vec<Value>> {
        let json = {
            let inner = self.inner.lock().ok()?;
            let e = inner.items.get(id)?;
            if e.stored_at.elapsed() >= self.ttl {
                return None;
            }
            // Parsed outside the lock; the copy is the price of keeping bytes, not values.
            e.json.get().to_owned()
        };
        serde_json::from_str(&json).ok()
    }

    /// Store `json` (a JSON array of items) under `id`; the caller has checked it fits.
    pub fn put(&self, id: &str, json: Box<RawValue>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let now = Instant::now();
        inner.remove(id);
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.bytes += json.get().len();
        inner.items.insert(
            id.to_string(),
            Entry {
                json,
                stored_at: now,
                seq,
            },
        );
        inner.order.push_back((id.to_string(), seq));
        let mut expired = 0u64;
        while inner.oldest_expired(self.ttl, now) {
            expired += u64::from(inner.pop_oldest());
        }
        let (mut by_count, mut by_bytes) = (0u64, 0u64);
        while inner.items.len() > self.max_conversations {
            by_count += u64::from(inner.pop_oldest());
        }
        while inner.bytes > self.max_total_bytes && inner.items.len() > 1 {
            by_bytes += u64::from(inner.pop_oldest());
        }
        // Stale order entries (ids stored twice) are compacted once they dominate.
        if inner.order.len() > 2 * inner.items.len() + 64 {
            let Inner { items, order, .. } = &mut *inner;
            order.retain(|(id, seq)| items.get(id).is_some_and(|e| e.seq == *seq));
        }
        inner.publish();
        drop(inner);
        for (reason, n) in [
            ("expired", expired),
            ("capacity", by_count),
            ("bytes", by_bytes),
        ] {
            if n > 0 {
                counter!(m::CONVERSATIONS_EVICTED_TOTAL, "backend" => "memory", "reason" => reason)
                    .increment(n);
            }
        }
    }

    /// Drop every conversation older than the TTL; how many went.
    pub fn remove_expired(&self) -> u64 {
        let Ok(mut inner) = self.inner.lock() else {
            return 0;
        };
        let now = Instant::now();
        let mut n = 0;
        while inner.oldest_expired(self.ttl, now) {
            if !inner.pop_oldest() {
                break;
            }
            n += 1;
        }
        inner.publish();
        n
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.items.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(v: Value) -> Box<RawValue> {
        RawValue::from_string(v.to_string()).unwrap()
    }

    #[test]
    fn oldest_are_dropped_beyond_capacity() {
        let c = MemoryStore::new(2, 1 << 20, Duration::from_secs(60));
        c.put("a", raw(json!([1])));
        c.put("b", raw(json!([2])));
        c.put("c", raw(json!([3])));
        assert!(c.get("a").is_none());
        assert_eq!(c.get("c"), Some(vec![json!(3)]));
        assert_eq!(c.len(), 2);
        // Replacing an id does not count twice, and makes it the newest.
        c.put("b", raw(json!([2, 2])));
        assert_eq!(c.len(), 2);
        c.put("d", raw(json!([4])));
        assert!(
            c.get("c").is_none(),
            "c was the oldest after b was replaced"
        );
        assert_eq!(c.get("b"), Some(vec![json!(2), json!(2)]));
    }

    #[test]
    fn oldest_are_dropped_beyond_total_bytes() {
        // Each entry is 12 bytes of JSON: `["xxxxxxxx"]`.
        let c = MemoryStore::new(100, 30, Duration::from_secs(60));
        for id in ["a", "b", "c"] {
            c.put(id, raw(json!(["xxxxxxxx"])));
        }
        assert_eq!(c.len(), 2, "three would be 36 bytes");
        assert_eq!(c.bytes(), 24);
        assert!(c.get("a").is_none());
        assert!(c.get("b").is_some() && c.get("c").is_some());
        // One large entry pushes out as many old ones as needed.
        c.put("big", raw(json!(["xxxxxxxxxxxxxxxxxxxxxx"])));
        assert_eq!(c.len(), 1);
        assert_eq!(c.bytes(), 26);
    }

    #[test]
    fn expired_entries_are_neither_served_nor_kept() {
        let c = MemoryStore::new(100, 1 << 20, Duration::from_millis(30));
        c.put("a", raw(json!([1])));
        assert!(c.get("a").is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.get("a").is_none(), "expired");
        assert_eq!(c.len(), 1, "still held until removed");
        assert_eq!(c.remove_expired(), 1);
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn many_rewrites_of_one_id_do_not_grow_the_order() {
        let c = MemoryStore::new(10, 1 << 20, Duration::from_secs(60));
        for i in 0..1000 {
            c.put("same", raw(json!([i])));
        }
        assert_eq!(c.len(), 1);
        assert!(c.inner.lock().unwrap().order.len() <= 66);
        assert_eq!(c.get("same"), Some(vec![json!(999)]));
    }
}
