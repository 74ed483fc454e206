//! The page's summary: in how many cases of each scenario the first broker (Tern) is ahead of every
//! other broker measured, measure by measure, and every case where another broker is ahead, so the
//! page says where Tern stands without anyone reading 250 rows.

use std::fmt::Write;

use super::format::{ms, rate, thousands};
use super::markdown::{SCENARIOS, cases};
use super::result::RunResult;

/// Which way a measure improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

/// One thing to compare brokers by.
struct Measure {
    name: &'static str,
    better: Better,
    /// The run's figure, or `None` when the run has none (no latency sample, a fixed-rate case for
    /// a throughput measure).
    value: fn(&RunResult) -> Option<f64>,
    format: fn(f64) -> String,
}

fn is_max_rate(run: &RunResult) -> bool {
    run.params.rate.unwrap_or(0.0) <= 0.0
}

fn p99(run: &RunResult) -> Option<f64> {
    run.latency.filter(|l| l.count > 0).map(|l| l.p99_ms)
}

fn ms_unit(value: f64) -> String {
    format!("{} ms", ms(value))
}

/// The measures of a scenario, by its kind.
fn measures(scenario: &str) -> Vec<Measure> {
    let p99_latency = Measure {
        name: "p99 latency",
        better: Better::Lower,
        value: p99,
        format: ms_unit,
    };
    match scenario {
        "connections" => vec![
            Measure {
                name: "bytes per idle connection",
                better: Better::Lower,
                value: |r| r.connect.as_ref()?.bytes_per_connection,
                format: |v| format!("{} B", rate(v)),
            },
            Measure {
                name: "connections per second",
                better: Better::Higher,
                value: |r| Some(r.connect.as_ref()?.per_s),
                format: |v| format!("{}/s", rate(v)),
            },
        ],
        "stresser" => vec![
            Measure {
                name: "median receive rate",
                better: Better::Higher,
                value: |r| Some(r.stresser.as_ref()?.receive.median),
                format: |v| format!("{} msg/s", rate(v)),
            },
            p99_latency,
        ],
        _ => vec![
            Measure {
                name: "delivered/s at max rate",
                better: Better::Higher,
                value: |r| {
                    is_max_rate(r)
                        .then_some(r.throughput?.delivered_per_s)
                        .filter(|v| *v > 0.0)
                },
                format: |v| format!("{} msg/s", rate(v)),
            },
            p99_latency,
        ],
    }
}

/// A case where another broker beats the first one.
struct Behind {
    case: String,
    measure: &'static str,
    ours: String,
    theirs: String,
}

/// Writes the summary for `lead` (the first broker in page order) against the others.
pub fn render(out: &mut String, runs: &[RunResult], order: &[String]) {
    let Some(lead) = order.first() else { return };
    if order.len() < 2 {
        return;
    }
    let mut counts = String::new();
    let mut behind: Vec<Behind> = Vec::new();
    for (scenario, heading, _) in SCENARIOS {
        let grouped = cases(runs, scenario, order);
        for measure in measures(scenario) {
            let (mut ahead, mut compared) = (0, 0);
            for (label, runs) in &grouped {
                let Some(ours) = runs
                    .iter()
                    .find(|r| &r.broker.label == lead)
                    .and_then(|r| (measure.value)(r))
                else {
                    continue;
                };
                let best_other = runs
                    .iter()
                    .filter(|r| &r.broker.label != lead)
                    .filter_map(|r| Some((r, (measure.value)(r)?)))
                    .reduce(|a, b| match measure.better {
                        Better::Higher if b.1 > a.1 => b,
                        Better::Lower if b.1 < a.1 => b,
                        _ => a,
                    });
                let Some((other, theirs)) = best_other else {
                    continue;
                };
                compared += 1;
                let leads = match measure.better {
                    Better::Higher => ours >= theirs,
                    Better::Lower => ours <= theirs,
                };
                if leads {
                    ahead += 1;
                } else {
                    behind.push(Behind {
                        case: format!("{heading}: {label}"),
                        measure: measure.name,
                        ours: (measure.format)(ours),
                        theirs: format!(
                            "{} ({}{})",
                            (measure.format)(theirs),
                            other.broker.label,
                            losses(other)
                        ),
                    });
                }
            }
            if compared > 0 {
                let _ = writeln!(
                    counts,
                    "| {heading} | {} | {ahead} of {compared} |",
                    measure.name
                );
            }
        }
    }
    if counts.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Where {lead} stands\n\n\
         In how many cases {lead} is ahead of the best of the other brokers, measure by measure (a \
         case counts where {lead} and at least one other broker have the figure), then every case \
         where another broker is ahead, with what that broker lost. At max rate, latency is mostly \
         queueing: read it with the delivered rate.\n\n\
         | scenario | measure | {lead} ahead |\n|---|---|--:|\n{counts}"
    );
    if behind.is_empty() {
        let _ = writeln!(out, "No other broker is ahead in any case.\n");
        return;
    }
    let _ = writeln!(
        out,
        "| case | measure | {lead} | best other |\n|---|---|--:|--:|"
    );
    for b in behind {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            b.case, b.measure, b.ours, b.theirs
        );
    }
    out.push('\n');
}

