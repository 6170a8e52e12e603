//! In-process buckets: the embedded default for a single replica.
//!
//! Each rule owns a small array of mutex-guarded shards keyed by selector value, so distinct
//! clients rarely contend. A check locks one shard per matching rule, always in the order of
//! the rules' stable ids, so two requests can never wait on each other in a cycle (even when
//! one runs on the rules before a reload and the other after). Locks are std mutexes held
//! for a few hundred nanoseconds and never across an `.await`.
//!
//! A bucket that has refilled to full is indistinguishable from one never created, so each
//! shard drops such buckets in a sweep at most once per `min(unit, 60s)`: memory follows the
//! number of clients active within one unit, not every value ever seen under `"*"`.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use super::bucket::{Bucket, Limit};

const SHARDS: usize = 16;
const MAX_SWEEP_INTERVAL_US: u64 = 60_000_000;

#[derive(Default)]
struct Shard {
    buckets: HashMap<String, Bucket>,
    last_sweep_us: u64,
}

/// The buckets of one rule.
pub struct RuleBuckets {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    sweep_every_us: u64,
}

impl RuleBuckets {
    pub fn new(limit: &Limit) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            sweep_every_us: (limit.period_us as u64).clamp(1_000_000, MAX_SWEEP_INTERVAL_US),
        }
    }

    pub fn lock(&self, key: &str) -> ShardGuard<'_> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        // A panic while holding the lock cannot leave a bucket half-written (plain copies),
        // so a poisoned shard is still consistent.
        let guard = self.shards[i].lock().unwrap_or_else(|e| e.into_inner());
        ShardGuard {
            guard,
            sweep_every_us: self.sweep_every_us,
        }
    }

    /// Buckets currently held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).buckets.len())
            .sum()
    }
}

pub struct ShardGuard<'a> {
    guard: MutexGuard<'a, Shard>,
    sweep_every_us: u64,
}

impl ShardGuard<'_> {
    pub fn get(&self, key: &str) -> Option<Bucket> {
        self.guard.buckets.get(key).copied()
    }

    pub fn set(&mut self, key: &str, level: f64, now_us: u64, limit: &Limit) {
        if level >= limit.capacity {
            self.guard.buckets.remove(key);
        } else if let Some(b) = self.guard.buckets.get_mut(key) {
            *b = Bucket {
                level,
                at_us: now_us,
            };
        } else {
            self.guard.buckets.insert(
                key.to_owned(),
                Bucket {
                    level,
                    at_us: now_us,
                },
            );
        }
        self.maybe_sweep(now_us, limit);
    }

    fn maybe_sweep(&mut self, now_us: u64, limit: &Limit) {
        let shard = &mut *self.guard;
        if now_us.saturating_sub(shard.last_sweep_us) < self.sweep_every_us {
            return;
        }
        shard.last_sweep_us = now_us;
        shard
            .buckets
            .retain(|_, b| limit.level(Some(*b), now_us) < limit.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn full_buckets_are_evicted() {
        let limit = Limit::new(10, Duration::from_secs(1));
        let rb = RuleBuckets::new(&limit);
        for i in 0..1000 {
            let key = format!("user-{i}");
            rb.lock(&key).set(&key, 5.0, 0, &limit);
        }
        assert_eq!(rb.len(), 1000);
        // One unit later every bucket has refilled; each shard's next write sweeps it.
        let later = 2_000_000;
        for i in 0..SHARDS * 64 {
            let key = format!("late-{i}");
            rb.lock(&key).set(&key, 5.0, later, &limit);
        }
        assert_eq!(rb.len(), SHARDS * 64);
    }

    #[test]
    fn setting_a_full_level_removes_the_bucket() {
        let limit = Limit::new(10, Duration::from_secs(1));
        let rb = RuleBuckets::new(&limit);
        rb.lock("a").set("a", 3.0, 0, &limit);
        assert_eq!(rb.len(), 1);
        rb.lock("a").set("a", 10.0, 1, &limit);
        assert_eq!(rb.len(), 0);
    }
}
