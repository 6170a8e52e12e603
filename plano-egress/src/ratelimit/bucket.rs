//! Token-bucket arithmetic shared by the memory backend and (mirrored in Lua) by Redis.
//!
//! A rule "N per unit" is a bucket of capacity N refilled continuously at N per unit. A new
//! bucket starts full. Time is in microseconds so per-second limits stay precise. The level
//! may go negative: when a reconciled request used more than its estimate, the excess is
//! debt that the refill pays back before anything else is admitted.

/// Capacity and refill period of one rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub capacity: f64,
    pub period_us: f64,
}

impl Limit {
    pub fn new(amount: u64, period: std::time::Duration) -> Self {
        Self {
            capacity: amount as f64,
            // A zero-length period would divide by zero; config units are ≥ 1s anyway.
            period_us: (period.as_micros() as f64).max(1.0),
        }
    }

    /// Level after refilling from `bucket` up to `now_us`; a missing bucket is full.
    pub fn level(&self, bucket: Option<Bucket>, now_us: u64) -> f64 {
        match bucket {
            None => self.capacity,
            Some(b) => {
                let elapsed = now_us.saturating_sub(b.at_us) as f64;
                (b.level + elapsed * self.capacity / self.period_us).min(self.capacity)
            }
        }
    }

    /// Microseconds until the level reaches `cost` (0 when it already does).
    pub fn wait_us(&self, level: f64, cost: f64) -> f64 {
        if level >= cost || self.capacity <= 0.0 {
            0.0
        } else {
            (cost - level) * self.period_us / self.capacity
        }
    }

    /// Microseconds until the bucket is full again: OpenAI's `x-ratelimit-reset-*` meaning.
    pub fn reset_us(&self, level: f64) -> f64 {
        self.wait_us(level, self.capacity)
    }
}

/// Stored state of one bucket: its level at `at_us`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub level: f64,
    pub at_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIN: u64 = 60_000_000;

    #[test]
    fn new_bucket_is_full_and_refills_linearly() {
        let l = Limit::new(60, Duration::from_secs(60));
        assert_eq!(l.level(None, 5), 60.0);
        let empty = Some(Bucket {
            level: 0.0,
            at_us: 0,
        });
        assert_eq!(l.level(empty, MIN / 2), 30.0);
        assert_eq!(l.level(empty, MIN), 60.0);
        // Never above capacity, however long idle.
        assert_eq!(l.level(empty, 10 * MIN), 60.0);
    }

    #[test]
    fn debt_is_paid_back_before_admission() {
        let l = Limit::new(60, Duration::from_secs(60));
        let debt = Some(Bucket {
            level: -30.0,
            at_us: 0,
        });
        assert_eq!(l.level(debt, MIN / 2), 0.0);
        assert_eq!(l.wait_us(-30.0, 1.0), 31.0 * 1_000_000.0);
        assert_eq!(l.reset_us(-30.0), 90.0 * 1_000_000.0);
    }

    #[test]
    fn clock_going_backwards_does_not_drain() {
        let l = Limit::new(10, Duration::from_secs(1));
        let b = Some(Bucket {
            level: 4.0,
            at_us: 1_000,
        });
        assert_eq!(l.level(b, 0), 4.0);
    }
}
