//! Shared buckets in Redis: a limit holds across every replica pointing at the same server.
//!
//! One Lua script (`charge.lua`) checks and charges all buckets of a request in a single
//! round trip, atomically: a request denied by one rule consumes nothing from the others,
//! and concurrent replicas cannot both take the last unit. Connections go through one
//! multiplexed, auto-reconnecting `ConnectionManager`, created lazily so a replica starts
//! even while Redis is down. Every call is bounded by `timeout`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

/// After a failure, calls skip Redis for this long and apply the fail policy at once, so a
/// dead server costs each request nothing rather than one full timeout.
const BACKOFF: Duration = Duration::from_millis(500);

pub struct RedisBackend {
    conn: ConnectionManager,
    script: Script,
    timeout: Duration,
    started: Instant,
    /// Milliseconds since `started` before which Redis is not tried again.
    skip_until_ms: AtomicU64,
}

/// One bucket to charge: its key and `cost`, `capacity`, `period_us`.
pub struct Charge<'a> {
    pub key: &'a str,
    pub cost: f64,
    pub capacity: f64,
    pub period_us: f64,
}

/// The script's answer.
#[derive(Debug)]
pub struct Outcome {
    pub admitted: bool,
    /// Index into the charges of the bucket that denied.
    pub denied_by: Option<usize>,
    pub wait_us: f64,
    /// Per charge: level after the call and µs until full.
    pub states: Vec<(f64, f64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis is in back-off after a recent failure")]
    BackingOff,
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from the rate-limit script")]
    BadReply,
}

impl RedisBackend {
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = Client::open(url)
            .map_err(|e| anyhow::anyhow!("ratelimit_storage.url is not a valid Redis URL: {e}"))?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Reconnection happens in the background; requests never wait on retries.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, cfg)?;
        Ok(Self {
            conn,
            script: Script::new(include_str!("charge.lua")),
            timeout,
            started: Instant::now(),
            skip_until_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Check (or with `force`, just apply) the charges in one atomic script call.
    pub async fn run(&self, charges: &[Charge<'_>], force: bool) -> Result<Outcome, RedisError> {
        if self.now_ms() < self.skip_until_ms.load(Ordering::Relaxed) {
            return Err(RedisError::BackingOff);
        }
        let result = tokio::time::timeout(self.timeout, self.invoke(charges, force)).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(RedisError::Timeout(self.timeout)),
        };
        if result.is_err() {
            self.skip_until_ms.store(
                self.now_ms() + BACKOFF.as_millis() as u64,
                Ordering::Relaxed,
            );
        }
        result
    }

    async fn invoke(&self, charges: &[Charge<'_>], force: bool) -> Result<Outcome, RedisError> {
        let mut inv = self.script.prepare_invoke();
        inv.arg(if force { "1" } else { "0" });
        for c in charges {
            inv.key(c.key).arg(c.cost).arg(c.capacity).arg(c.period_us);
        }
        let mut conn = self.conn.clone();
        // EVALSHA, falling back to EVAL once after a server restart flushed the script cache.
        let reply: Vec<i64> = inv.invoke_async(&mut conn).await?;
        parse(&reply, charges.len())
    }
}

fn parse(reply: &[i64], n: usize) -> Result<Outcome, RedisError> {
    if reply.len() != 3 + 2 * n {
        return Err(RedisError::BadReply);
    }
    let admitted = reply[0] == 1;
    let denied_by = usize::try_from(reply[1])
        .ok()
        .and_then(|i| i.checked_sub(1));
    let states = reply[3..]
        .chunks_exact(2)
        .map(|c| (c[0] as f64, c[1] as f64))
        .collect();
    Ok(Outcome {
        admitted,
        denied_by: if admitted { None } else { denied_by },
        wait_us: reply[2] as f64,
        states,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_script_reply() {
        let o = parse(&[0, 2, 1500, 3, 10, -1, 20], 2).unwrap();
        assert!(!o.admitted);
        assert_eq!(o.denied_by, Some(1));
        assert_eq!(o.wait_us, 1500.0);
        assert_eq!(o.states, vec![(3.0, 10.0), (-1.0, 20.0)]);
        assert!(parse(&[1, 0, 0], 1).is_err());
    }
}
