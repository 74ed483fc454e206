//! The benchmark page: machine, brokers and what was changed in their configuration, what could
//! not be measured, the charts, where the first broker stands (`standing`), and one table per
//! scenario with one row per case and broker.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::format::{mib, ms, rate, thousands};
use super::result::{RunResult, Unmeasured};
use super::standing;
use super::svg::{self, Chart, Group, Panel};

/// Scenarios in page order, with their headings and what they do.
pub(super) const SCENARIOS: [(&str, &str, &str); 6] = [
    (
        "p2p",
        "Point-to-point",
        "Each publisher has its own subscriber on its own topic.",
    ),
    (
        "fanout",
        "Fan-out",
        "One publisher, every subscriber on the same topic; *delivered/s* counts every copy.",
    ),
    (
        "fanin",
        "Fan-in",
        "Many publishers, one subscriber on a `+` wildcard filter.",
    ),
    (
        "shared",
        "Shared subscription",
        "Many publishers, one `$share/bench/…` group; each message should reach one member.",
    ),
    (
        "connections",
        "Idle connections",
        "Clients connect (MQTT 3.1.1, clean session) as fast as the broker accepts them and stay idle; memory per connection is the broker's RSS growth divided by the connections.",
    ),
    (
        "stresser",
        "The seeds' mqtt-stresser cases",
        "Each client publishes its messages to its own subscriber, one at a time; rates per client as mqtt-stresser defines them (its receive rate runs from the end of publishing, so it can exceed what was sent per second).",
    ),
];

/// Brokers in this order first, any others after them alphabetically.
pub(super) const BROKER_ORDER: [&str; 5] = ["tern", "mosquitto", "rumqttd", "mochi", "comqtt"];

pub struct Charts {
    pub throughput: String,
    pub latency: String,
}

fn brokers(runs: &[RunResult]) -> Vec<String> {
    let mut names: Vec<String> = runs.iter().map(|r| r.broker.label.clone()).collect();
    names.sort_by_key(|name| {
        (
            BROKER_ORDER
                .iter()
                .position(|b| b == name)
                .unwrap_or(usize::MAX),
            name.clone(),
        )
    });
    names.dedup();
    names
}

/// A case within a scenario: its label, and a key that sorts cases sensibly.
pub(super) fn case(run: &RunResult) -> (Vec<u64>, String) {
    let p = &run.params;
    match run.scenario.as_str() {
        "connections" => (
            vec![p.clients.unwrap_or(0) as u64],
            format!(
                "{} clients, {} source addr., {} process(es)",
                thousands(p.clients.unwrap_or(0) as u64),
                p.sources.unwrap_or(1),
                p.workers.unwrap_or(1)
            ),
        ),
        "stresser" => (
            vec![
                p.clients.unwrap_or(0) as u64,
                p.messages.unwrap_or(0) as u64,
                p.qos.unwrap_or(0).into(),
            ],
            format!(
                "{} clients × {} msgs, QoS {}",
                p.clients.unwrap_or(0),
                thousands(p.messages.unwrap_or(0) as u64),
                p.qos.unwrap_or(0)
            ),
        ),
        _ => {
            let r = p.rate.unwrap_or(0.0);
            let load = if r > 0.0 {
                format!("{}/s per pub.", rate(r))
            } else {
                "max rate".into()
            };
            (
                vec![
                    (r * 1000.0) as u64,
                    p.qos.unwrap_or(0).into(),
                    p.payload.unwrap_or(0) as u64,
                    p.publishers as u64,
                    p.subscribers as u64,
                ],
                format!(
                    "{}→{}, QoS {}, {} B, {load}",
                    p.publishers,
                    p.subscribers,
                    p.qos.unwrap_or(0),
                    p.payload.unwrap_or(0)
                ),
            )
        }
    }
}

/// Runs of one scenario grouped by case (in case order), each case's runs in broker order.
pub(super) fn cases<'a>(
    runs: &'a [RunResult],
    scenario: &str,
    order: &[String],
) -> Vec<(String, Vec<&'a RunResult>)> {
    let mut grouped: BTreeMap<(Vec<u64>, String), Vec<&RunResult>> = BTreeMap::new();
    for run in runs.iter().filter(|r| r.scenario == scenario) {
        grouped.entry(case(run)).or_default().push(run);
    }
    grouped
        .into_iter()
        .map(|((_, label), mut runs)| {
            runs.sort_by_key(|r| {
                (
                    order.iter().position(|b| *b == r.broker.label),
                    r.started_unix_s,
                )
            });
            (label, runs)
        })
        .collect()
}

