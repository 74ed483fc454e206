//! Latency histograms (HDR, nanoseconds, 3 significant digits) and their summary.
//!
//! Subscribers record into a [`LocalLatency`] they own and fold it into the run's
//! [`SharedLatency`] a few times a second, so the hot path takes no lock and the progress line can
//! still show the p99 so far. A `LocalLatency` buffers raw samples rather than owning a histogram:
//! a histogram of this range is 200 KB, and with 1,000 subscribers, adding and clearing one each
//! per flush made the load generator itself stall every subscriber for tens of milliseconds at
//! once (they all flush together), which showed up in every broker's fan-out latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

const LOWEST_NS: u64 = 1_000;
const HIGHEST_NS: u64 = 3_600 * 1_000_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// How often a subscriber hands its recordings to the shared histogram.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// Samples a subscriber buffers before it flushes regardless of the time (32 KiB).
const FLUSH_AT_SAMPLES: usize = 4096;

pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_DIGITS)
        .context("creating a latency histogram")
}

/// The run-wide histogram.
#[derive(Clone)]
pub struct SharedLatency(Arc<Mutex<Histogram<u64>>>);

impl SharedLatency {
    pub fn new() -> anyhow::Result<Self> {
        Ok(SharedLatency(Arc::new(Mutex::new(new_histogram()?))))
    }

    /// Records a batch of latencies, in nanoseconds, under one lock.
    pub fn record_all(&self, samples_ns: &[u64]) {
        let mut histogram = self.0.lock();
        for &sample in samples_ns {
            histogram.saturating_record(sample.max(LOWEST_NS));
        }
    }

    pub fn p99_ms(&self) -> Option<f64> {
        let histogram = self.0.lock();
        (!histogram.is_empty()).then(|| histogram.value_at_quantile(0.99) as f64 / 1e6)
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary::of(&self.0.lock())
    }
}

/// One task's recordings, flushed into the shared histogram now and then.
pub struct LocalLatency {
    pending: Vec<u64>,
    shared: SharedLatency,
    last_flush: Instant,
}

impl LocalLatency {
    pub fn new(shared: SharedLatency) -> Self {
        LocalLatency {
            pending: Vec::new(),
            shared,
            last_flush: Instant::now(),
        }
    }

    pub fn record(&mut self, latency_ns: u64) {
        self.pending.push(latency_ns);
        if self.pending.len() >= FLUSH_AT_SAMPLES || self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.shared.record_all(&self.pending);
            self.pending.clear();
        }
        self.last_flush = Instant::now();
    }
}

impl Drop for LocalLatency {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        LatencySummary {
            count: histogram.len(),
            mean_ms: histogram.mean() / 1e6,
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_an_empty_histogram_is_zero() {
        let histogram = new_histogram().unwrap();
        assert_eq!(LatencySummary::of(&histogram), LatencySummary::default());
    }

    #[test]
    fn percentiles_come_out_in_milliseconds() {
        let mut histogram = new_histogram().unwrap();
        // 1..=1000 ms, one sample each.
        for ms in 1..=1000u64 {
            histogram.record(ms * 1_000_000).unwrap();
        }
        let summary = LatencySummary::of(&histogram);
        assert_eq!(summary.count, 1000);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.002;
        assert!(close(summary.p50_ms, 500.0), "{summary:?}");
        assert!(close(summary.p99_ms, 990.0), "{summary:?}");
        assert!(close(summary.p999_ms, 999.0), "{summary:?}");
        assert!(close(summary.max_ms, 1000.0), "{summary:?}");
        assert!(close(summary.mean_ms, 500.5), "{summary:?}");
    }

    #[test]
    fn local_recordings_reach_the_shared_histogram() {
        let shared = SharedLatency::new().unwrap();
        {
            let mut local = LocalLatency::new(shared.clone());
            local.record(2_000_000);
            local.record(4_000_000);
            // Below a microsecond counts as the histogram's lowest value, not as lost.
            local.record(10);
        }
        let summary = shared.summary();
        assert_eq!(summary.count, 3);
        assert!((summary.max_ms - 4.0).abs() < 0.01, "{summary:?}");
        assert!(shared.p99_ms().is_some());
    }
}
