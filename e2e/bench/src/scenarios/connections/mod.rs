//! The connections scenario: open N idle clients as fast as the broker accepts them, hold them,
//! and report the connect rate, connect latency and the broker's memory per connection.
//!
//! With `--workers K` the parent forks K copies of itself (`--worker-index I`), each opening every
//! K-th connection, so one process's open-file limit does not cap the total; with `--sources S`
//! connections rotate over the source addresses 127.0.0.1..=127.0.0.S, each good for ~28,000
//! ephemeral ports towards one destination.

mod raw;
mod worker;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout};

use self::worker::{HoldReport, OpenPlan, OpenReport};
use crate::cli::ConnectionsArgs;
use crate::measure::latency::{LatencySummary, new_histogram};
use crate::measure::procfs::{ProcessProbe, Usage};
use crate::report::result::{ConnectStats, Params, RunResult};

/// Time for the broker to settle after the last CONNACK before its memory is read.
const SETTLE: Duration = Duration::from_secs(1);

/// Where a share of the connections is held: here, or in a worker process.
enum Holder {
    Local(Vec<TcpStream>),
    Worker(Box<WorkerProcess>),
}

/// A worker process and the pipes of its line protocol.
struct WorkerProcess {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Holder {
    async fn still_open(&mut self) -> anyhow::Result<u64> {
        match self {
            Holder::Local(streams) => Ok(worker::still_open(streams)),
            Holder::Worker(worker) => {
                let WorkerProcess { stdin, lines, .. } = &mut **worker;
                stdin.write_all(b"check\n").await?;
                stdin.flush().await?;
                let line = lines
                    .next_line()
                    .await?
                    .context("worker exited before its hold report")?;
                Ok(serde_json::from_str::<HoldReport>(&line)?.still_open)
            }
        }
    }