pub fn charts(runs: &[RunResult]) -> Charts {
    let series = brokers(runs);
    let chart = |title: &str, value: fn(&RunResult) -> Option<f64>, format: fn(f64) -> String| {
        let panels = SCENARIOS[..4]
            .iter()
            .filter_map(|&(scenario, heading, _)| {
                let groups: Vec<Group> = cases(runs, scenario, &series)
                    .into_iter()
                    .map(|(label, runs)| Group {
                        label,
                        bars: runs
                            .iter()
                            .filter_map(|r| {
                                Some((series.iter().position(|b| *b == r.broker.label)?, value(r)?))
                            })
                            .collect(),
                    })
                    .collect();
                (!groups.is_empty()).then(|| Panel {
                    title: heading.into(),
                    groups,
                })
            })
            .collect();
        svg::render(&Chart {
            title: title.into(),
            series: series.clone(),
            panels,
            format,
        })
    };
    Charts {
        throughput: chart(
            "Delivered messages per second (higher is better)",
            |r| r.throughput.map(|t| t.delivered_per_s),
            rate,
        ),
        latency: chart(
            "p99 publish→delivery latency, ms (lower is better)",
            |r| r.latency.filter(|l| l.count > 0).map(|l| l.p99_ms),
            |v| format!("{} ms", ms(v)),
        ),
    }
}

pub fn render(
    commands: &[String],
    runs: &[RunResult],
    unmeasured: &[Unmeasured],
    charts: &[(&str, String)],
) -> String {
    let order = brokers(runs);
    let mut out = String::from("# Benchmarks\n\n");
    let _ = write!(out, "Generated by {} ", command_sequence(commands));
    out.push_str(
        "(the results are JSON files written by `tern-bench`, turned \
         into this page by `tern-bench report`). Every broker ran on the same machine, one at a time, \
         each case against a freshly started broker; the load generator ran on the same machine, the \
         publish/subscribe scenarios' subscribers on threads of their own (as a consumer in another \
         process would).\n\n\
         *Max rate* cases publish as fast as each client's flow control allows: they show sustained \
         throughput, and their latency is mostly queueing. Latency is comparable between brokers at a \
         fixed rate (equal load). Losses at QoS 1 and 2 are messages a broker dropped under its own \
         queue limits (for example Mosquitto's `max_queued_messages`, Tern's \
         `limits.max_queued_messages`), counted per subscriber against what each publisher wrote.\n\n",
    );
    machine(&mut out, runs);
    broker_table(&mut out, runs, &order);
    unmeasured_table(&mut out, "## Not measured", "broker", unmeasured);
    if !charts.is_empty() {
        out.push_str("## Charts\n\n");
        for (title, href) in charts {
            let _ = writeln!(out, "![{title}]({href})\n");
        }
    }
    standing::render(&mut out, runs, &order);
    for (scenario, heading, about) in SCENARIOS {
        let grouped = cases(runs, scenario, &order);
        if grouped.is_empty() {
            continue;
        }
        let _ = writeln!(out, "## {heading}\n\n{about}\n");
        if let Some(first) = grouped.first().and_then(|(_, runs)| runs.first()) {
            let _ = writeln!(out, "Example command: `{}`\n", command_line(&first.command));
        }
        match scenario {
            "connections" => connections_table(&mut out, &grouped),
            "stresser" => stresser_table(&mut out, &grouped),
            _ => pubsub_table(&mut out, &grouped),
        }
        out.push('\n');
    }
    out
}

fn machine(out: &mut String, runs: &[RunResult]) {
    let Some(first) = runs.first() else { return };
    let m = &first.machine;
    let (from, to) = runs.iter().fold((u64::MAX, 0), |(lo, hi), r| {
        (lo.min(r.started_unix_s), hi.max(r.started_unix_s))
    });
    let _ = writeln!(
        out,
        "## Machine\n\n- CPU: {} ({} cores available)\n- Memory: {} MiB\n- Kernel: Linux {}\n- Runs: {} to {} (UTC), {} results\n",
        m.cpu_model,
        m.cores,
        thousands(m.memory_mib),
        m.kernel,
        utc_date_time(from),
        utc_date_time(to),
        runs.len()
    );
}

