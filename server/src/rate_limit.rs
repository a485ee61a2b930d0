//! Calls-per-minute rate limits (Databricks endpoint `rate_limits`:
//! `{calls, key: "user" | "endpoint", renewal_period: "minute"}`). The caller picks the
//! key string (a user label from [`crate::auth`], an endpoint name, or both joined).
//!
//! Algorithm: GCRA (generic cell rate algorithm), which is exactly a **token bucket**
//! of capacity `calls` refilled at `calls` tokens per 60 s, kept as one instant per key:
//! the "theoretical arrival time" `tat` at which that key's bucket is full again.
//! With `interval = 60 s / calls` and `burst = interval * (calls - 1)`, a call at `now`
//! is allowed iff `max(tat, now) - now <= burst`, and then `tat = max(tat, now) + interval`.
//! All arithmetic is on `Instant`/`Duration` (integer nanoseconds), so answers are exact.
//!
//! Invariants:
//! - at most `calls` calls per key are allowed in any burst, and over a long run at most
//!   `calls` per minute (plus the initial burst); rejected calls are not recorded;
//! - a rejection's `retry_after` is the exact wait until the next call would be allowed
//!   (for `calls == 0`, every call is rejected with a `retry_after` of 60 s);
//! - instants that go backwards never panic and never grant extra calls;
//! - memory is bounded: once the map reaches [`PRUNE_THRESHOLD`] keys, keys whose bucket
//!   is full again (idle for at least a minute; forgetting them changes no answer) are
//!   dropped before a new key is added, and the next prune waits until the map has
//!   doubled again, so pruning costs amortised O(1) per call;
//! - `RateLimiter` is `Send + Sync`; a poisoned lock is recovered (the state is a plain
//!   map that no panic can leave inconsistent), so checks never panic.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The renewal period of a limit.
pub const PERIOD: Duration = Duration::from_secs(60);

/// Map size at which idle keys are first pruned.
pub const PRUNE_THRESHOLD: usize = 10_000;

/// A per-key calls-per-minute limiter (see the module docs).
#[derive(Debug)]
pub struct RateLimiter {
    calls_per_minute: u32,
    /// Time one call's token takes to refill: `PERIOD / calls`.
    interval: Duration,
    /// How far `tat` may run ahead of now and still allow a call: `interval * (calls - 1)`.
    burst: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Per key, the instant its bucket is full again.
    tat: HashMap<String, Instant>,
    /// Map size that triggers the next prune.
    prune_at: usize,
}

impl RateLimiter {
    /// A limiter allowing `calls_per_minute` calls per key per minute (0: none).
    pub fn new(calls_per_minute: u32) -> RateLimiter {
        let interval = PERIOD.checked_div(calls_per_minute).unwrap_or(Duration::ZERO);
        let burst = interval.saturating_mul(calls_per_minute.saturating_sub(1));
        RateLimiter {
            calls_per_minute,
            interval,
            burst,
            state: Mutex::new(State { tat: HashMap::new(), prune_at: PRUNE_THRESHOLD }),
        }
    }

