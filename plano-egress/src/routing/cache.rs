//! A small in-process map whose entries expire after a TTL and whose size is bounded.
//!
//! Used for routing decisions (conversation → route) and session affinity (conversation →
//! provider). When full, expired entries go first, then the oldest insertion: a burst of
//! new conversations can never grow memory past `max_entries`.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

struct Entry<V> {
    value: V,
    expires: Instant,
    seq: u64,
}

struct Inner<K, V> {
    map: HashMap<K, Entry<V>>,
    /// Insertion order (sequence number → key), for evicting the oldest.
    order: BTreeMap<u64, K>,
    next_seq: u64,
}

pub struct TtlCache<K, V> {
    ttl: Duration,
    max_entries: usize,
    inner: Mutex<Inner<K, V>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            ttl,
            max_entries: max_entries.max(1),
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: BTreeMap::new(),
                next_seq: 0,
            }),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The live value under `key`; an expired one is removed and reads as absent.
    pub fn get(&self, key: &K) -> Option<V> {
        let mut inner = self.inner.lock().ok()?;
        let now = Instant::now();
        let expired = match inner.map.get(key) {
            None => return None,
            Some(e) if e.expires > now => return Some(e.value.clone()),
            Some(e) => e.seq,
        };
        inner.map.remove(key);
        inner.order.remove(&expired);
        None
    }

    /// Insert or replace; the entry lives for the TTL from now (so re-inserting on every use
    /// makes the TTL sliding).
    pub fn insert(&self, key: K, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let now = Instant::now();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        if let Some(old) = inner.map.remove(&key) {
            inner.order.remove(&old.seq);
        }
        if inner.map.len() >= self.max_entries {
            inner.evict(now, self.max_entries);
        }
        inner.order.insert(seq, key.clone());
        inner.map.insert(
            key,
            Entry {
                value,
                expires: now + self.ttl,
                seq,
            },
        );
    }

    pub fn remove(&self, key: &K) {
        if let Ok(mut inner) = self.inner.lock()
            && let Some(old) = inner.map.remove(key)
        {
            inner.order.remove(&old.seq);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Eq + Hash + Clone, V> Inner<K, V> {
    /// Make room for one more entry.
    fn evict(&mut self, now: Instant, max: usize) {
        let expired: Vec<(u64, K)> = self
            .map
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(k, e)| (e.seq, k.clone()))
            .collect();
        for (seq, k) in expired {
            self.map.remove(&k);
            self.order.remove(&seq);
        }
        while self.map.len() >= max {
            let Some((_, k)) = self.order.pop_first() else {
                break;
            };
            self.map.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_the_ttl() {
        let c = TtlCache::new(Duration::from_secs(10), 100);
        c.insert("a", 1);
        assert_eq!(c.get(&"a"), Some(1));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(c.get(&"a"), Some(1));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(c.get(&"a"), None);
        assert!(c.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn reinserting_slides_the_ttl() {
        let c = TtlCache::new(Duration::from_secs(10), 100);
        c.insert("a", 1);
        tokio::time::advance(Duration::from_secs(8)).await;
        c.insert("a", 2);
        tokio::time::advance(Duration::from_secs(8)).await;
        assert_eq!(c.get(&"a"), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_entry_goes_when_full() {
        let c = TtlCache::new(Duration::from_secs(60), 2);
        c.insert("a", 1);
        c.insert("b", 2);
        c.insert("a", 3); // refreshed: now newer than b
        c.insert("c", 4);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&"b"), None);
        assert_eq!(c.get(&"a"), Some(3));
        assert_eq!(c.get(&"c"), Some(4));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_go_before_live_ones() {
        let c = TtlCache::new(Duration::from_secs(10), 2);
        c.insert("old", 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        c.insert("live", 2);
        tokio::time::advance(Duration::from_secs(6)).await; // "old" expired
        c.insert("new", 3);
        assert_eq!(c.get(&"live"), Some(2));
        assert_eq!(c.get(&"new"), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_ttl_caches_nothing() {
        let c = TtlCache::new(Duration::ZERO, 10);
        c.insert("a", 1);
        assert_eq!(c.get(&"a"), None);
    }

    #[tokio::test]
    async fn many_inserts_stay_bounded() {
        let c = TtlCache::new(Duration::from_secs(60), 50);
        for i in 0..1000 {
            c.insert(i, i);
        }
        assert_eq!(c.len(), 50);
        assert_eq!(c.get(&999), Some(999));
        assert_eq!(c.get(&0), None);
    }
}
