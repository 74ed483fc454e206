//! The human summary a run prints to stdout.

use std::fmt::Write;

use super::format::{mib, ms, rate, thousands};
use super::result::{ConnectStats, RunResult, Spread};

pub fn render(result: &RunResult) -> String {
    let mut out = Lines::default();
    out.line("scenario", case(result));
    let version = result
        .broker
        .version
        .as_deref()
        .map(|v| format!(" {v}"))
        .unwrap_or_default();
    out.line("broker", format!("{}{version}", result.broker.label));
    messages(&mut out, result);
    if let Some(c) = &result.connect {
        connections(&mut out, c);
    }
    if let Some(s) = &result.stresser {
        let spread = |x: &Spread| {
            format!(
                "fastest {}  median {}  slowest {} msg/s",
                rate(x.fastest),
                rate(x.median),
                rate(x.slowest)
            )
        };
        out.line(
            "tool",
            format!(
                "{} ({} of {} clients completed)",
                s.tool, s.completed, s.clients
            ),
        );
        out.line("publish", spread(&s.publish));
        out.line("receive", spread(&s.receive));
    }
    if let Some(u) = &result.broker_usage {
        out.line(
            "broker",
            format!(
                "CPU {:.2} s ({:.2} cores)  RSS {} MiB → {} MiB  peak {} MiB",
                u.cpu_s,
                u.cpu_cores,
                mib(u.rss_start_kib),
                mib(u.rss_end_kib),
                mib(u.rss_peak_kib)
            ),
        );
    }
    out.line("load gen", format!("CPU {:.2} s", result.bench_cpu_s));
    for error in &result.errors {
        out.line("error", error.clone());
    }
    out.0
}

/// Aligned `key value` lines.
#[derive(Default)]
struct Lines(String);

impl Lines {
    fn line(&mut self, key: &str, value: String) {
        let _ = writeln!(self.0, "{key:<12} {value}");
    }
}

/// The scenario and its parameters in one line.
fn case(result: &RunResult) -> String {
    let p = &result.params;
    let mut case = result.scenario.clone();
    if p.publishers + p.subscribers > 0 {
        let _ = write!(
            case,
            ": {} publishers, {} subscribers",
            p.publishers, p.subscribers
        );
    }
    if let Some(qos) = p.qos {
        let _ = write!(case, ", QoS {qos}");
    }
    if let Some(payload) = p.payload {
        let _ = write!(case, ", {payload} B");
    }
    if let Some(r) = p.rate {
        let load = if r > 0.0 {
            format!("{} msg/s per publisher", rate(r))
        } else {
            "max rate".into()
        };
        let _ = write!(case, ", {load}");
    }
    case
}

/// Throughput, latency and delivery accounting.
fn messages(out: &mut Lines, result: &RunResult) {
    if let Some(t) = &result.throughput {
        let count = |per_s: f64, n: u64| {
            format!(
                "{} msg/s ({} in {:.2} s)",
                rate(per_s),
                thousands(n),
                t.window_s
            )
        };
        out.line("published", count(t.published_per_s, t.published));
        out.line("delivered", count(t.delivered_per_s, t.delivered));
    }
    if let Some(l) = &result.latency {
        let (p50, p99, p999, max) = (ms(l.p50_ms), ms(l.p99_ms), ms(l.p999_ms), ms(l.max_ms));
        let samples = thousands(l.count);
        out.line(
            "latency",
            format!(
                "p50 {p50} ms  p99 {p99} ms  p99.9 {p999} ms  max {max} ms  ({samples} samples)"
            ),
        );
    }
    if let Some(d) = &result.delivery {
        let [expected, received, lost, duplicates, unexpected] =
            [d.expected, d.received, d.lost, d.duplicates, d.unexpected].map(thousands);
        out.line(
            "delivery",
            format!(
                "expected {expected}  received {received}  lost {lost}  duplicates {duplicates}  unexpected {unexpected}"
            ),
        );
    }
}

fn connections(out: &mut Lines, c: &ConnectStats) {
    out.line(
        "connect",
        format!(
            "{} of {} in {:.2} s ({}/s), p50 {} ms  p99 {} ms",
            thousands(c.connected),
            thousands(c.requested),
            c.elapsed_s,
            rate(c.per_s),
            ms(c.latency.p50_ms),
            ms(c.latency.p99_ms)
        ),
    );
    if let Some(bytes) = c.bytes_per_connection {
        out.line(
            "memory",
            format!("{} bytes of broker RSS per connection", rate(bytes)),
        );
    }
    if let Some(open) = c.still_open {
        out.line(
            "held",
            format!("{} still open after the hold", thousands(open)),
        );
    }
    if let Some(error) = &c.first_error {
        out.line("first error", error.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::latency::LatencySummary;
    use crate::measure::sequence::DeliveryCount;
    use crate::report::result::{Params, Throughput};

    #[test]
    fn summary_names_the_case_and_the_figures() {
        let mut result = crate::report::result::fixture("fanout", "tern");
        result.params = Params {
            qos: Some(1),
            payload: Some(64),
            rate: Some(0.0),
            publishers: 1,
            subscribers: 1000,
            ..Params::default()
        };
        result.throughput = Some(Throughput {
            window_s: 10.0,
            published: 1000,
            delivered: 1_000_000,
            published_per_s: 100.0,
            delivered_per_s: 100_000.0,
        });
        result.latency = Some(LatencySummary {
            count: 5,
            p50_ms: 1.5,
            p99_ms: 12.34,
            ..LatencySummary::default()
        });
        result.delivery = Some(DeliveryCount {
            expected: 10,
            received: 9,
            lost: 1,
            ..DeliveryCount::default()
        });
        let text = render(&result);
        assert!(
            text.contains("fanout: 1 publishers, 1000 subscribers, QoS 1, 64 B, max rate"),
            "{text}"
        );
        assert!(
            text.contains("delivered    100,000 msg/s (1,000,000 in 10.00 s)"),
            "{text}"
        );
        assert!(text.contains("p50 1.500 ms  p99 12.3 ms"), "{text}");
        assert!(text.contains("lost 1"), "{text}");
    }
}
