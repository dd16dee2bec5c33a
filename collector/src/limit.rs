//! A token bucket per write key: each event takes a token; tokens come back at a fixed rate up to
//! the bucket's size. Buckets exist only for keys that authenticated, so their number is bounded
//! by the number of keys.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Per-key token buckets.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .finish()
    }
}

impl RateLimiter {
    /// `rate` events per second, `burst` at once.
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimiter {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `events` tokens from `key`'s bucket, or says how long to wait until there are enough.
    /// A request larger than the bucket waits for a full bucket and then takes all of it.
    pub fn take(&self, key: &str, events: usize, now: Instant) -> Result<(), Duration> {
        let want = (events as f64).min(self.burst);
        // A poisoned lock only means another request panicked mid-update; the buckets are usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= want {
            bucket.tokens -= want;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((want - bucket.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_run_out_and_come_back() {
        let limiter = RateLimiter::new(10.0, 20.0);
        let t0 = Instant::now();
        assert!(limiter.take("a", 15, t0).is_ok());
        let wait = limiter.take("a", 10, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another key has its own bucket.
        assert!(limiter.take("b", 20, t0).is_ok());
        // Half a second later, 5 more tokens: 10 are there.
        assert!(
            limiter
                .take("a", 10, t0 + Duration::from_millis(500))
                .is_ok()
        );
        // A request bigger than the bucket takes the whole bucket when it is full.
        assert!(
            limiter
                .take("a", 1000, t0 + Duration::from_millis(500))
                .is_err()
        );
        assert!(
            limiter
                .take("a", 1000, t0 + Duration::from_secs(10))
                .is_ok()
        );
    }
}