fn broker_table(out: &mut String, runs: &[RunResult], order: &[String]) {
    out.push_str("## Brokers\n\nEach broker ran with its default configuration plus only what is listed here.\n\n");
    out.push_str(
        "| broker | version | started as | changes from its defaults |\n|---|---|---|---|\n",
    );
    for name in order {
        let of_broker: Vec<&RunResult> = runs.iter().filter(|r| &r.broker.label == name).collect();
        let version = of_broker
            .iter()
            .find_map(|r| r.broker.version.clone())
            .unwrap_or_default();
        let command = of_broker
            .iter()
            .find_map(|r| r.broker.command.clone())
            .unwrap_or_default();
        let mut changes: Vec<String> = Vec::new();
        for run in &of_broker {
            for change in &run.broker.changes {
                if !changes.contains(change) {
                    changes.push(change.clone());
                }
            }
        }
        let changes = if changes.is_empty() {
            "none".into()
        } else {
            changes.join("; ")
        };
        let command = if command.is_empty() {
            "–".into()
        } else {
            format!("`{}`", cell(&command))
        };
        let version = if version.is_empty() {
            "–".into()
        } else {
            cell(&version)
        };
        let _ = writeln!(
            out,
            "| {name} | {version} | {command} | {} |",
            cell(&changes)
        );
    }
    out.push('\n');
}

fn pubsub_table(out: &mut String, grouped: &[(String, Vec<&RunResult>)]) {
    out.push_str(
        "| case | broker | published/s | delivered/s | p50 ms | p99 ms | p99.9 ms | max ms | lost | dup | broker CPU (cores) | broker peak RSS MiB |\n\
         |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for (label, runs) in grouped {
        let best_rate = runs
            .iter()
            .filter_map(|r| r.throughput.map(|t| t.delivered_per_s))
            .fold(f64::MIN, f64::max);
        let sampled: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.latency.filter(|l| l.count > 0).map(|l| l.p99_ms))
            .collect();
        // A p99 is "best" only against another broker's: one broker's samples alone beat nobody.
        let best_p99 = if sampled.len() > 1 {
            sampled.iter().copied().fold(f64::MAX, f64::min)
        } else {
            f64::MIN
        };
        for run in runs {
            let bold = |text: String, best: bool| {
                if best && runs.len() > 1 {
                    format!("**{text}**")
                } else {
                    text
                }
            };
            let (published, delivered) = run.throughput.map_or(("–".into(), "–".into()), |t| {
                (
                    rate(t.published_per_s),
                    bold(rate(t.delivered_per_s), t.delivered_per_s >= best_rate),
                )
            });
            let latency = run.latency.filter(|l| l.count > 0).map_or(
                ["–".to_string(), "–".into(), "–".into(), "–".into()],
                |l| {
                    [
                        ms(l.p50_ms),
                        bold(ms(l.p99_ms), l.p99_ms <= best_p99),
                        ms(l.p999_ms),
                        ms(l.max_ms),
                    ]
                },
            );
            let (lost, dup) = run.delivery.map_or(("–".into(), "–".into()), |d| {
                (thousands(d.lost), thousands(d.duplicates))
            });
            let (cpu, rss) = run.broker_usage.map_or(("–".into(), "–".into()), |u| {
                (format!("{:.2}", u.cpu_cores), mib(u.rss_peak_kib))
            });
            let _ = writeln!(
                out,
                "| {label} | {} | {published} | {delivered} | {} | {} | {} | {} | {lost} | {dup} | {cpu} | {rss} |",
                run.broker.label, latency[0], latency[1], latency[2], latency[3]
            );
        }
    }
}

fn connections_table(out: &mut String, grouped: &[(String, Vec<&RunResult>)]) {
    out.push_str(
        "| case | broker | connected | failed | connections/s | connect p99 ms | RSS before MiB | RSS held MiB | bytes per connection | open after hold |\n\
         |---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for (label, runs) in grouped {
        for run in runs {
            let Some(c) = &run.connect else { continue };
            let opt_mib = |kib: Option<u64>| kib.map_or("–".into(), mib);
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                run.broker.label,
                thousands(c.connected),
                thousands(c.failed),
                rate(c.per_s),
                ms(c.latency.p99_ms),
                opt_mib(c.rss_before_kib),
                opt_mib(c.rss_held_kib),
                c.bytes_per_connection.map_or("–".into(), rate),
                c.still_open.map_or("–".into(), thousands)
            );
        }
    }
}

fn stresser_table(out: &mut String, grouped: &[(String, Vec<&RunResult>)]) {
    out.push_str(
        "| case | broker | tool | publish fastest | median | slowest | receive fastest | median | slowest | lost | p99 ms |\n\
         |---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for (label, runs) in grouped {
        for run in runs {
            let Some(s) = &run.stresser else { continue };
            let lost = run.delivery.map_or("–".into(), |d| thousands(d.lost));
            let p99 = run
                .latency
                .filter(|l| l.count > 0)
                .map_or("–".into(), |l| ms(l.p99_ms));
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {lost} | {p99} |",
                run.broker.label,
                s.tool,
                rate(s.publish.fastest),
                rate(s.publish.median),
                rate(s.publish.slowest),
                rate(s.receive.fastest),
                rate(s.receive.median),
                rate(s.receive.slowest)
            );
        }
    }
}

