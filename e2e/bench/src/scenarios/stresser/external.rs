//! Running the real mqtt-stresser and reading its report.
//!
//! It is run with the seeds' own flags (`-broker`, `-num-clients`, `-num-messages`, plus the QoS
//! flags when QoS is not 0) and prints sections like `# Publishing Throughput` followed by
//! `Fastest: N msg/sec`, `Slowest: …` and `Median: …`, and `# Receiving Througput` (sic).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail, ensure};

use crate::cli::StresserArgs;
use crate::report::result::{Spread, StresserStats};

pub async fn run(binary: &Path, args: &StresserArgs) -> anyhow::Result<StresserStats> {
    let mut command = tokio::process::Command::new(binary);
    command
        .arg("-broker")
        .arg(format!("tcp://{}:{}", args.target.host, args.target.port))
        .arg(format!("-num-clients={}", args.clients))
        .arg(format!("-num-messages={}", args.messages));
    if args.qos != 0 {
        command
            .arg(format!("-publisher-qos={}", args.qos))
            .arg(format!("-subscriber-qos={}", args.qos));
    }
    command.kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs_f64(args.timeout), command.output())
        .await
        .context("mqtt-stresser did not finish in time")?
        .with_context(|| format!("running {}", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    ensure!(
        output.status.success(),
        "mqtt-stresser failed ({}):\n{text}",
        output.status
    );
    let mut stats = parse(&text)?;
    stats.clients = args.clients;
    stats.messages = args.messages;
    Ok(stats)
}

/// Reads the throughput sections and the completed count from mqtt-stresser's report.
pub fn parse(text: &str) -> anyhow::Result<StresserStats> {
    let mut stats = StresserStats {
        tool: "mqtt-stresser".into(),
        ..StresserStats::default()
    };
    let mut section: Option<&mut Spread> = None;
    let (mut publish_seen, mut receive_seen) = (false, false);
    let (mut publish, mut receive) = (Spread::default(), Spread::default());
    for line in text.lines().map(str::trim) {
        if line.starts_with("# Publishing") {
            section = Some(&mut publish);
            publish_seen = true;
            continue;
        }
        if line.starts_with("# Receiving") {
            section = Some(&mut receive);
            receive_seen = true;
            continue;
        }
        if line.starts_with('#') {
            section = None;
        }
        if let Some(rest) = line.strip_prefix("Completed:") {
            stats.completed = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .parse()
                .unwrap_or(0);
        }
        let Some(spread) = section.as_deref_mut() else {
            continue;
        };
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let number = || -> anyhow::Result<f64> {
            let figure = value.split_whitespace().next().unwrap_or_default();
            figure
                .parse()
                .with_context(|| format!("bad figure in {line:?}"))
        };
        match key {
            "Fastest" => spread.fastest = number()?,
            "Median" => spread.median = number()?,
            "Slowest" => spread.slowest = number()?,
            _ => {}
        }
    }
    if !publish_seen || !receive_seen {
        bail!("no throughput sections in mqtt-stresser's output:\n{text}");
    }
    stats.publish = publish;
    stats.receive = receive;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "\n# Configuration\nConcurrent Clients: 2\nMessages / Client:  20000\n\n\
        # Results\nPublished Messages: 20000 (100%)\nReceived Messages:  20000 (100%)\n\
        Completed:          2 (100%)\nErrors:             0 (0%)\n\n\
        # Publishing Throughput\nFastest: 125456 msg/sec\nSlowest: 124614 msg/sec\nMedian: 125035 msg/sec\n\n\
          < 124698 msg/sec  50%\n  < 125456 msg/sec  100%\n\n\
        # Receiving Througput\nFastest: 314461 msg/sec\nSlowest: 311910 msg/sec\nMedian: 313186 msg/sec\n\n\
          < 312165 msg/sec  50%\n";

    #[test]
    fn reads_both_sections() {
        let stats = parse(REPORT).unwrap();
        assert_eq!(stats.completed, 2);
        assert_eq!(
            stats.publish,
            Spread {
                fastest: 125_456.0,
                median: 125_035.0,
                slowest: 124_614.0
            }
        );
        assert_eq!(
            stats.receive,
            Spread {
                fastest: 314_461.0,
                median: 313_186.0,
                slowest: 311_910.0
            }
        );
    }

    #[test]
    fn output_without_results_is_an_error() {
        assert!(parse("error: connection refused\n").is_err());
    }
}
