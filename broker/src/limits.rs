//! Counting limits: a token bucket for rates (the connection rate broker-wide, the publish rate per
//! connection) and [`Slots`] for how many of something may be held at once (connections, broker-wide
//! and per listener).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// At most `max` held at once (no limit without one); taken and given back without a lock.
#[derive(Debug, Default)]
pub struct Slots {
    max: Option<usize>,
    taken: AtomicUsize,
}

impl Slots {
    pub fn new(max: Option<usize>) -> Self {
        Self {
            max,
            taken: AtomicUsize::new(0),
        }
    }

    /// Takes a slot; false, taking nothing, when all are taken.
    pub fn try_take(&self) -> bool {
        let before = self.taken.fetch_add(1, Ordering::AcqRel);
        if self.max.is_some_and(|max| before >= max) {
            self.taken.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Gives back a slot taken with [`Self::try_take`].
    pub fn give_back(&self) {
        self.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Allows `rate` events per second on average, with bursts of up to `rate` events.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn per_second(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes one token, possibly going into debt, and says how long to wait until the debt is paid.
    pub fn take_or_wait(&mut self, now: Instant) -> Option<Duration> {
        self.refill(now);
        self.tokens -= 1.0;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_up_to_the_rate_passes_then_the_bucket_refills_over_time() {
        let start = Instant::now();
        let mut bucket = TokenBucket::per_second(3);
        assert!((0..3).all(|_| bucket.try_take(start)));
        assert!(!bucket.try_take(start));
        assert!(bucket.try_take(start + Duration::from_millis(400)));
    }

    #[test]
    fn debt_is_paid_at_the_configured_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::per_second(10);
        for _ in 0..10 {
            assert_eq!(bucket.take_or_wait(start), None);
        }
        let wait = bucket.take_or_wait(start).expect("must wait");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
    }

    #[test]
    fn slots_refuse_past_the_maximum_and_take_nothing_when_they_do() {
        let slots = Slots::new(Some(2));
        assert!(slots.try_take() && slots.try_take());
        assert!(!slots.try_take());
        slots.give_back();
        assert!(slots.try_take(), "a refused take left no slot behind");
        let unlimited = Slots::new(None);
        assert!((0..1000).all(|_| unlimited.try_take()));
    }
}