/// The commands that produced the results, in order, a command repeated back to back named once
/// with its count (re-running one broker's cases after each change otherwise fills a paragraph).
pub(super) fn command_sequence(commands: &[String]) -> String {
    let mut runs: Vec<(&str, usize)> = Vec::new();
    for command in commands {
        match runs.last_mut() {
            Some((last, count)) if *last == command.as_str() => *count += 1,
            _ => runs.push((command, 1)),
        }
    }
    runs.iter()
        .map(|(command, count)| match count {
            1 => format!("`{command}`"),
            n => format!("`{command}` {n} times"),
        })
        .collect::<Vec<_>>()
        .join(", then ")
}

/// Options that describe the broker or name files, left out of example commands.
const DESCRIPTIVE_OPTIONS: [&str; 7] = [
    "--port",
    "--broker-pid",
    "--label",
    "--broker-version",
    "--broker-cmd",
    "--broker-change",
    "--json",
];

/// The workload part of a command: the binary without its directory, the scenario and the options
/// that shape the load.
pub(super) fn command_line(argv: &[String]) -> String {
    let mut words = Vec::with_capacity(argv.len());
    let mut args = argv.iter();
    if let Some(binary) = args.next() {
        words.push(binary.rsplit('/').next().unwrap_or(binary).to_string());
    }
    while let Some(arg) = args.next() {
        if DESCRIPTIVE_OPTIONS.contains(&arg.as_str()) {
            args.next();
        } else {
            words.push(arg.clone());
        }
    }
    words.join(" ")
}

/// Text safe inside a table cell (no column breaks, line breaks or HTML tags).
/// The "Not measured" table under `heading`, naming what was not measured in `first_column`;
/// nothing when everything was.
pub(super) fn unmeasured_table(
    out: &mut String,
    heading: &str,
    first_column: &str,
    unmeasured: &[Unmeasured],
) {
    if unmeasured.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "{heading}\n\n| {first_column} | scenario | why |\n|---|---|---|\n"
    );
    for u in unmeasured {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            u.broker,
            u.scenario.as_deref().unwrap_or("all"),
            cell(&u.reason)
        );
    }
    out.push('\n');
}