    /// The configured limit.
    pub fn calls_per_minute(&self) -> u32 {
        self.calls_per_minute
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Ok(())` if the call identified by `key` is allowed at time `now` (and records it),
    /// else `Err(retry_after)`: how long until a call with this key would be allowed.
    pub fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.calls_per_minute == 0 {
            return Err(PERIOD);
        }
        let mut state = self.lock();
        let tat = match state.tat.get(key) {
            Some(&tat) => tat.max(now),
            None => now,
        };
        let ahead = tat.saturating_duration_since(now);
        if ahead > self.burst {
            return Err(ahead - self.burst);
        }
        let next = tat.checked_add(self.interval).unwrap_or(tat);
        if let Some(slot) = state.tat.get_mut(key) {
            *slot = next;
        } else {
            if state.tat.len() >= state.prune_at {
                state.tat.retain(|_, tat| *tat > now);
                state.prune_at = PRUNE_THRESHOLD.max(state.tat.len().saturating_mul(2));
            }
            state.tat.insert(key.to_string(), next);
        }
        Ok(())
    }

    /// [`RateLimiter::check_at`] at `Instant::now()`.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    #[cfg(test)]
    fn tracked_keys(&self) -> usize {
        self.lock().tat.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn burst_then_steady_refill() {
        let rl = RateLimiter::new(3); // one token per 20 s
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(rl.check_at("u", t0), Ok(()));
        }
        assert_eq!(rl.check_at("u", t0), Err(secs(20)));
        assert_eq!(rl.check_at("u", t0 + secs(19)), Err(secs(1)));
        assert_eq!(rl.check_at("u", t0 + secs(20)), Ok(()));
        assert_eq!(rl.check_at("u", t0 + secs(20)), Err(secs(20)));
        assert_eq!(rl.check_at("u", t0 + secs(40)), Ok(()));
        // After a full minute idle the bucket holds 3 again.
        for _ in 0..3 {
            assert_eq!(rl.check_at("u", t0 + secs(100)), Ok(()));
        }
        assert!(rl.check_at("u", t0 + secs(100)).is_err());
    }

    #[test]
    fn retry_after_is_exact() {
        let rl = RateLimiter::new(7);
        let t0 = Instant::now();
        let mut now = t0;
        // Repeatedly wait exactly the advertised time: each wait must then succeed.
        for _ in 0..7 {
            assert_eq!(rl.check_at("k", now), Ok(()));
        }
        for _ in 0..20 {
            let wait = rl.check_at("k", now).expect_err("bucket empty");
            assert!(wait > Duration::ZERO && wait <= PERIOD, "{wait:?}");
            if let Some(earlier) = (now + wait).checked_sub(Duration::from_nanos(1)) {
                assert!(rl.check_at("k", earlier).is_err());
            }
            now += wait;
            assert_eq!(rl.check_at("k", now), Ok(()));
        }
    }

    #[test]
    fn sixty_per_minute() {
        let rl = RateLimiter::new(60);
        let t0 = Instant::now();
        let allowed = (0..100).filter(|_| rl.check_at("e", t0).is_ok()).count();
        assert_eq!(allowed, 60);
        assert_eq!(rl.check_at("e", t0), Err(secs(1)));
        // Over the next minute, one call per second.
        let mut later = 0;
        for s in 1..=60 {
            later += (0..5).filter(|_| rl.check_at("e", t0 + secs(s)).is_ok()).count();
        }
        assert_eq!(later, 60);
    }

    #[test]
    fn long_idle_does_not_exceed_capacity() {
        let rl = RateLimiter::new(2);
        let t0 = Instant::now();
        assert_eq!(rl.check_at("u", t0), Ok(()));
        let later = t0 + secs(3600);
        assert_eq!(rl.check_at("u", later), Ok(()));
        assert_eq!(rl.check_at("u", later), Ok(()));
        assert_eq!(rl.check_at("u", later), Err(secs(30)));
    }

    #[test]
    fn rejected_calls_are_not_recorded() {
        let rl = RateLimiter::new(1);
        let t0 = Instant::now();
        assert_eq!(rl.check_at("u", t0), Ok(()));
        for s in [1, 10, 30, 59] {
            assert_eq!(rl.check_at("u", t0 + secs(s)), Err(secs(60 - s)));
        }
        assert_eq!(rl.check_at("u", t0 + secs(60)), Ok(()));
    }

    #[test]
    fn zero_rejects_everything() {
        let rl = RateLimiter::new(0);
        assert_eq!(rl.calls_per_minute(), 0);
        let t0 = Instant::now();
        for s in [0, 1, 60, 3600] {
            assert_eq!(rl.check_at("u", t0 + secs(s)), Err(PERIOD));
        }
        assert!(rl.check("u").is_err());
        assert_eq!(rl.tracked_keys(), 0);
    }

    #[test]
    fn keys_are_independent() {
        let rl = RateLimiter::new(1);
        let t0 = Instant::now();
        assert_eq!(rl.check_at("alice", t0), Ok(()));
        assert!(rl.check_at("alice", t0).is_err());
        assert_eq!(rl.check_at("bob", t0), Ok(()));
        assert_eq!(rl.check_at("", t0), Ok(()));
        assert!(rl.check_at("bob", t0 + secs(1)).is_err());
    }

    #[test]
    fn time_going_backwards_grants_nothing() {
        let rl = RateLimiter::new(2);
        let t0 = Instant::now();
        let t1 = t0 + secs(100);
        assert_eq!(rl.check_at("u", t1), Ok(()));
        assert_eq!(rl.check_at("u", t1), Ok(()));
        let wait = rl.check_at("u", t0).expect_err("no tokens left");
        assert_eq!(wait, secs(130));
        assert!(rl.check_at("u", t1 + secs(29)).is_err());
        assert_eq!(rl.check_at("u", t1 + secs(30)), Ok(()));
    }

    #[test]
    fn prunes_only_full_buckets() {
        let rl = RateLimiter::new(1);
        let t0 = Instant::now();
        for i in 0..PRUNE_THRESHOLD - 1 {
            assert_eq!(rl.check_at(&format!("k{i}"), t0), Ok(()));
        }
        // "hot" is still limited when the prune happens.
        assert_eq!(rl.check_at("hot", t0 + secs(50)), Ok(()));
        assert_eq!(rl.tracked_keys(), PRUNE_THRESHOLD);
        // A new key after the k-buckets refilled triggers the prune.
        assert_eq!(rl.check_at("new", t0 + secs(61)), Ok(()));
        assert_eq!(rl.tracked_keys(), 2);
        assert_eq!(rl.check_at("hot", t0 + secs(61)), Err(secs(49)));
        assert_eq!(rl.check_at("new", t0 + secs(61)), Err(secs(60)));
        // A pruned key behaves as a fresh one.
        assert_eq!(rl.check_at("k0", t0 + secs(61)), Ok(()));
    }

    #[test]
    fn map_stays_bounded_under_many_keys() {
        let rl = RateLimiter::new(5);
        let t0 = Instant::now();
        // 50_000 distinct keys, 1_000 per minute of synthetic time.
        for i in 0..50_000u64 {
            let now = t0 + Duration::from_millis(i * 60);
            assert_eq!(rl.check_at(&format!("k{i}"), now), Ok(()));
        }
        assert!(rl.tracked_keys() <= PRUNE_THRESHOLD, "{}", rl.tracked_keys());
    }

    #[test]
    fn concurrent_callers_share_one_budget() {
        let rl = Arc::new(RateLimiter::new(50));
        let t0 = Instant::now();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let rl = Arc::clone(&rl);
                std::thread::spawn(move || (0..100).filter(|_| rl.check_at("e", t0).is_ok()).count())
            })
            .collect();
        let allowed: usize = handles.into_iter().map(|h| h.join().expect("thread ran")).sum();
        assert_eq!(allowed, 50);
    }

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RateLimiter>();
    }
}