/// `, lost 12 %` when the broker lost deliveries in that run.
fn losses(run: &RunResult) -> String {
    match run.delivery {
        Some(d) if d.lost > 0 && d.expected > 0 => {
            let percent = d.lost as f64 * 100.0 / d.expected as f64;
            if percent >= 1.0 {
                format!(", lost {percent:.1} %")
            } else {
                format!(", lost {}", thousands(d.lost))
            }
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::latency::LatencySummary;
    use crate::measure::sequence::DeliveryCount;
    use crate::report::result::{Params, Throughput, fixture};

    fn pubsub(label: &str, delivered_per_s: f64, p99_ms: f64, lost: u64) -> RunResult {
        let mut run = fixture("fanout", label);
        run.params = Params {
            qos: Some(2),
            payload: Some(64),
            publishers: 1,
            subscribers: 1000,
            ..Params::default()
        };
        run.throughput = Some(Throughput {
            delivered_per_s,
            ..Throughput::default()
        });
        run.latency = Some(LatencySummary {
            count: 100,
            p99_ms,
            ..LatencySummary::default()
        });
        run.delivery = Some(DeliveryCount {
            expected: 1000,
            lost,
            ..DeliveryCount::default()
        });
        run
    }

    fn order(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn counts_the_cases_ahead_and_lists_the_others_with_the_leaders_losses() {
        let runs = [
            pubsub("tern", 1_000_000.0, 1180.0, 0),
            pubsub("mosquitto", 41_000.0, 868.0, 770),
            pubsub("rumqttd", 666_000.0, 1500.0, 0),
        ];
        let mut out = String::new();
        render(&mut out, &runs, &order(&["tern", "mosquitto", "rumqttd"]));
        assert!(
            out.contains("| Fan-out | delivered/s at max rate | 1 of 1 |"),
            "{out}"
        );
        assert!(out.contains("| Fan-out | p99 latency | 0 of 1 |"), "{out}");
        assert!(
            out.contains(
                "| Fan-out: 1→1000, QoS 2, 64 B, max rate | p99 latency | 1180 ms | 868 ms (mosquitto, lost 77.0 %) |"
            ),
            "{out}"
        );
    }

    #[test]
    fn a_run_without_latency_samples_is_not_compared() {
        let mut silent = pubsub("rumqttd", 10.0, 0.0, 0);
        silent.latency = None;
        let runs = [pubsub("tern", 1_000.0, 5.0, 0), silent];
        let mut out = String::new();
        render(&mut out, &runs, &order(&["tern", "rumqttd"]));
        assert!(!out.contains("| Fan-out | p99 latency |"), "{out}");
        assert!(
            out.contains("No other broker is ahead in any case."),
            "{out}"
        );
    }

    #[test]
    fn less_memory_per_connection_is_ahead() {
        let connections = |label: &str, bytes: f64| {
            let mut run = fixture("connections", label);
            run.params.clients = Some(10_000);
            run.connect = Some(crate::report::result::ConnectStats {
                per_s: 10_000.0,
                bytes_per_connection: Some(bytes),
                ..Default::default()
            });
            run
        };
        let runs = [connections("tern", 700.0), connections("mosquitto", 737.0)];
        let mut out = String::new();
        render(&mut out, &runs, &order(&["tern", "mosquitto"]));
        assert!(
            out.contains("| Idle connections | bytes per idle connection | 1 of 1 |"),
            "{out}"
        );
    }
}
