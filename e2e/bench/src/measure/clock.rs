//! A monotonic nanosecond clock that every task of one process shares, so that a send time written
//! into a payload by a publisher can be subtracted from the arrival time seen by a subscriber.

use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            origin: Instant::now(),
        }
    }

    /// Nanoseconds since the clock was made.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The clock reading `secs` seconds after its origin.
    pub fn ns_at(&self, secs: f64) -> u64 {
        (secs.max(0.0) * 1e9) as u64
    }
}
