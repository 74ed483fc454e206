//! The operator's own Prometheus metrics. Labels are bounded: the controller's name, a result, and
//! an error kind, never an object's name.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    auth_pushes: IntCounterVec,
    drains: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "tern_operator_reconcile_total",
                "Reconciles run, by controller and result (ok or error).",
            ),
            &["controller", "result"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let errors = IntCounterVec::new(
            Opts::new(
                "tern_operator_reconcile_errors_total",
                "Failed reconciles, by controller and error kind.",
            ),
            &["controller", "error"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "tern_operator_reconcile_duration_seconds",
                "Time one reconcile took, by controller.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["controller"],
        )
        .unwrap_or_else(|_| unreachable_histogram());
        let auth_pushes = IntCounterVec::new(
            Opts::new(
                "tern_operator_auth_pushes_total",
                "Users and ACL pushed to a broker through its admin API, by result.",
            ),
            &["result"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let drains = IntCounterVec::new(
            Opts::new(
                "tern_operator_drains_total",
                "Broker pods drained before a scale-down, by outcome (drained or timeout).",
            ),
            &["outcome"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        for collector in [&reconciles, &errors, &auth_pushes, &drains] {
            let _ = registry.register(Box::new(collector.clone()));
        }
        let _ = registry.register(Box::new(duration.clone()));
        Self {
            registry,
            reconciles,
            errors,
            duration,
            auth_pushes,
            drains,
        }
    }

    pub fn reconciled(&self, controller: &str, took: Duration, error: Option<&'static str>) {
        let result = if error.is_some() { "error" } else { "ok" };
        self.reconciles
            .with_label_values(&[controller, result])
            .inc();
        if let Some(kind) = error {
            self.errors.with_label_values(&[controller, kind]).inc();
        }
        self.duration
            .with_label_values(&[controller])
            .observe(took.as_secs_f64());
    }

    pub fn auth_pushed(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.auth_pushes.with_label_values(&[result]).inc();
    }

    pub fn drained(&self, timed_out: bool) {
        let outcome = if timed_out { "timeout" } else { "drained" };
        self.drains.with_label_values(&[outcome]).inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = String::new();
        let encoder = prometheus::TextEncoder::new();
        let _ = encoder.encode_utf8(&self.registry.gather(), &mut buffer);
        buffer
    }
}

/// The metric definitions above are constants; prometheus only refuses malformed names, which a
/// unit test proves they are not. Falling back to an unregistered dummy keeps the operator up.
fn unreachable_metric() -> IntCounterVec {
    IntCounterVec::new(Opts::new("tern_operator_invalid", "invalid"), &["x"])
        .unwrap_or_else(|_| unreachable_metric())
}

fn unreachable_histogram() -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new("tern_operator_invalid_h", "invalid"),
        &["x"],
    )
    .unwrap_or_else(|_| unreachable_histogram())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_and_renders() {
        let metrics = Metrics::new();
        metrics.reconciled("cluster", Duration::from_millis(3), None);
        metrics.reconciled(
            "user",
            Duration::from_millis(3),
            Some("apply_credentials_secret"),
        );
        metrics.auth_pushed(true);
        metrics.drained(false);
        let text = metrics.render();
        for name in [
            "tern_operator_reconcile_total{controller=\"cluster\",result=\"ok\"} 1",
            "tern_operator_reconcile_errors_total{controller=\"user\",error=\"apply_credentials_secret\"} 1",
            "tern_operator_reconcile_duration_seconds_bucket",
            "tern_operator_auth_pushes_total{result=\"ok\"} 1",
            "tern_operator_drains_total{outcome=\"drained\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        assert!(!text.contains("tern_operator_invalid"));
    }
}
