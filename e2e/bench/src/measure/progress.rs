//! Run-wide counters and the progress line printed to stderr once a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::latency::SharedLatency;
use crate::report::format::thousands;

/// Counters every client task bumps; relaxed atomics, read once a second.
#[derive(Debug, Default)]
pub struct Counters {
    /// PUBLISH packets written by publishers.
    pub sent: AtomicU64,
    /// PUBLISH packets received by subscribers (duplicates included).
    pub delivered: AtomicU64,
    /// Client connections that failed after the setup.
    pub errors: AtomicU64,
}

impl Counters {
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// Where a run is, for the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Warmup = 0,
    Measuring = 1,
    Draining = 2,
}

#[derive(Debug, Default)]
pub struct PhaseCell(AtomicU8);

impl PhaseCell {
    pub fn set(&self, phase: Phase) {
        self.0.store(phase as u8, Ordering::Relaxed);
    }

    fn label(&self) -> &'static str {
        match self.0.load(Ordering::Relaxed) {
            0 => "warm-up",
            1 => "measuring",
            _ => "draining",
        }
    }
}

/// Prints one line a second until the returned task is aborted.
pub fn spawn(
    counters: Arc<Counters>,
    latency: SharedLatency,
    phase: Arc<PhaseCell>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.tick().await;
        let (mut last_sent, mut last_delivered, mut last_at) = (0, 0, Instant::now());
        loop {
            ticker.tick().await;
            let (sent, delivered, now) = (counters.sent(), counters.delivered(), Instant::now());
            let secs = now.duration_since(last_at).as_secs_f64().max(1e-3);
            let p99 = latency
                .p99_ms()
                .map_or_else(|| "-".into(), |ms| format!("{ms:.3} ms"));
            eprintln!(
                "[{:>4}s] {:<9} published {:>10}/s  delivered {:>10}/s  p99 {p99}  errors {}",
                start.elapsed().as_secs(),
                phase.label(),
                thousands(((sent - last_sent) as f64 / secs) as u64),
                thousands(((delivered - last_delivered) as f64 / secs) as u64),
                counters.errors(),
            );
            (last_sent, last_delivered, last_at) = (sent, delivered, now);
        }
    })
}