    async fn close(self) {
        if let Holder::Worker(worker) = self {
            let WorkerProcess {
                mut child, stdin, ..
            } = *worker;
            drop(stdin);
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

pub async fn run(args: ConnectionsArgs) -> anyhow::Result<Option<RunResult>> {
    ensure!(args.workers >= 1, "--workers must be at least 1");
    ensure!(
        (1..=254).contains(&args.sources),
        "--sources must be 1..=254"
    );
    let broker = resolve(&args.target.host, args.target.port).await?;
    let plan_for = |worker: usize| OpenPlan {
        broker,
        indices: (0..args.clients)
            .filter(|i| i % args.workers == worker)
            .collect(),
        sources: args.sources,
        keep_alive_s: args.keep_alive,
        concurrency: args.connect_concurrency.div_ceil(args.workers).max(1),
        timeout: Duration::from_secs_f64(args.connect_timeout.max(0.1)),
        run_id: super::run_id(),
    };
    if let Some(index) = args.worker_index {
        worker::serve(plan_for(index)).await?;
        return Ok(None);
    }

    let probe = args
        .output
        .single_pid()?
        .map(ProcessProbe::new)
        .transpose()?;
    let before = probe.as_ref().map(ProcessProbe::sample).transpose()?;
    eprintln!(
        "connections: opening {} idle clients to {broker} from {} source address(es) in {} process(es)",
        args.clients, args.sources, args.workers
    );
    let (reports, mut holders) = if args.workers == 1 {
        worker::check_fd_limit(args.clients)?;
        let (streams, report) = worker::open(plan_for(0)).await;
        (vec![report], vec![Holder::Local(streams)])
    } else {
        spawn_workers(args.workers).await?
    };
    let opened = merge(&reports)?;
    eprintln!(
        "connections: {} connected, {} failed in {:.2} s ({:.0}/s); holding for {} s",
        opened.connected, opened.failed, opened.elapsed_s, opened.per_s, args.duration
    );
    tokio::time::sleep(SETTLE).await;
    let connected = probe.as_ref().map(ProcessProbe::sample).transpose()?;
    tokio::time::sleep(Duration::from_secs_f64(args.duration.max(0.0))).await;
    let held = probe.as_ref().map(ProcessProbe::sample).transpose()?;
    let mut still_open = 0;
    for holder in &mut holders {
        still_open += holder.still_open().await?;
    }
    for holder in holders {
        holder.close().await;
    }

    let mut result = super::base_result(
        "connections",
        &args.output,
        Params {
            clients: Some(args.clients),
            duration_s: args.duration,
            sources: Some(args.sources),
            workers: Some(args.workers),
            ..Params::default()
        },
    );
    let rss = |sample: &Option<crate::measure::procfs::Sample>| sample.map(|s| s.memory.rss_kib);
    let mut connect = opened;
    connect.rss_before_kib = rss(&before);
    connect.rss_connected_kib = rss(&connected);
    connect.rss_held_kib = rss(&held);
    connect.bytes_per_connection = match (before, held) {
        (Some(b), Some(h)) if connect.connected > 0 => Some(
            (h.memory.rss_kib as f64 - b.memory.rss_kib as f64) * 1024.0 / connect.connected as f64,
        ),
        _ => None,
    };
    connect.still_open = Some(still_open);
    if let (Some(b), Some(h)) = (before, held) {
        let window_s = connect.elapsed_s + SETTLE.as_secs_f64() + args.duration;
        result.broker_usage = Some(Usage::between(&b, &h, window_s));
    }
    result.connect = Some(connect);
    result.bench_cpu_s = ProcessProbe::own()
        .sample()
        .map_or(0.0, |s| s.cpu_s + s.children_cpu_s);
    Ok(Some(result))
}

async fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?;
    addrs
        .find(SocketAddr::is_ipv4)
        .with_context(|| format!("{host} has no IPv4 address"))
}

/// Starts the worker processes and waits for each one's open report.
async fn spawn_workers(workers: usize) -> anyhow::Result<(Vec<OpenReport>, Vec<Holder>)> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut pending = Vec::with_capacity(workers);
    for index in 0..workers {
        let mut child = tokio::process::Command::new(&exe)
            .args(&args)
            .args(["--worker-index", &index.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting worker {index}"))?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        pending.push((child, stdin, BufReader::new(stdout).lines()));
    }
    let mut reports = Vec::with_capacity(workers);
    let mut holders = Vec::with_capacity(workers);
    for (index, (child, stdin, mut lines)) in pending.into_iter().enumerate() {
        let Some(line) = lines.next_line().await? else {
            bail!("worker {index} exited without a report (see its error above)");
        };
        reports.push(
            serde_json::from_str(&line).with_context(|| format!("worker {index} said {line:?}"))?,
        );
        holders.push(Holder::Worker(Box::new(WorkerProcess {
            child,
            stdin,
            lines,
        })));
    }
    Ok((reports, holders))
}

/// Adds up the workers' reports; the rate runs from the first attempt to the last CONNACK.
fn merge(reports: &[OpenReport]) -> anyhow::Result<ConnectStats> {
    let mut latencies = new_histogram()?;
    let mut stats = ConnectStats::default();
    for report in reports {
        stats.connected += report.connected;
        stats.failed += report.failed;
        if stats.first_error.is_none() {
            stats.first_error.clone_from(&report.first_error);
        }
        for us in &report.latencies_us {
            latencies.saturating_record(us.saturating_mul(1000));
        }
    }
    stats.requested = stats.connected + stats.failed;
    let start = reports.iter().map(|r| r.started_unix_ns).min().unwrap_or(0);
    let end = reports
        .iter()
        .map(|r| r.finished_unix_ns)
        .max()
        .unwrap_or(0);
    stats.elapsed_s = end.saturating_sub(start) as f64 / 1e9;
    stats.per_s = stats.connected as f64 / stats.elapsed_s.max(1e-9);
    stats.latency = LatencySummary::of(&latencies);
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_merge_over_the_whole_span() {
        let a = OpenReport {
            connected: 10,
            failed: 1,
            first_error: Some("refused".into()),
            latencies_us: vec![1000; 10],
            started_unix_ns: 1_000_000_000,
            finished_unix_ns: 2_000_000_000,
        };
        let b = OpenReport {
            connected: 10,
            latencies_us: vec![3000; 10],
            started_unix_ns: 1_500_000_000,
            finished_unix_ns: 3_000_000_000,
            ..OpenReport::default()
        };
        let stats = merge(&[a, b]).unwrap();
        assert_eq!(
            (stats.requested, stats.connected, stats.failed),
            (21, 20, 1)
        );
        assert_eq!(stats.elapsed_s, 2.0);
        assert_eq!(stats.per_s, 10.0);
        assert_eq!(stats.first_error.as_deref(), Some("refused"));
        assert_eq!(stats.latency.count, 20);
    }
}
