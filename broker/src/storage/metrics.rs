//! The store's metrics, registered with the broker's others so one scrape of `/metrics` shows
//! them: commits (each one fsync), writes, failures, the store's size, commit latency, how long
//! the last start took to read the store back, and damaged values found.

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

use crate::stats::Stats;

/// Upper bounds of the commit-duration histogram, in seconds.
const COMMIT_BUCKETS: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 2.0,
];

#[derive(Debug)]
pub struct StorageMetrics {
    /// Durable commits: one fsync each.
    pub commits: IntCounter,
    /// Table writes committed.
    pub writes: IntCounter,
    /// Commits that failed (and were retried).
    pub failures: IntCounter,
    /// 1 while the last commit failed and its changes wait to be retried.
    pub failing: IntGauge,
    /// The store's size on disk, after the last commit.
    pub size: IntGauge,
    /// How long each durable commit took, fsync included.
    pub commit_seconds: Histogram,
    /// How long reading the store back took at start.
    pub recovery_seconds: Gauge,
    /// Values found damaged (and dropped) at start.
    pub damaged: IntCounter,
}

impl StorageMetrics {
    pub fn register(stats: &Stats) -> Self {
        let metrics = Self::new();
        let registry: &Registry = stats.registry();
        let _ = registry.register(Box::new(metrics.commits.clone()));
        let _ = registry.register(Box::new(metrics.writes.clone()));
        let _ = registry.register(Box::new(metrics.failures.clone()));
        let _ = registry.register(Box::new(metrics.failing.clone()));
        let _ = registry.register(Box::new(metrics.size.clone()));
        let _ = registry.register(Box::new(metrics.commit_seconds.clone()));
        let _ = registry.register(Box::new(metrics.recovery_seconds.clone()));
        let _ = registry.register(Box::new(metrics.damaged.clone()));
        metrics
    }

    fn new() -> Self {
        let counter = |name: &str, help: &str| {
            IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric())
        };
        let gauge = |name: &str, help: &str| {
            IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric())
        };
        Self {
            commits: counter(
                "tern_storage_commits_total",
                "Durable commits of the store, each one fsync.",
            ),
            writes: counter(
                "tern_storage_writes_total",
                "Table writes committed to the store.",
            ),
            failures: counter(
                "tern_storage_commit_failures_total",
                "Store commits that failed and were retried (a full disk).",
            ),
            failing: gauge(
                "tern_storage_failing",
                "1 while store commits fail: acknowledgements that wait for the disk are held.",
            ),
            size: gauge("tern_storage_bytes", "The store's size on disk."),
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "tern_storage_commit_seconds",
                    "How long each durable commit of the store took, fsync included.",
                )
                .buckets(COMMIT_BUCKETS.to_vec()),
            )
            .unwrap_or_else(|_| unreachable_metric()),
            recovery_seconds: Gauge::new(
                "tern_storage_recovery_seconds",
                "How long reading the store back took when the broker started.",
            )
            .unwrap_or_else(|_| unreachable_metric()),
            damaged: counter(
                "tern_storage_damaged_values_total",
                "Stored values that failed their checksum (or referred to one that did) at start, and were dropped.",
            ),
        }
    }
}

/// The definitions above are constants the prometheus crate accepts.
#[cold]
fn unreachable_metric<T>() -> T {
    panic!("invalid built-in metric definition")
}