pub(super) fn cell(text: &str) -> String {
    text.replace('|', "\\|")
        .replace('\n', " ")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `YYYY-MM-DD HH:MM` for a Unix time (proleptic Gregorian calendar, UTC).
fn utc_date_time(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    // Days to civil date, after Howard Hinnant's well-known algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::latency::LatencySummary;
    use crate::measure::sequence::DeliveryCount;
    use crate::report::result::{ConnectStats, Params, Throughput, fixture};

    fn pubsub(broker: &str, qos: u8, delivered_per_s: f64, p99_ms: f64) -> RunResult {
        let mut run = fixture("p2p", broker);
        run.broker.changes = vec![format!("{broker}: listener on a free port")];
        run.params = Params {
            qos: Some(qos),
            payload: Some(64),
            rate: Some(0.0),
            publishers: 10,
            subscribers: 10,
            ..Params::default()
        };
        run.throughput = Some(Throughput {
            window_s: 1.0,
            published: 1,
            delivered: 1,
            published_per_s: delivered_per_s,
            delivered_per_s,
        });
        run.latency = Some(LatencySummary {
            count: 10,
            p50_ms: p99_ms / 2.0,
            p99_ms,
            p999_ms: p99_ms,
            max_ms: p99_ms,
            mean_ms: 0.0,
        });
        run.delivery = Some(DeliveryCount::default());
        run
    }

    #[test]
    fn brokers_come_in_the_fixed_order() {
        let runs = [
            pubsub("zeta", 0, 1.0, 1.0),
            pubsub("mosquitto", 0, 1.0, 1.0),
            pubsub("tern", 0, 1.0, 1.0),
        ];
        assert_eq!(brokers(&runs), ["tern", "mosquitto", "zeta"]);
    }

    #[test]
    fn one_row_per_case_and_broker_with_the_best_in_bold() {
        let runs = [
            pubsub("mosquitto", 1, 900.0, 2.0),
            pubsub("tern", 1, 1000.0, 3.0),
            pubsub("tern", 0, 5000.0, 1.0),
        ];
        let page = render(
            &[
                "scripts/bench.sh --quick".to_string(),
                "scripts/bench.sh --quick --brokers mosquitto --add".to_string(),
            ],
            &runs,
            &[],
            &[("Throughput", "benchmarks/throughput.svg".into())],
        );
        assert!(page.contains("## Point-to-point"), "{page}");
        assert!(
            page.contains(
                "Generated by `scripts/bench.sh --quick`, then \
                 `scripts/bench.sh --quick --brokers mosquitto --add`"
            ),
            "{page}"
        );
        assert!(page.contains("![Throughput](benchmarks/throughput.svg)"));
        let rows: Vec<&str> = page.lines().filter(|l| l.starts_with("| 10→10")).collect();
        assert_eq!(rows.len(), 3, "{page}");
        assert!(
            rows[0].contains("QoS 0") && rows[0].contains("| tern |"),
            "{rows:?}"
        );
        assert!(rows[1].contains("| tern | 1,000 | **1,000** |"), "{rows:?}");
        assert!(
            rows[2].contains("| mosquitto |") && rows[2].contains("**2.000**"),
            "{rows:?}"
        );
        assert!(
            page.contains("| mosquitto | – | – | mosquitto: listener on a free port |"),
            "{page}"
        );
    }

    #[test]
    fn a_p99_without_another_to_compare_is_not_bold() {
        let mut silent = pubsub("tern", 0, 2000.0, 1.0);
        silent.latency = Some(LatencySummary::default());
        let runs = [silent, pubsub("mosquitto", 0, 1000.0, 9.0)];
        let page = render(&["scripts/bench.sh".to_string()], &runs, &[], &[]);
        let rows: Vec<&str> = page.lines().filter(|l| l.starts_with("| 10→10")).collect();
        assert_eq!(rows.len(), 2, "{page}");
        assert!(
            rows[0].contains("| tern | 2,000 | **2,000** | – | – |"),
            "{rows:?}"
        );
        assert!(
            rows[1].contains("| 4.500 | 9.000 |") && !rows[1].contains("**9.000**"),
            "{rows:?}"
        );
    }

    #[test]
    fn unmeasured_brokers_are_listed_with_the_reason() {
        let unmeasured = [Unmeasured {
            broker: "comqtt".into(),
            scenario: None,
            reason: "module proxy: 403 | not available".into(),
        }];
        let page = render(
            &["scripts/bench.sh".to_string()],
            &[pubsub("tern", 0, 1.0, 1.0)],
            &unmeasured,
            &[],
        );
        assert!(
            page.contains("| comqtt | all | module proxy: 403 \\| not available |"),
            "{page}"
        );
    }

    #[test]
    fn connections_table_shows_memory_per_connection() {
        let mut run = fixture("connections", "tern");
        run.params = Params {
            clients: Some(10_000),
            sources: Some(1),
            workers: Some(1),
            ..Params::default()
        };
        run.connect = Some(ConnectStats {
            connected: 10_000,
            per_s: 5000.0,
            bytes_per_connection: Some(4096.4),
            still_open: Some(10_000),
            ..ConnectStats::default()
        });
        let page = render(&["scripts/bench.sh".to_string()], &[run], &[], &[]);
        assert!(
            page.contains(
                "| 10,000 clients, 1 source addr., 1 process(es) | tern | 10,000 | 0 | 5,000 |"
            ),
            "{page}"
        );
        assert!(page.contains("| 4,096 | 10,000 |"), "{page}");
    }

    #[test]
    fn charts_have_a_panel_per_scenario_present() {
        let charts = charts(&[
            pubsub("tern", 0, 10.0, 1.0),
            pubsub("mosquitto", 0, 5.0, 2.0),
        ]);
        assert!(charts.throughput.contains("Point-to-point"));
        assert!(!charts.throughput.contains("Fan-out"));
        assert_eq!(charts.latency.matches("<title>").count(), 2);
    }

    #[test]
    fn repeated_commands_are_named_once_with_their_count() {
        let commands = ["full", "again", "again", "again", "full"].map(String::from);
        assert_eq!(
            command_sequence(&commands),
            "`full`, then `again` 3 times, then `full`"
        );
    }

    #[test]
    fn example_commands_keep_only_the_workload() {
        let argv = [
            "/x/target/release/tern-bench",
            "p2p",
            "--port",
            "1",
            "--broker-change",
            "a b",
            "--qos",
            "1",
            "--json",
            "f.json",
        ];
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        assert_eq!(command_line(&argv), "tern-bench p2p --qos 1");
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc_date_time(0), "1970-01-01 00:00");
        assert_eq!(utc_date_time(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc_date_time(1_700_000_000), "2023-11-14 22:13");
    }
}
